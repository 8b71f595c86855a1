package bench

import (
	"crypto/sha256"
	"errors"
	"hash"
	"io"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// How the fake responder answers.
const (
	fakeOK       = "ok"       // the canned response
	fakeClose    = "close"    // closes the connection instead of answering
	fakeHTTP     = "http"     // answers in HTTP
	fakeSilent   = "silent"   // never answers
	fakeOverload = "overload" // END_REQUEST with OVERLOADED
)

// fakeFCGI is a tiny FastCGI responder built on fcgi.Reader. It reads each
// request to the end of STDIN and writes a canned response, then closes the
// connection unless the request set FCGI_KEEP_CONN. Serving a request over a
// kept connection allocates nothing, so that benchmarks measure the client.
type fakeFCGI struct {
	addr fcgi.Addr
	ln   net.Listener
	mode string
	resp []byte

	requests atomic.Int64
	conns    atomic.Int64 // connections that carried a request
	keepConn atomic.Int64 // requests that set FCGI_KEEP_CONN

	// With capture set, the PARAMS and the STDIN's SHA-256 of the last
	// request are kept.
	capture    bool
	mu         sync.Mutex
	lastParams map[string]string
	lastBody   [32]byte
	lastLen    int

	wg     sync.WaitGroup
	connMu sync.Mutex
	open   map[net.Conn]struct{}
}

// capture makes the fake keep the PARAMS and body of the last request.
func capture(f *fakeFCGI) { f.capture = true }

// startFake starts a fake responder on a new unix socket ("unix") or on a
// loopback port ("tcp") that answers every request with resp (see
// fakeResponse).
func startFake(t testing.TB, network, mode string, resp []byte, opts ...func(*fakeFCGI)) *fakeFCGI {
	t.Helper()
	var ln net.Listener
	var err error
	switch network {
	case "unix":
		ln, err = net.Listen("unix", filepath.Join(testbed.ShortTempDir(t), "fake.sock"))
	default:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFCGI{
		addr: fcgi.Addr{Network: network, Address: ln.Addr().String()},
		ln:   ln,
		mode: mode,
		resp: resp,
		open: make(map[net.Conn]struct{}),
	}
	for _, o := range opts {
		o(f)
	}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.close)
	return f
}

func (f *fakeFCGI) close() {
	f.ln.Close()
	f.connMu.Lock()
	for c := range f.open {
		c.Close()
	}
	f.connMu.Unlock()
	f.wg.Wait()
}

func (f *fakeFCGI) accept() {
	defer f.wg.Done()
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.connMu.Lock()
		f.open[conn] = struct{}{}
		f.connMu.Unlock()
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serve(conn)
			f.connMu.Lock()
			delete(f.open, conn)
			f.connMu.Unlock()
			conn.Close()
		}()
	}
}

// readers are reused across connections, so that the fake costs little in
// the benchmark of new connections.
var readers = sync.Pool{New: func() any { return fcgi.NewReader(nil) }}

func (f *fakeFCGI) serve(conn net.Conn) {
	rd := readers.Get().(*fcgi.Reader)
	defer readers.Put(rd)
	rd.Reset(conn)
	var params fcgi.ParamsBuffer
	var body hash.Hash
	if f.capture {
		body = sha256.New()
	}
	for first := true; ; first = false {
		keep, n, err := f.readRequest(rd, &params, body)
		if err != nil {
			return
		}
		if first {
			f.conns.Add(1)
		}
		f.requests.Add(1)
		if keep {
			f.keepConn.Add(1)
		}
		if f.capture {
			f.record(&params, body, n)
		}
		switch f.mode {
		case fakeClose:
			return
		case fakeHTTP:
			io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		case fakeSilent:
			io.Copy(io.Discard, conn) // until the client gives up
			return
		case fakeOverload:
			w := fcgi.NewWriter(conn)
			w.WriteEndRequest(1, fcgi.EndRequest{ProtocolStatus: fcgi.StatusOverloaded})
			w.Flush()
			return
		}
		if _, err := conn.Write(f.resp); err != nil || !keep {
			return
		}
	}
}

// readRequest reads one request up to its empty STDIN record.
func (f *fakeFCGI) readRequest(rd *fcgi.Reader, params *fcgi.ParamsBuffer, body hash.Hash) (keep bool, n int, err error) {
	params.Reset()
	if body != nil {
		body.Reset()
	}
	for {
		h, err := rd.Next()
		if err != nil {
			return false, 0, err
		}
		// Only requests with id 1, the generator's, count: other test
		// processes on the host may scan for FastCGI sockets and probe
		// this one with GET_VALUES and requests of id 10.
		if h.RequestID != requestID {
			return false, 0, errors.New("not the generator's request")
		}
		switch h.Type {
		case fcgi.TypeBeginRequest:
			b, err := fcgi.ParseBeginRequest(rd.Content())
			if err != nil {
				return false, 0, err
			}
			keep = b.KeepConn()
		case fcgi.TypeParams:
			if f.capture {
				params.Append(rd.Content())
			}
		case fcgi.TypeStdin:
			if h.ContentLength == 0 {
				return keep, n, nil
			}
			n += len(rd.Content())
			if body != nil {
				body.Write(rd.Content())
			}
		default:
			return false, 0, errors.New("unexpected record")
		}
	}
}

func (f *fakeFCGI) record(params *fcgi.ParamsBuffer, body hash.Hash, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lastParams = make(map[string]string)
	params.ForEach(func(name, value []byte) bool {
		f.lastParams[string(name)] = string(value)
		return true
	})
	body.Sum(f.lastBody[:0])
	f.lastLen = n
}

// fakeResponse encodes a response of request id 1: the STDOUT chunks as
// separate records, the end of STDOUT, optionally a STDERR record, then
// END_REQUEST.
func fakeResponse(stderr string, stdout ...string) []byte {
	var b []byte
	for _, s := range stdout {
		b = appendStream(b, fcgi.TypeStdout, 1, []byte(s))
		b = b[:len(b)-fcgi.HeaderLen] // drop the end of stream between chunks
	}
	b = fcgi.AppendRecord(b, fcgi.TypeStdout, 1, nil)
	if stderr != "" {
		b = fcgi.AppendRecord(b, fcgi.TypeStderr, 1, []byte(stderr))
	}
	return fcgi.AppendRecord(b, fcgi.TypeEndRequest, 1, []byte{0, 0, 0, 0, byte(fcgi.StatusRequestComplete), 0, 0, 0})
}
