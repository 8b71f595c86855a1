package testbed

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
)

// Relay is a relay running inside the test process, for tests that need to
// see or configure the proxy.Server directly.
type Relay struct {
	// Addr is where it listens, in nginx's fastcgi_pass syntax.
	Addr   string
	Server *proxy.Server
}

// StartRelay serves srv on network ("tcp" for a free loopback port, "unix"
// for a new socket in a ShortTempDir) and shuts it down in t.Cleanup. srv's
// fields must be set before the call.
func StartRelay(t testing.TB, srv *proxy.Server, network string) *Relay {
	t.Helper()
	var addr fcgi.Addr
	switch network {
	case "tcp":
		addr = fcgi.Addr{Network: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	case "unix":
		addr = fcgi.Addr{Network: "unix", Address: filepath.Join(ShortTempDir(t), "fcgiscope.sock")}
	default:
		t.Fatalf("testbed: StartRelay network %q, want tcp or unix", network)
	}
	ln, err := proxy.Listen(addr, 0o666)
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("testbed: relay shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("testbed: relay Serve returned %v", err)
		}
	})
	return &Relay{Addr: addr.String(), Server: srv}
}
