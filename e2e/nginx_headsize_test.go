package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// bigHeadRoot returns a document root with the testbed's scripts and
// bighead.php, which sends an X-Big header of ?n= bytes.
func bigHeadRoot(t *testing.T) string {
	t.Helper()
	root := testbed.PHPRoot(t)
	script := `<?php header('X-Big: ' . str_repeat('a', (int)($_GET['n'] ?? 0))); echo "small body\n";`
	if err := os.WriteFile(filepath.Join(root, "bighead.php"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

// getBigHead requests bighead.php with an n-byte header and returns the
// status, fcgiscope's cause header and the body.
func getBigHead(t *testing.T, base string, n int, accept string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/bighead.php?n=%d", base, n), nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"), string(body)
}

// A response whose headers do not fit nginx's fastcgi_buffer_size gets,
// instead of nginx's bare 502, an explanation naming the setting with its
// file and line and the value that fits; exactly the responses nginx alone
// refuses are refused; and once the operator raises the buffer and reloads
// nginx, fcgiscope follows and the same response goes through.
func TestHeadTooBigForNginxIsExplained(t *testing.T) {
	root := bigHeadRoot(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	ngx, p := nginxFirst(t, testbed.NginxConfig{Root: root}, fpm.Addr)
	alone := testbed.StartNginx(t, testbed.NginxConfig{Root: root, FastCGIPass: fpm.Addr})

	if code, _, body := getBigHead(t, ngx.URL, 2000, ""); code != 200 || body != "small body\n" {
		t.Fatalf("2000-byte header: %d %q, want 200 as nginx alone serves it", code, body)
	}
	code, cause, body := getBigHead(t, ngx.URL, 16000, "application/problem+json")
	if code != 502 || cause != "response_header_too_big" {
		t.Fatalf("16000-byte header: %d %q, want fcgiscope's 502 response_header_too_big:\n%s", code, cause, body)
	}
	for _, want := range []string{"fastcgi_buffer_size", "nginx's default", "fastcgi_buffer_size 32k;", "upstream sent too big header"} {
		if !strings.Contains(body, want) {
			t.Errorf("the explanation does not say %q:\n%s", want, body)
		}
	}

	if !strings.Contains(ngx.ReadErrorLog(), "fcgiscope: response_header_too_big: ") {
		t.Errorf("nginx's error log lacks fcgiscope's line:\n%s", ngx.ReadErrorLog())
	}

	// The largest header nginx alone takes, found by bisection, is taken
	// through fcgiscope too, and one byte more is refused by both.
	lo, hi := 2000, 16000
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if code, _, _ := getBigHead(t, alone.URL, mid, ""); code == 200 {
			lo = mid
		} else {
			hi = mid
		}
	}
	if !strings.Contains(alone.ReadErrorLog(), "upstream sent too big header") {
		t.Fatalf("nginx alone refused %d bytes for another reason:\n%s", hi, alone.ReadErrorLog())
	}
	if code, cause, _ := getBigHead(t, ngx.URL, lo, ""); code != 200 {
		t.Errorf("%d-byte header, the largest nginx alone serves: %d %q through fcgiscope", lo, code, cause)
	}
	if code, cause, _ := getBigHead(t, ngx.URL, hi, ""); code != 502 || cause != "response_header_too_big" {
		t.Errorf("%d-byte header, one more than nginx alone takes: %d %q through fcgiscope", hi, code, cause)
	}
	t.Logf("nginx's default buffer takes an X-Big header of up to %d bytes, alone and through fcgiscope", lo)

	ngx.Reload(t, func(conf string) string {
		return strings.Replace(conf, "fastcgi_pass ", "fastcgi_buffer_size 32k;\n            fastcgi_buffers 8 32k;\n            fastcgi_pass ", 1)
	})
	waitLog(t, p, func(l map[string]any) bool {
		return strings.Contains(fmt.Sprint(l["message"]), "nginx's configuration changed") && l["fastcgi_buffer_size"] != nil &&
			strings.HasPrefix(l["fastcgi_buffer_size"].(string), "32k")
	})
	if code, cause, body := getBigHead(t, ngx.URL, 16000, ""); code != 200 || body != "small body\n" {
		t.Errorf("16000-byte header after fastcgi_buffer_size 32k: %d %q %q, want 200", code, cause, body)
	}
}

// Without nginx's configuration fcgiscope passes a big head on, never
// refusing on a guess; nginx answers its own 502, and fcgiscope's log line
// says why.
func TestHeadTooBigIsLoggedWhenNginxSettingUnknown(t *testing.T) {
	root := bigHeadRoot(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	ngx, p := nginxFirst(t, testbed.NginxConfig{Root: root}, fpm.Addr, "FCGISCOPE_NGINX_CONFIG=-")
	code, cause, _ := getBigHead(t, ngx.URL, 16000, "")
	if code != 502 || cause != "" {
		t.Fatalf("%d %q, want nginx's own 502", code, cause)
	}
	l := waitLog(t, p, func(l map[string]any) bool { return strings.HasPrefix(fmt.Sprint(l["uri"]), "/bighead.php") })
	if l["outcome"] != "response_header_too_big" || !strings.Contains(fmt.Sprint(l["hints"]), "fastcgi_buffer_size 32k;") {
		t.Errorf("log line %v", l)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(ngx.ReadErrorLog(), "upstream sent too big header") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(ngx.ReadErrorLog(), "upstream sent too big header") {
		t.Errorf("nginx did not log why it answered 502:\n%s", ngx.ReadErrorLog())
	}
}
