package proxy

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// fakeTracer answers with a fixed trace context and notes what it got.
type fakeTracer struct {
	mu            sync.Mutex
	parent, state string
}

type fakeSpan struct{}

func (fakeSpan) TraceID() string { return "4bf92f3577b34da6a3ce929d0e0e4736" }

func (f *fakeTracer) StartSpan(t *outcome.Trace, parent, state string) (string, string) {
	f.mu.Lock()
	f.parent, f.state = parent, state
	f.mu.Unlock()
	t.Span = fakeSpan{}
	return "00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01", "fcgiscope=1"
}

// paramsUpstream answers with the params it got, one NAME=value a line.
func paramsUpstream(t testing.TB, conn net.Conn) {
	r, w := fcgi.NewReader(conn), fcgi.NewWriter(conn)
	id, params, _, err := fcgitest.ReadRequest(r)
	if err != nil {
		return
	}
	var b strings.Builder
	b.WriteString("Content-Type: text/plain\r\n\r\n")
	for k, v := range params {
		b.WriteString(k + "=" + v + "\n")
	}
	w.WriteStream(fcgi.TypeStdout, id, []byte(b.String()))
	w.EndStream(fcgi.TypeStdout, id)
	w.WriteEndRequest(id, fcgi.EndRequest{})
	w.Flush()
}

func TestTracingRewritesTheTraceContextPHPGetsAndNothingElse(t *testing.T) {
	for _, tt := range []struct {
		name   string
		params []string
	}{
		{"the client's trace context", []string{"HTTP_TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "HTTP_TRACESTATE", "vendor=1"}},
		{"none", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			obs, tracer := newTraces(), &fakeTracer{}
			addr := startProxy(t, &Server{Upstream: fakeUpstream(t, paramsUpstream), Observer: obs, Tracer: tracer})
			resp, err := fcgitest.Do(context.Background(), addr, newReq(append([]string{"REQUEST_METHOD", "GET", "SCRIPT_FILENAME", "/srv/www/index.php"}, tt.params...)...))
			if err != nil {
				t.Fatal(err)
			}
			got := string(resp.Stdout)
			for _, want := range []string{
				"HTTP_TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01\n",
				"HTTP_TRACESTATE=fcgiscope=1\n",
				"REQUEST_METHOD=GET\n", "SCRIPT_FILENAME=/srv/www/index.php\n",
			} {
				if !strings.Contains(got, want) {
					t.Errorf("php-fpm's params lack %q:\n%s", want, got)
				}
			}
			_, lines, _ := strings.Cut(got, "\r\n\r\n")
			if strings.Count(got, "HTTP_TRACEPARENT=") != 1 || strings.Count(lines, "\n") != 4 {
				t.Errorf("php-fpm's params are not the web server's with the trace context replaced:\n%s", got)
			}
			tracer.mu.Lock()
			if len(tt.params) > 0 && (tracer.parent != tt.params[1] || tracer.state != tt.params[3]) {
				t.Errorf("the tracer got %q %q", tracer.parent, tracer.state)
			}
			tracer.mu.Unlock()
			if tr := obs.next(t); tr.Span == nil {
				t.Error("the Trace has no span")
			}
		})
	}
}
