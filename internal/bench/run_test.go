package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

const helloBody = "hello from php\n"

var helloResponse = fakeResponse("", "Content-type: text/html; charset=UTF-8\r\n\r\n"+helloBody)

func run(t *testing.T, cfg Config) *Result {
	t.Helper()
	if cfg.Script == "" {
		cfg.Script = "/srv/www/hello.php"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != res.Successes+sum(res.Errors) {
		t.Errorf("requests %d != successes %d + errors %v", res.Requests, res.Successes, res.Errors)
	}
	if res.Latency.Count() != res.Successes {
		t.Errorf("latency count %d != successes %d", res.Latency.Count(), res.Successes)
	}
	return res
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func onlyErrors(t *testing.T, res *Result, want map[string]int64) {
	t.Helper()
	if !maps.Equal(res.Errors, want) {
		t.Errorf("errors %v, want %v (samples %v)", res.Errors, want, res.ErrorSamples)
	}
	for cause := range want {
		if res.ErrorSamples[cause] == "" {
			t.Errorf("no sample message for %s", cause)
		}
	}
}

func TestRunCountsRequestsExactly(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/keep-conn=%v", network, keep), func(t *testing.T) {
				f := startFake(t, network, fakeOK, helloResponse)
				const n, c = 300, 8
				res := run(t, Config{Upstream: f.addr, Concurrency: c, Requests: n, KeepConn: keep, ExpectBodyPrefix: "hello from php"})
				if res.Requests != n || res.Successes != n || len(res.Errors) != 0 {
					t.Fatalf("requests %d, successes %d, errors %v; want %d, %d, none", res.Requests, res.Successes, res.Errors, n, n)
				}
				if got := f.requests.Load(); got != n {
					t.Errorf("the server got %d requests, want %d", got, n)
				}
				if res.Statuses[200] != n || len(res.Statuses) != 1 {
					t.Errorf("statuses %v", res.Statuses)
				}
				if got := f.conns.Load(); got != res.Connections {
					t.Errorf("the server accepted %d connections, the result says %d", got, res.Connections)
				}
				if keep {
					if res.Connections < 1 || res.Connections > c {
						t.Errorf("%d connections with keep-conn, want 1 to %d", res.Connections, c)
					}
					if f.keepConn.Load() != n {
						t.Errorf("%d requests set FCGI_KEEP_CONN, want %d", f.keepConn.Load(), n)
					}
				} else {
					if res.Connections != n {
						t.Errorf("%d connections without keep-conn, want %d", res.Connections, n)
					}
					if f.keepConn.Load() != 0 {
						t.Errorf("%d requests set FCGI_KEEP_CONN", f.keepConn.Load())
					}
				}
				if want := int64(n * len(helloResponse)); res.BytesRead != want {
					t.Errorf("bytes read %d, want %d", res.BytesRead, want)
				}
				if want := int64(n * len(encodeRequest(Config{Script: "/srv/www/hello.php", KeepConn: keep}))); res.BytesWritten != want {
					t.Errorf("bytes written %d, want %d", res.BytesWritten, want)
				}
				if res.Elapsed <= 0 || res.Throughput() <= 0 || res.Percentile(50) <= 0 || res.Percentile(99.9) > res.Latency.Max() {
					t.Errorf("elapsed %v, throughput %v, p50 %v", res.Elapsed, res.Throughput(), res.Percentile(50))
				}
			})
		}
	}
}

func TestRunSendsParamsAndBody(t *testing.T) {
	for _, size := range []int{0, 1000, 200_000} { // 200 KB is written while the response is read
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("body=%d/keep-conn=%v", size, keep), func(t *testing.T) {
				f := startFake(t, "unix", fakeOK, helloResponse, capture)
				res := run(t, Config{
					Upstream: f.addr, Script: "/srv/www/app.php?page=2", Concurrency: 2, Requests: 6,
					KeepConn: keep, Method: "POST", BodySize: size,
					Params: []fcgi.Pair{{Name: "HTTP_HOST", Value: "example.test"}, {Name: "HTTP_X_EXTRA", Value: "1"}},
				})
				if res.Successes != 6 {
					t.Fatalf("successes %d, errors %v %v", res.Successes, res.Errors, res.ErrorSamples)
				}
				f.mu.Lock()
				defer f.mu.Unlock()
				want := map[string]string{
					"SCRIPT_FILENAME": "/srv/www/app.php", "QUERY_STRING": "page=2", "REQUEST_URI": "/app.php?page=2",
					"SCRIPT_NAME": "/app.php", "DOCUMENT_ROOT": "/srv/www", "REQUEST_METHOD": "POST",
					"CONTENT_LENGTH": fmt.Sprint(size), "SERVER_PROTOCOL": "HTTP/1.1", "GATEWAY_INTERFACE": "CGI/1.1",
					"HTTP_HOST": "example.test", "HTTP_X_EXTRA": "1",
				}
				for k, v := range want {
					if got, ok := f.lastParams[k]; !ok || got != v {
						t.Errorf("%s = %q (sent: %v), want %q", k, got, ok, v)
					}
				}
				if f.lastLen != size || f.lastBody != sha256.Sum256(Body(size)) {
					t.Errorf("the server got a body of %d bytes and SHA-256 %x, want %d bytes of Body", f.lastLen, f.lastBody, size)
				}
				if keep && res.Connections > 2 {
					t.Errorf("%d connections for 2 workers with keep-conn", res.Connections)
				}
			})
		}
	}
}

func TestRequestParamsOverrides(t *testing.T) {
	params := Config{Script: "/a/b.php", Params: []fcgi.Pair{{Name: "QUERY_STRING", Value: "x=1"}, {Name: "X", Value: "1"}, {Name: "X", Value: "2"}}}.RequestParams()
	got := make(map[string]string)
	count := make(map[string]int)
	for _, p := range params {
		got[p.Name] = p.Value
		count[p.Name]++
	}
	if got["QUERY_STRING"] != "x=1" || got["REQUEST_URI"] != "/b.php?x=1" || got["X"] != "2" || count["X"] != 1 || got["REQUEST_METHOD"] != "GET" {
		t.Errorf("params %v", params)
	}
	params = Config{Script: "/a/b.php", Params: []fcgi.Pair{{Name: "REQUEST_URI", Value: "/pretty/url"}, {Name: "QUERY_STRING", Value: "q"}}}.RequestParams()
	for _, p := range params {
		if p.Name == "REQUEST_URI" && p.Value != "/pretty/url" {
			t.Errorf("REQUEST_URI %q, want the parameter's", p.Value)
		}
	}
}

func TestRunValidatesResponses(t *testing.T) {
	sumOf := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	cases := []struct {
		name     string
		resp     []byte
		cfg      Config
		wantOK   bool
		wantCode int
		wantErr  string
	}{
		{"no status is 200", helloResponse, Config{}, true, 200, ""},
		{"wrong status", fakeResponse("", "Status: 500 Internal Server Error\r\n\r\nboom"), Config{}, false, 500, CauseBadStatus},
		{"expected other status", fakeResponse("", "Status: 404 Not Found\r\n\r\nFile not found.\n"), Config{ExpectStatus: 404}, true, 404, ""},
		{"any status", fakeResponse("", "Status: 503\n\n"), Config{ExpectStatus: AnyStatus}, true, 503, ""},
		{"200 but expected 404", helloResponse, Config{ExpectStatus: 404}, false, 200, CauseBadStatus},
		{"right sha256", helloResponse, Config{ExpectBodySHA256: sumOf(helloBody)}, true, 200, ""},
		{"wrong sha256", helloResponse, Config{ExpectBodySHA256: sumOf("hello from go\n")}, false, 200, CauseBadBody},
		{"right prefix", helloResponse, Config{ExpectBodyPrefix: "hello from"}, true, 200, ""},
		{"wrong prefix", helloResponse, Config{ExpectBodyPrefix: "hello from go"}, false, 200, CauseBadBody},
		{"body shorter than prefix", helloResponse, Config{ExpectBodyPrefix: helloBody + "and more"}, false, 200, CauseBadBody},
		{"wrong status and body: status counts", fakeResponse("", "Status: 500\r\n\r\nno"), Config{ExpectBodyPrefix: "hello"}, false, 500, CauseBadStatus},
		{
			"headers and body split across records",
			fakeResponse("PHP Notice: x", "Status: 201 Created\r\nContent-Type: text/plain\r", "\n\r", "\nhel", "lo from ", "php\n"),
			Config{ExpectStatus: 201, ExpectBodySHA256: sumOf(helloBody)}, true, 201, "",
		},
		{"LF only headers", fakeResponse("", "Content-Type: text/plain\n\nhello from php\n"), Config{ExpectBodySHA256: sumOf(helloBody)}, true, 200, ""},
		{"empty body", fakeResponse("", "Status: 204 No Content\r\n\r\n"), Config{ExpectStatus: 204, ExpectBodySHA256: sumOf("")}, true, 204, ""},
		{"headers never end", fakeResponse("", "Content-Type: text/plain\r\n"), Config{}, false, 0, CauseProtocol},
		{"no stdout", fakeResponse(""), Config{}, false, 0, CauseProtocol},
		{"malformed status", fakeResponse("", "Status: abc\r\n\r\n"), Config{}, false, 0, CauseProtocol},
	}
	for _, tc := range cases {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/keep-conn=%v", tc.name, keep), func(t *testing.T) {
				f := startFake(t, "unix", fakeOK, tc.resp)
				cfg := tc.cfg
				cfg.Upstream, cfg.Concurrency, cfg.Requests, cfg.KeepConn = f.addr, 3, 40, keep
				res := run(t, cfg)
				if res.Requests != 40 || f.requests.Load() != 40 {
					t.Errorf("%d requests measured, %d served, want 40", res.Requests, f.requests.Load())
				}
				if tc.wantOK {
					if res.Successes != 40 || len(res.Errors) != 0 {
						t.Errorf("successes %d, errors %v %v", res.Successes, res.Errors, res.ErrorSamples)
					}
				} else {
					onlyErrors(t, res, map[string]int64{tc.wantErr: 40})
					if res.Successes != 0 || res.Throughput() != 0 || res.Latency.Count() != 0 {
						t.Errorf("failed requests counted as throughput: successes %d, %v req/s, %d latencies", res.Successes, res.Throughput(), res.Latency.Count())
					}
				}
				if tc.wantCode != 0 && res.Statuses[tc.wantCode] != 40 {
					t.Errorf("statuses %v, want 40 × %d", res.Statuses, tc.wantCode)
				}
				if keep && tc.wantErr != CauseProtocol && res.Connections > 3 {
					t.Errorf("%d connections for 3 workers: a validation failure should not drop the connection", res.Connections)
				}
			})
		}
	}
}

func TestRunStderrIsReported(t *testing.T) {
	f := startFake(t, "unix", fakeOK, fakeResponse("PHP Warning: careful", "\r\n"+helloBody))
	res := run(t, Config{Upstream: f.addr, Concurrency: 1, Requests: 5})
	if res.Successes != 5 || res.StderrResponses != 5 || res.StderrSample != "PHP Warning: careful" {
		t.Errorf("successes %d, stderr responses %d, sample %q", res.Successes, res.StderrResponses, res.StderrSample)
	}
}

func TestRunCountsDialErrorsByErrno(t *testing.T) {
	// A port nobody listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := fcgi.Addr{Network: "tcp", Address: ln.Addr().String()}
	ln.Close()
	missing := fcgi.Addr{Network: "unix", Address: filepath.Join(testbed.ShortTempDir(t), "nobody.sock")}
	// A socket file nobody accepts on: the listener is gone.
	stale := fcgi.Addr{Network: "unix", Address: filepath.Join(testbed.ShortTempDir(t), "stale.sock")}
	sln, err := net.Listen("unix", stale.Address)
	if err != nil {
		t.Fatal(err)
	}
	sln.(*net.UnixListener).SetUnlinkOnClose(false)
	sln.Close()

	for _, tc := range []struct {
		name  string
		addr  fcgi.Addr
		cause string
	}{
		{"refused port", refused, "dial:ECONNREFUSED"},
		{"missing socket", missing, "dial:ENOENT"},
		{"stale socket", stale, "dial:ECONNREFUSED"},
	} {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/keep-conn=%v", tc.name, keep), func(t *testing.T) {
				res := run(t, Config{Upstream: tc.addr, Concurrency: 4, Requests: 100, KeepConn: keep})
				if res.Requests != 100 || res.Successes != 0 || res.Connections != 0 {
					t.Errorf("requests %d, successes %d, connections %d", res.Requests, res.Successes, res.Connections)
				}
				onlyErrors(t, res, map[string]int64{tc.cause: 100})
			})
		}
	}
}

func TestRunCountsFullBacklogAsEAGAIN(t *testing.T) {
	// A unix socket whose listen queue holds one connection and that
	// never accepts, like php-fpm with every worker busy and a full
	// listen.backlog: once the queue is full, connect fails with EAGAIN.
	path := filepath.Join(testbed.ShortTempDir(t), "full.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	res := run(t, Config{Upstream: fcgi.Addr{Network: "unix", Address: path}, Concurrency: 1, Requests: 20, Timeout: 50 * time.Millisecond})
	// The first requests sit in the queue until they time out; closed
	// by the client, they still fill it, as nobody accepts them.
	if res.Errors["dial:EAGAIN"] < 10 || res.Errors[CauseTimeout] < 1 || res.Errors["dial:EAGAIN"]+res.Errors[CauseTimeout] != 20 {
		t.Errorf("errors %v, want mostly dial:EAGAIN after a timeout or two", res.Errors)
	}
}

func TestRunCountsConnectionErrorsByCause(t *testing.T) {
	for _, tc := range []struct {
		mode, cause string
	}{
		{fakeClose, CauseClosed},
		{fakeHTTP, CauseProtocol},
		{fakeOverload, CauseRejected},
		{fakeSilent, CauseTimeout},
	} {
		for _, keep := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/keep-conn=%v", tc.mode, keep), func(t *testing.T) {
				f := startFake(t, "unix", tc.mode, helloResponse)
				n := 30
				if tc.mode == fakeSilent {
					n = 4
				}
				res := run(t, Config{Upstream: f.addr, Concurrency: 2, Requests: n, KeepConn: keep, Timeout: 100 * time.Millisecond})
				onlyErrors(t, res, map[string]int64{tc.cause: int64(n)})
				// Every failure drops the connection: the next request
				// reconnects.
				if res.Connections != int64(n) || f.conns.Load() != int64(n) {
					t.Errorf("%d connections (server: %d), want one per request, %d; result %+v", res.Connections, f.conns.Load(), n, res)
				}
				if tc.mode == fakeHTTP && !strings.Contains(res.ErrorSamples[CauseProtocol], "HTTP") {
					t.Errorf("sample %q does not say the peer speaks HTTP", res.ErrorSamples[CauseProtocol])
				}
			})
		}
	}
}

func TestRunDurationAndWarmup(t *testing.T) {
	f := startFake(t, "unix", fakeOK, helloResponse)
	const d, warm = 300 * time.Millisecond, 200 * time.Millisecond
	start := time.Now()
	res := run(t, Config{Upstream: f.addr, Concurrency: 4, Duration: d, Warmup: warm, KeepConn: true})
	took := time.Since(start)
	if res.Elapsed < d || res.Elapsed > d+time.Second {
		t.Errorf("measured %v, want about %v", res.Elapsed, d)
	}
	if took < d+warm || took > d+warm+3*time.Second {
		t.Errorf("the run took %v, want about %v", took, d+warm)
	}
	if res.Successes == 0 || len(res.Errors) != 0 {
		t.Fatalf("successes %d, errors %v", res.Successes, res.Errors)
	}
	// Kept connections are opened in the warm-up and used throughout.
	if res.WarmupConnections != 4 || res.Connections != 0 || f.conns.Load() != 4 {
		t.Errorf("%d connections in the warm-up, %d after (server: %d), want 4, 0 (4)", res.WarmupConnections, res.Connections, f.conns.Load())
	}
	// The warm-up's requests reached the server but are not counted.
	if served := f.requests.Load(); served <= res.Requests+res.Unfinished {
		t.Errorf("server got %d requests, measured %d + %d unfinished: the warm-up sent none?", served, res.Requests, res.Unfinished)
	}
	if res.Start.Sub(start) < warm {
		t.Errorf("measurement started %v after the run, before the %v warm-up ended", res.Start.Sub(start), warm)
	}
}

func TestRunDurationCutsOffRequestsInFlight(t *testing.T) {
	f := startFake(t, "unix", fakeSilent, nil)
	start := time.Now()
	res := run(t, Config{Upstream: f.addr, Concurrency: 3, Duration: 200 * time.Millisecond, Timeout: time.Minute})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the run took %v: requests in flight were not cut off", took)
	}
	if res.Requests != 0 || res.Unfinished != 3 || res.StalledWorkers != 3 || len(res.Errors) != 0 {
		t.Errorf("requests %d, unfinished %d, stalled %d, errors %v; want 0, 3, 3, none", res.Requests, res.Unfinished, res.StalledWorkers, res.Errors)
	}
	var text strings.Builder
	res.WriteText(&text)
	if !strings.Contains(text.String(), "stalled      3 of 3 workers completed no request") {
		t.Errorf("text output does not report the stalled workers:\n%s", text.String())
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	f := startFake(t, "unix", fakeSilent, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{Upstream: f.addr, Script: "/x.php", Concurrency: 2, Requests: 1000, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Run returned %v after the context ended", took)
	}
	if !res.Interrupted || res.Unfinished != 2 || res.Requests != 0 {
		t.Errorf("interrupted %v, unfinished %d, requests %d", res.Interrupted, res.Unfinished, res.Requests)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	addr := fcgi.Addr{Network: "tcp", Address: "127.0.0.1:9"}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Script: "/x.php", Requests: 1}, "no upstream"},
		{Config{Upstream: addr, Requests: 1}, "no script"},
		{Config{Upstream: addr, Script: "/x.php"}, "never end"},
		{Config{Upstream: addr, Script: "/x.php", Requests: 1, ExpectBodySHA256: "abc"}, "64 hex digits"},
		{Config{Upstream: addr, Script: "/x.php", Requests: 1, ExpectBodySHA256: strings.Repeat("a", 64), ExpectBodyPrefix: "x"}, "give one"},
		{Config{Upstream: addr, Script: "/x.php", Requests: 1, ExpectStatus: 42}, "three-digit"},
		{Config{Upstream: addr, Script: "/x.php", Requests: 1, Concurrency: -1}, "negative"},
		{Config{Upstream: addr, Script: "/x.php", Requests: 1, BodySize: -1}, "negative"},
	} {
		_, err := Run(context.Background(), tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want an error saying %q", tc.cfg, err, tc.want)
		}
	}
}

func TestResultJSONAndText(t *testing.T) {
	f := startFake(t, "unix", fakeOK, fakeResponse("", "Status: 500\r\n\r\n"))
	res := run(t, Config{Upstream: f.addr, Concurrency: 2, Requests: 20})
	b, err := res.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Requests, Successes, Errors int64
		ErrorsByCause               map[string]int64 `json:"errors_by_cause"`
		Statuses                    map[string]int64
		Latency                     map[string]float64 `json:"latency_ms"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	if got.Requests != 20 || got.Successes != 0 || got.Errors != 20 || got.ErrorsByCause[CauseBadStatus] != 20 || got.Statuses["500"] != 20 {
		t.Errorf("JSON %s", b)
	}
	for _, k := range []string{"min", "mean", "p50", "p90", "p99", "p99.9", "max"} {
		if _, ok := got.Latency[k]; !ok {
			t.Errorf("latency_ms has no %q: %s", k, b)
		}
	}
	var text strings.Builder
	res.WriteText(&text)
	for _, want := range []string{"requests     20: 0 ok, 20 errors", "bad_status", "status 500, want 200", "statuses     500: 20", "no successful requests"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, text.String())
		}
	}
}

func TestRunAgainstPHPFPM(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	root := testbed.PHPRoot(t)
	addr, err := fcgi.ParseAddr(fpm.Addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, keep := range []bool{false, true} {
		t.Run(fmt.Sprintf("hello/keep-conn=%v", keep), func(t *testing.T) {
			res := run(t, Config{Upstream: addr, Script: filepath.Join(root, "hello.php"), Concurrency: 8, Requests: 200, KeepConn: keep, ExpectBodyPrefix: "hello from php"})
			if res.Requests != 200 || res.Successes != 200 || len(res.Errors) != 0 {
				t.Fatalf("requests %d, successes %d, errors %v %v", res.Requests, res.Successes, res.Errors, res.ErrorSamples)
			}
			if keep && res.Connections > 8 || !keep && res.Connections != 200 {
				t.Errorf("%d connections", res.Connections)
			}
			var text strings.Builder
			res.WriteText(&text)
			t.Logf("\n%s", text.String())
		})
	}
	t.Run("echo body", func(t *testing.T) {
		const size = 300_000
		want := fmt.Sprintf("len=%d sha256=%x\n", size, sha256.Sum256(Body(size)))
		res := run(t, Config{Upstream: addr, Script: filepath.Join(root, "echo.php"), Method: "POST", BodySize: size, Concurrency: 4, Requests: 40, KeepConn: true, ExpectBodySHA256: hex.EncodeToString(sha(want))})
		if res.Successes != 40 {
			t.Fatalf("successes %d, errors %v %v", res.Successes, res.Errors, res.ErrorSamples)
		}
	})
	t.Run("big body checked by sha256", func(t *testing.T) {
		var big []byte
		for k := range 1024 { // big.php?mb=1
			big = append(big, strings.Repeat(fmt.Sprintf("%07d\n", k), 128)...)
		}
		res := run(t, Config{Upstream: addr, Script: filepath.Join(root, "big.php") + "?mb=1", Concurrency: 4, Requests: 20, KeepConn: true, ExpectBodySHA256: hex.EncodeToString(sha(string(big)))})
		if res.Successes != 20 {
			t.Fatalf("successes %d, errors %v %v", res.Successes, res.Errors, res.ErrorSamples)
		}
		if res.BytesRead < 20<<20 {
			t.Errorf("read %d bytes for 20 MiB of bodies", res.BytesRead)
		}
	})
	t.Run("missing script is a bad status", func(t *testing.T) {
		res := run(t, Config{Upstream: addr, Script: filepath.Join(root, "nope.php"), Concurrency: 2, Requests: 10})
		onlyErrors(t, res, map[string]int64{CauseBadStatus: 10})
		if res.Statuses[404] != 10 {
			t.Errorf("statuses %v", res.Statuses)
		}
	})
}

func sha(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
