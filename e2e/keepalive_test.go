package e2e

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

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
