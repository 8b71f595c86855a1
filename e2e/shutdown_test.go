package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// TestSIGTERMLetsARequestInFlightFinish stops fcgiscope while nginx waits for
// a slow script: the client still gets the whole answer, fcgiscope exits 143,
// and its unix socket is gone.
func TestSIGTERMLetsARequestInFlightFinish(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	sock := filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+sock, "FCGISCOPE_LISTEN_MODE=0666", "FCGISCOPE_UPSTREAM="+fpm.Addr)
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: "unix:" + sock})

	got := make(chan result, 1)
	go func() { got <- do(t, "GET", ngx.URL+"/sleep.php?s=1.5", nil) }()
	time.Sleep(500 * time.Millisecond)
	if err := syscall.Kill(p.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r.status != 200 || string(r.body) != "slept\n" {
			t.Errorf("request in flight during SIGTERM: %d %q, want 200 \"slept\\n\"", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight never finished")
	}
	p.Stop()
	if code := p.Cmd.ProcessState.ExitCode(); code != 143 {
		t.Errorf("exit code %d, want 143 (stopped by SIGTERM)\n%s", code, p.Output())
	}
	r := do(t, "GET", ngx.URL+"/hello.php", nil)
	if r.status != 502 {
		t.Errorf("after shutdown nginx got %d, want 502 (nobody listening)", r.status)
	}
	if _, err := os.Lstat(sock); err == nil {
		t.Errorf("the listen socket %s was left behind", sock)
	}
}

// A second SIGTERM does not wait for the drain: the operator means it.
func TestSecondSIGTERMStopsAtOnce(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	sock := filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+sock, "FCGISCOPE_LISTEN_MODE=0666", "FCGISCOPE_UPSTREAM="+fpm.Addr)
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: "unix:" + sock})
	go func() {
		if resp, err := http.Get(ngx.URL + "/sleep.php?s=5"); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(500 * time.Millisecond)
	syscall.Kill(p.Pid, syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	syscall.Kill(p.Pid, syscall.SIGTERM)
	p.Stop()
	if waited := time.Since(start); waited > 2*time.Second {
		t.Errorf("the second SIGTERM took %s to stop fcgiscope, want at once", waited)
	}
	if code := p.Cmd.ProcessState.ExitCode(); code != 143 {
		t.Errorf("exit code %d, want 143", code)
	}
	if !strings.Contains(p.Output(), "second terminated, stopping now") {
		t.Errorf("no word of the second signal:\n%s", p.Output())
	}
}
