// Package fcgitest runs fake FastCGI applications for tests: upstream
// behaviour that php-fpm cannot be made to show, and upstreams fast enough
// not to be what a benchmark measures.
package fcgitest

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Serve listens on a new unix socket and runs handle on each connection,
// closing the connection when handle returns. It returns the socket's
// address. When the test ends the listener closes and Serve waits for the
// handlers, so a handler must return once its connection is closed.
func Serve(t testing.TB, handle func(conn net.Conn)) fcgi.Addr {
	t.Helper()
	// A short directory of its own: unix socket paths are limited to 108
	// bytes, which t.TempDir can exceed.
	dir, err := os.MkdirTemp("", "fcgitest")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		os.RemoveAll(dir)
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c)
			})
		}
	})
	return fcgi.Addr{Network: "unix", Address: path}
}

// ReadRequest reads one request, from BEGIN_REQUEST to the end of STDIN, and
// returns its id, params and body.
func ReadRequest(r *fcgi.Reader) (id uint16, params map[string]string, body []byte, err error) {
	params = map[string]string{}
	var pb fcgi.ParamsBuffer
	for {
		h, err := r.Next()
		if err != nil {
			return 0, nil, nil, err
		}
		id = h.RequestID
		switch h.Type {
		case fcgi.TypeParams:
			if h.ContentLength == 0 {
				pb.ForEach(func(n, v []byte) bool { params[string(n)] = string(v); return true })
			}
			pb.Append(r.Content())
		case fcgi.TypeStdin:
			if h.ContentLength == 0 {
				return id, params, body, nil
			}
			body = append(body, r.Content()...)
		}
	}
}

// DiscardRequest reads one request to the end of STDIN without keeping
// anything of it but its id: an upstream for a body of any size.
func DiscardRequest(r *fcgi.Reader) (id uint16, err error) {
	for {
		h, err := r.Next()
		if err != nil {
			return 0, err
		}
		id = h.RequestID
		if h.Type == fcgi.TypeStdin && h.ContentLength == 0 {
			return id, nil
		}
	}
}

// Request is one request a test sends, as a web server would.
type Request struct {
	Params []fcgi.Pair
	// Stdin is the body; nil sends none.
	Stdin io.Reader
}

// NewRequest returns a request with the params given as name, value, ...
func NewRequest(params ...string) *Request {
	req := &Request{}
	for i := 0; i+1 < len(params); i += 2 {
		req.Params = append(req.Params, fcgi.Pair{Name: params[i], Value: params[i+1]})
	}
	return req
}

// Response is what came back for a Request.
type Response struct {
	Stdout, Stderr []byte
	End            fcgi.EndRequest
	// Trace is the exchange's record of the request.
	Trace *outcome.Trace
}

// Do sends req to addr with the exchange fcgiscope's own clients use, and
// collects the response. The error is the Trace's: nil when the response
// was complete.
func Do(ctx context.Context, addr fcgi.Addr, req *Request) (*Response, error) {
	var stdout, stderr bytes.Buffer
	t := &outcome.Trace{}
	exchange.Do(ctx, &exchange.Request{Upstream: addr, Params: req.Params, Body: req.Stdin, Stdout: &stdout, Stderr: &stderr}, t)
	return &Response{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), End: t.EndRequest, Trace: t}, t.Err
}

// GetValues asks the FastCGI server at addr for the named variables with a
// GET_VALUES record, and returns its answer.
func GetValues(ctx context.Context, addr fcgi.Addr, names ...string) (map[string]string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, addr.Network, addr.Address)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var body []byte
	for _, n := range names {
		body = fcgi.AppendPair(body, n, "")
	}
	w := fcgi.NewWriter(conn)
	w.WriteRecord(fcgi.TypeGetValues, 0, body)
	if err := w.Flush(); err != nil {
		return nil, err
	}
	r := fcgi.NewReader(conn)
	for {
		h, err := r.Next()
		if err != nil {
			return nil, err
		}
		if h.Type != fcgi.TypeGetValuesResult {
			continue
		}
		values := map[string]string{}
		err = fcgi.ForEachPair(r.Content(), func(name, value []byte) bool {
			values[string(name)] = string(value)
			return true
		})
		return values, err
	}
}
