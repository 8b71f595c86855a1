package web

import (
	"encoding/json"
	"maps"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
)

// DefaultLimit is how many requests /api/requests returns without ?limit.
const DefaultLimit = 100

// Request is one request in /api/requests and in the event stream.
type Request struct {
	// ID is the request's place in the Recorder, for /api/requests/{id}.
	ID uint64 `json:"id"`
	// RequestID is nginx's $request_id, or the id fcgiscope made up.
	RequestID string `json:"request_id"`
	// Time is when the web server's BEGIN_REQUEST arrived, End when the
	// request finished; the list is in the order of End.
	Time   time.Time `json:"time"`
	End    time.Time `json:"end"`
	Method string    `json:"method"`
	// URI is REQUEST_URI; with minimal detail, without its query string.
	URI        string `json:"uri"`
	Script     string `json:"script,omitempty"`
	Host       string `json:"host,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	Upstream   string `json:"upstream,omitempty"`
	Status     int    `json:"status"`
	// Outcome is "ok" or the cause id; Failed is true for the latter.
	Outcome    string  `json:"outcome"`
	Failed     bool    `json:"failed"`
	Title      string  `json:"title,omitempty"`
	DurationMS float64 `json:"duration_ms"`
	QueueMS    float64 `json:"queue_ms"`
	ConnectMS  float64 `json:"connect_ms"`
	TTFBMS     float64 `json:"ttfb_ms"`
	BytesIn    int64   `json:"bytes_in"`
	BytesOut   int64   `json:"bytes_out"`
	Truncated  bool    `json:"truncated,omitempty"`
	Replaced   bool    `json:"replaced,omitempty"`
	// Redacted is true when the detail policy hid paths, addresses and
	// explanations from this client.
	Redacted bool `json:"redacted,omitempty"`
}

// RequestDetail is one request in full, from /api/requests/{id}.
type RequestDetail struct {
	Request
	Phase        string            `json:"phase"`
	Detail       string            `json:"detail,omitempty"`
	Hints        []string          `json:"hints,omitempty"`
	Evidence     map[string]string `json:"evidence,omitempty"`
	FPMPid       int               `json:"fpm_pid,omitempty"`
	Timeline     []Step            `json:"timeline"`
	Spans        []Span            `json:"spans"`
	Stderr       string            `json:"stderr,omitempty"`
	StderrBytes  int64             `json:"stderr_bytes"`
	ConnID       uint64            `json:"conn_id"`
	KeepConn     bool              `json:"keep_conn"`
	DialAttempts int               `json:"dial_attempts,omitempty"`
	Resent       int               `json:"resent,omitempty"`
	// ReplayCommand sends the request again, for the requests that keep
	// what a replay needs, and only to clients shown full detail.
	ReplayCommand string `json:"replay_command,omitempty"`
}

// Step is a moment in a request's life, as an offset from BEGIN_REQUEST.
type Step struct {
	Name     string  `json:"name"`
	Label    string  `json:"label"`
	OffsetMS float64 `json:"offset_ms"`
}

// Span is a stretch of a request's life: queued, connecting, sending,
// waiting, streaming.
type Span struct {
	Name    string  `json:"name"`
	Label   string  `json:"label"`
	StartMS float64 `json:"start_ms"`
	EndMS   float64 `json:"end_ms"`
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// request renders rec for a client that gets full detail or not.
func (rec *record) request(full bool) Request {
	q := Request{
		ID:         rec.seq,
		RequestID:  rec.requestID,
		Time:       rec.start,
		End:        rec.start.Add(rec.duration()),
		Method:     rec.method,
		URI:        rec.uri,
		Host:       rec.host,
		Status:     rec.status,
		Outcome:    rec.outcome(),
		Failed:     rec.failed(),
		DurationMS: msOf(rec.duration()),
		QueueMS:    msOf(rec.between(markQueueStart, markQueueEnd)),
		ConnectMS:  msOf(rec.between(markDialStart, markDialEnd)),
		BytesIn:    rec.bytesIn,
		BytesOut:   rec.bytesOut,
		Truncated:  rec.truncated,
		Replaced:   rec.replaced,
	}
	if fb, ok := rec.offset(markFirstByte); ok {
		q.TTFBMS = msOf(fb)
	}
	if rec.cause != nil {
		q.Title = rec.cause.Title
	}
	if full {
		q.Script, q.RemoteAddr, q.Upstream = rec.script, rec.remoteAddr, rec.upstream.String()
		q.URI = diagnostics.RedactQuery(q.URI)
	} else {
		q.URI, _, _ = strings.Cut(q.URI, "?")
		q.Redacted = true
	}
	return q
}

var stepLabels = [numMarks]struct{ name, label string }{
	markParamsDone: {"params_done", "request head read from the web server"},
	markQueueStart: {"queue_start", "waiting for an upstream slot"},
	markQueueEnd:   {"queue_end", "upstream slot granted"},
	markDialStart:  {"dial_start", "connecting to php-fpm"},
	markDialEnd:    {"dial_end", "connected"},
	markStdinDone:  {"stdin_done", "request body sent"},
	markFirstByte:  {"first_byte", "first response byte"},
	markEnd:        {"end", "finished"},
}

// requestDetail renders d in full, or with minimal detail.
func (d *detail) requestDetail(full bool) RequestDetail {
	rec := &d.rec
	out := RequestDetail{
		Request:      rec.request(full),
		Phase:        string(rec.phase),
		StderrBytes:  rec.stderrBytes,
		ConnID:       rec.connID,
		KeepConn:     rec.keepConn,
		DialAttempts: rec.dialAttempts,
		Resent:       rec.resent,
		Timeline:     []Step{{Name: "begin", Label: "request received from the web server", OffsetMS: 0}},
		Spans:        []Span{},
	}
	for m := range numMarks {
		if off, ok := rec.offset(m); ok {
			s := Step{Name: stepLabels[m].name, Label: stepLabels[m].label, OffsetMS: msOf(off)}
			if m == markEnd && rec.cause != nil {
				s.Label = "failed: " + rec.cause.ID
			}
			out.Timeline = append(out.Timeline, s)
		}
	}
	slices.SortStableFunc(out.Timeline, func(a, b Step) int {
		switch {
		case a.OffsetMS < b.OffsetMS:
			return -1
		case a.OffsetMS > b.OffsetMS:
			return 1
		}
		return 0
	})
	span := func(name, label string, from, to mark) {
		a, okA := rec.offset(from)
		b, okB := rec.offset(to)
		if okA && okB && b >= a {
			out.Spans = append(out.Spans, Span{Name: name, Label: label, StartMS: msOf(a), EndMS: msOf(b)})
		}
	}
	if pd, ok := rec.offset(markParamsDone); ok {
		out.Spans = append(out.Spans, Span{Name: "params", Label: "reading the request head", StartMS: 0, EndMS: msOf(pd)})
	}
	span("queued", "waiting for a slot", markQueueStart, markQueueEnd)
	if _, ok := rec.offset(markDialEnd); ok {
		span("connect", "connecting", markDialStart, markDialEnd)
	} else {
		span("connect", "connecting (failed)", markDialStart, markEnd)
	}
	span("send", "sending the request", markDialEnd, markStdinDone)
	if _, ok := rec.offset(markFirstByte); ok {
		waitFrom := markDialEnd
		if _, ok := rec.offset(markStdinDone); ok {
			waitFrom = markStdinDone
		}
		span("wait", "waiting for php-fpm", waitFrom, markFirstByte)
		span("stream", "receiving the response", markFirstByte, markEnd)
	} else if _, ok := rec.offset(markDialEnd); ok {
		span("wait", "waiting for php-fpm", markDialEnd, markEnd)
	}
	if !full {
		return out
	}
	if d.diag != nil {
		out.Detail = d.diag.Detail
		out.Hints = d.diag.Hints
		out.Evidence = maps.Clone(d.diag.Evidence)
		out.FPMPid = d.diag.FPMPid
	}
	out.Stderr = strings.ToValidUTF8(string(d.stderr), "\uFFFD")
	return out
}

func (h *Handler) serveRequests(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var f filter
	switch o := q.Get("outcome"); o {
	case "", "ok", "failed":
		f.outcome = o
	default:
		writeError(w, http.StatusBadRequest, "outcome must be ok or failed")
		return
	}
	if c := q.Get("cause"); c != "" {
		if causeByID(c) == nil {
			writeError(w, http.StatusBadRequest, "no cause "+strconv.Quote(c)+" in the catalogue")
			return
		}
		f.cause = c
	}
	limit := DefaultLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "limit must be a whole number of at least 1")
			return
		}
		limit = n
	}
	full := h.full(r)
	recs := h.rec.list(f, limit)
	out := make([]Request, 0, len(recs))
	for i := range recs {
		out = append(out, recs[i].request(full))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) serveRequest(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, ok := h.lookup(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no request "+strconv.Quote(id)+" among the recent ones; older requests are only in the log")
		return
	}
	full := h.full(r)
	out := d.requestDetail(full)
	if full && d.replay != nil {
		out.ReplayCommand = replayCommand(d.rec, r.Host)
	}
	writeJSON(w, http.StatusOK, out)
}

// lookup finds a recent request by its id in the ring (the dashboard's) or
// by its request id (the error page's and the log's).
func (h *Handler) lookup(id string) (detail, bool) {
	if n, err := strconv.ParseUint(id, 10, 64); err == nil {
		if d, ok := h.rec.get(n); ok {
			return d, true
		}
	}
	return h.rec.getRequestID(id)
}

// Summary is what the dashboard shows besides the table of requests.
type Summary struct {
	Now       time.Time `json:"now"`
	Version   string    `json:"version"`
	Commit    string    `json:"commit,omitempty"`
	GoVersion string    `json:"go_version"`
	Upstream  string    `json:"upstream,omitempty"`
	Started   time.Time `json:"started"`
	// Detail is "full" or "minimal": what this client is shown.
	Detail string `json:"detail"`
	// Totals since the start.
	Requests uint64 `json:"requests"`
	Failed   uint64 `json:"failed"`
	// Over the last minute: requests per second, the share of failed
	// requests and the 95th percentile of their duration.
	WindowSeconds float64  `json:"window_s"`
	Rate          float64  `json:"rate"`
	ErrorRate     float64  `json:"error_rate"`
	P95MS         *float64 `json:"p95_ms"`
	InFlight      *float64 `json:"in_flight"`
	Queued        *float64 `json:"queued"`
	// Series has one entry per 5 seconds over the last 10 minutes.
	BucketSeconds int          `json:"bucket_s"`
	Series        []Bucket     `json:"series"`
	Causes        []CauseCount `json:"causes"`
	Pool          *Pool        `json:"pool"`
	Streams       int          `json:"event_streams"`
	Dropped       uint64       `json:"events_dropped"`
	Capacity      int          `json:"capacity"`
}

// Bucket is 5 seconds of the latency series. The percentiles are null for
// a bucket without requests.
type Bucket struct {
	Time   time.Time `json:"t"`
	Count  int       `json:"count"`
	Failed int       `json:"failed"`
	P50MS  *float64  `json:"p50_ms"`
	P95MS  *float64  `json:"p95_ms"`
	P99MS  *float64  `json:"p99_ms"`
	MaxMS  *float64  `json:"max_ms"`
}

// CauseCount is one cause with how often it happened since the start and
// its latest example.
type CauseCount struct {
	ID       string    `json:"id"`
	Title    string    `json:"title"`
	Status   int       `json:"status"`
	LogOnly  bool      `json:"log_only"`
	Count    uint64    `json:"count"`
	LastSeen time.Time `json:"last_seen"`
	Latest   Request   `json:"latest"`
}

// Pool is the php-fpm pool's latest status.
type Pool struct {
	Name           string    `json:"name"`
	ProcessManager string    `json:"process_manager"`
	At             time.Time `json:"at"`
	AgeSeconds     float64   `json:"age_s"`
	Busy           int       `json:"busy"`
	Idle           int       `json:"idle"`
	// Kept counts the workers waiting for their next request on a kept
	// connection: not busy, and not free for other connections either.
	Kept               int      `json:"kept"`
	Total              int      `json:"total"`
	ListenQueue        int      `json:"listen_queue"`
	MaxChildrenReached int64    `json:"max_children_reached"`
	SlowRequests       int64    `json:"slow_requests"`
	Workers            []Worker `json:"workers"`
}

// Worker is one php-fpm worker: what it runs and for how long, or, when
// idle, what it ran last.
type Worker struct {
	PID        int     `json:"pid"`
	State      string  `json:"state"`
	Busy       bool    `json:"busy"`
	Method     string  `json:"method,omitempty"`
	URI        string  `json:"uri,omitempty"`
	Script     string  `json:"script,omitempty"`
	DurationMS float64 `json:"duration_ms"`
	Requests   int64   `json:"requests"`
	// StatusPoll is true for the worker answering the poll of the status
	// page this status came from: busy, but not with the application.
	StatusPoll bool `json:"status_poll,omitempty"`
}

func (h *Handler) serveSummary(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	full := h.full(r)
	rec := h.rec
	st := rec.snapshot(now)
	s := Summary{
		Now:           now,
		Version:       orDefault(rec.Version, "dev"),
		Commit:        rec.Commit,
		GoVersion:     runtime.Version(),
		Started:       rec.started,
		Detail:        "minimal",
		Requests:      st.total,
		Failed:        st.failed,
		BucketSeconds: int(bucketWidth / time.Second),
		Causes:        []CauseCount{},
		Streams:       rec.subscribers(),
		Dropped:       rec.dropped.Load(),
		Capacity:      len(rec.slots),
	}
	if full {
		s.Detail = "full"
		if !h.Upstream.IsZero() {
			s.Upstream = h.Upstream.String()
		}
	}
	if f := rec.InFlight; f != nil {
		v := f()
		s.InFlight = &v
	}
	if f := rec.Queued; f != nil {
		v := f()
		s.Queued = &v
	}
	for _, b := range st.buckets {
		out := Bucket{Time: b.start, Count: b.count, Failed: b.failed}
		if b.hasPercentiles {
			out.P50MS, out.P95MS, out.P99MS, out.MaxMS = ptr(msOf(b.p50)), ptr(msOf(b.p95)), ptr(msOf(b.p99)), ptr(msOf(b.maxDuration))
		}
		s.Series = append(s.Series, out)
	}
	// The last minute ends now and starts at a bucket boundary, or at
	// the start when that is later.
	from := st.window.start
	if rec.started.After(from) {
		from = rec.started
	}
	s.WindowSeconds = max(now.Sub(from).Seconds(), 1)
	s.Rate = float64(st.window.count) / s.WindowSeconds
	if st.window.count > 0 {
		s.ErrorRate = float64(st.window.failed) / float64(st.window.count)
		s.P95MS = ptr(msOf(st.window.p95))
	}
	for _, cs := range st.causes {
		s.Causes = append(s.Causes, CauseCount{
			ID:       cs.cause.ID,
			Title:    cs.cause.Title,
			Status:   cs.cause.Status,
			LogOnly:  cs.cause.LogOnly,
			Count:    cs.count,
			LastSeen: cs.latest.start.Add(cs.latest.duration()),
			Latest:   cs.latest.request(full),
		})
	}
	if p := poolOf(rec); p != nil {
		if ps, at, ok := p.Latest(); ok && ps != nil {
			s.Pool = poolSummary(ps, at, now, full)
		}
	}
	writeJSON(w, http.StatusOK, s)
}

func ptr[T any](v T) *T { return &v }

// writeJSON sends v as JSON with status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// causeByID returns the catalogue's cause with id, or nil.
func causeByID(id string) *diagnostics.Cause {
	for _, c := range diagnostics.Causes {
		if c.ID == id {
			return c
		}
	}
	return nil
}
