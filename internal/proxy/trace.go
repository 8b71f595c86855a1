package proxy

import (
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// A Tracer starts the span of each request in a distributed trace (package
// tracing has the OpenTelemetry one). StartSpan is given the trace context
// the web server passed on (HTTP_TRACEPARENT and HTTP_TRACESTATE, empty when
// there is none); it sets t.Span when the span is recorded and returns the
// trace context php-fpm gets instead, whose parent is the new span, so that
// PHP's own spans nest under it. An empty traceparent leaves the params as
// they came.
type Tracer interface {
	StartSpan(t *outcome.Trace, traceparent, tracestate string) (newTraceparent, newTracestate string)
}

// Names of the params that carry the W3C trace context, as nginx passes the
// client's traceparent and tracestate headers.
const (
	paramTraceparent = "HTTP_TRACEPARENT"
	paramTracestate  = "HTTP_TRACESTATE"
)

// traceRequest starts the request's span and rewrites its trace context in
// the params sent to php-fpm: the one change to what PHP sees that
// fcgiscope makes, and only when tracing is on.
func (c *conn) traceRequest(q *request) {
	var parent, state string
	c.params.ForEach(func(name, value []byte) bool {
		switch string(name) {
		case paramTraceparent:
			parent = string(value)
		case paramTracestate:
			state = string(value)
		}
		return true
	})
	newParent, newState := c.srv.Tracer.StartSpan(&q.trace, parent, state)
	if newParent == "" {
		return
	}
	out := make([]byte, 0, c.params.Len()+len(paramTraceparent)+len(newParent)+len(paramTracestate)+len(newState)+10)
	c.params.ForEach(func(name, value []byte) bool {
		if n := string(name); n != paramTraceparent && n != paramTracestate {
			out = fcgi.AppendPair(out, n, string(value))
		}
		return true
	})
	out = fcgi.AppendPair(out, paramTraceparent, newParent)
	if newState != "" {
		out = fcgi.AppendPair(out, paramTracestate, newState)
	}
	c.params.Set(out)
}
