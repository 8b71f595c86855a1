package httpgateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// fakeRequest is what a fake upstream received.
type fakeRequest struct {
	params map[string]string
	order  []string
	stdin  []byte
}

// startFake runs a FastCGI application on a unix socket that reads each
// request whole and hands it to respond, which writes the response with w
// (flushed after respond returns) or does something worse with conn.
func startFake(t *testing.T, respond func(conn net.Conn, w *fcgi.Writer, req fakeRequest)) fcgi.Addr {
	t.Helper()
	dir, err := os.MkdirTemp("", "gw")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "fake.sock")}
	ln, err := net.Listen("unix", addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				req, ok := readFakeRequest(conn)
				if !ok {
					return
				}
				w := fcgi.NewWriter(conn)
				respond(conn, w, req)
				w.Flush()
			}()
		}
	}()
	return addr
}

func readFakeRequest(conn net.Conn) (fakeRequest, bool) {
	req := fakeRequest{params: map[string]string{}}
	r := fcgi.NewReader(conn)
	var params fcgi.ParamsBuffer
	for {
		h, err := r.Next()
		if err != nil {
			return req, false
		}
		switch h.Type {
		case fcgi.TypeParams:
			if len(r.Content()) == 0 {
				params.ForEach(func(name, value []byte) bool {
					req.params[string(name)] = string(value)
					req.order = append(req.order, string(name))
					return true
				})
				continue
			}
			params.Append(r.Content())
		case fcgi.TypeStdin:
			if len(r.Content()) == 0 {
				return req, true
			}
			req.stdin = append(req.stdin, r.Content()...)
		}
	}
}

// writeStdout sends s as STDOUT records of at most size bytes each.
func writeStdout(w *fcgi.Writer, s string, size int) {
	for len(s) > 0 {
		n := min(size, len(s))
		w.WriteRecord(fcgi.TypeStdout, 1, []byte(s[:n]))
		s = s[n:]
	}
}

func endRequest(w *fcgi.Writer, status fcgi.ProtocolStatus) {
	w.EndStream(fcgi.TypeStdout, 1)
	w.WriteEndRequest(1, fcgi.EndRequest{ProtocolStatus: status})
}

// traces collects what the Observer gets.
type traces struct {
	mu sync.Mutex
	ts []*outcome.Trace
}

func (o *traces) Observe(t *outcome.Trace) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ts = append(o.ts, t)
}

func (o *traces) wait(t *testing.T, n int) []*outcome.Trace {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o.mu.Lock()
		ts := append([]*outcome.Trace(nil), o.ts...)
		o.mu.Unlock()
		if len(ts) >= n || time.Now().After(deadline) {
			if len(ts) < n {
				t.Fatalf("%d traces, want %d", len(ts), n)
			}
			return ts
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// docRoot makes a document root with the files given.
func docRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// serve starts g on a loopback port.
func serve(t *testing.T, g *Gateway) string {
	t.Helper()
	if err := g.Init(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(g)
	srv.Config.ConnContext = g.ConnContext
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func fetch(t *testing.T, method, u string, body io.Reader, header ...string) (*http.Response, string, error) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

func TestRoute(t *testing.T) {
	root := docRoot(t, map[string]string{
		"index.php":         "",
		"app.php":           "",
		"style.css":         "",
		"docs/index.html":   "",
		"empty/.keep":       "",
		"sub/index.php":     "",
		".env":              "",
		".well-known/x.txt": "",
		"v1.php.bak":        "",
	})
	g := &Gateway{Root: root, Upstream: fcgi.Addr{Network: "unix", Address: "/nonexistent"}, TryFiles: true, Index: []string{"index.php", "index.html"}}
	if err := g.Init(); err != nil {
		t.Fatal(err)
	}
	j := func(p string) string { return filepath.Join(root, filepath.FromSlash(p)) }
	tests := []struct {
		path string
		want route
	}{
		{"/", route{kind: routePHP, file: j("index.php"), scriptName: "/index.php"}},
		{"/app.php", route{kind: routePHP, file: j("app.php"), scriptName: "/app.php"}},
		{"/app.php/users/7", route{kind: routePHP, file: j("app.php"), scriptName: "/app.php", pathInfo: "/users/7"}},
		{"/missing.php", route{kind: routePHP, file: j("missing.php"), scriptName: "/missing.php"}},
		{"/missing.php/x", route{kind: routePHP, file: j("index.php"), scriptName: "/index.php"}},
		{"/style.css", route{kind: routeStatic, file: j("style.css")}},
		{"/v1.php.bak", route{kind: routeStatic, file: j("v1.php.bak")}},
		{"/docs", route{kind: routeRedirect, location: "/docs/"}},
		{"/docs/", route{kind: routeStatic, file: j("docs/index.html")}},
		{"/sub/", route{kind: routePHP, file: j("sub/index.php"), scriptName: "/sub/index.php"}},
		{"/empty/", route{kind: routeNoIndex}},
		{"/.env", route{kind: routeHidden}},
		{"/x/.git/config", route{kind: routeHidden}},
		{"/.well-known/x.txt", route{kind: routeStatic, file: j(".well-known/x.txt")}},
		{"/../../etc/passwd", route{kind: routePHP, file: j("index.php"), scriptName: "/index.php"}},
		{"/blog/2024/post", route{kind: routePHP, file: j("index.php"), scriptName: "/index.php"}},
		{"/a\x00b", route{kind: routeBad}},
	}
	for _, tt := range tests {
		if got := g.route(tt.path); got != tt.want {
			t.Errorf("route(%q) = %+v, want %+v", tt.path, got, tt.want)
		}
	}
	g2 := &Gateway{Root: root, Upstream: g.Upstream}
	if got := g2.route("/blog/2024/post"); got.kind != routeNotFound {
		t.Errorf("without TryFiles: %+v, want not found", got)
	}
}

func TestParamsGuardGofastDefects(t *testing.T) {
	got := make(chan fakeRequest, 1)
	addr := startFake(t, func(_ net.Conn, w *fcgi.Writer, req fakeRequest) {
		got <- req
		writeStdout(w, "Content-Type: text/plain\r\n\r\nok", 4096)
		endRequest(w, fcgi.StatusRequestComplete)
	})
	root := docRoot(t, map[string]string{"index.php": "", "app.php": ""})
	u := serve(t, &Gateway{Root: root, Upstream: addr, TryFiles: true})

	resp, body, err := fetch(t, "GET", u+"/some/route?a=1&b=%20", nil,
		"Proxy", "http://attacker.invalid", "X-Forwarded-For", "10.0.0.1", "X_Forwarded_For", "6.6.6.6", "X_Custom", "x", "Cookie", "a=1", "Cookie", "b=2")
	if err != nil || resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("%v %d %q", err, resp.StatusCode, body)
	}
	req := <-got
	p := req.params
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(u, "http://"))
	want := map[string]string{
		"REQUEST_SCHEME":       "http",
		"SERVER_ADDR":          host,
		"SERVER_PORT":          port,
		"REQUEST_METHOD":       "GET",
		"REQUEST_URI":          "/some/route?a=1&b=%20",
		"QUERY_STRING":         "a=1&b=%20",
		"SCRIPT_FILENAME":      filepath.Join(root, "index.php"),
		"SCRIPT_NAME":          "/index.php",
		"DOCUMENT_ROOT":        root,
		"DOCUMENT_URI":         "/index.php",
		"HTTP_X_FORWARDED_FOR": "10.0.0.1",
		"HTTP_COOKIE":          "a=1; b=2",
		"GATEWAY_INTERFACE":    "CGI/1.1",
		"REDIRECT_STATUS":      "200",
		"SERVER_SOFTWARE":      "fcgiscope",
		"REQUEST_ID":           resp.Header.Get("X-Fcgiscope-Request-Id"),
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("%s=%q, want %q", k, p[k], v)
		}
	}
	for _, k := range []string{"HTTP_PROXY", "HTTP_X_CUSTOM", "CONTENT_LENGTH", "PATH_INFO"} {
		if v, ok := p[k]; ok {
			t.Errorf("%s=%q sent; it must not be", k, v)
		}
	}
	if !sortedStrings(req.order) {
		t.Errorf("params not in a stable order: %v", req.order)
	}

	resp, _, _ = fetch(t, "POST", u+"/app.php/x/y", strings.NewReader("hello"), "Content-Type", "text/plain")
	req = <-got
	if req.params["CONTENT_LENGTH"] != "5" || req.params["CONTENT_TYPE"] != "text/plain" || string(req.stdin) != "hello" ||
		req.params["PATH_INFO"] != "/x/y" || req.params["SCRIPT_NAME"] != "/app.php" || req.params["PATH_TRANSLATED"] != filepath.Join(root, "x/y") {
		t.Errorf("POST with PATH_INFO: %v stdin %q", req.params, req.stdin)
	}
	if resp.StatusCode != 200 {
		t.Errorf("status %d", resp.StatusCode)
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] > s[i] {
			return false
		}
	}
	return true
}

func TestCGIHeadersOfAnySizeSplitAnywhere(t *testing.T) {
	long := strings.Repeat("y", 5000)
	head := "Status: 404 Not Found\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2; Path=/\r\nX-Long: " + long + "\r\nContent-Type: text/plain\r\nX-Accel-Buffering: yes\r\nBad(Header): x\r\nConnection: close\r\n\r\n"
	for _, size := range []int{1, 2, 3, 7, 1000, 65535} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			addr := startFake(t, func(_ net.Conn, w *fcgi.Writer, _ fakeRequest) {
				writeStdout(w, head+"not here\n", size)
				endRequest(w, fcgi.StatusRequestComplete)
			})
			root := docRoot(t, map[string]string{"x.php": ""})
			u := serve(t, &Gateway{Root: root, Upstream: addr, HoldBytes: 4})
			resp, body, err := fetch(t, "GET", u+"/x.php", nil)
			if err != nil || resp.StatusCode != 404 || body != "not here\n" {
				t.Fatalf("%v %d %q", err, resp.StatusCode, body)
			}
			if c := resp.Header.Values("Set-Cookie"); len(c) != 2 || c[0] != "a=1" || c[1] != "b=2; Path=/" {
				t.Errorf("Set-Cookie %q", c)
			}
			if resp.Header.Get("X-Long") != long {
				t.Errorf("X-Long has %d bytes, want %d", len(resp.Header.Get("X-Long")), len(long))
			}
			for _, h := range []string{"Status", "Bad(Header)", "X-Accel-Buffering"} {
				if v := resp.Header.Get(h); v != "" {
					t.Errorf("%s: %q reached the client", h, v)
				}
			}
		})
	}
}

func TestBodylessStatusesAndHEAD(t *testing.T) {
	addr := startFake(t, func(_ net.Conn, w *fcgi.Writer, req fakeRequest) {
		status := map[string]string{"/204.php": "204 No Content", "/304.php": "304 Not Modified", "/head.php": "200 OK"}[req.params["SCRIPT_NAME"]]
		writeStdout(w, "Status: "+status+"\r\nContent-Type: text/plain\r\n\r\nstray output\n", 4096)
		endRequest(w, fcgi.StatusRequestComplete)
	})
	root := docRoot(t, map[string]string{"204.php": "", "304.php": "", "head.php": ""})
	obs, u := diagnosed(t, &Gateway{Root: root, Upstream: addr})
	for i, tt := range []struct {
		method, page string
		status       int
	}{{"GET", "/204.php", 204}, {"GET", "/304.php", 304}, {"HEAD", "/head.php", 200}} {
		resp, body, err := fetch(t, tt.method, u+tt.page, nil)
		if err != nil || resp.StatusCode != tt.status || body != "" {
			t.Errorf("%s %s: %v %d %q", tt.method, tt.page, err, resp.StatusCode, body)
		}
		if tr := obs.wait(t, i+1)[i]; tr.Err != nil {
			t.Errorf("%s %s: trace error %v", tt.method, tt.page, tr.Err)
		}
	}
}

// responder is the Responder and Observer fcgiscope wires in.
func diagnosed(t *testing.T, g *Gateway) (*traces, string) {
	obs := &traces{}
	g.Responder = &diagnostics.Explainer{Detail: diagnostics.DetailFull}
	g.Observer = obs
	return obs, serve(t, g)
}

func TestFailuresAreExplained(t *testing.T) {
	root := docRoot(t, map[string]string{"x.php": ""})
	httpServer := func() fcgi.Addr {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
				c.Close()
			}
		}()
		return fcgi.Addr{Network: "tcp", Address: ln.Addr().String()}
	}
	closedPort := func() fcgi.Addr {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close()
		return fcgi.Addr{Network: "tcp", Address: a}
	}
	fake := func(respond func(net.Conn, *fcgi.Writer, fakeRequest)) fcgi.Addr { return startFake(t, respond) }
	tests := []struct {
		name     string
		upstream fcgi.Addr
		hold     int
		maxHead  int
		status   int
		cause    string
		errIs    error
	}{
		{"refused", closedPort(), 0, 0, 502, "upstream_refused", nil},
		{"socket missing", fcgi.Addr{Network: "unix", Address: filepath.Join(t.TempDir(), "php.sock")}, 0, 0, 502, "upstream_socket_missing", nil},
		{"not fastcgi", httpServer(), 0, 0, 502, "upstream_not_fastcgi", nil},
		{"overloaded", fake(func(_ net.Conn, w *fcgi.Writer, _ fakeRequest) {
			w.WriteEndRequest(1, fcgi.EndRequest{ProtocolStatus: fcgi.StatusOverloaded})
		}), 0, 0, 503, "upstream_overloaded", nil},
		{"no stdout", fake(func(_ net.Conn, w *fcgi.Writer, _ fakeRequest) {
			endRequest(w, fcgi.StatusRequestComplete)
		}), 0, 0, 502, "upstream_protocol_error", nil},
		{"headers never end", fake(func(_ net.Conn, w *fcgi.Writer, _ fakeRequest) {
			writeStdout(w, "X-A: 1\r\nX-B: 2", 100)
			endRequest(w, fcgi.StatusRequestComplete)
		}), 0, 0, 502, "upstream_protocol_error", nil},
		{"headers too long", fake(func(_ net.Conn, w *fcgi.Writer, _ fakeRequest) {
			writeStdout(w, "X-A: "+strings.Repeat("a", 3000)+"\r\n\r\n", 100)
			endRequest(w, fcgi.StatusRequestComplete)
		}), 0, 1024, 502, "upstream_protocol_error", nil},
		{"worker died while held back", fake(func(c net.Conn, w *fcgi.Writer, _ fakeRequest) {
			writeStdout(w, "Content-Type: text/html\r\n\r\n<p>partial", 4096)
			w.Flush()
		}), 4096, 0, 502, "worker_died", outcome.ErrNoEndRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &Gateway{Root: root, Upstream: tt.upstream, HoldBytes: tt.hold, MaxHeaderBytes: tt.maxHead, ServerTiming: true}
			obs, u := diagnosed(t, g)
			resp, body, err := fetch(t, "GET", u+"/x.php", nil, "Accept", "application/problem+json")
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			if resp.StatusCode != tt.status || resp.Header.Get("X-Fcgiscope-Cause") != tt.cause {
				t.Fatalf("got %d %q, want %d %s:\n%s", resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"), tt.status, tt.cause, body)
			}
			var p map[string]any
			if err := json.Unmarshal([]byte(body), &p); err != nil || p["cause"] != tt.cause {
				t.Errorf("problem+json %v: %s", err, body)
			}
			tr := obs.wait(t, 1)[0]
			if !tr.Replaced || tr.Truncated || tr.Status != tt.status || tr.Err == nil {
				t.Errorf("trace: replaced %v truncated %v status %d err %v", tr.Replaced, tr.Truncated, tr.Status, tr.Err)
			}
			if tt.errIs != nil && !errors.Is(tr.Err, tt.errIs) {
				t.Errorf("trace error %v, want one wrapping %v", tr.Err, tt.errIs)
			}
			var de *outcome.DialError
			if strings.HasPrefix(tt.cause, "upstream_refused") || strings.HasPrefix(tt.cause, "upstream_socket") {
				if !errors.As(tr.Err, &de) || de.Addr != tt.upstream {
					t.Errorf("trace error %#v, want a DialError for %s", tr.Err, tt.upstream)
				}
			}
		})
	}
}

func TestDeathAfterTheStartWasSentCutsTheTransfer(t *testing.T) {
	addr := startFake(t, func(c net.Conn, w *fcgi.Writer, _ fakeRequest) {
		writeStdout(w, "Content-Type: text/plain\r\n\r\n"+strings.Repeat("x", 3000), 1000)
		w.Flush()
		time.Sleep(50 * time.Millisecond)
	})
	root := docRoot(t, map[string]string{"x.php": ""})
	for _, hold := range []int{0, 1024} {
		obs, u := diagnosed(t, &Gateway{Root: root, Upstream: addr, HoldBytes: hold})
		resp, body, err := fetch(t, "GET", u+"/x.php", nil)
		if err == nil {
			t.Errorf("hold %d: the client read a whole response %d (%d bytes) from a worker that died", hold, resp.StatusCode, len(body))
		}
		tr := obs.wait(t, 1)[0]
		if !tr.Truncated || tr.Replaced || !errors.Is(tr.Err, outcome.ErrNoEndRequest) {
			t.Errorf("hold %d: truncated %v replaced %v err %v", hold, tr.Truncated, tr.Replaced, tr.Err)
		}
	}
}

func TestStreamingResponsesAreNotHeldBack(t *testing.T) {
	release := make(chan struct{})
	addr := startFake(t, func(_ net.Conn, w *fcgi.Writer, _ fakeRequest) {
		writeStdout(w, "Content-Type: text/event-stream\r\n\r\ndata: 1\n\n", 4096)
		w.Flush()
		<-release
		writeStdout(w, "data: 2\n\n", 4096)
		endRequest(w, fcgi.StatusRequestComplete)
	})
	root := docRoot(t, map[string]string{"events.php": ""})
	u := serve(t, &Gateway{Root: root, Upstream: addr, HoldBytes: 1 << 20})
	resp, err := http.Get(u + "/events.php")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(resp.Body, buf, len("data: 1\n\n"))
	if err != nil || string(buf[:n]) != "data: 1\n\n" {
		t.Fatalf("first event: %q %v", buf[:n], err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "data: 2\n\n" {
		t.Errorf("rest %q %v", rest, err)
	}
}

func TestClientDisconnectClosesTheUpstreamConnection(t *testing.T) {
	closed := make(chan time.Duration, 1)
	addr := startFake(t, func(c net.Conn, w *fcgi.Writer, _ fakeRequest) {
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [1]byte
		_, err := c.Read(b[:])
		if errors.Is(err, io.EOF) {
			closed <- time.Since(start)
		}
	})
	root := docRoot(t, map[string]string{"slow.php": ""})
	obs, u := diagnosed(t, &Gateway{Root: root, Upstream: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", u+"/slow.php", nil)
	if _, err := http.DefaultClient.Do(req); err == nil {
		t.Fatal("the request completed")
	}
	select {
	case d := <-closed:
		if d > 2*time.Second {
			t.Errorf("the upstream connection closed only after %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection stayed open after the client left")
	}
	tr := obs.wait(t, 1)[0]
	if !errors.Is(tr.Err, outcome.ErrClientAborted) || tr.Replaced {
		t.Errorf("trace err %v replaced %v, want client aborted", tr.Err, tr.Replaced)
	}
	if d := (&diagnostics.Classifier{}).Diagnose(tr); d == nil || d.Cause.ID != "client_aborted" {
		t.Errorf("diagnosis %+v", d)
	}
}

// An upload the client abandons half way must not leave php-fpm waiting
// for the rest.
func TestAbandonedUploadIsClientAborted(t *testing.T) {
	// A raw listener: it reads whatever comes until the gateway closes.
	closed := make(chan bool, 1)
	dir := t.TempDir()
	sock := filepath.Join(dir, "php.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, c)
		closed <- err == nil
	}()
	root := docRoot(t, map[string]string{"upload.php": ""})
	obs, u := diagnosed(t, &Gateway{Root: root, Upstream: fcgi.Addr{Network: "unix", Address: sock}})
	c, err := net.Dial("tcp", strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /upload.php HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n%s", strings.Repeat("a", 1000))
	time.Sleep(100 * time.Millisecond)
	c.Close()
	select {
	case ok := <-closed:
		if !ok {
			t.Error("the php-fpm connection was not closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("php-fpm was left waiting for the rest of the body")
	}
	tr := obs.wait(t, 1)[0]
	if !errors.Is(tr.Err, outcome.ErrClientAborted) || tr.BytesIn != 1000 {
		t.Errorf("trace err %v bytes_in %d", tr.Err, tr.BytesIn)
	}
}

func TestStaticFiles(t *testing.T) {
	root := docRoot(t, map[string]string{"a.txt": "hello static\n", "img/logo.svg": "<svg/>"})
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("secret"), 0o644)
	u := serve(t, &Gateway{Root: root, Upstream: fcgi.Addr{Network: "unix", Address: "/nonexistent.sock"}})
	resp, body, _ := fetch(t, "GET", u+"/a.txt", nil)
	if resp.StatusCode != 200 || body != "hello static\n" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("%d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	resp, body, _ = fetch(t, "GET", u+"/a.txt", nil, "Range", "bytes=0-4")
	if resp.StatusCode != 206 || body != "hello" {
		t.Errorf("range: %d %q", resp.StatusCode, body)
	}
	resp, _, _ = fetch(t, "GET", u+"/img/", nil)
	if resp.StatusCode != 403 {
		t.Errorf("directory listing: %d, want 403", resp.StatusCode)
	}
	resp, _, _ = fetch(t, "GET", u+"/nope.txt", nil)
	if resp.StatusCode != 404 {
		t.Errorf("missing file: %d", resp.StatusCode)
	}
	for _, p := range []string{"/../" + filepath.Base(outside) + "/secret.txt", "/%2e%2e/" + filepath.Base(outside) + "/secret.txt"} {
		c, err := net.Dial("tcp", strings.TrimPrefix(u, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", p)
		b, _ := io.ReadAll(c)
		c.Close()
		if bytes.Contains(b, []byte("secret")) {
			t.Errorf("%s escaped the root:\n%s", p, b)
		}
	}
}

func TestInitRejectsBadSettings(t *testing.T) {
	up := fcgi.Addr{Network: "unix", Address: "/x.sock"}
	for _, g := range []*Gateway{
		{Root: t.TempDir()},
		{Upstream: up},
		{Root: filepath.Join(t.TempDir(), "missing"), Upstream: up},
		{Root: t.TempDir(), Upstream: up, Index: []string{"sub/index.php"}},
	} {
		if err := g.Init(); err == nil {
			t.Errorf("%+v: no error", g)
		}
	}
}
