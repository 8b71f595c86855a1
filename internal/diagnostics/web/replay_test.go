package web

import (
	"io"
	"strings"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// encodeParams is the PARAMS stream of pairs, as nginx sends it.
func encodeParams(pairs ...string) string {
	var b []byte
	for i := 0; i+1 < len(pairs); i += 2 {
		b = fcgi.AppendPair(b, pairs[i], pairs[i+1])
	}
	return string(b)
}

func TestReplayGivesTheParamsWithoutSecrets(t *testing.T) {
	r := &Recorder{}
	good := okTrace(1)
	good.Params = encodeParams("REQUEST_METHOD", "GET", "REQUEST_URI", "/hello.php")
	observe(r, good)
	failed := diedTrace(2)
	failed.Method = "POST"
	failed.RequestType = "application/json"
	failed.ContentLength = int64(len(`{"user":"ann","password":"hunter2"}`))
	failed.Body = []byte(`{"user":"ann","password":"hunter2"}`)
	failed.Params = encodeParams(
		"REQUEST_METHOD", "POST",
		"REQUEST_URI", "/crash.php?sig=9&password=hunter2",
		"QUERY_STRING", "sig=9&password=hunter2",
		"HTTP_COOKIE", "PHPSESSID=abc123",
		"HTTP_AUTHORIZATION", "Bearer xyz789",
		"HTTP_X_API_KEY", "k-456",
		"HTTP_ACCEPT", "text/html",
		"CONTENT_TYPE", "application/json",
	)
	observe(r, failed)
	h := &Handler{Recorder: r}

	var rp Replay
	body := getJSON(t, h, "/api/requests/died-2/replay", 200, &rp)
	for _, secret := range []string{"hunter2", "abc123", "xyz789", "k-456"} {
		if strings.Contains(body, secret) {
			t.Errorf("the replay holds the secret %q:\n%s", secret, body)
		}
	}
	if rp.ID != 2 || rp.RequestID != "died-2" || rp.Method != "POST" || rp.Upstream != fpmSock.String() || rp.Outcome == "ok" {
		t.Errorf("replay of request 2 = %+v", rp)
	}
	got := map[string]string{}
	for _, p := range rp.Params {
		got[p.Name] = p.Value
	}
	if got["REQUEST_URI"] != "/crash.php?sig=9&password=REDACTED" || got["QUERY_STRING"] != "sig=9&password=REDACTED" || got["HTTP_ACCEPT"] != "text/html" {
		t.Errorf("params %v", got)
	}
	if !rp.BodyKept || !rp.BodyRedacted || string(rp.Body) != `{"password":"REDACTED","user":"ann"}` {
		t.Errorf("body kept %v redacted %v: %s", rp.BodyKept, rp.BodyRedacted, rp.Body)
	}
	if strings.Join(rp.Redacted, ",") != "REQUEST_URI,QUERY_STRING,HTTP_COOKIE,HTTP_AUTHORIZATION,HTTP_X_API_KEY" {
		t.Errorf("redacted %v", rp.Redacted)
	}

	// The request view offers the command, by the request id.
	var d RequestDetail
	getJSON(t, h, "/api/requests/2", 200, &d)
	if d.ReplayCommand != "fcgiscope request --replay died-2 --admin example.com" {
		t.Errorf("replay command %q", d.ReplayCommand)
	}

	// A request that went well keeps nothing, and says so.
	body = getJSON(t, h, "/api/requests/1/replay", 404, nil)
	if !strings.Contains(body, "went well") {
		t.Errorf("no reason why request 1 cannot be replayed: %s", body)
	}
	var good1 RequestDetail
	getJSON(t, h, "/api/requests/1", 200, &good1)
	if good1.ReplayCommand != "" {
		t.Errorf("request 1 offers %q", good1.ReplayCommand)
	}

	// A client shown minimal detail gets neither.
	body = getJSON(t, h, "/api/requests/2/replay", 403, nil, "RemoteAddr", "198.51.100.7:4000")
	if strings.Contains(body, "crash.php") {
		t.Errorf("a minimal-detail client is shown the request: %s", body)
	}
	var minimal RequestDetail
	getJSON(t, h, "/api/requests/2", 200, &minimal, "RemoteAddr", "198.51.100.7:4000")
	if minimal.ReplayCommand != "" {
		t.Errorf("a minimal-detail client is offered %q", minimal.ReplayCommand)
	}
}

type testSpan string

func (s testSpan) TraceID() string { return string(s) }

// A traced request's latency carries its trace id as an exemplar, in the
// OpenMetrics exposition Prometheus asks for when it stores exemplars.
func TestLatencyHistogramsLeadToTheTrace(t *testing.T) {
	r := &Recorder{}
	tr := okTrace(1)
	tr.Span = testSpan("4bf92f3577b34da6a3ce929d0e0e4736")
	observe(r, tr)
	resp := get(t, &Handler{Recorder: r}, "/metrics", "Accept", "application/openmetrics-text; version=1.0.0")
	body, _ := io.ReadAll(resp.Body)
	for _, metric := range []string{"fcgiscope_request_duration_seconds_bucket", "fcgiscope_time_to_first_byte_seconds_bucket", "fcgiscope_connect_duration_seconds_bucket"} {
		found := false
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, metric) && strings.Contains(line, `# {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"}`) {
				found = true
			}
		}
		if !found {
			t.Errorf("no exemplar with the trace id on %s", metric)
		}
	}
}
