package proxy

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// request is one request in flight, and who owns what of it.
//
// The connection goroutine reads the web server's records: it fills the
// Trace until the response side starts, and after that only counts the body
// it forwards, in body, under mu. The response side (relayResponse, or the
// goroutine that answers for a request that failed early) owns the Trace
// from then on; it copies the body's figures into the Trace when it needs
// them, so that explaining a failure holds no lock. Whichever side finishes
// last hands the Trace to the Observer.
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

	mu   sync.Mutex // guards body and up
	body struct {
		n    int64     // STDIN content bytes forwarded
		done time.Time // when the empty STDIN record came
		kept []byte    // the body so far, for replay (Server.ReplayBodyBytes)
	}
	trace outcome.Trace

	stdinDone bool // connection goroutine only
	started   bool // the response side runs; connection goroutine only
	// respOnConn says the connection goroutine ended the response side
	// itself, the request never having reached the upstream.
	respOnConn bool
	respDone   chan struct{} // closed when the next request may begin
	respEnded  chan struct{} // closed when the response side has let go of everything
	doneOnce   sync.Once
	pending    atomic.Int32 // sides not yet finished
	abortErr   atomic.Pointer[error]
	// peerEOF is when the web server ended its side of a TCP connection
	// after the whole request (Unix nanoseconds; 0 when it did not): it
	// went away, or it only half-closed and still reads. Which, the end
	// of the response tells (request.goneAfterAll).
	peerEOF atomic.Int64

	// bigHead is a response head passed on although larger than the web
	// server's assumed buffer; while set, the request's end waits for the
	// web server's next move on the connection (settleHead), a third side.
	bigHead     atomic.Pointer[outcome.HeadTooBigError]
	headSettled sync.Once
}

func (q *request) responseDone() bool {
	select {
	case <-q.respDone:
		return true
	default:
		return false
	}
}

// noteBody counts n body bytes forwarded, and the end of the body.
func (q *request) noteBody(n int64, end bool) {
	q.mu.Lock()
	q.body.n += n
	if end {
		q.body.done = time.Now()
	}
	q.mu.Unlock()
}

// bodyState returns the body's figures so far.
func (q *request) bodyState() (n int64, done time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.body.n, q.body.done
}

// syncBody copies the body's figures into the Trace; only the side that
// owns the Trace calls it.
func (q *request) syncBody() {
	q.trace.BytesIn, q.trace.StdinDone = q.bodyState()
}

// maxReplayParams bounds the params kept for replay: nginx sends about 1.5
// KiB, and one request with a megabyte of cookies must not pin a megabyte
// in the dashboard's ring.
const maxReplayParams = 16 << 10

// keepForReplay copies what replaying the request needs into the Trace
// when the request went wrong, the only requests anyone replays, so that
// one that went well costs nothing. It runs when the response is over and
// before the connection may begin its next request, which reuses the
// params buffer.
func (q *request) keepForReplay() {
	t := &q.trace
	if t.Err == nil && t.Status > 0 && t.Status < 400 && t.StderrBytes == 0 {
		return
	}
	if p := q.c.params.Bytes(); len(p) <= maxReplayParams && t.Params == "" {
		t.Params = string(p)
	}
}

// keepBody appends content to the body kept for replay while the body
// stays within limit and CONTENT_LENGTH says it fits: half a body is no
// use to replay.
func (q *request) keepBody(content []byte, limit int) {
	if limit <= 0 || q.trace.ContentLength <= 0 || q.trace.ContentLength > int64(limit) {
		return
	}
	q.mu.Lock()
	if len(q.body.kept)+len(content) <= limit {
		q.body.kept = append(q.body.kept, content...)
	}
	q.mu.Unlock()
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
	q.finishSide(true)
}

// finishSide marks one side of the request over; the last one hands the
// Trace to the Observer. When that is the connection goroutine (onConn), the
// Observer runs on a goroutine of its own: explaining a failure may wait for
// php-fpm's word on it, and the connection goroutine must go on reading the
// web server's next request.
func (q *request) finishSide(onConn bool) {
	if q.pending.Add(-1) != 0 {
		return
	}
	srv := q.c.srv
	if onConn && srv.Observer != nil {
		srv.observing.Add(1)
		go func() {
			defer srv.observing.Done()
			q.observe()
		}()
		return
	}
	q.observe()
}

// observe hands the finished request to the Observer.
func (q *request) observe() {
	c := q.c
	q.syncBody()
	// Both sides are done: the kept body is whole or never will be.
	if t := &q.trace; t.Params != "" && len(q.body.kept) > 0 && int64(len(q.body.kept)) == t.ContentLength {
		t.Body = q.body.kept
	}
	if obs := c.srv.Observer; obs != nil {
		obs.Observe(&q.trace)
	}
	c.inflight.Add(-1)
	c.srv.inFlight.Add(-1)
}

// suspectHead notes a response head passed on although larger than the web
// server's assumed buffer. The web server then either reads the whole
// response and closes, or drops the connection with the rest unread, which
// the kernel reports to us as a reset; settleHead tells the two apart
// before the request is logged.
func (q *request) suspectHead(e *outcome.HeadTooBigError) {
	q.pending.Add(1)
	q.bigHead.Store(e)
}

// dropped returns err, an ending of the web server's connection, as a
// HeadTooBigError when it came right after a suspect head.
func (q *request) dropped(err error) error {
	if e := q.bigHead.Load(); e != nil {
		d := *e
		d.Err = err
		return &d
	}
	return err
}

// settleHead ends the wait for the web server's move after a suspect head:
// a reset (ECONNRESET) means it refused the head. err is how the
// connection's read ended, nil when it did not. It is called by the
// connection goroutine, and is a no-op without a suspect head or when
// called again.
func (q *request) settleHead(err error) {
	if q == nil || q.bigHead.Load() == nil {
		return
	}
	q.headSettled.Do(func() {
		<-q.respEnded // the response side is done with the Trace
		if q.trace.Err == nil && errors.Is(err, syscall.ECONNRESET) {
			q.trace.Err = q.dropped(fmt.Errorf("%w: %w", outcome.ErrClientAborted, err))
		}
		q.finishSide(true)
	})
}

// markResponseDone lets the connection goroutine accept the next request. It
// must be called before the final record goes downstream: the web server may
// send its next request the moment it reads END_REQUEST.
func (q *request) markResponseDone() {
	q.doneOnce.Do(func() {
		q.keepForReplay()
		close(q.respDone)
	})
}

// abandon ends the response side early because the web server is gone or
// broke the protocol, and waits until it has. Before the response side
// runs, the connection goroutine owns it and ends it itself.
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
	q.respOnConn = true
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

// failEarly ends a request that failed before any upstream exchange. The
// answer is explained and written by a goroutine of its own, as for any
// other failure: explaining may wait for evidence, and the connection
// goroutine goes on reading the body the web server still sends, so that
// the connection stays usable and a web server that gives up is noticed.
func (q *request) failEarly(err error) {
	q.trace.Err = err
	q.trace.End = time.Now()
	q.started = true
	go func() {
		q.replace()
		q.endResponse()
	}()
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

	_, bodyDone := q.bodyState()
	bodyRead := !bodyDone.IsZero()
	if q.keepConn && q.c.srv.IdleTimeout > 0 && bodyRead {
		// The connection goroutine may be waiting in a read it began
		// while this response was still running, with no deadline; from
		// now on the connection is idle.
		q.c.nc.SetReadDeadline(time.Now().Add(q.c.srv.IdleTimeout))
	}
	if !q.keepConn {
		// The web server asked us to close after this request. With the
		// whole request read nothing can be pending, so close at once;
		// otherwise half-close, so that it sees the end, and give it a
		// moment to stop sending before the close turns into a reset.
		// After a suspect head, the connection stays open for the same
		// moment to see whether the web server reads it all.
		if bodyRead && q.bigHead.Load() == nil {
			q.c.nc.Close()
		} else {
			if cw, ok := q.c.nc.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			q.c.nc.SetReadDeadline(time.Now().Add(q.c.srv.lingerAfterEnd()))
		}
	}
	q.markResponseDone()
	q.finishSide(q.respOnConn)
	close(q.respEnded)
}

// replace sends the Responder's reply in place of the upstream's response.
// It runs on the response side, which owns the Trace, so that the Responder
// may take its time without holding up the connection goroutine.
func (q *request) replace() {
	t := &q.trace
	q.syncBody()
	var rep cgi.Reply
	if r := q.c.srv.Responder; r != nil {
		rep = r.Respond(t)
	} else {
		rep = cgi.PlainReply(t.Err, t.RequestID)
	}
	var head cgi.Scanner
	head.Feed(rep.CGI)
	t.Status, t.ContentType = head.Head().Status, head.Head().ContentType
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

// releaseSlot gives back the request's MaxConns slot, if it holds one.
func (q *request) releaseSlot() {
	if q.slot {
		q.slot = false
		q.c.srv.slots.Release(1)
	}
}

// Record readers and writers are pooled: with fastcgi_keep_conn off every
// request brings a new downstream connection and always a new upstream one,
// and their buffers would otherwise be most of what a request allocates.
var (
	readerPool = sync.Pool{New: func() any { return fcgi.NewReaderSize(nil, 8<<10) }}
	// upstreamReaderPool's readers take a response in reads as large as
	// the hold-back: php-fpm sends a record per flush (every 4 KiB with
	// output_buffering), and when several wait in the socket one read
	// takes them all instead of one each. Only requests in flight hold
	// one, not idle connections.
	upstreamReaderPool = sync.Pool{New: func() any { return fcgi.NewReaderSize(nil, 64<<10) }}
	writerPool         = sync.Pool{New: func() any { return fcgi.NewWriterSize(nil, 8<<10) }}
)
