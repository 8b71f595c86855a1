// Package tracing gives every request that goes through fcgiscope a span in
// a distributed trace (OpenTelemetry): a child of the span the client or
// nginx started, and the parent of PHP's own spans, with the request's
// phases as events and, for a failure, its cause. It is configured by the
// standard OTEL_* variables, read by the OpenTelemetry SDK itself.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Settings says whether the standard variables turn tracing on, and how
// spans leave. getenv reads the environment (os.Getenv).
type Settings struct {
	// On is true when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT
	// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or OTEL_TRACES_EXPORTER asks
	// for otlp, unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
	On bool
	// Protocol is "http/protobuf" (the default) or "grpc", from
	// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL.
	Protocol string
	// Endpoint is what the variables name, for the log; "" when the
	// exporter's default (localhost) applies.
	Endpoint string
}

// ReadSettings reads the standard variables that decide whether fcgiscope
// traces. It fails on values the OpenTelemetry specification does not
// allow, naming the variable.
func ReadSettings(getenv func(string) string) (Settings, error) {
	var s Settings
	s.Endpoint = first(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), getenv("OTEL_EXPORTER_OTLP_ENDPOINT"))
	exporter := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	switch exporter {
	case "", "otlp":
	case "none":
		return s, nil
	default:
		return s, fmt.Errorf("OTEL_TRACES_EXPORTER=%s: fcgiscope exports traces with otlp (or none); use a collector for other backends", exporter)
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return s, nil
	}
	s.On = exporter == "otlp" || s.Endpoint != ""
	s.Protocol = first(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
	switch s.Protocol {
	case "http/protobuf", "grpc":
	default:
		name := "OTEL_EXPORTER_OTLP_PROTOCOL"
		if getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") != "" {
			name = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
		}
		return s, fmt.Errorf("%s=%s: write http/protobuf or grpc (the Go exporter has no http/json)", name, s.Protocol)
	}
	return s, nil
}

func first(ss ...string) string {
	for _, s := range ss {
		if s = strings.TrimSpace(s); s != "" {
			return s
		}
	}
	return ""
}

// Tracer starts and ends the requests' spans. Make one with New.
type Tracer struct {
	// Pool is the php-fpm pool's name, an attribute of every span when
	// set.
	Pool string

	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TraceContext
}

// New returns a Tracer that exports spans as the standard variables say:
// the exporter's endpoint, headers and timeout (OTEL_EXPORTER_OTLP_*), the
// batch processor's queue and delays (OTEL_BSP_*), the sampler
// (OTEL_TRACES_SAMPLER, parent-based always-on by default) and the
// resource (OTEL_SERVICE_NAME, default fcgiscope, and
// OTEL_RESOURCE_ATTRIBUTES). Spans are queued and sent in batches by a
// goroutine of the SDK: a request never waits for the collector, and a
// full queue drops spans. onError receives the exporter's errors, such as
// an unreachable collector.
func New(ctx context.Context, s Settings, version string, onError func(error)) (*Tracer, error) {
	if !s.On {
		return nil, errors.New("tracing: the OTEL_* variables do not turn tracing on")
	}
	var exp sdktrace.SpanExporter
	var err error
	if s.Protocol == "grpc" {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: the OTLP exporter: %w", err)
	}
	if onError != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(onError))
	}
	return newTracer(sdktrace.WithBatcher(exp), version)
}

// newTracer returns a Tracer whose spans go to the processor given.
func newTracer(processor sdktrace.TracerProviderOption, version string) (*Tracer, error) {
	res, err := resource.Merge(resource.NewSchemaless(semconv.ServiceName("fcgiscope"), semconv.ServiceVersion(version)),
		resource.Environment())
	if err != nil {
		return nil, fmt.Errorf("tracing: OTEL_RESOURCE_ATTRIBUTES or OTEL_SERVICE_NAME: %w", err)
	}
	p := sdktrace.NewTracerProvider(processor, sdktrace.WithResource(res))
	return &Tracer{provider: p, tracer: p.Tracer("github.com/fcgiscope/fcgiscope", trace.WithInstrumentationVersion(version))}, nil
}

// Shutdown sends the spans still queued, within ctx, and stops the
// exporter.
func (t *Tracer) Shutdown(ctx context.Context) error {
	return t.provider.Shutdown(ctx)
}

// span is a request's span while the request runs.
type span struct {
	trace.Span
	traceID string
}

func (s *span) TraceID() string { return s.traceID }

// StartSpan starts the span of the request t, a child of the web server's
// traceparent when it sent a valid one and of a new trace otherwise, and
// returns the trace context to send php-fpm in its place.
func (t *Tracer) StartSpan(tr *outcome.Trace, traceparent, tracestate string) (string, string) {
	ctx := context.Background()
	if traceparent != "" {
		ctx = t.prop.Extract(ctx, propagation.MapCarrier{"traceparent": traceparent, "tracestate": tracestate})
	}
	ctx, sp := t.tracer.Start(ctx, "fcgiscope", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(tr.Accepted))
	if sp.IsRecording() {
		tr.Span = &span{Span: sp, traceID: sp.SpanContext().TraceID().String()}
	}
	out := propagation.MapCarrier{}
	t.prop.Inject(ctx, out)
	return out["traceparent"], out["tracestate"]
}

// Record ends the span of a finished request with what happened: it is the
// diagnostics.Sink that closes what StartSpan opened.
func (t *Tracer) Record(tr *outcome.Trace, d *diagnostics.Diagnosis) {
	s, ok := tr.Span.(*span)
	if !ok {
		return
	}
	sp := s.Span
	path, query, _ := strings.Cut(tr.URI, "?")
	sp.SetName(spanName(tr))
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(tr.Method),
		semconv.URLPath(path),
		semconv.ClientAddress(hostOf(tr.RemoteAddr)),
		semconv.NetworkPeerAddress(tr.Upstream.Address),
		attribute.String("fcgiscope.request_id", tr.RequestID),
	}
	if query != "" {
		attrs = append(attrs, semconv.URLQuery(diagnostics.RedactQuery("?" + query)[1:]))
	}
	if tr.Host != "" {
		attrs = append(attrs, semconv.ServerAddress(hostOf(tr.Host)))
	}
	if tr.Script != "" {
		attrs = append(attrs, attribute.String("fcgiscope.script", tr.Script))
	}
	if t.Pool != "" {
		attrs = append(attrs, attribute.String("php_fpm.pool", t.Pool))
	}
	status := tr.Status
	if d != nil {
		attrs = append(attrs, attribute.String("fcgiscope.cause", d.Cause.ID))
		if d.FPMPid != 0 {
			attrs = append(attrs, attribute.Int("php_fpm.worker.pid", d.FPMPid))
		}
		if tr.Err != nil || status == 0 {
			status = d.StatusCode()
		}
	}
	if status != 0 {
		attrs = append(attrs, semconv.HTTPResponseStatusCode(status))
	}
	sp.SetAttributes(attrs...)
	for _, ev := range phases(tr) {
		sp.AddEvent(ev.name, trace.WithTimestamp(ev.at))
	}
	if d != nil && (tr.Err != nil || status >= 500) {
		sp.SetAttributes(semconv.ErrorTypeKey.String(d.Cause.ID))
		sp.SetStatus(codes.Error, d.Detail)
	}
	end := tr.End
	if end.IsZero() {
		end = time.Now()
	}
	sp.End(trace.WithTimestamp(end))
}

// spanName is the method and the script, as the web server named it: the
// front controller of most applications, so that spans group well.
func spanName(tr *outcome.Trace) string {
	name := strings.TrimPrefix(tr.Script, strings.TrimRight(tr.DocumentRoot, "/"))
	if name == "" || name == tr.Script && tr.DocumentRoot != "" {
		name, _, _ = strings.Cut(tr.URI, "?")
	}
	if tr.Method == "" {
		return name
	}
	return tr.Method + " " + name
}

// hostOf drops the port of a host:port, as the semantic conventions want
// addresses without it.
func hostOf(hostport string) string {
	if i := strings.LastIndexByte(hostport, ':'); i > 0 && !strings.HasSuffix(hostport, "]") && strings.Count(hostport, ":") == 1 {
		return hostport[:i]
	}
	return strings.Trim(hostport, "[]")
}

type phase struct {
	name string
	at   time.Time
}

// phases are the moments of the request's life that happened, as span
// events.
func phases(tr *outcome.Trace) []phase {
	var out []phase
	for _, p := range []phase{
		{"params read", tr.ParamsDone},
		{"queued for an upstream slot", tr.QueueStart},
		{"upstream slot granted", tr.QueueEnd},
		{"connecting to php-fpm", tr.DialStart},
		{"connected to php-fpm", tr.DialEnd},
		{"request body sent", tr.StdinDone},
		{"first response byte", tr.FirstByte},
		{"END_REQUEST", tr.EndedAt},
	} {
		if !p.at.IsZero() {
			out = append(out, p)
		}
	}
	return out
}

// throttle passes on at most one error a minute, so that an unreachable
// collector costs a warning, not a log full of them.
type throttle struct {
	mu   sync.Mutex
	last time.Time
	drop int
}

// Throttled returns onError wrapped so that it is called at most once a
// minute; the calls it drops are counted in the next one's error.
func Throttled(onError func(err error, dropped int)) func(error) {
	th := &throttle{}
	return func(err error) {
		th.mu.Lock()
		now := time.Now()
		if !th.last.IsZero() && now.Sub(th.last) < time.Minute {
			th.drop++
			th.mu.Unlock()
			return
		}
		dropped := th.drop
		th.last, th.drop = now, 0
		th.mu.Unlock()
		onError(err, dropped)
	}
}
