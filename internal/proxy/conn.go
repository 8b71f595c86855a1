package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// lingerAfterEnd is how long a connection the web server asked to close is
// kept open after END_REQUEST, so that the web server closes first and
// nothing it still sends turns into a reset that could cost it our response.
const lingerAfterEnd = 5 * time.Second

// conn is one downstream connection. Its goroutine reads the web server's
// records and forwards the request; each request's response is relayed by a
// goroutine of its own (see request.relayResponse). Requests on one
// connection follow each other: FastCGI multiplexing is refused.
type conn struct {
	srv *Server
	id  uint64
	nc  net.Conn
	r   *fcgi.Reader
	// inflight counts requests not yet handed to the Observer; a new one
	// may begin while the previous one finishes its bookkeeping.
	inflight atomic.Int32
	accepted time.Time
	begun    atomic.Bool // a request has begun on the connection

	wmu sync.Mutex // guards w: both the connection and response goroutines write
	w   *fcgi.Writer

	params fcgi.ParamsBuffer
	arena  []byte   // noteParams' scratch space
	req    *request // the latest request, possibly finished
}

func (c *conn) serve() {
	defer c.srv.forget(c)
	c.r = readerPool.Get().(*fcgi.Reader)
	c.r.Reset(c.nc)
	c.w = writerPool.Get().(*fcgi.Writer)
	c.w.Reset(c.nc)
	defer func() {
		c.nc.Close()
		// The response goroutine may still be finishing the last
		// request; the buffers go back only when it is done.
		if q := c.req; q != nil {
			q.settleHead(nil)
			<-q.respEnded
		}
		c.r.Reset(nil)
		c.w.Reset(nil)
		readerPool.Put(c.r)
		writerPool.Put(c.w)
	}()
	c.params.Limit = c.srv.maxParams()
	for {
		c.setReadDeadline()
		h, err := c.r.Next()
		if err != nil {
			c.readFailed(err)
			return
		}
		if err := c.handle(h); err != nil {
			c.srv.Log.Warn().Uint64("conn", c.id).Err(err).Msg("closing the web server's connection")
			if q := c.req; q != nil {
				q.abandon(err)
				q.finishStdinSide()
			}
			return
		}
	}
}

// setReadDeadline applies the idle timeout between requests and between the
// records of a request body, and the params timeout while a request head
// arrives.
func (c *conn) setReadDeadline() {
	srv := c.srv
	q := c.req
	switch {
	case q == nil && !c.begun.Load():
		if d := srv.firstRequestTimeout(); d > 0 {
			c.nc.SetReadDeadline(c.accepted.Add(d))
		}
	case q == nil || q.stdinDone && q.responseDone():
		if srv.IdleTimeout > 0 {
			c.nc.SetReadDeadline(time.Now().Add(srv.IdleTimeout))
		}
	case q.trace.ParamsDone.IsZero():
		if srv.ParamsTimeout > 0 {
			c.nc.SetReadDeadline(q.trace.Accepted.Add(srv.ParamsTimeout))
		}
	case !q.stdinDone:
		// The body may take long, but not stall: each record must
		// come within the idle timeout.
		if srv.IdleTimeout > 0 {
			c.nc.SetReadDeadline(time.Now().Add(srv.IdleTimeout))
		}
	case srv.IdleTimeout > 0 || srv.ParamsTimeout > 0:
		// The response is running; the read only watches for the web
		// server going away, however long the script takes.
		c.nc.SetReadDeadline(time.Time{})
	}
}

// firstRequestTimeout is how long a new connection may take to begin its
// first request: the params timeout, or the idle timeout when that is
// shorter. A web server sends its request as soon as it connects, so a
// connection that sends nothing is no web server, and must not hold one of
// the MaxClientConns places for the whole idle timeout.
func (s *Server) firstRequestTimeout() time.Duration {
	d := s.ParamsTimeout
	if s.IdleTimeout > 0 && (d <= 0 || s.IdleTimeout < d) {
		d = s.IdleTimeout
	}
	return d
}

// What a connection's end of stream says of the web server.
const (
	eofClosed     = iota // it closed the connection: it is gone
	eofHalfClosed        // it shut down its writing side and still reads
	eofUnknown           // either: TCP sends the same FIN for both
)

// peerState tells, after the end of the web server's stream, whether it
// closed the connection or only its writing side. A unix socket says so:
// a peer that closed altogether leaves it hung up (POLLHUP), one that
// half-closed does not. Over TCP only a write can tell.
func (c *conn) peerState() int {
	switch nc := c.nc.(type) {
	case *net.TCPConn:
		return eofUnknown
	case *net.UnixConn:
		if revents, ok := pollConn(nc, 0); ok && revents&unix.POLLHUP == 0 {
			return eofHalfClosed
		}
	}
	return eofClosed
}

// pollConn waits up to wait for nc to be hung up or in error, and returns
// the events seen (POLLHUP, POLLERR), none when it was neither.
func pollConn(nc syscall.Conn, wait time.Duration) (revents int16, ok bool) {
	raw, err := nc.SyscallConn()
	if err != nil {
		return 0, false
	}
	raw.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd)}}
		deadline := time.Now().Add(wait)
		for {
			n, err := unix.Poll(fds, int(max(time.Until(deadline), 0).Milliseconds()))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			ok = err == nil
			if n == 1 {
				revents = fds[0].Revents
			}
			return
		}
	})
	return revents, ok
}

// abort closes the connection at once; used by Server.Close.
func (c *conn) abort() {
	c.nc.Close()
}

// readFailed handles the end of the downstream stream.
func (c *conn) readFailed(err error) {
	q := c.req
	defer q.settleHead(err)
	timedOut := errors.Is(err, os.ErrDeadlineExceeded)
	if q == nil && !c.begun.Load() {
		if timedOut {
			c.srv.Log.Info().Uint64("conn", c.id).Stringer("params_timeout", c.srv.firstRequestTimeout()).Msg("closing a downstream connection that sent no request (FCGISCOPE_PARAMS_TIMEOUT): a web server sends one as soon as it connects, and idle connections must not use up FCGISCOPE_MAX_CLIENT_CONNS")
		}
		q.finishStdinSide()
		return
	}
	if q == nil || q.stdinDone && q.responseDone() {
		if timedOut && c.srv.IdleTimeout > 0 {
			c.srv.Log.Info().Uint64("conn", c.id).Stringer("idle_timeout", c.srv.IdleTimeout).Msg("closing a downstream connection that started no request within the idle timeout (FCGISCOPE_IDLE_TIMEOUT)")
		}
		q.finishStdinSide()
		return
	}
	if timedOut && q.trace.ParamsDone.IsZero() && c.srv.ParamsTimeout > 0 {
		c.srv.Log.Warn().Uint64("conn", c.id).Stringer("params_timeout", c.srv.ParamsTimeout).Msg("the web server did not send a whole request head within the params timeout (FCGISCOPE_PARAMS_TIMEOUT); closing the connection")
		q.abandon(&outcome.ParamsTimeoutError{Timeout: c.srv.ParamsTimeout})
		q.finishStdinSide()
		return
	}
	if errors.Is(err, io.EOF) && q.stdinDone && q.started && !q.responseDone() {
		switch c.peerState() {
		case eofHalfClosed:
			// The client sent its whole request and shut down its
			// writing side only: it still reads, and php-fpm would
			// answer it. Relay the answer; close once it is through.
			<-q.respEnded
			return
		case eofUnknown:
			// Over TCP a half-close and a close look the same. Go on
			// as php-fpm would, until the answer shows which it was:
			// a write fails, or the peer resets what it was sent.
			q.peerEOF.Store(time.Now().UnixNano())
			<-q.respEnded
			return
		}
	}
	if !q.responseDone() {
		// The web server went away mid-request: nginx does so when the
		// client aborts or its fastcgi_read_timeout expires.
		var cause error = outcome.ErrClientAborted
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			cause = fmt.Errorf("%w: %w", outcome.ErrClientAborted, err)
		}
		cause = q.dropped(cause)
		if c.srv.closing.Load() && errors.Is(err, net.ErrClosed) {
			cause = outcome.ErrShutdown
		}
		q.abandon(cause)
	}
	q.finishStdinSide()
}

func (c *conn) handle(h fcgi.Header) error {
	if h.RequestID == 0 {
		return c.handleManagement(h)
	}
	q := c.req
	if h.Type == fcgi.TypeBeginRequest {
		if q != nil && !q.responseDone() {
			if h.RequestID != q.id {
				// nginx never multiplexes; a client that tries is told
				// to open another connection, as the spec has it.
				return c.writeLocked(func(w *fcgi.Writer) error {
					return w.WriteEndRequest(h.RequestID, fcgi.EndRequest{ProtocolStatus: fcgi.StatusCantMPXConn})
				})
			}
			return &outcome.ProtocolError{Reason: fmt.Sprintf("BEGIN_REQUEST for request %d, which is still in flight", h.RequestID)}
		}
		if q != nil {
			// The response is done but the body never ended: the web
			// server gave up sending it.
			q.finishStdinSide()
		}
		return c.begin(h)
	}
	if q == nil || h.RequestID != q.id || q.stdinDone {
		// Records of requests that are not active are ignored, as the
		// spec asks.
		return nil
	}
	switch h.Type {
	case fcgi.TypeParams:
		return c.handleParams(q)
	case fcgi.TypeStdin, fcgi.TypeData:
		c.forwardBody(q, h)
	case fcgi.TypeAbortRequest:
		if q.upw != nil && q.upErr == nil {
			// php-fpm, told to abort while it reads the body, stops
			// reading, runs the script with what came, and answers
			// as ever, END_REQUEST included (after the body it
			// ignores the record, as this relay does): pass it on and
			// relay the answer, so that the web server gets the
			// END_REQUEST it waits for.
			if q.upErr = q.upw.WriteRaw(c.r.Raw()); q.upErr == nil {
				q.upErr = q.upw.Flush()
			}
			q.noteBody(0, true)
			q.finishStdinSide()
			return nil
		}
		q.abandon(fmt.Errorf("%w (ABORT_REQUEST)", outcome.ErrClientAborted))
		q.finishStdinSide()
	default:
		return &outcome.ProtocolError{Reason: fmt.Sprintf("unexpected %s record from the web server", h.Type)}
	}
	return nil
}

func (c *conn) handleManagement(h fcgi.Header) error {
	switch h.Type {
	case fcgi.TypeGetValues:
		var body []byte
		err := fcgi.ForEachPair(c.r.Content(), func(name, _ []byte) bool {
			switch string(name) {
			case fcgi.ValueMPXSConns:
				body = fcgi.AppendPair(body, string(name), "0")
			case fcgi.ValueMaxConns, fcgi.ValueMaxReqs:
				body = fcgi.AppendPair(body, string(name), "1000")
			}
			return true
		})
		if err != nil {
			return &outcome.ProtocolError{Reason: "bad GET_VALUES: " + err.Error()}
		}
		body = c.srv.appendRelayValues(body)
		return c.writeLocked(func(w *fcgi.Writer) error {
			return w.WriteRecord(fcgi.TypeGetValuesResult, 0, body)
		})
	case fcgi.TypeBeginRequest, fcgi.TypeParams, fcgi.TypeStdin, fcgi.TypeData, fcgi.TypeAbortRequest:
		return &outcome.ProtocolError{Reason: fmt.Sprintf("%s record with request id 0", h.Type)}
	}
	// Any other management record gets UNKNOWN_TYPE, as the spec asks.
	body := [8]byte{byte(h.Type)}
	return c.writeLocked(func(w *fcgi.Writer) error {
		return w.WriteRecord(fcgi.TypeUnknownType, 0, body[:])
	})
}

// writeLocked runs fn with the downstream writer and flushes.
func (c *conn) writeLocked(fn func(w *fcgi.Writer) error) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := fn(c.w); err != nil {
		return err
	}
	return c.w.Flush()
}

func (c *conn) begin(h fcgi.Header) error {
	b, err := fcgi.ParseBeginRequest(c.r.Content())
	if err != nil {
		return &outcome.ProtocolError{Reason: err.Error()}
	}
	c.inflight.Add(1)
	c.begun.Store(true)
	c.srv.inFlight.Add(1)
	c.params.Reset()
	q := &request{
		c:         c,
		id:        h.RequestID,
		keepConn:  b.KeepConn(),
		bodyless:  true, // unless CONTENT_LENGTH says otherwise
		begin:     b,
		respDone:  make(chan struct{}),
		respEnded: make(chan struct{}),
	}
	q.pending.Store(2)
	q.trace = outcome.Trace{
		ConnID:        c.id,
		FCGIRequestID: h.RequestID,
		KeepConn:      b.KeepConn(),
		Role:          b.Role,
		Upstream:      c.srv.Upstream,
		Accepted:      time.Now(),
	}
	c.req = q
	return nil
}

func (c *conn) handleParams(q *request) error {
	t := &q.trace
	if !t.ParamsDone.IsZero() {
		return &outcome.ProtocolError{Reason: "PARAMS record after the end of the PARAMS stream"}
	}
	content := c.r.Content()
	if len(content) > 0 {
		if err := c.params.Append(content); err != nil {
			// Answer with what is known and ignore the rest of the
			// request's records.
			t.ParamsDone = time.Now()
			c.noteParams(q)
			q.failEarly(err)
			return nil
		}
		return nil
	}
	t.ParamsDone = time.Now()
	if err := c.noteParams(q); err != nil {
		q.failEarly(&outcome.ProtocolError{Reason: err.Error()})
		return nil
	}
	if c.srv.Tracer != nil {
		c.traceRequest(q)
	}
	c.startUpstream(q)
	return nil
}

// noteParams copies the params the Trace keeps. They are gathered into one
// string, so that keeping them costs a request one allocation.
func (c *conn) noteParams(q *request) error {
	t := &q.trace
	type span struct {
		dst        *string
		start, end int
	}
	var spanArray [14]span
	spans := spanArray[:0]
	arena := c.arena[:0]
	var xrid, phpValue, phpAdminValue string
	keep := func(dst *string, value []byte) {
		spans = append(spans, span{dst, len(arena), len(arena) + len(value)})
		arena = append(arena, value...)
	}
	err := c.params.ForEach(func(name, value []byte) bool {
		switch string(name) {
		case "REQUEST_METHOD":
			keep(&t.Method, value)
		case "REQUEST_URI":
			keep(&t.URI, value)
		case "SCRIPT_FILENAME":
			keep(&t.Script, value)
		case "REMOTE_ADDR":
			keep(&t.RemoteAddr, value)
		case "HTTP_ACCEPT":
			keep(&t.Accept, value)
		case "HTTP_HOST":
			keep(&t.Host, value)
		case "REQUEST_ID":
			keep(&t.RequestID, value)
		case "HTTP_X_REQUEST_ID":
			keep(&xrid, value)
		case "DOCUMENT_ROOT":
			keep(&t.DocumentRoot, value)
		case "CONTENT_TYPE":
			keep(&t.RequestType, value)
		case "PHP_VALUE":
			keep(&phpValue, value)
		case "PHP_ADMIN_VALUE":
			keep(&phpAdminValue, value)
		case "CONTENT_LENGTH":
			q.bodyless = len(value) == 0 || string(value) == "0"
			t.ContentLength = outcome.ParseContentLength(value)
		}
		return true
	})
	t.ParamsBytes = c.params.Len()
	all := string(arena)
	for _, sp := range spans {
		*sp.dst = all[sp.start:sp.end]
	}
	c.arena = arena
	t.PHPValue = outcome.JoinPHPValue(phpValue, phpAdminValue)
	if t.RequestID == "" {
		t.RequestID = xrid
	}
	if t.RequestID == "" {
		t.RequestID = c.srv.reqIDs.next()
	}
	return err
}

// startUpstream connects to the upstream, sends the request head and starts
// relaying the response. The body follows as the web server sends it.
func (c *conn) startUpstream(q *request) {
	t := &q.trace
	srv := c.srv
	queueDeadline, patient := srv.queueDeadline(t.ParamsDone)
	if srv.slots != nil {
		t.QueueStart = time.Now()
		ok := srv.slots.TryAcquire(1)
		if !ok && queueDeadline.After(t.QueueStart) {
			srv.queued.Add(1)
			ctx, cancel := context.WithDeadline(srv.ctx, queueDeadline)
			ok = srv.slots.Acquire(ctx, 1) == nil
			cancel()
			srv.queued.Add(-1)
		}
		t.QueueEnd = time.Now()
		if !ok {
			q.failEarly(&outcome.QueueTimeoutError{Waited: t.QueueEnd.Sub(t.QueueStart), MaxConns: srv.MaxConns, WebServerGaveUp: patient})
			return
		}
		q.slot = true
	}
	t.DialStart = time.Now()
	keepUp := srv.UpstreamKeepAlive > 0 && q.bodyless && safeToRepeat(t.Method)
	var up net.Conn
	if keepUp {
		up = srv.idle.get()
	}
	if up != nil {
		t.UpstreamReused = true
	} else {
		srv.idle.shed()
		var attempts int
		var err error
		up, attempts, err = srv.dialRetrying(srv.retryDeadline(t.ParamsDone))
		t.DialAttempts = attempts
		if err != nil {
			q.failEarly(err)
			return
		}
		if keepUp {
			up = newKeptConn(up)
		}
	}
	t.DialEnd = time.Now()
	t.UpstreamLocal = up.LocalAddr()
	q.up = up
	if keepUp {
		q.keepUp = true
		q.upRefs.Store(2)
	}
	q.upw = writerPool.Get().(*fcgi.Writer)
	q.upw.Reset(up)
	// The upstream connection is the relay's, not the web server's: it
	// is kept only when the relay keeps upstream connections, whatever
	// the web server asked for its own.
	flags := q.begin.Flags &^ fcgi.FlagKeepConn
	if q.keepUp {
		flags |= fcgi.FlagKeepConn
	}
	q.upw.WriteBeginRequest(q.id, fcgi.BeginRequest{Role: q.begin.Role, Flags: flags})
	q.upw.WriteStream(fcgi.TypeParams, q.id, c.params.Bytes())
	q.upw.EndStream(fcgi.TypeParams, q.id)
	if c.r.Buffered() == 0 {
		q.upErr = q.upw.Flush()
	}
	q.started = true
	go q.relayResponse()
}

// forwardBody forwards one STDIN or DATA record.
func (c *conn) forwardBody(q *request, h fcgi.Header) {
	if q.trace.ParamsDone.IsZero() {
		return
	}
	n := int64(h.ContentLength)
	end := h.Type == fcgi.TypeStdin && n == 0
	if q.upw != nil && q.upErr == nil {
		q.upErr = q.upw.WriteRaw(c.r.Raw())
		// Flush only when the web server has nothing more ready, so that
		// a request that arrived in one piece leaves in one piece.
		if q.upErr == nil && (end || c.r.Buffered() == 0) {
			q.upErr = q.upw.Flush()
		}
		// A write error means the upstream went away; its reader sees
		// why and answers for it. The rest of the body is dropped.
	}
	q.keepBody(c.r.Content(), c.srv.ReplayBodyBytes)
	q.noteBody(n, end)
	if end {
		q.finishStdinSide()
	}
}
