package web

import (
	"errors"
	"reflect"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// DurationBuckets are the histogram buckets of the request timing metrics,
// in seconds: from a millisecond, a fast PHP page, to a minute, nginx's
// default fastcgi_read_timeout.
var DurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// statusClasses are the values of the status_class label, indexed by
// statusClass.
var statusClasses = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "other"}

func statusClass(status int) int {
	if status >= 100 && status < 600 {
		return status/100 - 1
	}
	return len(statusClasses) - 1
}

// workerDeathCauses are the causes counted in fcgiscope_worker_deaths_total.
var workerDeathCauses = []*diagnostics.Cause{diagnostics.CauseWorkerTimeout, diagnostics.CauseWorkerCrashed, diagnostics.CauseOOMKilled, diagnostics.CauseWorkerDied}

// metrics are a Recorder's Prometheus metrics, in a registry of their own.
type metrics struct {
	reg *prometheus.Registry

	requests *prometheus.CounterVec
	// cells caches the children of requests, by outcome (0 for "ok",
	// 1+i for diagnostics.Causes[i]) and status class, so that counting
	// a request costs no label lookup.
	cells     []atomic.Pointer[counterRef]
	causeIdx  map[string]int
	duration  prometheus.Histogram
	connect   prometheus.Histogram
	queue     prometheus.Histogram
	ttfb      prometheus.Histogram
	deaths    []prometheus.Counter // by workerDeathCauses
	bytesIn   prometheus.Counter
	bytesOut  prometheus.Counter
	dialError *prometheus.CounterVec
	// newConns and reusedConns count the requests by how they reached
	// the upstream: on a connection of their own or on a kept one.
	newConns, reusedConns prometheus.Counter
	resent                prometheus.Counter
}

type counterRef struct{ prometheus.Counter }

func newMetrics(r *Recorder) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), causeIdx: make(map[string]int)}
	for i, c := range diagnostics.Causes {
		m.causeIdx[c.ID] = i
	}
	m.cells = make([]atomic.Pointer[counterRef], (len(diagnostics.Causes)+1)*len(statusClasses))
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fcgiscope_requests_total",
		Help: "Finished requests, by outcome (ok or the cause id) and HTTP status class.",
	}, []string{"outcome", "status_class"})
	hist := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: DurationBuckets})
	}
	m.duration = hist("fcgiscope_request_duration_seconds", "Time from BEGIN_REQUEST to the end of the request.")
	m.connect = hist("fcgiscope_connect_duration_seconds", "Time to establish a new upstream connection, for requests that got one; requests on a kept connection are not counted.")
	m.queue = hist("fcgiscope_queue_wait_seconds", "Time spent waiting for an upstream slot (FCGISCOPE_MAX_CONNS), for requests that waited.")
	m.ttfb = hist("fcgiscope_time_to_first_byte_seconds", "Time from BEGIN_REQUEST to the first response byte from the upstream, for requests that got one.")
	deaths := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fcgiscope_worker_deaths_total",
		Help: "php-fpm workers that died during a request, by cause.",
	}, []string{"cause"})
	for _, c := range workerDeathCauses {
		m.deaths = append(m.deaths, deaths.WithLabelValues(c.ID))
	}
	m.bytesIn = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fcgiscope_request_bytes_total",
		Help: "Request body bytes received from the web server.",
	})
	m.bytesOut = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fcgiscope_response_bytes_total",
		Help: "Response bytes sent to the web server, replacement responses included.",
	})
	m.dialError = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fcgiscope_upstream_dial_errors_total",
		Help: "Failed connections to the upstream, by errno name (none when the error had no errno, such as a DNS failure).",
	}, []string{"errno"})
	conns := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fcgiscope_upstream_connections_total",
		Help: "Requests by the upstream connection they went on: new, or reused when FCGISCOPE_UPSTREAM_KEEPALIVE keeps connections.",
	}, []string{"kind"})
	m.newConns, m.reusedConns = conns.WithLabelValues("new"), conns.WithLabelValues("reused")
	m.resent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fcgiscope_requests_resent_total",
		Help: "Times a bodyless GET, HEAD or OPTIONS was sent again on a new connection after php-fpm closed one without answering: while reloading, or as it closed a kept connection.",
	})
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "fcgiscope_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": orDefault(r.Version, "dev"), "commit": r.Commit, "goversion": runtime.Version()},
	})
	build.Set(1)
	m.reg.MustRegister(m.requests, m.duration, m.connect, m.queue, m.ttfb, deaths, m.bytesIn, m.bytesOut, m.dialError, conns, m.resent, build,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "fcgiscope_admin_events_dropped_total",
			Help: "Request events not sent to a dashboard whose event stream fell behind.",
		}, func() float64 { return float64(r.dropped.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fcgiscope_admin_event_streams",
			Help: "Dashboard event streams open now.",
		}, func() float64 { return float64(r.subscribers()) }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if f := r.InFlight; f != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fcgiscope_requests_in_flight",
			Help: "Requests in flight between the web server and the upstream.",
		}, f))
	}
	if f := r.Queued; f != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fcgiscope_requests_queued",
			Help: "Requests waiting for an upstream slot (FCGISCOPE_MAX_CONNS).",
		}, f))
	}
	if f := r.UpstreamIdle; f != nil {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "fcgiscope_upstream_idle_connections",
			Help: "Idle php-fpm connections kept open for the next request (FCGISCOPE_UPSTREAM_KEEPALIVE); each holds a php-fpm worker.",
		}, f))
	}
	if p := poolOf(r); p != nil {
		m.reg.MustRegister(newPoolCollector(p))
	}
	if r.MaxChildren > 0 {
		// A constant beside the in-flight gauge: how close the pool is
		// to running out of workers.
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "fcgiscope_fpm_max_children",
			Help:        "The pool's pm.max_children, from its configuration.",
			ConstLabels: prometheus.Labels{"pool": r.PoolName},
		}, func() float64 { return float64(r.MaxChildren) }))
	}
	if l := r.FPMLog; l != nil && !isNil(l) {
		m.reg.MustRegister(&logCollector{log: l, desc: prometheus.NewDesc("fcgiscope_fpm_log_events_total",
			"Events in php-fpm's error log since fcgiscope started reading it, by kind (signal, timed_out, max_children, ...).", []string{"kind"}, nil)})
	}
	return m
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// poolOf returns the Recorder's PoolStatus, or nil when there is none,
// including a nil *fpm.Poller stored in the interface.
func poolOf(r *Recorder) PoolStatus {
	if r.Pool == nil || isNil(r.Pool) {
		return nil
	}
	return r.Pool
}

// isNil reports whether v holds a nil pointer, which a nil *fpm.Poller
// assigned to an interface field is.
func isNil(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Pointer && rv.IsNil()
}

// logCollector reads the counts of php-fpm's error-log events at scrape
// time.
type logCollector struct {
	log  EventCounts
	desc *prometheus.Desc
}

// Describe sends the description of the log event counter.
func (c *logCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect sends one counter per event kind seen.
func (c *logCollector) Collect(ch chan<- prometheus.Metric) {
	for kind, n := range c.log.Counts() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(n), string(kind))
	}
}

// observe counts one finished request.
func (m *metrics) observe(t *outcome.Trace, d *diagnostics.Diagnosis, rec *record) {
	cls := statusClass(rec.status)
	if d == nil {
		m.cell(0, cls, "ok").Inc()
	} else if i, ok := m.causeIdx[d.Cause.ID]; ok {
		m.cell(i+1, cls, d.Cause.ID).Inc()
	} else {
		m.requests.WithLabelValues(d.Cause.ID, statusClasses[cls]).Inc()
	}
	observe := func(h prometheus.Histogram, v float64) { h.Observe(v) }
	if t.Span != nil {
		// An exemplar leads from a latency spike to a trace of it.
		ex := prometheus.Labels{"trace_id": t.Span.TraceID()}
		observe = func(h prometheus.Histogram, v float64) { h.(prometheus.ExemplarObserver).ObserveWithExemplar(v, ex) }
	}
	observe(m.duration, t.Duration().Seconds())
	switch {
	case t.DialStart.IsZero() || t.DialEnd.IsZero():
	case t.UpstreamReused:
		m.reusedConns.Inc()
	default:
		m.newConns.Inc()
		observe(m.connect, t.ConnectTime().Seconds())
	}
	if t.Resent > 0 {
		m.resent.Add(float64(t.Resent))
	}
	if !t.QueueStart.IsZero() && !t.QueueEnd.IsZero() {
		observe(m.queue, t.QueueTime().Seconds())
	}
	if !t.FirstByte.IsZero() {
		observe(m.ttfb, t.TimeToFirstByte().Seconds())
	}
	if t.BytesIn > 0 {
		m.bytesIn.Add(float64(t.BytesIn))
	}
	if t.BytesOut > 0 {
		m.bytesOut.Add(float64(t.BytesOut))
	}
	if d == nil || t.Err == nil {
		return
	}
	for i, c := range workerDeathCauses {
		if d.Cause.ID == c.ID {
			m.deaths[i].Inc()
		}
	}
	var de *outcome.DialError
	if errors.As(t.Err, &de) {
		errno := d.Evidence["errno"]
		if errno == "" {
			errno = "none"
		}
		m.dialError.WithLabelValues(errno).Inc()
	}
}

// cell returns the requests counter for outcome index i and status class
// cls, creating the child on first use.
func (m *metrics) cell(i, cls int, outcome string) prometheus.Counter {
	p := &m.cells[i*len(statusClasses)+cls]
	if c := p.Load(); c != nil {
		return c.Counter
	}
	// Two first uses at once both get the same child from the vector.
	c := &counterRef{m.requests.WithLabelValues(outcome, statusClasses[cls])}
	p.Store(c)
	return c.Counter
}

// poolCollector reads the php-fpm pool's latest status when the metrics are
// scraped.
type poolCollector struct {
	pool                                            PoolStatus
	processes, total, maxChildren, slow, queue, age *prometheus.Desc
	polls, pollFailures                             *prometheus.Desc
}

func newPoolCollector(p PoolStatus) *poolCollector {
	return &poolCollector{
		pool: p,
		processes: prometheus.NewDesc("fcgiscope_fpm_processes",
			"php-fpm workers by state: active ones serve a request (the status poll's own excepted), kept ones wait for their next request on a kept connection (php-fpm's status page counts them as active), idle ones wait for a new connection.", []string{"state"}, nil),
		total: prometheus.NewDesc("fcgiscope_fpm_processes_total",
			"php-fpm workers in the pool.", nil, nil),
		maxChildren: prometheus.NewDesc("fcgiscope_fpm_max_children_reached_total",
			"Times the pool hit pm.max_children since php-fpm started, as php-fpm counts them.", nil, nil),
		slow: prometheus.NewDesc("fcgiscope_fpm_slow_requests_total",
			"Requests that exceeded request_slowlog_timeout since php-fpm started, as php-fpm counts them.", nil, nil),
		queue: prometheus.NewDesc("fcgiscope_fpm_listen_queue",
			"Connections waiting in the pool's listen queue (always 0 on a unix socket).", nil, nil),
		age: prometheus.NewDesc("fcgiscope_fpm_status_age_seconds",
			"Age of the php-fpm status the pool metrics come from.", nil, nil),
		polls: prometheus.NewDesc("fcgiscope_fpm_status_polls_total",
			"Polls of php-fpm's status page.", nil, nil),
		pollFailures: prometheus.NewDesc("fcgiscope_fpm_status_poll_failures_total",
			"Polls of php-fpm's status page that failed or got no answer in time.", nil, nil),
	}
}

// Describe sends the descriptions of the pool metrics.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.processes, c.total, c.maxChildren, c.slow, c.queue, c.age, c.polls, c.pollFailures} {
		ch <- d
	}
}

// Collect sends the pool metrics from the latest status; none before the
// first status arrives.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	if s, ok := c.pool.(interface{ Stats() fpm.PollerStats }); ok {
		st := s.Stats()
		ch <- prometheus.MustNewConstMetric(c.polls, prometheus.CounterValue, float64(st.Polls))
		ch <- prometheus.MustNewConstMetric(c.pollFailures, prometheus.CounterValue, float64(st.Failures))
	}
	st, at, ok := c.pool.Latest()
	if !ok || st == nil {
		return
	}
	busy, _ := st.Busiest()
	kept := st.Kept()
	idle := max(st.TotalProcesses-busy-kept, 0)
	ch <- prometheus.MustNewConstMetric(c.processes, prometheus.GaugeValue, float64(idle), "idle")
	ch <- prometheus.MustNewConstMetric(c.processes, prometheus.GaugeValue, float64(busy), "active")
	ch <- prometheus.MustNewConstMetric(c.processes, prometheus.GaugeValue, float64(kept), "kept")
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(st.TotalProcesses))
	ch <- prometheus.MustNewConstMetric(c.maxChildren, prometheus.CounterValue, float64(st.MaxChildrenReached))
	ch <- prometheus.MustNewConstMetric(c.slow, prometheus.CounterValue, float64(st.SlowRequests))
	ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, float64(st.ListenQueue))
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, time.Since(at).Seconds())
}

// Registry returns the registry of the Recorder's metrics, which the
// Handler serves at /metrics; callers may register more collectors in it.
func (r *Recorder) Registry() *prometheus.Registry {
	r.init()
	return r.m.reg
}
