package httpgateway

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgienv"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// servePHP sends one request to the upstream and streams the response back,
// filling in a Trace as the relay does.
func (g *Gateway) servePHP(w http.ResponseWriter, r *http.Request, rt route) {
	ctx := r.Context()
	t := &outcome.Trace{
		RequestID:  g.requestID(r),
		Method:     r.Method,
		Script:     rt.file,
		RemoteAddr: remoteIP(r.RemoteAddr),
		Accept:     r.Header.Get("Accept"),
		Host:       r.Host,
		Upstream:   g.Upstream,
		Accepted:   time.Now(),
	}
	if id, ok := ctx.Value(connIDKey{}).(uint64); ok {
		t.ConnID = id
	}
	res := &response{g: g, w: w, t: t, rc: http.NewResponseController(w)}
	res.head.Limit = g.maxHeaderBytes()
	res.head.KeepFields = true
	// php-fpm may answer while it still reads the body (echo scripts,
	// early errors); HTTP/1 needs permission to read and write at once.
	res.rc.EnableFullDuplex()

	params, err := cgienv.Build(r, cgienv.Script{File: rt.file, Name: rt.scriptName, PathInfo: rt.pathInfo},
		cgienv.Options{Root: g.absRoot, RequestID: t.RequestID, Software: g.ServerSoftware})
	if err != nil {
		// gofast refuses nothing the router lets through; be safe.
		http.Error(w, "fcgiscope: "+err.Error(), http.StatusBadRequest)
		return
	}

	req := &exchange.Request{
		Upstream:       g.Upstream,
		Stdout:         res,
		Forwarded:      func() bool { return res.committed },
		ConnectTimeout: g.ConnectTimeout,
		ReadTimeout:    g.ReadTimeout,
		HeadLimit:      g.maxHeaderBytes(),
		StderrExcerpt:  g.StderrExcerpt,
	}
	switch {
	case r.Body == nil || r.Body == http.NoBody:
	case r.ContentLength < 0:
		// php-fpm reads CONTENT_LENGTH bytes and no more, so a chunked
		// body is read whole first, into a file, as nginx does.
		f, n, err := g.spool(r.Body)
		if err != nil {
			t.URI = params["REQUEST_URI"]
			t.Err = fmt.Errorf("%w: reading the request body: %w", outcome.ErrClientAborted, err)
			t.BytesIn = n
			g.finish(res)
			return
		}
		defer f.Close()
		cgienv.SetContentLength(params, n)
		req.Body = f
	default:
		req.Body = r.Body
		// net/http forbids reading a body once the handler returned: a
		// read still waiting for the client is cut short.
		req.StopBody = func() { res.rc.SetReadDeadline(time.Now()) }
	}
	if g.Tracer != nil {
		// The one change to what PHP sees, as in the relay: its spans
		// nest under the request's.
		if parent, state := g.Tracer.StartSpan(t, r.Header.Get("Traceparent"), r.Header.Get("Tracestate")); parent != "" {
			params["HTTP_TRACEPARENT"] = parent
			delete(params, "HTTP_TRACESTATE")
			if state != "" {
				params["HTTP_TRACESTATE"] = state
			}
		}
	}
	req.Params = cgienv.Pairs(params)
	for name, value := range params {
		t.NoteParam(name, value)
	}
	t.ParamsDone = time.Now()
	exchange.Do(ctx, req, t)
	if t.Err == nil && !res.committed {
		if g.Reviewer != nil {
			res.review(g.Reviewer)
		}
		if !res.committed {
			t.Err = res.commit()
		}
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
	if t.Err != nil && !errors.Is(t.Err, outcome.ErrClientAborted) {
		if res.committed {
			t.Truncated = true
		} else {
			res.replace()
		}
	}
	if g.Observer != nil {
		g.Observer.Observe(t)
	}
	if t.Truncated {
		// net/http closes the connection without ending the chunked
		// body or completing Content-Length: the client sees an error.
		panic(http.ErrAbortHandler)
	}
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
