package proxy

import (
	"errors"
	"fmt"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Trace is the record of one request's life in the relay. The relay fills it
// in; once it is handed to a Responder or an Observer nothing in the relay
// changes it any more.
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

	// Upstream is the address the request was sent to.
	Upstream fcgi.Addr

	// UpstreamReused reports that the request went on a kept-alive
	// upstream connection rather than a new one.
	UpstreamReused bool

	// Timestamps; zero when the step never happened.
	Accepted   time.Time // BEGIN_REQUEST read
	ParamsDone time.Time // the empty PARAMS record read
	QueueStart time.Time // began waiting for a MaxConns slot
	QueueEnd   time.Time // got the slot, or gave up
	DialStart  time.Time
	DialEnd    time.Time // upstream connection established
	StdinDone  time.Time // the empty STDIN record read
	FirstByte  time.Time // first STDOUT byte from the upstream
	End        time.Time

	// BytesIn counts request body bytes (STDIN content) received from the
	// web server; BytesOut counts response bytes (STDOUT content) sent to
	// it, including a replacement response.
	BytesIn, BytesOut int64
	// UpstreamBytes counts STDOUT content bytes received from the upstream.
	UpstreamBytes int64
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
	// EndRequest is the upstream's END_REQUEST, valid when Ended is true.
	EndRequest fcgi.EndRequest
	Ended      bool

	// Stderr holds the first bytes the upstream wrote to FCGI_STDERR;
	// StderrBytes counts them all.
	Stderr      []byte
	StderrBytes int64

	// Err is why the request failed; nil when the upstream completed it.
	// Callers branch on it with errors.Is and errors.As.
	Err error
	// Replaced reports that fcgiscope sent its own response in place of
	// the upstream's.
	Replaced bool
	// Truncated reports that the upstream failed after part of its
	// response was forwarded, and the downstream exchange was aborted.
	Truncated bool

	// Diagnosis is free for the Responder and Observer to share their
	// explanation of a failure, so that it is worked out once. The relay
	// never reads it.
	Diagnosis any
}

// Phase is how far a request got.
type Phase string

// The phases of a request.
const (
	PhaseParams    Phase = "params"     // reading the request head from the web server
	PhaseQueued    Phase = "queued"     // waiting for a MaxConns slot
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

// QueueTime returns how long the request waited for a MaxConns slot.
func (t *Trace) QueueTime() time.Duration { return since(t.QueueStart, t.QueueEnd) }

// ConnectTime returns how long the upstream connection took to establish.
func (t *Trace) ConnectTime() time.Duration { return since(t.DialStart, t.DialEnd) }

// TimeToFirstByte returns the time from BEGIN_REQUEST to the first response
// byte, or 0 when none came.
func (t *Trace) TimeToFirstByte() time.Duration { return since(t.Accepted, t.FirstByte) }

func since(a, b time.Time) time.Duration {
	if a.IsZero() || b.IsZero() {
		return 0
	}
	return b.Sub(a)
}

// Errors the relay puts in Trace.Err, besides the dial and network errors of
// the standard library and the protocol errors of package fcgi.
var (
	// ErrClientAborted means the web server closed its connection or sent
	// ABORT_REQUEST before the response was complete.
	ErrClientAborted = errors.New("the web server closed the connection before the response was complete")
	// ErrReadTimeout means the upstream sent nothing for longer than the
	// read timeout.
	ErrReadTimeout = errors.New("the upstream sent nothing within the read timeout")
	// ErrParamsTimeout means the web server did not finish the request
	// head within the params timeout.
	ErrParamsTimeout = errors.New("the web server did not send the whole request head within the params timeout")
	// ErrShutdown means fcgiscope was stopping and cut the request off.
	ErrShutdown = errors.New("fcgiscope was shutting down")
)

// QueueTimeoutError means no MaxConns slot became free within the queue
// timeout.
type QueueTimeoutError struct {
	Waited   time.Duration
	MaxConns int
}

func (e *QueueTimeoutError) Error() string {
	return fmt.Sprintf("no upstream slot became free in %s (all %d in use)", e.Waited.Round(time.Millisecond), e.MaxConns)
}

// DialError is a failure to connect to the upstream.
type DialError struct {
	Addr fcgi.Addr
	Err  error
}

func (e *DialError) Error() string { return "connecting to " + e.Addr.String() + ": " + e.Err.Error() }

func (e *DialError) Unwrap() error { return e.Err }

// ProtocolError is a violation of FastCGI by a peer.
type ProtocolError struct {
	// Upstream is true when the upstream broke the protocol, false when
	// the web server did.
	Upstream bool
	Reason   string
}

func (e *ProtocolError) Error() string {
	if e.Upstream {
		return "upstream broke FastCGI: " + e.Reason
	}
	return "web server broke FastCGI: " + e.Reason
}
