package proxy

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// request is one request in flight. The connection goroutine owns the request
// side (params, body, the fields of the Trace about them, under mu once the
// response goroutine runs); the response goroutine owns the rest. Whichever
// side finishes last hands the Trace to the Observer.
type request struct {
	c        *conn
	id       uint16
	keepConn bool
	begin    fcgi.BeginRequest

	up    net.Conn
	upw   *fcgi.Writer // written by the connection goroutine only
	slot  bool         // holds a MaxConns slot
	upErr error        // first write error towards the upstream
	// bodyless is CONTENT_LENGTH's word that the request has no body;
	// keepUp says the upstream connection was asked to stay open.
	bodyless, keepUp bool
	// upRefs counts the sides still using a kept upstream connection:
	// php-fpm may answer before the request side has written the end of
	// the body, and the connection is reusable only once both are done.
	upRefs     atomic.Int32
	upReusable atomic.Bool
	respLetGo  bool // the response side let go of the upstream (END_REQUEST read); its goroutine only

	mu    sync.Mutex // guards trace.BytesIn, trace.StdinDone and up
	trace Trace

	stdinDone bool          // connection goroutine only
	started   bool          // the response goroutine runs; connection goroutine only
	respDone  chan struct{} // closed when the next request may begin
	respEnded chan struct{} // closed when the response side has let go of everything
	doneOnce  sync.Once
	pending   atomic.Int32 // sides not yet finished
	abortErr  atomic.Pointer[error]
}

func (q *request) responseDone() bool {
	select {
	case <-q.respDone:
		return true
	default:
		return false
	}
}

// finishStdinSide marks the request side over. It is safe on a nil request
// and when called more than once.
func (q *request) finishStdinSide() {
	if q == nil || q.stdinDone {
		return
	}
	q.stdinDone = true
	if q.upw != nil {
		q.upw.Reset(nil)
		writerPool.Put(q.upw)
		q.upw = nil
	}
	if q.keepUp {
		q.letGoUpstream()
	}
	q.finishSide()
}

func (q *request) finishSide() {
	if q.pending.Add(-1) != 0 {
		return
	}
	c := q.c
	if obs := c.srv.Observer; obs != nil {
		obs.Observe(&q.trace)
	}
	c.inflight.Add(-1)
	c.srv.inFlight.Add(-1)
}

// markResponseDone lets the connection goroutine accept the next request. It
// must be called before the final record goes downstream: the web server may
// send its next request the moment it reads END_REQUEST.
func (q *request) markResponseDone() {
	q.doneOnce.Do(func() { close(q.respDone) })
}

// abandon ends the response side early because the web server is gone or
// broke the protocol, and waits until it has. Before the response
// goroutine runs, the connection goroutine owns the response side and ends
// it itself.
func (q *request) abandon(cause error) {
	if q.responseDone() {
		return
	}
	if q.started {
		q.abortUpstream(cause)
		<-q.respEnded
		return
	}
	q.trace.Err = cause
	q.trace.End = time.Now()
	q.endResponse()
}

// abortUpstream stops the response side because the web server is gone or
// broke the protocol; err says why.
func (q *request) abortUpstream(err error) {
	q.abortErr.CompareAndSwap(nil, &err)
	q.mu.Lock()
	up := q.up
	q.mu.Unlock()
	if up != nil {
		up.Close()
	}
}

// safeToRepeat reports whether a request method may be sent twice.
func safeToRepeat(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return true
	}
	return false
}

// reusedCloseWindow is how soon after it was sent a request on a kept
// connection may fail for it to be sent again on a new one. php-fpm closes a
// kept connection at once when the worker on it ends (pm.max_requests, a
// reload), sometimes just as the next request arrives; a script that ran
// for longer and died is not run a second time.
const reusedCloseWindow = time.Second

// mayResend reports whether a request whose upstream closed without a word
// can be sent again: it has no body, its method is safe to repeat, and
// either it went on a kept connection that closed under it at once or the
// Server's RetryClosed hook knows why the upstream closed.
func (q *request) mayResend(err error) bool {
	t := &q.trace
	srv := q.c.srv
	if t.UpstreamRecords > 0 || q.abortErr.Load() != nil || t.Resent >= 3 || !safeToRepeat(t.Method) {
		return false
	}
	if t.UpstreamReused && t.Resent == 0 && time.Since(t.DialEnd) < reusedCloseWindow && !errors.Is(err, os.ErrDeadlineExceeded) {
		return q.bodyKnownEmpty()
	}
	return srv.RetryClosed != nil && q.bodyKnownEmpty() &&
		time.Now().Before(t.ParamsDone.Add(srv.QueueTimeout)) && srv.RetryClosed(t)
}

// bodyKnownEmpty reports whether the web server has sent the end of an
// empty body, so that the request is known whole. When the upstream fails at
// once, that end can still be on its way from the connection goroutine; it
// is waited for a moment when CONTENT_LENGTH promised no body.
func (q *request) bodyKnownEmpty() bool {
	deadline := time.Now().Add(100 * time.Millisecond)
	for {
		q.mu.Lock()
		ended, n := !q.trace.StdinDone.IsZero(), q.trace.BytesIn
		q.mu.Unlock()
		if ended || n > 0 || !q.bodyless || !time.Now().Before(deadline) {
			return ended && n == 0
		}
		time.Sleep(time.Millisecond)
	}
}

// errResendWrite marks a resend whose new connection failed while taking
// the request.
var errResendWrite = errors.New("the new connection failed while taking the request")

// sendAgain sends the request again on a new connection for as long as
// mayResend allows. A new connection that fails while taking the request, as
// one to a php-fpm that is just stopping does (it was in the listen queue
// when the socket closed), is one more connection closed without a word.
func (q *request) sendAgain(err error) bool {
	for q.mayResend(err) {
		rerr := q.resend()
		if rerr == nil {
			return true
		}
		if !errors.Is(rerr, errResendWrite) {
			return false
		}
		err = rerr
	}
	return false
}

// resend connects again and sends the request head and its empty body. The
// params are still in the connection's buffer: the web server cannot start
// another request on the connection before this one's response is done.
func (q *request) resend() error {
	t := &q.trace
	srv := q.c.srv
	up, attempts, err := srv.dialRetrying(t.ParamsDone.Add(srv.QueueTimeout))
	t.DialAttempts += attempts
	if err != nil {
		return err
	}
	w := fcgi.NewWriter(up)
	w.WriteBeginRequest(q.id, fcgi.BeginRequest{Role: q.begin.Role, Flags: q.begin.Flags &^ fcgi.FlagKeepConn})
	w.WriteStream(fcgi.TypeParams, q.id, q.c.params.Bytes())
	w.EndStream(fcgi.TypeParams, q.id)
	w.EndStream(fcgi.TypeStdin, q.id)
	if err := w.Flush(); err != nil {
		up.Close()
		t.Resent++ // the attempt counts towards the limit all the same
		return fmt.Errorf("%w: %w", errResendWrite, err)
	}
	q.mu.Lock()
	old := q.up
	q.up = up
	q.mu.Unlock()
	old.Close()
	if q.abortErr.Load() != nil {
		up.Close() // the web server left while we reconnected
	}
	t.Resent++
	return nil
}

// failEarly ends a request that failed before any upstream exchange: the
// connection goroutine answers for it at once, then keeps reading the body
// the web server still sends so that the connection stays usable.
func (q *request) failEarly(err error) {
	q.trace.Err = err
	q.trace.End = time.Now()
	q.replace()
	q.endResponse()
}

// endResponse closes the response side.
func (q *request) endResponse() {
	switch {
	case q.keepUp && !q.respLetGo:
		q.respLetGo = true
		q.letGoUpstream()
	case !q.keepUp && q.up != nil && !q.respLetGo:
		q.up.Close()
	}
	if !q.keepUp {
		// A kept connection gives its slot back in letGoUpstream.
		q.releaseSlot()
	}

	if q.keepConn && q.c.srv.IdleTimeout > 0 {
		// The connection goroutine may be waiting in a read it began
		// while this response was still running, with no deadline; from
		// now on the connection is idle.
		q.mu.Lock()
		bodyRead := !q.trace.StdinDone.IsZero()
		q.mu.Unlock()
		if bodyRead {
			q.c.nc.SetReadDeadline(time.Now().Add(q.c.srv.IdleTimeout))
		}
	}
	if !q.keepConn {
		// The web server asked us to close after this request. With the
		// whole request read nothing can be pending, so close at once;
		// otherwise half-close, so that it sees the end, and give it a
		// moment to stop sending before the close turns into a reset.
		q.mu.Lock()
		bodyRead := !q.trace.StdinDone.IsZero()
		q.mu.Unlock()
		if bodyRead {
			q.c.nc.Close()
		} else {
			if cw, ok := q.c.nc.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			q.c.nc.SetReadDeadline(time.Now().Add(q.c.srv.lingerAfterEnd()))
		}
	}
	q.markResponseDone()
	q.finishSide()
	close(q.respEnded)
}

// replace sends the Responder's reply in place of the upstream's response.
func (q *request) replace() {
	t := &q.trace
	q.mu.Lock()
	var rep Reply
	if r := q.c.srv.Responder; r != nil {
		rep = r.Respond(t)
	} else {
		rep = plainReply(t)
	}
	q.mu.Unlock()
	var hs headerScanner
	hs.feed(rep.CGI)
	t.Status, t.ContentType = hs.status, hs.ctype
	t.Replaced = true
	q.markResponseDone()
	err := q.c.writeLocked(func(w *fcgi.Writer) error {
		if rep.LogLine != "" {
			w.WriteStream(fcgi.TypeStderr, q.id, []byte(rep.LogLine+"\n"))
		}
		w.WriteStream(fcgi.TypeStdout, q.id, rep.CGI)
		w.EndStream(fcgi.TypeStdout, q.id)
		return w.WriteEndRequest(q.id, fcgi.EndRequest{})
	})
	if err == nil {
		t.BytesOut += int64(len(rep.CGI))
	}
}

// plainReply is the reply when no Responder is set.
func plainReply(t *Trace) Reply {
	msg := "fcgiscope: the request failed: " + t.Err.Error()
	return Reply{
		CGI:     []byte("Status: 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n\r\n" + msg + "\n"),
		LogLine: msg + " (request_id=" + t.RequestID + ")",
	}
}

// Record readers and writers are pooled: with fastcgi_keep_conn off every
// request brings a new downstream connection and always a new upstream one,
// and their buffers would otherwise be most of what a request allocates.
var (
	readerPool = sync.Pool{New: func() any { return fcgi.NewReaderSize(nil, 8<<10) }}
	writerPool = sync.Pool{New: func() any { return fcgi.NewWriterSize(nil, 8<<10) }}
)

// relayResponse reads the upstream's response and forwards it to the web
// server, holding back its start as configured. It runs on its own goroutine.
func (q *request) relayResponse() {
	ur := readerPool.Get().(*fcgi.Reader)
	ur.Reset(q.up)
	defer func() {
		ur.Reset(nil)
		readerPool.Put(ur)
	}()
	srv := q.c.srv
	t := &q.trace
	r := relay{q: q, holding: srv.HoldBytes > 0}
	r.headers.limit = srv.maxHeaderBytes()
	for {
		if srv.ReadTimeout > 0 {
			q.up.SetReadDeadline(time.Now().Add(srv.ReadTimeout))
		}
		if ur.Buffered() == 0 {
			ackAtOnce(q.up)
		}
		h, err := ur.Next()
		if err != nil {
			if q.sendAgain(err) {
				ur.Reset(q.up)
				continue
			}
			r.fail(upstreamReadError(err, srv.ReadTimeout))
			return
		}
		t.UpstreamRecords++
		if h.RequestID != q.id {
			r.fail(&ProtocolError{Upstream: true, Reason: fmt.Sprintf("%s record for request %d, but request %d was sent", h.Type, h.RequestID, q.id)})
			return
		}
		content := ur.Content()
		switch h.Type {
		case fcgi.TypeStdout:
			if len(content) > 0 {
				if t.FirstByte.IsZero() {
					t.FirstByte = time.Now()
					if srv.ServerTiming {
						if err := r.forward(serverTiming(q.id, t), false); err != nil {
							r.downstreamFailed(err)
							return
						}
					}
				}
				t.UpstreamBytes += int64(len(content))
				r.headers.feed(content)
				if r.headers.complete && t.Status == 0 {
					t.Status, t.ContentType = r.headers.status, r.headers.ctype
				}
			}
			r.stdout += int64(len(content))
		case fcgi.TypeStderr:
			if keep := srv.stderrExcerpt() - len(t.Stderr); keep > 0 {
				t.Stderr = append(t.Stderr, content[:min(keep, len(content))]...)
			}
			t.StderrBytes += int64(len(content))
		case fcgi.TypeEndRequest:
			end, err := fcgi.ParseEndRequest(content)
			if err != nil {
				r.fail(&ProtocolError{Upstream: true, Reason: err.Error()})
				return
			}
			t.EndRequest, t.Ended = end, true
			q.releaseUpstream(end, ur.Buffered() == 0)
			if end.ProtocolStatus == fcgi.StatusRequestComplete && !r.headers.complete && r.forwardedStdout == 0 {
				// nginx would answer a blank 502 ("upstream prematurely
				// closed FastCGI stdout"); an explanation is better.
				reason := "END_REQUEST came without any STDOUT"
				if t.UpstreamBytes > 0 {
					reason = fmt.Sprintf("the response ended after %d STDOUT bytes without the blank line that ends the CGI headers", t.UpstreamBytes)
				}
				r.fail(&ProtocolError{Upstream: true, Reason: reason})
				return
			}
			if end.ProtocolStatus != fcgi.StatusRequestComplete && r.forwardedStdout == 0 {
				// OVERLOADED and its kind: nothing was served, so an
				// explanation can stand in.
				t.Err = &RejectedError{Status: end.ProtocolStatus}
				r.discardHold()
				t.End = time.Now()
				q.replace()
				q.endResponse()
				return
			}
			q.markResponseDone()
			if err := r.forward(ur.Raw(), true); err != nil {
				r.downstreamFailed(err)
				return
			}
			t.End = time.Now()
			q.endResponse()
			return
		case fcgi.TypeGetValuesResult, fcgi.TypeUnknownType:
			continue
		default:
			r.fail(&ProtocolError{Upstream: true, Reason: fmt.Sprintf("unexpected %s record from the upstream", h.Type)})
			return
		}
		if r.holding && r.headers.done && !r.headers.complete {
			r.fail(&ProtocolError{Upstream: true, Reason: fmt.Sprintf("the CGI headers did not end within %d bytes (FCGISCOPE_MAX_HEADER_BYTES)", srv.maxHeaderBytes())})
			return
		}
		if err := r.forward(ur.Raw(), ur.Buffered() == 0); err != nil {
			r.downstreamFailed(err)
			return
		}
	}
}

// releaseUpstream lets go of the upstream connection once END_REQUEST is
// read, before the end is forwarded, so that the next request can have it at
// once. A connection that is not kept is closed: php-fpm's worker waits for
// its peer to close before it takes another request.
func (q *request) releaseUpstream(end fcgi.EndRequest, drained bool) {
	if !q.keepUp {
		q.respLetGo = true
		q.up.Close()
		return
	}
	q.upReusable.Store(drained && end.ProtocolStatus == fcgi.StatusRequestComplete && q.trace.Resent == 0)
	q.respLetGo = true
	q.letGoUpstream()
}

// releaseSlot gives back the request's MaxConns slot, if it holds one.
func (q *request) releaseSlot() {
	if q.slot {
		q.slot = false
		q.c.srv.slots.Release(1)
	}
}

// letGoUpstream is called by each side of a request on a kept connection
// when it is done with the connection; the last one returns it to the idle
// pool when it is still fit for another request, and closes it otherwise.
// Only then does the request give back its MaxConns slot: a slot stands for
// a php-fpm worker, and the worker is not free for a new connection while
// this one holds it. A request let in earlier would find the pool empty,
// connect, and wait in php-fpm's listen queue behind the worker that this
// connection is about to keep waiting in the pool.
func (q *request) letGoUpstream() {
	if q.upRefs.Add(-1) != 0 {
		return
	}
	defer q.releaseSlot()
	q.mu.Lock()
	up := q.up
	// An abort that comes later must not close a connection that is the
	// pool's by then.
	q.up = nil
	reusable := q.upReusable.Load() && q.abortErr.Load() == nil
	q.mu.Unlock()
	if up == nil {
		return
	}
	if reusable {
		up.SetReadDeadline(time.Time{})
		if q.c.srv.idle.put(up) {
			return
		}
	}
	up.Close()
}

// serverTiming returns a STDOUT record holding a Server-Timing header line,
// sent ahead of the upstream's own headers.
func serverTiming(id uint16, t *Trace) []byte {
	line := fmt.Sprintf("Server-Timing: fcgi-connect;dur=%.3f;desc=\"connect to php-fpm\", fcgi-wait;dur=%.3f;desc=\"wait for php-fpm\"\r\n",
		float64(t.ConnectTime().Microseconds())/1000, float64(t.FirstByte.Sub(t.DialEnd).Microseconds())/1000)
	return fcgi.AppendRecord(nil, fcgi.TypeStdout, id, []byte(line))
}

// RejectedError is an END_REQUEST whose protocol status refuses the request
// (OVERLOADED, CANT_MPX_CONN, UNKNOWN_ROLE).
type RejectedError struct {
	Status fcgi.ProtocolStatus
}

func (e *RejectedError) Error() string {
	return "the upstream refused the request with END_REQUEST " + e.Status.String()
}

func upstreamReadError(err error, readTimeout time.Duration) error {
	var ve *fcgi.VersionError
	if errors.As(err, &ve) {
		return err
	}
	if readTimeout > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w (%s)", ErrReadTimeout, readTimeout)
	}
	return fmt.Errorf("%w: %w", fcgi.ErrNoEndRequest, err)
}

// relay is the response side's state.
type relay struct {
	q       *request
	headers headerScanner
	stdout  int64 // STDOUT content bytes read from the upstream

	holding         bool
	hold            []byte  // raw records held back
	holdBuf         *[]byte // hold's pooled buffer
	heldStdout      int64
	forwardedStdout int64 // STDOUT content bytes sent downstream
}

// forward sends one raw record downstream, or holds it back while the start
// of the response is still being held.
func (r *relay) forward(raw []byte, flush bool) error {
	q := r.q
	stdoutLen := int64(0)
	if fcgi.RecordType(raw[1]) == fcgi.TypeStdout {
		stdoutLen = int64(raw[4])<<8 | int64(raw[5]) // content length
	}
	if r.holding {
		if r.hold == nil {
			r.holdBuf = holdPool.Get().(*[]byte)
			r.hold = (*r.holdBuf)[:0]
		}
		r.hold = append(r.hold, raw...)
		r.heldStdout += stdoutLen
		end := fcgi.RecordType(raw[1]) == fcgi.TypeEndRequest
		if !end && !(r.headers.done && (r.headers.streaming || r.heldStdout >= int64(q.c.srv.HoldBytes))) {
			return nil
		}
		r.holding = false
		raw, stdoutLen, flush = r.hold, r.heldStdout, true
	}
	err := q.c.writeRaw(raw, flush)
	if err == nil {
		r.forwardedStdout += stdoutLen
		q.trace.BytesOut += stdoutLen
	}
	r.releaseHold()
	return err
}

func (r *relay) discardHold() {
	r.releaseHold()
	r.heldStdout, r.holding = 0, false
}

// releaseHold returns the hold-back buffer to its pool. Buffers that grew
// past the usual hold size are left to the garbage collector, so the pool
// does not keep large ones alive.
func (r *relay) releaseHold() {
	if r.hold != nil && cap(r.hold) <= 256<<10 {
		*r.holdBuf = r.hold[:0]
		holdPool.Put(r.holdBuf)
	}
	r.hold, r.holdBuf = nil, nil
}

var holdPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// downstreamFailed ends a request whose web server can no longer be written
// to.
func (r *relay) downstreamFailed(err error) {
	q := r.q
	t := &q.trace
	if p := q.abortErr.Load(); p != nil {
		t.Err = *p
	} else {
		t.Err = fmt.Errorf("%w: %w", ErrClientAborted, err)
	}
	t.End = time.Now()
	q.endResponse()
}

// fail ends a request whose upstream failed. While nothing of the response
// has reached the web server, an explanation replaces it; after that the
// downstream exchange is broken off so the web server cannot mistake the
// partial response for a whole one.
func (r *relay) fail(err error) {
	q := r.q
	t := &q.trace
	t.End = time.Now()
	if p := q.abortErr.Load(); p != nil {
		// The web server is gone or broke the protocol; nobody to tell.
		t.Err = *p
		q.endResponse()
		return
	}
	t.Err = err
	if r.forwardedStdout == 0 {
		r.discardHold()
		q.replace()
		q.endResponse()
		return
	}
	t.Truncated = true
	q.c.breakOff(q, fmt.Sprintf("fcgiscope: the upstream failed after %d response bytes were sent, the response is incomplete: %v (request_id=%s)", r.forwardedStdout, err, t.RequestID))
	q.endResponse()
}

// writeRaw writes raw records downstream.
func (c *conn) writeRaw(raw []byte, flush bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.w.WriteRaw(raw); err != nil {
		return err
	}
	if flush {
		return c.w.Flush()
	}
	return nil
}

// breakOff ends the downstream exchange so that the web server treats the
// response as failed: a line for its error log, then a record type nginx
// rejects, then a reset (on TCP) or close. A plain close would not do: with
// fastcgi_keep_conn off nginx takes EOF as the end of the response.
func (c *conn) breakOff(q *request, line string) {
	c.wmu.Lock()
	c.w.WriteStream(fcgi.TypeStderr, q.id, []byte(line+"\n"))
	body := [8]byte{byte(fcgi.TypeUnknownType)}
	c.w.WriteRecord(fcgi.TypeUnknownType, q.id, body[:])
	c.w.Flush()
	c.wmu.Unlock()
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.nc.Close()
}
