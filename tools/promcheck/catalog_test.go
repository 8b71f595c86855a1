package promcheck

import (
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// series is what a catalog knows of one series name.
type series struct {
	// labels are the names of the labels fcgiscope puts on the series.
	labels map[string]bool
	// values are, for the labels whose values form a closed set, the
	// values the label may take; labels missing here may take any.
	values map[string]map[string]bool
	// histogram is the name of the classic histogram the series is a
	// part of (_bucket, _sum or _count), or "".
	histogram string
}

// catalog maps each series name fcgiscope exports to what is known of it.
type catalog map[string]*series

// openLabels are labels whose values depend on the requests or the host
// rather than on fcgiscope: any value is accepted for them.
var openLabels = map[string]map[string]bool{
	"fcgiscope_upstream_dial_errors_total": {"errno": true},
	"fcgiscope_fpm_log_events_total":       {"kind": true},
	"fcgiscope_build_info":                 {"version": true, "commit": true, "goversion": true},
}

// fakePool is a php-fpm pool that has answered its status page, and a
// poller that has polled it, so that every pool metric is collected.
type fakePool struct{}

func (fakePool) Latest() (*fpm.Status, time.Time, bool) {
	return &fpm.Status{
		Pool: "www", ProcessManager: "dynamic",
		ListenQueue: 1, IdleProcesses: 2, ActiveProcesses: 3, TotalProcesses: 5,
		MaxActiveProcesses: 5, MaxChildrenReached: 1, SlowRequests: 1,
	}, time.Now().Add(-time.Second), true
}

func (fakePool) Stats() fpm.PollerStats { return fpm.PollerStats{Polls: 2, Answers: 1, Failures: 1} }

// fakeLog is a php-fpm error log with one event.
type fakeLog struct{}

func (fakeLog) Counts() map[fpm.EventKind]int64 {
	return map[fpm.EventKind]int64{fpm.EventMaxChildren: 1}
}

// exported returns the series fcgiscope's admin endpoint exports: it builds
// a Recorder with every optional source set, so that every optional
// collector registers, records requests enough to give every vector a
// child, and gathers its registry.
func exported(t testing.TB) catalog {
	t.Helper()
	r := &web.Recorder{
		InFlight: func() float64 { return 1 },
		Queued:   func() float64 { return 1 },
		Pool:     fakePool{},
		FPMLog:   fakeLog{},
		Version:  "test",
		// The pool's pm.max_children, as serve sets it from the
		// configuration.
		MaxChildren: 5,
		PoolName:    "www",
	}
	c := &diagnostics.Classifier{}
	// One completed request per status class (0 is "other"), one that
	// waited in the queue, and one refused at the dial, which counts a
	// dial error and a failure cause.
	for i, status := range []int{150, 250, 350, 450, 550, 0} {
		tr := okTrace(i)
		tr.Status = status
		observe(r, c, tr)
	}
	queued := okTrace(10)
	queued.QueueStart = queued.ParamsDone
	queued.QueueEnd = queued.ParamsDone.Add(time.Millisecond)
	observe(r, c, queued)
	observe(r, c, refusedTrace(11))

	mfs, err := r.Registry().Gather()
	if err != nil {
		t.Fatalf("gathering fcgiscope's metrics: %v", err)
	}
	cat := catalog{}
	for _, mf := range mfs {
		addFamily(cat, mf)
	}
	// Every cause is a possible outcome, observed or not.
	outcomes := map[string]bool{"ok": true}
	for _, c := range diagnostics.Causes {
		outcomes[c.ID] = true
	}
	req := cat["fcgiscope_requests_total"]
	if req == nil || !req.labels["outcome"] {
		t.Fatalf("fcgiscope_requests_total{outcome} is not exported: the Recorder changed, fix exported()")
	}
	req.values["outcome"] = outcomes
	return cat
}

// observe records a trace with its diagnosis, as fcgiscope's Explainer
// hands it to the Recorder.
func observe(r *web.Recorder, c *diagnostics.Classifier, t *outcome.Trace) {
	r.Record(t, c.Diagnose(t))
}

// addFamily adds the series names of one gathered family to cat: a
// classic histogram is selected as _bucket, _sum and _count, a summary as
// itself, _sum and _count.
func addFamily(cat catalog, mf *dto.MetricFamily) {
	name := mf.GetName()
	labels := map[string]bool{}
	values := map[string]map[string]bool{}
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = true
			if openLabels[name][lp.GetName()] {
				continue
			}
			if values[lp.GetName()] == nil {
				values[lp.GetName()] = map[string]bool{}
			}
			values[lp.GetName()][lp.GetValue()] = true
		}
	}
	// Only fcgiscope's own label values are a closed set: the Go and
	// process collectors' are not ours to check.
	closed := values
	if !strings.HasPrefix(name, "fcgiscope_") {
		closed = map[string]map[string]bool{}
	}
	with := func(extra string) map[string]bool {
		l := maps.Clone(labels)
		if extra != "" {
			l[extra] = true
		}
		return l
	}
	switch mf.GetType() {
	case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
		cat[name+"_bucket"] = &series{labels: with("le"), values: closed, histogram: name}
		cat[name+"_sum"] = &series{labels: with(""), values: closed, histogram: name}
		cat[name+"_count"] = &series{labels: with(""), values: closed, histogram: name}
	case dto.MetricType_SUMMARY:
		cat[name] = &series{labels: with("quantile"), values: closed}
		cat[name+"_sum"] = &series{labels: with(""), values: closed}
		cat[name+"_count"] = &series{labels: with(""), values: closed}
	default:
		cat[name] = &series{labels: with(""), values: closed}
	}
}

// withUp returns cat with Prometheus's own `up`, which the files may use
// for scrape health.
func (cat catalog) withUp() catalog {
	c := maps.Clone(cat)
	c["up"] = &series{labels: map[string]bool{}, values: map[string]map[string]bool{}}
	return c
}

// names returns the catalog's series names, sorted.
func (cat catalog) names() []string {
	return slices.Sorted(maps.Keys(cat))
}

func sortedKeys(m map[string]bool) []string {
	return slices.Sorted(maps.Keys(m))
}

// okTrace is a request php-fpm answered in about 20 ms on a new
// connection, as internal/diagnostics/web's tests make them.
func okTrace(i int) *outcome.Trace {
	end := time.Now()
	start := end.Add(-20 * time.Millisecond)
	return &outcome.Trace{
		RequestID:  fmt.Sprintf("ok-%d", i),
		ConnID:     uint64(i),
		Method:     "GET",
		URI:        "/hello.php",
		Script:     "/srv/www/hello.php",
		RemoteAddr: "203.0.113.9",
		Upstream:   fcgi.Addr{Network: "unix", Address: "/run/php/php-fpm.sock"},
		Accepted:   start,
		ParamsDone: start.Add(100 * time.Microsecond),
		DialStart:  start.Add(200 * time.Microsecond),
		DialEnd:    start.Add(300 * time.Microsecond),
		StdinDone:  start.Add(400 * time.Microsecond),
		FirstByte:  start.Add(19 * time.Millisecond),
		End:        end,
		Status:     200,
		BytesIn:    10,
		BytesOut:   1000,
		Resent:     1,
	}
}

// refusedTrace is a request to a TCP port nobody listens on.
func refusedTrace(i int) *outcome.Trace {
	end := time.Now()
	start := end.Add(-time.Millisecond)
	addr := fcgi.Addr{Network: "tcp", Address: "127.0.0.1:1"}
	return &outcome.Trace{
		RequestID:  fmt.Sprintf("refused-%d", i),
		Method:     "GET",
		URI:        "/api.php",
		Script:     "/srv/www/api.php",
		Upstream:   addr,
		Accepted:   start,
		ParamsDone: start,
		DialStart:  start,
		End:        end,
		BytesOut:   500,
		Replaced:   true,
		Err: &outcome.DialError{Addr: addr, Err: &net.OpError{
			Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED),
		}},
	}
}
