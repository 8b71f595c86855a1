package fcgi

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
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

// addrForms lists the accepted address forms, for error messages.
const addrForms = "host:port (127.0.0.1:9000, [::1]:9000, localhost:9000), unix:/path/to.sock, tcp://host:port or unix:///path/to.sock"

// ParseAddr parses an address in nginx's fastcgi_pass syntax, or in URL
// form with a tcp:// or unix:// scheme.
func ParseAddr(s string) (Addr, error) {
	orig := s
	bad := func(why string) (Addr, error) {
		return Addr{}, fmt.Errorf("bad address %q: %s; accepted forms are %s", orig, why, addrForms)
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
		if strings.HasPrefix(path, "@") {
			return Addr{Network: "unix", Address: path}, nil // Linux abstract socket
		}
		if !strings.HasPrefix(path, "/") {
			return bad("the socket path must be absolute")
		}
		// Clean, so that String gives back the same address: a path
		// starting with // would read as the unix:// form.
		path = filepath.Clean(path)
		if strings.TrimSpace(path) != path {
			return bad("the socket path starts or ends with white space")
		}
		return Addr{Network: "unix", Address: path}, nil
	case strings.HasPrefix(s, "/"):
		return bad("a socket path needs the unix: prefix, as in unix:" + s)
	case strings.HasPrefix(s, "tcp://"):
		s = strings.TrimPrefix(s, "tcp://")
		if strings.TrimSpace(s) != s {
			return bad("there is white space in the host")
		}
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
	if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
		return bad("the host is neither an IP address nor a host name")
	}
	if host == "unix" {
		return bad(`a host named "unix" would read as a unix socket; use its IP address`)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return bad("the port must be a number from 1 to 65535")
	}
	return Addr{Network: "tcp", Address: net.JoinHostPort(host, port)}, nil
}

// validHostname reports whether h is made of the characters a DNS name can
// have. It is a syntax check only.
func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, c := range []byte(h) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}
