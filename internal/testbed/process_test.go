package testbed

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/procfs"
)

// Environment variables that turn the test binary into a helper process.
const (
	fakeServeEnv  = "TESTBED_FAKE_SERVE"
	orphanTestEnv = "TESTBED_ORPHAN_HELPER"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeServeEnv) == "1" {
		fakeServe()
		return
	}
	os.Exit(m.Run())
}

// fakeServe stands in for `fcgiscope serve`: it listens on FCGISCOPE_LISTEN,
// logs JSON lines to stdout and stderr, and exits cleanly on SIGTERM.
func fakeServe() {
	network, address, err := parseNginxAddr(os.Getenv("FCGISCOPE_LISTEN"))
	if err != nil {
		fmt.Fprintf(os.Stderr, `{"level":"fatal","msg":%q}`+"\n", err.Error())
		os.Exit(2)
	}
	if os.Getenv("FAKE_DELAY") != "" { // Exercise the readiness polling.
		time.Sleep(300 * time.Millisecond)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	ln, err := net.Listen(network, address)
	if err != nil {
		fmt.Fprintf(os.Stderr, `{"level":"fatal","msg":%q}`+"\n", err.Error())
		os.Exit(2)
	}
	fmt.Printf(`{"level":"info","msg":"listening","args":%q}`+"\n", strings.Join(os.Args[1:], " "))
	fmt.Fprintf(os.Stderr, `{"level":"info","msg":"upstream","upstream":%q}`+"\n", os.Getenv("FCGISCOPE_UPSTREAM"))
	<-sigs
	ln.Close()
	fmt.Println(`{"level":"info","msg":"shutdown"}`)
	os.Exit(0)
}

func TestStartServe(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:" + strconv.Itoa(FreePort(t)), "unix:" + ShortTempDir(t) + "/s.sock"} {
		t.Run(listen, func(t *testing.T) {
			p := startServe(t, os.Args[0], nil, []string{
				fakeServeEnv + "=1", "FAKE_DELAY=1", "FCGISCOPE_LISTEN=ignored:1",
				"FCGISCOPE_LISTEN=" + listen, "FCGISCOPE_UPSTREAM=unix:/x.sock",
			})
			// The fake writes its lines just after it listens, so they
			// may come a moment after the port is ready.
			started := func(out string) bool {
				return strings.Contains(out, `"msg":"listening","args":"serve"`) && strings.Contains(out, `"upstream":"unix:/x.sock"`)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !started(p.Output()) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if out := p.Output(); !started(out) {
				t.Errorf("output lacks the startup lines:\n%s", out)
			}
			p.Stop()
			p.Stop() // Idempotent.
			if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
			if !strings.Contains(p.Output(), `"msg":"shutdown"`) {
				t.Errorf("output lacks the shutdown line:\n%s", p.Output())
			}
			assertGone(t, "fake fcgiscope", []int{p.Pid})
		})
	}
}

func TestLastEnv(t *testing.T) {
	env := []string{"A=1", "FCGISCOPE_LISTEN=x:1", "FCGISCOPE_LISTENER=no", "FCGISCOPE_LISTEN=y:2"}
	if got := lastEnv(env, "FCGISCOPE_LISTEN"); got != "y:2" {
		t.Errorf("lastEnv = %q, want y:2", got)
	}
	if got := lastEnv(env, "B"); got != "" {
		t.Errorf("lastEnv of a missing key = %q, want \"\"", got)
	}
}

// TestNginxStopEscalates checks the forced path of Nginx.Stop: a request
// that does not finish keeps nginx from stopping gracefully.
func TestNginxStopEscalates(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 5 s")
	}
	t.Parallel()
	fpm := StartFPM(t, FPMConfig{MaxChildren: 2})
	ngx := StartNginx(t, NginxConfig{FastCGIPass: fpm.Addr})
	resp, err := http.Get(ngx.URL + "/sleep.php?s=60&flush=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "started\n" {
		t.Fatalf("first line = %q, %v", line, err)
	}

	procs := append(procfs.Children(ngx.Pid), procfs.IDOf(ngx.Pid))
	start := time.Now()
	ngx.Stop()
	if d := time.Since(start); d < 5*time.Second || d > 7*time.Second {
		t.Errorf("Stop took %v, want the 5 s grace period and a kill", d)
	}
	assertDead(t, "nginx", procs)
}

// TestFPMStopEscalates checks the forced path of FPM.Stop. php-fpm's own
// graceful stop does not wait for running requests (process_control_timeout
// is 0), so the master is frozen with SIGSTOP instead: it then ignores SIGQUIT
// and SIGTERM, and its workers survive the final SIGKILL.
func TestFPMStopEscalates(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 7 s")
	}
	t.Parallel()
	fpm := StartFPM(t, FPMConfig{MaxChildren: 2})
	procs := append(procfs.Children(fpm.Pid), procfs.IDOf(fpm.Pid))
	if err := fpm.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fpm.Stop()
	if d := time.Since(start); d < 7*time.Second || d > 9*time.Second {
		t.Errorf("Stop took %v, want 5 s after SIGQUIT, 2 s after SIGTERM, and a kill", d)
	}
	assertDead(t, "php-fpm", procs)
}

// TestOrphanHelper is run by TestParentDeath in a child test binary: it
// starts php-fpm and exits without running cleanups, like a test binary that
// hits its -timeout.
func TestOrphanHelper(t *testing.T) {
	if os.Getenv(orphanTestEnv) != "1" {
		t.Skip("helper for TestParentDeath")
	}
	fpm := StartFPM(t, FPMConfig{MaxChildren: 2})
	fmt.Printf("DIR %s\nPIDS", fpm.Dir)
	for _, id := range append(procfs.Children(fpm.Pid), procfs.IDOf(fpm.Pid)) {
		fmt.Printf(" %d:%s", id.PID, id.Start)
	}
	fmt.Println()
	os.Exit(0)
}

// TestParentDeath checks that php-fpm and its workers go away when the test
// binary dies without cleaning up.
func TestParentDeath(t *testing.T) {
	t.Parallel()
	RequireFPM(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestOrphanHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), orphanTestEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	var ids []procfs.ID
	for _, line := range strings.Split(string(out), "\n") {
		if dir, ok := strings.CutPrefix(line, "DIR "); ok {
			t.Cleanup(func() { os.RemoveAll(dir) })
		}
		if rest, ok := strings.CutPrefix(line, "PIDS "); ok {
			for _, f := range strings.Fields(rest) {
				pid, start, _ := strings.Cut(f, ":")
				n, err := strconv.Atoi(pid)
				if err != nil {
					t.Fatalf("bad helper output %q", line)
				}
				ids = append(ids, procfs.ID{PID: n, Start: start})
			}
		}
	}
	if len(ids) != 3 {
		t.Fatalf("helper reported %d processes, want 3:\n%s", len(ids), out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range ids {
		for id.Alive() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	assertDead(t, "orphaned php-fpm", ids)
}

// assertDead checks that none of ids is running. Unlike assertGone it accepts
// zombies, which is what processes killed after being orphaned become when
// init does not reap them.
func assertDead(t *testing.T, what string, ids []procfs.ID) {
	t.Helper()
	for _, id := range ids {
		if id.Alive() {
			t.Errorf("%s pid %d is still running after Stop", what, id.PID)
		}
	}
}
