package diagnostics

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/cgroup"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/front"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

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
	// Front says what nginx, in front of fcgiscope, is configured to do;
	// nil means nothing is known of it, and nginx's defaults are assumed.
	Front FrontSource
	// LogWait bounds how long a failure waits for php-fpm's log line,
	// which can come a few milliseconds after the connection dies;
	// 0 means 300 ms.
	LogWait time.Duration
	// FollowFor bounds how long the worker of a request the web server
	// gave up on is followed, to learn how its script ended, when the
	// pool's request_terminate_timeout does not bound it; 0 means 2
	// minutes. The request's explanation waits for it.
	FollowFor time.Duration
	// Done, when closed, ends such follows at once, with what is known:
	// fcgiscope is stopping.
	Done <-chan struct{}

	// PHPIni is the php.ini php-fpm loads, for PHP's limits and where
	// they are set; nil means PHP's defaults, said to be such.
	PHPIni *fpm.PHPIni
	// PHPLog follows the file PHP writes its errors to (the error_log ini
	// setting); nil when they go to the request's FastCGI stderr, or
	// cannot be read.
	PHPLog *fpm.MessageLog
	// Memory watches php-fpm's memory cgroup, to tell a worker the OOM
	// killer took; nil when it is not visible.
	Memory MemoryWatch
	// Kernel follows the kernel's log for OOM kills; nil when it is not
	// read.
	Kernel OOMLog
	// FPMRoot returns the directory through which php-fpm's file system
	// is seen here ("/proc/PID/root"), or "" when it is not visible; nil
	// means the same as "".
	FPMRoot func() string

	followed atomic.Int32 // requests being followed
	// reloaded holds the pool and php.ini read again by Reload; until
	// then the Pool and PHPIni fields apply.
	reloaded atomic.Pointer[phpConfig]
	// oomAt is when an OOM kill was last seen in php-fpm's cgroup (Unix
	// nanoseconds): one kill, seen by the first request that looked, is
	// the answer for every request that died with it.
	oomAt atomic.Int64
}

// phpConfig is what Reload puts in place of the Pool and PHPIni fields.
type phpConfig struct {
	pool *fpm.Pool
	ini  *fpm.PHPIni
}

// Reload makes the classifier use pool and ini, read again (on SIGHUP),
// for the requests explained from now on. It is safe while requests are
// being explained.
func (c *Classifier) Reload(pool *fpm.Pool, ini *fpm.PHPIni) {
	c.reloaded.Store(&phpConfig{pool, ini})
}

// pool returns the php-fpm pool in effect: the one Reload gave, else the
// Pool field.
func (c *Classifier) pool() *fpm.Pool {
	if r := c.reloaded.Load(); r != nil {
		return r.pool
	}
	return c.Pool
}

// phpIni returns the php.ini in effect, as pool does the pool.
func (c *Classifier) phpIni() *fpm.PHPIni {
	if r := c.reloaded.Load(); r != nil {
		return r.ini
	}
	return c.PHPIni
}

// MemoryWatch tells how many times the OOM killer struck in php-fpm's
// memory cgroup since it was last asked, as *cgroup.Watch does.
type MemoryWatch interface {
	Kills() (int64, cgroup.Memory, error)
}

// OOMLog tells whether the kernel's log says the OOM killer killed pid, as
// *cgroup.KernelLog does.
type OOMLog interface {
	Killed(pid int) (string, bool)
}

// FrontSource gives what fcgiscope knows of the web server in front of it,
// as *front.Watcher does.
type FrontSource interface {
	Front() *front.Front
}

// front returns what is known of nginx; nil when nothing is.
func (c *Classifier) front() *front.Front {
	if c.Front == nil {
		return nil
	}
	return c.Front.Front()
}

// Diagnose explains t. It returns nil for a request that succeeded without
// anything worth noting. Explaining a failure may wait a moment for
// php-fpm's log line about it; callers run it off the connection's path.
func (c *Classifier) Diagnose(t *outcome.Trace) *Diagnosis {
	var d *Diagnosis
	switch {
	case t.Err != nil:
		d = c.failure(t)
	default:
		d = c.completed(t)
	}
	if d != nil {
		c.rename(d)
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

func (c *Classifier) failure(t *outcome.Trace) *Diagnosis {
	err := t.Err
	up := t.Upstream.String()
	ev := map[string]string{"upstream": up, "phase": string(t.Phase()), "error": err.Error()}
	d := &Diagnosis{Evidence: ev}

	var dialErr *outcome.DialError
	var queueErr *outcome.QueueTimeoutError
	var verErr *fcgi.VersionError
	var protoErr *outcome.ProtocolError
	var rejected *outcome.RejectedError
	var paramsErr *outcome.ParamsTimeoutError
	var readErr *outcome.ReadTimeoutError
	var headErr *outcome.HeadTooLongError
	var invalidErr *outcome.InvalidHeaderError
	var bigErr *outcome.HeadTooBigError
	switch {
	case errors.As(err, &bigErr):
		c.headTooBig(t, bigErr, d)
	case errors.Is(err, outcome.ErrClientAborted) && c.webServerTimeout(t, d):
	case errors.Is(err, outcome.ErrClientAborted):
		d.Cause = CauseClientAborted
		d.Detail = fmt.Sprintf("The web server closed its connection after %s, before the response was complete (phase: %s). The client went away, or nginx's fastcgi_read_timeout expired.", seconds(t.Duration()), t.Phase())
		if t.Phase() == outcome.PhaseWaiting {
			d.Hints = append(d.Hints, "If nginx logged \"upstream timed out\" for this request, the script outran fastcgi_read_timeout: make it faster or raise fastcgi_read_timeout.")
		}
	case errors.Is(err, outcome.ErrShutdown):
		d.Cause = CauseShutdown
		d.Detail = "fcgiscope was stopping and its shutdown timeout ran out before this request finished."
		d.Hints = []string{"Raise FCGISCOPE_SHUTDOWN_TIMEOUT above your slowest request's time."}
	case errors.Is(err, fcgi.ErrParamsTooLarge):
		d.Cause = CauseRequestTooLarge
		d.Detail = "The web server sent more FastCGI params than fcgiscope accepts: " + err.Error() + "."
		d.Hints = []string{"Raise FCGISCOPE_MAX_PARAMS_BYTES, or find the oversized header or cookie the client sends."}
	case errors.As(err, &paramsErr):
		d.Cause = CauseDownstreamInvalid
		d.Detail = "The web server opened a request but did not send its whole head in time: " + err.Error() + ". nginx sends the head at once; a slow sender is a misbehaving client."
		d.Hints = []string{"If a legitimate client needs longer, raise FCGISCOPE_PARAMS_TIMEOUT."}
	case errors.As(err, &protoErr) && !protoErr.Upstream:
		d.Cause = CauseDownstreamInvalid
		d.Detail = err.Error() + "."
	case errors.As(err, &queueErr):
		c.queueFailure(queueErr, d)
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
	case errors.As(err, &invalidErr):
		d.Cause = CauseInvalidHeader
		line := quoteBounded(invalidErr.Line, 200)
		ev["header_line"] = line
		d.Detail = fmt.Sprintf("%s sent a CGI header line that nginx refuses with \"upstream sent invalid header\" and a bare 502: %s, in %s.", up, invalidErr.Why, line)
		d.Hints = []string{"Look for what the script prints while its headers are still being sent: an echo, a var_dump or a PHP notice before header() or session_start(), a blank line or BOM before <?php, or a header() value that holds a line break or a NUL byte."}
	case errors.As(err, &headErr):
		d.Cause = CauseProtocolError
		d.Detail = fmt.Sprintf("%s sent CGI headers that did not end within %d bytes (FCGISCOPE_MAX_HEADER_BYTES): it is not sending a CGI response, or its headers are far larger than any web server accepts.", up, headErr.Limit)
		d.Hints = []string{
			"Check what the script sends before its first blank line (huge cookies, debug headers), and that the upstream is php-fpm.",
			fmt.Sprintf("nginx takes response headers up to its fastcgi_buffer_size = %s; FCGISCOPE_MAX_HEADER_BYTES should be no smaller.", c.front().BufferSize()),
		}
	case errors.As(err, &protoErr):
		d.Cause = CauseProtocolError
		d.Detail = fmt.Sprintf("%s broke the FastCGI protocol: %s.", up, protoErr.Reason)
		d.Hints = []string{"Check that the upstream is php-fpm (or another FastCGI server) of a sane version; a proxy or load balancer in between may be mangling the stream."}
	case errors.As(err, &readErr):
		d.Cause = CauseReadTimeout
		d.Detail = fmt.Sprintf("php-fpm sent nothing for longer than FCGISCOPE_READ_TIMEOUT (%s) after %s in total; fcgiscope gave up and closed the connection. The script may still be running in its worker.", readErr.Timeout, seconds(t.Duration()))
		rt := c.front().ReadTimeout()
		d.Evidence["fastcgi_read_timeout"] = rt.String()
		d.Hints = []string{
			"Make the script answer sooner (flush output early for long jobs), or raise FCGISCOPE_READ_TIMEOUT.",
			fmt.Sprintf("nginx's own limit is fastcgi_read_timeout = %s; FCGISCOPE_READ_TIMEOUT=0 leaves the limit to nginx, as without fcgiscope.", rt),
		}
	case errors.Is(err, outcome.ErrNoEndRequest):
		c.workerGone(t, d)
	default:
		unexplained(d, fmt.Sprintf("Talking to %s failed: %v.", up, err))
	}
	switch d.Cause {
	case CauseQueueTimeout, CauseWebServerTimeout, CauseBacklogFull, CauseConnectTimeout:
		if summary := c.poolSummary(t); summary != "" {
			ev["fpm_status"] = summary
			d.Detail += " " + summary + "."
		}
	case CauseWorkerTimeout, CauseWorkerCrashed, CauseWorkerDied, CauseOOMKilled:
		c.addWorkerEvidence(t, d)
	}
	switch d.Cause {
	case CauseQueueTimeout, CauseWebServerTimeout, CauseBacklogFull, CauseConnectTimeout, CauseReadTimeout, CauseClientAborted:
		c.maxChildrenReached(t, d)
	}
	switch d.Cause {
	case CauseWebServerTimeout:
		c.afterwards(t, d, "nginx gave up")
	case CauseClientAborted:
		c.afterwards(t, d, "the web server closed the connection")
	}
	if t.Truncated {
		ev["truncated"] = "true"
		ev["bytes_delivered"] = strconv.FormatInt(t.BytesOut, 10)
		d.Detail += fmt.Sprintf(" %d bytes of the response had already been sent; fcgiscope broke off the transfer so the client cannot take the partial page for a whole one.", t.BytesOut)
	}
	return d
}

// maxChildrenReached adds php-fpm's "server reached pm.max_children"
// warning to a request that waited while php-fpm logged it: the pool had
// no worker left for it.
func (c *Classifier) maxChildrenReached(t *outcome.Trace, d *Diagnosis) {
	if c.Log == nil {
		return
	}
	from := t.QueueStart
	if from.IsZero() {
		from = t.DialStart
	}
	if from.IsZero() {
		return
	}
	// php-fpm warns when the pool fills, which can be a moment before
	// this request came to wait.
	e, ok := c.Log.Find(from.Add(-time.Second), 0, func(e fpm.Event) bool { return e.Kind == fpm.EventMaxChildren })
	if !ok {
		return
	}
	d.Evidence["fpm_max_children"] = e.Line
	d.Detail += fmt.Sprintf(" While it waited, php-fpm logged \"server reached pm.max_children setting (%d)\": every worker of the pool was busy.", e.MaxChildren)
}

// unexplained gives d the honest cause of a failure that no rule explains:
// the raw error stays in the evidence, and the detail says so.
func unexplained(d *Diagnosis, what string) {
	d.Cause = CauseUnexplained
	d.Detail = what + " fcgiscope has no rule that explains this failure; the error above is all it knows."
	d.Hints = []string{"Please report the error in the evidence to fcgiscope's developers, so that it gets a cause of its own."}
}
