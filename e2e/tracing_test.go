package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// fcgiscopeSpan returns fcgiscope's span among a trace's.
func fcgiscopeSpan(t *testing.T, spans []testbed.JaegerSpan) testbed.JaegerSpan {
	t.Helper()
	for _, s := range spans {
		if s.ServiceName == "fcgiscope-e2e" {
			return s
		}
	}
	t.Fatalf("no span of fcgiscope in the trace: %+v", spans)
	return testbed.JaegerSpan{}
}

// A request with a traceparent goes through nginx, fcgiscope and php-fpm:
// Jaeger gets fcgiscope's span, a child of the client's, with the request's
// phases; PHP gets a traceparent whose parent is fcgiscope's span, so that
// its own spans nest there; and a worker that is killed leaves its cause on
// the span, whose trace id the page and the log line give.
func TestTracesReachJaegerWithPHPUnderFcgiscope(t *testing.T) {
	testbed.RequireFPM(t)
	jaeger := testbed.StartJaeger(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "tcp", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+jaeger.OTLPEndpoint, "OTEL_SERVICE_NAME=fcgiscope-e2e", "OTEL_BSP_SCHEDULE_DELAY=100")

	get := func(path, traceID string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.nginx.URL+path, nil)
		req.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		req.Header.Set("Accept", "application/problem+json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}

	t.Run("a request PHP answers", func(t *testing.T) {
		traceID := randomHex(t, 16)
		resp, body := get("/env.php?x=1", traceID)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d:\n%s", resp.StatusCode, body)
		}
		_, phpParent, ok := strings.Cut(body, "HTTP_TRACEPARENT=00-"+traceID+"-")
		if !ok {
			t.Fatalf("PHP got no traceparent of the client's trace:\n%s", body)
		}
		phpParent, _, _ = strings.Cut(phpParent, "-")
		span := fcgiscopeSpan(t, jaeger.Trace(t, traceID, 20*time.Second))
		if span.ParentSpanID != "00f067aa0ba902b7" {
			t.Errorf("fcgiscope's span has parent %q, want the client's span 00f067aa0ba902b7", span.ParentSpanID)
		}
		if span.SpanID != phpParent {
			t.Errorf("PHP's parent is %s, fcgiscope's span is %s", phpParent, span.SpanID)
		}
		if span.OperationName != "GET /env.php" || span.Tags["http.request.method"] != "GET" || span.Tags["http.response.status_code"] != int64(200) || span.Tags["url.path"] != "/env.php" || span.Tags["span.kind"] != "server" {
			t.Errorf("span %q tags %v", span.OperationName, span.Tags)
		}
		var events []string
		for _, l := range span.Logs {
			events = append(events, l.Name)
		}
		for _, want := range []string{"params read", "connected to php-fpm", "request body sent", "first response byte", "END_REQUEST"} {
			if !strings.Contains(strings.Join(events, ","), want) {
				t.Errorf("the span's events %q lack %q", events, want)
			}
		}
		line := waitLog(t, s.fcgiscope, func(m map[string]any) bool { return m["message"] == "request" && m["uri"] == "/env.php?x=1" })
		if line["trace_id"] != traceID {
			t.Errorf("the log line's trace_id is %v, want %s", line["trace_id"], traceID)
		}
	})

	t.Run("a killed worker", func(t *testing.T) {
		traceID := randomHex(t, 16)
		resp, body := get("/crash.php?sig=9", traceID)
		var p problem
		json.Unmarshal([]byte(body), &p)
		if resp.StatusCode != 502 || p.Cause != "worker_crashed" {
			t.Fatalf("status %d cause %q:\n%s", resp.StatusCode, p.Cause, body)
		}
		if p.Evidence["trace_id"] != traceID {
			t.Errorf("the page's evidence has trace_id %q, want %s", p.Evidence["trace_id"], traceID)
		}
		span := fcgiscopeSpan(t, jaeger.Trace(t, traceID, 20*time.Second))
		if span.Tags["error.type"] != "worker_crashed" || span.Tags["otel.status_code"] != "ERROR" || !strings.Contains(span.Tags["otel.status_description"].(string), "SIGKILL") {
			t.Errorf("the span does not carry the cause: %v", span.Tags)
		}
		if pid, ok := span.Tags["php_fpm.worker.pid"].(int64); !ok || pid <= 0 {
			t.Errorf("the span does not name the worker: %v", span.Tags["php_fpm.worker.pid"])
		}
	})
}
