package e2e

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/metricstest"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// Real traffic through nginx and php-fpm shows up in the metrics: successes,
// php-fpm's own 404, a killed worker, and a refused upstream.
func TestAdminMetricsCountRealTraffic(t *testing.T) {
	s := startAdminStack(t, testbed.FPMConfig{StatusPath: "/fpm-status"})

	// A second relay in front of a port nobody listens on, sharing the
	// Recorder, as a second fcgiscope listener would.
	dead := fcgi.Addr{Network: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))}
	refusing := testbed.StartRelay(t, &proxy.Server{
		Upstream:  dead,
		Responder: s.explainer,
		Observer:  s.explainer,
	}, "unix")
	ngxDead := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: refusing.Addr})

	const hellos = 5
	for range hellos {
		if code := s.get(t, "/hello.php"); code != 200 {
			t.Fatalf("hello.php: %d", code)
		}
	}
	if code := s.get(t, "/missing.php"); code != 404 {
		t.Errorf("missing.php: %d, want 404", code)
	}
	if code := s.get(t, "/crash.php?sig=9"); code != 502 {
		t.Errorf("crash.php?sig=9: %d, want 502", code)
	}
	if code := (&adminStack{nginx: ngxDead}).get(t, "/hello.php"); code != 502 {
		t.Errorf("through the refusing relay: %d, want 502", code)
	}
	list := s.waitRequests(t, hellos+3)

	outcomes := map[string]int{}
	for _, q := range list {
		outcomes[q.Outcome]++
	}
	if outcomes["ok"] != hellos || outcomes["script_not_found"] != 1 || outcomes["worker_crashed"] != 1 || outcomes["upstream_refused"] != 1 {
		t.Errorf("outcomes listed: %v", outcomes)
	}

	mfs := scrapeMetrics(t, s.adminURL)
	for _, tt := range []struct {
		outcome, class string
		want           float64
	}{
		{"ok", "2xx", hellos},
		{"script_not_found", "4xx", 1},
		{"worker_crashed", "5xx", 1},
		{"upstream_refused", "5xx", 1},
	} {
		m := metricstest.Find(mfs, "fcgiscope_requests_total", "outcome", tt.outcome, "status_class", tt.class)
		if got := m.GetCounter().GetValue(); m == nil || got != tt.want {
			t.Errorf("fcgiscope_requests_total{outcome=%q,status_class=%q} = %v, want %v", tt.outcome, tt.class, got, tt.want)
		}
	}
	counts := map[string]uint64{
		"fcgiscope_request_duration_seconds": hellos + 3,
		// The refused request never connected.
		"fcgiscope_connect_duration_seconds": hellos + 2,
		// The killed worker sent nothing.
		"fcgiscope_time_to_first_byte_seconds": hellos + 1,
	}
	for name, want := range counts {
		m := metricstest.Find(mfs, name)
		if got := m.GetHistogram().GetSampleCount(); m == nil || got != want {
			t.Errorf("%s count = %d, want %d", name, got, want)
		}
	}
	if m := metricstest.Find(mfs, "fcgiscope_request_duration_seconds"); m != nil {
		// hello.php answers within a second.
		for _, b := range m.GetHistogram().GetBucket() {
			if b.GetUpperBound() == 1 && b.GetCumulativeCount() < hellos {
				t.Errorf("only %d requests within 1s", b.GetCumulativeCount())
			}
		}
	}
	if m := metricstest.Find(mfs, "fcgiscope_worker_deaths_total", "cause", "worker_crashed"); m.GetCounter().GetValue() != 1 {
		t.Errorf("worker_deaths_total{cause=worker_crashed} = %v, want 1", m.GetCounter().GetValue())
	}
	if m := metricstest.Find(mfs, "fcgiscope_upstream_dial_errors_total", "errno", "ECONNREFUSED"); m.GetCounter().GetValue() != 1 {
		t.Errorf("upstream_dial_errors_total{errno=ECONNREFUSED} = %v, want 1", m.GetCounter().GetValue())
	}
	if m := metricstest.Find(mfs, "fcgiscope_response_bytes_total"); m.GetCounter().GetValue() <= 0 {
		t.Error("no response bytes counted")
	}
	if m := metricstest.Find(mfs, "fcgiscope_build_info", "version", "e2e"); m.GetGauge().GetValue() != 1 {
		t.Error("no fcgiscope_build_info{version=e2e}")
	}
	// The pool's status, polled from php-fpm: 4 static workers. A poll
	// made while the master was still forking them counts fewer; the
	// next one counts them all.
	deadline := time.Now().Add(5 * time.Second)
	for metricstest.Find(mfs, "fcgiscope_fpm_processes_total").GetGauge().GetValue() != 4 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		mfs = scrapeMetrics(t, s.adminURL)
	}
	if m := metricstest.Find(mfs, "fcgiscope_fpm_processes_total"); m.GetGauge().GetValue() != 4 {
		t.Errorf("fcgiscope_fpm_processes_total = %v, want 4", m.GetGauge().GetValue())
	}
	idle := metricstest.Find(mfs, "fcgiscope_fpm_processes", "state", "idle").GetGauge().GetValue()
	active := metricstest.Find(mfs, "fcgiscope_fpm_processes", "state", "active").GetGauge().GetValue()
	if idle+active != 4 {
		t.Errorf("fpm processes idle %v + active %v, want 4", idle, active)
	}

	// The killed worker in full: the signal from php-fpm's log, a hint, a
	// timeline.
	var crashed web.Request
	for _, q := range list {
		if q.Outcome == "worker_crashed" {
			crashed = q
		}
	}
	code, body := fetch(t, fmt.Sprintf("%s/api/requests/%d", s.adminURL, crashed.ID))
	var d web.RequestDetail
	if code != 200 || json.Unmarshal(body, &d) != nil {
		t.Fatalf("/api/requests/%d: %d %s", crashed.ID, code, body)
	}
	if d.Evidence["signal"] != "SIGKILL" || d.FPMPid == 0 || len(d.Hints) == 0 || len(d.Timeline) < 4 || d.Script == "" {
		t.Errorf("the killed worker's detail: %s", body)
	}
}

// /readyz follows php-fpm: 503 naming the cause while it is stopped, 200
// again once it is back.
func TestAdminReadyzFollowsPHPFPM(t *testing.T) {
	s := startAdminStack(t, testbed.FPMConfig{})
	var r web.Readiness
	body := waitStatus(t, s.adminURL+"/readyz", 200, 5*time.Second)
	if json.Unmarshal(body, &r) != nil || !r.Ready || r.Check != "get_values" {
		t.Errorf("/readyz while php-fpm runs: %s", body)
	}
	if code, _ := fetch(t, s.adminURL+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}

	s.fpm.Stop()
	body = waitStatus(t, s.adminURL+"/readyz", 503, 5*time.Second)
	r = web.Readiness{}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("/readyz body: %v\n%s", err, body)
	}
	if r.Ready || (r.Cause != "upstream_socket_missing" && r.Cause != "upstream_socket_stale") || r.Detail == "" {
		t.Errorf("/readyz with php-fpm stopped: %s", body)
	}
	t.Logf("with php-fpm stopped: %s", body)
	// The relay says the same to a request.
	if code := s.get(t, "/hello.php"); code != 502 {
		t.Errorf("hello.php with php-fpm stopped: %d", code)
	}
	if code, _ := fetch(t, s.adminURL+"/healthz"); code != 200 {
		t.Errorf("/healthz with php-fpm stopped: %d", code)
	}

	s.fpm.Restart(t)
	waitStatus(t, s.adminURL+"/readyz", 200, 5*time.Second)
	if code := s.get(t, "/hello.php"); code != 200 {
		t.Errorf("hello.php after the restart: %d", code)
	}
}
