// Package outcome is the vocabulary of what happened to one FastCGI
// request: the Trace that the relay and every client fill in, the phases a
// request goes through, and the typed errors that say why it failed.
//
// It is a leaf: the relay, the diagnosis, the HTTP gateway, the doctor and
// the command-line clients all import it, and it imports nothing of
// fcgiscope but the wire protocol. Whoever fills a Trace speaks this
// vocabulary, so that the diagnosis explains a failure in the same words
// however the request was sent.
package outcome

import (
	"net"
	"strconv"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Trace is the record of one request's life. The relay or a client fills it
// in; once it is handed on to be explained and recorded, nothing changes it
// any more.
type Trace struct {
	// RequestID is the web server's id (REQUEST_ID or HTTP_X_REQUEST_ID) or
	// one fcgiscope made up.
	RequestID string
	// ConnID numbers the downstream connection the request came on.
	ConnID uint64
	// FCGIRequestID is the FastCGI request id the web server used.
	FCGIRequestID uint16
	// KeepConn reports whether the web server asked to keep its
	// connection open after the request.
	KeepConn bool
	// Role is the FastCGI role requested.
	Role fcgi.Role

	// Interesting params, as the web server sent them.
	Method, URI, Script, RemoteAddr, Accept, Host string
	// DocumentRoot is DOCUMENT_ROOT; RequestType is the request's
	// CONTENT_TYPE; PHPValue holds the PHP_VALUE and PHP_ADMIN_VALUE
	// params, which override php.ini for the request, one setting a line.
	DocumentRoot, RequestType, PHPValue string
	// ContentLength is the request's CONTENT_LENGTH; 0 when it has none.
	ContentLength int64
	// ParamsBytes is the size of the request's PARAMS stream.
	ParamsBytes int

	// Upstream is the address the request was sent to.
	Upstream fcgi.Addr

	// UpstreamLocal is the local end of the upstream connection: the
	// address php-fpm saw the connection come from, for TCP.
	UpstreamLocal net.Addr

	// UpstreamReused reports that the request went on a kept-alive
	// upstream connection rather than a new one.
	UpstreamReused bool

	// Timestamps; zero when the step never happened.
	Accepted   time.Time // BEGIN_REQUEST read
	ParamsDone time.Time // the empty PARAMS record read
	QueueStart time.Time // began waiting for a free upstream slot
	QueueEnd   time.Time // got the slot, or gave up
	DialStart  time.Time
	DialEnd    time.Time // upstream connection established
	StdinDone  time.Time // the end of the request body sent on
	FirstByte  time.Time // first STDOUT byte from the upstream
	End        time.Time

	// BytesIn counts request body bytes (STDIN content) received from the
	// web server; BytesOut counts response bytes sent to it, including a
	// replacement response.
	BytesIn, BytesOut int64
	// UpstreamBytes counts STDOUT content bytes received from the upstream.
	UpstreamBytes int64
	// HeadBytes is what the response's CGI head took in FastCGI records,
	// framing included, from the start of the response to the blank line:
	// what a web server must hold in one buffer to read it. 0 until the
	// head ended.
	HeadBytes int
	// UpstreamRecords counts the well-formed records the upstream sent.
	UpstreamRecords int
	// DialAttempts counts connection attempts, retries included;
	// Resent counts the times the request was sent again after the
	// upstream closed without answering.
	DialAttempts, Resent int

	// Status is the HTTP status of the response sent downstream: the CGI
	// Status header, 200 when the headers had none, 0 when no headers were
	// sent.
	Status int
	// ContentType is the response's Content-Type header.
	ContentType string
	// EndRequest is the upstream's END_REQUEST, valid when Ended is true;
	// EndedAt is when it came, which is after End when the web server
	// went away first and the relay went on, as php-fpm would have.
	EndRequest fcgi.EndRequest
	Ended      bool
	EndedAt    time.Time

	// Stderr holds the first bytes the upstream wrote to FCGI_STDERR;
	// StderrBytes counts them all.
	Stderr      []byte
	StderrBytes int64

	// Err is why the request failed; nil when the upstream completed it.
	// It is one of this package's errors or wraps one, and callers
	// branch on it with errors.Is and errors.As.
	Err error
	// Replaced reports that fcgiscope sent its own response in place of
	// the upstream's.
	Replaced bool
	// Truncated reports that the upstream failed after part of its
	// response was forwarded, and the downstream exchange was aborted.
	Truncated bool

	// Span is the request's span in a distributed trace when tracing is
	// on and the trace is sampled; nil otherwise.
	Span Span

	// Params is the PARAMS stream as the web server sent it, FastCGI
	// name-value pairs, kept so that a request that went wrong can be
	// sent again (fcgiscope request --replay). It is empty for requests
	// that went well, and when the relay keeps none.
	Params string
	// Body is the request body, kept for the same purpose only when the
	// relay is asked to keep bodies and this one was whole and small
	// enough.
	Body []byte
}

// Phase is how far a request got.
type Phase string

// The phases of a request.
const (
	PhaseParams    Phase = "params"     // reading the request head from the web server
	PhaseQueued    Phase = "queued"     // waiting for a free upstream slot
	PhaseConnect   Phase = "connecting" // dialling the upstream
	PhaseSending   Phase = "sending"    // forwarding the request body
	PhaseWaiting   Phase = "waiting"    // waiting for the response to start
	PhaseStreaming Phase = "streaming"  // forwarding the response
)

// Phase returns the phase the request was in when it ended or failed.
func (t *Trace) Phase() Phase {
	switch {
	case t.ParamsDone.IsZero():
		return PhaseParams
	case !t.QueueStart.IsZero() && t.DialStart.IsZero():
		return PhaseQueued
	case t.DialEnd.IsZero():
		return PhaseConnect
	case !t.FirstByte.IsZero():
		return PhaseStreaming
	case t.StdinDone.IsZero():
		return PhaseSending
	}
	return PhaseWaiting
}

// Duration returns the time from BEGIN_REQUEST to the end of the request.
func (t *Trace) Duration() time.Duration { return since(t.Accepted, t.End) }

// QueueTime returns how long the request waited for a free upstream slot.
func (t *Trace) QueueTime() time.Duration { return since(t.QueueStart, t.QueueEnd) }

// ConnectTime returns how long the upstream connection took to establish.
func (t *Trace) ConnectTime() time.Duration { return since(t.DialStart, t.DialEnd) }

// TimeToFirstByte returns the time from BEGIN_REQUEST to the first response
// byte, or 0 when none came.
func (t *Trace) TimeToFirstByte() time.Duration { return since(t.Accepted, t.FirstByte) }

// UpstreamWait returns the time from the established connection to the
// first response byte: how long the upstream made the request wait.
func (t *Trace) UpstreamWait() time.Duration { return since(t.DialEnd, t.FirstByte) }

func since(a, b time.Time) time.Duration {
	if a.IsZero() || b.IsZero() {
		return 0
	}
	return b.Sub(a)
}

// NoteStdout counts n bytes of STDOUT content from the upstream, and
// reports whether they are the first, whose arrival it notes.
func (t *Trace) NoteStdout(n int) (first bool) {
	first = t.FirstByte.IsZero()
	if first {
		t.FirstByte = time.Now()
	}
	t.UpstreamBytes += int64(n)
	return first
}

// NoteStderr keeps the start of the upstream's FCGI_STDERR, up to limit
// bytes, and counts all of it.
func (t *Trace) NoteStderr(p []byte, limit int) {
	if keep := limit - len(t.Stderr); keep > 0 {
		t.Stderr = append(t.Stderr, p[:min(keep, len(p))]...)
	}
	t.StderrBytes += int64(len(p))
}

// NoteParam keeps the value of a param the Trace records, and reports
// whether name is one of them. HTTP_X_REQUEST_ID is taken only when the web
// server sent no REQUEST_ID. Callers on a hot path (the relay) gather the
// same params themselves without allocating; everyone else uses this.
func (t *Trace) NoteParam(name, value string) bool {
	switch name {
	case "REQUEST_METHOD":
		t.Method = value
	case "REQUEST_URI":
		t.URI = value
	case "SCRIPT_FILENAME":
		t.Script = value
	case "REMOTE_ADDR":
		t.RemoteAddr = value
	case "HTTP_ACCEPT":
		t.Accept = value
	case "HTTP_HOST":
		t.Host = value
	case "DOCUMENT_ROOT":
		t.DocumentRoot = value
	case "CONTENT_TYPE":
		t.RequestType = value
	case "CONTENT_LENGTH":
		t.ContentLength, _ = strconv.ParseInt(value, 10, 64)
	case "PHP_VALUE", "PHP_ADMIN_VALUE":
		t.PHPValue = JoinPHPValue(t.PHPValue, value)
	case "REQUEST_ID":
		t.RequestID = value
	case "HTTP_X_REQUEST_ID":
		if t.RequestID == "" {
			t.RequestID = value
		}
	default:
		return false
	}
	return true
}

// JoinPHPValue adds the settings of one PHP_VALUE or PHP_ADMIN_VALUE param
// to those already kept.
func JoinPHPValue(kept, value string) string {
	switch {
	case kept == "":
		return value
	case value == "":
		return kept
	}
	return kept + "\n" + value
}

// ParseContentLength reads a CONTENT_LENGTH value without allocating; 0 for
// one that is not a plain decimal number.
func ParseContentLength(b []byte) int64 {
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return 0
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// Span is a request's span in a distributed trace (OpenTelemetry): the relay
// starts it when the request's params are read, so that php-fpm gets it as
// the parent of PHP's own spans, and the tracing sink ends it with what
// happened.
type Span interface {
	// TraceID is the trace's id in hex, for the log line, the error page
	// and the latency histograms' exemplars.
	TraceID() string
}
