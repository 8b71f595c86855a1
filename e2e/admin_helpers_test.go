package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/metricstest"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// adminStack is nginx -> an in-process relay -> php-fpm, with the relay's
// Recorder served by an admin endpoint on a loopback port: what `fcgiscope
// serve` wires up, built here so that the test can reach every part.
type adminStack struct {
	fpm       *testbed.FPM
	upstream  fcgi.Addr
	explainer *diagnostics.Explainer
	rec       *web.Recorder
	relay     *testbed.Relay
	nginx     *testbed.Nginx
	admin     *web.Handler
	adminURL  string
}

// startAdminStack starts the stack with php-fpm configured by cfg. When cfg
// has a StatusPath, the pool's status is polled for the dashboard.
func startAdminStack(t *testing.T, cfg testbed.FPMConfig) *adminStack {
	t.Helper()
	testbed.RequireFPM(t)
	testbed.RequireNginx(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	s := &adminStack{fpm: testbed.StartFPM(t, cfg)}
	var err error
	if s.upstream, err = fcgi.ParseAddr(s.fpm.Addr); err != nil {
		t.Fatal(err)
	}
	conf, err := fpm.Load(s.fpm.ConfigPath, nil)
	if err != nil {
		t.Fatalf("reading php-fpm's configuration: %v", err)
	}
	follower := &fpm.Follower{Path: s.fpm.ErrorLog}
	go follower.Run(ctx)
	classifier := &diagnostics.Classifier{Pool: conf.PoolFor(s.upstream), Log: follower}
	if s.fpm.SlowLog != "" {
		slow := &fpm.SlowlogFollower{Path: s.fpm.SlowLog}
		go slow.Run(ctx)
		classifier.Slowlog = slow
	}

	var srv *proxy.Server
	s.rec = &web.Recorder{
		Size:     500,
		InFlight: func() float64 { return float64(srv.ActiveConns()) },
		Version:  "e2e",
	}
	if cfg.StatusPath != "" {
		poller := &fpm.Poller{Addr: s.upstream, Path: cfg.StatusPath, Interval: 500 * time.Millisecond}
		go poller.Run(ctx)
		s.rec.Pool = poller
	}
	s.explainer = &diagnostics.Explainer{Classifier: classifier, Sinks: []diagnostics.Sink{&diagnostics.AccessLog{}, s.rec}}
	srv = &proxy.Server{
		Upstream:       s.upstream,
		ConnectTimeout: time.Second,
		Responder:      s.explainer,
		Observer:       s.explainer,
	}
	s.relay = testbed.StartRelay(t, srv, "unix")
	s.nginx = testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: s.relay.Addr})
	s.admin = &web.Handler{Recorder: s.rec, Upstream: s.upstream}
	s.adminURL = serveAdmin(t, ctx, s.admin)
	// The Follower reads php-fpm's log from its end as it is when it
	// starts; give it a moment, so that a crash in the test is not
	// written before it looks.
	time.Sleep(200 * time.Millisecond)
	return s
}

// serveAdmin serves h on a free loopback port until the test ends and
// returns its URL.
func serveAdmin(t *testing.T, ctx context.Context, h *web.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("admin Serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// fetch GETs url and returns the status and body.
func fetch(t *testing.T, url string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

// requestsSeen returns the requests the admin endpoint lists.
func (s *adminStack) requests(t *testing.T, query string) []web.Request {
	t.Helper()
	code, body := fetch(t, s.adminURL+"/api/requests"+query)
	if code != 200 {
		t.Fatalf("/api/requests%s: %d %s", query, code, body)
	}
	var list []web.Request
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("/api/requests: %v\n%s", err, body)
	}
	return list
}

// waitRequests waits until the admin endpoint lists n requests: the relay
// hands a request to its Observer after nginx has the response.
func (s *adminStack) waitRequests(t *testing.T, n int) []web.Request {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		list := s.requests(t, "?limit=1000")
		if len(list) >= n {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("the admin endpoint lists %d requests, want %d: %+v", len(list), n, list)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// scrapeMetrics parses the admin endpoint's /metrics.
func scrapeMetrics(t *testing.T, adminURL string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	return metricstest.Parse(t, resp.Body)
}

// get sends GET path to nginx and returns the status.
func (s *adminStack) get(t *testing.T, path string) int {
	t.Helper()
	resp, err := http.Get(s.nginx.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// waitStatus polls url until it answers with code.
func waitStatus(t *testing.T, url string, code int, within time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got, body := fetch(t, url)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s answers %d, want %d within %v: %s", url, got, code, within, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
