package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// nginxFirst starts nginx passing to a fcgiscope that is not there yet, and
// then fcgiscope reading that nginx's configuration, as it does in a real
// deployment.
func nginxFirst(t *testing.T, ngxCfg testbed.NginxConfig, upstream string, env ...string) (*testbed.Nginx, *testbed.Process) {
	t.Helper()
	testbed.RequireNginx(t)
	listen := "unix:" + filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	ngxCfg.FastCGIPass = listen
	ngx := testbed.StartNginx(t, ngxCfg)
	p := testbed.StartFcgiscope(t, append([]string{
		"FCGISCOPE_LISTEN=" + listen,
		"FCGISCOPE_LISTEN_MODE=0666",
		"FCGISCOPE_UPSTREAM=" + upstream,
		"FCGISCOPE_NGINX_CONFIG=" + ngx.ConfigPath,
	}, env...)...)
	return ngx, p
}

// A burst larger than pm.max_children, of requests nginx alone would all
// serve (they wait in php-fpm's listen queue), is all served through
// fcgiscope with its default settings: requests wait for a free worker as
// long as nginx would.
func TestBurstBeyondMaxChildrenIsServedAsNginxAloneWould(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 5})
	ngx, _ := nginxFirst(t, testbed.NginxConfig{}, fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	var wg sync.WaitGroup
	codes := make([]int, 12)
	for i := range codes {
		wg.Go(func() {
			resp, err := http.Get(ngx.URL + "/sleep.php?s=3")
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("request %d: %d, want 200 as nginx alone serves it (all codes %v)", i, c, codes)
		}
	}
}

// When php-fpm is down while it restarts, fcgiscope tries again, but stops
// early enough that its explanation, not nginx's bare 504, reaches the
// client before nginx's fastcgi_read_timeout.
func TestRetriesEndBeforeNginxGivesUp(t *testing.T) {
	gone := "unix:" + filepath.Join(testbed.ShortTempDir(t), "php-fpm.sock")
	ngx, p := nginxFirst(t, testbed.NginxConfig{ReadTimeout: 3 * time.Second}, gone)
	start := time.Now()
	resp, err := http.Get(ngx.URL + "/hello.php")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	took := time.Since(start)
	if resp.StatusCode != 502 || resp.Header.Get("X-Fcgiscope-Cause") != "upstream_socket_missing" {
		t.Fatalf("%d %q after %v, want fcgiscope's 502 upstream_socket_missing", resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"), took)
	}
	l := waitLog(t, p, func(l map[string]any) bool { return l["outcome"] == "upstream_socket_missing" })
	if n, _ := l["dial_attempts"].(float64); n < 2 {
		t.Errorf("dial_attempts %v: fcgiscope did not wait for php-fpm to come back", l["dial_attempts"])
	}
	t.Logf("explained after %v and %v attempts, within nginx's 3s", took, l["dial_attempts"])
}

// A request that waits for a free worker longer than nginx's
// fastcgi_read_timeout gets nginx's own 504, and fcgiscope's log says why:
// web_server_timeout, nginx's setting with its file and line, and the pool
// that was full.
func TestWaitOutlastingNginxIsLoggedAsWebServerTimeout(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 1})
	ngx, p := nginxFirst(t, testbed.NginxConfig{ReadTimeout: 2 * time.Second}, fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		if resp, err := http.Get(ngx.URL + "/sleep.php?s=6"); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond) // the one worker is busy now
	resp, err := http.Get(ngx.URL + "/hello.php?waiting")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 504 || resp.Header.Get("X-Fcgiscope-Cause") != "" {
		t.Errorf("%d %q, want nginx's own 504", resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"))
	}
	l := waitLog(t, p, func(l map[string]any) bool { return l["uri"] == "/hello.php?waiting" })
	detail, _ := l["detail"].(string)
	hints := fmt.Sprint(l["hints"])
	if l["outcome"] != "web_server_timeout" || l["status"] != float64(504) || !strings.Contains(detail, "fastcgi_read_timeout = 2s ("+ngx.ConfigPath+":") ||
		!strings.Contains(hints, "pm.max_children = 1") || !strings.Contains(hints, fpm.ConfigPath) {
		t.Errorf("log line %v", l)
	}
	<-busy
}

// nginx's fastcgi_read_timeout ends a request whose script goes on: nginx
// answers 504 itself, and fcgiscope's log line, written once the script is
// done, says web_server_timeout, names nginx's setting, and tells how the
// script ended: it finished later, its output discarded, or php-fpm killed
// it at request_terminate_timeout.
func TestNginxTimeoutIsLoggedWithWhatPHPDidAfterwards(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", RequestTerminateTimeout: 2 * time.Second, SlowlogTimeout: time.Second})
	ngx, p := nginxFirst(t, testbed.NginxConfig{ReadTimeout: 500 * time.Millisecond}, fpm.Addr,
		"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_FPM_STATUS_INTERVAL=100ms")
	for _, tc := range []struct {
		uri  string
		want []string
	}{
		{"/sleep.php?s=1.2", []string{"PHP went on and finished", "having run 1.2", "its output was discarded"}},
		{"/sleep.php?s=5", []string{"php-fpm killed it at request_terminate_timeout = 2s (" + fpm.ConfigPath + ":", "php-fpm's slowlog caught it in usleep()"}},
	} {
		start := time.Now()
		resp, err := http.Get(ngx.URL + tc.uri)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 504 || resp.Header.Get("X-Fcgiscope-Cause") != "" {
			t.Fatalf("%s: %d %q, want nginx's own 504", tc.uri, resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"))
		}
		answered := time.Since(start)
		l := waitLogFor(t, p, 10*time.Second, func(l map[string]any) bool { return l["uri"] == tc.uri })
		logged := time.Since(start)
		detail := fmt.Sprint(l["detail"])
		if l["outcome"] != "web_server_timeout" || !strings.Contains(detail, "fastcgi_read_timeout = 500ms ("+ngx.ConfigPath+":") {
			t.Errorf("%s: log line %v", tc.uri, l)
		}
		for _, w := range tc.want {
			if !strings.Contains(detail, w) {
				t.Errorf("%s: the detail does not say %q:\n%s", tc.uri, w, detail)
			}
		}
		if logged < answered+500*time.Millisecond {
			t.Errorf("%s: logged %v after the request began, nginx answered after %v: the line cannot know how the script ended", tc.uri, logged, answered)
		}
		t.Logf("%s: nginx answered after %v, fcgiscope logged after %v: %s", tc.uri, answered.Round(time.Millisecond), logged.Round(time.Millisecond), l["evidence"].(map[string]any)["afterwards"])
	}
}
