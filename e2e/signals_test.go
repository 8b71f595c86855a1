package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// slowRequests sends n requests for a script that takes a while, and
// returns a function that waits for them and reports the failures.
func slowRequests(t *testing.T, url string, n int) func() []string {
	t.Helper()
	var mu sync.Mutex
	var failed []string
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := http.Get(url)
			var body []byte
			if err == nil {
				body, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			if err != nil || resp.StatusCode != 200 || string(body) != "slept\n" {
				mu.Lock()
				failed = append(failed, fmt.Sprintf("%v %q", err, body))
				mu.Unlock()
			}
		})
	}
	return func() []string { wg.Wait(); return failed }
}

// SIGHUP, SIGUSR1 and SIGUSR2 are what operators and process managers send
// a daemon to reload or reopen its logs: fcgiscope reads php-fpm's pool
// and nginx's configuration again and drops nothing in flight.
func TestReloadSignalsDropNothingAndReadTheConfigurationAgain(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 6})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_QUEUE_TIMEOUT=auto")
	wait := slowRequests(t, s.nginx.URL+"/sleep.php?s=1.5", 5)
	time.Sleep(300 * time.Millisecond)
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2} {
		if err := s.fcgiscope.Signal(sig); err != nil {
			t.Fatalf("sending %v: %v", sig, err)
		}
		waitLog(t, s.fcgiscope, func(m map[string]any) bool {
			return m["signal"] == sig.String() && strings.Contains(fmt.Sprint(m["message"]), "again")
		})
	}
	if failed := wait(); len(failed) > 0 {
		t.Errorf("%d requests in flight failed across the signals: %v", len(failed), failed)
	}

	// The pool gains a request_terminate_timeout; php-fpm and fcgiscope
	// are told to read it.
	conf, err := os.ReadFile(fpm.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fpm.ConfigPath, append(conf, "request_terminate_timeout = 1s\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fpm.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // php-fpm restarts its workers
	if err := s.fcgiscope.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(t, s.fcgiscope, func(m map[string]any) bool {
		return m["message"] == "read the php-fpm pool configuration" && m["request_terminate_timeout"] == "1s" // durations are logged as Go writes them, with their unit
	})
	e := s.getProblem(t, "/sleep.php?s=4", "worker_timeout_killed", 502)
	if e.problem.Evidence["request_terminate_timeout"] != "1s" {
		t.Errorf("the explanation does not use the pool read again: %v", e.problem.Evidence)
	}
}

// SIGQUIT stops nginx and php-fpm gracefully; fcgiscope too, letting the
// requests in flight finish, where Go's default would dump its stacks and
// fail them all.
func TestSIGQUITStopsGracefully(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	wait := slowRequests(t, s.nginx.URL+"/sleep.php?s=1", 3)
	time.Sleep(300 * time.Millisecond)
	s.fcgiscope.StopWith(syscall.SIGQUIT)
	if failed := wait(); len(failed) > 0 {
		t.Errorf("%d requests in flight failed on SIGQUIT: %v", len(failed), failed)
	}
	if st := s.fcgiscope.Cmd.ProcessState; st == nil || st.ExitCode() != 131 {
		t.Errorf("exit status %v, want 131 (a stop on SIGQUIT)", st)
	}
	if strings.Contains(s.fcgiscope.Output(), "goroutine ") {
		t.Errorf("SIGQUIT dumped stacks:\n%s", s.fcgiscope.Output())
	}
}
