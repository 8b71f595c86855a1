package diagnostics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

func TestNegotiatePicksWhatTheClientPrefers(t *testing.T) {
	tests := []struct {
		accept string
		want   format
	}{
		{"", formatText},
		{"*/*", formatText},
		{"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8", formatHTML},
		{"application/json", formatProblem},
		{"application/problem+json", formatProblem},
		{"application/json, text/plain, */*", formatProblem},
		{"text/plain", formatText},
		{"text/html;q=0.5, application/json;q=0.9", formatProblem},
		{"application/json;q=0, text/html", formatHTML},
		{"image/png", formatText},
	}
	for _, tt := range tests {
		if got := negotiate(tt.accept); got != tt.want {
			t.Errorf("negotiate(%q) = %d, want %d", tt.accept, got, tt.want)
		}
	}
}

// dialFailure builds the Trace of a request whose upstream dial failed with
// the given errno.
func dialFailure(network, address string, errno error) *outcome.Trace {
	start := time.Now()
	addr := fcgi.Addr{Network: network, Address: address}
	return &outcome.Trace{
		RequestID: "req-1", Method: "GET", URI: "/x.php", Script: "/srv/x.php", RemoteAddr: "127.0.0.1",
		Upstream: addr, Accepted: start, ParamsDone: start, DialStart: start, End: start.Add(time.Millisecond),
		Err: &outcome.DialError{Addr: addr, Err: &net.OpError{Op: "dial", Net: network, Err: os.NewSyscallError("connect", errno)}},
	}
}

func TestDialErrorsMapToTheirCauses(t *testing.T) {
	tests := []struct {
		network, address string
		errno            error
		cause            *Cause
	}{
		{"tcp", "127.0.0.1:9000", syscall.ECONNREFUSED, CauseRefused},
		{"unix", "/run/php/x.sock", syscall.ECONNREFUSED, CauseSocketStale},
		{"unix", "/run/php/x.sock", syscall.ENOENT, CauseSocketMissing},
		{"unix", "/run/php/x.sock", syscall.EACCES, CausePermissionDenied},
		{"unix", "/run/php/x.sock", syscall.EAGAIN, CauseBacklogFull},
		{"tcp", "127.0.0.1:9000", syscall.ETIMEDOUT, CauseConnectTimeout},
		{"tcp", "127.0.0.1:9000", syscall.EHOSTUNREACH, CauseUnexplained},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.network, " ", tt.errno), func(t *testing.T) {
			d := (&Classifier{}).Diagnose(dialFailure(tt.network, tt.address, tt.errno))
			if d.Cause != tt.cause {
				t.Errorf("cause %s, want %s", d.Cause.ID, tt.cause.ID)
			}
			if !strings.Contains(d.Detail, tt.address) {
				t.Errorf("detail %q does not name %s", d.Detail, tt.address)
			}
		})
	}
}

func TestDNSFailuresAre502AndTimeouts504(t *testing.T) {
	for _, tt := range []struct {
		dns    *net.DNSError
		status int
	}{
		{&net.DNSError{Err: "no such host", Name: "fpm.invalid", IsNotFound: true}, 502},
		{&net.DNSError{Err: "i/o timeout", Name: "fpm.example", IsTimeout: true}, 504},
	} {
		tr := dialFailure("tcp", "fpm.invalid:9000", nil)
		tr.Err = &outcome.DialError{Addr: tr.Upstream, Err: &net.OpError{Op: "dial", Err: tt.dns}}
		d := (&Classifier{}).Diagnose(tr)
		if d.Cause != CauseDNSFailed || d.StatusCode() != tt.status {
			t.Errorf("%v: cause %s %d, want upstream_dns_failed %d", tt.dns, d.Cause.ID, d.StatusCode(), tt.status)
		}
	}
}

// workerDeath builds the Trace of a request whose worker closed the
// connection after elapsed.
func workerDeath(elapsed time.Duration) *outcome.Trace {
	start := time.Now()
	return &outcome.Trace{
		RequestID: "req-2", Script: "/srv/api.php", Upstream: fcgi.Addr{Network: "unix", Address: "/run/php.sock"},
		Accepted: start, ParamsDone: start, DialStart: start, DialEnd: start, StdinDone: start, End: start.Add(elapsed),
		Err: fmt.Errorf("%w: %w", outcome.ErrNoEndRequest, syscall.ECONNRESET),
	}
}

func TestTerminateTimeoutIsOnlyClaimedWhenTheTimingMatches(t *testing.T) {
	pool := &fpm.Pool{Name: "www", RequestTerminateTimeout: 5 * time.Second,
		Settings: map[string]fpm.Setting{"request_terminate_timeout": {Value: "5s", File: "/etc/php/8.2/fpm/pool.d/www.conf", Line: 412}}}
	c := &Classifier{Pool: pool}
	tests := []struct {
		elapsed time.Duration
		want    *Cause
	}{
		{5001 * time.Millisecond, CauseWorkerTimeout},
		{5900 * time.Millisecond, CauseWorkerTimeout},
		{4 * time.Second, CauseWorkerDied},
		{20 * time.Second, CauseWorkerDied},
		{100 * time.Millisecond, CauseWorkerDied},
	}
	for _, tt := range tests {
		d := c.Diagnose(workerDeath(tt.elapsed))
		if d.Cause != tt.want {
			t.Errorf("after %s: %s, want %s", tt.elapsed, d.Cause.ID, tt.want.ID)
		}
		if d.Cause == CauseWorkerTimeout && !strings.Contains(d.Detail, "www.conf:412") {
			t.Errorf("detail does not cite the file and line: %q", d.Detail)
		}
	}
	if d := (&Classifier{}).Diagnose(workerDeath(5001 * time.Millisecond)); d.Cause != CauseWorkerDied {
		t.Errorf("without the pool config: %s, want worker_died (no guessing)", d.Cause.ID)
	}
}

func TestCompletedResponsesWithPHPProblemsAreNamed(t *testing.T) {
	tests := []struct {
		stderr string
		want   *Cause
	}{
		{"Primary script unknown", CauseScriptNotFound},
		{"Access to the script '/srv/x.txt' has been denied (see security.limit_extensions)", CauseScriptDenied},
		{"PHP message: PHP Fatal error:  Allowed memory size of 8388608 bytes exhausted (tried to allocate 4096 bytes) in /srv/m.php on line 4", CauseMemory},
		{"PHP message: PHP Fatal error:  Uncaught Error: Call to undefined function nope() in /srv/f.php:3", CausePHPFatal},
		{"PHP message: PHP Warning:  something harmless", nil},
	}
	for _, tt := range tests {
		d := (&Classifier{}).Diagnose(&outcome.Trace{Stderr: []byte(tt.stderr), Status: 500})
		if tt.want == nil {
			if d != nil {
				t.Errorf("%q: %s, want nothing", tt.stderr, d.Cause.ID)
			}
			continue
		}
		if d == nil || d.Cause != tt.want {
			t.Errorf("%q: %v, want %s", tt.stderr, d, tt.want.ID)
		}
	}
}

// reply runs the Explainer's Respond and splits the CGI response.
func reply(t *testing.T, r *Explainer, tr *outcome.Trace) (head, body string, rep cgi.Reply) {
	t.Helper()
	rep = r.Respond(tr)
	h, b, ok := strings.Cut(string(rep.CGI), "\r\n\r\n")
	if !ok {
		t.Fatalf("reply has no header end: %q", rep.CGI)
	}
	return h, b, rep
}

func TestReplacementHeadersAndFormats(t *testing.T) {
	tr := dialFailure("tcp", "127.0.0.1:9000", syscall.ECONNREFUSED)
	for _, tt := range []struct {
		accept, ctype string
	}{
		{"application/problem+json", "application/problem+json"},
		{"text/html", "text/html; charset=utf-8"},
		{"*/*", "text/plain; charset=utf-8"},
	} {
		tr.Accept = tt.accept
		head, body, rep := reply(t, &Explainer{}, tr)
		for _, want := range []string{"Status: 502 Bad Gateway", "Content-Type: " + tt.ctype, "Cache-Control: no-store", "X-Fcgiscope-Cause: upstream_refused", "X-Fcgiscope-Request-Id: req-1"} {
			if !strings.Contains(head, want+"\r\n") && !strings.HasSuffix(head, want) {
				t.Errorf("%s: headers lack %q:\n%s", tt.accept, want, head)
			}
		}
		if !strings.Contains(body, "127.0.0.1:9000") {
			t.Errorf("%s: a local client should see the address:\n%s", tt.accept, body)
		}
		if !strings.HasPrefix(rep.LogLine, "fcgiscope: upstream_refused: ") || !strings.Contains(rep.LogLine, "request_id=req-1") {
			t.Errorf("log line for nginx: %q", rep.LogLine)
		}
	}
	tr.Accept = "application/json"
	_, body, _ := reply(t, &Explainer{}, tr)
	var p map[string]any
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"type", "title", "status", "detail", "instance", "cause", "request_id", "elapsed_ms", "upstream", "hints", "evidence"} {
		if _, ok := p[k]; !ok {
			t.Errorf("problem+json lacks %q: %s", k, body)
		}
	}
}

func TestMinimalDetailLeaksNoPathAddressOrStderr(t *testing.T) {
	for _, tt := range []struct {
		detail Detail
		remote string
	}{
		{DetailMinimal, "127.0.0.1"},
		{DetailLocal, "203.0.113.9"},
		{DetailLocal, "not an address"},
	} {
		for _, accept := range []string{"application/json", "text/html", "*/*"} {
			tr := dialFailure("unix", "/run/php/secret-pool.sock", syscall.ENOENT)
			tr.RemoteAddr, tr.Accept, tr.Stderr = tt.remote, accept, []byte("PHP message: secret stderr")
			_, body, rep := reply(t, &Explainer{Detail: tt.detail}, tr)
			for _, secret := range []string{"secret-pool", "/srv/x.php", "secret stderr", "/x.php"} {
				if strings.Contains(body, secret) {
					t.Errorf("%s for %s (%s) shows %q:\n%s", tt.detail, tt.remote, accept, secret, body)
				}
			}
			if !strings.Contains(body, "upstream_socket_missing") || !strings.Contains(body, "req-1") {
				t.Errorf("minimal body lacks the cause or request id:\n%s", body)
			}
			if !strings.Contains(rep.LogLine, "secret-pool") {
				t.Errorf("nginx's error log should still get the detail: %q", rep.LogLine)
			}
		}
	}
}

func TestHTMLPageEscapesWhatCameFromTheRequestAndPHP(t *testing.T) {
	tr := workerDeath(time.Second)
	tr.URI = `/x.php?q=<script>alert(1)</script>`
	tr.Stderr = []byte(`PHP message: <img src=x onerror=alert(2)>`)
	tr.RequestID = `id"><script>alert(3)</script>`
	tr.Accept, tr.RemoteAddr = "text/html", "127.0.0.1"
	head, body, _ := reply(t, &Explainer{}, tr)
	for _, raw := range []string{"<script>", "<img"} {
		if strings.Contains(body, raw) {
			t.Errorf("page contains unescaped %q:\n%s", raw, body)
		}
	}
	if !strings.Contains(body, "&lt;script&gt;") {
		t.Errorf("page does not show the URI escaped:\n%s", body)
	}
	for _, line := range strings.Split(head, "\r\n") {
		if !strings.Contains(line, ": ") || strings.ContainsAny(line, "\r\n") {
			t.Errorf("malformed header line %q", line)
		}
	}
}

func TestAccessLogLineCarriesTheDiagnosis(t *testing.T) {
	var buf bytes.Buffer
	e := &Explainer{Sinks: []Sink{&AccessLog{Log: zerolog.New(&buf)}}}
	tr := workerDeath(time.Second)
	tr.Truncated, tr.BytesOut = true, 4096
	e.Observe(tr)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["level"] != "error" || line["cause"] != "worker_died" || line["outcome"] != "worker_died" || line["truncated"] != true || line["status"] != float64(502) {
		t.Errorf("log line: %v", line)
	}
	for _, k := range []string{"request_id", "method", "uri", "script", "status", "outcome", "upstream", "duration_ms", "connect_ms", "ttfb_ms", "bytes_in", "bytes_out", "detail", "hints", "evidence", "phase"} {
		if _, ok := line[k]; !ok {
			t.Errorf("log line lacks %q", k)
		}
	}
	buf.Reset()
	e.Observe(&outcome.Trace{RequestID: "ok-1", Status: 200})
	json.Unmarshal(buf.Bytes(), &line)
	if line["level"] != "info" || line["outcome"] != "ok" {
		t.Errorf("success line: %v", line)
	}
}

func TestSettingNamesRenameWhatAPersonReads(t *testing.T) {
	tr := dialFailure("unix", "/run/php/x.sock", syscall.ENOENT)
	c := &Classifier{SettingNames: map[string]string{"FCGISCOPE_UPSTREAM": "--upstream"}}
	d := c.Diagnose(tr)
	all := d.Detail + strings.Join(d.Hints, " ")
	if strings.Contains(all, "FCGISCOPE_UPSTREAM") || !strings.Contains(all, "--upstream") {
		t.Errorf("hints not renamed: %q", d.Hints)
	}
}

// recordingSink keeps what it is handed.
type recordingSink struct {
	traces []*outcome.Trace
	diags  []*Diagnosis
}

func (s *recordingSink) Record(t *outcome.Trace, d *Diagnosis) {
	s.traces = append(s.traces, t)
	s.diags = append(s.diags, d)
}

func TestExplainerHandsEverySinkTheDiagnosisTheClientGot(t *testing.T) {
	a, b := &recordingSink{}, &recordingSink{}
	e := &Explainer{Sinks: []Sink{a, b}}
	tr := dialFailure("tcp", "127.0.0.1:9000", syscall.ECONNREFUSED)
	tr.Accept = "application/json"
	rep := e.Respond(tr)
	e.Observe(tr)
	if len(a.diags) != 1 || len(b.diags) != 1 || a.diags[0] == nil || a.diags[0] != b.diags[0] {
		t.Fatalf("sinks got %v and %v, want the same one diagnosis", a.diags, b.diags)
	}
	if !strings.Contains(string(rep.CGI), `"cause": "`+a.diags[0].Cause.ID+`"`) {
		t.Errorf("the reply names another cause than the sinks got:\n%s", rep.CGI)
	}
	// The diagnosis made for the reply is handed over once, not kept.
	e.Observe(tr)
	if a.diags[1] == a.diags[0] {
		t.Error("a second Observe of the Trace got the first one's diagnosis again")
	}
	e.replied.Range(func(k, v any) bool {
		t.Errorf("diagnosis of %v kept after Observe", k)
		return true
	})
}

func TestExplainerGivesNoDiagnosisToARequestThatWentWell(t *testing.T) {
	s := &recordingSink{}
	(&Explainer{Sinks: []Sink{s}}).Observe(&outcome.Trace{Status: 200})
	if len(s.diags) != 1 || s.diags[0] != nil {
		t.Errorf("sink got %v, want one nil diagnosis", s.diags)
	}
}

// A socket that is not there is explained in the words of the pool's own
// listen setting, with its file and line: the mismatch, or php-fpm down.
func TestMissingSocketNamesThePoolsListen(t *testing.T) {
	pool := &fpm.Pool{Name: "www", ListenAddr: fcgi.Addr{Network: "unix", Address: "/run/php/php8.2-fpm.sock"},
		Listen: fpm.Setting{Key: "listen", Value: "/run/php/php8.2-fpm.sock", File: "/etc/php/8.2/fpm/pool.d/www.conf", Line: 41}}
	c := &Classifier{Pool: pool}
	d := c.Diagnose(dialFailure("unix", "/run/php/php-fpm.sock", syscall.ENOENT))
	if d.Cause != CauseSocketMissing || !hintsSay(d, "pool www has listen = /run/php/php8.2-fpm.sock (/etc/php/8.2/fpm/pool.d/www.conf:41): set FCGISCOPE_UPSTREAM=unix:/run/php/php8.2-fpm.sock") {
		t.Errorf("mismatch: %s %q", d.Cause.ID, d.Hints)
	}
	d = c.Diagnose(dialFailure("unix", "/run/php/php8.2-fpm.sock", syscall.ECONNREFUSED))
	if d.Cause != CauseSocketStale || !hintsSay(d, "Pool www has listen = /run/php/php8.2-fpm.sock (/etc/php/8.2/fpm/pool.d/www.conf:41), so php-fpm is not running") {
		t.Errorf("stale: %s %q", d.Cause.ID, d.Hints)
	}
}

func hintsSay(d *Diagnosis, s string) bool {
	for _, h := range d.Hints {
		if strings.Contains(h, s) {
			return true
		}
	}
	return false
}
