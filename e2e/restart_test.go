package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// TestRestartOnAnInheritedSocketRefusesNothing hands fcgiscope a listening
// socket the way systemd's socket activation does, and replaces the process
// while requests flow: the socket stays open between the two, so no request
// is refused.
func TestRestartOnAnInheritedSocketRefusesNothing(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	port := testbed.FreePort(t)
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // the duplicate in lnFile keeps the socket listening
	defer lnFile.Close()
	bin := testbed.BuildFcgiscope(t)

	start := func() *exec.Cmd {
		// LISTEN_PID must name the process itself; the shell's pid is
		// the one fcgiscope keeps after exec.
		cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve`, bin)
		cmd.Env = append(os.Environ(), "FCGISCOPE_UPSTREAM="+fpm.Addr, "FCGISCOPE_ADMIN_LISTEN=", "FCGISCOPE_LOG_LEVEL=warn")
		cmd.ExtraFiles = []*os.File{lnFile}
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		return cmd
	}
	first := start()
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: fmt.Sprintf("127.0.0.1:%d", port)})

	stop := make(chan struct{})
	var mu sync.Mutex
	var sent int
	var failed []string
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(ngx.URL + "/hello.php")
				var body []byte
				if err == nil {
					body, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				sent++
				if err != nil || resp.StatusCode != 200 || string(body) != "hello from php\n" {
					failed = append(failed, fmt.Sprintf("%v %q", err, body))
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	// The new process starts on the same socket before the old one
	// drains and leaves.
	second := start()
	time.Sleep(300 * time.Millisecond)
	first.Process.Signal(syscall.SIGTERM)
	if err := first.Wait(); err != nil && !strings.Contains(err.Error(), "143") {
		t.Logf("first fcgiscope exited: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	second.Process.Signal(syscall.SIGTERM)
	second.Wait()
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed across the restart, e.g. %s", len(failed), sent, failed[0])
	}
	t.Logf("%d requests across a restart, none failed", sent)
}
