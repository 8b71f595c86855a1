package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/metricstest"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// With kept upstream connections, php-fpm recycling its workers
// (pm.max_requests) and reloading costs no request, and an idle kept
// connection is closed before php-fpm's request_terminate_timeout would
// take the worker waiting on it for a stuck request.
func TestUpstreamKeepAliveWithRecyclingAndReloadingPHPFPM(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 4, RequestTerminateTimeout: 2 * time.Second, Extra: "pm.max_requests = 7\n"})
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr,
		"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_QUEUE_TIMEOUT=10s",
		"FCGISCOPE_UPSTREAM_KEEPALIVE=3", "FCGISCOPE_UPSTREAM_KEEPALIVE_TIMEOUT=500ms")
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen})

	load := startSteady(ngx.URL+"/hello.php", 4)
	time.Sleep(time.Second)
	if err := fpm.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	sent, failed := load.Stop()
	if len(failed) > 0 {
		t.Errorf("%d of %d requests failed with kept connections to a recycling php-fpm, e.g. %v", len(failed), sent, failed[0])
	}
	reused, resent := countLines(p.Output(), `"upstream_reused":true`), countLines(p.Output(), `"resent"`)
	if reused < sent/2 {
		t.Errorf("only %d of %d requests went on a kept connection", reused, sent)
	}
	t.Logf("%d requests, all served; %d on kept connections, %d sent again after php-fpm closed a kept connection under them", sent, reused, resent)

	// Idle for longer than request_terminate_timeout: had a kept
	// connection stayed open, php-fpm would kill its worker as timed out.
	time.Sleep(3 * time.Second)
	if log := fpm.ReadErrorLog(); strings.Contains(log, "execution timed out") {
		t.Errorf("php-fpm killed a worker waiting on a kept connection:\n%s", log)
	}
}

// By default fcgiscope keeps php-fpm connections open while traffic flows,
// one worker fewer than pm.max_children, and closes them when it stops. The
// pool gauges count a worker waiting on a kept connection as kept, not as
// active as php-fpm's status page does, so that an idle pool does not look
// busy.
func TestKeptConnectionsByDefaultAreCountedAsKept(t *testing.T) {
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 4, StatusPath: "/fpm-status"})
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr, "FCGISCOPE_ADMIN_LISTEN="+admin,
		"FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath, "FCGISCOPE_FPM_STATUS_INTERVAL=100ms", "FCGISCOPE_UPSTREAM_KEEPALIVE_TIMEOUT=3s")
	ngx := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen})
	if !strings.Contains(p.Output(), "keeping up to 3 idle php-fpm connections") {
		t.Errorf("fcgiscope does not say it keeps connections by default:\n%s", p.Output())
	}

	load := startSteady(ngx.URL+"/hello.php", 3)
	time.Sleep(500 * time.Millisecond)
	sent, failed := load.Stop()
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed: %v", len(failed), sent, failed[0])
	}
	gauge := func(name string, labels ...string) float64 {
		m := metricstest.Find(scrapeMetrics(t, "http://"+admin), name, labels...)
		if m == nil || m.Gauge == nil {
			return -1
		}
		return m.Gauge.GetValue()
	}
	// The status poll runs every 100 ms: within a second one that was
	// taken after the load stopped shows the workers waiting on the kept
	// connections, and none running.
	var idle, kept, active float64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		idle, kept, active = gauge("fcgiscope_upstream_idle_connections"), gauge("fcgiscope_fpm_processes", "state", "kept"), gauge("fcgiscope_fpm_processes", "state", "active")
		if idle >= 1 && idle <= 3 && kept >= 1 && active == 0 {
			break
		}
	}
	if idle < 1 || idle > 3 || kept < 1 || active != 0 {
		t.Errorf("after the load: %v idle kept connections, %v workers kept and %v active; want 1 to 3 kept and none active", idle, kept, active)
	}
	reused := countLines(p.Output(), `"upstream_reused":true`)
	if reused < sent/2 {
		t.Errorf("only %d of %d requests went on a kept connection", reused, sent)
	}

	// Once traffic stops for the idle timeout the workers are free again.
	deadline := time.Now().Add(5 * time.Second)
	for (gauge("fcgiscope_upstream_idle_connections") != 0 || gauge("fcgiscope_fpm_processes", "state", "kept") != 0) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if idle, kept := gauge("fcgiscope_upstream_idle_connections"), gauge("fcgiscope_fpm_processes", "state", "kept"); idle != 0 || kept != 0 {
		t.Errorf("3 s after the load: %v idle kept connections and %v workers kept, want none", idle, kept)
	}
}
