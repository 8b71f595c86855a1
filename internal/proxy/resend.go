package proxy

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// When the upstream closes a connection without answering, a request may be
// sent again on a new one, but only when nothing it did can have happened
// twice: this file decides when, and does it.

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
		time.Now().Before(srv.retryDeadline(t.ParamsDone)) && srv.RetryClosed(t)
}

// bodyKnownEmpty reports whether the web server has sent the end of an
// empty body, so that the request is known whole. When the upstream fails at
// once, that end can still be on its way from the connection goroutine; it
// is waited for a moment when CONTENT_LENGTH promised no body.
func (q *request) bodyKnownEmpty() bool {
	deadline := time.Now().Add(100 * time.Millisecond)
	for {
		n, done := q.bodyState()
		ended := !done.IsZero()
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
	up, attempts, err := srv.dialRetrying(srv.retryDeadline(t.ParamsDone))
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
