// Command barerelay is a benchmark fixture, not part of fcgiscope: the
// least a relay between nginx and php-fpm can do. For every connection it
// accepts it dials one new upstream connection and copies bytes both ways
// with io.Copy, parsing nothing. The benchmark suite puts it where fcgiscope
// goes, so that fcgiscope's cost can be read against the cost of merely
// having a process in the path (two more sockets, two more copies of every
// byte, the Go runtime's scheduling) rather than against nothing at all.
//
// Usage:
//
//	barerelay -listen unix:/path/relay.sock -upstream unix:/path/php-fpm.sock
//	barerelay -listen 127.0.0.1:9001 -upstream 127.0.0.1:9000
//
// It leaves GOMAXPROCS to the Go default; the suite sets it in the
// environment when it wants the relay to run on as many threads as
// fcgiscope does. SIGTERM or SIGINT stops it: it closes its listener (which
// removes a unix socket file) and every open connection, waits for its
// goroutines and exits with status 0.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
)

func main() {
	listen := flag.String("listen", "", "where to listen, in nginx's syntax: unix:/path or 127.0.0.1:port")
	upstream := flag.String("upstream", "", "where to connect for each accepted connection, in nginx's syntax: unix:/path or 127.0.0.1:port")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("barerelay: ")
	if flag.NArg() > 0 {
		log.Fatalf("unexpected arguments %q", flag.Args())
	}
	lnNet, lnAddr, err := parseAddr(*listen)
	if err != nil {
		log.Fatalf("-listen: %v", err)
	}
	upNet, upAddr, err := parseAddr(*upstream)
	if err != nil {
		log.Fatalf("-upstream: %v", err)
	}

	ln, err := net.Listen(lnNet, lnAddr)
	if err != nil {
		log.Fatal(err)
	}
	if lnNet == "unix" {
		// nginx's workers may run as another user than the relay, as
		// they do with fcgiscope's FCGISCOPE_LISTEN_MODE=0666 in the
		// suite.
		if err := os.Chmod(lnAddr, 0o666); err != nil {
			log.Fatal(err)
		}
	}

	r := &relay{upNet: upNet, upAddr: upAddr, conns: make(map[net.Conn]struct{})}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		r.shutdown(ln)
	}()

	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			// A transient failure such as EMFILE must not end the
			// relay in the middle of a benchmark.
			log.Printf("accept: %v", err)
			continue
		}
		if !r.track(c) {
			c.Close()
			continue
		}
		r.wg.Add(1)
		go r.serve(c)
	}
	r.wg.Wait()
}

// relay holds what the accept loop, the connections and shutdown share.
type relay struct {
	upNet, upAddr string

	wg sync.WaitGroup // one per accepted connection, done when both of its sockets are closed

	mu      sync.Mutex
	closing bool
	// conns are the open connections, downstream and upstream, so that
	// shutdown can close them: a kept-alive connection would otherwise
	// hold the relay open forever.
	conns map[net.Conn]struct{}
}

// track records c as open; it reports false once shutdown has begun, when c
// must be closed instead.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

// closeConn closes c and forgets it.
func (r *relay) closeConn(c net.Conn) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

// shutdown stops the accept loop and closes every open connection, which
// ends their copies.
func (r *relay) shutdown(ln net.Listener) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closing = true
	ln.Close()
	for c := range r.conns {
		c.Close()
	}
}

// serve relays one downstream connection to a new upstream connection until
// both directions have ended.
func (r *relay) serve(down net.Conn) {
	defer r.wg.Done()
	defer r.closeConn(down)
	up, err := net.Dial(r.upNet, r.upAddr)
	if err != nil {
		// Closing the downstream connection is all the answer a byte
		// relay can give; nginx reports it as a failed upstream.
		log.Printf("dial %s: %v", r.upAddr, err)
		return
	}
	if !r.track(up) {
		up.Close()
		return
	}
	defer r.closeConn(up)
	done := make(chan struct{})
	go func() {
		pipe(up, down)
		close(done)
	}()
	pipe(down, up)
	<-done
}

// pipe copies src to dst until src ends, then half-closes dst's write side
// so that the peer sees the end of the stream while the other direction
// may still carry bytes: php-fpm may answer after nginx has finished
// sending, and nginx may finish sending after php-fpm has answered.
func pipe(dst, src net.Conn) {
	io.Copy(dst, src) // An error ends this direction just as EOF does.
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// parseAddr splits an address in nginx's syntax ("unix:/path" or
// "host:port") into what net.Listen and net.Dial take.
func parseAddr(addr string) (network, address string, err error) {
	if addr == "" {
		return "", "", errors.New("required")
	}
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("unix socket path %q is not absolute", p)
		}
		return "unix", p, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", "", fmt.Errorf("%q is neither unix:/path nor host:port", addr)
	}
	return "tcp", addr, nil
}
