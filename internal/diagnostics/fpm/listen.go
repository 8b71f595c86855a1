package fpm

import (
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// parseListen reads a listen value as php-fpm 8.2 does
// (fpm_sockets_domain_from_address and fpm_socket_af_inet_listening_socket):
// a value with a ':' is host:port, split at the last ':', with brackets
// around the host optional; a value of digits only is a port on all
// addresses; anything else is a unix socket path, relative to prefix unless
// absolute. problem describes a value php-fpm will not bind; fatal says
// whether php-fpm then fails to start (php-fpm -t does not check this).
func parseListen(v, prefix string) (addr fcgi.Addr, problem string, fatal bool) {
	if v == "" {
		return fcgi.Addr{}, "", false
	}
	colon := strings.LastIndexByte(v, ':')
	if colon < 0 && strings.Trim(v, "0123456789") != "" {
		path := v
		if !strings.HasPrefix(path, "/") {
			path = joinPath(prefix, path)
		}
		return fcgi.Addr{Network: "unix", Address: cleanPath(path)}, "", false
	}
	host, portStr := "", v
	if colon >= 0 {
		host, portStr = v[:colon], v[colon+1:]
		if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
			host = host[1 : len(host)-1]
		}
	}
	port := atoi(portStr)
	if port < 1 || port > 65535 {
		return fcgi.Addr{}, "invalid port " + strconv.Quote(portStr), true
	}
	p := strconv.Itoa(int(port))
	if colon < 0 {
		// php-fpm binds [::] with IPV6_V6ONLY off: every IPv6 and IPv4
		// address.
		return fcgi.Addr{Network: "tcp", Address: ":" + p}, "", false
	}
	if host == "" {
		return fcgi.Addr{}, "the host is empty; php-fpm cannot resolve it (write the port alone to listen on all addresses)", true
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
	} else if host == "*" {
		return fcgi.Addr{Network: "tcp", Address: net.JoinHostPort(host, p)},
			"'*' is not a wildcard for php-fpm: it is looked up as a host name (on Debian it resolves to a loopback address); write the port alone to listen on all addresses", false
	}
	return fcgi.Addr{Network: "tcp", Address: net.JoinHostPort(host, p)}, "", false
}

// cleanPath is filepath.Clean, which fcgi.ParseAddr applies too.
func cleanPath(p string) string { return filepath.Clean(p) }

// PoolFor returns the pool that listens where addr points, or nil. A unix
// socket matches the same path, compared after cleaning. A TCP address
// matches a pool on the same port that listens on the same host, on all
// addresses (a port alone, [::], or 0.0.0.0 for IPv4 and host names), or on
// the loopback address when addr names localhost (or is 127.0.0.1 or ::1
// and the pool listens on localhost). When several pools match, the one
// with the most specific address wins.
func (c *Config) PoolFor(addr fcgi.Addr) *Pool {
	var best *Pool
	bestScore := 0
	for _, p := range c.Pools {
		s := matchScore(p.ListenAddr, addr)
		if s > bestScore {
			best, bestScore = p, s
		}
	}
	return best
}

// matchScore rates how well a pool listening on listen serves addr: 0 not
// at all, 1 on all addresses, 2 through localhost, 3 exactly.
func matchScore(listen, addr fcgi.Addr) int {
	if listen.Network != addr.Network || listen.IsZero() {
		return 0
	}
	if listen.Network == "unix" {
		if cleanPath(listen.Address) == cleanPath(addr.Address) {
			return 3
		}
		return 0
	}
	lh, lp, err := net.SplitHostPort(listen.Address)
	if err != nil {
		return 0
	}
	ah, ap, err := net.SplitHostPort(addr.Address)
	if err != nil || atoi(lp) != atoi(ap) {
		return 0
	}
	lip, lerr := netip.ParseAddr(lh)
	aip, aerr := netip.ParseAddr(ah)
	if lerr == nil {
		lip = lip.Unmap()
	}
	if aerr == nil {
		aip = aip.Unmap()
	}
	switch {
	case lerr == nil && aerr == nil && lip == aip:
		return 3
	case lerr != nil && aerr != nil && equalFold(lh, ah):
		return 3
	case lh == "" || (lerr == nil && lip == netip.IPv6Unspecified()):
		return 1
	case lerr == nil && lip == netip.IPv4Unspecified() && (aerr != nil || aip.Is4()):
		return 1
	case isLocalhost(ah) && (isLocalhost(lh) || (lerr == nil && isLoopbackLiteral(lip))):
		return 2
	case isLocalhost(lh) && aerr == nil && isLoopbackLiteral(aip):
		return 2
	}
	return 0
}

func isLocalhost(h string) bool { return equalFold(h, "localhost") }

// isLoopbackLiteral reports whether ip is 127.0.0.1 or ::1, the addresses
// localhost resolves to.
func isLoopbackLiteral(ip netip.Addr) bool {
	return ip == netip.MustParseAddr("127.0.0.1") || ip == netip.IPv6Loopback()
}
