package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/procfs"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// varsPHP prints the CGI variables the gateway sets, as KEY=value lines.
const varsPHP = `<?php
header('Content-Type: text/plain');
foreach (['REQUEST_METHOD', 'REQUEST_URI', 'SCRIPT_NAME', 'SCRIPT_FILENAME', 'QUERY_STRING', 'PATH_INFO',
          'DOCUMENT_ROOT', 'DOCUMENT_URI', 'REQUEST_SCHEME', 'SERVER_ADDR', 'SERVER_PORT', 'SERVER_NAME',
          'REMOTE_ADDR', 'REQUEST_ID', 'SERVER_SOFTWARE', 'HTTP_HOST', 'HTTP_COOKIE', 'CONTENT_LENGTH'] as $k) {
    echo $k, '=', $_SERVER[$k] ?? '', "\n";
}
`

// bigHeaderPHP sends a 10 KiB cookie, past nginx's default
// fastcgi_buffer_size and gofast's 1 KiB line limit.
const bigHeaderPHP = `<?php
setcookie('big', str_repeat('x', 10240));
setcookie('small', '1');
header('X-Long: ' . str_repeat('y', 3000));
echo "big header ok\n";
`

// gatewayRoot is testbed.PHPRoot plus a front controller, a page that
// prints the server variables, a static file, a hidden file and a
// subdirectory with an index.
func gatewayRoot(t *testing.T) string {
	t.Helper()
	root := testbed.PHPRoot(t)
	files := map[string]string{
		"index.php":     varsPHP,
		"vars.php":      varsPHP,
		"bigheader.php": bigHeaderPHP,
		"style.css":     "body { color: teal }\n",
		".env":          "SECRET=1\n",
		"sub/index.php": varsPHP,
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// lockedBuffer collects the log while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lines returns the JSON log lines; other output is skipped.
func (b *lockedBuffer) lines() []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// waitLine waits for a log line for which match is true.
func (b *lockedBuffer) waitLine(t *testing.T, what string, timeout time.Duration, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range b.lines() {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line %s within %s; log:\n%s", what, timeout, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// requestLine waits for the access log line of the request with id.
func (b *lockedBuffer) requestLine(t *testing.T, id string) map[string]any {
	t.Helper()
	return b.waitLine(t, "for request "+id, 5*time.Second, func(l map[string]any) bool {
		return l["message"] == "request" && l["request_id"] == id
	})
}

type httpRun struct {
	URL  string
	log  *lockedBuffer
	stop func() int
}

// startHTTP runs httpMain on a free loopback port with JSON logs and an
// empty environment, waits until it serves, and stops it in t.Cleanup.
func startHTTP(t *testing.T, args ...string) *httpRun {
	t.Helper()
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	code := -1
	args = append([]string{"--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"}, args...)
	go func() {
		defer close(done)
		code = httpMain(ctx, args, []string{}, logs, logs)
	}()
	var once sync.Once
	stop := func() int {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Errorf("httpMain did not return within 30s of its context ending; log:\n%s", logs.String())
			}
		})
		return code
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("fcgiscope http log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, l := range logs.lines() {
			if u, ok := l["url"].(string); ok && strings.HasPrefix(fmt.Sprint(l["message"]), "fcgiscope http is serving") {
				return &httpRun{URL: strings.TrimSuffix(u, "/"), log: logs, stop: stop}
			}
		}
		select {
		case <-done:
			t.Fatalf("httpMain returned %d before serving; log:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("httpMain did not start serving; log:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get sends a request and returns the response with its whole body.
func get(t *testing.T, method, u string, body io.Reader, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return resp, string(b)
}

// vars parses KEY=value lines.
func vars(body string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func TestHTTPGatewayAgainstPHPFPM(t *testing.T) {
	port := testbed.FreePort(t)
	php := testbed.StartFPM(t, testbed.FPMConfig{Listen: fmt.Sprintf("127.0.0.1:%d", port), CatchWorkersOutput: true})
	root := gatewayRoot(t)
	h := startHTTP(t, "--root", root, "--upstream", php.Addr, "--fpm-config", php.ConfigPath)
	base, err := url.Parse(h.URL)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("static file", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/style.css", nil)
		if resp.StatusCode != 200 || body != "body { color: teal }\n" || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/css") {
			t.Errorf("got %d %q %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if resp, _ := get(t, "POST", h.URL+"/style.css", strings.NewReader("x")); resp.StatusCode != 405 {
			t.Errorf("POST to a static file: %d, want 405", resp.StatusCode)
		}
	})

	t.Run("hidden files and escapes", func(t *testing.T) {
		if resp, body := get(t, "GET", h.URL+"/.env", nil); resp.StatusCode != 403 || strings.Contains(body, "SECRET") {
			t.Errorf("/.env: %d %q", resp.StatusCode, body)
		}
		// The client would clean the path; send it raw.
		req, _ := http.NewRequest("GET", h.URL+"/", nil)
		req.URL.Opaque = "/../../../etc/passwd"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), "root:") {
			t.Errorf("/../../../etc/passwd escaped the root: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("php page", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/hello.php", nil)
		if resp.StatusCode != 200 || body != "hello from php\n" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		if st := resp.Header.Get("Server-Timing"); !strings.Contains(st, "fcgi-connect;dur=") || !strings.Contains(st, "fcgi-wait;dur=") {
			t.Errorf("Server-Timing %q", st)
		}
		id := resp.Header.Get("X-Fcgiscope-Request-Id")
		if id == "" {
			t.Fatal("no X-Fcgiscope-Request-Id")
		}
		l := h.log.requestLine(t, id)
		if l["outcome"] != "ok" || l["status"] != float64(200) || l["script"] != filepath.Join(root, "hello.php") || l["level"] != "info" {
			t.Errorf("log line %v", l)
		}
	})

	t.Run("front controller", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/blog/2024/hello-world?page=2&x=%2F", nil)
		v := vars(body)
		want := map[string]string{
			"REQUEST_URI":     "/blog/2024/hello-world?page=2&x=%2F",
			"QUERY_STRING":    "page=2&x=%2F",
			"SCRIPT_NAME":     "/index.php",
			"SCRIPT_FILENAME": filepath.Join(root, "index.php"),
			"DOCUMENT_ROOT":   root,
			"PATH_INFO":       "",
		}
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		for k, w := range want {
			if v[k] != w {
				t.Errorf("%s=%q, want %q", k, v[k], w)
			}
		}
		if resp, _ := get(t, "GET", h.URL+"/sub", nil); resp.StatusCode != 301 || resp.Header.Get("Location") != "/sub/" {
			t.Errorf("/sub: %d Location %q, want 301 /sub/", resp.StatusCode, resp.Header.Get("Location"))
		}
		if _, body := get(t, "GET", h.URL+"/sub/", nil); vars(body)["SCRIPT_NAME"] != "/sub/index.php" {
			t.Errorf("/sub/ ran %q", vars(body)["SCRIPT_NAME"])
		}
		_, body = get(t, "GET", h.URL+"/vars.php/users/7?q=1", nil)
		if v := vars(body); v["SCRIPT_NAME"] != "/vars.php" || v["PATH_INFO"] != "/users/7" || v["REQUEST_URI"] != "/vars.php/users/7?q=1" {
			t.Errorf("PATH_INFO request: %v", v)
		}
	})

	t.Run("missing script goes to php-fpm", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/missing.php", nil)
		if resp.StatusCode != 404 || !strings.Contains(body, "File not found.") {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
		l := h.log.requestLine(t, resp.Header.Get("X-Fcgiscope-Request-Id"))
		if l["outcome"] != "script_not_found" {
			t.Errorf("log line %v", l)
		}
	})

	t.Run("server variables", func(t *testing.T) {
		_, body := get(t, "GET", h.URL+"/vars.php", nil)
		v := vars(body)
		if v["REQUEST_SCHEME"] != "http" || v["SERVER_ADDR"] != "127.0.0.1" || v["SERVER_PORT"] != base.Port() ||
			v["REMOTE_ADDR"] != "127.0.0.1" || v["REQUEST_ID"] == "" || !strings.HasPrefix(v["SERVER_SOFTWARE"], "fcgiscope/") ||
			v["HTTP_HOST"] != base.Host || v["REQUEST_METHOD"] != "GET" {
			t.Errorf("server variables: %v", v)
		}
	})

	t.Run("proxy header never becomes HTTP_PROXY", func(t *testing.T) {
		_, body := get(t, "GET", h.URL+"/env.php", nil,
			"Proxy", "http://attacker.invalid:3128", "X-Test", "yes", "X_Test", "spoofed", "X_Only_Underscores", "dropped")
		v := vars(body)
		if _, ok := v["HTTP_PROXY"]; ok {
			t.Errorf("HTTP_PROXY reached PHP (httpoxy):\n%s", body)
		}
		if v["HTTP_X_TEST"] != "yes" {
			t.Errorf("HTTP_X_TEST=%q, want the dashed header's value", v["HTTP_X_TEST"])
		}
		if _, ok := v["HTTP_X_ONLY_UNDERSCORES"]; ok {
			t.Errorf("a header spelt with underscores reached PHP:\n%s", body)
		}
	})

	t.Run("cookies are joined as PHP reads them", func(t *testing.T) {
		_, body := get(t, "GET", h.URL+"/vars.php", nil, "Cookie", "a=1", "Cookie", "b=2")
		if c := vars(body)["HTTP_COOKIE"]; c != "a=1; b=2" {
			t.Errorf("HTTP_COOKIE=%q, want \"a=1; b=2\"", c)
		}
	})

	t.Run("10 MiB POST", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789abcdef"), 10<<20/16)
		sum := sha256.Sum256(payload)
		want := fmt.Sprintf("len=%d sha256=%s\n", len(payload), hex.EncodeToString(sum[:]))
		resp, body := get(t, "POST", h.URL+"/echo.php", bytes.NewReader(payload), "Content-Type", "application/octet-stream")
		if resp.StatusCode != 200 || body != want {
			t.Errorf("got %d %q, want %q", resp.StatusCode, body, want)
		}
		l := h.log.requestLine(t, resp.Header.Get("X-Fcgiscope-Request-Id"))
		if l["bytes_in"] != float64(len(payload)) {
			t.Errorf("bytes_in %v, want %d", l["bytes_in"], len(payload))
		}
		// Without a length (chunked), the body is read whole first.
		pr, pw := io.Pipe()
		go func() {
			for off := 0; off < len(payload); off += 1 << 20 {
				pw.Write(payload[off:min(off+1<<20, len(payload))])
			}
			pw.Close()
		}()
		resp, body = get(t, "POST", h.URL+"/echo.php", pr)
		if resp.StatusCode != 200 || body != want {
			t.Errorf("chunked: got %d %q, want %q", resp.StatusCode, body, want)
		}
	})

	t.Run("status and repeated headers", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/cookies.php", nil)
		if resp.StatusCode != 201 || body != "cookies\n" || resp.Header.Get("X-Custom") != "yes" {
			t.Errorf("got %d %v %q", resp.StatusCode, resp.Header, body)
		}
		var names []string
		for _, c := range resp.Cookies() {
			names = append(names, c.Name+"="+c.Value)
		}
		if strings.Join(names, ",") != "a=1,b=2,c=3" {
			t.Errorf("cookies %v, want a=1,b=2,c=3", names)
		}
		resp, body = get(t, "GET", h.URL+"/bigheader.php", nil)
		if resp.StatusCode != 200 || body != "big header ok\n" || len(resp.Header.Get("X-Long")) != 3000 {
			t.Fatalf("big header: %d %q X-Long %d bytes", resp.StatusCode, body, len(resp.Header.Get("X-Long")))
		}
		cookies := resp.Cookies()
		if len(cookies) != 2 || len(cookies[0].Value) != 10240 {
			t.Errorf("big cookie lost: %d cookies", len(cookies))
		}
	})

	t.Run("killed worker is explained", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/crash.php?sig=9", nil, "Accept", "application/json")
		cause := resp.Header.Get("X-Fcgiscope-Cause")
		if resp.StatusCode != 502 || (cause != "worker_crashed" && cause != "worker_died") {
			t.Fatalf("got %d cause %q:\n%s", resp.StatusCode, cause, body)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("Content-Type %q", ct)
		}
		var p map[string]any
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, body)
		}
		id := resp.Header.Get("X-Fcgiscope-Request-Id")
		if p["cause"] != cause || p["status"] != float64(502) || p["request_id"] != id {
			t.Errorf("problem %v", p)
		}
		l := h.log.requestLine(t, id)
		if l["outcome"] != cause || l["level"] != "error" || l["replaced"] != true {
			t.Errorf("log line %v", l)
		}
	})

	t.Run("worker killed mid-response cuts the transfer", func(t *testing.T) {
		resp, err := http.Get(h.URL + "/crash.php?sig=9&flush=1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("the client read a complete response %d %q from a worker that died", resp.StatusCode, b)
		}
		l := h.log.requestLine(t, resp.Header.Get("X-Fcgiscope-Request-Id"))
		if l["truncated"] != true || (l["outcome"] != "worker_crashed" && l["outcome"] != "worker_died") {
			t.Errorf("log line %v", l)
		}
	})

	t.Run("client disconnect closes the php-fpm connection", func(t *testing.T) {
		client := &http.Client{Timeout: 300 * time.Millisecond}
		start := time.Now()
		_, err := client.Get(h.URL + "/sleep.php?s=4")
		if err == nil {
			t.Fatal("the request finished; the client should have given up")
		}
		l := h.log.waitLine(t, "with client_aborted", 3*time.Second, func(l map[string]any) bool {
			return l["message"] == "request" && l["outcome"] == "client_aborted"
		})
		if time.Since(start) > 3*time.Second {
			t.Errorf("client_aborted logged after %s, only when the script ended", time.Since(start))
		}
		if l["status"] != float64(499) || l["level"] != "warn" {
			t.Errorf("log line %v", l)
		}
		// fcgiscope's end of a php-fpm connection that is still open
		// would show as ESTABLISHED towards php-fpm's port.
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := establishedTo(t, port)
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d connections to php-fpm still open after the client left", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// establishedTo counts the ESTABLISHED TCP connections on this host whose
// remote port is port: connections to php-fpm, as a client sees them.
func establishedTo(t *testing.T, port int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 4 || f[3] != "01" {
			continue
		}
		_, rport, ok := strings.Cut(f[2], ":")
		if p, err := strconv.ParseUint(rport, 16, 16); ok && err == nil && int(p) == port {
			n++
		}
	}
	return n
}

func TestHTTPFPMAutoStartsAndStopsPHPFPM(t *testing.T) {
	testbed.RequireFPM(t)
	root := gatewayRoot(t)
	h := startHTTP(t, "--root", root, "--fpm", "auto", "--fpm-workers", "2")
	started := h.log.waitLine(t, "php-fpm started", time.Second, func(l map[string]any) bool { return l["message"] == "php-fpm started" })
	pid := int(started["pid"].(float64))
	dir := filepath.Dir(started["config"].(string))

	resp, body := get(t, "GET", h.URL+"/hello.php", nil)
	if resp.StatusCode != 200 || body != "hello from php\n" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	// The error log is followed, so a crash is named with its signal.
	resp, body = get(t, "GET", h.URL+"/crash.php?sig=11", nil)
	if c := resp.Header.Get("X-Fcgiscope-Cause"); resp.StatusCode != 502 || c != "worker_crashed" {
		t.Errorf("crash with --fpm auto: %d %q:\n%s", resp.StatusCode, c, body)
	}
	if !strings.Contains(body, "SIGSEGV") {
		t.Errorf("the page does not name the signal:\n%s", body)
	}

	// php-fpm replaces the crashed worker; give it a moment.
	workers := childPIDsOf(pid)
	for deadline := time.Now().Add(3 * time.Second); len(workers) != 2 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		workers = childPIDsOf(pid)
	}
	if len(workers) != 2 {
		t.Errorf("php-fpm %d has workers %v, want 2 (--fpm-workers 2)", pid, workers)
	}
	if code := h.stop(); code != exitOK {
		t.Errorf("httpMain returned %d, want %d", code, exitOK)
	}
	for _, p := range append([]int{pid}, workers...) {
		if processAlive(p) {
			t.Errorf("pid %d still runs after httpMain returned", p)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("php-fpm's directory %s was not removed: %v", dir, err)
	}
	h.log.waitLine(t, "php-fpm stopped", time.Second, func(l map[string]any) bool { return l["message"] == "php-fpm stopped" })
}

// childPIDsOf returns the live children of ppid, from /proc.
func childPIDsOf(ppid int) []int {
	var pids []int
	for _, k := range procfs.Children(ppid) {
		pids = append(pids, k.PID)
	}
	return pids
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	st, err := procfs.ReadStat(pid)
	return err == nil && !st.Gone()
}

func TestHTTPUsage(t *testing.T) {
	root := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--root", filepath.Join(root, "nope")}, "FCGISCOPE_ROOT"},
		{[]string{"--root", root, "--upstream", "9000"}, "FCGISCOPE_UPSTREAM"},
		{[]string{"--root", root, "--listen", "localhost"}, "FCGISCOPE_LISTEN"},
		{[]string{"--root", root, "--fpm", "yes"}, "FCGISCOPE_FPM"},
		{[]string{"--root", root, "--index", "a/index.php"}, "FCGISCOPE_INDEX"},
		{[]string{"--root", root, "--try-files", "maybe"}, "FCGISCOPE_TRY_FILES"},
		{[]string{"--root", root, "extra"}, "takes no arguments"},
	} {
		var out bytes.Buffer
		code := httpMain(context.Background(), tt.args, nil, &out, &out)
		if code != exitUsage || !strings.Contains(out.String(), tt.want) {
			t.Errorf("%q: exit %d, output %q; want %d naming %s", tt.args, code, out.String(), exitUsage, tt.want)
		}
	}
	var out bytes.Buffer
	if code := httpMain(context.Background(), []string{"-h"}, nil, &out, &out); code != exitOK || !strings.Contains(out.String(), "--fpm auto") || !strings.Contains(out.String(), "-try-files") {
		t.Errorf("-h: exit %d:\n%s", code, out.String())
	}
}

// TestHTTPExplainsAMissingUpstream needs no php-fpm: nothing listens.
func TestHTTPExplainsAMissingUpstream(t *testing.T) {
	root := gatewayRoot(t)
	sock := filepath.Join(testbed.ShortTempDir(t), "php-fpm.sock")
	h := startHTTP(t, "--root", root, "--upstream", "unix:"+sock)
	resp, body := get(t, "GET", h.URL+"/hello.php", nil, "Accept", "text/html")
	if resp.StatusCode != 502 || resp.Header.Get("X-Fcgiscope-Cause") != "upstream_socket_missing" || !strings.Contains(body, sock) {
		t.Errorf("got %d %q:\n%s", resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"), body)
	}
	if st := resp.Header.Get("Server-Timing"); st != "" {
		t.Errorf("Server-Timing %q on a request that never connected", st)
	}
	// Static files need no php-fpm.
	if resp, _ := get(t, "GET", h.URL+"/style.css", nil); resp.StatusCode != 200 {
		t.Errorf("static file without php-fpm: %d", resp.StatusCode)
	}
}

// fcgiscope http is a local debugging server: what PHP hides from the
// browser (a fatal error behind an empty 500, a body it threw away) is on
// the page, for the developer on this machine.
func TestHTTPShowsPHPErrorsToTheDeveloper(t *testing.T) {
	php := testbed.StartFPM(t, testbed.FPMConfig{Extra: "php_admin_value[post_max_size] = 1M\nphp_admin_flag[display_errors] = off\n"})
	root := gatewayRoot(t)
	h := startHTTP(t, "--root", root, "--upstream", php.Addr, "--fpm-config", php.ConfigPath)

	t.Run("fatal error behind an empty 500", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/fatal.php", nil, "Accept", "text/html")
		if resp.StatusCode != 500 || resp.Header.Get("X-Fcgiscope-Cause") != "php_fatal_error" {
			t.Fatalf("got %d cause %q, want php-fpm's 500 explained as php_fatal_error:\n%s", resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"), body)
		}
		if !strings.Contains(body, "undefined function") || !strings.Contains(body, filepath.Join(root, "fatal.php")+":") {
			t.Errorf("the page does not show PHP's message with its file:line:\n%s", body)
		}
		l := h.log.requestLine(t, resp.Header.Get("X-Fcgiscope-Request-Id"))
		if l["outcome"] != "php_fatal_error" || l["status"] != float64(500) {
			t.Errorf("log line %v", l)
		}
	})

	t.Run("form body PHP threw away", func(t *testing.T) {
		form := "x=" + strings.Repeat("a", 2<<20)
		resp, body := get(t, "POST", h.URL+"/hello.php", strings.NewReader(form), "Content-Type", "application/x-www-form-urlencoded")
		if resp.StatusCode != 200 || resp.Header.Get("X-Fcgiscope-Cause") != "request_body_discarded" {
			t.Fatalf("got %d cause %q, want the script's 200 marked request_body_discarded", resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"))
		}
		if !strings.Contains(body, "hello from php") || !strings.Contains(body, `id="fcgiscope-banner"`) || !strings.Contains(body, "post_max_size = 1M") {
			t.Errorf("the page is not the script's with fcgiscope's banner naming post_max_size:\n%s", body)
		}
	})

	t.Run("a good page is left alone", func(t *testing.T) {
		resp, body := get(t, "GET", h.URL+"/hello.php", nil)
		if resp.StatusCode != 200 || body != "hello from php\n" || resp.Header.Get("X-Fcgiscope-Cause") != "" {
			t.Errorf("got %d cause %q body %q", resp.StatusCode, resp.Header.Get("X-Fcgiscope-Cause"), body)
		}
	})
}
