package testbed

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeTB records the decisions of missingBinary instead of ending the test.
type fakeTB struct {
	testing.TB
	fatal, skip string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) { f.fatal = fmt.Sprintf(format, args...) }

func (f *fakeTB) Skipf(format string, args ...any) { f.skip = fmt.Sprintf(format, args...) }

func TestMissingBinary(t *testing.T) {
	t.Run("CI fails", func(t *testing.T) {
		tb := &fakeTB{}
		missingBinary(tb, true, "php-fpm", "apt-get install php8.2-fpm")
		if tb.skip != "" {
			t.Errorf("skipped in CI: %q", tb.skip)
		}
		for _, want := range []string{"php-fpm", "apt-get install php8.2-fpm", "CI=true"} {
			if !strings.Contains(tb.fatal, want) {
				t.Errorf("failure message %q does not mention %q", tb.fatal, want)
			}
		}
	})
	t.Run("locally skips", func(t *testing.T) {
		tb := &fakeTB{}
		missingBinary(tb, false, "php-fpm", "apt-get install php8.2-fpm")
		if tb.fatal != "" {
			t.Errorf("failed outside CI: %q", tb.fatal)
		}
		want := "SKIPPING integration test: php-fpm not found (apt-get install php8.2-fpm)"
		if !strings.HasPrefix(tb.skip, want) {
			t.Errorf("skip message = %q, want prefix %q", tb.skip, want)
		}
	})
}

func TestParseNginxAddr(t *testing.T) {
	long := "/" + strings.Repeat("x", maxSunPath)
	tests := []struct {
		in, network, address string
		wantErr              bool
	}{
		{in: "127.0.0.1:9000", network: "tcp", address: "127.0.0.1:9000"},
		{in: "unix:/tmp/fs1/fpm.sock", network: "unix", address: "/tmp/fs1/fpm.sock"},
		{in: "/tmp/fs1/fpm.sock", network: "unix", address: "/tmp/fs1/fpm.sock"},
		{in: "unix:relative.sock", wantErr: true},
		{in: "unix:" + long, wantErr: true},
		{in: "localhost", wantErr: true},
	}
	for _, tt := range tests {
		network, address, err := parseNginxAddr(tt.in)
		if (err != nil) != tt.wantErr || network != tt.network || address != tt.address {
			t.Errorf("parseNginxAddr(%q) = %q, %q, %v; want %q, %q, error %t",
				tt.in, network, address, err, tt.network, tt.address, tt.wantErr)
		}
	}
}

// TestFPMAndNginx runs the whole chain on both listen types and both nginx
// connection modes, then checks that Stop leaves no process behind.
func TestFPMAndNginx(t *testing.T) {
	root := PHPRoot(t)
	for _, listen := range []string{"tcp", "unix"} {
		t.Run(listen, func(t *testing.T) {
			t.Parallel()
			cfg := FPMConfig{MaxChildren: 3}
			if listen == "tcp" {
				cfg.Listen = fmt.Sprintf("127.0.0.1:%d", FreePort(t))
			}
			fpm := StartFPM(t, cfg)
			if fpm.Network != listen {
				t.Fatalf("Network = %q, want %q", fpm.Network, listen)
			}
			fpmProcs := append([]int{fpm.Pid}, fpm.WorkerPIDs()...)
			if len(fpmProcs) != 1+cfg.MaxChildren {
				t.Errorf("php-fpm processes = %v, want master and %d workers", fpmProcs, cfg.MaxChildren)
			}

			for _, keepConn := range []bool{false, true} {
				t.Run(fmt.Sprintf("keepconn=%t", keepConn), func(t *testing.T) {
					ngx := StartNginx(t, NginxConfig{FastCGIPass: fpm.Addr, Root: root, KeepConn: keepConn})
					client := &http.Client{Timeout: 30 * time.Second}
					defer client.CloseIdleConnections()

					for range 3 { // Repeated to reuse kept-alive FastCGI connections.
						status, body := get(t, client, ngx.URL+"/hello.php")
						if status != http.StatusOK || body != "hello from php\n" {
							t.Errorf("GET /hello.php = %d %q", status, body)
						}
					}

					payload := make([]byte, 1<<20)
					if _, err := rand.Read(payload); err != nil {
						t.Fatal(err)
					}
					sum := sha256.Sum256(payload)
					resp, err := client.Post(ngx.URL+"/echo.php", "application/octet-stream", bytes.NewReader(payload))
					if err != nil {
						t.Fatal(err)
					}
					body := readBody(t, resp)
					want := fmt.Sprintf("len=%d sha256=%s\n", len(payload), hex.EncodeToString(sum[:]))
					if resp.StatusCode != http.StatusOK || body != want {
						t.Errorf("POST /echo.php = %d %q, want 200 %q", resp.StatusCode, body, want)
					}

					if status, body := get(t, client, ngx.URL+"/stderr.php"); status != http.StatusOK || body != "stderr ok\n" {
						t.Errorf("GET /stderr.php = %d %q", status, body)
					}
					waitFor(t, "nginx error log with FastCGI stderr", func() bool {
						return strings.Contains(ngx.ReadErrorLog(), `FastCGI sent in stderr: "PHP message: this goes to fastcgi stderr"`)
					})
					waitFor(t, "access log line for /stderr.php", func() bool {
						return accessLine.MatchString(ngx.ReadAccessLog())
					})

					ngxProcs := append([]int{ngx.Pid}, childPIDs(ngx.Pid)...)
					if len(ngxProcs) != 2 {
						t.Errorf("nginx processes = %v, want master and 1 worker", ngxProcs)
					}
					ngx.Stop()
					ngx.Stop() // Idempotent.
					assertGone(t, "nginx", ngxProcs)
				})
			}

			fpm.Stop()
			fpm.Stop() // Idempotent.
			assertGone(t, "php-fpm", fpmProcs)
			if err := fpm.Signal(syscall.SIGUSR1); !errors.Is(err, os.ErrProcessDone) {
				t.Errorf("Signal after Stop = %v, want os.ErrProcessDone", err)
			}
			if log := fpm.ReadErrorLog(); !strings.Contains(log, "exiting, bye-bye") {
				t.Errorf("php-fpm did not shut down gracefully; error log:\n%s", log)
			}
		})
	}
}

// TestPHPScripts checks every embedded script and the optional php-fpm and
// nginx settings they are meant to exercise.
func TestPHPScripts(t *testing.T) {
	t.Parallel()
	fpm := StartFPM(t, FPMConfig{
		PM:                      "dynamic",
		MaxChildren:             6,
		CatchWorkersOutput:      true,
		SlowlogTimeout:          500 * time.Millisecond, // Rounded up to 1s.
		RequestTerminateTimeout: 3 * time.Second,
		StatusPath:              "/fpm-status",
		PingPath:                "/fpm-ping",
		ListenMode:              "0600",
	})
	if fi, err := os.Stat(fpm.Address); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket %s has mode %v, want 0600", fpm.Address, fi.Mode().Perm())
	}
	ngx := StartNginx(t, NginxConfig{
		FastCGIPass: fpm.Addr,
		KeepConn:    true,
		ReadTimeout: 10 * time.Second,
		ExtraServer: fmt.Sprintf(`        location ~ ^/fpm-(status|ping)$ {
            fastcgi_pass %s;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param SCRIPT_FILENAME $fastcgi_script_name;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param QUERY_STRING $query_string;
        }`, fpm.Addr),
		ExtraLocation: "            add_header X-Testbed location;",
	})
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()

	t.Run("big and sha", func(t *testing.T) {
		t.Parallel()
		resp, err := client.Get(ngx.URL + "/big.php?mb=3")
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if n != 3<<20 || resp.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("big.php sent %d bytes of %q, want %d of application/octet-stream", n, resp.Header.Get("Content-Type"), 3<<20)
		}
		_, want := get(t, client, ngx.URL+"/sha.php?mb=3")
		if got := hex.EncodeToString(h.Sum(nil)); got != want {
			t.Errorf("sha256 of big.php = %s, sha.php says %s", got, want)
		}
		// The documented layout lets tests generate the content in Go.
		var doc bytes.Buffer
		for k := range 3 * 1024 {
			doc.WriteString(strings.Repeat(fmt.Sprintf("%07d\n", k), 128))
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(doc.Bytes())); got != want {
			t.Errorf("documented content hashes to %s, sha.php says %s", got, want)
		}
	})

	t.Run("cookies", func(t *testing.T) {
		t.Parallel()
		resp, err := client.Get(ngx.URL + "/cookies.php")
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		var cookies []string
		for _, c := range resp.Cookies() {
			cookies = append(cookies, c.Name+"="+c.Value)
		}
		if resp.StatusCode != http.StatusCreated || body != "cookies\n" || resp.Header.Get("X-Custom") != "yes" ||
			strings.Join(cookies, ",") != "a=1,b=2,c=3" || resp.Header.Get("X-Testbed") != "location" {
			t.Errorf("cookies.php = %d %q, headers %v", resp.StatusCode, body, resp.Header)
		}
	})

	t.Run("env", func(t *testing.T) {
		t.Parallel()
		req, err := http.NewRequest(http.MethodGet, ngx.URL+"/env.php?x=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Probe", "42")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body := readBody(t, resp)
		for _, want := range []string{
			"HTTP_X_PROBE=42\n", "QUERY_STRING=x=1\n", "REQUEST_METHOD=GET\n",
			"REQUEST_URI=/env.php?x=1\n", "SCRIPT_FILENAME=" + filepath.Join(nginxDocRoot(t, ngx), "env.php") + "\n",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("env.php output lacks %q:\n%s", want, body)
			}
		}
	})

	t.Run("sleep and slowlog", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		resp, err := client.Get(ngx.URL + "/sleep.php?s=1.5&flush=1")
		if err != nil {
			t.Fatal(err)
		}
		first := make([]byte, len("started\n"))
		if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "started\n" {
			t.Errorf("first bytes = %q, %v; want \"started\\n\"", first, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("\"started\" arrived after %v, want it before the 1.5 s sleep ends", d)
		}
		if rest := readBody(t, resp); rest != "slept\n" {
			t.Errorf("rest of sleep.php = %q", rest)
		}
		waitFor(t, "slow log entry", func() bool {
			return strings.Contains(readFileString(fpm.SlowLog), "usleep()")
		})
	})

	t.Run("terminate timeout", func(t *testing.T) {
		t.Parallel()
		if status, _ := get(t, client, ngx.URL+"/sleep.php?s=6"); status != http.StatusBadGateway {
			t.Errorf("sleep beyond request_terminate_timeout: status %d, want 502", status)
		}
		waitFor(t, "php-fpm timeout notice", func() bool {
			return strings.Contains(fpm.ReadErrorLog(), "execution timed out")
		})
	})

	t.Run("stderr caught", func(t *testing.T) {
		t.Parallel()
		get(t, client, ngx.URL+"/stderr.php")
		waitFor(t, "worker stderr in the php-fpm log", func() bool {
			return strings.Contains(fpm.ReadErrorLog(), "this goes to stderr")
		})
	})

	t.Run("crash", func(t *testing.T) {
		t.Parallel()
		for _, sig := range []string{"11", "9"} {
			if status, _ := get(t, client, ngx.URL+"/crash.php?sig="+sig); status != http.StatusBadGateway {
				t.Errorf("crash.php?sig=%s: status %d, want 502", sig, status)
			}
		}
		waitFor(t, "php-fpm crash notices", func() bool {
			log := fpm.ReadErrorLog()
			return strings.Contains(log, "exited on signal 11") && strings.Contains(log, "exited on signal 9")
		})
		resp, err := client.Get(ngx.URL + "/crash.php?flush=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body) // Truncated chunked body: an error is expected.
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "partial\n") {
			t.Errorf("crash.php?flush=1 = %d %q, want 200 starting with \"partial\\n\"", resp.StatusCode, body)
		}
	})

	t.Run("fatal errors", func(t *testing.T) {
		t.Parallel()
		for _, script := range []string{"fatal.php", "memory.php"} {
			if status, _ := get(t, client, ngx.URL+"/"+script); status != http.StatusInternalServerError {
				t.Errorf("%s: status %d, want 500", script, status)
			}
		}
		waitFor(t, "fatal errors in the nginx log", func() bool {
			log := ngx.ReadErrorLog()
			return strings.Contains(log, "Call to undefined function testbed_undefined_function()") &&
				strings.Contains(log, "Allowed memory size of 8388608 bytes exhausted")
		})
	})

	t.Run("status and ping", func(t *testing.T) {
		t.Parallel()
		if status, body := get(t, client, ngx.URL+"/fpm-ping"); status != http.StatusOK || body != "pong" {
			t.Errorf("GET /fpm-ping = %d %q", status, body)
		}
		if status, body := get(t, client, ngx.URL+"/fpm-status"); status != http.StatusOK || !strings.Contains(body, "process manager:      dynamic") {
			t.Errorf("GET /fpm-status = %d %q", status, body)
		}
	})
}

// accessLine matches the access log line of GET /stderr.php. The body size
// is not fixed: $body_bytes_sent includes the chunked-encoding framing.
var accessLine = regexp.MustCompile(`(?m)^127\.0\.0\.1 "GET /stderr\.php HTTP/1\.1" 200 \d+ \d+\.\d{3} 200$`)

// nginxDocRoot returns the document root n was configured with, read back
// from the generated config, because StartNginx chose it (a new PHPRoot).
func nginxDocRoot(t *testing.T, n *Nginx) string {
	t.Helper()
	conf := readFileString(filepath.Join(n.Dir, "nginx.conf"))
	for _, line := range strings.Split(conf, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "root "); ok {
			return strings.TrimSuffix(v, ";")
		}
	}
	t.Fatalf("no root directive in nginx.conf:\n%s", conf)
	return ""
}

// get fetches url and returns the status and body.
func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, readBody(t, resp)
}

// readBody reads and closes the response body.
func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(body)
}

// waitFor polls cond for up to 5 s, because servers write their logs
// asynchronously with respect to the response.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// assertGone checks that none of pids exists any more.
func assertGone(t *testing.T, what string, pids []int) {
	t.Helper()
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s pid %d still exists after Stop (kill(pid, 0) = %v)", what, pid, err)
		}
	}
}
