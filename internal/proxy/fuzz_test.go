package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// fuzzRelay is one relay shared by every input of a fuzz target, so that
// each input costs a connection, not a server.
type fuzzRelay struct {
	addr     fcgi.Addr
	upstream chan []byte // what the fake upstream answers with
}

func startFuzzRelay(f *testing.F) *fuzzRelay {
	dir, err := os.MkdirTemp("", "fsz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(dir) })
	up, err := net.Listen("unix", filepath.Join(dir, "up.sock"))
	if err != nil {
		f.Fatal(err)
	}
	r := &fuzzRelay{upstream: make(chan []byte, 1)}
	var wg sync.WaitGroup
	f.Cleanup(func() { up.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				// Answer with the input's bytes, whatever was asked.
				c.SetDeadline(time.Now().Add(2 * time.Second))
				var answer []byte
				select {
				case answer = <-r.upstream:
				default:
					answer = []byte{}
				}
				go io.Copy(io.Discard, c)
				c.Write(answer)
			}()
		}
	}()
	srv := &Server{
		Upstream:      fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "up.sock")},
		HoldBytes:     1024,
		ReadTimeout:   200 * time.Millisecond,
		IdleTimeout:   100 * time.Millisecond,
		ParamsTimeout: 100 * time.Millisecond,
		linger:        100 * time.Millisecond,
		// Kept connections too, so that arbitrary answers meet the
		// idle pool and the resend on a kept connection.
		UpstreamKeepAlive: 1,
	}
	down, err := Listen(fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "down.sock")}, 0o600)
	if err != nil {
		f.Fatal(err)
	}
	served := make(chan struct{})
	go func() { srv.Serve(down); close(served) }()
	f.Cleanup(func() { srv.Close(); <-served })
	r.addr = fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "down.sock")}
	return r
}

// exchange writes in to a new downstream connection and reads until the
// relay closes it, which it must do within a bounded time whatever the
// input: no hang, no panic.
func (r *fuzzRelay) exchange(t *testing.T, in []byte) []byte {
	c, err := net.Dial(r.addr.Network, r.addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go c.Write(in)
	out, err := io.ReadAll(c)
	// A reset is a clean end too (the relay breaks off broken exchanges);
	// only a connection the relay never ends is a failure.
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the relay left the connection hanging: %v", err)
	}
	return out
}

// requestBytes is a well-formed request, the seed the fuzzer mutates.
func requestBytes() []byte {
	var b bytes.Buffer
	w := fcgi.NewWriter(&b)
	w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder})
	w.WriteStream(fcgi.TypeParams, 1, fcgi.AppendPair(fcgi.AppendPair(nil, "REQUEST_METHOD", "GET"), "SCRIPT_FILENAME", "/x.php"))
	w.EndStream(fcgi.TypeParams, 1)
	w.WriteStream(fcgi.TypeStdin, 1, []byte("body"))
	w.EndStream(fcgi.TypeStdin, 1)
	w.Flush()
	return b.Bytes()
}

func FuzzRelayDownstream(f *testing.F) {
	f.Add(requestBytes())
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add(append(requestBytes()[:20], 0xff, 0xff))
	r := startFuzzRelay(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		r.exchange(t, in)
	})
}

func FuzzRelayUpstream(f *testing.F) {
	var ok bytes.Buffer
	w := fcgi.NewWriter(&ok)
	w.WriteStream(fcgi.TypeStdout, 1, []byte("Status: 200\r\n\r\nhello"))
	w.EndStream(fcgi.TypeStdout, 1)
	w.WriteEndRequest(1, fcgi.EndRequest{})
	w.Flush()
	f.Add(ok.Bytes())
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n\r\n"))
	f.Add(ok.Bytes()[:13])
	r := startFuzzRelay(f)
	req := requestBytes()
	f.Fuzz(func(t *testing.T, answer []byte) {
		// A request that went on a kept connection left the previous
		// answer unused; this one replaces it.
		select {
		case <-r.upstream:
		default:
		}
		r.upstream <- answer
		out := r.exchange(t, req)
		// Whatever the upstream sent, the web server gets FastCGI records
		// it can read up to the end or to a deliberate break-off.
		rd := fcgi.NewReader(bytes.NewReader(out))
		for {
			if _, err := rd.Next(); err != nil {
				break
			}
		}
	})
}
