package hostprobe

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	gofcgi "net/http/fcgi"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// fakeServer serves handle on every connection accepted by ln until the test
// ends, then closes the listener and waits for the handlers.
func fakeServer(t *testing.T, ln net.Listener, handle func(net.Conn)) fcgi.Addr {
	t.Helper()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				handle(conn)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return addrOf(ln)
}

func addrOf(ln net.Listener) fcgi.Addr {
	return fcgi.Addr{Network: ln.Addr().Network(), Address: ln.Addr().String()}
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func listenUnix(t *testing.T, dir, name string) net.Listener {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveFastCGI is a small FastCGI application. It answers GET_VALUES with
// values (or, when values is nil, with UNKNOWN_TYPE, or closes when
// closeOnMgmt), and a request with a page; ignoreMgmt makes it skip
// management records silently.
type serveFastCGI struct {
	values      map[string]string
	unknownType bool
	closeOnMgmt bool
	ignoreMgmt  bool
}

func (s serveFastCGI) handle(conn net.Conn) {
	r := fcgi.NewReader(conn)
	w := fcgi.NewWriter(conn)
	for {
		h, err := r.Next()
		if err != nil {
			return
		}
		switch h.Type {
		case fcgi.TypeGetValues:
			switch {
			case s.closeOnMgmt:
				return
			case s.ignoreMgmt:
				continue
			case s.unknownType:
				w.WriteRecord(fcgi.TypeUnknownType, 0, []byte{byte(fcgi.TypeGetValues), 0, 0, 0, 0, 0, 0, 0})
			default:
				var body []byte
				for _, k := range slices.Sorted(maps.Keys(s.values)) {
					body = fcgi.AppendPair(body, k, s.values[k])
				}
				w.WriteRecord(fcgi.TypeGetValuesResult, 0, body)
			}
			w.Flush()
		case fcgi.TypeStdin:
			if h.ContentLength == 0 {
				w.WriteStream(fcgi.TypeStdout, h.RequestID, []byte("Status: 404 Not Found\r\n\r\nFile not found.\n"))
				w.EndStream(fcgi.TypeStdout, h.RequestID)
				w.WriteEndRequest(h.RequestID, fcgi.EndRequest{})
				w.Flush()
				return
			}
		}
	}
}

// writeThenClose answers every connection with b and closes it.
func writeThenClose(b string) func(net.Conn) {
	return func(conn net.Conn) {
		conn.Write([]byte(b))
	}
}

// readThenWrite reads the probe, answers with b and closes.
func readThenWrite(b string) func(net.Conn) {
	return func(conn net.Conn) {
		buf := make([]byte, 512)
		conn.Read(buf)
		conn.Write([]byte(b))
	}
}

func TestProbeFakeServers(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	mpxs := map[string]string{fcgi.ValueMaxConns: "10", fcgi.ValueMaxReqs: "50", fcgi.ValueMPXSConns: "0"}
	getValuesUnix := listenUnix(t, dir, "gv.sock")

	tests := []struct {
		name       string
		ln         net.Listener
		handle     func(net.Conn)
		wantValues map[string]string // nil: not a responder
		wantErr    func(error) bool
	}{
		{"GET_VALUES_RESULT tcp", listenTCP(t), serveFastCGI{values: mpxs}.handle, mpxs, nil},
		{"GET_VALUES_RESULT unix", getValuesUnix, serveFastCGI{values: mpxs}.handle, mpxs, nil},
		{"empty GET_VALUES_RESULT", listenTCP(t), serveFastCGI{values: map[string]string{}}.handle, map[string]string{}, nil},
		{"UNKNOWN_TYPE", listenTCP(t), serveFastCGI{unknownType: true}.handle, map[string]string{}, nil},
		{"closes on GET_VALUES, answers a request", listenTCP(t), serveFastCGI{closeOnMgmt: true}.handle, map[string]string{}, nil},
		{"ignores GET_VALUES, answers a request", listenTCP(t), serveFastCGI{ignoreMgmt: true}.handle, map[string]string{}, nil},
		{"ssh banner", listenTCP(t), writeThenClose("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"), nil, isVersionError(false)},
		{"http answer", listenTCP(t), readThenWrite("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), nil, isVersionError(true)},
		{"echo", listenTCP(t), func(c net.Conn) { io.Copy(c, c) }, nil, isNotFastCGI},
		{"truncated record", listenTCP(t), readThenWrite("\x01\x0a\x00\x00\x00\x10\x00"), nil, isNotFastCGI},
		{"malformed pairs", listenTCP(t), readThenWrite("\x01\x0a\x00\x00\x00\x08\x00\x00\x0e\x02FCGI_M"), nil, isNotFastCGI},
		{"wrong request id", listenTCP(t), readThenWrite("\x01\x0a\x00\x07\x00\x00\x00\x00"), nil, isNotFastCGI},
		{"UNKNOWN_TYPE for another type", listenTCP(t), readThenWrite("\x01\x0b\x00\x00\x00\x08\x00\x00\x05\x00\x00\x00\x00\x00\x00\x00"), nil, isNotFastCGI},
		{"accepts and closes", listenTCP(t), func(net.Conn) {}, nil, isNoAnswer},
		{"reads and closes", listenTCP(t), readThenWrite(""), nil, isNoAnswer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fakeServer(t, tt.ln, tt.handle)
			start := time.Now()
			r, err := Options{Timeout: 2 * time.Second}.Probe(context.Background(), addr)
			elapsed := time.Since(start)
			if tt.wantValues == nil {
				if err == nil {
					t.Fatalf("Probe(%s) = %+v, want an error", addr, r)
				}
				if !tt.wantErr(err) {
					t.Errorf("Probe(%s) error %v is not the kind expected", addr, err)
				}
				if elapsed > time.Second {
					t.Errorf("Probe took %v to refuse a peer that answered at once", elapsed)
				}
				return
			}
			if err != nil {
				t.Fatalf("Probe(%s): %v", addr, err)
			}
			if r.Addr != addr || !maps.Equal(r.Values, tt.wantValues) || r.Values == nil {
				t.Errorf("Probe(%s) = %+v, want values %v", addr, r, tt.wantValues)
			}
			if r.Latency <= 0 || r.Latency > elapsed {
				t.Errorf("Latency %v, probe took %v", r.Latency, elapsed)
			}
			if addr.Network == "unix" {
				if r.Mode.Perm() == 0 || r.Owner == "" || r.Group == "" {
					t.Errorf("unix responder without owner, group or mode: %+v", r)
				}
			} else if r.Owner != "" || r.Group != "" || r.Mode != 0 {
				t.Errorf("tcp responder with owner, group or mode: %+v", r)
			}
		})
	}
}

func isVersionError(http bool) func(error) bool {
	return func(err error) bool {
		var ve *fcgi.VersionError
		return isNotFastCGI(err) && errors.As(err, &ve) && ve.LooksLikeHTTP() == http
	}
}

func isNotFastCGI(err error) bool {
	var nf *NotFastCGIError
	return errors.As(err, &nf)
}

func isNoAnswer(err error) bool { return errors.Is(err, ErrNoAnswer) }

// TestProbeGoFastCGI probes the other FastCGI implementation at hand, Go's
// net/http/fcgi, which answers GET_VALUES with FCGI_MPXS_CONNS=1.
func TestProbeGoFastCGI(t *testing.T) {
	ln := listenUnix(t, testbed.ShortTempDir(t), "go.sock")
	done := make(chan struct{})
	go func() {
		defer close(done)
		gofcgi.Serve(ln, http.NotFoundHandler())
	}()
	t.Cleanup(func() { ln.Close(); <-done })

	r, err := Probe(t, addrOf(ln))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{fcgi.ValueMPXSConns: "1"}; !maps.Equal(r.Values, want) {
		t.Errorf("Values = %v, want %v", r.Values, want)
	}
}

// Probe probes a with the default options.
func Probe(t *testing.T, a fcgi.Addr) (Responder, error) {
	t.Helper()
	return Options{}.Probe(context.Background(), a)
}

func TestProbeSilentTimesOut(t *testing.T) {
	// Listening without accepting: the kernel completes the connection
	// and nobody ever answers.
	silent := addrOf(listenTCP(t))
	for _, timeout := range []time.Duration{0, 100 * time.Millisecond} {
		want := timeout
		if want == 0 {
			want = DefaultTimeout
		}
		start := time.Now()
		_, err := Options{Timeout: timeout}.Probe(context.Background(), silent)
		elapsed := time.Since(start)
		if !errors.Is(err, ErrNoAnswer) {
			t.Errorf("Probe(silent) error = %v, want ErrNoAnswer", err)
		}
		if elapsed < want-10*time.Millisecond || elapsed > want+200*time.Millisecond {
			t.Errorf("Probe(silent) with timeout %v took %v", want, elapsed)
		}
	}
}

func TestProbeRefused(t *testing.T) {
	port := testbed.FreePort(t)
	_, err := Probe(t, fcgi.Addr{Network: "tcp", Address: "127.0.0.1:" + strconv.Itoa(port)})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("Probe(closed port) = %v, want ECONNREFUSED", err)
	}
	_, err = Probe(t, fcgi.Addr{Network: "unix", Address: filepath.Join(testbed.ShortTempDir(t), "none.sock")})
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Probe(missing socket) = %v, want ENOENT", err)
	}
}

// goroutinesSettle fails the test unless the number of goroutines comes
// back to base within a few seconds.
func goroutinesSettle(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFindFastCGIFakes(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	resp1 := fakeServer(t, listenTCP(t), serveFastCGI{values: map[string]string{fcgi.ValueMPXSConns: "0"}}.handle)
	resp2 := fakeServer(t, listenUnix(t, dir, "b.sock"), serveFastCGI{unknownType: true}.handle)
	resp3 := fakeServer(t, listenTCP(t), serveFastCGI{closeOnMgmt: true}.handle)
	httpSrv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(httpSrv.Close)
	httpAddr := fcgi.Addr{Network: "tcp", Address: httpSrv.Listener.Addr().String()}
	silent := addrOf(listenTCP(t))
	silentUnix := addrOf(listenUnix(t, dir, "silent.sock"))
	refused := fcgi.Addr{Network: "tcp", Address: "127.0.0.1:" + strconv.Itoa(testbed.FreePort(t))}

	base := runtime.NumGoroutine()
	cands := []fcgi.Addr{resp2, silentUnix, httpAddr, resp1, silent, refused, resp3, resp1}
	start := time.Now()
	got := FindFastCGI(context.Background(), cands)
	elapsed := time.Since(start)
	if want := []fcgi.Addr{resp2, resp1, resp3}; !slices.Equal(addrs(got), want) {
		t.Errorf("FindFastCGI = %v, want %v", addrs(got), want)
	}
	if elapsed > DefaultTimeout+300*time.Millisecond {
		t.Errorf("FindFastCGI took %v with a %v probe timeout", elapsed, DefaultTimeout)
	}
	goroutinesSettle(t, base)

	if got := FindFastCGI(context.Background(), cands, resp1, resp2); !slices.Equal(addrs(got), []fcgi.Addr{resp3}) {
		t.Errorf("FindFastCGI excluding %v and %v = %v, want only %v", resp1, resp2, addrs(got), resp3)
	}
	goroutinesSettle(t, base)
}

func addrs(rs []Responder) []fcgi.Addr {
	var out []fcgi.Addr
	for _, r := range rs {
		out = append(out, r.Addr)
	}
	return out
}

// TestFindFastCGICancel: with many silent candidates and a long probe
// timeout, ending ctx ends the scan at once, and the probes queued behind
// the concurrency limit are never started.
func TestFindFastCGICancel(t *testing.T) {
	var cands []fcgi.Addr
	for range 40 {
		cands = append(cands, addrOf(listenTCP(t)))
	}
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	got := Options{Timeout: 10 * time.Second, Concurrency: 4}.FindFastCGI(ctx, cands)
	elapsed := time.Since(start)
	if len(got) != 0 {
		t.Errorf("FindFastCGI found %v among silent listeners", got)
	}
	if elapsed > 650*time.Millisecond {
		t.Errorf("FindFastCGI returned %v after the context ended", elapsed-150*time.Millisecond)
	}
	goroutinesSettle(t, base)

	// An ended context starts nothing.
	got = FindFastCGI(ctx, cands)
	if len(got) != 0 {
		t.Errorf("FindFastCGI with an ended context = %v", got)
	}
	goroutinesSettle(t, base)
}

// TestFindFastCGIConcurrency: silent candidates are probed at most
// Concurrency at a time, so 6 of them with Concurrency 2 take 3 timeouts.
func TestFindFastCGIConcurrency(t *testing.T) {
	var cands []fcgi.Addr
	for range 6 {
		cands = append(cands, addrOf(listenTCP(t)))
	}
	const timeout = 100 * time.Millisecond
	start := time.Now()
	Options{Timeout: timeout, Concurrency: 2}.FindFastCGI(context.Background(), cands)
	if elapsed := time.Since(start); elapsed < 3*timeout-10*time.Millisecond || elapsed > 3*timeout+300*time.Millisecond {
		t.Errorf("6 silent probes, 2 at a time, %v each, took %v", timeout, elapsed)
	}
	start = time.Now()
	FindFastCGI(context.Background(), cands)
	if elapsed := time.Since(start); elapsed > DefaultTimeout+300*time.Millisecond {
		t.Errorf("6 silent probes, 16 at a time, took %v", elapsed)
	}
}

func TestSameEndpoint(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	sock := filepath.Join(dir, "fcgiscope.sock")
	listenUnix(t, dir, "fcgiscope.sock")
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	tcp := func(s string) fcgi.Addr { return fcgi.Addr{Network: "tcp", Address: s} }
	unix := func(s string) fcgi.Addr { return fcgi.Addr{Network: "unix", Address: s} }
	for _, tt := range []struct {
		cand, ex fcgi.Addr
		want     bool
	}{
		{tcp("127.0.0.1:9001"), tcp("127.0.0.1:9001"), true},
		{tcp("127.0.0.1:9001"), tcp("127.0.0.1:9000"), false},
		{tcp("127.0.0.1:9001"), tcp("0.0.0.0:9001"), true},
		{tcp("127.0.0.1:9001"), tcp(":9001"), true},
		{tcp("127.0.0.1:9001"), tcp("localhost:9001"), true},
		{tcp("[::1]:9001"), tcp("localhost:9001"), true},
		{tcp("[::1]:9001"), tcp("[::]:9001"), true},
		{tcp("127.0.0.1:9001"), tcp("[::]:9001"), true},
		{tcp("[::1]:9001"), tcp("0.0.0.0:9001"), false},
		{tcp("127.0.0.1:9001"), tcp("[::ffff:127.0.0.1]:9001"), true},
		{tcp("127.0.0.2:9001"), tcp("127.0.0.1:9001"), false},
		{tcp("127.0.0.1:9001"), tcp("10.0.0.5:9001"), false},
		{tcp("127.0.0.1:9001"), unix("/run/x.sock"), false},
		{unix(sock), unix(sock), true},
		{unix(sock), unix(dir + "//./fcgiscope.sock"), true},
		{unix(link), unix(sock), true},
		{unix(filepath.Join(dir, "other.sock")), unix(sock), false},
	} {
		if got := sameEndpoint(tt.cand, tt.ex); got != tt.want {
			t.Errorf("sameEndpoint(%v, %v) = %v, want %v", tt.cand, tt.ex, got, tt.want)
		}
	}
}

// TestProbeAsksOnlyMPXSConns guards the choice explained at probeNames: the
// GET_VALUES record names FCGI_MPXS_CONNS alone, and the fall-back request
// contains a newline byte.
func TestProbeAsksOnlyMPXSConns(t *testing.T) {
	asked := make(chan []fcgi.Pair, 1)
	addr := fakeServer(t, listenTCP(t), func(conn net.Conn) {
		r := fcgi.NewReader(conn)
		h, err := r.Next()
		if err != nil || h.Type != fcgi.TypeGetValues {
			asked <- nil
			return
		}
		pairs, _ := pairsOf(r.Content())
		asked <- pairs
		w := fcgi.NewWriter(conn)
		w.WriteRecord(fcgi.TypeGetValuesResult, 0, nil)
		w.Flush()
	})
	if _, err := Probe(t, addr); err != nil {
		t.Fatal(err)
	}
	if got, want := <-asked, []fcgi.Pair{{Name: fcgi.ValueMPXSConns}}; !slices.Equal(got, want) {
		t.Errorf("GET_VALUES asked for %v, want %v", got, want)
	}

	var req bytes.Buffer
	w := fcgi.NewWriter(&req)
	writeProbeRequest(w)
	w.Flush()
	if !bytes.Contains(req.Bytes()[:fcgi.HeaderLen], []byte("\n")) {
		t.Errorf("the fall-back request's first header %q has no newline", req.Bytes()[:fcgi.HeaderLen])
	}
}

// TestProbeLineReadingHTTPServer: Go's HTTP server reads a whole request
// line before it answers, and the GET_VALUES record has no newline; the
// fall-back request's newline makes it answer "HTTP/1.1 400".
func TestProbeLineReadingHTTPServer(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	start := time.Now()
	_, err := Probe(t, fcgi.Addr{Network: "tcp", Address: srv.Listener.Addr().String()})
	if !isVersionError(true)(err) {
		t.Errorf("Probe(Go HTTP server) = %v, want a NotFastCGIError with a VersionError that looks like HTTP", err)
	}
	if elapsed := time.Since(start); elapsed > DefaultTimeout {
		t.Errorf("Probe(Go HTTP server) took %v", elapsed)
	}
}

// pairsOf decodes the name-value pairs of a record.
func pairsOf(b []byte) ([]fcgi.Pair, error) {
	var pairs []fcgi.Pair
	err := fcgi.ForEachPair(b, func(name, value []byte) bool {
		pairs = append(pairs, fcgi.Pair{Name: string(name), Value: string(value)})
		return true
	})
	return pairs, err
}
