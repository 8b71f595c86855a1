// Package fcgitest runs fake FastCGI applications for tests: upstream
// behaviour that php-fpm cannot be made to show, and upstreams fast enough
// not to be what a benchmark measures.
package fcgitest

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
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
