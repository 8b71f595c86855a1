package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// failStack is nginx -> fcgiscope (the built binary) -> some upstream, for
// provoking failures.
type failStack struct {
	fcgiscope *testbed.Process
	nginx     *testbed.Nginx
	listen    string
}

// startFailStack starts fcgiscope relaying to upstream with the extra
// environment, and nginx in front of it over downNet.
func startFailStack(t *testing.T, downNet, upstream string, env ...string) *failStack {
	t.Helper()
	testbed.RequireNginx(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	if downNet == "unix" {
		listen = "unix:" + filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	}
	s := &failStack{listen: listen}
	s.fcgiscope = testbed.StartFcgiscope(t, append([]string{
		"FCGISCOPE_LISTEN=" + listen,
		"FCGISCOPE_LISTEN_MODE=0666",
		"FCGISCOPE_UPSTREAM=" + upstream,
		"FCGISCOPE_CONNECT_TIMEOUT=1s",
		// Fail at once instead of waiting for the upstream to come back:
		// these tests are about what the failure says.
		"FCGISCOPE_QUEUE_TIMEOUT=0s",
	}, env...)...)
	s.nginx = testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: listen})
	return s
}

// problem is an RFC 9457 body as fcgiscope writes it.
type problem struct {
	Type      string            `json:"type"`
	Title     string            `json:"title"`
	Status    int               `json:"status"`
	Detail    string            `json:"detail"`
	Instance  string            `json:"instance"`
	Cause     string            `json:"cause"`
	RequestID string            `json:"request_id"`
	ElapsedMS float64           `json:"elapsed_ms"`
	Upstream  string            `json:"upstream"`
	Hints     []string          `json:"hints"`
	Evidence  map[string]string `json:"evidence"`
}

// explained is what a user sees of one failed request.
type explained struct {
	status  int
	header  http.Header
	problem problem
	log     map[string]any
}

// getProblem requests path through nginx as an API client would, and checks
// the parts every explained failure has: the status, the cause header, a
// problem+json body naming the same cause, and one error log line.
func (s *failStack) getProblem(t *testing.T, path, cause string, status int) explained {
	t.Helper()
	req, _ := http.NewRequest("GET", s.nginx.URL+path, nil)
	req.Header.Set("Accept", "application/problem+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", path, err)
	}
	e := explained{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d; body:\n%s", resp.StatusCode, status, body)
	}
	if got := resp.Header.Get("X-Fcgiscope-Cause"); got != cause {
		t.Errorf("X-Fcgiscope-Cause = %q, want %q", got, cause)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if err := json.Unmarshal(body, &e.problem); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, body)
	}
	p := e.problem
	id := resp.Header.Get("X-Fcgiscope-Request-Id")
	if p.Cause != cause || p.Status != status || p.Title == "" || p.Detail == "" || p.RequestID != id || id == "" || len(p.Hints) == 0 {
		t.Errorf("problem body incomplete or inconsistent (request id header %q):\n%s", id, body)
	}
	e.log = s.waitLogLine(t, id)
	if e.log["cause"] != cause || e.log["outcome"] != cause || e.log["level"] != "error" {
		t.Errorf("log line: cause %v outcome %v level %v, want %s at error: %v", e.log["cause"], e.log["outcome"], e.log["level"], cause, e.log)
	}
	if _, ok := e.log["detail"]; !ok {
		t.Errorf("log line has no detail: %v", e.log)
	}
	if st, _ := e.log["status"].(float64); int(st) != status {
		t.Errorf("log line status %v, want %d", e.log["status"], status)
	}
	return e
}

// waitLogLine returns fcgiscope's log line for the request id, waiting a
// little since it is written after the response.
func (s *failStack) waitLogLine(t *testing.T, id string) map[string]any {
	t.Helper()
	return waitLog(t, s.fcgiscope, func(m map[string]any) bool { return m["request_id"] == id && m["message"] == "request" })
}

func waitLog(t *testing.T, p *testbed.Process, match func(map[string]any) bool) map[string]any {
	t.Helper()
	return waitLogFor(t, p, 5*time.Second, match)
}

// waitLogFor is waitLog with a deadline of its own, for lines written late.
func waitLogFor(t *testing.T, p *testbed.Process, wait time.Duration, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		sc := bufio.NewScanner(strings.NewReader(p.Output()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && match(m) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching log line in fcgiscope's output:\n%s", p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hintsMention reports whether some hint contains every one of the words.
func hintsMention(hints []string, words ...string) bool {
	for _, h := range hints {
		ok := true
		for _, w := range words {
			if !strings.Contains(h, w) {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}
