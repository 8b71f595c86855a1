package proxy

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// relay is the response side's state.
type relay struct {
	q    *request
	head cgi.Scanner

	// headRaw counts the raw bytes of the records since the response
	// began, while its head is not complete: what the web server must
	// hold in one buffer to read the head.
	headRaw int
	// timing is the Server-Timing record fcgiscope put ahead of the
	// response, while it is held in hold at timingAt.
	timing   []byte
	timingAt int

	holding         bool
	hold            []byte  // raw records held back
	holdBuf         *[]byte // hold's pooled buffer
	heldStdout      int64
	forwardedStdout int64 // STDOUT content bytes sent downstream
}

// relayResponse reads the upstream's response and forwards it to the web
// server, holding back its start as configured. It runs on its own goroutine.
func (q *request) relayResponse() {
	ur := upstreamReaderPool.Get().(*fcgi.Reader)
	ur.Reset(q.up)
	defer func() {
		ur.Reset(nil)
		upstreamReaderPool.Put(ur)
	}()
	srv := q.c.srv
	t := &q.trace
	r := relay{q: q, holding: srv.HoldBytes > 0}
	r.head.Limit = srv.maxHeaderBytes()
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
			r.fail(outcome.UpstreamReadError(err, srv.ReadTimeout))
			return
		}
		t.UpstreamRecords++
		if h.RequestID != q.id {
			r.fail(outcome.UnexpectedRecordError(h, q.id))
			return
		}
		content := ur.Content()
		switch h.Type {
		case fcgi.TypeStdout:
			if len(content) == 0 {
				break
			}
			if t.NoteStdout(len(content)) && srv.ServerTiming {
				rec := serverTimingRecord(q.id, t)
				r.headRaw += len(rec)
				if r.holding {
					r.timing, r.timingAt = rec, len(r.hold)
				}
				if err := r.forward(rec, false); err != nil {
					r.downstreamFailed(err)
					return
				}
			}
			ended := r.head.Ended()
			rest := r.head.Feed(content)
			if !ended {
				if !r.head.Ended() {
					r.headRaw += len(ur.Raw())
				} else {
					t.HeadBytes = r.headRaw + fcgi.HeaderLen + len(content) - len(rest)
					if err := r.headFits(); err != nil {
						r.fail(err)
						return
					}
				}
			}
			if r.head.Ended() && t.Status == 0 {
				h := r.head.Head()
				t.Status, t.ContentType = h.Status, h.ContentType
				if h.Rejected != "" && r.forwardedStdout == 0 {
					// nginx would answer a bare 502 "upstream sent
					// invalid header"; an explanation is better.
					r.fail(&outcome.InvalidHeaderError{Line: h.Rejected, Why: h.RejectedWhy})
					return
				}
			}
		case fcgi.TypeStderr:
			t.NoteStderr(content, srv.stderrExcerpt())
			if t.FirstByte.IsZero() && len(r.hold) == 0 {
				// Before the response begins, the web server logs
				// stderr as it comes and keeps none of it: pass it on
				// at once, record by record as php-fpm sent it,
				// instead of holding it (however much a script
				// writes before its output).
				if err := q.c.writeRaw(ur.Raw(), ur.Buffered() == 0); err != nil {
					r.downstreamFailed(err)
					return
				}
				continue
			}
			if !t.FirstByte.IsZero() && !r.head.Ended() {
				// Once the response has begun, the web server keeps
				// its stderr in the buffer the head must fit in.
				r.headRaw += len(ur.Raw())
			}
		case fcgi.TypeEndRequest:
			end, err := fcgi.ParseEndRequest(content)
			if err != nil {
				r.fail(&outcome.ProtocolError{Upstream: true, Reason: err.Error()})
				return
			}
			t.EndRequest, t.Ended, t.EndedAt = end, true, time.Now()
			q.releaseUpstream(end, ur.Buffered() == 0)
			if err := outcome.EndError(end, r.head.Ended(), t.UpstreamBytes); err != nil && r.forwardedStdout == 0 {
				// Nothing was served: an explanation can stand in for a
				// refusal, and for the blank 502 nginx would answer to
				// a response without a head.
				r.fail(err)
				return
			}
			q.markResponseDone()
			if err := r.forward(ur.Raw(), true); err != nil {
				r.downstreamFailed(err)
				return
			}
			t.End = time.Now()
			q.goneAfterAll()
			q.endResponse()
			return
		case fcgi.TypeGetValuesResult, fcgi.TypeUnknownType:
			continue
		default:
			r.fail(outcome.UnexpectedRecordError(h, q.id))
			return
		}
		if r.holding && r.head.Done() && !r.head.Ended() {
			err := r.headFits()
			if err == nil {
				err = &outcome.HeadTooLongError{Limit: srv.maxHeaderBytes()}
			}
			r.fail(err)
			return
		}
		if err := r.forward(ur.Raw(), ur.Buffered() == 0); err != nil {
			r.downstreamFailed(err)
			return
		}
	}
}

// headFits fails a response whose head, counted as the web server buffers
// it, is larger than the web server takes, while nothing of it was sent on.
// It is asked when the head has ended, or has grown past what fcgiscope
// holds (then the size is a lower bound): nginx would answer a bare 502
// "upstream sent too big header". A response is never refused on a guess:
// a whole head that only may be too big is noted (request.suspectHead), to
// be explained if the web server drops the connection.
func (r *relay) headFits() error {
	f := r.q.c.srv.WebServerHeadLimits
	if f == nil || r.forwardedStdout > 0 {
		return nil
	}
	suspect, refuse := f()
	t := &r.q.trace
	need := t.HeadBytes
	if !r.head.Ended() {
		need = r.headRaw
	}
	limit := suspect
	if refuse > 0 && need > refuse {
		limit = refuse
	}
	if limit <= 0 || need <= limit || r.dropTiming(need-limit) {
		// Never worse than without fcgiscope: when its own
		// Server-Timing header is what does not fit, the header goes.
		return nil
	}
	err := &outcome.HeadTooBigError{Bytes: need, Limit: limit, Whole: r.head.Ended()}
	switch {
	case limit == refuse:
		return err
	case err.Whole && !r.q.keepConn:
		r.q.suspectHead(err)
	}
	return nil
}

// dropTiming takes the held Server-Timing record out of the response when
// that makes the head over bytes smaller, and reports whether it did.
func (r *relay) dropTiming(over int) bool {
	n, at := len(r.timing), r.timingAt
	if n == 0 || n < over || !r.holding || len(r.hold) < at+n {
		return false
	}
	r.hold = append(r.hold[:at], r.hold[at+n:]...)
	r.heldStdout -= int64(r.timing[4])<<8 | int64(r.timing[5])
	r.headRaw -= n
	if t := &r.q.trace; t.HeadBytes > 0 {
		t.HeadBytes -= n
	}
	r.timing = nil
	return true
}

// serverTimingRecord returns a STDOUT record holding a Server-Timing header
// line, sent ahead of the upstream's own headers.
func serverTimingRecord(id uint16, t *outcome.Trace) []byte {
	line := "Server-Timing: " + cgi.ServerTiming(t.ConnectTime(), t.UpstreamWait()) + "\r\n"
	return fcgi.AppendRecord(nil, fcgi.TypeStdout, id, []byte(line))
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
		full := len(r.hold) >= q.c.srv.holdLimit()
		if !end && !full && !(r.head.Done() && (r.head.Head().Streaming || r.heldStdout >= int64(q.c.srv.HoldBytes))) {
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

// holdLimit bounds the raw bytes held back for one response, whatever
// record shape they come in (stderr between the response's records,
// padding, empty records): the body bytes to hold, a whole head, and a
// record's worth. Past it the response goes on unheld.
func (s *Server) holdLimit() int {
	return s.HoldBytes + s.maxHeaderBytes() + fcgi.HeaderLen + 65535 + 255
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
		t.Err = q.dropped(fmt.Errorf("%w: %w", outcome.ErrClientAborted, err))
	}
	t.End = q.wentAway()
	q.endResponse()
}

// wentAway is when the web server went away: at the end of its stream, when
// that came before the failure that shows it, else now.
func (q *request) wentAway() time.Time {
	if eof := q.peerEOF.Load(); eof != 0 {
		return time.Unix(0, eof)
	}
	return time.Now()
}

// peerResetWait bounds the wait for the reset a TCP peer that closed sends
// back for data it cannot take: a round trip, on loopback microseconds.
const peerResetWait = 200 * time.Millisecond

// goneAfterAll settles, for a response sent whole after the web server
// ended its stream over TCP, whether it had gone or only half-closed: a
// peer that closed resets the connection on the data it is sent, one that
// half-closed takes it.
func (q *request) goneAfterAll() {
	if q.peerEOF.Load() == 0 {
		return
	}
	tc, ok := q.c.nc.(*net.TCPConn)
	if !ok {
		return
	}
	if revents, _ := pollConn(tc, peerResetWait); revents != 0 {
		// Nobody received the response: it has no status.
		q.trace.Err = q.dropped(outcome.ErrClientAborted)
		q.trace.End, q.trace.Status = q.wentAway(), 0
	}
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
	if q.peerEOF.Load() != 0 {
		// The web server ended its stream first: most likely it gave up
		// (nginx's fastcgi_read_timeout), and it is that which the
		// request's explanation tells, with how PHP ended afterwards.
		t.Err, t.End = q.dropped(outcome.ErrClientAborted), q.wentAway()
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
		if srv := q.c.srv; srv.idle.put(up, srv.queued.Load() > 0) {
			return
		}
	}
	up.Close()
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
