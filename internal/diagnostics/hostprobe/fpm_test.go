package hostprobe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

func fpmAddr(f *testbed.FPM) fcgi.Addr {
	return fcgi.Addr{Network: f.Network, Address: f.Address}
}

// TestFPMAnswersGetValues records what php-fpm does with GET_VALUES, which
// the package documentation relies on: asked for the three variables of the
// specification, it answers one GET_VALUES_RESULT for request id 0 holding
// FCGI_MPXS_CONNS=0 and neither FCGI_MAX_CONNS nor FCGI_MAX_REQS.
func TestFPMAnswersGetValues(t *testing.T) {
	f := testbed.StartFPM(t, testbed.FPMConfig{MaxChildren: 1})
	conn, err := net.Dial(f.Network, f.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	w := fcgi.NewWriter(conn)
	var body []byte
	for _, n := range []string{fcgi.ValueMaxConns, fcgi.ValueMaxReqs, fcgi.ValueMPXSConns} {
		body = fcgi.AppendPair(body, n, "")
	}
	w.WriteRecord(fcgi.TypeGetValues, 0, body)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := fcgi.NewReader(conn)
	h, err := r.Next()
	if err != nil {
		t.Fatalf("php-fpm did not answer GET_VALUES: %v", err)
	}
	if h.Type != fcgi.TypeGetValuesResult || h.RequestID != 0 {
		t.Fatalf("php-fpm answered GET_VALUES with %s for request %d", h.Type, h.RequestID)
	}
	pairs, err := pairsOf(r.Content())
	if err != nil {
		t.Fatal(err)
	}
	if want := []fcgi.Pair{{Name: fcgi.ValueMPXSConns, Value: "0"}}; !slices.Equal(pairs, want) {
		t.Errorf("php-fpm GET_VALUES_RESULT = %v, want %v", pairs, want)
	}
	t.Logf("php-fpm GET_VALUES_RESULT: %v", pairs)

	// php-fpm 8.2 keeps the connection afterwards, holding the pool's
	// only worker: this is why the probe closes at once. Logged, not
	// asserted, as it is php-fpm's business.
	conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.Next(); isTimeout(err) {
		_, perr := Options{Timeout: 200 * time.Millisecond}.Probe(context.Background(), fpmAddr(f))
		t.Logf("after GET_VALUES_RESULT php-fpm keeps the connection open; "+
			"meanwhile a probe of its 1-worker pool gets: %v", perr)
	} else {
		t.Logf("after GET_VALUES_RESULT php-fpm sent: %v", err)
	}
	conn.Close()
	if _, err := Probe(t, fpmAddr(f)); err != nil {
		t.Errorf("probe after the first connection closed: %v", err)
	}
}

// TestFPMProbeSideEffects checks what the package documentation says of
// the probes' traces in php-fpm: GET_VALUES leaves none; the fall-back
// request is answered 404 "Primary script unknown" and leaves one access log
// line and nothing in the error log.
func TestFPMProbeSideEffects(t *testing.T) {
	accessLog := filepath.Join(testbed.ShortTempDir(t), "access.log")
	f := testbed.StartFPM(t, testbed.FPMConfig{Extra: "access.log = " + accessLog})
	readAccessLog := func() string {
		// php-fpm writes the line when the request ends, just after
		// the answer.
		time.Sleep(100 * time.Millisecond)
		b, err := os.ReadFile(accessLog)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		return string(b)
	}

	if _, err := Probe(t, fpmAddr(f)); err != nil {
		t.Fatal(err)
	}
	if got := readAccessLog(); got != "" {
		t.Errorf("after the GET_VALUES probe the access log has %q", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	values, _, err := ask(ctx, fpmAddr(f), false)
	if err != nil || len(values) != 0 {
		t.Fatalf("fall-back probe of php-fpm = %v, %v", values, err)
	}
	if got := readAccessLog(); strings.Count(got, "\n") != 1 || !strings.Contains(got, `"GET /fcgiscope-probe.php" 404`) {
		t.Errorf("after the fall-back probe the access log has %q, want one 404 line", got)
	}
	var stdout bytes.Buffer
	var tr outcome.Trace
	exchange.Do(ctx, &exchange.Request{Upstream: fpmAddr(f), Params: probeParams, Stdout: &stdout}, &tr)
	if tr.Err != nil {
		t.Fatal(tr.Err)
	}
	if tr.Status != 404 || !strings.Contains(stdout.String(), "File not found.") || !strings.Contains(string(tr.Stderr), "Primary script unknown") {
		t.Errorf("php-fpm answered the probe request with status %d, stdout %q, stderr %q", tr.Status, stdout.String(), tr.Stderr)
	}
	f.Stop()
	for _, line := range strings.Split(f.ReadErrorLog(), "\n") {
		if strings.Contains(line, "WARNING") || strings.Contains(line, "ERROR") {
			t.Errorf("php-fpm logged: %s", line)
		}
	}
}

// TestFindFPM starts php-fpm on a unix socket and on a loopback port, an
// HTTP server and two silent listeners, and looks for them the way fcgiscope
// does: Listening, then FindFastCGI.
//
// Tests may probe only loopback addresses and their own unix sockets, and
// other tests of this repository run beside this one with their own fake
// servers on loopback ports, so the candidates are Listening's addresses
// that this test created.
func TestFindFPM(t *testing.T) {
	fpmUnix := testbed.StartFPM(t, testbed.FPMConfig{})
	fpmTCP := testbed.StartFPM(t, testbed.FPMConfig{Listen: fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))})
	httpSrv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(httpSrv.Close)
	httpAddr := fcgi.Addr{Network: "tcp", Address: httpSrv.Listener.Addr().String()}
	silent := addrOf(listenTCP(t))
	silentUnix := addrOf(listenUnix(t, testbed.ShortTempDir(t), "silent.sock"))
	mine := []fcgi.Addr{fpmAddr(fpmUnix), fpmAddr(fpmTCP), httpAddr, silent, silentUnix}

	all, err := Listening()
	if err != nil {
		t.Fatal(err)
	}
	var cands []fcgi.Addr
	for _, a := range all {
		if slices.Contains(mine, a) {
			cands = append(cands, a)
		}
	}
	for _, a := range mine {
		if !slices.Contains(cands, a) {
			t.Errorf("Listening() does not list %v", a)
		}
	}
	if t.Failed() {
		t.Fatalf("Listening() = %v", all)
	}

	base := routinesNow()
	start := time.Now()
	got := FindFastCGI(context.Background(), cands)
	elapsed := time.Since(start)
	if want := []fcgi.Addr{fpmAddr(fpmUnix), fpmAddr(fpmTCP)}; !slices.Equal(addrs(got), want) {
		t.Fatalf("FindFastCGI = %v, want %v", addrs(got), want)
	}
	// The silent listeners cost one probe timeout, in parallel.
	if elapsed > DefaultTimeout+300*time.Millisecond {
		t.Errorf("FindFastCGI took %v with a %v probe timeout", elapsed, DefaultTimeout)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		t.Logf("responder %v: latency %v, values %v, owner %q group %q mode %v", r.Addr, r.Latency, r.Values, r.Owner, r.Group, r.Mode)
		if want := map[string]string{fcgi.ValueMPXSConns: "0"}; !maps.Equal(r.Values, want) {
			t.Errorf("%v Values = %v, want %v", r.Addr, r.Values, want)
		}
		if r.Latency <= 0 || r.Latency > DefaultTimeout {
			t.Errorf("%v Latency = %v", r.Addr, r.Latency)
		}
	}
	if u := got[0]; u.Mode != 0o666 || u.Owner != me.Username {
		t.Errorf("unix responder owner %q mode %v, want %q 0666 (listen.mode)", u.Owner, u.Mode, me.Username)
	}
	goroutinesSettle(t, base)

	// fcgiscope excludes its own listener, in whatever form it was given.
	port := strings.TrimPrefix(fpmTCP.Address, "127.0.0.1:")
	for _, ex := range []fcgi.Addr{fpmAddr(fpmTCP), {Network: "tcp", Address: "0.0.0.0:" + port}, {Network: "tcp", Address: ":" + port}} {
		if got := FindFastCGI(context.Background(), cands, ex); !slices.Equal(addrs(got), []fcgi.Addr{fpmAddr(fpmUnix)}) {
			t.Errorf("FindFastCGI excluding %v = %v", ex, addrs(got))
		}
	}
	if got := FindFastCGI(context.Background(), cands, fpmAddr(fpmUnix), fpmAddr(fpmTCP)); len(got) != 0 {
		t.Errorf("FindFastCGI excluding both pools = %v", addrs(got))
	}
	goroutinesSettle(t, base)

	// Why the others are not responders.
	_, err = Probe(t, httpAddr)
	var ve *fcgi.VersionError
	if !errors.As(err, &ve) || !ve.LooksLikeHTTP() {
		t.Errorf("Probe(http server) = %v, want a VersionError that looks like HTTP", err)
	}
	for _, a := range []fcgi.Addr{silent, silentUnix} {
		if _, err := Probe(t, a); !errors.Is(err, ErrNoAnswer) {
			t.Errorf("Probe(%v) = %v, want ErrNoAnswer", a, err)
		}
	}
}

func routinesNow() int {
	// Let goroutines of the servers started by the test reach their wait.
	time.Sleep(50 * time.Millisecond)
	return runtime.NumGoroutine()
}
