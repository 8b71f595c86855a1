package proxy

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Listen opens the downstream listener. For a unix socket it gives the file
// the given mode and replaces a socket file that a dead process left behind;
// a socket on which some process still accepts is an error, since taking it
// over would steal that process's traffic. The socket file is removed when
// the listener is closed.
func Listen(addr fcgi.Addr, mode fs.FileMode) (net.Listener, error) {
	if addr.Network != "unix" {
		ln, err := net.Listen(addr.Network, addr.Address)
		if err != nil {
			return nil, fmt.Errorf("listening on %s: %w", addr, err)
		}
		return ln, nil
	}
	if err := removeStaleSocket(addr.Address); err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", addr.Address)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	if mode != 0 {
		if err := os.Chmod(addr.Address, mode); err != nil {
			ln.Close()
			return nil, fmt.Errorf("setting mode %04o on %s: %w", mode, addr.Address, err)
		}
	}
	return ln, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("cannot listen on %s: the path exists and is not a socket; remove it or choose another path", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("listening on unix:%s: %w: another process accepts connections on it", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("cannot tell whether %s is in use: %w", path, err)
	}
	// Nobody accepts: the file is left over from a process that died.
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("removing stale socket %s: %w", path, err)
	}
	return nil
}
