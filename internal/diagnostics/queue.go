package diagnostics

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// queueFailure explains a request that waited for a free upstream slot in
// vain: for as long as nginx waits (web_server_timeout, which nginx
// answered itself), or for fcgiscope's own queue timeout.
func (c *Classifier) queueFailure(e *outcome.QueueTimeoutError, d *Diagnosis) {
	ev := d.Evidence
	ev["max_conns"] = strconv.Itoa(e.MaxConns)
	ev["queue_ms"] = fmt.Sprintf("%.1f", ms(e.Waited))
	slots := fmt.Sprintf("All %d php-fpm workers fcgiscope sends to at once (FCGISCOPE_MAX_CONNS)", e.MaxConns)
	if p := c.pool(); p != nil && p.MaxChildren == e.MaxConns {
		where := p.Settings["pm.max_children"].Where()
		ev["pm.max_children"] = strconv.Itoa(p.MaxChildren)
		slots = fmt.Sprintf("All pm.max_children = %d workers of pool %s%s", p.MaxChildren, p.Name, at(where))
	}
	if e.WebServerGaveUp {
		rt := c.front().ReadTimeout()
		d.Cause = CauseWebServerTimeout
		ev["fastcgi_read_timeout"] = rt.String()
		d.Detail = fmt.Sprintf("%s stayed busy for %s, and nginx gave up on the request at its fastcgi_read_timeout = %s, answering 504 itself; the request was never sent to php-fpm, as it would have waited in php-fpm's listen queue without fcgiscope.", slots, seconds(e.Waited), rt)
		d.Hints = []string{
			"The pool is saturated: find what keeps the workers busy (the status page above, request_slowlog_timeout) or add workers (pm.max_children), if the machine has the memory.",
			"A longer fastcgi_read_timeout lets requests wait out longer bursts; fcgiscope waits as long as nginx does.",
		}
		return
	}
	d.Cause = CauseQueueTimeout
	d.Detail = fmt.Sprintf("%s stayed busy for %s (FCGISCOPE_QUEUE_TIMEOUT); the request was never sent to php-fpm.", slots, seconds(e.Waited))
	d.Hints = []string{
		"The pool is saturated: find the slow scripts (request_slowlog_timeout, pm.status_path) or add workers (pm.max_children).",
		"Unset FCGISCOPE_QUEUE_TIMEOUT to let requests wait as long as nginx does (its fastcgi_read_timeout).",
	}
}

// webServerTimeout explains a request that nginx ended at one of its own
// timeouts (fastcgi_read_timeout while it waited, fastcgi_send_timeout
// while it sent the body), and reports whether it was one.
func (c *Classifier) webServerTimeout(t *outcome.Trace, d *Diagnosis) bool {
	phase := t.Phase()
	if phase == outcome.PhaseParams || phase == outcome.PhaseStreaming {
		return false
	}
	sending := phase == outcome.PhaseSending
	timeout, ok := c.front().GaveUpAfter(t.Duration(), sending)
	if !ok {
		return false
	}
	name := "fastcgi_read_timeout"
	if sending {
		name = "fastcgi_send_timeout"
	}
	ev := d.Evidence
	ev[name] = timeout.String()
	d.Cause = CauseWebServerTimeout
	var spent []string
	if q := t.QueueTime(); q > 0 {
		spent = append(spent, seconds(q)+" waiting for a free php-fpm worker")
	}
	if !t.DialEnd.IsZero() {
		spent = append(spent, seconds(t.End.Sub(t.DialEnd))+" in php-fpm")
	}
	how := ""
	if len(spent) > 0 {
		how = ": " + strings.Join(spent, ", then ")
	}
	d.Detail = fmt.Sprintf("nginx gave up on the request after %s, at its %s = %s, and answered 504 itself%s.", seconds(t.Duration()), name, timeout, how)
	d.Hints = []string{
		fmt.Sprintf("Make the script answer within %s, or raise %s (and request_terminate_timeout with it, so that php-fpm does not run on for nobody).", timeout.Value, name),
		"Raising PHP's max_execution_time changes nothing here: nginx's timeout ended the request, not PHP's.",
	}
	if p := c.pool(); p != nil && t.QueueTime() > 0 {
		d.Hints = append(d.Hints, fmt.Sprintf("The request waited for a worker: all pm.max_children = %d workers of pool %s%s were busy; find what keeps them busy, or add workers.", p.MaxChildren, p.Name, at(p.Settings["pm.max_children"].Where())))
	}
	return true
}
