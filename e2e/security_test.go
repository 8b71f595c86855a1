package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// Cookies and credentials pass through to PHP but never reach fcgiscope's
// log or its error pages.
func TestSecretsNeverReachLogsOrPages(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	dead := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	for _, upstream := range []string{fpm.Addr, dead} {
		s := startFailStack(t, "tcp", upstream, "FCGISCOPE_ERROR_DETAIL=full", "FCGISCOPE_LOG_LEVEL=debug")
		req, _ := http.NewRequest("GET", s.nginx.URL+"/env.php", nil)
		req.Header.Set("Cookie", "session=SEKRET-COOKIE")
		req.Header.Set("Authorization", "Bearer SEKRET-TOKEN")
		req.SetBasicAuth("user", "SEKRET-PASSWORD")
		req.Header.Set("Accept", "text/html")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if upstream == fpm.Addr && !strings.Contains(string(body), "HTTP_COOKIE=session=SEKRET-COOKIE") {
			t.Errorf("the cookie did not reach PHP: %s", body)
		}
		if upstream == dead && (strings.Contains(string(body), "SEKRET") || resp.StatusCode != 502) {
			t.Errorf("the error page shows a secret or is not the 502: %d %s", resp.StatusCode, body)
		}
		waitLog(t, s.fcgiscope, func(m map[string]any) bool { return m["uri"] == "/env.php" })
		if out := s.fcgiscope.Output(); strings.Contains(out, "SEKRET") {
			t.Errorf("fcgiscope's log carries a secret:\n%s", out)
		}
	}
}

// A client on a public address gets the minimal page: status, title, cause
// and request id, and nothing about the server.
func TestPublicClientsGetNoServerDetails(t *testing.T) {
	testbed.RequireNginx(t)
	dir := testbed.ShortTempDir(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	sock := filepath.Join(dir, "secret-pool.sock")
	testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM=unix:"+sock, "FCGISCOPE_QUEUE_TIMEOUT=0s")
	// nginx reports the client as coming from a public address.
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen, ExtraLocation: "fastcgi_param REMOTE_ADDR 203.0.113.7;"})
	for _, accept := range []string{"text/html", "application/json", "*/*"} {
		req, _ := http.NewRequest("GET", ngx.URL+"/hello.php?token=<script>alert(1)</script>", nil)
		req.Header.Set("Accept", accept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, leak := range []string{"secret-pool", dir, "hello.php", "<script>", "203.0.113.7", "127.0.0.1"} {
			if strings.Contains(string(body), leak) {
				t.Errorf("Accept %s: the page shows %q:\n%s", accept, leak, body)
			}
		}
		if resp.Header.Get("X-Fcgiscope-Cause") != "upstream_socket_missing" || !strings.Contains(string(body), resp.Header.Get("X-Fcgiscope-Request-Id")) {
			t.Errorf("Accept %s: minimal page lacks the cause or request id:\n%s", accept, body)
		}
	}
}

// Without FCGISCOPE_LISTEN_MODE the unix socket is not writable by every
// user on the machine.
func TestListenSocketIsNotWorldWritableByDefault(t *testing.T) {
	sock := filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+sock, "FCGISCOPE_UPSTREAM=127.0.0.1:9")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if mode := fi.Mode().Perm(); mode&0o002 != 0 || mode != 0o660 {
		t.Errorf("socket mode %04o, want 0660", mode)
	}
}
