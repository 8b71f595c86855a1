package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// Deleting a pod of examples/kubernetes/deployment.yaml, where fcgiscope is a
// native sidecar (an init container with restartPolicy: Always, Kubernetes
// 1.29+), goes in this order:
//
//  1. the pod leaves the Service's endpoints; the ingress and kube-proxy
//     stop sending it new requests a moment later;
//  2. at the same time the main containers' preStop hooks run: nginx and
//     php-fpm sleep while the endpoint drains;
//  3. each main container gets its stop signal, SIGQUIT for both (their
//     images' STOPSIGNAL), which both take as "finish what you are doing":
//     php-fpm lets busy workers finish for process_control_timeout;
//  4. only when every main container has exited does the kubelet send
//     SIGTERM to the sidecar, fcgiscope.
//
// The tests below play that order with real processes, with the manifest's
// times scaled down: a drain (preStop sleep) of podDrain instead of 5 s.
const (
	// podDrain is the preStop sleep.
	podDrain = 1500 * time.Millisecond
	// podPropagation is how long new requests keep arriving after the
	// endpoint is removed (kube-proxy and the ingress learn it late).
	podPropagation = 500 * time.Millisecond
	// podSlow is how long the slow requests take: they are still running
	// in php-fpm when the stop signals come.
	podSlow = 3 * time.Second
	// podTerminate and podControl are the pool's request_terminate_timeout
	// and the global process_control_timeout, in the manifest's relation:
	// php-fpm waits on SIGQUIT longer than any request may run.
	podTerminate = 8 * time.Second
	podControl   = 10 * time.Second
)

// pod is nginx -> fcgiscope -> php-fpm over unix sockets, as the pod of
// examples/kubernetes runs them.
type pod struct {
	fpm       *testbed.FPM
	nginx     *testbed.Nginx
	fcgiscope *testbed.Process
}

func startPod(t *testing.T, processControlTimeout time.Duration, env ...string) *pod {
	t.Helper()
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	p := &pod{fpm: testbed.StartFPM(t, testbed.FPMConfig{
		MaxChildren:             8,
		RequestTerminateTimeout: podTerminate,
		ProcessControlTimeout:   processControlTimeout,
		CatchWorkersOutput:      true,
	})}
	sock := filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	// nginx keeps connections to fcgiscope open, as the example's site does.
	p.nginx = testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: "unix:" + sock, KeepConn: true})
	p.fcgiscope = testbed.StartFcgiscope(t, append([]string{
		"FCGISCOPE_LISTEN=unix:" + sock,
		"FCGISCOPE_LISTEN_MODE=0666",
		"FCGISCOPE_UPSTREAM=" + p.fpm.Addr,
		"FCGISCOPE_FPM_CONFIG=" + p.fpm.ConfigPath,
		"FCGISCOPE_NGINX_CONFIG=" + p.nginx.ConfigPath,
		"FCGISCOPE_SHUTDOWN_TIMEOUT=30s",
	}, env...)...)
	return p
}

// podTraffic is the pod's clients: slow requests that are busy in php-fpm
// when the stop signals come, and a steady stream of fast ones until the
// endpoint is gone.
type podTraffic struct {
	url    string
	client *http.Client
	stop   atomic.Bool
	wg     sync.WaitGroup

	mu       sync.Mutex
	started  int
	slowDone []time.Time
	failed   []string
}

func startTraffic(t *testing.T, url string, slow, streams int) *podTraffic {
	t.Helper()
	tr := &podTraffic{url: url, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streams}}}
	t.Cleanup(tr.client.CloseIdleConnections)
	slowPath := fmt.Sprintf("/sleep.php?s=%g", podSlow.Seconds())
	for range slow {
		tr.wg.Go(func() {
			tr.get(slowPath, "slept\n")
			tr.mu.Lock()
			tr.slowDone = append(tr.slowDone, time.Now())
			tr.mu.Unlock()
		})
	}
	for range streams {
		tr.wg.Go(func() {
			for !tr.stop.Load() {
				tr.get("/hello.php", "hello from php\n")
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	return tr
}

// get sends one request and records it as failed unless it is a whole 200
// with the body want.
func (tr *podTraffic) get(path, want string) {
	tr.mu.Lock()
	tr.started++
	tr.mu.Unlock()
	status := 0
	resp, err := tr.client.Get(tr.url + path)
	var body []byte
	if err == nil {
		status = resp.StatusCode
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err != nil || status != 200 || string(body) != want {
		tr.mu.Lock()
		tr.failed = append(tr.failed, fmt.Sprintf("%s: %d %v %q", path, status, err, body))
		tr.mu.Unlock()
	}
}

// wait stops the fast stream, waits for every request and returns how many
// were sent and which failed.
func (tr *podTraffic) wait() (started int, failed []string) {
	tr.stop.Store(true)
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.started, tr.failed
}

// waitExit waits up to within for alive to turn false and returns how long
// that took.
func waitExit(name string, within time.Duration, alive func() bool) (time.Duration, error) {
	start := time.Now()
	for alive() {
		if time.Since(start) > within {
			return 0, fmt.Errorf("%s still runs %s after its stop signal", name, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start), nil
}

// mustExit is waitExit for the test's goroutine.
func mustExit(t *testing.T, name string, within time.Duration, alive func() bool) time.Duration {
	t.Helper()
	d, err := waitExit(name, within, alive)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (p *pod) fpmRuns() bool {
	return !errors.Is(p.fpm.Signal(syscall.Signal(0)), os.ErrProcessDone)
}

func (p *pod) nginxRuns() bool {
	return !errors.Is(syscall.Kill(p.nginx.Pid, 0), syscall.ESRCH)
}

// requestLines returns fcgiscope's per-request log lines.
func requestLines(p *testbed.Process) []map[string]any {
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.Output()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["message"] == "request" {
			lines = append(lines, m)
		}
	}
	return lines
}

// TestKubernetesPodDeletionFailsNoRequest deletes the example's pod the way
// the kubelet does and checks that every request that reached it got its
// whole answer: the drain covers the endpoint's removal, php-fpm's SIGQUIT
// with process_control_timeout lets busy workers finish, nginx's SIGQUIT
// lets it pass their answers on, and fcgiscope, stopped last, still relays
// them all.
func TestKubernetesPodDeletionFailsNoRequest(t *testing.T) {
	p := startPod(t, podControl)
	tr := startTraffic(t, p.nginx.URL, 6, 3)
	time.Sleep(300 * time.Millisecond)

	// 1, 2: the pod is deleted; the endpoint drains while the preStop
	// hooks sleep.
	deleted := time.Now()
	time.Sleep(podPropagation)
	tr.stop.Store(true)
	time.Sleep(podDrain - podPropagation)

	// 3: the main containers' stop signals, at once.
	quit := time.Now()
	if err := p.fpm.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(p.nginx.Pid, syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	var fpmExit, nginxExit time.Duration
	var fpmErr, nginxErr error
	var wg sync.WaitGroup
	wg.Go(func() { fpmExit, fpmErr = waitExit("php-fpm", podControl+2*time.Second, p.fpmRuns) })
	wg.Go(func() { nginxExit, nginxErr = waitExit("nginx", podControl+2*time.Second, p.nginxRuns) })
	wg.Wait()
	if err := errors.Join(fpmErr, nginxErr); err != nil {
		t.Fatal(err)
	}

	// 4: the sidecar's SIGTERM, once both have exited.
	sigterm := time.Now()
	p.fcgiscope.Stop()
	scopeExit := time.Since(sigterm)

	started, failed := tr.wait()
	t.Logf("deleted at 0; stream stopped at %s; SIGQUIT at %s; php-fpm exited %s later, nginx %s later; fcgiscope exited %s after SIGTERM; whole shutdown %s; %d requests",
		podPropagation, quit.Sub(deleted).Round(time.Millisecond), fpmExit.Round(time.Millisecond), nginxExit.Round(time.Millisecond),
		scopeExit.Round(time.Millisecond), time.Since(deleted).Round(time.Millisecond), started)
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed: %v", len(failed), started, failed)
	}
	if started < 20 {
		t.Errorf("only %d requests were sent: the test did not load the pod", started)
	}
	tr.mu.Lock()
	for _, done := range tr.slowDone {
		if !done.After(quit) {
			t.Errorf("a slow request finished before the stop signals (%s before): it was not in flight", quit.Sub(done))
		}
	}
	tr.mu.Unlock()

	// php-fpm stopped by itself, well before process_control_timeout: its
	// workers finished their scripts (the bodies say "slept") and exited.
	// It logs how each worker ended only at level debug while it stops.
	if log := p.fpm.ReadErrorLog(); !strings.Contains(log, "Finishing ...") || !strings.Contains(log, "exiting, bye-bye!") {
		t.Errorf("php-fpm did not stop gracefully:\n%s", log)
	}
	if fpmExit >= podControl {
		t.Errorf("php-fpm took %s to stop: it waited for process_control_timeout", fpmExit)
	}
	if code := p.fcgiscope.Cmd.ProcessState.ExitCode(); code != 143 {
		t.Errorf("fcgiscope exited %d, want 143 (stopped by SIGTERM)", code)
	}
	if scopeExit > time.Second {
		t.Errorf("fcgiscope took %s to stop after the others: nothing was left in flight", scopeExit)
	}
	lines := requestLines(p.fcgiscope)
	if len(lines) != started {
		t.Errorf("fcgiscope logged %d requests, %d were sent", len(lines), started)
	}
	for _, l := range lines {
		if l["outcome"] != "ok" || l["status"] != float64(200) {
			t.Errorf("fcgiscope logged a request as %v %v: %v", l["status"], l["outcome"], l)
		}
	}
	if out := p.fcgiscope.Output(); strings.Contains(out, "cut off") {
		t.Errorf("fcgiscope cut requests off:\n%s", out)
	}
}

// TestKubernetesPHPFPMStoppedWithoutWaitingCutsRequests is the control:
// the same deletion with php-fpm stopped in either way that does not wait
// for busy workers fails the requests in flight. php-fpm's master answers
// SIGQUIT by sending its workers SIGQUIT and, process_control_timeout later,
// SIGTERM, which kills a worker mid-request; with the default of 0 that is
// at once. A SIGTERM to the master (the stop signal of an image without
// STOPSIGNAL SIGQUIT, right after a preStop hook's "kill -QUIT 1") turns a
// graceful stop into a fast one, and the workers get SIGTERM too. While it
// stops, php-fpm logs its workers' deaths only at level debug.
func TestKubernetesPHPFPMStoppedWithoutWaitingCutsRequests(t *testing.T) {
	for _, tt := range []struct {
		name    string
		control time.Duration
		signals []syscall.Signal
	}{
		{"SIGQUIT without process_control_timeout", 0, []syscall.Signal{syscall.SIGQUIT}},
		{"SIGQUIT then SIGTERM", podControl, []syscall.Signal{syscall.SIGQUIT, syscall.SIGTERM}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// fcgiscope takes a connection that a stopping php-fpm closed
			// without a word for one a restart closed: it sends the GET
			// again and waits up to FCGISCOPE_QUEUE_TIMEOUT for php-fpm to
			// come back, which in a pod it never does. 0 has it answer at
			// once, so that the control ends quickly.
			p := startPod(t, tt.control, "FCGISCOPE_QUEUE_TIMEOUT=0s")
			tr := startTraffic(t, p.nginx.URL, 4, 0)
			time.Sleep(300*time.Millisecond + podDrain)
			quit := time.Now()
			for _, sig := range tt.signals {
				if err := p.fpm.Signal(sig); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
			}
			if err := syscall.Kill(p.nginx.Pid, syscall.SIGQUIT); err != nil {
				t.Fatal(err)
			}
			mustExit(t, "php-fpm", 5*time.Second, p.fpmRuns)
			fpmExit := time.Since(quit)
			mustExit(t, "nginx", 5*time.Second, p.nginxRuns)
			p.fcgiscope.Stop()
			started, failed := tr.wait()
			// The scripts had more than a second left to sleep.
			if left := podSlow - 300*time.Millisecond - podDrain; time.Since(quit) > left || fpmExit > left/2 {
				t.Errorf("php-fpm took %s to stop and the whole stop %s: it waited for the scripts", fpmExit, time.Since(quit))
			}
			if len(failed) != started {
				t.Errorf("%d of %d slow requests failed, want all: php-fpm waited for them", len(failed), started)
			}
			var outcomes []string
			for _, l := range requestLines(p.fcgiscope) {
				outcomes = append(outcomes, fmt.Sprint(l["status"], " ", l["outcome"]))
			}
			t.Logf("php-fpm exited %s after the first signal; fcgiscope's outcomes: %v", fpmExit.Round(time.Millisecond), outcomes)
		})
	}
}

// TestKubernetesSidecarStoppedWithTheAppFailsTheDrain is the other control:
// fcgiscope as an ordinary container (before native sidecars) gets SIGTERM
// when the pod is deleted, with nginx, not after it. Having no shell, it
// has no preStop sleep, so it stops accepting while nginx still serves the
// drain, and the requests that arrive meanwhile fail with 502.
func TestKubernetesSidecarStoppedWithTheAppFailsTheDrain(t *testing.T) {
	p := startPod(t, podControl)
	tr := startTraffic(t, p.nginx.URL, 2, 3)
	time.Sleep(300 * time.Millisecond)
	if err := p.fcgiscope.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(podPropagation)
	tr.stop.Store(true)
	time.Sleep(podDrain - podPropagation)
	p.fpm.Signal(syscall.SIGQUIT)
	syscall.Kill(p.nginx.Pid, syscall.SIGQUIT)
	mustExit(t, "php-fpm", podControl+2*time.Second, p.fpmRuns)
	mustExit(t, "nginx", podControl+2*time.Second, p.nginxRuns)
	p.fcgiscope.Stop()
	started, failed := tr.wait()
	var during int
	for _, f := range failed {
		if strings.HasPrefix(f, "/hello.php: 502") {
			during++
		}
	}
	t.Logf("%d of %d requests failed, %d of them with 502 during the drain", len(failed), started, during)
	if during == 0 {
		t.Errorf("no request failed while nginx drained without fcgiscope: %v", failed)
	}
	for _, f := range failed {
		if strings.HasPrefix(f, "/sleep.php") {
			t.Errorf("a request in flight failed; fcgiscope drains those on SIGTERM: %s", f)
		}
	}
}
