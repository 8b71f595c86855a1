package httpgateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
)

// servePHP sends one request to the upstream and streams the response back,
// filling in a Trace as the relay does.
func (g *Gateway) servePHP(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	t := &proxy.Trace{
		RequestID:     g.requestID(r),
		FCGIRequestID: 1,
		Role:          fcgi.RoleResponder,
		Method:        r.Method,
		Script:        rt.file,
		RemoteAddr:    remoteIP(r.RemoteAddr),
		Accept:        r.Header.Get("Accept"),
		Host:          r.Host,
		Upstream:      g.Upstream,
		Accepted:      time.Now(),
	}
	if id, ok := ctx.Value(connIDKey{}).(uint64); ok {
		t.ConnID = id
	}
	res := &response{g: g, w: w, t: t, rc: http.NewResponseController(w)}
	// php-fpm may answer while it still reads the body (echo scripts,
	// early errors); HTTP/1 needs permission to read and write at once.
	res.rc.EnableFullDuplex()

	params, err := g.params(r, rt, t.RequestID)
	if err != nil {
		// gofast refuses nothing the router lets through; be safe.
		http.Error(w, "fcgiscope: "+err.Error(), http.StatusBadRequest)
		return
	}
	t.URI = params["REQUEST_URI"]

	var body io.Reader
	switch {
	case r.Body == nil || r.Body == http.NoBody:
	case r.ContentLength < 0:
		// php-fpm reads CONTENT_LENGTH bytes and no more, so a chunked
		// body is read whole first, into a file, as nginx does.
		f, n, err := g.spool(r.Body)
		if err != nil {
			t.Err = fmt.Errorf("%w: reading the request body: %w", proxy.ErrClientAborted, err)
			t.BytesIn = n
			g.finish(res)
			return
		}
		defer f.Close()
		setContentLength(params, n)
		body = f
	default:
		body = r.Body
	}
	t.ParamsDone = time.Now()

	t.DialStart = time.Now()
	t.DialAttempts = 1
	conn, err := g.dial(ctx)
	if err != nil {
		t.End = time.Now()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", proxy.ErrClientAborted, context.Cause(ctx))
		}
		t.Err = err
		g.finish(res)
		return
	}
	t.DialEnd = time.Now()

	var in *bodyReader
	var stdin io.Reader
	if body != nil {
		in = &bodyReader{r: body, http: body == r.Body}
		in.idle.L = &in.mu
		stdin = in
	}
	// A client that goes away, or whose body stops coming, ends the
	// exchange: closing the php-fpm connection tells php-fpm too.
	var aborted struct {
		sync.Mutex
		err error
	}
	abort := func(cause error) {
		aborted.Lock()
		if aborted.err == nil {
			aborted.err = cause
		}
		aborted.Unlock()
		conn.Close()
	}
	if in != nil {
		in.onError = func(err error) {
			abort(fmt.Errorf("%w: reading the request body: %w", proxy.ErrClientAborted, err))
		}
	}
	stop := context.AfterFunc(ctx, func() {
		abort(fmt.Errorf("%w: %w", proxy.ErrClientAborted, context.Cause(ctx)))
	})

	if in == nil {
		// The empty STDIN record goes out with the head.
		t.StdinDone = time.Now()
	}
	var up io.ReadWriter = conn
	if g.ReadTimeout > 0 {
		up = &deadlineConn{Conn: conn, d: g.ReadTimeout}
	}
	req := &fcgi.Request{ID: 1, Params: pairs(params), Stdin: stdin}
	end, err := fcgi.RoundTrip(up, req, res, &stderrWriter{t: t, limit: g.stderrExcerpt()})
	t.End = time.Now()
	stop()
	conn.Close()
	if in != nil {
		in.stop(func() { res.rc.SetReadDeadline(time.Now()) })
		t.BytesIn, t.StdinDone = in.result()
	}

	aborted.Lock()
	abortErr := aborted.err
	aborted.Unlock()
	switch {
	case abortErr != nil:
		t.Err = abortErr
	case err != nil:
		t.Err = g.upstreamError(err)
	default:
		t.UpstreamRecords++ // END_REQUEST
		t.EndRequest, t.Ended = end, true
		t.Err = res.complete(end)
	}
	g.finish(res)
}

// finish answers for a failed request, or completes a good one, and hands
// the Trace to the Observer. A response that failed after its headers were
// sent is cut off, so that the client cannot take it for a whole one.
func (g *Gateway) finish(res *response) {
	t := res.t
	if t.End.IsZero() {
		t.End = time.Now()
	}
	if t.Err != nil && !errors.Is(t.Err, proxy.ErrClientAborted) {
		if res.committed {
			t.Truncated = true
		} else {
			res.replace()
		}
	}
	if g.Observer != nil {
		g.Observer.Observe(t)
	}
	if len(t.Stderr) > 0 && t.Diagnosis == nil {
		// What nginx would put in its error log as "FastCGI sent in
		// stderr": warnings and error_log() calls. Stderr that explains
		// a failure is in the Observer's line already.
		g.Log.Warn().Str("request_id", t.RequestID).Str("script", t.Script).Bytes("stderr", t.Stderr).Msg("php-fpm stderr")
	}
	if t.Truncated {
		// net/http closes the connection without ending the chunked
		// body or completing Content-Length: the client sees an error.
		panic(http.ErrAbortHandler)
	}
}

// upstreamError turns RoundTrip's error into the error the relay would have
// put in the Trace.
func (g *Gateway) upstreamError(err error) error {
	var ve *fcgi.VersionError
	var pe *proxy.ProtocolError
	var we *clientWriteError
	switch {
	case errors.As(err, &we):
		return fmt.Errorf("%w: %w", proxy.ErrClientAborted, we.err)
	case errors.As(err, &ve), errors.As(err, &pe):
		return err
	case g.ReadTimeout > 0 && errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%w (%s)", proxy.ErrReadTimeout, g.ReadTimeout)
	case errors.Is(err, fcgi.ErrNoEndRequest):
		return err
	}
	// A failed write of the request head or body: php-fpm closed the
	// connection, which is what ErrNoEndRequest stands for.
	return fmt.Errorf("%w: %w", fcgi.ErrNoEndRequest, err)
}

// dial connects to the upstream. A unix connect never waits: it succeeds,
// or fails at once, with EAGAIN when the listen queue is full, which the
// classifier reports as upstream_backlog_full.
func (g *Gateway) dial(ctx context.Context) (net.Conn, error) {
	var conn net.Conn
	var err error
	if g.Upstream.Network == "unix" {
		conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: g.Upstream.Address, Net: "unix"})
	} else {
		timeout := g.ConnectTimeout
		if timeout == 0 {
			timeout = DefaultConnectTimeout
		}
		d := net.Dialer{Timeout: timeout}
		conn, err = d.DialContext(ctx, g.Upstream.Network, g.Upstream.Address)
	}
	if err != nil {
		return nil, &proxy.DialError{Addr: g.Upstream, Err: err}
	}
	return conn, nil
}

// spool copies a body of unknown length to an unlinked temporary file.
func (g *Gateway) spool(body io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp(g.TempDir, "fcgiscope-body-")
	if err != nil {
		return nil, 0, err
	}
	os.Remove(f.Name())
	n, err := io.Copy(f, body)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, n, err
	}
	return f, n, nil
}

func (g *Gateway) stderrExcerpt() int {
	if g.StderrExcerpt > 0 {
		return g.StderrExcerpt
	}
	return DefaultStderrExcerpt
}

func (g *Gateway) maxHeaderBytes() int {
	if g.MaxHeaderBytes > 0 {
		return g.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

func remoteIP(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// deadlineConn fails a read that waits longer than d.
type deadlineConn struct {
	net.Conn
	d time.Duration
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.d))
	return c.Conn.Read(p)
}

// stderrWriter keeps the start of php-fpm's FCGI_STDERR in the Trace.
type stderrWriter struct {
	t     *proxy.Trace
	limit int
}

func (s *stderrWriter) Write(p []byte) (int, error) {
	t := s.t
	t.UpstreamRecords++
	if keep := s.limit - len(t.Stderr); keep > 0 {
		t.Stderr = append(t.Stderr, p[:min(keep, len(p))]...)
	}
	t.StderrBytes += int64(len(p))
	return len(p), nil
}

// bodyReader is the request body as RoundTrip's sending goroutine reads it.
// It counts, notes when the body ended, reports a failing client, and can be
// stopped: net/http forbids reading a body once the handler returned, and
// RoundTrip does not wait for its sender.
type bodyReader struct {
	r io.Reader
	// http is set when r is the client's connection, which stop must
	// unblock; a spooled body never blocks.
	http    bool
	onError func(error)

	mu      sync.Mutex
	idle    sync.Cond // L is &mu
	reading bool
	stopped bool
	n       int64
	done    time.Time
}

var errBodyStopped = errors.New("httpgateway: the request is over")

func (b *bodyReader) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return 0, errBodyStopped
	}
	b.reading = true
	b.mu.Unlock()

	n, err := b.r.Read(p)

	b.mu.Lock()
	b.reading = false
	b.n += int64(n)
	if err == io.EOF {
		b.done = time.Now()
	}
	stopped := b.stopped
	b.idle.Broadcast()
	b.mu.Unlock()
	if err != nil && err != io.EOF && !stopped && b.onError != nil {
		b.onError(err)
	}
	return n, err
}

// stop keeps the body from being read any more, waiting for a read in
// progress; unblock makes such a read return.
func (b *bodyReader) stop(unblock func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if !b.reading {
		return
	}
	if b.http {
		b.mu.Unlock()
		unblock()
		b.mu.Lock()
	}
	for b.reading {
		b.idle.Wait()
	}
}

func (b *bodyReader) result() (int64, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n, b.done
}
