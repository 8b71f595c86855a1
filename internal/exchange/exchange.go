// Package exchange sends one FastCGI request over a connection of its own
// and fills an outcome.Trace with what happened: the connect, the request
// body, the first byte, the response head, FCGI_STDERR, END_REQUEST, or the
// way it failed. `fcgiscope request`, the doctor's probes, /readyz, the
// status poller and the HTTP gateway all send their requests with Do, so
// that a failure reads the same to the diagnosis whoever sent it, and the
// sidecar's relay fills its Traces in the same vocabulary.
package exchange

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Defaults for zero fields of Request.
const (
	DefaultConnectTimeout = 3 * time.Second
	DefaultStderrExcerpt  = 4 << 10
)

// requestID is the FastCGI request id of every exchange: one request per
// connection.
const requestID = 1

// Request is one FastCGI request. Upstream must be set; every other field
// has a usable zero value.
type Request struct {
	// Upstream is the FastCGI application.
	Upstream fcgi.Addr
	// Params are sent in order in the PARAMS stream.
	Params []fcgi.Pair
	// Body is the request body, sent while the response is read (an
	// application may answer before it reads the whole body); nil sends
	// none. A Body whose Read fails ends the exchange as a client that
	// went away.
	Body io.Reader
	// StopBody, when set, makes a Read of Body that still waits when the
	// exchange is over return, for a Body that can block (a client's
	// connection). Do does not return while a Read is in progress.
	StopBody func()
	// Stdout receives the STDOUT stream as it arrives; nil discards it.
	// An error it returns ends the exchange, with that error as the
	// Trace's.
	Stdout io.Writer
	// Stderr receives the FCGI_STDERR stream as it arrives; nil discards
	// it. The Trace keeps its start either way.
	Stderr io.Writer
	// Forwarded, when set, reports whether part of the response has gone
	// on to a client. Once it has, an END_REQUEST is taken as it comes,
	// as the relay takes it: a refusal or a missing head fails the
	// exchange only while nothing was forwarded.
	Forwarded func() bool
	// ConnectTimeout bounds the connection attempt; 0 means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReadTimeout fails the exchange when the upstream sends nothing for
	// that long; 0 means no limit but ctx's.
	ReadTimeout time.Duration
	// HeadLimit bounds the CGI head the Trace's Status is read from;
	// 0 means cgi.DefaultLimit.
	HeadLimit int
	// StderrExcerpt bounds the FCGI_STDERR bytes kept in the Trace;
	// 0 means DefaultStderrExcerpt.
	StderrExcerpt int
}

// Do sends req and fills t with what happened; t.Err is nil when the
// upstream completed the response. The caller may have filled in t's
// request fields (RequestID, ConnID, ...); Do fills the rest, and takes the
// params a Trace records from req.Params. When ctx ends first, the
// exchange is cut off and t.Err wraps outcome.ErrClientAborted and ctx's
// cause.
func Do(ctx context.Context, req *Request, t *outcome.Trace) {
	x := &exchange{req: req, t: t}
	x.run(ctx)
}

// exchange is one Do.
type exchange struct {
	req  *Request
	t    *outcome.Trace
	conn net.Conn
	head cgi.Scanner

	// abortErr, when set, is why the exchange was cut off from outside
	// the reading goroutine: ctx ended, or the body failed.
	mu       sync.Mutex
	abortErr error
}

func (x *exchange) run(ctx context.Context) {
	req, t := x.req, x.t
	t.Upstream = req.Upstream
	t.FCGIRequestID = requestID
	if t.Role == 0 {
		t.Role = fcgi.RoleResponder
	}
	for _, p := range req.Params {
		t.NoteParam(p.Name, p.Value)
	}
	now := time.Now()
	if t.Accepted.IsZero() {
		t.Accepted = now
	}
	if t.ParamsDone.IsZero() {
		t.ParamsDone = now
	}
	defer func() { t.End = time.Now() }()

	t.DialStart, t.DialAttempts = now, 1
	conn, err := dial(ctx, req.Upstream, req.ConnectTimeout)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", outcome.ErrClientAborted, context.Cause(ctx))
		}
		t.Err = err
		return
	}
	t.DialEnd = time.Now()
	t.UpstreamLocal = conn.LocalAddr()
	x.conn = conn
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() {
		x.abort(fmt.Errorf("%w: %w", outcome.ErrClientAborted, context.Cause(ctx)))
	})
	defer stop()

	w := fcgi.NewWriter(conn)
	w.WriteBeginRequest(requestID, fcgi.BeginRequest{Role: t.Role})
	var params []byte
	for _, p := range req.Params {
		params = fcgi.AppendPair(params, p.Name, p.Value)
	}
	w.WriteStream(fcgi.TypeParams, requestID, params)
	w.EndStream(fcgi.TypeParams, requestID)
	var sent *sender
	if req.Body == nil {
		w.EndStream(fcgi.TypeStdin, requestID)
	}
	// The head goes now: the body may be slow to come, and the
	// application can start (or refuse) on the head alone.
	if err := w.Flush(); err != nil {
		t.Err = x.cause(outcome.UpstreamReadError(err, 0))
		return
	}
	if req.Body == nil {
		t.StdinDone = time.Now()
	} else {
		sent = x.sendBody(w)
	}
	t.Err = x.readResponse()
	conn.Close() // ends a body still being sent
	if sent != nil {
		t.BytesIn, t.StdinDone = sent.wait(req.StopBody)
	}
	t.Err = x.cause(t.Err)
}

// abort cuts the exchange off for err, unless something else did first.
func (x *exchange) abort(err error) {
	x.mu.Lock()
	if x.abortErr == nil {
		x.abortErr = err
	}
	x.mu.Unlock()
	x.conn.Close()
}

// cause returns why the exchange ended: what cut it off from outside, if
// anything did, since the read error it caused says only that the
// connection closed; else err.
func (x *exchange) cause(err error) error {
	if err == nil {
		return nil
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.abortErr != nil {
		return x.abortErr
	}
	return err
}

// readResponse reads records until END_REQUEST and returns the error that
// makes the request a failure, if any.
func (x *exchange) readResponse() error {
	req, t := x.req, x.t
	excerpt := req.StderrExcerpt
	if excerpt <= 0 {
		excerpt = DefaultStderrExcerpt
	}
	x.head.Limit = req.HeadLimit
	r := fcgi.NewReader(x.conn)
	for {
		if req.ReadTimeout > 0 {
			x.conn.SetReadDeadline(time.Now().Add(req.ReadTimeout))
		}
		h, err := r.Next()
		if err != nil {
			return outcome.UpstreamReadError(err, req.ReadTimeout)
		}
		t.UpstreamRecords++
		if h.RequestID != requestID {
			return outcome.UnexpectedRecordError(h, requestID)
		}
		content := r.Content()
		switch h.Type {
		case fcgi.TypeStdout:
			if len(content) == 0 {
				continue
			}
			t.NoteStdout(len(content))
			x.head.Feed(content)
			if x.head.Ended() && t.Status == 0 {
				h := x.head.Head()
				t.Status, t.ContentType = h.Status, h.ContentType
				if h.Rejected != "" && (req.Forwarded == nil || !req.Forwarded()) {
					// nginx would refuse it; so does the exchange.
					return &outcome.InvalidHeaderError{Line: h.Rejected, Why: h.RejectedWhy}
				}
			}
			if req.Stdout != nil {
				if _, err := req.Stdout.Write(content); err != nil {
					return err
				}
			}
		case fcgi.TypeStderr:
			t.NoteStderr(content, excerpt)
			if req.Stderr != nil && len(content) > 0 {
				if _, err := req.Stderr.Write(content); err != nil {
					return err
				}
			}
		case fcgi.TypeEndRequest:
			end, err := fcgi.ParseEndRequest(content)
			if err != nil {
				return &outcome.ProtocolError{Upstream: true, Reason: err.Error()}
			}
			t.EndRequest, t.Ended = end, true
			if req.Forwarded != nil && req.Forwarded() {
				return nil
			}
			return outcome.EndError(end, x.head.Ended(), t.UpstreamBytes)
		case fcgi.TypeGetValuesResult, fcgi.TypeUnknownType:
		default:
			return outcome.UnexpectedRecordError(h, requestID)
		}
	}
}

// dial connects to addr. A unix connect never waits: it succeeds, or fails
// at once, with EAGAIN when the listen queue is full.
func dial(ctx context.Context, addr fcgi.Addr, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	var err error
	if addr.Network == "unix" {
		conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: addr.Address, Net: "unix"})
	} else {
		if timeout <= 0 {
			timeout = DefaultConnectTimeout
		}
		d := net.Dialer{Timeout: timeout}
		conn, err = d.DialContext(ctx, addr.Network, addr.Address)
	}
	if err != nil {
		return nil, &outcome.DialError{Addr: addr, Err: err}
	}
	return conn, nil
}

// sender streams the request body on a goroutine of its own.
type sender struct {
	done chan struct{}
	// Written by the goroutine before done is closed.
	n     int64
	ended time.Time

	mu      sync.Mutex
	reading bool // a Read of the body is in progress
	stopped bool // no Read may begin
}

func (x *exchange) sendBody(w *fcgi.Writer) *sender {
	s := &sender{done: make(chan struct{})}
	body := x.req.Body
	go func() {
		defer close(s.done)
		buf := make([]byte, fcgi.MaxWriteContent)
		for {
			if !s.beginRead() {
				return
			}
			n, err := body.Read(buf)
			s.endRead()
			if n > 0 {
				if w.WriteRecord(fcgi.TypeStdin, requestID, buf[:n]) != nil {
					return // the upstream went away; the reader says why
				}
				s.n += int64(n)
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				x.abort(fmt.Errorf("%w: reading the request body: %w", outcome.ErrClientAborted, err))
				return
			}
		}
		if w.EndStream(fcgi.TypeStdin, requestID) == nil && w.Flush() == nil {
			s.ended = time.Now()
		}
	}()
	return s
}

func (s *sender) beginRead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reading = !s.stopped
	return !s.stopped
}

func (s *sender) endRead() {
	s.mu.Lock()
	s.reading = false
	s.mu.Unlock()
}

// wait stops the body's goroutine, making a Read that is still waiting
// return with stop, and returns what it sent.
func (s *sender) wait(stop func()) (int64, time.Time) {
	s.mu.Lock()
	s.stopped = true
	reading := s.reading
	s.mu.Unlock()
	if reading && stop != nil {
		stop()
	}
	<-s.done
	return s.n, s.ended
}
