package web

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/metricstest"
	"github.com/rs/zerolog"
)

// fakePool is a PoolStatus with a fixed answer.
type fakePool struct{ st *fpm.Status }

func (p fakePool) Latest() (*fpm.Status, time.Time, bool) {
	if p.st == nil {
		return nil, time.Time{}, false
	}
	return p.st, p.st.At, true
}

func testPool() fakePool {
	return fakePool{&fpm.Status{
		Pool: "www", ProcessManager: "static", At: time.Now().Add(-time.Second),
		IdleProcesses: 1, ActiveProcesses: 3, TotalProcesses: 4,
		MaxChildrenReached: 2, SlowRequests: 5, ListenQueue: 1,
		Processes: []fpm.Process{
			{PID: 11, State: "Idle", Method: "GET", RequestURI: "/hello.php", Script: "/srv/www/hello.php", RequestDuration: time.Millisecond, Requests: 9},
			{PID: 12, State: "Running", Method: "GET", RequestURI: "/sleep.php?s=5&token=abc", Script: "/srv/www/sleep.php", RequestDuration: 4 * time.Second, Requests: 3},
			{PID: 13, State: "Running", Method: "POST", RequestURI: "/api.php", Script: "/srv/www/api.php", RequestDuration: time.Second, Requests: 7},
			{PID: 14, State: "Running", Method: "GET", RequestURI: "/fpm-status?json&full", Script: "-", Requests: 1},
		},
	}}
}

func TestMetricsTellKeptConnectionsAndResendsApart(t *testing.T) {
	r := &Recorder{}
	observe(r, okTrace(1))
	for i := range 3 {
		kept := okTrace(10 + i)
		kept.UpstreamReused = true
		observe(r, kept)
	}
	resent := okTrace(20)
	resent.UpstreamReused, resent.Resent = true, 1
	observe(r, resent)

	mfs := scrape(t, &Handler{Recorder: r})
	if got := counter(t, mfs, "fcgiscope_upstream_connections_total", "kind", "new"); got != 1 {
		t.Errorf("new connections %v, want 1", got)
	}
	if got := counter(t, mfs, "fcgiscope_upstream_connections_total", "kind", "reused"); got != 4 {
		t.Errorf("reused connections %v, want 4", got)
	}
	if got := histCount(t, mfs, "fcgiscope_connect_duration_seconds"); got != 1 {
		t.Errorf("connect_duration count %d, want 1: a kept connection is not a connect", got)
	}
	if got := counter(t, mfs, "fcgiscope_requests_resent_total"); got != 1 {
		t.Errorf("resent %v, want 1", got)
	}
}

func TestMetricsAfterSyntheticTraces(t *testing.T) {
	r := &Recorder{
		InFlight: func() float64 { return 3 },
		Queued:   func() float64 { return 2 },
		Pool:     testPool(),
		Version:  "1.2.3",
		Commit:   "abc123",
	}
	for i := range 5 {
		observe(r, okTrace(i))
	}
	observe(r, diedTrace(1))
	observe(r, refusedTrace(1))
	observe(r, refusedTrace(2))
	observe(r, notFoundTrace(1))
	queued := okTrace(99)
	queued.QueueStart, queued.QueueEnd = queued.Accepted, queued.Accepted.Add(3*time.Millisecond)
	observe(r, queued)

	mfs := scrape(t, &Handler{Recorder: r})
	for _, tt := range []struct {
		outcome, class string
		want           float64
	}{
		{"ok", "2xx", 6},
		{"worker_died", "5xx", 1},
		{"upstream_refused", "5xx", 2},
		{"script_not_found", "4xx", 1},
	} {
		if got := counter(t, mfs, "fcgiscope_requests_total", "outcome", tt.outcome, "status_class", tt.class); got != tt.want {
			t.Errorf("requests_total{outcome=%q,status_class=%q} = %v, want %v", tt.outcome, tt.class, got, tt.want)
		}
	}
	if n := len(mfs["fcgiscope_requests_total"].GetMetric()); n != 4 {
		t.Errorf("%d requests_total series, want 4 (no series for outcomes that never happened)", n)
	}
	if got := histCount(t, mfs, "fcgiscope_request_duration_seconds"); got != 10 {
		t.Errorf("request_duration count %d, want 10", got)
	}
	if got := histCount(t, mfs, "fcgiscope_connect_duration_seconds"); got != 8 {
		t.Errorf("connect_duration count %d, want 8 (not the refused ones)", got)
	}
	if got := histCount(t, mfs, "fcgiscope_time_to_first_byte_seconds"); got != 7 {
		t.Errorf("ttfb count %d, want 7", got)
	}
	if got := histCount(t, mfs, "fcgiscope_queue_wait_seconds"); got != 1 {
		t.Errorf("queue_wait count %d, want 1", got)
	}
	h := metricstest.Find(mfs, "fcgiscope_request_duration_seconds").GetHistogram()
	var bounds []float64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
	}
	if !slices.Equal(bounds, append(slices.Clone(DurationBuckets), math.Inf(1))) {
		t.Errorf("buckets %v, want %v", bounds, DurationBuckets)
	}
	// Eight requests took 20 ms, the two refused ones 1 ms.
	for _, b := range h.GetBucket() {
		want := uint64(10)
		switch le := b.GetUpperBound(); {
		case le < 0.001:
			want = 0
		case le > 0.001 && le < 0.02:
			want = 2
		case le == 0.001:
			continue // 1 ms exactly is on the edge
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("bucket le=%v has %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	for cause, want := range map[string]float64{"worker_died": 1, "worker_crashed": 0, "worker_timeout_killed": 0} {
		if got := counter(t, mfs, "fcgiscope_worker_deaths_total", "cause", cause); got != want {
			t.Errorf("worker_deaths_total{cause=%q} = %v, want %v", cause, got, want)
		}
	}
	if got := counter(t, mfs, "fcgiscope_upstream_dial_errors_total", "errno", "ECONNREFUSED"); got != 2 {
		t.Errorf("dial errors ECONNREFUSED = %v, want 2", got)
	}
	if got := counter(t, mfs, "fcgiscope_request_bytes_total"); got != 10*8 {
		t.Errorf("request bytes %v, want 80", got)
	}
	if got := counter(t, mfs, "fcgiscope_response_bytes_total"); got != 6*1000+700+2*500+1000 {
		t.Errorf("response bytes %v", got)
	}
	if got := gauge(t, mfs, "fcgiscope_requests_in_flight"); got != 3 {
		t.Errorf("in flight %v", got)
	}
	if got := gauge(t, mfs, "fcgiscope_requests_queued"); got != 2 {
		t.Errorf("queued %v", got)
	}
	if m := metricstest.Find(mfs, "fcgiscope_build_info", "version", "1.2.3", "commit", "abc123", "goversion", runtime.Version()); m == nil || m.GetGauge().GetValue() != 1 {
		t.Errorf("build_info: %v", mfs["fcgiscope_build_info"])
	}
	// The status poll's own worker is not busy.
	if got := gauge(t, mfs, "fcgiscope_fpm_processes", "state", "active"); got != 2 {
		t.Errorf("fpm active %v, want 2", got)
	}
	if got := gauge(t, mfs, "fcgiscope_fpm_processes", "state", "idle"); got != 2 {
		t.Errorf("fpm idle %v, want 2", got)
	}
	if got := gauge(t, mfs, "fcgiscope_fpm_processes_total"); got != 4 {
		t.Errorf("fpm total %v", got)
	}
	if got := counter(t, mfs, "fcgiscope_fpm_max_children_reached_total"); got != 2 {
		t.Errorf("max children reached %v", got)
	}
	if got := counter(t, mfs, "fcgiscope_fpm_slow_requests_total"); got != 5 {
		t.Errorf("slow requests %v", got)
	}
	if mfs["go_goroutines"] == nil || mfs["process_open_fds"] == nil {
		t.Error("no Go or process metrics")
	}
}

type fakeLog map[fpm.EventKind]int64

func (l fakeLog) Counts() map[fpm.EventKind]int64 { return l }

func TestMetricsOfPHPFPMsLog(t *testing.T) {
	r := &Recorder{FPMLog: fakeLog{fpm.EventSignal: 2, fpm.EventMaxChildren: 1}}
	mfs := scrape(t, &Handler{Recorder: r})
	if got := counter(t, mfs, "fcgiscope_fpm_log_events_total", "kind", "signal"); got != 2 {
		t.Errorf("signal events %v", got)
	}
	if got := counter(t, mfs, "fcgiscope_fpm_log_events_total", "kind", "max_children"); got != 1 {
		t.Errorf("max_children events %v", got)
	}
	var nilFollower *fpm.Follower
	mfs = scrape(t, &Handler{Recorder: &Recorder{FPMLog: nilFollower}})
	if mfs["fcgiscope_fpm_log_events_total"] != nil {
		t.Error("log metrics without a log")
	}
}

func TestMetricsWithoutOptionalParts(t *testing.T) {
	var nilPoller *fpm.Poller
	r := &Recorder{Pool: nilPoller}
	observe(r, okTrace(1))
	mfs := scrape(t, &Handler{Recorder: r})
	for _, name := range []string{"fcgiscope_requests_in_flight", "fcgiscope_requests_queued", "fcgiscope_fpm_processes"} {
		if mfs[name] != nil {
			t.Errorf("%s exported without its source", name)
		}
	}
	// A poller without a status yet exports no pool numbers.
	r2 := &Recorder{Pool: fakePool{}}
	mfs = scrape(t, &Handler{Recorder: r2})
	if mfs["fcgiscope_fpm_processes"] != nil {
		t.Error("pool metrics before the first status")
	}
}

func feed(r *Recorder) {
	observe(r, okTrace(1))
	observe(r, diedTrace(2))
	observe(r, okTrace(3))
	observe(r, refusedTrace(4))
	observe(r, notFoundTrace(5))
	observe(r, okTrace(6))
}

func TestAPIRequestsFilters(t *testing.T) {
	r := &Recorder{}
	feed(r)
	h := &Handler{Recorder: r}
	for _, tt := range []struct {
		query string
		want  []string
	}{
		{"", []string{"ok-6", "nf-5", "refused-4", "ok-3", "died-2", "ok-1"}},
		{"?outcome=ok", []string{"ok-6", "ok-3", "ok-1"}},
		{"?outcome=failed", []string{"nf-5", "refused-4", "died-2"}},
		{"?cause=upstream_refused", []string{"refused-4"}},
		{"?outcome=failed&cause=worker_died", []string{"died-2"}},
		{"?outcome=ok&cause=worker_died", []string{}},
		{"?limit=2", []string{"ok-6", "nf-5"}},
		{"?outcome=failed&limit=1", []string{"nf-5"}},
	} {
		var got []Request
		getJSON(t, h, "/api/requests"+tt.query, 200, &got)
		ids := []string{}
		for _, q := range got {
			ids = append(ids, q.RequestID)
		}
		if !slices.Equal(ids, tt.want) {
			t.Errorf("%s: %v, want %v", tt.query, ids, tt.want)
		}
	}
	for _, q := range []string{"?outcome=bad", "?limit=0", "?limit=x", "?cause=no_such_cause"} {
		getJSON(t, h, "/api/requests"+q, 400, nil)
	}
	var got []Request
	getJSON(t, h, "/api/requests?outcome=failed", 200, &got)
	died := got[2]
	if died.Outcome != "worker_died" || !died.Failed || died.Status != 502 || died.Title != diagnostics.CauseWorkerDied.Title || died.TTFBMS != 0 {
		t.Errorf("died request: %+v", died)
	}
}

func TestAPIRequestDetail(t *testing.T) {
	r := &Recorder{}
	feed(r)
	h := &Handler{Recorder: r}
	var d RequestDetail
	getJSON(t, h, "/api/requests/2", 200, &d)
	if d.RequestID != "died-2" || d.Outcome != "worker_died" || d.Detail == "" || len(d.Hints) == 0 || d.Evidence["phase"] != "waiting" {
		t.Errorf("detail: %+v", d)
	}
	if !strings.Contains(d.Stderr, "something odd") || d.StderrBytes == 0 {
		t.Errorf("stderr %q (%d bytes)", d.Stderr, d.StderrBytes)
	}
	if d.Script != "/srv/www/crash.php" || d.URI != "/crash.php?sig=9&password=REDACTED" || d.Upstream != fpmSock.String() {
		t.Errorf("script %q uri %q upstream %q", d.Script, d.URI, d.Upstream)
	}
	var names []string
	var last float64
	for _, s := range d.Timeline {
		names = append(names, s.Name)
		if s.OffsetMS < last {
			t.Errorf("timeline out of order: %+v", d.Timeline)
		}
		last = s.OffsetMS
	}
	if want := "begin params_done dial_start dial_end stdin_done end"; strings.Join(names, " ") != want {
		t.Errorf("timeline %v, want %s", names, want)
	}
	if end := d.Timeline[len(d.Timeline)-1]; end.Label != "failed: worker_died" || end.OffsetMS < 19 || end.OffsetMS > 21 {
		t.Errorf("last step %+v", end)
	}
	var spans []string
	for _, s := range d.Spans {
		spans = append(spans, s.Name)
	}
	if want := "params connect send wait"; strings.Join(spans, " ") != want {
		t.Errorf("spans %v, want %s", spans, want)
	}

	// By request id too.
	var byID RequestDetail
	getJSON(t, h, "/api/requests/refused-4", 200, &byID)
	if byID.ID != 4 || byID.Outcome != "upstream_refused" || byID.Evidence["errno"] != "ECONNREFUSED" {
		t.Errorf("by request id: %+v", byID)
	}
	if len(byID.Spans) != 2 || byID.Spans[1].Label != "connecting (failed)" {
		t.Errorf("refused spans: %+v", byID.Spans)
	}
	getJSON(t, h, "/api/requests/999", 404, nil)
	getJSON(t, h, "/api/requests/nope", 404, nil)
}

func TestMinimalDetailHidesPathsAndStderr(t *testing.T) {
	r := &Recorder{Pool: testPool()}
	feed(r)
	secrets := []string{"/srv/www", "hunter2", "s3cret", "something odd", "203.0.113.9", "php8.2-fpm.sock", "token=abc", "Primary script"}
	for _, tt := range []struct {
		name   string
		detail diagnostics.Detail
		remote string
	}{
		{"minimal", diagnostics.DetailMinimal, "127.0.0.1:5000"},
		{"local from a public address", diagnostics.DetailLocal, "198.51.100.7:5000"},
		{"default from a public address", "", "[2001:db8::1]:5000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{Recorder: r, Detail: tt.detail, Upstream: fpmSock}
			var list []Request
			bodies := []string{getJSON(t, h, "/api/requests", 200, &list, "RemoteAddr", tt.remote)}
			for _, q := range list {
				if !q.Redacted || q.Script != "" || q.RemoteAddr != "" || q.Upstream != "" || strings.Contains(q.URI, "?") {
					t.Errorf("not redacted: %+v", q)
				}
			}
			var d RequestDetail
			bodies = append(bodies, getJSON(t, h, "/api/requests/2", 200, &d, "RemoteAddr", tt.remote))
			if d.URI != "/crash.php" || d.Outcome != "worker_died" || d.Title == "" || len(d.Timeline) == 0 {
				t.Errorf("minimal detail lost what it may show: %+v", d)
			}
			if d.Detail != "" || d.Hints != nil || d.Evidence != nil || d.Stderr != "" {
				t.Errorf("minimal detail shows the explanation: %+v", d)
			}
			bodies = append(bodies, getJSON(t, h, "/api/requests/5", 200, nil, "RemoteAddr", tt.remote))
			bodies = append(bodies, getJSON(t, h, "/api/summary", 200, nil, "RemoteAddr", tt.remote))
			for _, b := range bodies {
				for _, s := range secrets {
					if strings.Contains(b, s) {
						t.Errorf("response shows %q:\n%s", s, b)
					}
				}
			}
		})
	}
	t.Run("local from loopback and trusted networks only", func(t *testing.T) {
		h := &Handler{Recorder: r, Trusted: []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")}}
		for _, remote := range []string{"127.0.0.1:1", "[::1]:1", "192.168.1.1:1", "[::ffff:192.168.7.7]:1"} {
			var d RequestDetail
			getJSON(t, h, "/api/requests/2", 200, &d, "RemoteAddr", remote)
			if d.Redacted || d.Script == "" || d.Stderr == "" || len(d.Hints) == 0 {
				t.Errorf("%s gets minimal detail: %+v", remote, d)
			}
		}
		// A private address is not trusted by itself: in a cluster it
		// is the ingress controller's, for every visitor.
		for _, remote := range []string{"10.1.2.3:1", "[::ffff:172.16.0.1]:1"} {
			var d RequestDetail
			getJSON(t, h, "/api/requests/2", 200, &d, "RemoteAddr", remote)
			if !d.Redacted || d.Script != "" || d.Stderr != "" {
				t.Errorf("%s gets full detail: %+v", remote, d)
			}
		}
	})
}

func TestTokenProtectsEverythingButTheProbes(t *testing.T) {
	const token = "correct-horse-battery-staple"
	h := &Handler{Recorder: &Recorder{}, Token: token, Pprof: true}
	for _, tt := range []struct {
		path string
		hdr  []string
		want int
	}{
		{"/healthz", nil, 200},
		{"/readyz", nil, 200},
		{"/metrics", nil, 401},
		{"/api/requests", nil, 401},
		{"/api/requests/1", nil, 401},
		{"/api/summary", nil, 401},
		{"/api/events", nil, 401},
		{"/assets/app.js", nil, 401},
		{"/debug/pprof/", nil, 401},
		{"/", []string{"Accept", "text/html"}, 401},
		{"/metrics", []string{"Authorization", "Bearer wrong"}, 401},
		{"/metrics", []string{"Authorization", "Basic " + token}, 401},
		{"/metrics", []string{"Authorization", "Bearer " + token}, 200},
		{"/api/requests", []string{"Authorization", "Bearer " + token}, 200},
		{"/debug/pprof/", []string{"Authorization", "Bearer " + token}, 200},
		{"/", []string{"Authorization", "Bearer " + token}, 200},
		{"/", []string{"Cookie", cookieName + "=" + token}, 200},
		{"/api/summary", []string{"Cookie", cookieName + "=nope"}, 401},
	} {
		resp := get(t, h, tt.path, tt.hdr...)
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s %v: %d, want %d", tt.path, tt.hdr, resp.StatusCode, tt.want)
		}
		if resp.StatusCode == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("GET %s: 401 without WWW-Authenticate: Bearer", tt.path)
		}
	}
	// A browser gets a sign-in form, and the form sets the cookie.
	resp := get(t, h, "/", "Accept", "text/html")
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `name="token"`) {
		t.Errorf("no sign-in form:\n%s", body)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	bad, err := noRedirect.PostForm(srv.URL+"/login", url.Values{"token": {"guess"}})
	if err != nil {
		t.Fatal(err)
	}
	bad.Body.Close()
	if bad.StatusCode != 401 || len(bad.Cookies()) != 0 {
		t.Errorf("wrong token: %s, cookies %v", bad.Status, bad.Cookies())
	}
	good, err := noRedirect.PostForm(srv.URL+"/login", url.Values{"token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	good.Body.Close()
	if good.StatusCode != http.StatusSeeOther || len(good.Cookies()) != 1 {
		t.Fatalf("right token: %s, cookies %v", good.Status, good.Cookies())
	}
	c := good.Cookies()[0]
	if c.Name != cookieName || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie %+v", c)
	}

	// Without Pprof the profiler is not there at all.
	h2 := &Handler{Recorder: &Recorder{}}
	if resp := get(t, h2, "/debug/pprof/"); resp.StatusCode != 404 {
		t.Errorf("pprof without Pprof: %d", resp.StatusCode)
	}
}

func TestCheckExposure(t *testing.T) {
	for _, tt := range []struct {
		addr, token string
		exposed     bool
	}{
		{"127.0.0.1:9180", "", false},
		{"[::1]:9180", "", false},
		{"localhost:9180", "", false},
		{"127.0.0.2:9180", "", false},
		{"0.0.0.0:9180", "", true},
		{":9180", "", true},
		{"[::]:9180", "", true},
		{"10.0.0.5:9180", "", true},
		{"admin.internal:9180", "", true},
		{"0.0.0.0:9180", "t", false},
	} {
		err := CheckExposure(tt.addr, tt.token)
		if got := errors.Is(err, ErrExposed); got != tt.exposed {
			t.Errorf("CheckExposure(%q, %q) = %v, want exposed=%v", tt.addr, tt.token, err, tt.exposed)
		}
	}
	if err := CheckExposure("9180", ""); err == nil || errors.Is(err, ErrExposed) {
		t.Errorf("bad address: %v", err)
	}
}

func TestHealthz(t *testing.T) {
	resp := get(t, &Handler{}, "/healthz")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("healthz: %d %q", resp.StatusCode, body)
	}
}

// fakeFPM answers GET_VALUES on a unix socket, as php-fpm does, and counts
// the connections.
type fakeFPM struct {
	addr  fcgi.Addr
	conns atomic.Int64
	ln    net.Listener
	// delay holds each answer back.
	delay time.Duration
}

func startFakeFPM(t *testing.T) *fakeFPM {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFPM{addr: fcgi.Addr{Network: "unix", Address: path}, ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.conns.Add(1)
			go func() {
				defer c.Close()
				r := fcgi.NewReader(c)
				h, err := r.Next()
				if err != nil || h.Type != fcgi.TypeGetValues {
					return
				}
				time.Sleep(f.delay)
				w := fcgi.NewWriter(c)
				w.WriteRecord(fcgi.TypeGetValuesResult, 0, fcgi.AppendPair(nil, "FCGI_MPXS_CONNS", "0"))
				w.Flush()
			}()
		}
	}()
	return f
}

func TestReadyz(t *testing.T) {
	t.Run("ready", func(t *testing.T) {
		f := startFakeFPM(t)
		h := &Handler{Upstream: f.addr}
		var res Readiness
		getJSON(t, h, "/readyz", 200, &res)
		if !res.Ready || res.Check != "get_values" || res.Upstream != f.addr.String() {
			t.Errorf("readyz: %+v", res)
		}
	})
	t.Run("socket missing", func(t *testing.T) {
		addr := fcgi.Addr{Network: "unix", Address: filepath.Join(t.TempDir(), "gone.sock")}
		h := &Handler{Upstream: addr}
		var res Readiness
		getJSON(t, h, "/readyz", 503, &res)
		if res.Ready || res.Cause != "upstream_socket_missing" || !strings.Contains(res.Detail, "gone.sock") {
			t.Errorf("readyz: %+v", res)
		}
		// A public client learns the cause but not the path.
		body := getJSON(t, h, "/readyz", 503, &res, "RemoteAddr", "198.51.100.1:1")
		if res.Cause != "upstream_socket_missing" || strings.Contains(body, "gone.sock") {
			t.Errorf("readyz for a public client: %s", body)
		}
	})
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := fcgi.Addr{Network: "tcp", Address: ln.Addr().String()}
		ln.Close()
		var res Readiness
		getJSON(t, &Handler{Upstream: addr}, "/readyz", 503, &res)
		if res.Cause != "upstream_refused" {
			t.Errorf("readyz: %+v", res)
		}
	})
	t.Run("no answer in time", func(t *testing.T) {
		f := startFakeFPM(t)
		f.delay = 2 * time.Second
		var res Readiness
		getJSON(t, &Handler{Upstream: f.addr, ReadyTimeout: 200 * time.Millisecond}, "/readyz", 503, &res)
		if res.Cause != "upstream_read_timeout" || !strings.Contains(res.Detail, "busy") || res.ElapsedMS > 1000 {
			t.Errorf("readyz: %+v", res)
		}
	})
	t.Run("not fastcgi", func(t *testing.T) {
		// An HTTP server that answers garbage with a 400, as most do.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
				c.Close()
			}
		}()
		addr := fcgi.Addr{Network: "tcp", Address: ln.Addr().String()}
		var res Readiness
		getJSON(t, &Handler{Upstream: addr}, "/readyz", 503, &res)
		if res.Cause != "upstream_not_fastcgi" {
			t.Errorf("readyz: %+v", res)
		}
	})
	t.Run("a probe storm costs one connection a second", func(t *testing.T) {
		f := startFakeFPM(t)
		h := &Handler{Upstream: f.addr, ReadyCache: time.Hour}
		var wg sync.WaitGroup
		for range 50 {
			wg.Go(func() {
				if resp := get(t, h, "/readyz"); resp.StatusCode != 200 {
					t.Errorf("readyz %d", resp.StatusCode)
				}
			})
		}
		wg.Wait()
		if n := f.conns.Load(); n != 1 {
			t.Errorf("50 probes made %d connections to php-fpm, want 1", n)
		}
	})
	t.Run("no upstream", func(t *testing.T) {
		var res Readiness
		getJSON(t, &Handler{}, "/readyz", 200, &res)
		if !res.Ready || res.Check != "none" {
			t.Errorf("readyz: %+v", res)
		}
	})
}

func TestEventStream(t *testing.T) {
	r := &Recorder{}
	observe(r, okTrace(1))
	srv := httptest.NewServer(&Handler{Recorder: r})
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	waitFor(t, func() bool { return r.subscribers() == 1 })
	observe(r, diedTrace(2))
	br := bufio.NewReader(resp.Body)
	id, data := readEvent(t, br, "request")
	var q Request
	if err := json.Unmarshal([]byte(data), &q); err != nil {
		t.Fatal(err)
	}
	if id != "2" || q.ID != 2 || q.Outcome != "worker_died" || q.Script != "/srv/www/crash.php" {
		t.Errorf("event id %s: %+v", id, q)
	}

	// A client that reconnects gets what it missed.
	req, _ := http.NewRequest("GET", srv.URL+"/api/events", nil)
	req.Header.Set("Last-Event-ID", "0")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	br2 := bufio.NewReader(resp2.Body)
	for _, want := range []string{"1", "2"} {
		if id, _ := readEvent(t, br2, "request"); id != want {
			t.Errorf("replayed id %s, want %s", id, want)
		}
	}
}

func TestSummary(t *testing.T) {
	r := &Recorder{Pool: testPool(), InFlight: func() float64 { return 2 }, Version: "9.9"}
	feed(r)
	observe(r, diedTrace(7))
	h := &Handler{Recorder: r, Upstream: fpmSock}
	var s Summary
	getJSON(t, h, "/api/summary", 200, &s)
	if s.Requests != 7 || s.Failed != 4 || s.Rate <= 0 || s.ErrorRate < 0.5 || s.P95MS == nil || s.Version != "9.9" {
		t.Errorf("summary: %+v", s)
	}
	if s.InFlight == nil || *s.InFlight != 2 || s.Queued != nil {
		t.Errorf("in flight %v queued %v", s.InFlight, s.Queued)
	}
	if len(s.Series) != numBuckets || s.BucketSeconds != 5 {
		t.Errorf("%d buckets of %d s", len(s.Series), s.BucketSeconds)
	}
	last := s.Series[len(s.Series)-1]
	if last.Count+s.Series[len(s.Series)-2].Count != 7 {
		t.Errorf("last buckets: %+v", s.Series[len(s.Series)-2:])
	}
	if len(s.Causes) != 3 || s.Causes[0].ID != "worker_died" || s.Causes[0].Count != 2 || s.Causes[0].Latest.RequestID != "died-7" {
		t.Errorf("causes: %+v", s.Causes)
	}
	p := s.Pool
	if p == nil || p.Busy != 2 || p.Idle != 2 || p.Total != 4 || len(p.Workers) != 4 {
		t.Fatalf("pool: %+v", p)
	}
	if w := p.Workers[0]; w.PID != 12 || !w.Busy || w.URI != "/sleep.php?s=5&token=abc" || w.Script != "/srv/www/sleep.php" {
		t.Errorf("longest-running worker first: %+v", w)
	}
	for _, w := range p.Workers {
		if w.PID == 14 && w.Busy {
			t.Error("the status poll's worker counts as busy")
		}
	}
}

func TestDashboardIsServedWithAStrictPolicy(t *testing.T) {
	h := &Handler{}
	resp := get(t, h, "/")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `src="assets/app.js"`) {
		t.Fatalf("GET /: %d\n%s", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q", csp)
	}
	for _, a := range []struct{ path, ctype string }{
		{"/assets/app.js", "javascript"},
		{"/assets/style.css", "text/css"},
	} {
		resp := get(t, h, a.path)
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), a.ctype) {
			t.Errorf("GET %s: %d %s", a.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	// Request data reaches the page as text only.
	js, _ := assets.ReadFile("assets/app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	if resp := get(t, h, "/nope"); resp.StatusCode != 404 {
		t.Errorf("GET /nope: %d", resp.StatusCode)
	}
}

// Serve ends the event streams when its context ends, so that a dashboard
// left open does not hold up fcgiscope's exit.
func TestServeStopsWithOpenEventStreams(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Recorder{}
	h := &Handler{Recorder: r}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- h.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/api/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, func() bool { return r.subscribers() == 1 })
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve returned %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("Serve did not return within 3s of its context ending")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Serve took %v to stop", d)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Logf("stream ended with %v", err)
	}
	waitFor(t, func() bool { return r.subscribers() == 0 })
}

// Wrong tokens are logged with the client's address and answered one at a
// time, each after a delay, however many connections send them; the right
// token is not slowed down.
func TestWrongTokensAreSlowedAndLogged(t *testing.T) {
	var logs bytes.Buffer
	h := &Handler{Recorder: &Recorder{}, Token: "correct-horse-battery-staple", Log: zerolog.New(&syncWriter{w: &logs})}
	const guesses = 4
	start := time.Now()
	var wg sync.WaitGroup
	for i := range guesses {
		wg.Go(func() {
			resp := get(t, h, "/api/requests", "Authorization", "Bearer guess-"+strconv.Itoa(i), "RemoteAddr", "198.51.100.7:4000")
			if resp.StatusCode != 401 {
				t.Errorf("a wrong token got %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); took < guesses*wrongTokenDelay {
		t.Errorf("%d wrong tokens answered in %s: not one at a time (%s each)", guesses, took, wrongTokenDelay)
	}
	if n := strings.Count(logs.String(), "198.51.100.7:4000"); n != guesses {
		t.Errorf("%d log lines name the client, want %d:\n%s", n, guesses, logs.String())
	}
	if resp := get(t, h, "/api/requests", "Authorization", "Bearer correct-horse-battery-staple"); resp.StatusCode != 200 {
		t.Errorf("the right token got %d", resp.StatusCode)
	}
	// A first visit without any token is not a guess: no delay, no line.
	logs.Reset()
	if resp := get(t, h, "/api/requests"); resp.StatusCode != 401 || logs.Len() != 0 {
		t.Errorf("no token: %d, logged %q", resp.StatusCode, logs.String())
	}
	for _, guess := range []string{"", "c", "correct-horse-battery-stapl", "correct-horse-battery-staple-and-more"} {
		if h.tokenMatches(guess) {
			t.Errorf("%q matches", guess)
		}
	}
}

// syncWriter lets concurrent loggers share a buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
