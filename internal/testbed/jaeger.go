package testbed

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/child"
)

// jaegerToolDir is the module, relative to the root of this one, that pins
// Jaeger. It is a module of its own so that Jaeger's hundreds of
// dependencies stay out of fcgiscope's go.mod.
const jaegerToolDir = "tools/jaeger"

// jaegerPackage is the main package built from jaegerToolDir.
const jaegerPackage = "github.com/jaegertracing/jaeger/cmd/jaeger"

const (
	// jaegerReadyTimeout bounds how long Jaeger may take to accept
	// connections; it is larger than readyTimeout because the binary is
	// big and starts a dozen components.
	jaegerReadyTimeout = 30 * time.Second
	// jaegerStartAttempts is how often StartJaeger tries again when a port
	// chosen by FreePort was taken before Jaeger bound it.
	jaegerStartAttempts = 3
)

// jaegerBuild caches the result of building Jaeger for the test binary; the
// binary itself is cached across test binaries and runs, see buildJaeger.
var jaegerBuild struct {
	once sync.Once
	path string
	err  error
}

// RequireJaeger builds Jaeger (the version pinned in tools/jaeger/go.mod) and
// returns the path of the executable. The binary is cached under
// os.TempDir()/fcgiscope-testbed/jaeger-<version>-<hash of tools/jaeger's
// go.mod and go.sum>, so only the first run on a machine pays for the build
// (about four minutes, more while the modules are downloaded); test binaries
// running at once wait for each other's build through a file lock instead of
// building it twice.
//
// When the build fails (no Go module proxy, say) the test is skipped, or
// fails when CI=true.
func RequireJaeger(t testing.TB) string {
	t.Helper()
	jaegerBuild.once.Do(func() {
		start := time.Now()
		jaegerBuild.path, jaegerBuild.err = buildJaeger(func(format string, args ...any) {
			t.Logf("testbed: "+format, args...)
		})
		if jaegerBuild.err == nil {
			t.Logf("testbed: Jaeger at %s (%v)", jaegerBuild.path, time.Since(start).Round(time.Millisecond))
		}
	})
	if jaegerBuild.err != nil {
		jaegerUnavailable(t, inCI(), jaegerBuild.err)
		return ""
	}
	return jaegerBuild.path
}

// jaegerUnavailable ends the test because Jaeger could not be built. It is
// separate from RequireJaeger so that the skip-or-fail decision can be tested
// with a fake testing.TB.
func jaegerUnavailable(t testing.TB, ci bool, err error) {
	t.Helper()
	if ci {
		t.Fatalf("integration test needs Jaeger, which could not be built from %s "+
			"(failing instead of skipping because CI=true): %v", jaegerToolDir, err)
		return
	}
	t.Skipf("SKIPPING integration test: Jaeger could not be built from %s; set CI=true to make this a failure: %v",
		jaegerToolDir, err)
}

// jaegerVersionRE finds the Jaeger version that tools/jaeger/go.mod requires.
var jaegerVersionRE = regexp.MustCompile(`(?m)^\s*github\.com/jaegertracing/jaeger\s+(v\S+)`)

// buildJaeger returns the path of the cached Jaeger binary, building it with
// `go build` in tools/jaeger first when it is not there yet. logf reports
// that a long build starts.
func buildJaeger(logf func(format string, args ...any)) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	toolDir := filepath.Join(root, filepath.FromSlash(jaegerToolDir))
	goMod, err := os.ReadFile(filepath.Join(toolDir, "go.mod"))
	if err != nil {
		return "", err
	}
	goSum, err := os.ReadFile(filepath.Join(toolDir, "go.sum"))
	if err != nil {
		return "", err
	}
	m := jaegerVersionRE.FindSubmatch(goMod)
	if m == nil {
		return "", fmt.Errorf("%s/go.mod does not require github.com/jaegertracing/jaeger", jaegerToolDir)
	}
	version := string(m[1])
	key := sha256.Sum256(append(append(goMod, 0), goSum...))
	outDir := filepath.Join(os.TempDir(), "fcgiscope-testbed", fmt.Sprintf("jaeger-%s-%x", version, key[:6]))
	bin := filepath.Join(outDir, "jaeger")
	if isExecutable(bin) {
		return bin, nil
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}

	// Another test binary may be building it right now: wait for it rather
	// than spending minutes on the same build.
	lock, err := os.OpenFile(filepath.Join(outDir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("opening build lock: %w", err)
	}
	defer lock.Close() // Closing releases the lock too.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
		}
		logf("waiting for another test binary building Jaeger into %s", outDir)
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
		}
	}
	if isExecutable(bin) {
		return bin, nil
	}

	tmpDir, err := os.MkdirTemp(outDir, "build-")
	if err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(tmpDir)
	tmpBin := filepath.Join(tmpDir, "jaeger")
	// -mod=readonly on the command line overrides a -mod in GOFLAGS: the
	// build must use exactly the pinned versions. CGO_ENABLED=0 is how
	// Jaeger's releases are built and needs no C compiler.
	args := []string{"build", "-mod=readonly", "-o", tmpBin, jaegerPackage}
	cmd := exec.Command("go", args...)
	cmd.Dir = toolDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	logf("building Jaeger %s from %s into %s; the first build takes minutes", version, jaegerToolDir, outDir)
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), toolDir, err, tail(string(output), 40))
	}
	if err := os.Rename(tmpBin, bin); err != nil {
		return "", fmt.Errorf("installing built binary: %w", err)
	}
	return bin, nil
}

// Jaeger is a running Jaeger (v2, the OpenTelemetry collector based one)
// with an in-memory trace store, started by StartJaeger.
type Jaeger struct {
	Pid int
	// OTLPEndpoint is the base URL of the OTLP/HTTP receiver,
	// http://127.0.0.1:PORT, as OTEL_EXPORTER_OTLP_ENDPOINT takes it;
	// traces are POSTed to OTLPEndpoint + "/v1/traces".
	OTLPEndpoint string
	// OTLPGRPCEndpoint is the OTLP/gRPC receiver, http://127.0.0.1:PORT,
	// as OTEL_EXPORTER_OTLP_ENDPOINT takes it with
	// OTEL_EXPORTER_OTLP_PROTOCOL=grpc (the http scheme means plaintext).
	OTLPGRPCEndpoint string
	// QueryURL is the base URL of the query HTTP API, http://127.0.0.1:PORT
	// (GET /api/traces/{id}, /api/services, ...). The UI at / is only a
	// placeholder page: its assets are not part of the Go module.
	QueryURL string
	// QueryGRPCAddr is the query service's gRPC API (api_v2 and api_v3),
	// 127.0.0.1:PORT.
	QueryGRPCAddr string
	// ConfigFile is the path of the YAML configuration Jaeger runs with.
	ConfigFile string

	proc     *child.Child
	output   *syncBuffer
	client   *http.Client
	stopOnce sync.Once
}

// jaegerConfig is Jaeger v2's configuration, an OpenTelemetry collector
// configuration with Jaeger's extensions. Only the components listed here
// run, so every listener is one of the four addresses filled in: the OTLP
// receiver's HTTP and gRPC ports and the query extension's HTTP and gRPC
// ports. The collector's own metrics (a Prometheus endpoint on :8888 by
// default) and traces are turned off, and so is the query service's tracing
// of itself, which would export to the OTEL_EXPORTER_OTLP_* of the
// environment. No batch processor, so that spans are queryable at once.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    traces:
      level: none
    logs:
      level: info
      encoding: console
      sampling:
        enabled: false

extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:%[3]d
    grpc:
      endpoint: 127.0.0.1:%[4]d

receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%[1]d
      grpc:
        endpoint: 127.0.0.1:%[2]d

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// StartJaeger builds Jaeger (see RequireJaeger) and runs it with an
// in-memory store and every listener on a free 127.0.0.1 port: OTLP over
// HTTP and gRPC, and the query API over HTTP and gRPC. Nothing else listens;
// no health check, zpages, pprof, expvar, remote sampling or metrics
// endpoint is configured. It waits until the OTLP receivers accept
// connections (the collector starts them last) and stops Jaeger by pid in
// t.Cleanup, logging its output when the test failed.
func StartJaeger(t testing.TB) *Jaeger {
	t.Helper()
	bin := RequireJaeger(t)
	dir := t.TempDir()
	for attempt := 1; ; attempt++ {
		j, err := startJaeger(t, bin, dir)
		if err == nil {
			return j
		}
		// FreePort releases the ports before Jaeger binds them, so another
		// process may have taken one; that is worth another try.
		if attempt < jaegerStartAttempts && strings.Contains(j.Output(), "address already in use") {
			t.Logf("testbed: Jaeger could not bind a port, trying again: %v", err)
			continue
		}
		t.Fatalf("testbed: Jaeger not ready: %v\nconfig %s:\n%s\noutput:\n%s",
			err, j.ConfigFile, readFileString(j.ConfigFile), tail(j.Output(), 60))
	}
}

// startJaeger makes one attempt of StartJaeger. On an error the returned
// Jaeger, already stopped, holds the output.
func startJaeger(t testing.TB, bin, dir string) (*Jaeger, error) {
	t.Helper()
	otlpHTTP, otlpGRPC, queryHTTP, queryGRPC := FreePort(t), FreePort(t), FreePort(t), FreePort(t)
	j := &Jaeger{
		OTLPEndpoint:     fmt.Sprintf("http://127.0.0.1:%d", otlpHTTP),
		OTLPGRPCEndpoint: fmt.Sprintf("http://127.0.0.1:%d", otlpGRPC),
		QueryURL:         fmt.Sprintf("http://127.0.0.1:%d", queryHTTP),
		QueryGRPCAddr:    fmt.Sprintf("127.0.0.1:%d", queryGRPC),
		ConfigFile:       filepath.Join(dir, "jaeger.yaml"),
		output:           &syncBuffer{},
		// No keep-alive: no idle connection, and no goroutine serving it,
		// outlives a request.
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
	}
	config := fmt.Sprintf(jaegerConfig, otlpHTTP, otlpGRPC, queryHTTP, queryGRPC)
	if err := os.WriteFile(j.ConfigFile, []byte(config), 0o644); err != nil {
		t.Fatalf("testbed: writing Jaeger config: %v", err)
	}

	cmd := exec.Command(bin, "--config", j.ConfigFile)
	cmd.Dir = dir
	cmd.Env = jaegerEnv(child.Env(nil))
	cmd.Stdout, cmd.Stderr = j.output, j.output // Stdin stays nil, i.e. /dev/null.
	cmd.WaitDelay = 2 * time.Second
	proc, err := child.Start(cmd, syscall.SIGTERM)
	if err != nil {
		t.Fatalf("testbed: jaeger: %v", err)
	}
	j.Pid, j.proc = cmd.Process.Pid, proc

	for _, addr := range []string{j.QueryGRPCAddr, strings.TrimPrefix(j.QueryURL, "http://"),
		strings.TrimPrefix(j.OTLPGRPCEndpoint, "http://"), strings.TrimPrefix(j.OTLPEndpoint, "http://")} {
		if err := proc.WaitReady("tcp", addr, jaegerReadyTimeout); err != nil {
			j.Stop()
			return j, err
		}
	}
	t.Cleanup(func() {
		j.Stop()
		if t.Failed() {
			t.Logf("testbed: jaeger output:\n%s", tail(j.Output(), 60))
		}
	})
	t.Logf("testbed: jaeger pid %d, OTLP %s, query %s", j.Pid, j.OTLPEndpoint, j.QueryURL)
	return j, nil
}

// jaegerEnv returns env without the OpenTelemetry SDK variables, which a
// test may set for the code it traces and which must not configure
// Jaeger's own SDK.
func jaegerEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "OTEL_") {
			out = append(out, kv)
		}
	}
	return out
}

// Stop sends SIGTERM, waits up to 10 s for a graceful exit, then SIGKILLs
// Jaeger. It is idempotent and safe to call concurrently; the spans stored
// are lost.
func (j *Jaeger) Stop() {
	j.stopOnce.Do(func() {
		j.proc.Stop(child.Step{Signal: syscall.SIGTERM, Wait: 10 * time.Second})
	})
}

// Output returns everything Jaeger wrote to stdout and stderr so far.
func (j *Jaeger) Output() string {
	return j.output.String()
}

// JaegerSpan is one span of a trace as Jaeger's query API returns it, with
// the OTLP data mapped the Jaeger way: the span kind is the tag "span.kind"
// ("server", "client", ...), the status the tags "otel.status_code" ("OK",
// "ERROR") and "otel.status_description" (and "error": true on errors), the
// instrumentation scope "otel.scope.name" and "otel.scope.version", and
// array or map attributes are JSON strings.
type JaegerSpan struct {
	TraceID string
	SpanID  string
	// ParentSpanID is the span of the CHILD_OF reference, "" for a root
	// span.
	ParentSpanID  string
	OperationName string
	// StartTime and Duration have microsecond precision.
	StartTime time.Time
	Duration  time.Duration
	// Tags are the span's attributes and the ones Jaeger derives from the
	// OTLP span (see JaegerSpan). Values are string, bool, int64, float64
	// or []byte.
	Tags map[string]any
	// Logs are the span's events, in Jaeger's order (by time).
	Logs []JaegerLog
	// ServiceName is the resource's service.name.
	ServiceName string
	// ProcessTags are the other resource attributes.
	ProcessTags map[string]any
	// Warnings are Jaeger's complaints about the span (invalid parent,
	// clock skew...).
	Warnings []string
}

// JaegerLog is a span event.
type JaegerLog struct {
	Timestamp time.Time
	// Name is the event name, which Jaeger keeps in the field "event".
	Name string
	// Fields are the event's attributes, without "event".
	Fields map[string]any
}

// Trace fetches the trace with the hex id traceID from the query API (GET
// /api/traces/{id}), waiting up to timeout for it to appear because spans
// are exported and stored asynchronously. It returns the spans ordered by
// start time. When the trace does not appear in time the test fails.
func (j *Jaeger) Trace(t testing.TB, traceID string, timeout time.Duration) []JaegerSpan {
	t.Helper()
	return j.TraceN(t, traceID, 1, timeout)
}

// TraceN is Trace waiting until the trace has at least n spans, for traces
// whose spans are exported in several batches.
func (j *Jaeger) TraceN(t testing.TB, traceID string, n int, timeout time.Duration) []JaegerSpan {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		spans, err := j.fetchTrace(traceID)
		if err == nil && len(spans) >= n {
			return spans
		}
		if err == nil {
			err = fmt.Errorf("the trace has %d spans, want at least %d", len(spans), n)
		}
		if j.proc.Exited() {
			t.Fatalf("testbed: jaeger exited while waiting for trace %s: %v\noutput:\n%s",
				traceID, j.proc.Err(), tail(j.Output(), 60))
		}
		if time.Now().After(deadline) {
			t.Fatalf("testbed: trace %s not found in Jaeger within %v: %v", traceID, timeout, err)
		}
		j.proc.WaitExit(100 * time.Millisecond)
	}
}

// errTraceNotFound is what fetchTrace returns while Jaeger has no span of
// the trace yet.
var errTraceNotFound = errors.New("trace not found")

// jaegerTraceResponse is the part of the query API's answer to GET
// /api/traces/{id} that JaegerSpan needs.
type jaegerTraceResponse struct {
	Data []struct {
		TraceID string `json:"traceID"`
		Spans   []struct {
			TraceID       string `json:"traceID"`
			SpanID        string `json:"spanID"`
			OperationName string `json:"operationName"`
			References    []struct {
				RefType string `json:"refType"`
				TraceID string `json:"traceID"`
				SpanID  string `json:"spanID"`
			} `json:"references"`
			StartTime int64             `json:"startTime"` // µs since the epoch
			Duration  int64             `json:"duration"`  // µs
			Tags      []jaegerKeyValue  `json:"tags"`
			Logs      []jaegerLogRecord `json:"logs"`
			ProcessID string            `json:"processID"`
			Warnings  []string          `json:"warnings"`
		} `json:"spans"`
		Processes map[string]struct {
			ServiceName string           `json:"serviceName"`
			Tags        []jaegerKeyValue `json:"tags"`
		} `json:"processes"`
	} `json:"data"`
	Errors []struct {
		Code int    `json:"code"`
		Msg  string `json:"msg"`
	} `json:"errors"`
}

type jaegerLogRecord struct {
	Timestamp int64            `json:"timestamp"` // µs since the epoch
	Fields    []jaegerKeyValue `json:"fields"`
}

type jaegerKeyValue struct {
	Key   string          `json:"key"`
	Type  string          `json:"type"`
	Value json.RawMessage `json:"value"`
}

// fetchTrace asks the query API for a trace once.
func (j *Jaeger) fetchTrace(traceID string) ([]JaegerSpan, error) {
	resp, err := j.client.Get(j.QueryURL + "/api/traces/" + traceID)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, errTraceNotFound
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/traces/%s: %s: %s", traceID, resp.Status, bytes.TrimSpace(body))
	}
	return parseJaegerTrace(body)
}

// parseJaegerTrace converts the query API's JSON for a trace.
func parseJaegerTrace(body []byte) ([]JaegerSpan, error) {
	var r jaegerTraceResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("decoding %.200q: %w", body, err)
	}
	if len(r.Errors) > 0 {
		return nil, fmt.Errorf("jaeger: %s", r.Errors[0].Msg)
	}
	var spans []JaegerSpan
	for _, tr := range r.Data {
		for _, s := range tr.Spans {
			span := JaegerSpan{
				TraceID:       s.TraceID,
				SpanID:        s.SpanID,
				OperationName: s.OperationName,
				StartTime:     time.UnixMicro(s.StartTime),
				Duration:      time.Duration(s.Duration) * time.Microsecond,
				Warnings:      s.Warnings,
			}
			for _, ref := range s.References {
				if ref.RefType == "CHILD_OF" && ref.TraceID == s.TraceID {
					span.ParentSpanID = ref.SpanID
					break
				}
			}
			var err error
			if span.Tags, err = jaegerTags(s.Tags); err != nil {
				return nil, fmt.Errorf("span %s: %w", s.SpanID, err)
			}
			for _, l := range s.Logs {
				fields, err := jaegerTags(l.Fields)
				if err != nil {
					return nil, fmt.Errorf("span %s: log: %w", s.SpanID, err)
				}
				name, _ := fields["event"].(string)
				delete(fields, "event")
				span.Logs = append(span.Logs, JaegerLog{Timestamp: time.UnixMicro(l.Timestamp), Name: name, Fields: fields})
			}
			if p, ok := tr.Processes[s.ProcessID]; ok {
				span.ServiceName = p.ServiceName
				if span.ProcessTags, err = jaegerTags(p.Tags); err != nil {
					return nil, fmt.Errorf("span %s: process: %w", s.SpanID, err)
				}
			}
			spans = append(spans, span)
		}
	}
	if len(spans) == 0 {
		return nil, errTraceNotFound
	}
	sort.SliceStable(spans, func(a, b int) bool {
		if !spans[a].StartTime.Equal(spans[b].StartTime) {
			return spans[a].StartTime.Before(spans[b].StartTime)
		}
		return spans[a].SpanID < spans[b].SpanID
	})
	return spans, nil
}

// jaegerTags converts Jaeger's typed key-values to Go values: string, bool,
// int64 (which Jaeger sends as a string beyond 2^53), float64 and []byte.
func jaegerTags(kvs []jaegerKeyValue) (map[string]any, error) {
	tags := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		var v any
		var err error
		switch kv.Type {
		case "bool":
			var b bool
			err = json.Unmarshal(kv.Value, &b)
			v = b
		case "int64":
			var n json.Number
			if err = json.Unmarshal(kv.Value, &n); err == nil {
				v, err = strconv.ParseInt(n.String(), 10, 64)
			}
		case "float64":
			var f float64
			err = json.Unmarshal(kv.Value, &f)
			v = f
		case "binary":
			var s string
			if err = json.Unmarshal(kv.Value, &s); err == nil {
				v, err = base64.StdEncoding.DecodeString(s)
			}
		default: // "string", or a type this code does not know.
			var s string
			if err = json.Unmarshal(kv.Value, &s); err != nil {
				s, err = string(kv.Value), nil
			}
			v = s
		}
		if err != nil {
			return nil, fmt.Errorf("tag %q of type %q: %w", kv.Key, kv.Type, err)
		}
		tags[kv.Key] = v
	}
	return tags, nil
}
