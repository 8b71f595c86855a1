package fcgi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// checkGoroutines records the number of goroutines now and, when the test
// ends (after every later cleanup, such as the fake server's), waits
// briefly for it to settle back, failing with a stack dump if it does not.
// Register it first so that its cleanup runs last.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d goroutines before the test, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// fakeServer is an in-process FastCGI application listening on a unix
// socket in a fresh temporary directory. Each connection is passed to
// handle, then closed.
type fakeServer struct {
	Addr fcgi.Addr

	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startFake(t *testing.T, handle func(t *testing.T, conn net.Conn)) *fakeServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fpm.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	s := &fakeServer{Addr: fcgi.Addr{Network: "unix", Address: path}, ln: ln, conns: map[net.Conn]bool{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns[conn] = true
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer func() {
					s.mu.Lock()
					delete(s.conns, conn)
					s.mu.Unlock()
					conn.Close()
				}()
				handle(t, conn)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
		os.RemoveAll(dir)
	})
	return s
}

// fakeRequest is what the fake application read of one request.
type fakeRequest struct {
	id     uint16
	begin  fcgi.BeginRequest
	params map[string]string
	order  []string
	stdin  int // bytes
	sum    [32]byte
}

// readRequest reads BEGIN_REQUEST, the PARAMS stream and the STDIN stream
// of one request, as php-fpm does before it runs a script.
func readRequest(r *fcgi.Reader) (*fakeRequest, error) {
	req := &fakeRequest{params: map[string]string{}}
	h, err := r.Next()
	if err != nil {
		return nil, err
	}
	if h.Type != fcgi.TypeBeginRequest {
		return nil, fmt.Errorf("first record is %v", h.Type)
	}
	req.id = h.RequestID
	if req.begin, err = fcgi.ParseBeginRequest(r.Content()); err != nil {
		return nil, err
	}
	var pb fcgi.ParamsBuffer
	hash := sha256.New()
	paramsDone, stdinDone := false, false
	for !paramsDone || !stdinDone {
		h, err := r.Next()
		if err != nil {
			return nil, err
		}
		if h.RequestID != req.id {
			return nil, fmt.Errorf("record for request %d inside request %d", h.RequestID, req.id)
		}
		switch h.Type {
		case fcgi.TypeParams:
			if h.ContentLength == 0 {
				paramsDone = true
				break
			}
			if err := pb.Append(r.Content()); err != nil {
				return nil, err
			}
		case fcgi.TypeStdin:
			if !paramsDone {
				return nil, errors.New("STDIN before the end of PARAMS")
			}
			if h.ContentLength == 0 {
				stdinDone = true
				break
			}
			hash.Write(r.Content())
			req.stdin += int(h.ContentLength)
		default:
			return nil, fmt.Errorf("unexpected %v record", h.Type)
		}
	}
	err = pb.ForEach(func(name, value []byte) bool {
		req.params[string(name)] = string(value)
		req.order = append(req.order, string(name))
		return true
	})
	copy(req.sum[:], hash.Sum(nil))
	return req, err
}

// getValuesResponder answers one GET_VALUES record.
func getValuesResponder(t *testing.T, conn net.Conn) {
	r := fcgi.NewReader(conn)
	w := fcgi.NewWriter(conn)
	// GET_VALUES comes alone; a request starts with BEGIN_REQUEST.
	h, err := r.Next()
	if err != nil {
		t.Errorf("fake: %v", err)
		return
	}
	if h.Type == fcgi.TypeGetValues {
		answerGetValues(t, w, r.Content())
		return
	}
	t.Errorf("fake: first record %v, want GET_VALUES", h.Type)
}

func answerGetValues(t *testing.T, w *fcgi.Writer, content []byte) {
	known := map[string]string{
		fcgi.ValueMaxConns:  "16",
		fcgi.ValueMaxReqs:   "16",
		fcgi.ValueMPXSConns: "0",
	}
	var body []byte
	if err := fcgi.ForEachPair(content, func(name, _ []byte) bool {
		if v, ok := known[string(name)]; ok {
			body = fcgi.AppendPair(body, string(name), v)
		}
		return true
	}); err != nil {
		t.Errorf("fake: GET_VALUES: %v", err)
	}
	// A stray record of another type first, which the client must skip.
	w.WriteRecord(fcgi.TypeUnknownType, 0, []byte{99, 0, 0, 0, 0, 0, 0, 0})
	w.WriteRecord(fcgi.TypeGetValuesResult, 0, body)
	w.Flush()
}

// sha256Responder answers a request with the sha256 of its STDIN and its
// params on STDOUT, a warning on STDERR, and the app status given in the
// APP_STATUS param.
func sha256Responder(t *testing.T, conn net.Conn) {
	if err := serveSHA256(conn); err != nil {
		t.Errorf("fake: %v", err)
	}
}

func serveSHA256(conn net.Conn) error {
	r := fcgi.NewReader(conn)
	w := fcgi.NewWriter(conn)
	req, err := readRequest(r)
	if err != nil {
		return err
	}
	var out bytes.Buffer
	out.WriteString("Content-Type: text/plain\r\n\r\n")
	fmt.Fprintf(&out, "sha256=%s\n", hex.EncodeToString(req.sum[:]))
	fmt.Fprintf(&out, "stdin=%d\n", req.stdin)
	fmt.Fprintf(&out, "role=%v keep=%v\n", req.begin.Role, req.begin.KeepConn())
	for _, n := range req.order {
		fmt.Fprintf(&out, "%s=%s\n", n, req.params[n])
	}
	status, _ := strconv.Atoi(req.params["APP_STATUS"])
	// Interleave STDERR with STDOUT, and send STDOUT in several records.
	half := out.Len() / 2
	w.WriteStream(fcgi.TypeStdout, req.id, out.Bytes()[:half])
	w.WriteStream(fcgi.TypeStderr, req.id, []byte("PHP Warning: fake\n"))
	// A record for another request id must be ignored by the client.
	w.WriteStream(fcgi.TypeStdout, req.id+1, []byte("NOT MINE"))
	w.WriteStream(fcgi.TypeStdout, req.id, out.Bytes()[half:])
	w.WriteStream(fcgi.TypeStderr, req.id, []byte("second line\n"))
	w.EndStream(fcgi.TypeStdout, req.id)
	w.EndStream(fcgi.TypeStderr, req.id)
	w.WriteEndRequest(req.id, fcgi.EndRequest{AppStatus: uint32(status), ProtocolStatus: fcgi.StatusRequestComplete})
	return w.Flush()
}

func TestClientDoEchoesStdinSHA256(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, sha256Responder)

	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i*31 + i>>8)
	}
	want := sha256.Sum256(body)
	params := []fcgi.Pair{
		{"SCRIPT_FILENAME", "/var/www/html/index.php"},
		{"REQUEST_METHOD", "POST"},
		{"CONTENT_LENGTH", strconv.Itoa(len(body))},
		{"HTTP_COOKIE", strings.Repeat("x", 200)}, // four-byte length
		{"APP_STATUS", "3"},
	}
	c := &fcgi.Client{Addr: srv.Addr}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, &fcgi.Request{ID: 7, KeepConn: true, Params: params, Stdin: bytes.NewReader(body)})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	out := string(resp.Stdout)
	for _, s := range []string{
		"Content-Type: text/plain\r\n\r\n",
		"sha256=" + hex.EncodeToString(want[:]) + "\n",
		"stdin=1048576\n",
		"role=RESPONDER keep=true\n",
		"SCRIPT_FILENAME=/var/www/html/index.php\nREQUEST_METHOD=POST\nCONTENT_LENGTH=1048576\nHTTP_COOKIE=" + strings.Repeat("x", 200) + "\nAPP_STATUS=3\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("stdout %q lacks %q", out, s)
		}
	}
	if strings.Contains(out, "NOT MINE") {
		t.Error("stdout holds a record of another request id")
	}
	if got := string(resp.Stderr); got != "PHP Warning: fake\nsecond line\n" {
		t.Errorf("stderr = %q", got)
	}
	if resp.End != (fcgi.EndRequest{AppStatus: 3, ProtocolStatus: fcgi.StatusRequestComplete}) {
		t.Errorf("End = %+v, want app status 3", resp.End)
	}
	if resp.Connect <= 0 || resp.FirstByte < resp.Connect || resp.Total < resp.FirstByte {
		t.Errorf("timings Connect %v FirstByte %v Total %v are out of order", resp.Connect, resp.FirstByte, resp.Total)
	}
}

func TestClientDoDefaults(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, sha256Responder)
	c := &fcgi.Client{Addr: srv.Addr}
	resp, err := c.Do(context.Background(), &fcgi.Request{})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	empty := sha256.Sum256(nil)
	for _, s := range []string{"sha256=" + hex.EncodeToString(empty[:]), "stdin=0\n", "role=RESPONDER keep=false\n"} {
		if !strings.Contains(string(resp.Stdout), s) {
			t.Errorf("stdout %q lacks %q", resp.Stdout, s)
		}
	}
	if resp.End.AppStatus != 0 {
		t.Errorf("app status %d", resp.End.AppStatus)
	}
}

func TestClientDoProtocolStatus(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		req, err := readRequest(fcgi.NewReader(conn))
		if err != nil {
			t.Errorf("fake: %v", err)
			return
		}
		w := fcgi.NewWriter(conn)
		w.WriteEndRequest(req.id, fcgi.EndRequest{AppStatus: 0xDEADBEEF, ProtocolStatus: fcgi.StatusOverloaded})
		w.Flush()
	})
	resp, err := (&fcgi.Client{Addr: srv.Addr}).Do(context.Background(), &fcgi.Request{ID: 0xFFFF, Role: fcgi.RoleAuthorizer})
	if err != nil {
		t.Fatal(err)
	}
	if resp.End != (fcgi.EndRequest{AppStatus: 0xDEADBEEF, ProtocolStatus: fcgi.StatusOverloaded}) {
		t.Errorf("End = %+v", resp.End)
	}
	if len(resp.Stdout) != 0 || len(resp.Stderr) != 0 || resp.FirstByte != 0 {
		t.Errorf("stdout %q stderr %q first byte %v for an empty response", resp.Stdout, resp.Stderr, resp.FirstByte)
	}
}

func TestClientDoPeerClosesWithoutEndRequest(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		req, err := readRequest(fcgi.NewReader(conn))
		if err != nil {
			t.Errorf("fake: %v", err)
			return
		}
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, req.id, []byte("Status: 200\r\n\r\npartial"))
		w.WriteStream(fcgi.TypeStderr, req.id, []byte("about to die"))
		w.Flush()
		// The worker is killed: the connection closes, no END_REQUEST.
	})
	resp, err := (&fcgi.Client{Addr: srv.Addr}).Do(context.Background(), &fcgi.Request{Stdin: strings.NewReader("body")})
	if !errors.Is(err, fcgi.ErrNoEndRequest) {
		t.Fatalf("Do = %v, want an error wrapping ErrNoEndRequest", err)
	}
	if resp == nil {
		t.Fatal("no partial response")
	}
	if string(resp.Stdout) != "Status: 200\r\n\r\npartial" {
		t.Errorf("partial stdout = %q", resp.Stdout)
	}
	if string(resp.Stderr) != "about to die" {
		t.Errorf("partial stderr = %q", resp.Stderr)
	}
}

func TestClientDoPeerClosesInsideRecord(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		req, err := readRequest(fcgi.NewReader(conn))
		if err != nil {
			t.Errorf("fake: %v", err)
			return
		}
		rec := makeRecord(6, req.id, []byte("0123456789"), 6)
		conn.Write(concat(makeRecord(6, req.id, []byte("whole"), 3), rec[:12]))
	})
	resp, err := (&fcgi.Client{Addr: srv.Addr}).Do(context.Background(), &fcgi.Request{})
	if !errors.Is(err, fcgi.ErrNoEndRequest) || !errors.Is(err, fcgi.ErrTruncated) {
		t.Fatalf("Do = %v, want ErrNoEndRequest and ErrTruncated", err)
	}
	if string(resp.Stdout) != "whole" {
		t.Errorf("stdout = %q", resp.Stdout)
	}
}

func TestClientDoPeerSpeaksHTTP(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		// Read what the client sends, as an HTTP server reads a bad
		// request line, then answer with 400 and close.
		if _, err := readRequest(fcgi.NewReader(conn)); err != nil {
			t.Errorf("fake: %v", err)
			return
		}
		io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	})
	_, err := (&fcgi.Client{Addr: srv.Addr}).Do(context.Background(), &fcgi.Request{})
	var ve *fcgi.VersionError
	if !errors.As(err, &ve) {
		t.Fatalf("Do = %v, want a *VersionError", err)
	}
	if !ve.LooksLikeHTTP() {
		t.Errorf("LooksLikeHTTP false for header %q", ve.Header)
	}
	if string(ve.Header[:]) != "HTTP/1.1" {
		t.Errorf("Header = %q", ve.Header)
	}
	if errors.Is(err, fcgi.ErrNoEndRequest) {
		t.Errorf("a peer that speaks HTTP is reported as a closed connection: %v", err)
	}
	if !strings.Contains(err.Error(), "HTTP") {
		t.Errorf("message %q does not say HTTP", err)
	}
}

func TestClientDialErrors(t *testing.T) {
	checkGoroutines(t)
	dir, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// A TCP port that refuses: listen, note the port, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()

	tests := []struct {
		name  string
		addr  fcgi.Addr
		errno syscall.Errno
	}{
		{"missing unix socket", fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "missing.sock")}, syscall.ENOENT},
		{"refused tcp port", fcgi.Addr{Network: "tcp", Address: refused}, syscall.ECONNREFUSED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fcgi.Client{Addr: tt.addr, DialTimeout: time.Second}
			resp, err := c.Do(context.Background(), &fcgi.Request{})
			if !errors.Is(err, tt.errno) {
				t.Fatalf("Do = %v, want an error wrapping %v", err, tt.errno)
			}
			if !strings.Contains(err.Error(), tt.addr.String()) {
				t.Errorf("message %q does not name the address %s", err, tt.addr)
			}
			if resp != nil {
				t.Errorf("response %+v for a failed dial", resp)
			}
			vals, err := c.GetValues(context.Background(), fcgi.ValueMaxConns)
			if !errors.Is(err, tt.errno) || vals != nil {
				t.Errorf("GetValues = %v, %v; want an error wrapping %v", vals, err, tt.errno)
			}
		})
	}
}

func TestClientGetValues(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, getValuesResponder)
	c := &fcgi.Client{Addr: srv.Addr}
	got, err := c.GetValues(context.Background(), fcgi.ValueMaxConns, fcgi.ValueMaxReqs, fcgi.ValueMPXSConns, "NOT_A_VALUE")
	if err != nil {
		t.Fatalf("GetValues: %v", err)
	}
	want := map[string]string{"FCGI_MAX_CONNS": "16", "FCGI_MAX_REQS": "16", "FCGI_MPXS_CONNS": "0"}
	if len(got) != len(want) {
		t.Errorf("GetValues = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("GetValues[%s] = %q, want %q", k, got[k], v)
		}
	}
}

func TestClientGetValuesPeerCloses(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		fcgi.NewReader(conn).Next()
	})
	_, err := (&fcgi.Client{Addr: srv.Addr}).GetValues(context.Background(), fcgi.ValueMaxConns)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("GetValues = %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestClientGetValuesMalformedAnswer(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		fcgi.NewReader(conn).Next()
		w := fcgi.NewWriter(conn)
		w.WriteRecord(fcgi.TypeGetValuesResult, 0, []byte("\x0e\x02FCGI_MAX_CONNS10\x0d\x05FCGI"))
		w.Flush()
	})
	got, err := (&fcgi.Client{Addr: srv.Addr}).GetValues(context.Background(), fcgi.ValueMaxConns)
	var pe *fcgi.PairError
	if !errors.As(err, &pe) || pe.Offset != 18 {
		t.Fatalf("GetValues = %v, want a *PairError at 18", err)
	}
	if got["FCGI_MAX_CONNS"] != "10" {
		t.Errorf("the pairs before the bad one are lost: %v", got)
	}
}

// silentPeer reads everything and never answers.
func silentPeer(t *testing.T, conn net.Conn) {
	io.Copy(io.Discard, conn)
}

func TestClientDoContextTimeoutReturnsByDeadline(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, silentPeer)
	const timeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	resp, err := (&fcgi.Client{Addr: srv.Addr}).Do(ctx, &fcgi.Request{Stdin: strings.NewReader("hello")})
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("Do succeeded against a peer that never answers")
	}
	if elapsed > timeout+time.Second {
		t.Errorf("Do returned after %v, deadline was %v", elapsed, timeout)
	}
	if elapsed < timeout-10*time.Millisecond {
		t.Errorf("Do returned after %v, before the deadline of %v", elapsed, timeout)
	}
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("Do = %v, want a timeout", err)
	}
	if resp == nil {
		t.Error("no partial response on timeout")
	}
}

// TestClientDoContextTimeoutWrapsDeadlineExceeded repeats a timed-out Do:
// every time, the error must wrap context.DeadlineExceeded.
func TestClientDoContextTimeoutWrapsDeadlineExceeded(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, silentPeer)
	c := &fcgi.Client{Addr: srv.Addr}
	failures := 0
	const runs = 30
	for i := 0; i < runs; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		_, err := c.Do(ctx, &fcgi.Request{})
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			failures++
			if failures == 1 {
				t.Errorf("Do = %v, want an error wrapping context.DeadlineExceeded", err)
			}
		}
	}
	if failures > 0 {
		t.Errorf("%d of %d timed-out calls did not wrap context.DeadlineExceeded", failures, runs)
	}
}

func TestClientDoContextCancel(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, silentPeer)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err := (&fcgi.Client{Addr: srv.Addr}).Do(ctx, &fcgi.Request{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want an error wrapping context.Canceled", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Do returned %v after the cancel", elapsed)
	}
}

func TestClientGetValuesContextTimeout(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, silentPeer)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := (&fcgi.Client{Addr: srv.Addr}).GetValues(ctx, fcgi.ValueMaxConns)
	if err == nil {
		t.Fatal("GetValues succeeded against a peer that never answers")
	}
	if elapsed := time.Since(start); elapsed > 150*time.Millisecond+time.Second {
		t.Errorf("GetValues returned after %v", elapsed)
	}
}

func TestClientGetValuesContextTimeoutWrapsDeadlineExceeded(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, silentPeer)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := (&fcgi.Client{Addr: srv.Addr}).GetValues(ctx, fcgi.ValueMaxConns)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetValues = %v, want an error wrapping context.DeadlineExceeded", err)
	}
}

// TestClientDoAppAnswersBeforeReadingBody has the application answer
// without reading the request body, as php-fpm does for a missing script.
func TestClientDoAppAnswersBeforeReadingBody(t *testing.T) {
	checkGoroutines(t)
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		r := fcgi.NewReader(conn)
		var id uint16
		for {
			h, err := r.Next()
			if err != nil {
				t.Errorf("fake: %v", err)
				return
			}
			id = h.RequestID
			if h.Type == fcgi.TypeParams && h.ContentLength == 0 {
				break
			}
		}
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, id, []byte("Status: 404 Not Found\r\n\r\nFile not found.\n"))
		w.EndStream(fcgi.TypeStdout, id)
		w.WriteEndRequest(id, fcgi.EndRequest{})
		w.Flush()
		// Leave without reading the 8 MiB body.
	})
	body := bytes.NewReader(make([]byte, 8<<20))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := (&fcgi.Client{Addr: srv.Addr}).Do(ctx, &fcgi.Request{Stdin: body})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if !strings.Contains(string(resp.Stdout), "File not found.") {
		t.Errorf("stdout = %q", resp.Stdout)
	}
}

// gatedBody is a request body whose Read blocks until gate is closed, or
// until the fallback timer runs out, like a slow upload streamed from a
// client. It then reports the end of the body.
type gatedBody struct {
	gate     chan struct{}
	fallback time.Duration
	timedOut atomic.Bool
}

func (b *gatedBody) Read(p []byte) (int, error) {
	select {
	case <-b.gate:
	case <-time.After(b.fallback):
		b.timedOut.Store(true)
	}
	return 0, io.EOF
}

// TestClientDoSendsParamsBeforeReadingBody checks that the application
// gets BEGIN_REQUEST and PARAMS without waiting for the request body: the
// body here is released only once the application has seen the end of
// PARAMS.
func TestClientDoSendsParamsBeforeReadingBody(t *testing.T) {
	checkGoroutines(t)
	paramsSeen := make(chan struct{})
	srv := startFake(t, func(t *testing.T, conn net.Conn) {
		r := fcgi.NewReader(conn)
		var id uint16
		for {
			h, err := r.Next()
			if err != nil {
				t.Errorf("fake: %v", err)
				return
			}
			id = h.RequestID
			if h.Type == fcgi.TypeParams && h.ContentLength == 0 {
				break
			}
		}
		close(paramsSeen)
		for {
			h, err := r.Next()
			if err != nil {
				t.Errorf("fake: %v", err)
				return
			}
			if h.Type == fcgi.TypeStdin && h.ContentLength == 0 {
				break
			}
		}
		w := fcgi.NewWriter(conn)
		w.WriteEndRequest(id, fcgi.EndRequest{})
		w.Flush()
	})
	body := &gatedBody{gate: paramsSeen, fallback: time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := (&fcgi.Client{Addr: srv.Addr}).Do(ctx, &fcgi.Request{Params: []fcgi.Pair{{"A", "1"}}, Stdin: body}); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if body.timedOut.Load() {
		t.Error("the application received BEGIN_REQUEST and PARAMS only after the body had been read to its end")
	}
}

// TestRoundTripOverPipe drives RoundTrip directly over an in-memory
// connection, without a Client.
func TestRoundTripOverPipe(t *testing.T) {
	checkGoroutines(t)
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		sha256Responder(t, server)
	}()
	var stdout, stderr bytes.Buffer
	end, err := fcgi.RoundTrip(client, &fcgi.Request{ID: 2, Params: []fcgi.Pair{{"APP_STATUS", "9"}}, Stdin: strings.NewReader("abc")}, &stdout, &stderr)
	client.Close()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if end.AppStatus != 9 {
		t.Errorf("app status %d", end.AppStatus)
	}
	sum := sha256.Sum256([]byte("abc"))
	if !strings.Contains(stdout.String(), hex.EncodeToString(sum[:])) {
		t.Errorf("stdout = %q", stdout.String())
	}
	if !strings.Contains(stderr.String(), "PHP Warning") {
		t.Errorf("stderr = %q", stderr.String())
	}
}

func TestRoundTripStdoutWriterError(t *testing.T) {
	checkGoroutines(t)
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		serveSHA256(server) // fails when the client gives up; that is expected
	}()
	boom := errors.New("disk full")
	_, err := fcgi.RoundTrip(client, &fcgi.Request{}, failingWriter{boom}, io.Discard)
	client.Close()
	<-done
	if !errors.Is(err, boom) {
		t.Fatalf("RoundTrip = %v, want %v", err, boom)
	}
}
