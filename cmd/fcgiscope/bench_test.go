package main

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// benchFake is a minimal FastCGI responder on a loopback port: it answers
// every request with stdout, keeping the connection when asked to.
func benchFake(t *testing.T, stdout string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				r, w := fcgi.NewReader(conn), fcgi.NewWriter(conn)
				keep := false
				for {
					h, err := r.Next()
					if err != nil {
						return
					}
					switch {
					case h.Type == fcgi.TypeBeginRequest:
						b, _ := fcgi.ParseBeginRequest(r.Content())
						keep = b.KeepConn()
					case h.Type == fcgi.TypeStdin && h.ContentLength == 0:
						w.WriteStream(fcgi.TypeStdout, h.RequestID, []byte(stdout))
						w.EndStream(fcgi.TypeStdout, h.RequestID)
						w.WriteEndRequest(h.RequestID, fcgi.EndRequest{})
						if w.Flush() != nil || !keep {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func runBench(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut strings.Builder
	code = benchMain(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestBenchUsageErrors(t *testing.T) {
	ok := []string{"--upstream", "127.0.0.1:9000", "--script", "/srv/x.php"}
	with := func(extra ...string) []string { return append(append([]string{}, ok...), extra...) }
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--script", "/srv/x.php"}, "--upstream is required"},
		{[]string{"--upstream", "127.0.0.1:9000"}, "--script is required"},
		{[]string{"--upstream", "/run/php.sock", "--script", "/srv/x.php"}, "needs the unix: prefix"},
		{[]string{"--upstream", "9000", "--script", "/srv/x.php"}, "a port alone is ambiguous"},
		{[]string{"--upstream", "127.0.0.1:9000", "--script", "x.php"}, "must be an absolute path"},
		{with("-c", "0"), "need at least 1 worker"},
		{with("-n", "0"), "need at least 1 request"},
		{with("-d", "-1s"), "need a positive duration"},
		{with("-d", "10"), "invalid value \"10\" for -d: time: missing unit"},
		{with("--param", "NOEQUALS"), "want NAME=VALUE"},
		{with("--expect-status", "20x"), "three-digit status"},
		{with("--expect-body-sha256", "abc"), "64 hex digits"},
		{with("--expect-body-sha256", strings.Repeat("0", 64), "--expect-body-prefix", "x"), "give one"},
		{with("--format", "xml"), "want text or json"},
		{with("--body-size", "-1"), "must not be negative"},
		{with("--timeout", "0s"), "must be positive"},
		{with("--nope"), "unknown flag --nope; 'fcgiscope bench -h' lists the flags"},
		{with("extra"), "takes no arguments"},
	} {
		code, stdout, stderr := runBench(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("bench %q: exit %d, stderr %q, stdout %q; want exit 2 and a message with %q", tc.args, code, stderr, stdout, tc.want)
		}
		// A flag's own mistake is one line that says it; the others point
		// at the help too.
		if !strings.HasPrefix(stderr, "fcgiscope bench: ") || !strings.Contains(stderr, "fcgiscope bench -h") && !strings.Contains(stderr, "invalid value") {
			t.Errorf("bench %q: stderr %q does not name the command and the help", tc.args, stderr)
		}
	}
	// Every problem is reported at once.
	_, _, stderr := runBench(t, "-c", "0", "--format", "xml")
	for _, want := range []string{"--upstream is required", "--script is required", "need at least 1 worker", "want text or json"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr %q lacks %q", stderr, want)
		}
	}
}

func TestBenchHelp(t *testing.T) {
	code, stdout, _ := runBench(t, "-h")
	if code != exitOK || !strings.Contains(stdout, "Usage: fcgiscope bench") || !strings.Contains(stdout, "-expect-body-sha256") {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
}

func TestBenchDefaults(t *testing.T) {
	base := []string{"--upstream", "unix:/run/php/fpm.sock", "--script", "/srv/x.php?a=b"}
	for _, tc := range []struct {
		extra         []string
		n             int
		d, warmup     time.Duration
		concurrency   int
		expectStatus  int
		keep          bool
		paramsWithEnv int
	}{
		{nil, 0, 10 * time.Second, time.Second, 16, 200, false, 0},
		{[]string{"-n", "500"}, 500, 0, 0, 16, 200, false, 0},
		{[]string{"-d", "3s", "-c", "4", "--keep-conn"}, 0, 3 * time.Second, time.Second, 4, 200, true, 0},
		{[]string{"-d", "3s", "--warmup", "0s", "--expect-status", "any", "--param", "A=1", "--param", "B=x=y"}, 0, 3 * time.Second, 0, 16, -1, false, 2},
		{[]string{"-n", "5", "--warmup", "2s", "--expect-status", "404"}, 5, 0, 2 * time.Second, 16, 404, false, 0},
	} {
		cfg, format, err := parseBenchArgs(append(append([]string{}, base...), tc.extra...), nil)
		if err != nil {
			t.Errorf("%q: %v", tc.extra, err)
			continue
		}
		if cfg.Requests != tc.n || cfg.Duration != tc.d || cfg.Warmup != tc.warmup || cfg.Concurrency != tc.concurrency ||
			cfg.ExpectStatus != tc.expectStatus || cfg.KeepConn != tc.keep || len(cfg.Params) != tc.paramsWithEnv || format != "text" {
			t.Errorf("%q: config %+v, format %q", tc.extra, cfg, format)
		}
		if cfg.Upstream.Network != "unix" || cfg.Script != "/srv/x.php?a=b" {
			t.Errorf("%q: upstream %v script %q", tc.extra, cfg.Upstream, cfg.Script)
		}
	}
	cfg, _, _ := parseBenchArgs(append(base, "--param", "B=x=y"), nil)
	if cfg.Params[0].Name != "B" || cfg.Params[0].Value != "x=y" {
		t.Errorf("params %v", cfg.Params)
	}
}

func TestBenchTextAndJSON(t *testing.T) {
	addr := benchFake(t, "Content-Type: text/plain\r\n\r\nhello from php\n")
	code, stdout, stderr := runBench(t, "--upstream", addr, "--script", "/srv/hello.php", "-n", "50", "-c", "4", "--keep-conn", "--expect-body-prefix", "hello from php")
	if code != exitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"requests     50: 50 ok, 0 errors", "throughput", "p99.9", "statuses     200: 50", "errors       none"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "50 requests, 4 workers") {
		t.Errorf("stderr %q", stderr)
	}

	code, stdout, _ = runBench(t, "--upstream", addr, "--script", "/srv/hello.php", "-d", "200ms", "--warmup", "100ms", "-c", "2", "--format", "json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stdout)
	}
	var res struct {
		Requests      int64              `json:"requests"`
		Successes     int64              `json:"successes"`
		Errors        int64              `json:"errors"`
		ElapsedS      float64            `json:"elapsed_s"`
		ThroughputRPS float64            `json:"throughput_rps"`
		Latency       map[string]float64 `json:"latency_ms"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if res.Successes == 0 || res.Errors != 0 || res.ElapsedS < 0.2 || res.ThroughputRPS <= 0 || res.Latency["p99.9"] <= 0 {
		t.Errorf("JSON %s", stdout)
	}
}

func TestBenchFailuresExitOne(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	code, stdout, stderr := runBench(t, "--upstream", refused, "--script", "/srv/x.php", "-n", "20", "-c", "2")
	if code != exitFailure || !strings.Contains(stdout, "dial:ECONNREFUSED") || !strings.Contains(stderr, "20 of 20 requests failed") {
		t.Errorf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}

	missing := "unix:" + filepath.Join(testbed.ShortTempDir(t), "php-fpm.sock")
	code, stdout, _ = runBench(t, "--upstream", missing, "--script", "/srv/x.php", "-n", "10", "--format", "json")
	var res struct {
		ErrorsByCause map[string]int64 `json:"errors_by_cause"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != exitFailure || res.ErrorsByCause["dial:ENOENT"] != 10 {
		t.Errorf("exit %d, JSON %s (%v)", code, stdout, err)
	}

	addr := benchFake(t, "Status: 404 Not Found\r\n\r\nFile not found.\n")
	code, stdout, _ = runBench(t, "--upstream", addr, "--script", "/srv/x.php", "-n", "10")
	if code != exitFailure || !strings.Contains(stdout, "bad_status") || !strings.Contains(stdout, "status 404, want 200") {
		t.Errorf("exit %d\n%s", code, stdout)
	}
	code, _, _ = runBench(t, "--upstream", addr, "--script", "/srv/x.php", "-n", "10", "--expect-status", "404", "--expect-body-prefix", "File not found")
	if code != exitOK {
		t.Errorf("exit %d with the expected 404", code)
	}
}

func TestBenchAgainstPHPFPM(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	script := filepath.Join(testbed.PHPRoot(t), "hello.php")
	for _, keep := range []string{"--keep-conn=false", "--keep-conn"} {
		code, stdout, stderr := runBench(t, "--upstream", fpm.Addr, "--script", script, "-n", "200", "-c", "8", keep, "--expect-body-prefix", "hello from php")
		if code != exitOK || !strings.Contains(stdout, "requests     200: 200 ok, 0 errors") {
			t.Errorf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", keep, code, stdout, stderr)
		}
		t.Logf("%s\n%s", keep, stdout)
	}
}
