package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// relayStack is nginx -> fcgiscope -> php-fpm, plus an nginx that talks to
// the same php-fpm directly, for comparison.
type relayStack struct {
	fpm       *testbed.FPM
	fcgiscope *testbed.Process
	through   *testbed.Nginx // fastcgi_keep_conn off
	keepalive *testbed.Nginx // fastcgi_keep_conn on, upstream keepalive
	direct    *testbed.Nginx
}

// startRelayStack starts the stack with nginx reaching fcgiscope over
// downNet and fcgiscope reaching php-fpm over upNet ("tcp" or "unix").
func startRelayStack(t *testing.T, downNet, upNet string) *relayStack {
	t.Helper()
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	root := testbed.PHPRoot(t)

	fpmCfg := testbed.FPMConfig{MaxChildren: 4}
	if upNet == "tcp" {
		fpmCfg.Listen = fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	}
	s := &relayStack{fpm: testbed.StartFPM(t, fpmCfg)}

	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	if downNet == "unix" {
		listen = "unix:" + filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	}
	s.fcgiscope = testbed.StartFcgiscope(t,
		"FCGISCOPE_LISTEN="+listen,
		"FCGISCOPE_LISTEN_MODE=0666",
		"FCGISCOPE_UPSTREAM="+s.fpm.Addr,
		"FCGISCOPE_ADMIN_LISTEN=",
	)
	s.through = testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen, Root: root})
	s.keepalive = testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen, Root: root, KeepConn: true})
	s.direct = testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: s.fpm.Addr, Root: root})
	return s
}

// accessLines returns fcgiscope's per-request log lines.
func (s *relayStack) accessLines(t *testing.T) []map[string]any {
	t.Helper()
	return requestLines(s.fcgiscope)
}

// waitAccessLines waits up to 5 s for at least n request lines for uri.
func (s *relayStack) waitAccessLines(t *testing.T, uri string, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var lines []map[string]any
		for _, l := range s.accessLines(t) {
			if l["uri"] == uri {
				lines = append(lines, l)
			}
		}
		if len(lines) >= n || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, url, err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestNginxThroughFcgiscopeServesLikeDirect runs every check of a working
// stack over the four transport combinations and compares each answer with
// what nginx gets from php-fpm directly.
func TestNginxThroughFcgiscopeServesLikeDirect(t *testing.T) {
	for _, down := range []string{"tcp", "unix"} {
		for _, up := range []string{"tcp", "unix"} {
			t.Run("nginx-"+down+"-fcgiscope-"+up+"-php-fpm", func(t *testing.T) {
				s := startRelayStack(t, down, up)
				t.Run("small GET", func(t *testing.T) {
					got := do(t, "GET", s.through.URL+"/hello.php", nil)
					want := do(t, "GET", s.direct.URL+"/hello.php", nil)
					if got.status != 200 || string(got.body) != "hello from php\n" || !bytes.Equal(got.body, want.body) {
						t.Errorf("through fcgiscope: %d %q; direct: %d %q", got.status, got.body, want.status, want.body)
					}
				})
				t.Run("10 MiB POST body arrives intact", func(t *testing.T) {
					body := make([]byte, 10<<20)
					rand.Read(body)
					got := do(t, "POST", s.through.URL+"/echo.php", bytes.NewReader(body))
					want := fmt.Sprintf("len=%d sha256=%s\n", len(body), sha(body))
					if got.status != 200 || string(got.body) != want {
						t.Errorf("got %d %q, want %q", got.status, got.body, want)
					}
				})
				t.Run("20 MiB response arrives intact", func(t *testing.T) {
					got := do(t, "GET", s.through.URL+"/big.php?mb=20", nil)
					wantSum := do(t, "GET", s.direct.URL+"/sha.php?mb=20", nil)
					if got.status != 200 || len(got.body) != 20<<20 || sha(got.body) != string(wantSum.body) {
						t.Errorf("got %d, %d bytes, sha %s; want 200, %d bytes, sha %s", got.status, len(got.body), sha(got.body), 20<<20, wantSum.body)
					}
					direct := do(t, "GET", s.direct.URL+"/big.php?mb=20", nil)
					if !bytes.Equal(direct.body, got.body) {
						t.Error("the body differs from the direct path's")
					}
				})
				t.Run("cookies, custom header and status preserved", func(t *testing.T) {
					got := do(t, "GET", s.through.URL+"/cookies.php", nil)
					want := do(t, "GET", s.direct.URL+"/cookies.php", nil)
					if got.status != 201 || want.status != 201 {
						t.Errorf("status through %d, direct %d, want 201", got.status, want.status)
					}
					gc, wc := got.header.Values("Set-Cookie"), want.header.Values("Set-Cookie")
					sort.Strings(gc)
					sort.Strings(wc)
					if len(gc) != 3 || strings.Join(gc, "|") != strings.Join(wc, "|") {
						t.Errorf("Set-Cookie through %q, direct %q", gc, wc)
					}
					if got.header.Get("X-Custom") != "yes" || string(got.body) != "cookies\n" {
						t.Errorf("X-Custom %q body %q", got.header.Get("X-Custom"), got.body)
					}
				})
				t.Run("stderr reaches nginx's error log", func(t *testing.T) {
					got := do(t, "GET", s.through.URL+"/stderr.php", nil)
					if got.status != 200 || string(got.body) != "stderr ok\n" {
						t.Errorf("got %d %q", got.status, got.body)
					}
					log := s.through.ReadErrorLog()
					if !strings.Contains(log, "FastCGI sent in stderr") || !strings.Contains(log, "this goes to fastcgi stderr") {
						t.Errorf("nginx error log lacks the script's stderr:\n%s", log)
					}
				})
				t.Run("missing script is php-fpm's 404", func(t *testing.T) {
					got := do(t, "GET", s.through.URL+"/no-such-script.php", nil)
					want := do(t, "GET", s.direct.URL+"/no-such-script.php", nil)
					if got.status != 404 || string(got.body) != "File not found.\n" || !bytes.Equal(got.body, want.body) {
						t.Errorf("through %d %q, direct %d %q", got.status, got.body, want.status, want.body)
					}
				})
				t.Run("2000 requests over kept-alive connections", func(t *testing.T) {
					const n, workers = 2000, 8
					var wg sync.WaitGroup
					errs := make(chan string, n)
					for w := range workers {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for i := w; i < n; i += workers {
								resp, err := http.Get(s.keepalive.URL + "/hello.php?keepalive")
								if err != nil {
									errs <- err.Error()
									continue
								}
								b, _ := io.ReadAll(resp.Body)
								resp.Body.Close()
								if resp.StatusCode != 200 || string(b) != "hello from php\n" {
									errs <- fmt.Sprintf("request %d: %d %q", i, resp.StatusCode, b)
								}
							}
						}()
					}
					wg.Wait()
					close(errs)
					for e := range errs {
						t.Error(e)
					}
					// fcgiscope logs a request after nginx has the
					// response, so the last lines may lag a little.
					lines := s.waitAccessLines(t, "/hello.php?keepalive", n)
					conns := map[any]bool{}
					for _, l := range lines {
						conns[l["conn"]] = true
					}
					if len(lines) != n {
						t.Errorf("fcgiscope logged %d requests, want %d", len(lines), n)
					}
					for _, l := range lines {
						if l["outcome"] != "ok" {
							t.Errorf("failed request in the log: %v", l)
						}
					}
					// nginx keeps up to 8 idle connections per worker; a
					// few more may be opened under concurrency, but not
					// one per request.
					if len(conns) > 32 {
						t.Errorf("%d requests came over %d FastCGI connections: keep-alive is not working", n, len(conns))
					}
				})
				t.Run("one log line per request with the contract's fields", func(t *testing.T) {
					lines := s.accessLines(t)
					if len(lines) == 0 {
						t.Fatal("no request lines")
					}
					for _, field := range []string{"request_id", "method", "uri", "script", "status", "outcome", "upstream", "duration_ms", "connect_ms", "ttfb_ms", "bytes_in", "bytes_out"} {
						if _, ok := lines[0][field]; !ok {
							t.Errorf("log line lacks %q: %v", field, lines[0])
						}
					}
					if lines[0]["outcome"] != "ok" || lines[0]["upstream"] != s.fpm.Addr {
						t.Errorf("outcome %v upstream %v", lines[0]["outcome"], lines[0]["upstream"])
					}
				})
			})
		}
	}
}
