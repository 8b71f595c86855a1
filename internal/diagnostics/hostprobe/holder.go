package hostprobe

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Holder is a process that holds a listening socket.
type Holder struct {
	// Pid is the process id, as this process's /proc sees it.
	Pid int
	// Name is /proc/<pid>/comm, e.g. "nginx".
	Name string
	// Cmdline is /proc/<pid>/cmdline with NULs as spaces, trimmed, at most
	// maxCmdline bytes; it is empty for a kernel thread or a zombie.
	Cmdline string
}

// maxCmdline is the most bytes of a command line that Holder keeps.
const maxCmdline = 200

// String reads like "pid 1234 (nginx: master process /usr/sbin/nginx)",
// with the command line when it is known, else the name.
func (h Holder) String() string {
	what := cmp.Or(h.Cmdline, h.Name)
	if what == "" {
		return "pid " + strconv.Itoa(h.Pid)
	}
	return "pid " + strconv.Itoa(h.Pid) + " (" + what + ")"
}

// ErrNoHolder is wrapped by the error of ListenerHolder when no process it
// can see holds a listening socket at the address.
var ErrNoHolder = errors.New("no process found holding a listening socket")

// procDir is where ListenerHolder looks for processes.
const procDir = "/proc"

// ListenerHolder returns the process that holds the listening socket at
// addr: a TCP address (Network "tcp") whose host is an IP address or
// "localhost", or a unix socket path (Network "unix").
//
// It finds the socket's inode in /proc/net/tcp and /proc/net/tcp6 (sockets
// in LISTEN state on the port) or in /proc/net/unix (listening sockets bound
// to the path, or to the same file through a symbolic link), then scans
// /proc/*/fd/* for a link to "socket:[INODE]". A TCP listener on the
// wildcard address 0.0.0.0 holds every IPv4 address of its port, and one on
// :: holds every IPv6 address and, being dual-stack unless IPV6_V6ONLY is
// set (which /proc does not show), every IPv4 address too. A listener bound
// to the very address wins over a wildcard one, and 0.0.0.0 over ::, as in
// the kernel's choice of the socket that accepts a connection. A TCP address
// on a wildcard host (0.0.0.0:9000) is taken as its loopback
// (127.0.0.1:9000), where a connection to it goes. When several unix sockets
// were bound to the path (the file of the older ones was removed), the
// newest wins, as it owns the file now.
//
// When the socket is shared by several processes (a php-fpm or nginx master
// and the workers it forked), the one whose parent does not share it is
// returned: the master.
//
// ListenerHolder returns an error wrapping ErrNoHolder when no listening
// socket matches addr, or when one does but no process this one can see
// holds it: it belongs to another pid namespace (a container), or /proc
// hides it or denies access to its file descriptors (not root); the error
// text then tells which. /proc shows the sockets of this network namespace.
func ListenerHolder(addr fcgi.Addr) (Holder, error) {
	inodes, err := listenerInodes(addr)
	if err != nil {
		return Holder{}, err
	}
	if len(inodes) == 0 {
		return Holder{}, fmt.Errorf("hostprobe: %s: %w: nothing listens there", addr, ErrNoHolder)
	}
	held, denied, err := scanHolders(procDir, inodes)
	if err != nil {
		return Holder{}, err
	}
	for _, ino := range inodes {
		if pids := held[ino]; len(pids) > 0 {
			return readHolder(procDir, masterOf(procDir, pids)), nil
		}
	}
	return Holder{}, fmt.Errorf("hostprobe: %s: %w: %s", addr, ErrNoHolder, unseenReason(inodes, denied))
}

// unseenReason tells why no process was found holding a socket that exists:
// inodes are the candidate sockets, denied counts the processes whose file
// descriptors could not be read.
func unseenReason(inodes []uint64, denied int) string {
	s := "socket inode " + strconv.FormatUint(inodes[0], 10)
	if len(inodes) > 1 {
		s = fmt.Sprintf("%d socket inodes (%d first)", len(inodes), inodes[0])
	}
	s += " listens there, but no process visible here holds it: "
	if denied > 0 {
		return s + fmt.Sprintf("the file descriptors of %d processes could not be read (permission denied; run as root or as the owner of the socket), or it belongs to another pid namespace", denied)
	}
	return s + "it belongs to another pid namespace (a container), or /proc hides other users' processes (hidepid)"
}

// listenerInodes returns the inodes of the listening sockets that hold addr,
// best first. An error reading /proc/net is returned only when nothing
// matched in the files that could be read.
func listenerInodes(addr fcgi.Addr) ([]uint64, error) {
	switch addr.Network {
	case "unix":
		socks, err := readProc(procNetUnix, parseUnixInodes)
		inodes := matchUnix(socks, addr.Address)
		if len(inodes) == 0 && err != nil {
			return nil, err
		}
		return inodes, nil
	case "tcp":
		wants, port, err := tcpTargets(addr)
		if err != nil {
			return nil, err
		}
		var socks []procSocket
		var errs []error
		for _, name := range []string{procNetTCP, procNetTCP6} {
			s, err := readProc(name, func(r io.Reader) ([]procSocket, error) {
				return parseTCPInodes(r, binary.NativeEndian)
			})
			if err != nil && !(name == procNetTCP6 && errors.Is(err, fs.ErrNotExist)) {
				errs = append(errs, err)
			}
			socks = append(socks, s...)
		}
		inodes := matchTCP(socks, wants, port)
		if len(inodes) == 0 && len(errs) > 0 {
			return nil, errors.Join(errs...)
		}
		return inodes, nil
	default:
		return nil, fmt.Errorf("hostprobe: %s: unknown network %q, want tcp or unix", addr, addr.Network)
	}
}

// tcpTargets returns the addresses a connection to the tcp address a
// reaches: its IP address, the loopback address for a wildcard, or both
// loopback addresses for "localhost". Other host names are refused rather
// than resolved.
func tcpTargets(a fcgi.Addr) ([]netip.Addr, uint16, error) {
	host, port, ok := splitTCP(a)
	if !ok || port < 1 || port > 65535 {
		return nil, 0, fmt.Errorf("hostprobe: %s: not a host:port address", a)
	}
	if host == "localhost" {
		return []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback()}, uint16(port), nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil, 0, fmt.Errorf("hostprobe: %s: the host must be an IP address or localhost to find the socket's holder", a)
	}
	ip = ip.Unmap().WithZone("")
	if ip.IsUnspecified() {
		if ip.Is4() {
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		} else {
			ip = netip.IPv6Loopback()
		}
	}
	return []netip.Addr{ip}, uint16(port), nil
}

// procSocket is a listening socket read from /proc/net: its inode, and its
// address (tcp) or path (unix).
type procSocket struct {
	inode uint64
	addr  netip.AddrPort
	path  string
}

// parseUnixInodes reads the text of /proc/net/unix (see parseUnix) and
// returns the listening sockets that have a path, of any type, with their
// inodes, in file order. Unlike parseUnix it keeps abstract ("@name") and
// relative paths. Lines that do not parse are skipped.
func parseUnixInodes(r io.Reader) ([]procSocket, error) {
	var socks []procSocket
	err := forEachUnixLine(r, func(fields [7]string, path string) {
		flags, err1 := strconv.ParseUint(fields[3], 16, 32)
		inode, err2 := strconv.ParseUint(fields[6], 10, 64)
		if err1 != nil || err2 != nil || inode == 0 {
			return
		}
		if flags&unixAcceptCon == 0 || path == "" {
			return // not listening, or unnamed
		}
		socks = append(socks, procSocket{inode: inode, path: path})
	})
	return socks, err
}

// parseTCPInodes reads the text of /proc/net/tcp or /proc/net/tcp6 (see
// parseTCP) and returns the sockets in LISTEN state, whatever their address,
// with their inodes (the tenth field), in file order. Lines that do not
// parse are skipped.
func parseTCPInodes(r io.Reader, order binary.ByteOrder) ([]procSocket, error) {
	var socks []procSocket
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || !strings.HasSuffix(f[0], ":") || f[3] != tcpListen {
			continue
		}
		ap, ok := parseProcAddr(f[1], order)
		if !ok {
			continue
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil || inode == 0 {
			continue
		}
		socks = append(socks, procSocket{inode: inode, addr: ap})
	}
	return socks, sc.Err()
}

// matchTCP returns the inodes of the listeners in socks that accept a
// connection to one of wants (IP addresses without zone, not v4-mapped) on
// port, best first: a listener on the address itself, then on 0.0.0.0 for
// IPv4 or :: for IPv6, then on :: for IPv4 (dual-stack); earlier wants
// before later ones of the same rank; then newest (highest inode) first.
func matchTCP(socks []procSocket, wants []netip.Addr, port uint16) []uint64 {
	type cand struct {
		rank, want int
		inode      uint64
	}
	var cands []cand
	for _, s := range socks {
		if s.addr.Port() != port {
			continue
		}
		l := s.addr.Addr().Unmap().WithZone("")
		best := -1
		var bestWant int
		for i, w := range wants {
			rank := -1
			switch {
			case l == w:
				rank = 0
			case l.IsUnspecified() && l.Is4() == w.Is4():
				rank = 1
			case l.IsUnspecified() && l.Is6() && w.Is4():
				rank = 2
			}
			if rank >= 0 && (best < 0 || rank < best) {
				best, bestWant = rank, i
			}
		}
		if best >= 0 {
			cands = append(cands, cand{best, bestWant, s.inode})
		}
	}
	slices.SortStableFunc(cands, func(a, b cand) int {
		return cmp.Or(cmp.Compare(a.rank, b.rank), cmp.Compare(a.want, b.want), cmp.Compare(b.inode, a.inode))
	})
	inodes := make([]uint64, 0, len(cands))
	for _, c := range cands {
		if !slices.Contains(inodes, c.inode) {
			inodes = append(inodes, c.inode)
		}
	}
	return inodes
}

// matchUnix returns the inodes of the sockets in socks bound to path, newest
// (highest inode) first. A socket matches when its path is path, cleaned or
// not, or when both are absolute paths with the same base name that name the
// same file (through a symbolic link such as /var/run -> /run).
func matchUnix(socks []procSocket, path string) []uint64 {
	var target os.FileInfo
	if filepath.IsAbs(path) {
		target, _ = os.Stat(path)
	}
	var inodes []uint64
	for _, s := range socks {
		match := s.path == path
		if !match && filepath.IsAbs(s.path) {
			match = filepath.Clean(s.path) == filepath.Clean(path)
			if !match && target != nil && filepath.Base(s.path) == filepath.Base(path) {
				fi, err := os.Stat(s.path)
				match = err == nil && os.SameFile(fi, target)
			}
		}
		if match && !slices.Contains(inodes, s.inode) {
			inodes = append(inodes, s.inode)
		}
	}
	slices.SortFunc(inodes, func(a, b uint64) int { return cmp.Compare(b, a) })
	return inodes
}

// scanHolders reads the links in proc/*/fd/ and returns, for each of inodes,
// the pids of the processes that hold it, in ascending order, and how many
// processes' file descriptors could not be read for want of permission.
// Processes that exit during the scan are skipped.
func scanHolders(proc string, inodes []uint64) (map[uint64][]int, int, error) {
	links := make(map[string]uint64, len(inodes))
	for _, ino := range inodes {
		links["socket:["+strconv.FormatUint(ino, 10)+"]"] = ino
	}
	names, err := listDir(proc)
	if err != nil {
		return nil, 0, fmt.Errorf("hostprobe: %w", err)
	}
	held := make(map[uint64][]int)
	denied := 0
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		fdDir := filepath.Join(proc, name, "fd")
		fds, err := listDir(fdDir)
		if err != nil {
			if errors.Is(err, fs.ErrPermission) {
				denied++
			}
			continue
		}
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join(fdDir, fd))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			if ino, ok := links[target]; ok && !slices.Contains(held[ino], pid) {
				held[ino] = append(held[ino], pid)
			}
		}
	}
	for _, pids := range held {
		slices.Sort(pids)
	}
	return held, denied, nil
}

// listDir returns the names in dir, unsorted and all of them (unlike
// readDirNames).
func listDir(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// masterOf returns, of pids (ascending) that share a socket, the first whose
// parent is not among them: the process that opened the socket and forked
// the others. If every parent is among them, or none can be read, it
// returns the first pid.
func masterOf(proc string, pids []int) int {
	for _, pid := range pids {
		ppid, ok := readPPid(proc, pid)
		if ok && !slices.Contains(pids, ppid) {
			return pid
		}
	}
	return pids[0]
}

// readPPid reads the parent pid from proc/<pid>/stat, whose second field,
// the command name in parentheses, may itself hold spaces and parentheses.
func readPPid(proc string, pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	ppid, err := strconv.Atoi(f[1])
	return ppid, err == nil
}

// readHolder reads the name and command line of pid from proc. A process
// that has exited gets empty ones.
func readHolder(proc string, pid int) Holder {
	h := Holder{Pid: pid}
	dir := filepath.Join(proc, strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		h.Name = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
		h.Cmdline = cleanCmdline(b)
	}
	return h
}

// cleanCmdline turns the NUL-separated arguments of /proc/<pid>/cmdline
// into one line: NULs (and other control characters) become spaces, the
// ends are trimmed, and the line is cut to at most maxCmdline bytes, on a
// character boundary.
func cleanCmdline(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), "\uFFFD"))
	s = strings.TrimSpace(s)
	if len(s) > maxCmdline {
		cut := maxCmdline
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = strings.TrimSpace(s[:cut])
	}
	return s
}
