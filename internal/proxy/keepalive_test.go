package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// keptUpstream behaves as php-fpm does towards kept connections: it serves
// requests on a connection for as long as each asks to keep it, and a worker
// that has served maxRequests ends. Ending, it waits for the next request to
// arrive before closing, the worst moment php-fpm can choose.
type keptUpstream struct {
	maxRequests int

	accepted atomic.Int32
	closed   chan struct{} // a value when the relay closed a connection
	mu       sync.Mutex
	keepSeen map[string]bool // REQUEST_METHOD -> the keep flag it came with
}

func newKeptUpstream(maxRequests int) *keptUpstream {
	return &keptUpstream{maxRequests: maxRequests, closed: make(chan struct{}, 100), keepSeen: map[string]bool{}}
}

func (u *keptUpstream) serve(t testing.TB, conn net.Conn) {
	u.accepted.Add(1)
	r := fcgi.NewReader(conn)
	w := fcgi.NewWriter(conn)
	for served := 0; ; served++ {
		if u.maxRequests > 0 && served == u.maxRequests {
			var head [8]byte
			conn.Read(head[:])
			return
		}
		h, err := r.Next()
		if err != nil {
			u.closed <- struct{}{}
			return
		}
		begin, err := fcgi.ParseBeginRequest(r.Content())
		if h.Type != fcgi.TypeBeginRequest || err != nil {
			t.Errorf("kept upstream: got %s first", h.Type)
			return
		}
		id, params, body, err := fcgitest.ReadRequest(r)
		if err != nil {
			return
		}
		u.mu.Lock()
		u.keepSeen[params["REQUEST_METHOD"]] = begin.KeepConn()
		u.mu.Unlock()
		w.WriteStream(fcgi.TypeStdout, id, []byte("Content-Type: text/plain\r\n\r\n"+params["ECHO"]+" "+string(body)))
		w.EndStream(fcgi.TypeStdout, id)
		w.WriteEndRequest(id, fcgi.EndRequest{})
		w.Flush()
		if !begin.KeepConn() {
			return
		}
	}
}

func get(t *testing.T, addr fcgi.Addr, echo string) {
	t.Helper()
	resp, err := fcgitest.Do(context.Background(), addr, newReq("REQUEST_METHOD", "GET", "CONTENT_LENGTH", "", "ECHO", echo))
	if err != nil {
		t.Fatalf("GET %s: %v", echo, err)
	}
	if !strings.HasSuffix(string(resp.Stdout), "\r\n\r\n"+echo+" ") {
		t.Fatalf("GET %s: stdout %q", echo, resp.Stdout)
	}
}

func TestKeptUpstreamConnectionIsReusedByLaterRequests(t *testing.T) {
	up := newKeptUpstream(0)
	obs := newTraces()
	addr := startProxy(t, &Server{Upstream: fakeUpstream(t, up.serve), Observer: obs, UpstreamKeepAlive: 2})
	for i := range 20 {
		get(t, addr, "r"+string(rune('a'+i)))
		tr := obs.next(t)
		if tr.UpstreamReused != (i > 0) || tr.Err != nil {
			t.Errorf("request %d: reused %v err %v; want only the first to connect", i, tr.UpstreamReused, tr.Err)
		}
	}
	if n := up.accepted.Load(); n != 1 {
		t.Errorf("upstream accepted %d connections for 20 sequential requests, want 1", n)
	}
	if !up.keepSeen["GET"] {
		t.Error("the GET did not ask the upstream to keep the connection")
	}

	// A request with a body gets a connection of its own, so that it can
	// never meet a kept connection closing under it.
	req := newReq("REQUEST_METHOD", "POST", "CONTENT_LENGTH", "4", "ECHO", "post")
	req.Stdin = strings.NewReader("body")
	resp, err := fcgitest.Do(context.Background(), addr, req)
	if err != nil || !bytes.HasSuffix(resp.Stdout, []byte("post body")) {
		t.Fatalf("POST: %v %q", err, resp.Stdout)
	}
	if tr := obs.next(t); tr.UpstreamReused || up.keepSeen["POST"] {
		t.Errorf("POST reused %v, asked to keep %v; want a new connection closed after it", tr.UpstreamReused, up.keepSeen["POST"])
	}
}

func TestKeptConnectionClosingAsARequestArrivesIsResent(t *testing.T) {
	up := newKeptUpstream(3) // pm.max_requests = 3
	obs := newTraces()
	addr := startProxy(t, &Server{Upstream: fakeUpstream(t, up.serve), Observer: obs, UpstreamKeepAlive: 1})
	resent := 0
	for i := range 30 {
		get(t, addr, "n")
		tr := obs.next(t)
		if tr.Err != nil {
			t.Fatalf("request %d failed: %v", i, tr.Err)
		}
		resent += tr.Resent
	}
	if resent == 0 {
		t.Error("no request was sent again, yet every third kept connection closed under one")
	}
}

func TestIdleKeptConnectionsAreClosedAfterTheTimeout(t *testing.T) {
	up := newKeptUpstream(0)
	srv := &Server{Upstream: fakeUpstream(t, up.serve), UpstreamKeepAlive: 4, UpstreamKeepAliveTimeout: 50 * time.Millisecond}
	addr := startProxy(t, srv)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { get(t, addr, "c") })
	}
	wg.Wait()
	n := int(up.accepted.Load())
	for i := range n {
		select {
		case <-up.closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d idle kept connections were still open 5s after a 50ms keep-alive timeout", n-i, n)
		}
	}
}

func TestKeptConnectionsBeyondTheLimitAreClosedUnlessRequestsWait(t *testing.T) {
	var p idlePool
	p.max, p.timeout = 1, time.Minute
	a, aPeer := net.Pipe()
	b, bPeer := net.Pipe()
	c, cPeer := net.Pipe()
	for _, nc := range []net.Conn{a, aPeer, b, bPeer, c, cPeer} {
		defer nc.Close()
	}
	// Requests waiting for a slot are about to take every connection
	// there is: none is closed for the limit.
	if !p.put(a, true) || !p.put(b, true) || p.len() != 2 {
		t.Fatalf("with requests waiting the pool keeps %d of 2 connections", p.len())
	}
	// Once none waits, the limit holds again: the newest stays, the
	// older ones are closed, freeing their php-fpm workers.
	if !p.put(c, false) || p.len() != 1 {
		t.Fatalf("with no request waiting a pool of 1 keeps %d connections", p.len())
	}
	for name, peer := range map[string]net.Conn{"first": aPeer, "second": bPeer} {
		peer.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Errorf("the %s connection over the limit was not closed: read %v", name, err)
		}
	}
	if got := p.get(); got != c {
		t.Fatalf("get = %v, want the newest connection", got)
	}
	if p.get() != nil {
		t.Fatal("an empty pool returned a connection")
	}
	p.close()
	if p.put(a, false) {
		t.Error("a closed pool kept a connection")
	}
}

func TestARequestNeedingANewConnectionFreesAKeptOne(t *testing.T) {
	up := newKeptUpstream(0)
	obs := newTraces()
	addr := startProxy(t, &Server{Upstream: fakeUpstream(t, up.serve), Observer: obs, UpstreamKeepAlive: 2, UpstreamKeepAliveTimeout: time.Hour})
	get(t, addr, "g")
	obs.next(t)
	select {
	case <-up.closed:
		t.Fatal("the kept connection closed before anything needed its worker")
	case <-time.After(50 * time.Millisecond):
	}
	// The POST needs a connection of its own; the idle kept one holds a
	// php-fpm worker the POST may need, so it goes.
	req := newReq("REQUEST_METHOD", "POST", "CONTENT_LENGTH", "1", "ECHO", "p")
	req.Stdin = strings.NewReader("x")
	if _, err := fcgitest.Do(context.Background(), addr, req); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle kept connection still holds its worker while a POST needed a new connection")
	}
}

// A slot stands for a php-fpm worker: while a kept connection is still on
// its way back to the pool, a waiting request must not be let in to open
// another connection, which would queue in php-fpm behind the worker the
// kept one holds.
func TestSlotComesBackWithTheKeptConnection(t *testing.T) {
	var accepted atomic.Int32
	// Like php-fpm for a GET, it answers once the params are in, without
	// waiting for the end of the (empty) body.
	upstream := fakeUpstream(t, func(t testing.TB, conn net.Conn) {
		accepted.Add(1)
		r := fcgi.NewReader(conn)
		w := fcgi.NewWriter(conn)
		for {
			h, err := r.Next()
			if err != nil {
				return
			}
			if h.Type != fcgi.TypeParams || h.ContentLength > 0 {
				continue
			}
			w.WriteStream(fcgi.TypeStdout, h.RequestID, []byte("Content-Type: text/plain\r\n\r\nok"))
			w.EndStream(fcgi.TypeStdout, h.RequestID)
			w.WriteEndRequest(h.RequestID, fcgi.EndRequest{})
			w.Flush()
		}
	})
	addr := startProxy(t, &Server{Upstream: upstream, MaxConns: 1, QueueTimeout: 5 * time.Second, UpstreamKeepAlive: 1})

	// The first request's head goes out; its response comes back whole
	// while the end of its body has not been sent yet.
	a, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	aw := fcgi.NewWriter(a)
	aw.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder, Flags: fcgi.FlagKeepConn})
	aw.WriteStream(fcgi.TypeParams, 1, fcgi.AppendPair(fcgi.AppendPair(nil, "REQUEST_METHOD", "GET"), "CONTENT_LENGTH", ""))
	aw.EndStream(fcgi.TypeParams, 1)
	aw.Flush()
	ar := fcgi.NewReader(a)
	for {
		h, err := ar.Next()
		if err != nil {
			t.Fatal(err)
		}
		if h.Type == fcgi.TypeEndRequest {
			break
		}
	}

	second := make(chan error, 1)
	go func() {
		_, err := fcgitest.Do(context.Background(), addr, newReq("REQUEST_METHOD", "GET", "CONTENT_LENGTH", ""))
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("the second request ran (%v) while the first still held the only worker's connection", err)
	case <-time.After(200 * time.Millisecond):
	}
	aw.EndStream(fcgi.TypeStdin, 1)
	aw.Flush()
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("the upstream saw %d connections, want the one kept connection reused", n)
	}
}

// A php-fpm that is stopping resets a request it had not read, and a new
// connection made just then can fail while taking the request: it sat in
// the listen queue of the socket that closed. Both are connections closed
// without a word, and the request goes out again until it is served.
func TestResendGoesOnWhenTheNewConnectionFailsAtOnce(t *testing.T) {
	upstream := fakeUpstream(t, newKeptUpstream(0).serve)
	var dials atomic.Int32
	obs := newTraces()
	srv := &Server{
		Upstream:     upstream,
		QueueTimeout: 5 * time.Second,
		RetryClosed:  func(*outcome.Trace) bool { return true }, // php-fpm's log says it is stopping
		Observer:     obs,
		Dial: func(ctx context.Context, addr fcgi.Addr) (net.Conn, error) {
			switch dials.Add(1) {
			case 1: // the stopping php-fpm takes the request's bytes and closes
				relay, app := net.Pipe()
				go func() {
					buf := make([]byte, 64<<10)
					app.Read(buf)
					app.Close()
				}()
				return relay, nil
			case 2: // reset before it takes anything
				relay, app := net.Pipe()
				app.Close()
				return relay, nil
			}
			var d net.Dialer
			return d.DialContext(ctx, addr.Network, addr.Address)
		},
	}
	addr := startProxy(t, srv)
	get(t, addr, "again")
	if tr := obs.next(t); tr.Err != nil || tr.Resent != 2 {
		t.Errorf("trace err %v resent %d; want served after 2 resends", tr.Err, tr.Resent)
	}
}
