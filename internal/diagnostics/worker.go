package diagnostics

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// workerGone explains a connection that ended before END_REQUEST.
func (c *Classifier) workerGone(t *outcome.Trace, d *Diagnosis) {
	ev := d.Evidence
	elapsed := t.End.Sub(t.DialStart)
	ev["elapsed_s"] = fmt.Sprintf("%.3f", elapsed.Seconds())
	how := "closed the connection"
	if errors.Is(t.Err, syscall.ECONNRESET) {
		how = "reset the connection"
	}
	if c.clientNotAllowed(t, d, elapsed, false) {
		return
	}
	if c.rejected(t, d, how, elapsed) {
		return
	}
	if c.fromLog(t, d, how, elapsed) {
		return
	}
	if c.clientNotAllowed(t, d, elapsed, true) {
		return
	}
	if c.workerGoneByTiming(t, d, how, elapsed) {
		return
	}
	if c.oomKilled(t, d, 0, how, elapsed) {
		return
	}
	d.Cause = CauseWorkerDied
	d.Detail = fmt.Sprintf("The php-fpm worker %s after %s without sending END_REQUEST: it was killed or crashed mid-request. php-fpm's error log names the signal (\"child N exited on signal ...\").", how, seconds(elapsed))
	if t.Phase() == outcome.PhaseStreaming {
		d.Detail = fmt.Sprintf("The php-fpm worker %s after %s, in the middle of its response, without sending END_REQUEST: it was killed or crashed. php-fpm's error log names the signal (\"child N exited on signal ...\").", how, seconds(elapsed))
	}
	d.Hints = []string{
		"Look in php-fpm's error log at this time for \"exited on signal\": SIGSEGV points at a PHP extension, SIGKILL at the kernel's OOM killer (dmesg) or an operator.",
		"Give fcgiscope the pool configuration (FCGISCOPE_FPM_CONFIG) so it can tell a request_terminate_timeout kill from a crash.",
	}
	if c.pool() != nil {
		d.Hints = d.Hints[:1]
	}
}

// maxParamsRecord is the most PARAMS php-fpm reads: it parses each PARAMS
// record on its own, so a stream longer than one record's content (a
// name-value pair split between records) makes it drop the connection.
const maxParamsRecord = 65535

// rejected explains a connection php-fpm dropped at once, without a
// record, because of what the request is: a role php-fpm does not play,
// or params longer than one record. It reports whether it did.
func (c *Classifier) rejected(t *outcome.Trace, d *Diagnosis, how string, elapsed time.Duration) bool {
	if t.UpstreamRecords > 0 {
		return false
	}
	switch {
	case t.Role != 0 && t.Role != fcgi.RoleResponder:
		d.Cause = CauseRejectedRequest
		d.Evidence["role"] = t.Role.String()
		d.Detail = fmt.Sprintf("php-fpm %s after %s without sending a record: the request's role is %s, and php-fpm answers only RESPONDER requests; it drops others unanswered.", how, seconds(elapsed), t.Role)
		d.Hints = []string{"Send RESPONDER requests (role 1), as nginx does; the FastCGI client in front of fcgiscope sends something else."}
	case t.ParamsBytes > maxParamsRecord:
		d.Cause = CauseRejectedRequest
		d.Evidence["params_bytes"] = strconv.Itoa(t.ParamsBytes)
		d.Detail = fmt.Sprintf("php-fpm %s after %s without sending a record: the request's params take %d bytes, more than one FastCGI record holds (%d), and php-fpm reads each PARAMS record on its own, so it cannot read them.", how, seconds(elapsed), t.ParamsBytes, maxParamsRecord)
		d.Hints = []string{"Send fewer or smaller params: huge cookies or headers (nginx's large_client_header_buffers keeps them far below this), or a client that puts the whole request in params."}
	default:
		return false
	}
	return true
}

// workerGoneByTiming explains a dead worker as a request_terminate_timeout
// kill when the request ran as long as the pool allows, and reports whether
// it did.
func (c *Classifier) workerGoneByTiming(t *outcome.Trace, d *Diagnosis, how string, elapsed time.Duration) bool {
	ev := d.Evidence
	p := c.pool()
	if p == nil || p.RequestTerminateTimeout <= 0 || !matchesTerminate(elapsed, p.RequestTerminateTimeout) {
		return false
	}
	d.Cause = CauseWorkerTimeout
	limit := p.RequestTerminateTimeout
	where := p.Settings["request_terminate_timeout"].Where()
	ev["request_terminate_timeout"] = limit.String()
	ev["pool"] = p.Name
	if where != "" {
		ev["config"] = where
	}
	d.Detail = fmt.Sprintf("The php-fpm worker %s without finishing after %s. Pool %q has request_terminate_timeout = %s%s, and php-fpm terminates a worker whose request runs that long; the timing matches.", how, seconds(elapsed), p.Name, limit, at(where))
	d.Hints = []string{
		fmt.Sprintf("Make %s finish within %s, or raise request_terminate_timeout%s (and nginx's fastcgi_read_timeout with it).", scriptName(t), limit, at(where)),
	}
	d.Hints = append(d.Hints, c.slowlogHint()...)
	return true
}

// deathLineSettle is how long after the first line about a dead worker the
// classifier waits for a later one: php-fpm writes them within milliseconds
// of the death.
const deathLineSettle = 50 * time.Millisecond

// fromLog explains a dead worker from php-fpm's own error log: the
// "execution timed out" line names the script, the "exited on signal" line
// the signal. It reports whether the log had the answer.
func (c *Classifier) fromLog(t *outcome.Trace, d *Diagnosis, how string, elapsed time.Duration) bool {
	if c.Log == nil {
		return false
	}
	wait := c.LogWait
	if wait == 0 {
		wait = 300 * time.Millisecond
	}
	// Only lines that arrived after the request reached php-fpm can be
	// about it; php-fpm's own timestamps have whole seconds.
	since := t.DialStart
	isTimedOut := func(e fpm.Event) bool { return e.Kind == fpm.EventTimedOut && e.Script == t.Script }
	isDeath := func(e fpm.Event) bool { return e.Kind == fpm.EventSignal || e.Kind == fpm.EventExit }
	if _, ok := c.Log.Find(since, wait, func(e fpm.Event) bool { return isTimedOut(e) || isDeath(e) }); !ok {
		return false
	}
	// php-fpm logs a worker's death a moment after it happens, so the
	// line about a worker that died just before this request's can arrive
	// during it: give this one's line the time to come too, and go by the
	// latest. A worker killed for its timeout has its "timed out" line
	// before its death line, so both are in by then.
	time.Sleep(deathLineSettle)
	timedOut, haveTimedOut := c.Log.Find(since, 0, isTimedOut)
	exit, haveExit := c.Log.Find(since, 0, func(e fpm.Event) bool {
		return isDeath(e) && (!haveTimedOut || e.Pid == timedOut.Pid)
	})
	if !haveTimedOut && !haveExit {
		return false
	}
	ev := d.Evidence
	ev["fpm_log"] = c.Log.Path
	if haveTimedOut {
		d.Cause = CauseWorkerTimeout
		d.FPMPid = timedOut.Pid
		ev["fpm_log_line"] = timedOut.Line
		d.Detail = fmt.Sprintf("php-fpm terminated worker %d: its log says the script %s (request %q) \"execution timed out (%.2f sec)\".", timedOut.Pid, timedOut.Script, timedOut.Request, timedOut.Seconds)
		limitHint := "raise request_terminate_timeout in the pool"
		if p := c.pool(); p != nil && p.RequestTerminateTimeout > 0 {
			where := p.Settings["request_terminate_timeout"].Where()
			ev["request_terminate_timeout"] = p.RequestTerminateTimeout.String()
			ev["pool"] = p.Name
			if where != "" {
				ev["config"] = where
			}
			d.Detail += fmt.Sprintf(" Pool %q has request_terminate_timeout = %s%s.", p.Name, p.RequestTerminateTimeout, at(where))
			limitHint = fmt.Sprintf("raise request_terminate_timeout%s", at(where))
		}
		d.Hints = []string{
			fmt.Sprintf("Make %s finish sooner, or %s (and nginx's fastcgi_read_timeout with it).", scriptName(t), limitHint),
		}
		d.Hints = append(d.Hints, c.slowlogHint()...)
		return true
	}
	d.FPMPid = exit.Pid
	ev["fpm_log_line"] = exit.Line
	if exit.Kind == fpm.EventExit {
		d.Cause = CauseWorkerDied
		ev["exit_code"] = strconv.Itoa(exit.Code)
		d.Detail = fmt.Sprintf("The php-fpm worker %s after %s; php-fpm's log says worker %d exited with code %d. A PHP extension or the script called exit() at the process level.", how, seconds(elapsed), exit.Pid, exit.Code)
		d.Hints = []string{"Look at the lines before it in " + c.Log.Path + " and at the script's last actions."}
		return true
	}
	ev["signal"] = exit.SignalName
	if exit.Signal == int(syscall.SIGTERM) && c.pool() != nil && c.pool().RequestTerminateTimeout > 0 && matchesTerminate(elapsed, c.pool().RequestTerminateTimeout) {
		// A terminate kill whose "timed out" line was not found: the
		// signal and the timing still say what happened.
		c.workerGoneByTiming(t, d, how, elapsed)
		d.FPMPid = exit.Pid
		return true
	}
	if syscall.Signal(exit.Signal) == syscall.SIGKILL && c.oomKilled(t, d, exit.Pid, how, elapsed) {
		return true
	}
	d.Cause = CauseWorkerCrashed
	core := ""
	if exit.CoreDumped {
		core = ", core dumped"
	}
	d.Detail = fmt.Sprintf("The php-fpm worker %s after %s: php-fpm's log says worker %d exited on signal %d (%s%s).", how, seconds(elapsed), exit.Pid, exit.Signal, exit.SignalName, core)
	d.Hints = []string{adviseSignal(syscall.Signal(exit.Signal), exit.SignalName)}
	return true
}

// UpstreamWasRestarting reports whether php-fpm's log shows a reload or a
// stop around t: then a connection it closed without a word was cut by the
// restart, not by a crash, and the request may be sent again. It is the
// proxy's RetryClosed hook.
func (c *Classifier) UpstreamWasRestarting(t *outcome.Trace) bool {
	if c.Log == nil {
		return false
	}
	_, ok := c.Log.Find(t.DialStart.Add(-2*time.Second), 200*time.Millisecond, func(e fpm.Event) bool {
		return e.Kind == fpm.EventReloading || e.Kind == fpm.EventStopping
	})
	return ok
}

// poolSummary describes the pool from php-fpm's status page. A snapshot
// taken before the request began waiting would describe another moment, so
// only a newer one is quoted; a status page that does not answer at all says
// that no worker is free, not even for it.
func (c *Classifier) poolSummary(t *outcome.Trace) string {
	if c.Status == nil {
		return ""
	}
	st, at, ok := c.Status.Latest()
	if ok && !at.Before(t.ParamsDone) {
		return "php-fpm's status page: " + st.Summary()
	}
	if c.Status.Stats().InFlight && ok {
		return fmt.Sprintf("php-fpm's status page has not answered for %s: no worker was free, not even for it", seconds(time.Since(at)))
	}
	return ""
}

// addWorkerEvidence ties a dead worker to its pid through the status page
// when the log did not, and adds the slowlog's stack of the request.
func (c *Classifier) addWorkerEvidence(t *outcome.Trace, d *Diagnosis) {
	if d.FPMPid == 0 && c.Status != nil {
		if st, _, ok := c.Status.Latest(); ok {
			for _, p := range st.Processes {
				if p.Busy() && p.Script == t.Script && t.Script != "" {
					d.FPMPid = p.PID
					d.Evidence["fpm_pid_from"] = "status page: the worker that was running " + p.Script
					break
				}
			}
		}
	}
	if d.FPMPid == 0 || c.Slowlog == nil {
		return
	}
	entry, ok := c.Slowlog.Find(d.FPMPid, t.DialStart, 100*time.Millisecond)
	if !ok {
		return
	}
	var frames []string
	for _, f := range entry.Frames {
		frames = append(frames, f.String())
	}
	d.Evidence["slowlog"] = strings.Join(frames, " <- ")
	if top, ok := entry.Top(); ok {
		d.Detail += fmt.Sprintf(" php-fpm's slowlog caught it in %s.", top)
	}
}

// slowlogHint suggests the slowlog when the pool does not have one: it is
// how to learn where a slow script spends its time.
func (c *Classifier) slowlogHint() []string {
	if c.pool() != nil && c.pool().RequestSlowlogTimeout > 0 {
		return nil
	}
	return []string{"To see where the time goes, set request_slowlog_timeout (a little under the limit) and slowlog in the pool: php-fpm then logs the script's stack."}
}

// matchesTerminate reports whether a request that ran for elapsed was ended
// by php-fpm's request_terminate_timeout. php-fpm checks timeouts on a
// heartbeat of a third of the smallest timeout, so the kill lands between
// the limit and about a third later; scheduling adds a little.
func matchesTerminate(elapsed, limit time.Duration) bool {
	return elapsed >= limit-100*time.Millisecond && elapsed <= limit+limit/3+time.Second
}
