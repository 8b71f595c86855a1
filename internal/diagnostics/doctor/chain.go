package doctor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// relayFound reports that nginx passes to fcgiscope, not to php-fpm, and
// checks fcgiscope's limits, which it announces in its GET_VALUES answer,
// against nginx's: a sidecar must never fail a request nginx alone would
// have served. What fcgiscope relays to is checked as a target of its own.
func (c *checkup) relayFound(t *target, pr *Probe) {
	c.add(Finding{ID: "fcgiscope_in_chain", Severity: SeverityInfo,
		Title:  fmt.Sprintf("nginx passes to fcgiscope at %s, which relays to %s", t.addr, pr.relay),
		Detail: fmt.Sprintf("fcgiscope answered at %s; the checks of %s below are of the php-fpm behind it.", t.addr, pr.relay),
		Nginx:  locs(t.refs)})
	values := pr.values
	seen := map[string]bool{}
	for _, p := range t.passes {
		for _, f := range chainLimits(p, values) {
			if seen[f.ID+f.Title] {
				continue
			}
			seen[f.ID+f.Title] = true
			c.add(f)
		}
	}
}

// chainLimits compares the limits fcgiscope announced with the settings
// of one nginx location that passes to it.
func chainLimits(p *nginxconf.Pass, values map[string]string) []Finding {
	var out []Finding
	nginxRead := p.ReadTimeout.Value
	readLoc := passSetting(p, p.ReadTimeout.Dir, "fastcgi_read_timeout", fmtDur(nginxRead))
	sooner := func(id, variable string, d time.Duration, what, fix string) {
		out = append(out, Finding{ID: id, Severity: SeverityWarning,
			Title:  fmt.Sprintf("fcgiscope's %s=%s fails requests sooner than nginx's fastcgi_read_timeout %s", variable, fmtDur(d), fmtDur(nginxRead)),
			Detail: fmt.Sprintf("%s after %s; nginx would wait %s and serve it.", what, fmtDur(d), fmtDur(nginxRead)),
			Impact: "Requests that nginx alone would have served fail through fcgiscope.",
			Nginx:  []*Location{readLoc},
			Fix:    fix})
	}
	if q := values[fcgi.ValueRelayQueueTimeout]; q != "" && q != "auto" {
		if d, err := time.ParseDuration(q); err == nil && d < nginxRead {
			sooner("fcgiscope_queue_sooner", "FCGISCOPE_QUEUE_TIMEOUT", d,
				"fcgiscope fails a request that waits for a free php-fpm worker",
				"Unset FCGISCOPE_QUEUE_TIMEOUT (or set it to auto) and give fcgiscope nginx's configuration (FCGISCOPE_NGINX_CONFIG): it then waits as long as nginx does.")
		}
	}
	if r := values[fcgi.ValueRelayReadTimeout]; r != "" {
		if d, err := time.ParseDuration(r); err == nil && d > 0 && d < nginxRead {
			sooner("fcgiscope_read_sooner", "FCGISCOPE_READ_TIMEOUT", d,
				"fcgiscope fails a request whose script stays silent",
				fmt.Sprintf("Set FCGISCOPE_READ_TIMEOUT above %s, or to 0 and leave the limit to nginx.", fmtDur(nginxRead)))
		}
	}
	if m := values[fcgi.ValueRelayMaxHeaderBytes]; m != "" {
		if n, err := strconv.ParseInt(m, 10, 64); err == nil && n < p.BufferSize.Value {
			out = append(out, Finding{ID: "fcgiscope_header_limit", Severity: SeverityWarning,
				Title:  fmt.Sprintf("fcgiscope refuses response headers over %s, nginx takes up to %s", fmtBytes(n), fmtBytes(p.BufferSize.Value)),
				Detail: "FCGISCOPE_MAX_HEADER_BYTES is smaller than nginx's fastcgi_buffer_size: a response with headers between the two is refused by fcgiscope alone.",
				Impact: "Requests that nginx alone would have served fail through fcgiscope.",
				Nginx:  []*Location{passSetting(p, p.BufferSize.Dir, "fastcgi_buffer_size", fmtBytes(p.BufferSize.Value))},
				Fix:    fmt.Sprintf("Set FCGISCOPE_MAX_HEADER_BYTES to at least %d.", p.BufferSize.Value)})
		}
	}
	return out
}

// passSetting locates a setting of a pass: its directive, or the
// fastcgi_pass line with the value nginx takes by default.
func passSetting(p *nginxconf.Pass, d *nginxconf.Directive, name, value string) *Location {
	if l := locOf(d); l != nil {
		return l
	}
	return &Location{File: p.Dir.File, Line: p.Dir.Line, Text: fmt.Sprintf("%s %s; (nginx's default, set nowhere)", name, strings.TrimSpace(value))}
}

// causeStatus is the status fcgiscope answers with for a diagnosis.
func causeStatus(d *diagnostics.Diagnosis) int {
	if d == nil || d.Cause == nil {
		return 502
	}
	return d.Cause.Status
}
