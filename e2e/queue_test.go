package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// burst sends n concurrent GETs and returns the statuses.
func burst(t *testing.T, url string, n int) []int {
	t.Helper()
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(url)
			if err != nil {
				statuses[i] = -1
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	return statuses
}

func count(statuses []int, code int) int {
	n := 0
	for _, s := range statuses {
		if s == code {
			n++
		}
	}
	return n
}

// A burst larger than php-fpm's pool and listen queue: nginx alone turns
// the overflow into 502s; through fcgiscope the overflow waits its turn.
func TestBurstWaitsInFcgiscopeInsteadOfFailing(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 2, ListenBacklog: 1})
	direct := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: fpm.Addr})
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr,
		"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_QUEUE_TIMEOUT=10s")
	through := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen})

	got := burst(t, direct.URL+"/sleep.php?s=0.3", 20)
	if count(got, 200) == 20 {
		t.Logf("nginx -> php-fpm directly served the whole burst this time: %v", got)
	} else {
		t.Logf("nginx -> php-fpm directly: %d of 20 failed", 20-count(got, 200))
	}
	got = burst(t, through.URL+"/sleep.php?s=0.3", 20)
	if count(got, 200) != 20 {
		t.Errorf("through fcgiscope: %v, want all 200", got)
	}
	line := waitLog(t, p, func(m map[string]any) bool { q, _ := m["queue_ms"].(float64); return q > 100 })
	if line["outcome"] != "ok" {
		t.Errorf("a queued request: %v", line)
	}
}

// A saturated pool that stays saturated past the queue timeout gives an
// explained 503 with Retry-After.
func TestQueueTimeoutIsAnExplained503(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 1})
	s := startFailStack(t, "tcp", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_QUEUE_TIMEOUT=300ms")
	go http.Get(s.nginx.URL + "/sleep.php?s=2")
	time.Sleep(300 * time.Millisecond)
	e := s.getProblem(t, "/hello.php", "queue_timeout", 503)
	if e.header.Get("Retry-After") == "" || e.problem.Evidence["max_conns"] != "1" {
		t.Errorf("Retry-After %q, evidence %v", e.header.Get("Retry-After"), e.problem.Evidence)
	}
}

// steadyLoad is traffic running in the background.
type steadyLoad struct {
	stop   chan struct{}
	done   chan struct{}
	sent   int
	failed []string
}

// startSteady sends sequential GETs of hello.php from several clients until
// the load is stopped.
func startSteady(url string, clients int) *steadyLoad {
	l := &steadyLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() { l.sent, l.failed = steady(url, clients, l.stop); close(l.done) }()
	return l
}

// Stop ends the load and returns how many requests were sent and which
// failed.
func (l *steadyLoad) Stop() (sent int, failed []string) {
	close(l.stop)
	<-l.done
	return l.sent, l.failed
}

// countLines counts the lines of out that contain s.
func countLines(out, s string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// steady sends sequential GETs from several clients until stop is closed
// and returns how many were sent and which failed.
func steady(url string, clients int, stop <-chan struct{}) (sent int, failed []string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Get(url)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				mu.Lock()
				sent++
				if err != nil || resp.StatusCode != 200 || string(body) != "hello from php\n" {
					failed = append(failed, fmt.Sprintf("%v %v %q", err, resp.StatusCode, body))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return sent, failed
}

// php-fpm reloads (SIGUSR2) and is stopped and started again while requests
// flow: through fcgiscope every request is served.
func TestReloadAndRestartOfPHPFPMLoseNoRequest(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 4})
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr,
		"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_QUEUE_TIMEOUT=10s")
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen})

	load := startSteady(ngx.URL+"/hello.php", 4)
	time.Sleep(300 * time.Millisecond)
	for range 3 {
		if err := fpm.Signal(syscall.SIGUSR2); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond)
	}
	// A full stop and a start with the same configuration, as a package
	// upgrade does.
	fpm.Stop()
	time.Sleep(300 * time.Millisecond)
	fpm.Restart(t)
	time.Sleep(500 * time.Millisecond)
	sent, failed := load.Stop()
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed across reloads and a restart, e.g. %v", len(failed), sent, failed[0])
	}
	retried, resent := countLines(p.Output(), `"dial_attempts"`), countLines(p.Output(), `"resent"`)
	t.Logf("%d requests, all served; %d needed more than one connection attempt, %d were sent again after php-fpm closed them while reloading", sent, retried, resent)
}
