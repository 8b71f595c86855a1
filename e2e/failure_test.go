package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/procfs"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// The seed story: nginx (through fcgiscope) is pointed at 127.0.0.1:9000
// while php-fpm listens on a unix socket. The answer must name the socket.
func TestRefusedTCPPortNamesTheSocketPHPFPMListensOn(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	dead := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	s := startFailStack(t, "tcp", dead)
	e := s.getProblem(t, "/hello.php", "upstream_refused", 502)
	if !hintsMention(e.problem.Hints, "FCGISCOPE_UPSTREAM="+fpm.Addr) || !hintsMention(e.problem.Hints, "fastcgi_pass "+fpm.Addr+";") {
		t.Errorf("hints do not name the working socket %s: %q", fpm.Addr, e.problem.Hints)
	}
	if !strings.Contains(e.problem.Detail, dead) {
		t.Errorf("detail does not name the dead address %s: %q", dead, e.problem.Detail)
	}
	if e.problem.Evidence["errno"] != "ECONNREFUSED" {
		t.Errorf("evidence errno = %q, want ECONNREFUSED", e.problem.Evidence["errno"])
	}
	// nginx's error log, where operators look first, carries it too.
	if log := s.nginx.ReadErrorLog(); !strings.Contains(log, "fcgiscope: upstream_refused: Nothing accepts connections on "+dead) {
		t.Errorf("nginx error log lacks fcgiscope's explanation:\n%s", log)
	}
}

func TestMissingSocketFile(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	s := startFailStack(t, "unix", "unix:"+filepath.Join(dir, "php-fpm.sock"))
	e := s.getProblem(t, "/hello.php", "upstream_socket_missing", 502)
	if e.problem.Evidence["errno"] != "ENOENT" {
		t.Errorf("errno evidence %q", e.problem.Evidence["errno"])
	}
}

func TestStaleSocketAfterPHPFPMWasKilled(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	// The workers hold the listening socket too: kill them all, as the
	// OOM killer or a kill -9 of the whole group would. The master is
	// stopped first so that it cannot start replacements.
	// A static pool forks its workers after its socket accepts: wait for
	// all of them, or one forked after the kill survives and answers. The
	// master is stopped first, so that it cannot replace them, and SIGSTOP
	// lands asynchronously.
	waitFor(t, "php-fpm's 4 workers", func() bool { return len(fpm.WorkerPIDs()) == 4 })
	syscall.Kill(fpm.Pid, syscall.SIGSTOP)
	waitFor(t, "php-fpm's master to stop", func() bool {
		st, err := procfs.ReadStat(fpm.Pid)
		return err == nil && st.State == 'T'
	})
	pids := fpm.WorkerPIDs()
	pids = append(pids, fpm.Pid)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	waitGone(t, pids)
	if _, err := os.Stat(fpm.Address); err != nil {
		t.Fatalf("want the socket file left behind: %v", err)
	}
	s := startFailStack(t, "tcp", fpm.Addr)
	e := s.getProblem(t, "/hello.php", "upstream_socket_stale", 502)
	if e.problem.Evidence["errno"] != "ECONNREFUSED" {
		t.Errorf("errno evidence %q", e.problem.Evidence["errno"])
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil || strings.Contains(string(b), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pid %d still alive", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestPermissionDeniedNamesOwnerModeAndUser(t *testing.T) {
	testbed.RequireFPM(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root to run fcgiscope as nobody against a root-owned socket")
	}
	fpm := testbed.StartFPM(t, testbed.FPMConfig{ListenMode: "0600"})
	// fcgiscope runs as nobody and listens on TCP, so that nginx (root)
	// reaches it while it cannot open php-fpm's 0600 root socket.
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	p := testbed.StartFcgiscopeAs(t, 65534, 65534,
		"FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr)
	s := &failStack{fcgiscope: p, listen: listen, nginx: testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen})}
	e := s.getProblem(t, "/hello.php", "upstream_permission_denied", 502)
	ev := e.problem.Evidence
	if ev["socket_owner"] != "root" || ev["socket_mode"] != "0600" || !strings.HasPrefix(ev["process_user"], "nobody") {
		t.Errorf("evidence does not name owner, mode and user: %v", ev)
	}
	if !hintsMention(e.problem.Hints, "listen.mode") {
		t.Errorf("hints do not say how to fix the socket permissions: %q", e.problem.Hints)
	}
}

func TestBacklogFullOnUnixSocketIsA503(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 1, ListenBacklog: 1})
	s := startFailStack(t, "tcp", fpm.Addr)
	// Keep the only worker busy and its listen queue full for as long as
	// the test runs: clients that are turned away come straight back.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(s.nginx.URL + "/sleep.php?s=1")
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	// Ask until the queue is seen full (the background clients keep it so
	// most of the time), then check that refusal the way a user would.
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest("GET", s.nginx.URL+"/hello.php", nil)
		req.Header.Set("Accept", "application/problem+json")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 503 {
				var p problem
				if err := json.Unmarshal(body, &p); err != nil {
					t.Fatalf("503 body is not problem+json: %v\n%s", err, body)
				}
				if resp.Header.Get("X-Fcgiscope-Cause") != "upstream_backlog_full" || p.Cause != "upstream_backlog_full" || len(p.Hints) == 0 {
					t.Errorf("cause header %q, body %s", resp.Header.Get("X-Fcgiscope-Cause"), body)
				}
				if resp.Header.Get("Retry-After") == "" {
					t.Error("a 503 without Retry-After")
				}
				if p.Evidence["errno"] != "EAGAIN" {
					t.Errorf("errno evidence %q", p.Evidence["errno"])
				}
				if line := s.waitLogLine(t, p.RequestID); line["cause"] != "upstream_backlog_full" {
					t.Errorf("log line: %v", line)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the listen queue never filled")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHTTPServerOnThePortIsNotFastCGI(t *testing.T) {
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello from a web server"))
	}))
	defer web.Close()
	s := startFailStack(t, "unix", strings.TrimPrefix(web.URL, "http://"))
	e := s.getProblem(t, "/hello.php", "upstream_not_fastcgi", 502)
	if !strings.Contains(e.problem.Detail, "HTTP server") {
		t.Errorf("detail does not say an HTTP server answered: %q", e.problem.Detail)
	}
}

// A TCP listener whose accept queue is full drops new connections, as a
// saturated php-fpm does on TCP: the dial times out.
func TestConnectTimeoutWhenTheAcceptQueueIsFull(t *testing.T) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	port := testbed.FreePort(t)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// Fill the queue; nobody ever accepts.
	for range 3 {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			defer c.Close()
		}
	}
	s := startFailStack(t, "tcp", addr, "FCGISCOPE_CONNECT_TIMEOUT=300ms")
	s.getProblem(t, "/hello.php", "upstream_connect_timeout", 504)
}

func TestUnresolvableHostName(t *testing.T) {
	s := startFailStack(t, "tcp", "php-fpm.invalid:9000")
	e := s.getProblem(t, "/hello.php", "upstream_dns_failed", e2eDNSStatus(t))
	if !strings.Contains(e.problem.Detail, "php-fpm.invalid") {
		t.Errorf("detail does not name the host: %q", e.problem.Detail)
	}
}

// e2eDNSStatus is 502 for a name that does not exist; where the machine has
// no resolver at all the lookup may time out instead, which is a 504.
func e2eDNSStatus(t *testing.T) int {
	_, err := net.LookupHost("php-fpm.invalid")
	var de *net.DNSError
	if err != nil && errors.As(err, &de) && de.IsTimeout {
		return 504
	}
	return 502
}

func TestReadTimeoutIsA504(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_READ_TIMEOUT=500ms")
	e := s.getProblem(t, "/sleep.php?s=3", "upstream_read_timeout", 504)
	if !strings.Contains(e.problem.Detail, "500ms") {
		t.Errorf("detail does not name the timeout: %q", e.problem.Detail)
	}
}

func TestNginxGivingUpIsLoggedAsClientAborted(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr)
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen, ReadTimeout: time.Second})
	r := do(t, "GET", ngx.URL+"/sleep.php?s=3", nil)
	if r.status != 504 {
		t.Errorf("nginx answered %d, want its own 504 after fastcgi_read_timeout", r.status)
	}
	line := waitLog(t, p, func(m map[string]any) bool { return m["uri"] == "/sleep.php?s=3" })
	if line["cause"] != "client_aborted" || line["status"] != float64(499) {
		t.Errorf("log line cause %v status %v, want client_aborted 499: %v", line["cause"], line["status"], line)
	}
	if d, _ := line["duration_ms"].(float64); d < 900 || d > 2500 {
		t.Errorf("duration_ms %v, want about nginx's 1 s timeout", line["duration_ms"])
	}
	// fcgiscope went on as php-fpm would, and saw the script end.
	if detail, _ := line["detail"].(string); !strings.Contains(detail, "PHP went on and finished the script") {
		t.Errorf("detail %q does not say how the script ended", detail)
	}
}
