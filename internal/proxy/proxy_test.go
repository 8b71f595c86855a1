package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// traces collects the Traces an Observer receives.
type traces struct {
	mu   sync.Mutex
	list []outcome.Trace
	ch   chan struct{}
}

func newTraces() *traces { return &traces{ch: make(chan struct{}, 1000)} }

func (o *traces) Observe(t *outcome.Trace) {
	o.mu.Lock()
	o.list = append(o.list, *t)
	o.mu.Unlock()
	o.ch <- struct{}{}
}

// next waits for the next Trace.
func (o *traces) next(t *testing.T) outcome.Trace {
	t.Helper()
	select {
	case <-o.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no request was observed within 5s")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.list[len(o.list)-1]
}

// upstreamFunc handles one upstream connection of a fake application.
type upstreamFunc func(t testing.TB, conn net.Conn)

// fakeUpstream starts a FastCGI application made of h on a unix socket.
func fakeUpstream(t testing.TB, h upstreamFunc) fcgi.Addr {
	t.Helper()
	return fcgitest.Serve(t, func(conn net.Conn) { h(t, conn) })
}

// echoUpstream answers every request with the sha256 of its body and the
// value of the ECHO param.
func echoUpstream(t testing.TB, conn net.Conn) {
	r := fcgi.NewReader(conn)
	w := fcgi.NewWriter(conn)
	id, params, body, err := fcgitest.ReadRequest(r)
	if err != nil {
		return
	}
	sum := sha256.Sum256(body)
	w.WriteStream(fcgi.TypeStderr, id, []byte("note on stderr\n"))
	w.WriteStream(fcgi.TypeStdout, id, []byte("Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n"+params["ECHO"]+" "+hex.EncodeToString(sum[:])))
	w.EndStream(fcgi.TypeStdout, id)
	w.WriteEndRequest(id, fcgi.EndRequest{AppStatus: 7})
	w.Flush()
}

// startProxy runs a Server relaying to up and returns its address.
func startProxy(t *testing.T, srv *Server) fcgi.Addr {
	t.Helper()
	dir, err := os.MkdirTemp("", "fsd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	addr := fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "down.sock")}
	ln, err := Listen(addr, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return addr
}

func newReq(params ...string) *fcgitest.Request { return fcgitest.NewRequest(params...) }

func TestRelayForwardsRequestAndResponseUnchanged(t *testing.T) {
	obs := newTraces()
	srv := &Server{Upstream: fakeUpstream(t, echoUpstream), Observer: obs, HoldBytes: 65536}
	addr := startProxy(t, srv)

	body := bytes.Repeat([]byte("0123456789abcdef"), 300000) // 4.8 MB, many records
	req := newReq("ECHO", "hi", "REQUEST_METHOD", "POST", "REQUEST_URI", "/up.php?x=1", "HTTP_X_REQUEST_ID", "abc-123")
	req.Stdin = bytes.NewReader(body)
	resp, err := fcgitest.Do(context.Background(), addr, req)
	if err != nil {
		t.Fatalf("request through the relay failed: %v", err)
	}
	sum := sha256.Sum256(body)
	want := "Status: 201 Created\r\nContent-Type: text/plain\r\n\r\nhi " + hex.EncodeToString(sum[:])
	if string(resp.Stdout) != want {
		t.Errorf("stdout = %q, want %q", resp.Stdout, want)
	}
	if string(resp.Stderr) != "note on stderr\n" {
		t.Errorf("stderr = %q", resp.Stderr)
	}
	if resp.End.AppStatus != 7 {
		t.Errorf("app status = %d, want the upstream's 7", resp.End.AppStatus)
	}
	tr := obs.next(t)
	if tr.Err != nil || tr.Status != 201 || tr.RequestID != "abc-123" || tr.Method != "POST" || tr.URI != "/up.php?x=1" {
		t.Errorf("trace = err %v status %d id %q method %q uri %q", tr.Err, tr.Status, tr.RequestID, tr.Method, tr.URI)
	}
	if tr.BytesIn != int64(len(body)) || tr.BytesOut != int64(len(want)) {
		t.Errorf("bytes in/out = %d/%d, want %d/%d", tr.BytesIn, tr.BytesOut, len(body), len(want))
	}
	if string(tr.Stderr) != "note on stderr\n" {
		t.Errorf("trace stderr = %q", tr.Stderr)
	}
	if tr.DialEnd.IsZero() || tr.FirstByte.IsZero() || tr.End.Before(tr.FirstByte) || tr.StdinDone.IsZero() {
		t.Errorf("timeline incomplete: %+v", tr)
	}
}

func TestKeepConnServesSequentialRequestsOnOneConnection(t *testing.T) {
	obs := newTraces()
	addr := startProxy(t, &Server{Upstream: fakeUpstream(t, echoUpstream), Observer: obs})
	conn, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kc := newKeptClient(conn)
	for i := range 50 {
		out, err := kc.roundTrip("body", "ECHO", "n")
		if err != nil {
			t.Fatalf("request %d on the kept connection: %v", i, err)
		}
		if !strings.HasSuffix(out, "n "+hexSHA("body")) {
			t.Fatalf("request %d: stdout %q", i, out)
		}
		obs.next(t)
	}
}

// keptClient sends requests one after the other on one connection, as
// nginx does with fastcgi_keep_conn on.
type keptClient struct {
	w *fcgi.Writer
	r *fcgi.Reader
}

func newKeptClient(conn net.Conn) *keptClient {
	return &keptClient{w: fcgi.NewWriter(conn), r: fcgi.NewReader(conn)}
}

// roundTrip sends one request with body and the params given as name,
// value, ..., and returns its STDOUT once END_REQUEST came.
func (k *keptClient) roundTrip(body string, params ...string) (string, error) {
	var pb []byte
	for i := 0; i+1 < len(params); i += 2 {
		pb = fcgi.AppendPair(pb, params[i], params[i+1])
	}
	k.w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder, Flags: fcgi.FlagKeepConn})
	k.w.WriteStream(fcgi.TypeParams, 1, pb)
	k.w.EndStream(fcgi.TypeParams, 1)
	k.w.WriteStream(fcgi.TypeStdin, 1, []byte(body))
	k.w.EndStream(fcgi.TypeStdin, 1)
	if err := k.w.Flush(); err != nil {
		return "", err
	}
	var out bytes.Buffer
	for {
		h, err := k.r.Next()
		if err != nil {
			return out.String(), err
		}
		switch h.Type {
		case fcgi.TypeStdout:
			out.Write(k.r.Content())
		case fcgi.TypeEndRequest:
			return out.String(), nil
		}
	}
}

func hexSHA(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestGetValuesIsAnsweredByTheRelay(t *testing.T) {
	addr := startProxy(t, &Server{Upstream: fcgi.Addr{Network: "unix", Address: "/nonexistent/php.sock"}})
	v, err := fcgitest.GetValues(context.Background(), addr, fcgi.ValueMPXSConns, fcgi.ValueMaxConns, "UNKNOWN")
	if err != nil {
		t.Fatal(err)
	}
	if v[fcgi.ValueMPXSConns] != "0" || v[fcgi.ValueMaxConns] == "" {
		t.Errorf("GET_VALUES_RESULT = %v, want FCGI_MPXS_CONNS=0 and a FCGI_MAX_CONNS", v)
	}
	if _, ok := v["UNKNOWN"]; ok {
		t.Errorf("unknown variable answered: %v", v)
	}
	// Unasked, it says that it is fcgiscope, where it relays and its limits.
	if v[fcgi.ValueRelayUpstream] != "unix:/nonexistent/php.sock" || v[fcgi.ValueRelayReadTimeout] != "0s" ||
		v[fcgi.ValueRelayQueueTimeout] != "0s" || v[fcgi.ValueRelayMaxHeaderBytes] != strconv.Itoa(DefaultMaxHeaderBytes) {
		t.Errorf("GET_VALUES_RESULT = %v, want fcgiscope's own variables", v)
	}
}

func TestSecondConcurrentRequestIsRefusedWithCantMPXConn(t *testing.T) {
	release := make(chan struct{})
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		<-release
		echoUpstream(t, conn)
	})
	addr := startProxy(t, &Server{Upstream: up})
	conn, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w := fcgi.NewWriter(conn)
	for _, id := range []uint16{1, 2} {
		w.WriteBeginRequest(id, fcgi.BeginRequest{Role: fcgi.RoleResponder, Flags: fcgi.FlagKeepConn})
		w.EndStream(fcgi.TypeParams, id)
		w.EndStream(fcgi.TypeStdin, id)
	}
	w.Flush()
	r := fcgi.NewReader(conn)
	h, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	end, _ := fcgi.ParseEndRequest(r.Content())
	if h.Type != fcgi.TypeEndRequest || h.RequestID != 2 || end.ProtocolStatus != fcgi.StatusCantMPXConn {
		t.Fatalf("first record = %s for %d (%v), want END_REQUEST CANT_MPX_CONN for request 2", h.Type, h.RequestID, end.ProtocolStatus)
	}
	close(release)
	for {
		h, err := r.Next()
		if err != nil {
			t.Fatalf("request 1 did not complete: %v", err)
		}
		if h.Type == fcgi.TypeEndRequest {
			if h.RequestID != 1 {
				t.Fatalf("END_REQUEST for %d, want 1", h.RequestID)
			}
			return
		}
	}
}

func TestUnreachableUpstreamIsAnsweredWithA502(t *testing.T) {
	obs := newTraces()
	dir := t.TempDir()
	missing := fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "php.sock")}
	addr := startProxy(t, &Server{Upstream: missing, Observer: obs})
	resp, err := fcgitest.Do(context.Background(), addr, newReq("REQUEST_URI", "/x.php"))
	if err != nil {
		t.Fatalf("want a complete replacement response, got %v", err)
	}
	if !bytes.HasPrefix(resp.Stdout, []byte("Status: 502")) {
		t.Errorf("stdout = %q, want a 502", resp.Stdout)
	}
	tr := obs.next(t)
	var de *outcome.DialError
	if !errors.As(tr.Err, &de) || !errors.Is(tr.Err, syscall.ENOENT) {
		t.Errorf("trace error = %v, want a DialError wrapping ENOENT", tr.Err)
	}
	if !tr.Replaced || tr.Status != 502 || tr.Phase() != outcome.PhaseConnect {
		t.Errorf("replaced %v status %d phase %s", tr.Replaced, tr.Status, tr.Phase())
	}
}

// dyingUpstream sends n bytes of response and then closes without
// END_REQUEST, as a killed php-fpm worker does.
func dyingUpstream(n int) upstreamFunc {
	return func(t testing.TB, conn net.Conn) {
		r := fcgi.NewReader(conn)
		w := fcgi.NewWriter(conn)
		id, _, _, err := fcgitest.ReadRequest(r)
		if err != nil {
			return
		}
		if n > 0 {
			w.WriteStream(fcgi.TypeStdout, id, append([]byte("Content-Type: text/html\r\n\r\n"), bytes.Repeat([]byte("x"), n)...))
		}
		w.Flush()
		if tc, ok := conn.(*net.UnixConn); ok {
			tc.Close()
		}
	}
}

func TestWorkerDeathInsideHoldBackIsReplaced(t *testing.T) {
	obs := newTraces()
	addr := startProxy(t, &Server{Upstream: fakeUpstream(t, dyingUpstream(1000)), Observer: obs, HoldBytes: 65536})
	resp, err := fcgitest.Do(context.Background(), addr, newReq())
	if err != nil {
		t.Fatalf("want a complete replacement response, got %v", err)
	}
	if !bytes.HasPrefix(resp.Stdout, []byte("Status: 502")) || bytes.Contains(resp.Stdout, []byte("xxxx")) {
		t.Errorf("stdout = %q, want only the replacement", resp.Stdout)
	}
	tr := obs.next(t)
	if !errors.Is(tr.Err, outcome.ErrNoEndRequest) || tr.Truncated || !tr.Replaced {
		t.Errorf("trace err %v truncated %v replaced %v", tr.Err, tr.Truncated, tr.Replaced)
	}
}

func TestWorkerDeathAfterForwardingBreaksOffTheResponse(t *testing.T) {
	for _, hold := range []int{0, 4096} {
		obs := newTraces()
		addr := startProxy(t, &Server{Upstream: fakeUpstream(t, dyingUpstream(100000)), Observer: obs, HoldBytes: hold})
		resp, err := fcgitest.Do(context.Background(), addr, newReq())
		if !errors.Is(err, outcome.ErrNoEndRequest) {
			t.Errorf("hold %d: client error = %v, want no END_REQUEST (a broken response)", hold, err)
		}
		if resp != nil && bytes.Contains(resp.Stdout, []byte("Status: 502")) {
			t.Errorf("hold %d: a replacement was appended to a started response", hold)
		}
		if !strings.Contains(string(resp.Stderr), "response is incomplete") {
			t.Errorf("hold %d: stderr %q does not tell the web server's log why", hold, resp.Stderr)
		}
		tr := obs.next(t)
		if !tr.Truncated || tr.BytesOut == 0 || tr.Replaced {
			t.Errorf("hold %d: truncated %v bytes out %d replaced %v", hold, tr.Truncated, tr.BytesOut, tr.Replaced)
		}
	}
}

func TestClientAbortClosesTheUpstreamConnection(t *testing.T) {
	obs := newTraces()
	upClosed := make(chan struct{})
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		r := fcgi.NewReader(conn)
		fcgitest.ReadRequest(r)
		// Wait for the relay to close its side.
		io.Copy(io.Discard, conn)
		close(upClosed)
	})
	addr := startProxy(t, &Server{Upstream: up, Observer: obs})
	conn, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	w := fcgi.NewWriter(conn)
	w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder})
	w.EndStream(fcgi.TypeParams, 1)
	w.EndStream(fcgi.TypeStdin, 1)
	w.Flush()
	time.Sleep(50 * time.Millisecond)
	conn.Close()
	select {
	case <-upClosed:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream connection stayed open after the web server went away")
	}
	tr := obs.next(t)
	if !errors.Is(tr.Err, outcome.ErrClientAborted) {
		t.Errorf("trace error = %v, want outcome.ErrClientAborted", tr.Err)
	}
}

func TestReadTimeoutFailsASilentUpstream(t *testing.T) {
	obs := newTraces()
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		fcgitest.ReadRequest(fcgi.NewReader(conn))
		io.Copy(io.Discard, conn)
	})
	addr := startProxy(t, &Server{Upstream: up, Observer: obs, ReadTimeout: 100 * time.Millisecond})
	resp, err := fcgitest.Do(context.Background(), addr, newReq())
	if err != nil || !bytes.HasPrefix(resp.Stdout, []byte("Status: ")) {
		t.Fatalf("want a replacement, got %v", err)
	}
	var rte *outcome.ReadTimeoutError
	if tr := obs.next(t); !errors.As(tr.Err, &rte) || rte.Timeout != 100*time.Millisecond {
		t.Errorf("trace error = %v, want a ReadTimeoutError of 100ms", tr.Err)
	}
}

func TestShutdownLetsARequestInFlightFinish(t *testing.T) {
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		time.Sleep(300 * time.Millisecond)
		echoUpstream(t, conn)
	})
	srv := &Server{Upstream: up}
	addr := startProxy(t, srv)
	result := make(chan error, 1)
	go func() {
		req := newReq("ECHO", "late")
		_, err := fcgitest.Do(context.Background(), addr, req)
		result <- err
	}()
	time.Sleep(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-result; err != nil {
		t.Errorf("the request in flight failed during shutdown: %v", err)
	}
	if _, err := net.Dial(addr.Network, addr.Address); err == nil {
		t.Error("the listener still accepts after Shutdown")
	}
}

// A request still running when the shutdown's time is up is cut off, and
// handed to the Observer as such before Shutdown returns: the process
// exits right after, and the request must not vanish from the log.
func TestARequestCutOffAtTheShutdownTimeoutIsRecorded(t *testing.T) {
	release := make(chan struct{})
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		<-release
		conn.Close()
	})
	defer close(release)
	obs := newTraces()
	// Explaining a failure may wait for php-fpm's word on it.
	slow := observerFunc(func(t *outcome.Trace) {
		time.Sleep(300 * time.Millisecond)
		obs.Observe(t)
	})
	srv := &Server{Upstream: up, Observer: slow}
	addr := startProxy(t, srv)
	go fcgitest.Do(context.Background(), addr, newReq("ECHO", "stuck"))
	deadline := time.Now().Add(5 * time.Second)
	for srv.InFlight() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	select {
	case <-obs.ch:
		obs.mu.Lock()
		tr := obs.list[len(obs.list)-1]
		obs.mu.Unlock()
		if !errors.Is(tr.Err, outcome.ErrShutdown) {
			t.Errorf("the request was recorded with %v, want it cut off by the shutdown", tr.Err)
		}
	default:
		t.Error("Shutdown returned before the request it cut off was recorded")
	}
}

func TestListenReplacesAStaleSocketAndRefusesALiveOne(t *testing.T) {
	dir, _ := os.MkdirTemp("", "fsl")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s.sock")
	addr := fcgi.Addr{Network: "unix", Address: path}

	// A socket file nobody accepts on, as a SIGKILLed process leaves.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	ln, err := Listen(addr, 0o640)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("mode = %v, want 0640", fi.Mode().Perm())
	}
	if _, err := Listen(addr, 0o640); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("Listen over a live socket: %v, want a refusal", err)
	}
	ln.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file left after Close: %v", err)
	}
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := Listen(addr, 0o640); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
}

func TestIdleAndSlowClientsAreCutOff(t *testing.T) {
	srv := &Server{Upstream: fakeUpstream(t, echoUpstream), IdleTimeout: 100 * time.Millisecond, ParamsTimeout: 100 * time.Millisecond}
	addr := startProxy(t, srv)

	// A connection that never starts a request is closed.
	idle, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle connection: read %v, want EOF from the relay", err)
	}

	// A request head that never ends is cut off too.
	slow, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	w := fcgi.NewWriter(slow)
	w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder})
	w.WriteRecord(fcgi.TypeParams, 1, fcgi.AppendPair(nil, "A", "b"))
	w.Flush()
	slow.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(slow); err != nil {
		t.Errorf("slow connection: %v, want a close", err)
	}

	// A kept-alive connection that is used is not cut off between
	// requests that come in time.
	obs := newTraces()
	srv2 := &Server{Upstream: fakeUpstream(t, echoUpstream), IdleTimeout: 300 * time.Millisecond, Observer: obs}
	addr2 := startProxy(t, srv2)
	conn, err := net.Dial(addr2.Network, addr2.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kc := newKeptClient(conn)
	for range 3 {
		if _, err := kc.roundTrip("", "ECHO", "x"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestOversizedCGIHeadersFailWhileNothingWasSent(t *testing.T) {
	obs := newTraces()
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		r := fcgi.NewReader(conn)
		id, _, _, err := fcgitest.ReadRequest(r)
		if err != nil {
			return
		}
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, id, []byte("X-Big: "+strings.Repeat("a", 5000)+"\r\n\r\nbody"))
		w.EndStream(fcgi.TypeStdout, id)
		w.WriteEndRequest(id, fcgi.EndRequest{})
		w.Flush()
	})
	addr := startProxy(t, &Server{Upstream: up, Observer: obs, HoldBytes: 65536, MaxHeaderBytes: 4096})
	resp, err := fcgitest.Do(context.Background(), addr, newReq())
	if err != nil || !bytes.HasPrefix(resp.Stdout, []byte("Status: 502")) {
		t.Fatalf("want a replacement 502, got %v %q", err, resp.Stdout)
	}
	var he *outcome.HeadTooLongError
	if tr := obs.next(t); !errors.As(tr.Err, &he) || he.Limit != 4096 {
		t.Errorf("trace error %v", tr.Err)
	}
}

func TestClientConnectionLimitMakesNewConnectionsWait(t *testing.T) {
	srv := &Server{Upstream: fakeUpstream(t, echoUpstream), MaxClientConns: 1}
	addr := startProxy(t, srv)
	first, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := fcgitest.Do(context.Background(), addr, newReq("ECHO", "second"))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("second connection served while the first was open: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	first.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second connection never served after the first closed")
	}
}

// A kept-alive connection whose last response ended while the relay was
// already waiting for the next request still closes after the idle timeout.
func TestIdleTimeoutAppliesAfterASlowKeptAliveResponse(t *testing.T) {
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		time.Sleep(150 * time.Millisecond) // the relay reads on meanwhile
		echoUpstream(t, conn)
	})
	addr := startProxy(t, &Server{Upstream: up, IdleTimeout: 100 * time.Millisecond})
	conn, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := newKeptClient(conn).roundTrip("", "ECHO", "x"); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after the idle timeout: read %v, want EOF from the relay", err)
	}
}

// observerFunc is an Observer made of a function.
type observerFunc func(*outcome.Trace)

func (f observerFunc) Observe(t *outcome.Trace) { f(t) }

// A request whose body ends after its response is finished by the
// connection goroutine; explaining it must not hold up the next request on
// the connection, and Shutdown must not return before it is recorded.
func TestObserverRunsOffTheConnectionAndShutdownWaitsForIt(t *testing.T) {
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		// Answer as soon as the head is in, as php-fpm does for a
		// missing script, without reading the body.
		r := fcgi.NewReader(conn)
		for {
			h, err := r.Next()
			if err != nil {
				return
			}
			if h.Type == fcgi.TypeParams && h.ContentLength == 0 {
				break
			}
		}
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, 1, []byte("Status: 404 Not Found\r\n\r\nFile not found.\n"))
		w.EndStream(fcgi.TypeStdout, 1)
		w.WriteEndRequest(1, fcgi.EndRequest{})
		w.Flush()
	})
	release := make(chan struct{})
	var mu sync.Mutex
	observed := 0
	srv := &Server{Upstream: up, Observer: observerFunc(func(*outcome.Trace) {
		<-release // an explanation that waits for php-fpm's log
		mu.Lock()
		observed++
		mu.Unlock()
	})}
	addr := startProxy(t, srv)
	conn, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	w, r := fcgi.NewWriter(conn), fcgi.NewReader(conn)
	send := func(body bool) {
		w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder, Flags: fcgi.FlagKeepConn})
		w.WriteStream(fcgi.TypeParams, 1, fcgi.AppendPair(nil, "CONTENT_LENGTH", "4"))
		w.EndStream(fcgi.TypeParams, 1)
		if body {
			w.WriteStream(fcgi.TypeStdin, 1, []byte("body"))
			w.EndStream(fcgi.TypeStdin, 1)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	waitEnd := func() {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			h, err := r.Next()
			if err != nil {
				t.Fatalf("waiting for END_REQUEST: %v (is the connection held up by the Observer?)", err)
			}
			if h.Type == fcgi.TypeEndRequest {
				return
			}
		}
	}
	send(false)
	waitEnd()
	// The body's end comes after the response: the connection goroutine
	// finishes the request, and its Observer blocks.
	w.WriteStream(fcgi.TypeStdin, 1, []byte("body"))
	w.EndStream(fcgi.TypeStdin, 1)
	w.Flush()
	send(true)
	waitEnd()

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn.Close()
		shut <- srv.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned (%v) while an Observer still ran", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if observed != 2 {
		t.Errorf("%d requests recorded when Shutdown returned, want 2", observed)
	}
}

// A header line nginx would refuse with a bare 502 is answered with an
// explanation that quotes it, whether the start of the response is held
// back or not; the response's own first bytes never reach nginx.
func TestHeaderLineNginxRefusesIsExplained(t *testing.T) {
	for _, hold := range []int{0, 65536} {
		obs := newTraces()
		up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
			id, _, _, err := fcgitest.ReadRequest(fcgi.NewReader(conn))
			if err != nil {
				return
			}
			w := fcgi.NewWriter(conn)
			w.WriteStream(fcgi.TypeStdout, id, []byte("Debug output here\r\nContent-Type: text/html\r\n\r\nbody"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
			w.Flush()
		})
		addr := startProxy(t, &Server{Upstream: up, Observer: obs, HoldBytes: hold})
		resp, err := fcgitest.Do(context.Background(), addr, newReq())
		if err != nil || !bytes.HasPrefix(resp.Stdout, []byte("Status: 502")) || bytes.Contains(resp.Stdout, []byte("text/html")) {
			t.Fatalf("hold %d: want a replacement 502, got %v %q", hold, err, resp.Stdout)
		}
		var ie *outcome.InvalidHeaderError
		if tr := obs.next(t); !errors.As(tr.Err, &ie) || ie.Line != "Debug output here" || !tr.Replaced {
			t.Errorf("hold %d: trace error %v, replaced %v", hold, tr.Err, tr.Replaced)
		}
	}
}

// A response head larger than the web server's known buffer is replaced by
// an explanation, counted as the web server counts it (the record header
// included); one that fits is untouched, even when fcgiscope's own
// Server-Timing header is what would not fit (that header goes instead).
func TestHeadLargerThanTheWebServerBufferIsExplained(t *testing.T) {
	head := "Content-Type: text/html\r\nX-Big: " + strings.Repeat("a", 3000) + "\r\n\r\n"
	size := fcgi.HeaderLen + len(head)
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		id, _, _, err := fcgitest.ReadRequest(fcgi.NewReader(conn))
		if err != nil {
			return
		}
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, id, []byte(head+"body"))
		w.EndStream(fcgi.TypeStdout, id)
		w.WriteEndRequest(id, fcgi.EndRequest{})
		w.Flush()
	})
	for _, tc := range []struct {
		name         string
		limit, hold  int
		known        bool
		serverTiming bool
		refused      bool
	}{
		{"fits exactly", size, 65536, true, false, false},
		{"one byte over", size - 1, 65536, true, false, true},
		{"fits without fcgiscope's Server-Timing", size, 65536, true, true, false},
		{"over, but the limit is only assumed", size - 1, 65536, false, false, false},
		{"over, with no hold-back (the head is held all the same)", size - 1, 0, true, false, true},
	} {
		obs := newTraces()
		srv := &Server{Upstream: up, Observer: obs, HoldBytes: tc.hold, ServerTiming: tc.serverTiming,
			WebServerHeadLimits: func() (int, int) {
				if tc.known {
					return tc.limit, tc.limit
				}
				return tc.limit, 0
			}}
		addr := startProxy(t, srv)
		resp, err := fcgitest.Do(context.Background(), addr, newReq())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		tr := obs.next(t)
		var big *outcome.HeadTooBigError
		if tc.refused {
			if !bytes.HasPrefix(resp.Stdout, []byte("Status: 502")) || !errors.As(tr.Err, &big) || big.Bytes != size || !big.Whole || big.Limit != tc.limit {
				t.Errorf("%s: want a replacement 502 for a %d-byte head, got %q, trace error %v", tc.name, size, resp.Stdout, tr.Err)
			}
			continue
		}
		if !bytes.HasSuffix(resp.Stdout, []byte(head+"body")) || tr.Err != nil {
			t.Errorf("%s: response changed: %.80q, trace error %v", tc.name, resp.Stdout, tr.Err)
		}
		if tc.serverTiming && bytes.Contains(resp.Stdout, []byte("Server-Timing")) {
			t.Errorf("%s: fcgiscope's Server-Timing header made the head larger than the web server takes", tc.name)
		}
		if tc.hold > 0 && tr.HeadBytes != size {
			t.Errorf("%s: HeadBytes %d, want %d", tc.name, tr.HeadBytes, size)
		}
	}
}

// When the web server's buffer is only assumed, a head larger than it is
// passed on; a web server that then drops the connection with the response
// unread (nginx refusing the head) ends the request with HeadTooBigError,
// one that reads it all leaves it a success. The drop comes while the relay
// still writes (a large body) or after it wrote everything (a small one).
func TestHeadOverAnAssumedBufferIsJudgedByWhatTheWebServerDoes(t *testing.T) {
	head := "Content-Type: text/html\r\nX-Big: " + strings.Repeat("a", 6000) + "\r\n\r\n"
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		_, params, _, err := fcgitest.ReadRequest(fcgi.NewReader(conn))
		if err != nil {
			return
		}
		n, _ := strconv.Atoi(params["BODY"])
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, 1, []byte(head+strings.Repeat("b", n)))
		w.EndStream(fcgi.TypeStdout, 1)
		w.WriteEndRequest(1, fcgi.EndRequest{})
		w.Flush()
	})
	for _, tc := range []struct {
		network string
		body    int
		drop    bool
	}{
		{"unix", 10, true}, {"unix", 256 << 10, true}, {"unix", 10, false}, {"unix", 256 << 10, false},
		{"tcp", 10, true}, {"tcp", 256 << 10, true}, {"tcp", 10, false}, {"tcp", 256 << 10, false},
	} {
		network, drop := tc.network, tc.drop
		{
			obs := newTraces()
			srv := &Server{Upstream: up, Observer: obs, WebServerHeadLimits: func() (int, int) { return 4096, 0 }}
			var ln net.Listener
			var err error
			if network == "tcp" {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
			} else {
				ln, err = Listen(fcgi.Addr{Network: "unix", Address: filepath.Join(t.TempDir(), "down.sock")}, 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			conn, err := net.Dial(network, ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			w := fcgi.NewWriter(conn)
			w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder})
			w.WriteStream(fcgi.TypeParams, 1, fcgi.AppendPair(fcgi.AppendPair(nil, "REQUEST_METHOD", "GET"), "BODY", strconv.Itoa(tc.body)))
			w.EndStream(fcgi.TypeParams, 1)
			w.EndStream(fcgi.TypeStdin, 1)
			w.Flush()
			if drop {
				// As nginx does: read what fits the buffer, then close.
				io.ReadFull(conn, make([]byte, 4096))
			} else {
				io.Copy(io.Discard, conn)
			}
			conn.Close()
			tr := obs.next(t)
			var big *outcome.HeadTooBigError
			switch {
			case drop && (!errors.As(tr.Err, &big) || !errors.Is(tr.Err, outcome.ErrClientAborted) || big.Bytes < len(head)):
				t.Errorf("%+v: trace error %v, want a HeadTooBigError", tc, tr.Err)
			case !drop && tr.Err != nil:
				t.Errorf("%+v: trace error %v, want none", tc, tr.Err)
			}
			srv.Close()
		}
	}
}

// A connection attempt that times out (php-fpm's TCP listen queue full) is
// tried again while the web server still waits, as nginx itself would wait
// for its fastcgi_connect_timeout; without the web server's patience known,
// FCGISCOPE_CONNECT_TIMEOUT bounds it.
func TestConnectTimeoutIsRetriedWhileTheWebServerWaits(t *testing.T) {
	up := fakeUpstream(t, echoUpstream)
	for _, patient := range []bool{true, false} {
		var attempts sync.Map
		stalls := 2
		srv := &Server{Upstream: up, Observer: newTraces(), ConnectTimeout: 100 * time.Millisecond, QueueTimeout: 5 * time.Second,
			Dial: func(ctx context.Context, a fcgi.Addr) (net.Conn, error) {
				n, _ := attempts.LoadOrStore("n", new(int))
				if *n.(*int)++; *n.(*int) <= stalls {
					<-ctx.Done() // a SYN nobody answers
					return nil, ctx.Err()
				}
				var d net.Dialer
				return d.DialContext(ctx, a.Network, a.Address)
			}}
		if patient {
			srv.Patience = func() time.Duration { return 5 * time.Second }
		}
		addr := startProxy(t, srv)
		resp, err := fcgitest.Do(context.Background(), addr, newReq("ECHO", "x"))
		switch {
		case patient && (err != nil || !bytes.Contains(resp.Stdout, []byte("201 Created"))):
			t.Errorf("with the web server's patience known: %v %q, want the request served after the stalled attempts", err, resp.Stdout)
		case !patient && (err != nil || !bytes.HasPrefix(resp.Stdout, []byte("Status: 502"))):
			t.Errorf("without it: %v %q, want the failure explained after one attempt", err, resp.Stdout)
		}
		if n, _ := attempts.Load("n"); !patient && *n.(*int) != 1 {
			t.Errorf("without the web server's patience known: %d attempts, want 1", *n.(*int))
		}
	}
}

// lateListener hands on the connection it accepted only once released: a
// connection that the kernel accepted just as Shutdown began.
type lateListener struct {
	net.Listener
	accepted, release chan struct{}
}

func (l *lateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		close(l.accepted)
		<-l.release
	}
	return c, err
}

// A connection accepted as Shutdown begins carries a request the web
// server has already sent: it is served, not closed unread (which nginx
// reports as a 502).
func TestShutdownServesAConnectionAcceptedAsItBegins(t *testing.T) {
	srv := &Server{Upstream: fakeUpstream(t, echoUpstream)}
	dir := t.TempDir()
	addr := fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "down.sock")}
	inner, err := Listen(addr, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	ln := &lateListener{Listener: inner, accepted: make(chan struct{}), release: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	result := make(chan error, 1)
	go func() {
		resp, err := fcgitest.Do(context.Background(), addr, newReq("ECHO", "just in time"))
		if err == nil && !strings.Contains(string(resp.Stdout), "just in time") {
			err = errors.New("wrong response: " + string(resp.Stdout))
		}
		result <- err
	}()
	<-ln.accepted
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	for !srv.closing.Load() {
		time.Sleep(time.Millisecond)
	}
	close(ln.release)
	if err := <-result; err != nil {
		t.Errorf("the request on the connection accepted as Shutdown began failed: %v", err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve returned %v", err)
	}
}

// Connections that never begin a request cannot lock the web server out
// for the idle timeout: they get the params timeout to send their first
// request, and the places they held go to a real request.
func TestIdleNeverStartedConnectionsDoNotLockTheWebServerOut(t *testing.T) {
	srv := &Server{Upstream: fakeUpstream(t, echoUpstream), MaxClientConns: 3,
		IdleTimeout: time.Minute, ParamsTimeout: 300 * time.Millisecond}
	addr := startProxy(t, srv)
	for range 3 {
		c, err := net.Dial(addr.Network, addr.Address)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := fcgitest.Do(ctx, addr, newReq("ECHO", "let in"))
	if err != nil {
		t.Fatalf("a real request behind idle connections: %v", err)
	}
	if !strings.Contains(string(resp.Stdout), "let in") {
		t.Errorf("response %q", resp.Stdout)
	}
}

// A client that half-closes after its whole request still reads: it gets
// the response php-fpm would have sent it, END_REQUEST included. A client
// that closes altogether is gone (TestClientAbortClosesTheUpstreamConnection).
func TestHalfCloseAfterTheRequestStillGetsTheResponse(t *testing.T) {
	obs := newTraces()
	up := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		time.Sleep(100 * time.Millisecond) // answers after the half-close
		echoUpstream(t, conn)
	})
	addr := startProxy(t, &Server{Upstream: up, Observer: obs})
	conn := sendEcho(t, addr, "still reading")
	defer conn.Close()
	if err := conn.(*net.UnixConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := fcgi.NewReader(conn)
	var stdout []byte
	for {
		h, err := r.Next()
		if err != nil {
			t.Fatalf("no END_REQUEST after a half-close: %v (stdout %q)", err, stdout)
		}
		if h.Type == fcgi.TypeStdout {
			stdout = append(stdout, r.Content()...)
		}
		if h.Type == fcgi.TypeEndRequest {
			break
		}
	}
	if !strings.Contains(string(stdout), "still reading") {
		t.Errorf("response %q", stdout)
	}
	if tr := obs.next(t); tr.Err != nil {
		t.Errorf("the request is recorded as failed: %v", tr.Err)
	}
}

// startTCPProxy runs a Server on a loopback TCP port and returns its
// address.
func startTCPProxy(t *testing.T, srv *Server) fcgi.Addr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return fcgi.Addr{Network: "tcp", Address: ln.Addr().String()}
}

// Over TCP a half-close and a close send the same FIN: fcgiscope goes on
// as php-fpm would, and the end of the response tells which it was. A
// client that half-closed gets its answer; one that closed is recorded as
// gone from the moment it closed.
func TestTCPHalfCloseAndCloseAreToldApartByTheAnswer(t *testing.T) {
	slowEcho := func(t testing.TB, conn net.Conn) {
		time.Sleep(300 * time.Millisecond) // answers after the client's FIN
		echoUpstream(t, conn)
	}
	t.Run("half-close", func(t *testing.T) {
		obs := newTraces()
		addr := startTCPProxy(t, &Server{Upstream: fakeUpstream(t, slowEcho), Observer: obs})
		conn := sendEcho(t, addr, "over tcp").(*net.TCPConn)
		defer conn.Close()
		conn.CloseWrite()
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(conn)
		if !strings.Contains(string(b), "over tcp") {
			t.Errorf("no answer after a half-close: %q", b)
		}
		if tr := obs.next(t); tr.Err != nil {
			t.Errorf("recorded as failed: %v", tr.Err)
		}
	})
	t.Run("close", func(t *testing.T) {
		obs := newTraces()
		addr := startTCPProxy(t, &Server{Upstream: fakeUpstream(t, slowEcho), Observer: obs})
		conn := sendEcho(t, addr, "over tcp")
		time.Sleep(50 * time.Millisecond)
		closed := time.Now()
		conn.Close()
		tr := obs.next(t)
		if !errors.Is(tr.Err, outcome.ErrClientAborted) {
			t.Errorf("a client that closed is recorded with %v, want ErrClientAborted", tr.Err)
		}
		if d := tr.End.Sub(closed); d < -50*time.Millisecond || d > 100*time.Millisecond {
			t.Errorf("recorded as gone %s after it closed, want about when it closed", d)
		}
	})
}

// sendEcho sends a whole request for echoUpstream with the ECHO param and
// an empty body, and returns the connection to read the answer from.
func sendEcho(t *testing.T, addr fcgi.Addr, echo string) net.Conn {
	t.Helper()
	conn, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	w := fcgi.NewWriter(conn)
	w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder})
	w.WriteStream(fcgi.TypeParams, 1, fcgi.AppendPair(nil, "ECHO", echo))
	w.EndStream(fcgi.TypeParams, 1)
	w.EndStream(fcgi.TypeStdin, 1)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return conn
}
