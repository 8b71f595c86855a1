package fcgi

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Addr is the address of a FastCGI endpoint.
type Addr struct {
	// Network is "tcp" or "unix".
	Network string
	// Address is host:port for tcp and a file system path for unix.
	Address string
}

// String returns the address in nginx's fastcgi_pass syntax, so that it can
// be pasted into a configuration file.
func (a Addr) String() string {
	if a.Network == "unix" {
		return "unix:" + a.Address
	}
	return a.Address
}

// IsZero reports whether a is the zero Addr.
func (a Addr) IsZero() bool { return a == Addr{} }

// AddrForms lists the accepted address forms, for error messages.
const AddrForms = "host:port (127.0.0.1:9000, [::1]:9000, localhost:9000), unix:/path/to.sock, tcp://host:port or unix:///path/to.sock"

// ParseAddr parses an address in nginx's fastcgi_pass syntax, or in URL
// form with a tcp:// or unix:// scheme.
func ParseAddr(s string) (Addr, error) {
	orig := s
	bad := func(why string) (Addr, error) {
		return Addr{}, fmt.Errorf("bad address %q: %s; accepted forms are %s", orig, why, AddrForms)
	}
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return bad("it is empty")
	case strings.HasPrefix(s, "unix://"):
		s = strings.TrimPrefix(s, "unix://")
		fallthrough
	case strings.HasPrefix(s, "unix:"):
		path := strings.TrimPrefix(s, "unix:")
		if path == "" {
			return bad("the socket path is empty")
		}
		if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "@") {
			return bad("the socket path must be absolute")
		}
		return Addr{Network: "unix", Address: path}, nil
	case strings.HasPrefix(s, "/"):
		return bad("a socket path needs the unix: prefix, as in unix:" + s)
	case strings.HasPrefix(s, "tcp://"):
		s = strings.TrimPrefix(s, "tcp://")
	case strings.Contains(s, "://"):
		return bad("unknown scheme")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if _, perr := strconv.Atoi(s); perr == nil {
			return bad("a port alone is ambiguous, write the host too, as in 127.0.0.1:" + s)
		}
		return bad("no port")
	}
	if host == "" {
		return bad("the host is empty, write 127.0.0.1 or 0.0.0.0")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return bad("the port must be a number from 1 to 65535")
	}
	return Addr{Network: "tcp", Address: net.JoinHostPort(host, port)}, nil
}
