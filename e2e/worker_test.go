package e2e

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// The seed's other story: php-fpm's request_terminate_timeout kills an API
// call. The replacement says so, with the setting, its value and its file.
func TestTerminateTimeoutKillIsExplainedWithTheSetting(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{RequestTerminateTimeout: time.Second})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	for _, path := range []string{"/sleep.php?s=3", "/sleep.php?s=3&flush=1&stream=0"} {
		t.Run(path, func(t *testing.T) {
			e := s.getProblem(t, path, "worker_timeout_killed", 502)
			ev := e.problem.Evidence
			if ev["request_terminate_timeout"] != "1s" || !strings.HasPrefix(ev["config"], fpm.ConfigPath+":") || ev["pool"] != "www" {
				t.Errorf("evidence does not cite the setting and its file: %v", ev)
			}
			if !hintsMention(e.problem.Hints, "request_terminate_timeout") {
				t.Errorf("hints: %q", e.problem.Hints)
			}
			if e.log["replaced"] != true || e.log["truncated"] != false {
				t.Errorf("log line replaced %v truncated %v, want a replaced response", e.log["replaced"], e.log["truncated"])
			}
		})
	}
}

func TestWorkerKilledWithoutPoolConfigIsWorkerDied(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG=/nonexistent/php-fpm.conf")
	for _, sig := range []int{9, 11} {
		t.Run(fmt.Sprintf("signal %d", sig), func(t *testing.T) {
			e := s.getProblem(t, fmt.Sprintf("/crash.php?sig=%d", sig), "worker_died", 502)
			if !strings.Contains(e.problem.Detail, "without sending END_REQUEST") {
				t.Errorf("detail: %q", e.problem.Detail)
			}
		})
	}
}

// brokenTransfer fetches url and reports whether the client saw the
// transfer fail, and what it got.
func brokenTransfer(t *testing.T, url string) (status int, body string, broken bool) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", true
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err != nil
}

// A worker that dies after its response started must never give the client
// a complete-looking 200, over any transport, with keep_conn off or on.
func TestWorkerDeathAfterOutputBreaksTheClientTransfer(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{RequestTerminateTimeout: time.Second})
	for _, down := range []string{"tcp", "unix"} {
		t.Run(down, func(t *testing.T) {
			listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
			if down == "unix" {
				listen = "unix:" + filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
			}
			p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_LISTEN_MODE=0666",
				"FCGISCOPE_UPSTREAM="+fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
			for _, keep := range []bool{false, true} {
				ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen, KeepConn: keep})
				for _, script := range []string{"/crash.php?sig=9&flush=1", "/sleep.php?s=3&flush=1"} {
					path := fmt.Sprintf("%s&run=%s-%v", script, down, keep)
					t.Run(fmt.Sprintf("keep_conn=%v%s", keep, script), func(t *testing.T) {
						status, body, broken := brokenTransfer(t, ngx.URL+path)
						if !broken {
							t.Fatalf("the client got a complete-looking response: %d %q", status, body)
						}
						if status == 200 && !strings.HasPrefix(body, "partial") && !strings.HasPrefix(body, "started") {
							t.Errorf("body %q lacks the part that was sent", body)
						}
						line := waitLog(t, p, func(m map[string]any) bool {
							return m["uri"] == path && m["message"] == "request" && m["conn"] != nil && m["truncated"] == true
						})
						if line["cause"] != "worker_died" && line["cause"] != "worker_timeout_killed" && line["cause"] != "worker_crashed" {
							t.Errorf("cause %v", line["cause"])
						}
						if n, _ := line["bytes_out"].(float64); n == 0 {
							t.Errorf("bytes_out %v: the delivered part is not counted", line["bytes_out"])
						}
						if log := ngx.ReadErrorLog(); !strings.Contains(log, "response is incomplete") {
							t.Errorf("nginx's error log does not say the response was cut:\n%s", log)
						}
					})
				}
			}
		})
	}
}

// With php-fpm's error log at hand, a crash is named with its signal and
// the worker's pid.
func TestWorkerCrashIsNamedFromPHPFPMsLog(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	for _, tt := range []struct {
		sig  int
		name string
	}{{9, "SIGKILL"}, {11, "SIGSEGV"}} {
		t.Run(tt.name, func(t *testing.T) {
			e := s.getProblem(t, fmt.Sprintf("/crash.php?sig=%d", tt.sig), "worker_crashed", 502)
			if e.problem.Evidence["signal"] != tt.name || !strings.Contains(e.problem.Detail, tt.name) {
				t.Errorf("signal not named: %q %v", e.problem.Detail, e.problem.Evidence)
			}
			pid, _ := e.log["fpm_pid"].(float64)
			if pid == 0 || !strings.Contains(e.problem.Evidence["fpm_log_line"], fmt.Sprintf("child %d exited on signal %d", int(pid), tt.sig)) {
				t.Errorf("fpm_pid %v does not match the log line %q", e.log["fpm_pid"], e.problem.Evidence["fpm_log_line"])
			}
		})
	}
	t.Run("terminate timeout from the log", func(t *testing.T) {
		fpm := testbed.StartFPM(t, testbed.FPMConfig{RequestTerminateTimeout: time.Second})
		s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
		e := s.getProblem(t, "/sleep.php?s=3", "worker_timeout_killed", 502)
		if !strings.Contains(e.problem.Evidence["fpm_log_line"], "execution timed out") || e.log["fpm_pid"] == nil {
			t.Errorf("not taken from the log: %v", e.problem.Evidence)
		}
	})
}

// With the status page and the slowlog, a request killed for running too
// long is tied to its worker and shown where it was stuck.
func TestKilledRequestShowsWhereItWasStuck(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{RequestTerminateTimeout: 2 * time.Second, SlowlogTimeout: time.Second, StatusPath: "/fpm-status"})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_FPM_STATUS_INTERVAL=300ms")
	e := s.getProblem(t, "/sleep.php?s=5", "worker_timeout_killed", 502)
	if !strings.Contains(e.problem.Evidence["slowlog"], "sleep.php") {
		t.Errorf("no slowlog stack in the evidence: %v", e.problem.Evidence)
	}
	if !strings.Contains(e.problem.Detail, "slowlog caught it in") {
		t.Errorf("detail does not say where the script was: %q", e.problem.Detail)
	}
}

// A saturated pool's 503 says so from php-fpm's own status page.
func TestQueueTimeoutNamesTheBusyWorkers(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 1, StatusPath: "/fpm-status"})
	s := startFailStack(t, "tcp", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_QUEUE_TIMEOUT=500ms", "FCGISCOPE_FPM_STATUS_INTERVAL=200ms")
	go http.Get(s.nginx.URL + "/sleep.php?s=3")
	time.Sleep(1200 * time.Millisecond)
	e := s.getProblem(t, "/hello.php", "queue_timeout", 503)
	// With one worker the status page itself waits for it, which is
	// what the explanation must say.
	if !strings.Contains(e.problem.Detail, "no worker was free") {
		t.Errorf("detail does not say the pool was saturated: %q", e.problem.Detail)
	}
}
