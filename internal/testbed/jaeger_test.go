package testbed

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestJaegerUnavailable(t *testing.T) {
	buildErr := errors.New("go build: no network")
	t.Run("CI fails", func(t *testing.T) {
		tb := &fakeTB{}
		jaegerUnavailable(tb, true, buildErr)
		if tb.skip != "" {
			t.Errorf("skipped in CI: %q", tb.skip)
		}
		for _, want := range []string{"Jaeger", jaegerToolDir, "no network", "CI=true"} {
			if !strings.Contains(tb.fatal, want) {
				t.Errorf("failure message %q does not mention %q", tb.fatal, want)
			}
		}
	})
	t.Run("locally skips", func(t *testing.T) {
		tb := &fakeTB{}
		jaegerUnavailable(tb, false, buildErr)
		if tb.fatal != "" {
			t.Errorf("failed outside CI: %q", tb.fatal)
		}
		if !strings.HasPrefix(tb.skip, "SKIPPING integration test: Jaeger") || !strings.Contains(tb.skip, "no network") {
			t.Errorf("skip message = %q", tb.skip)
		}
	})
}

func TestJaegerVersionRE(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	goMod, err := os.ReadFile(filepath.Join(root, jaegerToolDir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := jaegerVersionRE.FindSubmatch(goMod)
	if m == nil || !strings.HasPrefix(string(m[1]), "v1.") {
		t.Fatalf("no Jaeger version found in %s/go.mod: %q", jaegerToolDir, m)
	}
}

func TestJaegerTags(t *testing.T) {
	tags, err := jaegerTags([]jaegerKeyValue{
		{Key: "s", Type: "string", Value: []byte(`"x"`)},
		{Key: "b", Type: "bool", Value: []byte(`true`)},
		{Key: "i", Type: "int64", Value: []byte(`42`)},
		{Key: "big", Type: "int64", Value: []byte(`"9007199254740993"`)},
		{Key: "f", Type: "float64", Value: []byte(`1.5`)},
		{Key: "bin", Type: "binary", Value: []byte(`"AAE="`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"s": "x", "b": true, "i": int64(42), "big": int64(9007199254740993), "f": 1.5}
	for k, v := range want {
		if tags[k] != v {
			t.Errorf("tag %s = %#v, want %#v", k, tags[k], v)
		}
	}
	if b, ok := tags["bin"].([]byte); !ok || string(b) != "\x00\x01" {
		t.Errorf("tag bin = %#v, want []byte{0, 1}", tags["bin"])
	}
}

// The ids and times of the spans TestJaeger sends.
const (
	jaegerTestTraceID = "5b8efff798038103d269b633813fc60c"
	jaegerTestRootID  = "eee19b7ec3c1b173"
	jaegerTestChildID = "eee19b7ec3c1b174"
)

func TestJaeger(t *testing.T) {
	j := StartJaeger(t)

	start := time.Now().Truncate(time.Microsecond)
	ns := func(d time.Duration) string { return strconv.FormatInt(start.Add(d).UnixNano(), 10) }
	// A minimal OTLP/JSON export: ids are hex, 64-bit integers may be
	// strings, kind 2 is SERVER and 3 CLIENT, status code 2 is ERROR.
	body := fmt.Sprintf(`{"resourceSpans":[{
	"resource":{"attributes":[
		{"key":"service.name","value":{"stringValue":"testbed-jaeger"}},
		{"key":"host.name","value":{"stringValue":"testhost"}}]},
	"scopeSpans":[{"scope":{"name":"testbed","version":"1.0"},"spans":[
		{"traceId":%[1]q,"spanId":%[2]q,"name":"GET /hello.php","kind":2,
		 "startTimeUnixNano":%[4]q,"endTimeUnixNano":%[5]q,
		 "attributes":[{"key":"http.response.status_code","value":{"intValue":"200"}}]},
		{"traceId":%[1]q,"spanId":%[3]q,"parentSpanId":%[2]q,"name":"fastcgi request","kind":3,
		 "startTimeUnixNano":%[6]q,"endTimeUnixNano":%[7]q,
		 "attributes":[
			{"key":"fastcgi.role","value":{"stringValue":"responder"}},
			{"key":"fastcgi.request_id","value":{"intValue":1}},
			{"key":"fastcgi.keep_conn","value":{"boolValue":true}}],
		 "events":[{"timeUnixNano":%[8]q,"name":"first byte","attributes":[
			{"key":"bytes","value":{"intValue":"17"}}]}],
		 "status":{"code":2,"message":"upstream closed"}}
	]}]}]}`,
		jaegerTestTraceID, jaegerTestRootID, jaegerTestChildID,
		ns(0), ns(50*time.Millisecond), ns(10*time.Millisecond), ns(40*time.Millisecond), ns(20*time.Millisecond))

	resp, err := http.Post(j.OTLPEndpoint+"/v1/traces", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST /v1/traces: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/traces: %s", resp.Status)
	}

	spans := j.TraceN(t, jaegerTestTraceID, 2, 10*time.Second)
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want 2: %+v", len(spans), spans)
	}
	root, span := spans[0], spans[1]
	t.Logf("root: %+v", root)
	t.Logf("child: %+v", span)
	if root.SpanID != jaegerTestRootID || root.ParentSpanID != "" || root.OperationName != "GET /hello.php" {
		t.Errorf("root span = %s parent %q %q, want %s, no parent, %q",
			root.SpanID, root.ParentSpanID, root.OperationName, jaegerTestRootID, "GET /hello.php")
	}
	if root.Tags["span.kind"] != "server" || root.Tags["http.response.status_code"] != int64(200) {
		t.Errorf("root tags = %v, want span.kind server and http.response.status_code 200", root.Tags)
	}
	if span.TraceID != jaegerTestTraceID || span.SpanID != jaegerTestChildID || span.ParentSpanID != jaegerTestRootID {
		t.Errorf("child ids = %s/%s parent %s, want %s/%s parent %s", span.TraceID, span.SpanID, span.ParentSpanID,
			jaegerTestTraceID, jaegerTestChildID, jaegerTestRootID)
	}
	if span.OperationName != "fastcgi request" || span.ServiceName != "testbed-jaeger" {
		t.Errorf("child = %q of %q, want %q of %q", span.OperationName, span.ServiceName, "fastcgi request", "testbed-jaeger")
	}
	if span.ProcessTags["host.name"] != "testhost" {
		t.Errorf("process tags = %v, want host.name testhost", span.ProcessTags)
	}
	if !span.StartTime.Equal(start.Add(10*time.Millisecond)) || span.Duration != 30*time.Millisecond {
		t.Errorf("child time = %v + %v, want %v + 30ms", span.StartTime, span.Duration, start.Add(10*time.Millisecond))
	}
	wantTags := map[string]any{
		"fastcgi.role":            "responder",
		"fastcgi.request_id":      int64(1),
		"fastcgi.keep_conn":       true,
		"span.kind":               "client",
		"otel.status_code":        "ERROR",
		"otel.status_description": "upstream closed",
		"otel.scope.name":         "testbed",
	}
	for k, v := range wantTags {
		if span.Tags[k] != v {
			t.Errorf("child tag %s = %#v, want %#v (tags %v)", k, span.Tags[k], v, span.Tags)
		}
	}
	if len(span.Logs) != 1 || span.Logs[0].Name != "first byte" || span.Logs[0].Fields["bytes"] != int64(17) ||
		!span.Logs[0].Timestamp.Equal(start.Add(20*time.Millisecond)) {
		t.Errorf("child logs = %+v, want one \"first byte\" with bytes=17 at %v", span.Logs, start.Add(20*time.Millisecond))
	}

	// Everything Jaeger listens on must be one of the four configured
	// loopback ports: no default port, nothing on 0.0.0.0 or ::.
	want := []int{}
	for _, addr := range []string{j.OTLPEndpoint, j.OTLPGRPCEndpoint, j.QueryURL, j.QueryGRPCAddr} {
		_, port, err := net.SplitHostPort(strings.TrimPrefix(addr, "http://"))
		if err != nil {
			t.Fatalf("no port in %q: %v", addr, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			t.Fatalf("no port in %q: %v", addr, err)
		}
		want = append(want, p)
	}
	slices.Sort(want)
	listeners := listeningSockets(t, j.Pid)
	var got []int
	for _, l := range listeners {
		if !l.loopback {
			t.Errorf("jaeger listens on %s/%s, not on loopback", l.proto, l.addr)
		}
		got = append(got, l.port)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("jaeger listens on ports %v (%+v), want exactly %v", got, listeners, want)
	}
	for _, def := range []int{16686, 16685, 4317, 4318, 8888, 13133, 5778, 5779, 14250, 14268, 6831, 6832, 9411, 1777, 55679, 27777, 27778} {
		if slices.Contains(got, def) && !slices.Contains(want, def) {
			t.Errorf("jaeger listens on its default port %d", def)
		}
	}
}

// socketInfo is a listening (TCP) or bound, unconnected (UDP) socket.
type socketInfo struct {
	proto    string
	addr     string // as in /proc/net/*: hex address:hex port
	port     int
	loopback bool
}

// listeningSockets returns the TCP sockets in LISTEN state and unconnected
// UDP sockets that process pid has open, from /proc/pid/fd and the
// /proc/pid/net tables of its network namespace.
func listeningSockets(t *testing.T, pid int) []socketInfo {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(fdDir)
	if err != nil {
		t.Fatalf("listing %s: %v", fdDir, err)
	}
	inodes := map[string]bool{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue // Closed meanwhile.
		}
		if ino, ok := strings.CutPrefix(target, "socket:["); ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var socks []socketInfo
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		name := fmt.Sprintf("/proc/%d/net/%s", pid, proto)
		f, err := os.Open(name)
		if err != nil {
			if proto == "tcp6" || proto == "udp6" {
				continue // No IPv6 in this kernel.
			}
			t.Fatalf("reading %s: %v", name, err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // The header.
		for sc.Scan() {
			// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			local, remote, state := fields[1], fields[2], fields[3]
			if strings.HasPrefix(proto, "tcp") && state != "0A" { // TCP_LISTEN
				continue
			}
			if strings.HasPrefix(proto, "udp") && strings.Trim(remote, "0:") != "" { // Connected.
				continue
			}
			hexAddr, hexPort, _ := strings.Cut(local, ":")
			port, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				t.Fatalf("%s: bad address %q", name, local)
			}
			socks = append(socks, socketInfo{proto: proto, addr: local, port: int(port), loopback: isLoopbackHex(hexAddr)})
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("reading %s: %v", name, err)
		}
	}
	return socks
}

// isLoopbackHex reports whether an address of /proc/net/tcp{,6} (the bytes
// of the address in hex, in 32-bit words of host byte order, i.e. little
// endian on the machines this runs on) is 127.0.0.0/8, ::1 or an IPv4
// mapped 127.0.0.0/8.
func isLoopbackHex(h string) bool {
	switch len(h) {
	case 8:
		return strings.HasSuffix(h, "7F") // 127.x.x.x, little endian.
	case 32:
		return h == "00000000000000000000000001000000" || // ::1
			(strings.HasPrefix(h, "0000000000000000FFFF0000") && strings.HasSuffix(h, "7F"))
	}
	return false
}
