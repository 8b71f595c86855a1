package web

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// DefaultRecent is how many requests a Recorder keeps when its Size is 0.
const DefaultRecent = 1000

// Bounds on what a Recorder keeps of one request, so that the ring's memory
// stays fixed whatever the clients send: a URI may be up to a megabyte of
// FastCGI params.
const (
	// maxStderr bounds the stderr excerpt kept per request.
	maxStderr = 4 << 10
	// maxField bounds the strings kept per request (URI, script, ...).
	maxField = 2 << 10
	// subscriberBuffer is how many events a slow event stream may lag
	// behind before events are dropped for it.
	subscriberBuffer = 64
	// maxSubscribers bounds the event streams open at once.
	maxSubscribers = 32
)

// PoolStatus gives the latest status of the php-fpm pool, as
// *fpm.Poller does. The Status returned must not be modified.
type PoolStatus interface {
	Latest() (st *fpm.Status, at time.Time, ok bool)
}

// EventCounts gives how many events of each kind php-fpm's error log had,
// as *fpm.Follower does.
type EventCounts interface {
	Counts() map[fpm.EventKind]int64
}

// Recorder is the diagnostics.Sink behind the admin endpoint. For every
// finished request it updates the Prometheus metrics, keeps a summary in a
// fixed-size ring of the most recent requests, and hands the summary to the
// event streams that are open, without ever waiting for them: a stream that
// falls behind loses events, which are counted.
//
// The zero value is ready to use. Fields must be set before the first call
// to Observe or the first request to a Handler that uses the Recorder, and
// not changed afterwards.
type Recorder struct {
	// Size is how many recent requests are kept; 0 means DefaultRecent.
	Size int
	// InFlight and Queued, when set, report the requests in flight to
	// the upstream and those waiting for a slot; they are read when the
	// metrics are scraped and the dashboard refreshes.
	InFlight func() float64
	Queued   func() float64
	// UpstreamIdle, when set, reports the idle upstream connections kept
	// open for later requests, each holding a php-fpm worker.
	UpstreamIdle func() float64
	// Pool, when set, gives the php-fpm pool's status for the pool
	// metrics and the dashboard's list of workers.
	Pool PoolStatus
	// MaxChildren, when positive, is the pool's pm.max_children, exported
	// as fcgiscope_fpm_max_children with PoolName as its pool label.
	MaxChildren int
	PoolName    string
	// FPMLog, when set, gives the counts of php-fpm's error-log events for
	// fcgiscope_fpm_log_events_total.
	FPMLog EventCounts
	// Version and Commit are reported in fcgiscope_build_info and on the
	// dashboard.
	Version, Commit string

	once    sync.Once
	m       *metrics
	started time.Time

	mu     sync.Mutex // guards everything below up to subMu
	slots  []slot
	seq    uint64 // the id of the last request recorded; ids start at 1
	series series
	causes map[string]*causeStat
	total  uint64
	failed uint64

	subMu   sync.Mutex                    // serialises changes to subs
	subs    atomic.Pointer[[]*subscriber] // read without a lock by Observe
	dropped atomic.Uint64                 // events dropped for slow streams
}

var _ diagnostics.Sink = (*Recorder)(nil)

// slot is one place in the ring. Its stderr buffer is reused when the slot
// is overwritten, so that a warmed-up ring allocates nothing per request.
type slot struct {
	rec    record
	diag   *diagnostics.Diagnosis
	stderr []byte
	replay *replay // nil unless the request went wrong
}

// replay is what sending a request again needs, its secrets taken out
// before it is kept.
type replay struct {
	params       []fcgi.Pair
	redacted     []string
	body         []byte
	bodyRedacted bool
	bodyBytes    int64 // CONTENT_LENGTH
}

// newReplay returns what replaying t needs, or nil when the relay kept
// nothing of it.
func newReplay(t *outcome.Trace) *replay {
	if t.Params == "" {
		return nil
	}
	var all []fcgi.Pair
	if fcgi.ForEachPair([]byte(t.Params), func(name, value []byte) bool {
		all = append(all, fcgi.Pair{Name: string(name), Value: string(value)})
		return true
	}) != nil {
		return nil
	}
	rp := &replay{bodyBytes: t.ContentLength}
	rp.params, rp.redacted = diagnostics.RedactParams(all)
	if t.Body != nil {
		rp.body, rp.bodyRedacted = diagnostics.RedactBody(t.RequestType, t.Body)
		if !rp.bodyRedacted {
			rp.body = slices.Clone(t.Body)
		}
	}
	return rp
}

// mark names a moment in a request's life, as an offset from its start.
type mark int

const (
	markParamsDone mark = iota
	markQueueStart
	markQueueEnd
	markDialStart
	markDialEnd
	markStdinDone
	markFirstByte
	markEnd
	numMarks
)

// record is the summary of one request: small, of fixed size apart from its
// strings, and free of references to the Trace.
type record struct {
	seq        uint64
	requestID  string
	connID     uint64
	method     string
	uri        string
	script     string
	remoteAddr string
	host       string
	upstream   fcgi.Addr
	status     int
	cause      *diagnostics.Cause // nil when nothing went wrong
	start      time.Time
	// marks are offsets from start; -1 when the moment never came.
	marks        [numMarks]time.Duration
	bytesIn      int64
	bytesOut     int64
	stderrBytes  int64
	phase        outcome.Phase
	dialAttempts int
	resent       int
	keepConn     bool
	truncated    bool
	replaced     bool
}

// outcome is "ok" or the cause id, as in the access log and the metrics.
func (r *record) outcome() string {
	if r.cause == nil {
		return "ok"
	}
	return r.cause.ID
}

func (r *record) failed() bool { return r.cause != nil }

func (r *record) offset(m mark) (time.Duration, bool) {
	d := r.marks[m]
	return d, d >= 0
}

// duration is the time from BEGIN_REQUEST to the end.
func (r *record) duration() time.Duration {
	d, _ := r.offset(markEnd)
	return max(d, 0)
}

// between returns the time from a to b, or 0 when either never came.
func (r *record) between(a, b mark) time.Duration {
	x, okA := r.offset(a)
	y, okB := r.offset(b)
	if !okA || !okB {
		return 0
	}
	return y - x
}

// causeStat counts one cause and remembers its latest example.
type causeStat struct {
	cause  *diagnostics.Cause
	count  uint64
	latest record
}

// subscriber is one open event stream.
type subscriber struct {
	ch      chan record
	dropped atomic.Uint64
}

func (r *Recorder) init() {
	r.once.Do(func() {
		n := r.Size
		if n <= 0 {
			n = DefaultRecent
		}
		r.slots = make([]slot, n)
		r.causes = make(map[string]*causeStat)
		r.started = time.Now()
		r.m = newMetrics(r)
	})
}

// Record records t and its diagnosis d. It is called once per finished
// request and keeps neither.
func (r *Recorder) Record(t *outcome.Trace, d *diagnostics.Diagnosis) {
	r.init()
	var rec record
	rec.fill(t, d)
	r.m.observe(t, d, &rec)
	var rp *replay
	if d != nil {
		rp = newReplay(t)
	}

	r.mu.Lock()
	r.seq++
	rec.seq = r.seq
	s := &r.slots[(rec.seq-1)%uint64(len(r.slots))]
	s.rec, s.diag, s.replay = rec, d, rp
	s.stderr = append(s.stderr[:0], t.Stderr[:min(len(t.Stderr), maxStderr)]...)
	r.total++
	end := rec.start.Add(rec.duration())
	r.series.add(end, rec.duration(), rec.failed())
	if rec.failed() {
		r.failed++
		cs := r.causes[rec.cause.ID]
		if cs == nil {
			cs = &causeStat{cause: rec.cause}
			r.causes[rec.cause.ID] = cs
		}
		cs.count++
		cs.latest = rec
	}
	r.mu.Unlock()

	r.publish(&rec)
}

// fill sets rec from t and its diagnosis d.
func (rec *record) fill(t *outcome.Trace, d *diagnostics.Diagnosis) {
	rec.requestID = capString(t.RequestID)
	rec.connID = t.ConnID
	rec.method = capString(t.Method)
	rec.uri = capString(t.URI)
	rec.script = capString(t.Script)
	rec.remoteAddr = capString(t.RemoteAddr)
	rec.host = capString(t.Host)
	rec.upstream = t.Upstream
	rec.status = t.Status
	if d != nil {
		rec.cause = d.Cause
		if t.Err != nil && rec.status == 0 {
			rec.status = d.StatusCode()
		}
	}
	rec.start = t.Accepted
	for m, at := range [numMarks]time.Time{
		markParamsDone: t.ParamsDone,
		markQueueStart: t.QueueStart,
		markQueueEnd:   t.QueueEnd,
		markDialStart:  t.DialStart,
		markDialEnd:    t.DialEnd,
		markStdinDone:  t.StdinDone,
		markFirstByte:  t.FirstByte,
		markEnd:        t.End,
	} {
		rec.marks[m] = -1
		if !at.IsZero() && !t.Accepted.IsZero() {
			rec.marks[m] = at.Sub(t.Accepted)
		}
	}
	rec.bytesIn, rec.bytesOut = t.BytesIn, t.BytesOut
	rec.stderrBytes = t.StderrBytes
	rec.phase = t.Phase()
	rec.dialAttempts, rec.resent = t.DialAttempts, t.Resent
	rec.keepConn, rec.truncated, rec.replaced = t.KeepConn, t.Truncated, t.Replaced
}

// capString returns s, or a copy of its first maxField bytes when it is
// longer: a slice of s would keep all of it alive.
func capString(s string) string {
	if len(s) <= maxField {
		return s
	}
	return strings.Clone(s[:maxField])
}

// publish offers rec to every open event stream without waiting.
func (r *Recorder) publish(rec *record) {
	subs := r.subs.Load()
	if subs == nil {
		return
	}
	for _, s := range *subs {
		select {
		case s.ch <- *rec:
		default:
			s.dropped.Add(1)
			r.dropped.Add(1)
		}
	}
}

// subscribe opens an event stream; it reports false when too many are open.
func (r *Recorder) subscribe() (*subscriber, bool) {
	r.init()
	r.subMu.Lock()
	defer r.subMu.Unlock()
	var list []*subscriber
	if p := r.subs.Load(); p != nil {
		list = *p
	}
	if len(list) >= maxSubscribers {
		return nil, false
	}
	s := &subscriber{ch: make(chan record, subscriberBuffer)}
	// Copy, so that an Observe still reading the old list is unaffected.
	next := append(slices.Clip(list), s)
	r.subs.Store(&next)
	return s, true
}

// unsubscribe closes an event stream. Its channel is left open: an Observe
// that loaded the old list may still send to it.
func (r *Recorder) unsubscribe(s *subscriber) {
	r.subMu.Lock()
	defer r.subMu.Unlock()
	p := r.subs.Load()
	if p == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*p), func(x *subscriber) bool { return x == s })
	r.subs.Store(&next)
}

// subscribers returns the number of open event streams.
func (r *Recorder) subscribers() int {
	if p := r.subs.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// Dropped returns how many events were dropped for event streams that fell
// behind.
func (r *Recorder) Dropped() uint64 { return r.dropped.Load() }

// filter selects records for list.
type filter struct {
	outcome string // "", "ok" or "failed"
	cause   string // a cause id, or ""
}

func (f filter) match(rec *record) bool {
	switch f.outcome {
	case "ok":
		if rec.failed() {
			return false
		}
	case "failed":
		if !rec.failed() {
			return false
		}
	}
	return f.cause == "" || rec.outcome() == f.cause
}

// list returns up to limit records that match f, newest first.
func (r *Recorder) list(f filter, limit int) []record {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []record
	n := uint64(len(r.slots))
	for seq := r.seq; seq > 0 && r.seq-seq < n && len(out) < limit; seq-- {
		rec := &r.slots[(seq-1)%n].rec
		if f.match(rec) {
			out = append(out, *rec)
		}
	}
	return out
}

// after returns up to limit records newer than seq, oldest first, for an
// event stream that reconnects.
func (r *Recorder) after(seq uint64, limit int) []record {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := uint64(len(r.slots))
	first := seq + 1
	if r.seq >= n && first <= r.seq-n {
		first = r.seq - n + 1
	}
	if r.seq >= first && r.seq-first+1 > uint64(limit) {
		first = r.seq - uint64(limit) + 1
	}
	var out []record
	for s := first; s <= r.seq; s++ {
		out = append(out, r.slots[(s-1)%n].rec)
	}
	return out
}

// detail is one request in full.
type detail struct {
	rec    record
	diag   *diagnostics.Diagnosis
	stderr []byte
	replay *replay // shared: never changed once made
}

// get returns the request with the ring id seq.
func (r *Recorder) get(seq uint64) (detail, bool) {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := uint64(len(r.slots))
	if seq == 0 || seq > r.seq || r.seq-seq >= n {
		return detail{}, false
	}
	s := &r.slots[(seq-1)%n]
	return detail{rec: s.rec, diag: s.diag, stderr: slices.Clone(s.stderr), replay: s.replay}, true
}

// getRequestID returns the newest request with the given request id.
func (r *Recorder) getRequestID(id string) (detail, bool) {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	n := uint64(len(r.slots))
	for seq := r.seq; seq > 0 && r.seq-seq < n; seq-- {
		s := &r.slots[(seq-1)%n]
		if s.rec.requestID == id {
			return detail{rec: s.rec, diag: s.diag, stderr: slices.Clone(s.stderr), replay: s.replay}, true
		}
	}
	return detail{}, false
}

// stats is what the dashboard's summary needs from the Recorder.
type stats struct {
	total, failed uint64
	buckets       []bucketStats
	window        windowStats
	causes        []causeStat
}

// snapshot returns the counts, the latency series up to now and the causes
// seen, most frequent first.
func (r *Recorder) snapshot(now time.Time) stats {
	r.init()
	r.mu.Lock()
	defer r.mu.Unlock()
	st := stats{total: r.total, failed: r.failed, buckets: r.series.snapshot(now), window: r.series.window(now, summaryWindow)}
	for _, cs := range r.causes {
		st.causes = append(st.causes, *cs)
	}
	slices.SortFunc(st.causes, func(a, b causeStat) int {
		if a.count != b.count {
			if a.count > b.count {
				return -1
			}
			return 1
		}
		return strings.Compare(a.cause.ID, b.cause.ID)
	})
	return st
}
