package web

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/metricstest"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

var (
	fpmSock  = fcgi.Addr{Network: "unix", Address: "/run/php/php8.2-fpm.sock"}
	deadPort = fcgi.Addr{Network: "tcp", Address: "127.0.0.1:1"}
)

// okTrace is a request php-fpm answered in about 20 ms.
// observe records t with its diagnosis, as the Explainer hands it over.
func observe(r *Recorder, t *outcome.Trace) {
	r.Record(t, plainClassifier.Diagnose(t))
}

// plainClassifier is long-lived, as fcgiscope's own is, so that observe
// allocates only what recording does.
var plainClassifier = &diagnostics.Classifier{}

func okTrace(i int) *outcome.Trace {
	end := time.Now()
	start := end.Add(-20 * time.Millisecond)
	return &outcome.Trace{
		RequestID:  fmt.Sprintf("ok-%d", i),
		ConnID:     uint64(i),
		Method:     "GET",
		URI:        "/hello.php?api_key=s3cret",
		Script:     "/srv/www/hello.php",
		RemoteAddr: "203.0.113.9",
		Host:       "shop.example",
		Upstream:   fpmSock,
		Accepted:   start,
		ParamsDone: start.Add(100 * time.Microsecond),
		DialStart:  start.Add(200 * time.Microsecond),
		DialEnd:    start.Add(300 * time.Microsecond),
		StdinDone:  start.Add(400 * time.Microsecond),
		FirstByte:  start.Add(19 * time.Millisecond),
		End:        end,
		Status:     200,
		BytesIn:    10,
		BytesOut:   1000,
	}
}

// diedTrace is a request whose worker closed the connection mid-request,
// with something on stderr.
func diedTrace(i int) *outcome.Trace {
	t := okTrace(i)
	t.RequestID = fmt.Sprintf("died-%d", i)
	t.URI = "/crash.php?sig=9&password=hunter2"
	t.Script = "/srv/www/crash.php"
	t.FirstByte = time.Time{}
	t.Status = 0
	t.BytesOut = 700
	t.Replaced = true
	t.Stderr = []byte("PHP Warning:  something odd in /srv/www/crash.php on line 3")
	t.StderrBytes = int64(len(t.Stderr))
	t.Err = fmt.Errorf("fcgi: %w: %w", outcome.ErrNoEndRequest, io.EOF)
	return t
}

// refusedTrace is a request to a TCP port nobody listens on.
func refusedTrace(i int) *outcome.Trace {
	end := time.Now()
	start := end.Add(-time.Millisecond)
	return &outcome.Trace{
		RequestID:  fmt.Sprintf("refused-%d", i),
		Method:     "POST",
		URI:        "/api.php",
		Script:     "/srv/www/api.php",
		Upstream:   deadPort,
		Accepted:   start,
		ParamsDone: start,
		DialStart:  start,
		End:        end,
		BytesOut:   500,
		Replaced:   true,
		Err: &outcome.DialError{Addr: deadPort, Err: &net.OpError{
			Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED),
		}},
	}
}

// notFoundTrace is php-fpm's own 404 for a missing script.
func notFoundTrace(i int) *outcome.Trace {
	t := okTrace(i)
	t.RequestID = fmt.Sprintf("nf-%d", i)
	t.URI = "/missing.php"
	t.Script = "/srv/www/missing.php"
	t.Status = 404
	t.Stderr = []byte("Primary script unknown")
	t.StderrBytes = int64(len(t.Stderr))
	return t
}

// get serves one request and returns the response.
func get(t *testing.T, h http.Handler, target string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest("GET", target, nil)
	req.RemoteAddr = "127.0.0.1:40000"
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "RemoteAddr" {
			req.RemoteAddr = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr.Result()
}

// getJSON serves one request, checks its status and decodes its body.
func getJSON(t *testing.T, h http.Handler, target string, code int, v any, hdr ...string) string {
	t.Helper()
	resp := get(t, h, target, hdr...)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != code {
		t.Fatalf("GET %s: status %d, want %d; body:\n%s", target, resp.StatusCode, code, body)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			t.Fatalf("GET %s: %v\n%s", target, err, body)
		}
	}
	return string(body)
}

// scrape gets /metrics from h and parses it.
func scrape(t *testing.T, h http.Handler, hdr ...string) map[string]*dto.MetricFamily {
	t.Helper()
	resp := get(t, h, "/metrics", hdr...)
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	return metricstest.Parse(t, resp.Body)
}

func counter(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := metricstest.Find(mfs, name, labels...)
	if m == nil {
		t.Errorf("no metric %s%v", name, labels)
		return -1
	}
	return m.GetCounter().GetValue()
}

func gauge(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	m := metricstest.Find(mfs, name, labels...)
	if m == nil {
		t.Errorf("no metric %s%v", name, labels)
		return -1
	}
	return m.GetGauge().GetValue()
}

func histCount(t *testing.T, mfs map[string]*dto.MetricFamily, name string) uint64 {
	t.Helper()
	m := metricstest.Find(mfs, name)
	if m == nil {
		t.Errorf("no histogram %s", name)
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}

// readEvent reads one Server-Sent Event of the given type, skipping others
// and comments.
func readEvent(t *testing.T, r interface{ ReadString(byte) (string, error) }, typ string) (id, data string) {
	t.Helper()
	var event string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if event == typ && data != "" {
				return id, data
			}
			event, id, data = "", "", ""
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}
