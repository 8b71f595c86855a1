package hostprobe

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// The files Listening reads.
const (
	procNetUnix = "/proc/net/unix"
	procNetTCP  = "/proc/net/tcp"
	procNetTCP6 = "/proc/net/tcp6"
)

// Listening returns the listening stream sockets of this host that could be
// FastCGI endpoints: unix stream sockets in LISTEN state with an absolute file
// system path that exists (from /proc/net/unix; abstract "@" names, unnamed
// sockets and relative paths are skipped), and TCP sockets in LISTEN state
// (from /proc/net/tcp and /proc/net/tcp6) bound to a loopback or wildcard
// address, reported as dialable loopback addresses (0.0.0.0:9000 ->
// 127.0.0.1:9000, [::]:9000 -> [::1]:9000, [::ffff:127.0.0.1]:9000 ->
// 127.0.0.1:9000). Sockets bound to any other address are skipped.
//
// The list is deduplicated and sorted: unix sockets first by path, then TCP
// by port, IPv4 before IPv6. /proc shows the sockets of this network
// namespace. A missing /proc/net/tcp6 (IPv6 disabled) is not an error; on
// other errors Listening returns what it could read along with the error.
func Listening() ([]fcgi.Addr, error) {
	var all []fcgi.Addr
	var errs []error

	unix, err := readProc(procNetUnix, parseUnix)
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range unix {
		// /proc keeps the path of a socket whose file was removed; such
		// a socket cannot be dialled by its path any more.
		if _, err := os.Lstat(a.Address); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		all = append(all, a)
	}
	for _, name := range []string{procNetTCP, procNetTCP6} {
		tcp, err := readProc(name, func(r io.Reader) ([]fcgi.Addr, error) {
			return parseTCP(r, binary.NativeEndian)
		})
		if err != nil && !(name == procNetTCP6 && errors.Is(err, fs.ErrNotExist)) {
			errs = append(errs, err)
		}
		all = append(all, tcp...)
	}
	return sortAddrs(all), errors.Join(errs...)
}

// readProc opens the /proc file name and parses it with parse.
func readProc[T any](name string, parse func(io.Reader) ([]T, error)) ([]T, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("hostprobe: %w", err)
	}
	defer f.Close()
	items, err := parse(f)
	if err != nil {
		return items, fmt.Errorf("hostprobe: reading %s: %w", name, err)
	}
	return items, nil
}

// Fields of /proc/net/unix, as net/unix/af_unix.c prints them.
const (
	unixAcceptCon  = 0x10000 // __SO_ACCEPTCON in Flags: the socket listens
	unixSockStream = 1       // SOCK_STREAM in Type
)

// parseUnix reads the text of /proc/net/unix and returns the listening unix
// stream sockets that have an absolute path, in file order. A line is
//
//	Num       RefCount Protocol Flags    Type St Inode Path
//	0000000000000000: 00000002 00000000 00010000 0001 01 23456 /run/php/php8.2-fpm.sock
//
// where the path, if any, is everything after the single space that follows
// the inode, so a path may contain spaces. Lines that do not parse are
// skipped.
func parseUnix(r io.Reader) ([]fcgi.Addr, error) {
	var addrs []fcgi.Addr
	err := forEachUnixLine(r, func(fields [7]string, path string) {
		flags, err1 := strconv.ParseUint(fields[3], 16, 32)
		typ, err2 := strconv.ParseUint(fields[4], 16, 16)
		if err1 != nil || err2 != nil {
			return
		}
		if flags&unixAcceptCon == 0 || typ != unixSockStream || !strings.HasPrefix(path, "/") {
			return // not listening, not a stream, abstract (@), unnamed or relative
		}
		addrs = append(addrs, fcgi.Addr{Network: "unix", Address: path})
	})
	return addrs, err
}

// forEachUnixLine calls fn with the numeric fields and the path (empty for
// an unnamed socket) of each socket line of /proc/net/unix, skipping the
// header and lines that are no socket's.
func forEachUnixLine(r io.Reader, fn func(fields [7]string, path string)) error {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		fields, rest := unixFields(sc.Text())
		if !strings.HasSuffix(fields[0], ":") {
			continue // the header line, or garbage
		}
		fn(fields, strings.TrimPrefix(rest, " "))
	}
	return sc.Err()
}

// unixFields splits a line of /proc/net/unix into its seven numeric fields
// and the rest, the path with its leading space.
func unixFields(line string) (fields [7]string, rest string) {
	rest = line
	for i := range fields {
		rest = strings.TrimLeft(rest, " ")
		end := strings.IndexByte(rest, ' ')
		if end < 0 {
			end = len(rest)
		}
		fields[i], rest = rest[:end], rest[end:]
	}
	return fields, rest
}

// tcpListen is the TCP_LISTEN state as /proc/net/tcp prints it.
const tcpListen = "0A"

// parseTCP reads the text of /proc/net/tcp or /proc/net/tcp6 and returns the
// sockets in LISTEN state bound to a loopback or wildcard address, as
// dialable loopback addresses, in file order. A line is
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//	 0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 ...
//
// The address is printed as 32-bit words in the byte order of the kernel
// that wrote it (order; binary.NativeEndian for this host's files), the port
// as a big-endian number. Lines that do not parse are skipped.
func parseTCP(r io.Reader, order binary.ByteOrder) ([]fcgi.Addr, error) {
	socks, err := parseTCPInodes(r, order)
	var addrs []fcgi.Addr
	for _, s := range socks {
		ap := s.addr
		ip := ap.Addr().Unmap()
		switch {
		case ip.IsUnspecified() && ip.Is4():
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		case ip.IsUnspecified():
			ip = netip.IPv6Loopback()
		case ip.IsLoopback():
		default:
			continue // a specific non-loopback address: not ours to probe
		}
		addrs = append(addrs, fcgi.Addr{Network: "tcp", Address: netip.AddrPortFrom(ip, ap.Port()).String()})
	}
	return addrs, err
}

// parseProcAddr decodes "0100007F:2328" (8 or 32 hex digits of address).
func parseProcAddr(s string, order binary.ByteOrder) (netip.AddrPort, bool) {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	if !ok || (len(hexIP) != 8 && len(hexIP) != 32) {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(hexIP)
	if err != nil {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil || port == 0 {
		return netip.AddrPort{}, false
	}
	// hex gives the bytes of each word as printed, most significant first;
	// the word's value laid out in the kernel's order gives the address.
	ip := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		order.PutUint32(ip[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(addr, uint16(port)), true
}

// sortAddrs deduplicates addrs and sorts them: unix by path, then tcp by
// port, IPv4 before IPv6, then by address.
func sortAddrs(addrs []fcgi.Addr) []fcgi.Addr {
	key := func(a fcgi.Addr) (network int, port uint16, ip netip.Addr) {
		if a.Network == "unix" {
			return 0, 0, netip.Addr{}
		}
		ap, err := netip.ParseAddrPort(a.Address)
		if err != nil {
			return 2, 0, netip.Addr{}
		}
		return 1, ap.Port(), ap.Addr()
	}
	slices.SortFunc(addrs, func(a, b fcgi.Addr) int {
		an, ap, aip := key(a)
		bn, bp, bip := key(b)
		return cmp.Or(
			cmp.Compare(an, bn),
			cmp.Compare(ap, bp),
			cmp.Compare(aip.BitLen(), bip.BitLen()),
			aip.Compare(bip),
			strings.Compare(a.Address, b.Address),
		)
	})
	return slices.Compact(addrs)
}

// loopbackHost reports whether host, the host part of a tcp address, names
// this machine's loopback: an IP loopback address or "localhost".
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// splitTCP splits a tcp address into its host and port.
func splitTCP(a fcgi.Addr) (host string, port int, ok bool) {
	host, p, err := net.SplitHostPort(a.Address)
	if err != nil {
		return "", 0, false
	}
	port, err = strconv.Atoi(p)
	return host, port, err == nil
}
