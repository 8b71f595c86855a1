package diagnostics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
)

// Diagnosis is the explanation of one request's outcome.
type Diagnosis struct {
	Cause *Cause
	// Detail is one or two sentences with the measured numbers.
	Detail string
	// Hints name concrete changes, most likely first.
	Hints []string
	// Evidence holds the facts the diagnosis rests on.
	Evidence map[string]string
	// FPMPid is the php-fpm worker's pid, when known.
	FPMPid int
}

// Classifier explains Traces. Its zero value works: it then knows nothing of
// php-fpm's configuration and does not look for other sockets.
type Classifier struct {
	// Pool is the php-fpm pool behind the upstream, when its
	// configuration was found.
	Pool *fpm.Pool
	// Finder looks for FastCGI responders on this host for hints; nil
	// means no scan.
	Finder *Finder
	// Log is php-fpm's error log, where it says why a worker died; nil
	// means the classifier goes by timing alone.
	Log *fpm.Follower
	// Status polls php-fpm's status page; it says how busy the pool was
	// and which worker ran which request. nil means unknown.
	Status *fpm.Poller
	// Slowlog follows php-fpm's slowlog, for the stack of a request that
	// was killed. nil means none.
	Slowlog *fpm.SlowlogFollower
	// SettingNames renames the settings the explanations name, for
	// callers whose user sets them otherwise: fcgiscope request maps
	// FCGISCOPE_UPSTREAM to --upstream. nil keeps the variable names.
	SettingNames map[string]string
	// LogWait bounds how long a failure waits for php-fpm's log line,
	// which can come a few milliseconds after the connection dies;
	// 0 means 300 ms.
	LogWait time.Duration
}

// Diagnose explains t. It returns nil for a request that succeeded without
// anything worth noting. The result is kept in t.Diagnosis, so that the
// Responder and the log share one explanation.
func (c *Classifier) Diagnose(t *proxy.Trace) *Diagnosis {
	if d, ok := t.Diagnosis.(*Diagnosis); ok {
		return d
	}
	var d *Diagnosis
	if t.Err != nil {
		d = c.failure(t)
	} else {
		d = completedWithProblem(t)
	}
	if d != nil {
		c.rename(d)
		t.Diagnosis = d
	}
	return d
}

// rename applies SettingNames to the words a person reads.
func (c *Classifier) rename(d *Diagnosis) {
	if len(c.SettingNames) == 0 {
		return
	}
	var pairs []string
	for from, to := range c.SettingNames {
		pairs = append(pairs, from, to)
	}
	r := strings.NewReplacer(pairs...)
	d.Detail = r.Replace(d.Detail)
	for i, h := range d.Hints {
		d.Hints[i] = r.Replace(h)
	}
}

func (c *Classifier) failure(t *proxy.Trace) *Diagnosis {
	err := t.Err
	up := t.Upstream.String()
	ev := map[string]string{"upstream": up, "phase": string(t.Phase()), "error": err.Error()}
	d := &Diagnosis{Evidence: ev}

	var dialErr *proxy.DialError
	var queueErr *proxy.QueueTimeoutError
	var verErr *fcgi.VersionError
	var protoErr *proxy.ProtocolError
	var rejected *proxy.RejectedError
	switch {
	case errors.Is(err, proxy.ErrClientAborted):
		d.Cause = CauseClientAborted
		d.Detail = fmt.Sprintf("The web server closed its connection after %s, before the response was complete (phase: %s). The client went away, or nginx's fastcgi_read_timeout expired; fcgiscope closed the php-fpm connection.", seconds(t.Duration()), t.Phase())
		if t.Phase() == proxy.PhaseWaiting {
			d.Hints = append(d.Hints, "If nginx logged \"upstream timed out\" for this request, the script outran fastcgi_read_timeout: make it faster or raise fastcgi_read_timeout.")
		}
	case errors.Is(err, proxy.ErrShutdown):
		d.Cause = CauseShutdown
		d.Detail = "fcgiscope was stopping and its shutdown timeout ran out before this request finished."
		d.Hints = []string{"Raise FCGISCOPE_SHUTDOWN_TIMEOUT above your slowest request's time."}
	case errors.Is(err, fcgi.ErrParamsTooLarge):
		d.Cause = CauseRequestTooLarge
		d.Detail = "The web server sent more FastCGI params than fcgiscope accepts: " + err.Error() + "."
		d.Hints = []string{"Raise FCGISCOPE_MAX_PARAMS_BYTES, or find the oversized header or cookie the client sends."}
	case errors.Is(err, proxy.ErrParamsTimeout):
		d.Cause = CauseDownstreamInvalid
		d.Detail = "The web server opened a request but did not send its whole head in time: " + err.Error() + ". nginx sends the head at once; a slow sender is a misbehaving client."
		d.Hints = []string{"If a legitimate client needs longer, raise FCGISCOPE_PARAMS_TIMEOUT."}
	case errors.As(err, &protoErr) && !protoErr.Upstream:
		d.Cause = CauseDownstreamInvalid
		d.Detail = err.Error() + "."
	case errors.As(err, &queueErr):
		d.Cause = CauseQueueTimeout
		ev["max_conns"] = strconv.Itoa(queueErr.MaxConns)
		ev["queue_ms"] = fmt.Sprintf("%.1f", ms(queueErr.Waited))
		d.Detail = fmt.Sprintf("All %d upstream slots (FCGISCOPE_MAX_CONNS) stayed busy for %s (FCGISCOPE_QUEUE_TIMEOUT); the request was never sent to php-fpm.", queueErr.MaxConns, seconds(queueErr.Waited))
		d.Hints = []string{
			"The pool is saturated: find the slow scripts (request_slowlog_timeout, pm.status_path) or add workers (pm.max_children, then FCGISCOPE_MAX_CONNS).",
			"A longer FCGISCOPE_QUEUE_TIMEOUT absorbs longer bursts at the cost of latency.",
		}
	case errors.As(err, &dialErr):
		c.dialFailure(t, dialErr, d)
		if t.DialAttempts > 1 {
			ev["dial_attempts"] = strconv.Itoa(t.DialAttempts)
			d.Detail += fmt.Sprintf(" fcgiscope tried %d times over %s before giving up.", t.DialAttempts, seconds(t.End.Sub(t.DialStart)))
		}
	case errors.As(err, &verErr) && t.UpstreamRecords > 0:
		d.Cause = CauseProtocolError
		ev["bad_header"] = strconv.Quote(string(verErr.Header[:]))
		d.Detail = fmt.Sprintf("%s sent %d valid FastCGI records, then a record header with version %d (bytes %q): the stream is corrupt.", up, t.UpstreamRecords, verErr.Version(), verErr.Header[:])
		d.Hints = []string{"Check that nothing between fcgiscope and the upstream rewrites the stream, and that the upstream's FastCGI library is sane."}
	case errors.As(err, &verErr):
		d.Cause = CauseNotFastCGI
		ev["first_bytes"] = strconv.Quote(string(verErr.Header[:]))
		d.Detail = fmt.Sprintf("%s accepted the connection but answered with %q, which is not FastCGI.", up, verErr.Header[:])
		if verErr.LooksLikeHTTP() {
			d.Detail += " An HTTP server listens there, not php-fpm."
		}
		d.Hints = append(d.Hints, "Point FCGISCOPE_UPSTREAM at php-fpm's listen address (the pool's listen = ... setting), not at a web server.")
		d.Hints = append(d.Hints, c.finderHints(t)...)
	case errors.As(err, &rejected):
		d.Cause = CauseOverloaded
		d.Detail = fmt.Sprintf("%s ended the request with END_REQUEST status %s before sending a response.", up, rejected.Status)
		d.Hints = []string{"The application is refusing work: give it more workers, or send less traffic its way."}
	case errors.As(err, &protoErr):
		d.Cause = CauseProtocolError
		d.Detail = fmt.Sprintf("%s broke the FastCGI protocol: %s.", up, protoErr.Reason)
		d.Hints = []string{"Check that the upstream is php-fpm (or another FastCGI server) of a sane version; a proxy or load balancer in between may be mangling the stream."}
	case errors.Is(err, proxy.ErrReadTimeout):
		d.Cause = CauseReadTimeout
		d.Detail = fmt.Sprintf("php-fpm sent nothing for longer than FCGISCOPE_READ_TIMEOUT (%s) after %s in total; fcgiscope gave up and closed the connection. The script may still be running in its worker.", readTimeoutOf(err), seconds(t.Duration()))
		d.Hints = []string{"Make the script answer sooner (flush output early for long jobs), or raise FCGISCOPE_READ_TIMEOUT."}
	case errors.Is(err, fcgi.ErrNoEndRequest):
		c.workerGone(t, d)
	default:
		d.Cause = CauseProtocolError
		d.Detail = fmt.Sprintf("Talking to %s failed: %v.", up, err)
	}
	switch d.Cause {
	case CauseQueueTimeout, CauseBacklogFull, CauseConnectTimeout:
		if summary := c.poolSummary(t); summary != "" {
			ev["fpm_status"] = summary
			d.Detail += " " + summary + "."
		}
	case CauseWorkerTimeout, CauseWorkerCrashed, CauseWorkerDied:
		c.addWorkerEvidence(t, d)
	}
	if t.Truncated {
		ev["truncated"] = "true"
		ev["bytes_delivered"] = strconv.FormatInt(t.BytesOut, 10)
		d.Detail += fmt.Sprintf(" %d bytes of the response had already been sent; fcgiscope broke off the transfer so the client cannot take the partial page for a whole one.", t.BytesOut)
	}
	return d
}

func (c *Classifier) dialFailure(t *proxy.Trace, de *proxy.DialError, d *Diagnosis) {
	err := de.Err
	addr := de.Addr
	ev := d.Evidence
	var dnsErr *net.DNSError
	unix := addr.Network == "unix"
	switch {
	case errors.As(err, &dnsErr):
		d.Cause = CauseDNSFailed
		ev["host"] = dnsErr.Name
		if dnsErr.IsTimeout || errors.Is(err, context.DeadlineExceeded) {
			// A lookup that timed out is a gateway timeout, not a bad name.
			d.Cause = &Cause{ID: CauseDNSFailed.ID, Status: 504, Title: CauseDNSFailed.Title}
			d.Detail = fmt.Sprintf("Looking up %q timed out: %v.", dnsErr.Name, dnsErr.Err)
		} else {
			d.Detail = fmt.Sprintf("The host name %q of %s does not resolve: %v.", dnsErr.Name, addr, dnsErr.Err)
		}
		d.Hints = []string{"Check the spelling of the host in FCGISCOPE_UPSTREAM, or use php-fpm's IP address or unix socket."}
	case errors.Is(err, syscall.ENOENT):
		d.Cause = CauseSocketMissing
		d.Detail = fmt.Sprintf("The socket file %s does not exist: php-fpm is not running, or listens somewhere else.", addr.Address)
		d.Hints = append(d.Hints, "Start php-fpm (systemctl start php8.2-fpm, or your image's entrypoint) and compare its pool's listen = ... with FCGISCOPE_UPSTREAM.")
		d.Hints = append(d.Hints, c.nearbyHints(addr)...)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		d.Cause = CausePermissionDenied
		d.Detail = fmt.Sprintf("Connecting to %s was refused for lack of permission (%v).", addr.Address, errnoName(err))
		d.Hints = permissionHints(addr.Address, ev)
	case errors.Is(err, syscall.EAGAIN):
		d.Cause = CauseBacklogFull
		d.Detail = fmt.Sprintf("php-fpm's listen queue on %s is full (EAGAIN): every worker is busy and the queue of waiting connections is at its limit.", addr.Address)
		if p := c.Pool; p != nil {
			ev["pm.max_children"] = strconv.Itoa(p.MaxChildren)
			ev["listen.backlog"] = strconv.Itoa(p.ListenBacklog)
			d.Detail += fmt.Sprintf(" Pool %q runs at most %d workers with listen.backlog = %d.", p.Name, p.MaxChildren, p.ListenBacklog)
		}
		d.Hints = []string{
			"Raise pm.max_children if the machine has memory for more workers, and listen.backlog to absorb bursts.",
			"Find what keeps the workers busy: request_slowlog_timeout and pm.status_path show the slow scripts.",
		}
	case errors.Is(err, syscall.ECONNREFUSED) && unix:
		d.Cause = CauseSocketStale
		d.Detail = fmt.Sprintf("The socket file %s exists, but no process accepts connections on it: php-fpm died without removing it, or is restarting.", addr.Address)
		d.Hints = []string{"Check whether php-fpm runs (pgrep -a php-fpm) and start it; it replaces the stale file when it starts."}
		d.Hints = append(d.Hints, c.finderHints(t)...)
	case errors.Is(err, syscall.ECONNREFUSED):
		d.Cause = CauseRefused
		d.Detail = fmt.Sprintf("Nothing accepts connections on %s (connection refused).", addr)
		hints := c.finderHints(t)
		if len(hints) == 0 {
			hints = []string{"Start php-fpm, or set FCGISCOPE_UPSTREAM to the listen address of its pool (listen = ... in the pool file)."}
		}
		d.Hints = hints
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		d.Cause = CauseConnectTimeout
		d.Detail = fmt.Sprintf("%s did not accept the connection within %s. On TCP the kernel drops new connections silently when php-fpm's listen queue is full.", addr, seconds(t.DialEnd.Sub(t.DialStart)))
		if t.DialEnd.IsZero() {
			d.Detail = fmt.Sprintf("%s did not accept the connection within FCGISCOPE_CONNECT_TIMEOUT (%s). On TCP the kernel drops new connections silently when php-fpm's listen queue is full.", addr, seconds(t.End.Sub(t.DialStart)))
		}
		d.Hints = []string{"Check that php-fpm's workers are not all busy (pm.status_path), and that no firewall drops packets to the port."}
	default:
		d.Cause = CauseRefused
		d.Detail = fmt.Sprintf("Connecting to %s failed: %v.", addr, err)
	}
	if n := errnoName(err); n != "" {
		ev["errno"] = n
	}
}

// workerGone explains a connection that ended before END_REQUEST.
func (c *Classifier) workerGone(t *proxy.Trace, d *Diagnosis) {
	ev := d.Evidence
	elapsed := t.End.Sub(t.DialStart)
	ev["elapsed_s"] = fmt.Sprintf("%.3f", elapsed.Seconds())
	how := "closed the connection"
	if errors.Is(t.Err, syscall.ECONNRESET) {
		how = "reset the connection"
	}
	if c.fromLog(t, d, how, elapsed) {
		return
	}
	if c.workerGoneByTiming(t, d, how, elapsed) {
		return
	}
	d.Cause = CauseWorkerDied
	d.Detail = fmt.Sprintf("The php-fpm worker %s after %s without sending END_REQUEST: it was killed or crashed mid-request. php-fpm's error log names the signal (\"child N exited on signal ...\").", how, seconds(elapsed))
	if t.Phase() == proxy.PhaseStreaming {
		d.Detail = fmt.Sprintf("The php-fpm worker %s after %s, in the middle of its response, without sending END_REQUEST: it was killed or crashed. php-fpm's error log names the signal (\"child N exited on signal ...\").", how, seconds(elapsed))
	}
	d.Hints = []string{
		"Look in php-fpm's error log at this time for \"exited on signal\": SIGSEGV points at a PHP extension, SIGKILL at the kernel's OOM killer (dmesg) or an operator.",
		"Give fcgiscope the pool configuration (FCGISCOPE_FPM_CONFIG) so it can tell a request_terminate_timeout kill from a crash.",
	}
	if c.Pool != nil {
		d.Hints = d.Hints[:1]
	}
}

// workerGoneByTiming explains a dead worker as a request_terminate_timeout
// kill when the request ran as long as the pool allows, and reports whether
// it did.
func (c *Classifier) workerGoneByTiming(t *proxy.Trace, d *Diagnosis, how string, elapsed time.Duration) bool {
	ev := d.Evidence
	p := c.Pool
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

// fromLog explains a dead worker from php-fpm's own error log: the
// "execution timed out" line names the script, the "exited on signal" line
// the signal. It reports whether the log had the answer.
func (c *Classifier) fromLog(t *proxy.Trace, d *Diagnosis, how string, elapsed time.Duration) bool {
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
	timedOut, haveTimedOut := c.Log.Find(since, 0, func(e fpm.Event) bool {
		return e.Kind == fpm.EventTimedOut && e.Script == t.Script
	})
	exit, haveExit := c.Log.Find(since, wait, func(e fpm.Event) bool {
		return (e.Kind == fpm.EventSignal || e.Kind == fpm.EventExit) && (!haveTimedOut || e.Pid == timedOut.Pid)
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
		if p := c.Pool; p != nil && p.RequestTerminateTimeout > 0 {
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
	if exit.Signal == int(syscall.SIGTERM) && c.Pool != nil && c.Pool.RequestTerminateTimeout > 0 && matchesTerminate(elapsed, c.Pool.RequestTerminateTimeout) {
		// A terminate kill whose "timed out" line was not found: the
		// signal and the timing still say what happened.
		c.workerGoneByTiming(t, d, how, elapsed)
		d.FPMPid = exit.Pid
		return true
	}
	d.Cause = CauseWorkerCrashed
	core := ""
	if exit.CoreDumped {
		core = ", core dumped"
	}
	d.Detail = fmt.Sprintf("The php-fpm worker %s after %s: php-fpm's log says worker %d exited on signal %d (%s%s).", how, seconds(elapsed), exit.Pid, exit.Signal, exit.SignalName, core)
	switch syscall.Signal(exit.Signal) {
	case syscall.SIGSEGV, syscall.SIGBUS, syscall.SIGILL, syscall.SIGABRT:
		d.Hints = []string{
			"A crash inside PHP or an extension: note the script and request, disable extensions one at a time (opcache, xdebug, imagick are usual suspects) or get a backtrace from a core dump (rlimit_core = unlimited in the pool).",
		}
	case syscall.SIGKILL:
		d.Hints = []string{
			"SIGKILL comes from the kernel's OOM killer (see dmesg or the container's memory limit) or from an operator; lower memory_limit times pm.max_children below the memory available.",
		}
	default:
		d.Hints = []string{"Something sent the worker " + exit.SignalName + ": an operator, a deploy script, or systemd."}
	}
	return true
}

// UpstreamWasRestarting reports whether php-fpm's log shows a reload or a
// stop around t: then a connection it closed without a word was cut by the
// restart, not by a crash, and the request may be sent again. It is the
// proxy's RetryClosed hook.
func (c *Classifier) UpstreamWasRestarting(t *proxy.Trace) bool {
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
func (c *Classifier) poolSummary(t *proxy.Trace) string {
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
func (c *Classifier) addWorkerEvidence(t *proxy.Trace, d *Diagnosis) {
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
	if c.Pool != nil && c.Pool.RequestSlowlogTimeout > 0 {
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

// completedWithProblem names the problems of responses php-fpm completed
// itself: they pass through unchanged and are only logged.
func completedWithProblem(t *proxy.Trace) *Diagnosis {
	stderr := t.Stderr
	ev := map[string]string{"script": t.Script}
	switch {
	case bytes.Contains(stderr, []byte("Primary script unknown")):
		return &Diagnosis{Cause: CauseScriptNotFound, Evidence: ev,
			Detail: fmt.Sprintf("php-fpm found no file at SCRIPT_FILENAME %q and answered 404 \"File not found.\".", t.Script),
			Hints:  []string{"Check the root and SCRIPT_FILENAME in nginx (fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;) against where the file is, as php-fpm's user and chroot see it."}}
	case bytes.Contains(stderr, []byte("has been denied (see security.limit_extensions)")):
		return &Diagnosis{Cause: CauseScriptDenied, Evidence: ev,
			Detail: fmt.Sprintf("php-fpm refused to run %q: its extension is not in security.limit_extensions.", t.Script),
			Hints:  []string{"Send only .php files to php-fpm (location ~ \\.php$), or add the extension to security.limit_extensions in the pool."}}
	case bytes.Contains(stderr, []byte("Unable to open primary script")):
		return &Diagnosis{Cause: CauseScriptDenied, Evidence: ev,
			Detail: fmt.Sprintf("php-fpm could not open %q: %s", t.Script, firstLine(stderr, "Unable to open primary script")),
			Hints:  []string{"Give the pool's user (user = ... in the pool) read access to the script and execute access to every directory above it."}}
	case bytes.Contains(stderr, []byte("Allowed memory size of")):
		return &Diagnosis{Cause: CauseMemory, Evidence: ev,
			Detail: "The script hit PHP's memory_limit: " + firstLine(stderr, "Allowed memory size of"),
			Hints:  []string{"Find what the script loads into memory (large arrays, whole files, ORM result sets), or raise memory_limit for it."}}
	case bytes.Contains(stderr, []byte("PHP Fatal error")):
		return &Diagnosis{Cause: CausePHPFatal, Evidence: ev,
			Detail: "The script stopped with a fatal error: " + firstLine(stderr, "PHP Fatal error"),
			Hints:  []string{"Fix the error at the file and line it names; with display_errors off the client sees an empty 500."}}
	}
	return nil
}

// firstLine returns the line of b that contains marker, trimmed.
func firstLine(b []byte, marker string) string {
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		return ""
	}
	line := b[i:]
	if j := bytes.IndexAny(line, "\r\n"); j >= 0 {
		line = line[:j]
	}
	return strings.TrimSpace(string(line))
}

func (c *Classifier) finderHints(t *proxy.Trace) []string {
	if c.Finder == nil {
		return nil
	}
	found := c.Finder.Responders()
	var hints []string
	for _, r := range found {
		if r.Addr == t.Upstream {
			continue
		}
		hints = append(hints, fmt.Sprintf("A FastCGI server answers on %s: if that is your php-fpm, set FCGISCOPE_UPSTREAM=%s (without fcgiscope: fastcgi_pass %s;).", r.Addr, r.Addr, r.Addr))
	}
	return hints
}

func (c *Classifier) nearbyHints(addr fcgi.Addr) []string {
	if c.Finder == nil {
		return nil
	}
	var hints []string
	for _, a := range c.Finder.Nearby(addr.Address) {
		hints = append(hints, fmt.Sprintf("A socket exists at %s: if that is php-fpm, set FCGISCOPE_UPSTREAM=%s.", a, a))
	}
	return hints
}

func readTimeoutOf(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "("); i >= 0 && strings.HasSuffix(s, ")") {
		return s[i+1 : len(s)-1]
	}
	return "the configured limit"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// errnoName returns the symbolic name of the errno inside err, such as
// "ECONNREFUSED", or "".
func errnoName(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	for _, e := range []struct {
		n syscall.Errno
		s string
	}{
		{syscall.ECONNREFUSED, "ECONNREFUSED"}, {syscall.ENOENT, "ENOENT"}, {syscall.EACCES, "EACCES"},
		{syscall.EPERM, "EPERM"}, {syscall.EAGAIN, "EAGAIN"}, {syscall.ECONNRESET, "ECONNRESET"},
		{syscall.ETIMEDOUT, "ETIMEDOUT"}, {syscall.EHOSTUNREACH, "EHOSTUNREACH"}, {syscall.ENETUNREACH, "ENETUNREACH"},
		{syscall.EPIPE, "EPIPE"}, {syscall.ENOTSOCK, "ENOTSOCK"},
	} {
		if errno == e.n {
			return e.s
		}
	}
	return "errno " + strconv.Itoa(int(errno))
}

func seconds(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func at(where string) string {
	if where == "" {
		return ""
	}
	return " (" + where + ")"
}

func scriptName(t *proxy.Trace) string {
	if t.Script != "" {
		return t.Script
	}
	if t.URI != "" {
		return t.URI
	}
	return "the script"
}
