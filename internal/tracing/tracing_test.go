package tracing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

func TestReadSettingsFollowsTheStandardVariables(t *testing.T) {
	for _, tt := range []struct {
		name    string
		env     map[string]string
		on      bool
		proto   string
		wantErr string
	}{
		{"nothing set: off", nil, false, "", ""},
		{"an endpoint turns it on", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, true, "http/protobuf", ""},
		{"a traces endpoint too", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true, "http/protobuf", ""},
		{"the exporter named alone: the default endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true, "http/protobuf", ""},
		{"none wins over an endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, false, "", ""},
		{"the SDK disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, false, "", ""},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, true, "grpc", ""},
		{"the traces protocol wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, true, "grpc", ""},
		{"http/json is not in the Go exporter", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, true, "", "OTEL_EXPORTER_OTLP_PROTOCOL=http/json: write http/protobuf or grpc"},
		{"another exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false, "", "OTEL_TRACES_EXPORTER=zipkin: fcgiscope exports traces with otlp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ReadSettings(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || s.On != tt.on || (tt.on && s.Protocol != tt.proto) {
				t.Errorf("ReadSettings = %+v, %v; want on %v protocol %q", s, err, tt.on, tt.proto)
			}
		})
	}
}

// testTracer records ended spans in memory.
func testTracer(t *testing.T) (*Tracer, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tr, err := newTracer(sdktrace.WithSyncer(exp), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	return tr, exp
}

const clientParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func killedTrace() *outcome.Trace {
	start := time.Now().Add(-1200 * time.Millisecond)
	return &outcome.Trace{
		RequestID: "r1", Method: "GET", URI: "/index.php?page=2&token=s3cret", Script: "/srv/www/index.php", DocumentRoot: "/srv/www",
		RemoteAddr: "203.0.113.9", Host: "shop.example:8080", Upstream: fcgi.Addr{Network: "unix", Address: "/run/php/php8.2-fpm.sock"},
		Accepted: start, ParamsDone: start.Add(time.Millisecond), DialStart: start.Add(2 * time.Millisecond), DialEnd: start.Add(3 * time.Millisecond),
		StdinDone: start.Add(4 * time.Millisecond), End: start.Add(1200 * time.Millisecond),
		Err: fmt.Errorf("%w: %w", outcome.ErrNoEndRequest, io.EOF),
	}
}

func TestASpanIsTheChildOfTheClientsAndTheParentOfPHPs(t *testing.T) {
	tr, exp := testTracer(t)
	tr.Pool = "www"
	req := killedTrace()
	parent, state := tr.StartSpan(req, clientParent, "vendor=1")
	if req.Span == nil {
		t.Fatal("a sampled request has no span")
	}
	sc, err := trace.ParseTraceState(state)
	if err != nil || sc.Get("vendor") != "1" {
		t.Errorf("tracestate %q is not passed on", state)
	}
	parts := strings.Split(parent, "-")
	if len(parts) != 4 || parts[1] != "4bf92f3577b34da6a3ce929d0e0e4736" || parts[2] == "00f067aa0ba902b7" || parts[3] != "01" {
		t.Fatalf("php-fpm gets traceparent %q: want the client's trace, a new parent, sampled", parent)
	}
	if req.Span.TraceID() != parts[1] {
		t.Errorf("TraceID %q", req.Span.TraceID())
	}

	d := &diagnostics.Diagnosis{Cause: diagnostics.CauseWorkerTimeout, Detail: "php-fpm killed the worker at request_terminate_timeout (1s).", FPMPid: 4242, Evidence: map[string]string{}}
	tr.Record(req, d)
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans exported, want 1", len(spans))
	}
	s := spans[0]
	if s.Parent.SpanID().String() != "00f067aa0ba902b7" || s.SpanContext.SpanID().String() != parts[2] || s.SpanKind != trace.SpanKindServer {
		t.Errorf("span %s parent %s kind %v", s.SpanContext.SpanID(), s.Parent.SpanID(), s.SpanKind)
	}
	if s.Name != "GET /index.php" || !s.StartTime.Equal(req.Accepted) || !s.EndTime.Equal(req.End) {
		t.Errorf("name %q start %v end %v", s.Name, s.StartTime, s.EndTime)
	}
	if s.Status.Code != codes.Error || s.Status.Description != d.Detail {
		t.Errorf("status %+v", s.Status)
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, a := range s.Attributes {
		attrs[a.Key] = a.Value
	}
	for k, want := range map[attribute.Key]string{
		"error.type": "worker_timeout_killed", "http.request.method": "GET", "url.path": "/index.php", "url.query": "page=2&token=REDACTED",
		"server.address": "shop.example", "client.address": "203.0.113.9", "network.peer.address": "/run/php/php8.2-fpm.sock",
		"php_fpm.pool": "www", "fcgiscope.request_id": "r1",
	} {
		if got := attrs[k].String(); got != want {
			t.Errorf("attribute %s = %q, want %q", k, got, want)
		}
	}
	if attrs["php_fpm.worker.pid"].AsInt64() != 4242 || attrs["http.response.status_code"].AsInt64() != 502 {
		t.Errorf("pid %v status %v", attrs["php_fpm.worker.pid"], attrs["http.response.status_code"])
	}
	var events []string
	for _, e := range s.Events {
		events = append(events, e.Name)
	}
	if strings.Join(events, ",") != "params read,connecting to php-fpm,connected to php-fpm,request body sent" {
		t.Errorf("events %q", events)
	}
}

func TestWithoutATraceparentATraceBegins(t *testing.T) {
	tr, exp := testTracer(t)
	req := killedTrace()
	req.Err = nil
	req.Status = 200
	parent, _ := tr.StartSpan(req, "", "")
	tr.Record(req, nil)
	s := exp.GetSpans()[0]
	if s.Parent.IsValid() || !strings.Contains(parent, s.SpanContext.TraceID().String()) || s.Status.Code == codes.Error {
		t.Errorf("span %v parent %v, php-fpm gets %q, status %v", s.SpanContext, s.Parent, parent, s.Status)
	}
}

func TestAnUnsampledTraceStaysUnsampledAndCostsNoSpan(t *testing.T) {
	tr, exp := testTracer(t)
	req := killedTrace()
	parent, _ := tr.StartSpan(req, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "")
	tr.Record(req, nil)
	if req.Span != nil || len(exp.GetSpans()) != 0 || !strings.HasSuffix(parent, "-00") {
		t.Errorf("span %v, %d exported, php-fpm gets %q", req.Span, len(exp.GetSpans()), parent)
	}
}

// blockedExporter never finishes an export, like a collector that does
// not answer.
type blockedExporter struct{ release chan struct{} }

func (b *blockedExporter) ExportSpans(ctx context.Context, _ []sdktrace.ReadOnlySpan) error {
	select {
	case <-b.release:
	case <-ctx.Done():
	}
	return errors.New("collector not answering")
}
func (b *blockedExporter) Shutdown(context.Context) error { return nil }

func TestACollectorThatHangsNeverHoldsARequest(t *testing.T) {
	exp := &blockedExporter{release: make(chan struct{})}
	tr, err := newTracer(sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(64)), "test")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 20000 {
			wg.Go(func() {
				req := killedTrace()
				req.RequestID = fmt.Sprint(i)
				tr.StartSpan(req, clientParent, "")
				tr.Record(req, nil)
			})
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("requests waited for a collector that does not answer")
	}
	close(exp.release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr.Shutdown(ctx)
}
