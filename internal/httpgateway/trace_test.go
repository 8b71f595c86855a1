package httpgateway

import (
	"net"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// fakeTracer answers with a fixed trace context and notes the client's.
type fakeTracer struct{ parent, state string }

type fakeSpan struct{}

func (fakeSpan) TraceID() string { return "4bf92f3577b34da6a3ce929d0e0e4736" }

func (f *fakeTracer) StartSpan(t *outcome.Trace, parent, state string) (string, string) {
	f.parent, f.state = parent, state
	t.Span = fakeSpan{}
	return "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01", ""
}

func TestTracingGivesPHPTheRequestsSpanAsParent(t *testing.T) {
	got := make(chan map[string]string, 1)
	up := startFake(t, func(conn net.Conn, w *fcgi.Writer, req fakeRequest) {
		got <- req.params
		writeStdout(w, "Content-Type: text/plain\r\n\r\nok", 4096)
		endRequest(w, fcgi.StatusRequestComplete)
	})
	tracer, obs := &fakeTracer{}, &traces{}
	root := docRoot(t, map[string]string{"index.php": ""})
	u := serve(t, &Gateway{Root: root, Upstream: up, Tracer: tracer, Observer: obs})
	resp, _, err := fetch(t, "GET", u+"/index.php", nil,
		"Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "Tracestate", "vendor=1")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("status %d, %v", resp.StatusCode, err)
	}
	params := <-got
	if params["HTTP_TRACEPARENT"] != "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01" {
		t.Errorf("PHP got HTTP_TRACEPARENT %q, want the request's span as parent", params["HTTP_TRACEPARENT"])
	}
	if _, ok := params["HTTP_TRACESTATE"]; ok {
		t.Errorf("PHP got the client's tracestate %q though the tracer gave none", params["HTTP_TRACESTATE"])
	}
	if tracer.parent != "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" || tracer.state != "vendor=1" {
		t.Errorf("the tracer got %q %q", tracer.parent, tracer.state)
	}
	if tr := obs.wait(t, 1)[0]; tr.Span == nil {
		t.Error("the Trace has no span")
	}
}
