package diagnostics

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/cgroup"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
	"github.com/fcgiscope/fcgiscope/internal/readmetest"
)

var updateREADME = flag.Bool("update-readme", false, "rewrite the README's cause table from the catalogue")

// causeTable renders the catalogue as the README's table of causes.
func causeTable() string {
	var b strings.Builder
	b.WriteString("| cause | status | what happened | what to change |\n|---|---|---|---|\n")
	for _, c := range Causes {
		status := fmt.Sprint(c.Status)
		if c.AltStatus != 0 {
			status += fmt.Sprintf(" (%d when %s)", c.AltStatus, c.AltWhen)
		}
		if c.LogOnly {
			status += ", log only"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", c.ID, status, strings.ReplaceAll(c.Meaning, "|", "\\|"), strings.ReplaceAll(c.Fix, "|", "\\|"))
	}
	return b.String()
}

// TestREADMECauseTable fails when the README's table of causes and the
// catalogue disagree; -update-readme rewrites the table.
func TestREADMECauseTable(t *testing.T) {
	readmetest.Check(t, "../../README.md", "causes", causeTable(),
		"go test ./internal/diagnostics -run TestREADMECauseTable -update-readme", *updateREADME)
}

func TestCatalogueEntriesAreWhole(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Causes {
		if seen[c.ID] {
			t.Errorf("cause %s listed twice", c.ID)
		}
		seen[c.ID] = true
		if c.ID == "" || c.Status < 100 || c.Title == "" || c.Meaning == "" || c.Fix == "" || (c.AltStatus != 0) != (c.AltWhen != "") {
			t.Errorf("cause %+v lacks an id, a status, a title, a meaning, a fix, or says half of its other status", c)
		}
	}
}

// crashLog is a php-fpm error log with a worker's crash in it, followed
// from before the crash, as fcgiscope follows it.
func crashLog(t *testing.T) *fpm.Follower {
	return fpmLog(t, "WARNING: [pool www] child 4242 exited on signal 11 (SIGSEGV) after 1.5 seconds from start")
}

// fpmLog returns a Follower of a php-fpm log into which lines were written,
// each with php-fpm's timestamp of now, after it began following.
func fpmLog(t *testing.T, lines ...string) *fpm.Follower {
	t.Helper()
	path := filepath.Join(t.TempDir(), "php-fpm.log")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &fpm.Follower{Path: path}
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-f.Ready()
	var text string
	for _, line := range lines {
		text += time.Now().Format("[02-Jan-2006 15:04:05] ") + line + "\n"
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// oomWatch is a MemoryWatch whose cgroup saw one OOM kill since the last
// look.
type oomWatch struct{}

func (oomWatch) Kills() (int64, cgroup.Memory, error) {
	return 1, cgroup.Memory{Dir: "/sys/fs/cgroup/memory/php", Version: 1, Limit: 64 << 20, Peak: 64 << 20, OOMKills: 3}, nil
}

// TestEveryCauseIsProduced runs, for every cause of the catalogue, a
// failure that should get it, and fails when a cause is produced by none:
// an entry nothing can produce is an entry nobody has checked.
func TestEveryCauseIsProduced(t *testing.T) {
	pool := &fpm.Pool{Name: "www", RequestTerminateTimeout: 5 * time.Second,
		Settings: map[string]fpm.Setting{"request_terminate_timeout": {Value: "5s", File: "/etc/php/8.2/fpm/pool.d/www.conf", Line: 412}}}
	dial := func(network string, err error) *outcome.Trace {
		return dialFailure(network, "/run/php/x.sock", err)
	}
	upstream := func(err error) *outcome.Trace {
		tr := workerDeath(10 * time.Millisecond)
		tr.Err = err
		return tr
	}
	completed := func(stderr string) *outcome.Trace {
		tr := workerDeath(10 * time.Millisecond)
		tr.Err, tr.Stderr, tr.Status = nil, []byte(stderr), 200
		return tr
	}
	afterRecords := func(err error) *outcome.Trace {
		tr := upstream(err)
		tr.UpstreamRecords = 2
		return tr
	}
	dnsFailure := dialFailure("tcp", "fpm.invalid:9000", nil)
	dropped := workerDeath(time.Millisecond)
	dropped.Upstream = fcgi.Addr{Network: "tcp", Address: "127.0.0.1:9000"}
	dropped.UpstreamLocal = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
	allowedPool := &fpm.Pool{Name: "www", ListenAllowedClients: "127.0.0.2",
		Settings: map[string]fpm.Setting{"listen.allowed_clients": {Value: "127.0.0.2", File: "/etc/php/8.2/fpm/pool.d/www.conf", Line: 40}}}
	rejected := workerDeath(time.Millisecond)
	rejected.Role = fcgi.Role(999)
	upload := completed("")
	upload.Method, upload.RequestType, upload.ContentLength = "POST", "multipart/form-data; boundary=x", 5<<20
	slow := completed("")
	slow.End = slow.DialEnd.Add(1500 * time.Millisecond)
	slowPool := &fpm.Pool{Name: "www", RequestSlowlogTimeout: time.Second}
	// Made before the logs that tell of them, as a request comes before
	// php-fpm's line about it.
	crashed := workerDeath(time.Second)
	dnsFailure.Err = &outcome.DialError{Addr: dnsFailure.Upstream, Err: &net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "fpm.invalid", IsNotFound: true}}}
	tests := []struct {
		cause      *Cause
		classifier *Classifier
		trace      *outcome.Trace
	}{
		{CauseRefused, nil, dialFailure("tcp", "127.0.0.1:9000", syscall.ECONNREFUSED)},
		{CauseSocketMissing, nil, dial("unix", syscall.ENOENT)},
		{CauseSocketStale, nil, dial("unix", syscall.ECONNREFUSED)},
		{CausePermissionDenied, nil, dial("unix", syscall.EACCES)},
		{CauseBacklogFull, nil, dial("unix", syscall.EAGAIN)},
		{CauseConnectTimeout, nil, dialFailure("tcp", "127.0.0.1:9000", syscall.ETIMEDOUT)},
		{CauseDNSFailed, nil, dnsFailure},
		{CauseNotFastCGI, nil, upstream(&fcgi.VersionError{Header: [8]byte{'H', 'T', 'T', 'P', '/', '1', '.', '1'}})},
		{CauseProtocolError, nil, afterRecords(&fcgi.VersionError{Header: [8]byte{9}})},
		{CauseProtocolError, nil, upstream(&outcome.HeadTooLongError{Limit: 4096})},
		{CauseProtocolError, nil, upstream(&outcome.ProtocolError{Upstream: true, Reason: "END_REQUEST came without any STDOUT"})},
		{CauseHeadTooBig, nil, upstream(&outcome.HeadTooBigError{Bytes: 16500, Limit: 4096, Whole: true})},
		{CauseInvalidHeader, nil, upstream(&outcome.InvalidHeaderError{Line: "Hello world", Why: "a space in the header name"})},
		{CauseOverloaded, nil, upstream(&outcome.RejectedError{Status: fcgi.StatusOverloaded})},
		{CauseWorkerTimeout, &Classifier{Pool: pool}, workerDeath(5100 * time.Millisecond)},
		{CauseWorkerCrashed, &Classifier{Log: crashLog(t), LogWait: 2 * time.Second}, crashed},
		{CauseWorkerDied, nil, workerDeath(time.Second)},
		{CauseReadTimeout, nil, upstream(&outcome.ReadTimeoutError{Timeout: 30 * time.Second})},
		{CauseQueueTimeout, nil, upstream(&outcome.QueueTimeoutError{Waited: 5 * time.Second, MaxConns: 5})},
		{CauseWebServerTimeout, nil, upstream(&outcome.QueueTimeoutError{Waited: 61 * time.Second, MaxConns: 5, WebServerGaveUp: true})},
		{CauseClientAborted, nil, upstream(outcome.ErrClientAborted)},
		{CauseRequestTooLarge, nil, upstream(fmt.Errorf("%w: 2000000 bytes", fcgi.ErrParamsTooLarge))},
		{CauseDownstreamInvalid, nil, upstream(&outcome.ProtocolError{Reason: "unexpected DATA record"})},
		{CauseDownstreamInvalid, nil, upstream(&outcome.ParamsTimeoutError{Timeout: 30 * time.Second})},
		{CauseShutdown, nil, upstream(outcome.ErrShutdown)},
		{CauseUnexplained, nil, upstream(errors.New("something no rule knows"))},
		{CauseUnexplained, nil, dialFailure("tcp", "127.0.0.1:9000", syscall.EHOSTUNREACH)},
		{CauseScriptNotFound, nil, completed("Primary script unknown")},
		{CauseScriptDenied, nil, completed("Access to the script '/srv/x.txt' has been denied (see security.limit_extensions)")},
		{CausePHPFatal, nil, completed("PHP message: PHP Fatal error:  Uncaught Error: Call to undefined function nope()")},
		{CauseMemory, nil, completed("PHP message: PHP Fatal error:  Allowed memory size of 8388608 bytes exhausted")},
		{CauseClientNotAllowed, &Classifier{Pool: allowedPool}, dropped},
		{CauseRejectedRequest, nil, rejected},
		{CauseOOMKilled, &Classifier{Memory: oomWatch{}}, workerDeath(time.Second)},
		{CauseBodyDiscarded, nil, completed("PHP message: PHP Warning:  PHP Request Startup: POST Content-Length of 3000000 bytes exceeds the limit of 2097152 bytes in Unknown on line 0\n")},
		{CauseBodyDiscarded, nil, completed("PHP message: PHP Warning:  Unknown: Input variables exceeded 1000. To increase the limit change max_input_vars in php.ini. in Unknown on line 0\n")},
		{CauseUploadTooLarge, nil, upload},
		{CauseDiskFull, nil, completed("PHP message: PHP Warning:  session_write_close(): Write failed: No space left on device (28) in /srv/api.php on line 3\n")},
		{CauseSlowRequest, &Classifier{Pool: slowPool, Log: fpmLog(t, `WARNING: [pool www] child 4243, script '/srv/api.php' (request: "GET /api.php") executing too slow (1.0 sec), logging`)}, slow},
	}
	produced := map[*Cause]bool{}
	for _, tt := range tests {
		c := tt.classifier
		if c == nil {
			c = &Classifier{}
		}
		d := c.Diagnose(tt.trace)
		if d == nil || d.Cause != tt.cause {
			t.Errorf("%v: %v, want %s", tt.trace.Err, d, tt.cause.ID)
			continue
		}
		produced[d.Cause] = true
		if s := d.StatusCode(); s != d.Cause.Status && (d.Cause.AltStatus == 0 || s != d.Cause.AltStatus) {
			t.Errorf("%s: status %d is neither the cause's %d nor its other one", d.Cause.ID, s, d.Cause.Status)
		}
		if d.Detail == "" {
			t.Errorf("%s: no detail", d.Cause.ID)
		}
		if tt.trace.Err != nil && !d.Cause.LogOnly && len(d.Hints) == 0 {
			t.Errorf("%s: a failure that replaces the response gives no hint", d.Cause.ID)
		}
	}
	for _, c := range Causes {
		if !produced[c] {
			t.Errorf("no failure produces %s: give it a classification case and a case here, or take it out of the catalogue", c.ID)
		}
	}
}

func TestUnexplainedFailuresKeepTheRawError(t *testing.T) {
	tr := workerDeath(10 * time.Millisecond)
	tr.Err = errors.New("a new kind of failure")
	d := (&Classifier{}).Diagnose(tr)
	if d.Cause != CauseUnexplained || d.Evidence["error"] != "a new kind of failure" || !strings.Contains(d.Detail, "a new kind of failure") {
		t.Errorf("%s: detail %q evidence %v", d.Cause.ID, d.Detail, d.Evidence)
	}
}
