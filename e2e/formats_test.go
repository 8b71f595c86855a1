package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// A browser gets a page, curl gets text; both name the cause and the fix.
func TestBrowsersGetAPageAndCurlGetsText(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	dead := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	s := startFailStack(t, "tcp", dead)
	for _, tt := range []struct {
		accept, ctype string
		want          []string
	}{
		{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html; charset=utf-8", []string{"<!doctype html>", "upstream_refused", "What to change", fpm.Addr, "Timeline"}},
		{"*/*", "text/plain; charset=utf-8", []string{"502 Bad Gateway", "cause: upstream_refused", "What to change:", fpm.Addr}},
	} {
		req, _ := http.NewRequest("GET", s.nginx.URL+"/hello.php", nil)
		req.Header.Set("Accept", tt.accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 502 || resp.Header.Get("Content-Type") != tt.ctype {
			t.Errorf("Accept %q: %d %q", tt.accept, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		for _, w := range tt.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("Accept %q: body lacks %q:\n%s", tt.accept, w, body)
			}
		}
	}
}

func TestServerTimingShowsConnectAndWait(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_SERVER_TIMING=true")
	r := do(t, "GET", s.nginx.URL+"/hello.php", nil)
	st := r.header.Get("Server-Timing")
	if r.status != 200 || string(r.body) != "hello from php\n" {
		t.Errorf("response changed: %d %q", r.status, r.body)
	}
	if !strings.Contains(st, "fcgi-connect;dur=") || !strings.Contains(st, "fcgi-wait;dur=") {
		t.Errorf("Server-Timing = %q", st)
	}
	plain := startFailStack(t, "unix", fpm.Addr)
	if h := do(t, "GET", plain.nginx.URL+"/hello.php", nil).header.Get("Server-Timing"); h != "" {
		t.Errorf("Server-Timing %q sent although it is off by default", h)
	}
}

// PHP-level problems php-fpm completed pass through untouched and are named
// in the log with the SCRIPT_FILENAME that was sent.
func TestPHPProblemsPassThroughAndAreNamedInTheLog(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr)
	for _, tt := range []struct {
		path, cause string
		status      int
	}{
		{"/no-such.php", "script_not_found", 404},
		{"/fatal.php", "php_fatal_error", 500},
		{"/memory.php", "memory_exhausted", 500},
	} {
		r := do(t, "GET", s.nginx.URL+tt.path, nil)
		if r.status != tt.status || r.header.Get("X-Fcgiscope-Cause") != "" {
			t.Errorf("%s: %d cause header %q; want php-fpm's own %d untouched", tt.path, r.status, r.header.Get("X-Fcgiscope-Cause"), tt.status)
		}
		line := waitLog(t, s.fcgiscope, func(m map[string]any) bool { return m["uri"] == tt.path })
		if line["cause"] != tt.cause || line["level"] != "warn" || !strings.HasSuffix(fmt.Sprint(line["script"]), tt.path) {
			t.Errorf("%s: log line %v, want cause %s at warn with the script", tt.path, line, tt.cause)
		}
	}
}
