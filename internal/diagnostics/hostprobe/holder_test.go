package hostprobe

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

func TestHolderString(t *testing.T) {
	for _, tt := range []struct {
		h    Holder
		want string
	}{
		{Holder{Pid: 1234, Name: "nginx", Cmdline: "nginx: master process /usr/sbin/nginx"}, "pid 1234 (nginx: master process /usr/sbin/nginx)"},
		{Holder{Pid: 1234, Name: "kworker/0:1"}, "pid 1234 (kworker/0:1)"},
		{Holder{Pid: 1234}, "pid 1234"},
	} {
		if got := tt.h.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.h, got, tt.want)
		}
	}
}

func TestCleanCmdline(t *testing.T) {
	long := strings.Repeat("x", maxCmdline-1) + "é" // é straddles the limit
	for _, tt := range []struct {
		in, want string
	}{
		{"php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)\x00\x00\x00", "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"},
		{"/usr/sbin/php-fpm8.2\x00--nodaemonize\x00--fpm-config\x00/etc/php.conf\x00", "/usr/sbin/php-fpm8.2 --nodaemonize --fpm-config /etc/php.conf"},
		{"nginx: worker process                  ", "nginx: worker process"},
		{"a\nb\tc\x00", "a b c"},
		{"", ""},
		{"\x00\x00", ""},
		{long, strings.Repeat("x", maxCmdline-1)},
		{strings.Repeat("y", 3*maxCmdline), strings.Repeat("y", maxCmdline)},
		{"bad \xff byte", "bad \uFFFD byte"},
	} {
		if got := cleanCmdline([]byte(tt.in)); got != tt.want {
			t.Errorf("cleanCmdline(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := cleanCmdline([]byte(tt.in)); len(got) > maxCmdline {
			t.Errorf("cleanCmdline(%q) is %d bytes long", tt.in, len(got))
		}
	}
}

// holderUnix is /proc/net/unix with the inodes that ListenerHolder looks
// for: php-fpm's socket bound twice (the file of inode 3001 was removed and
// the path bound again by 3003), a client connection on it, a SEQPACKET
// listener, an abstract socket, a path with spaces, a relative path, and
// lines with a bad inode or none.
const holderUnix = `Num       RefCount Protocol Flags    Type St Inode Path
ffff8881003c5400: 00000002 00000000 00010000 0001 01 3001 /run/php/php8.2-fpm.sock
ffff8881003c5800: 00000003 00000000 00000000 0001 03 3002 /run/php/php8.2-fpm.sock
ffff8881003c5c00: 00000002 00000000 00010000 0001 01 3003 /run/php/php8.2-fpm.sock
ffff8881003c6000: 00000002 00000000 00010000 0005 01 3004 /run/seq.sock
ffff8881003c6400: 00000002 00000000 00010000 0001 01 3005 @fcgiscope-abstract
ffff8881003c6800: 00000002 00000000 00010000 0001 01 3006 /run/my app/php fpm.sock
ffff8881003c6c00: 00000002 00000000 00010000 0001 01 3007 relative.sock
ffff8881003c7000: 00000002 00000000 00010000 0001 01 3008
ffff8881003c7400: 00000002 00000000 00010000 0001 01 0 /zero-inode.sock
ffff8881003c7800: 00000002 00000000 00010000 0001 01 zz /bad-inode.sock
ffff8881003c7c00: 00000002 00000000 zzzzzzzz 0001 01 3009 /bad-flags.sock
ffff8881003c8000: 00000002
this line is not from the kernel
`

func TestParseUnixInodes(t *testing.T) {
	got, err := parseUnixInodes(strings.NewReader(holderUnix))
	if err != nil {
		t.Fatal(err)
	}
	want := []procSocket{
		{inode: 3001, path: "/run/php/php8.2-fpm.sock"},
		{inode: 3003, path: "/run/php/php8.2-fpm.sock"},
		{inode: 3004, path: "/run/seq.sock"},
		{inode: 3005, path: "@fcgiscope-abstract"},
		{inode: 3006, path: "/run/my app/php fpm.sock"},
		{inode: 3007, path: "relative.sock"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseUnixInodes =\n%v\nwant\n%v", got, want)
	}
	for _, tt := range []struct {
		path string
		want []uint64
	}{
		{"/run/php/php8.2-fpm.sock", []uint64{3003, 3001}},
		{"/run/php/./php8.2-fpm.sock", []uint64{3003, 3001}},
		{"/run/seq.sock", []uint64{3004}},
		{"@fcgiscope-abstract", []uint64{3005}},
		{"/run/my app/php fpm.sock", []uint64{3006}},
		{"relative.sock", []uint64{3007}},
		{"/run/php/php7.4-fpm.sock", nil},
		{"/zero-inode.sock", nil},
		{"/bad-flags.sock", nil},
	} {
		if got := matchUnix(got, tt.path); !slices.Equal(got, tt.want) {
			t.Errorf("matchUnix(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

// TestMatchUnixSymlink checks that a socket bound under a directory is found
// by a path through a symbolic link to that directory (/var/run -> /run).
func TestMatchUnixSymlink(t *testing.T) {
	dir := t.TempDir()
	realDir := filepath.Join(dir, "run")
	if err := os.Mkdir(realDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(realDir, "php.sock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(realDir, filepath.Join(dir, "varrun")); err != nil {
		t.Fatal(err)
	}
	socks := []procSocket{
		{inode: 7, path: filepath.Join(realDir, "php.sock")},
		{inode: 8, path: filepath.Join(realDir, "other.sock")},
	}
	if got := matchUnix(socks, filepath.Join(dir, "varrun", "php.sock")); !slices.Equal(got, []uint64{7}) {
		t.Errorf("matchUnix through a symbolic link = %v, want [7]", got)
	}
}

// holderTCP is /proc/net/tcp of a little-endian host: php-fpm on
// 127.0.0.1:9000 (inode 1001) with a connection to it, nginx on
// 0.0.0.0:8080 (1002), a pool on 10.0.0.5:9000 (1003), one on 0.0.0.0:9001
// (1004), and lines that must be skipped: an inode that is not a number, an
// inode 0, a line cut before the inode, and garbage.
const holderTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0500000A:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 1003 1 0000000000000000 100 0 0 10 0
   3: 00000000:2329 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 1004 1 0000000000000000 100 0 0 10 0
   4: 0100007F:2328 0100007F:C350 01 00000000:00000000 00:00000000 00000000    33        0 2001 1 0000000000000000 20 4 30 10 -1
   5: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 zz 1 0000000000000000 100 0 0 10 0
   6: 0100007F:0051 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 0 1 0000000000000000 100 0 0 10 0
   7: 0100007F:0052 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0
this line is not from the kernel
`

// holderTCP6 is /proc/net/tcp6 of the same host: [::]:9001 (1101),
// [::]:9002 (1102), [::1]:8080 (1103), the v4-mapped 127.0.0.1:9003 (1104)
// and [2001:db8::5]:9000 (1105).
const holderTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1101 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:232A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1102 1 0000000000000000 100 0 0 10 0
   2: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 1103 1 0000000000000000 100 0 0 10 0
   3: 0000000000000000FFFF00000100007F:232B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 1104 1 0000000000000000 100 0 0 10 0
   4: B80D0120000000000000000005000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 1105 1 0000000000000000 100 0 0 10 0
`

func TestParseTCPInodes(t *testing.T) {
	v4, err := parseTCPInodes(strings.NewReader(holderTCP), binary.LittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := parseTCPInodes(strings.NewReader(holderTCP6), binary.LittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	socks := append(v4, v6...)
	var got []string
	for _, s := range socks {
		got = append(got, s.addr.String()+"="+strconv.FormatUint(s.inode, 10))
	}
	want := []string{
		"127.0.0.1:9000=1001", "0.0.0.0:8080=1002", "10.0.0.5:9000=1003", "0.0.0.0:9001=1004",
		"[::]:9001=1101", "[::]:9002=1102", "[::1]:8080=1103", "[::ffff:127.0.0.1]:9003=1104", "[2001:db8::5]:9000=1105",
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseTCPInodes =\n%v\nwant\n%v", got, want)
	}

	be, err := parseTCPInodes(strings.NewReader("0: 7F000001:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 42 1\n"), binary.BigEndian)
	if err != nil || len(be) != 1 || be[0].addr.String() != "127.0.0.1:9000" || be[0].inode != 42 {
		t.Errorf("parseTCPInodes(big-endian) = %v, %v; want 127.0.0.1:9000=42", be, err)
	}

	for _, tt := range []struct {
		addr string
		want []uint64
	}{
		{"127.0.0.1:9000", []uint64{1001}},
		{"10.0.0.5:9000", []uint64{1003}},
		{"10.0.0.6:9000", nil},
		{"127.0.0.1:8080", []uint64{1002}},          // 0.0.0.0, not [::1]
		{"[::1]:8080", []uint64{1103}},              // not 0.0.0.0
		{"localhost:8080", []uint64{1103, 1002}},    // [::1] itself before 0.0.0.0
		{"127.0.0.1:9001", []uint64{1004, 1101}},    // 0.0.0.0 before the dual-stack ::
		{"[::1]:9001", []uint64{1101}},              //
		{"127.0.0.1:9002", []uint64{1102}},          // :: holds IPv4 too
		{"0.0.0.0:9002", []uint64{1102}},            // a wildcard host is its loopback
		{"[::]:9002", []uint64{1102}},               //
		{"[::ffff:127.0.0.1]:9002", []uint64{1102}}, //
		{"127.0.0.1:9003", []uint64{1104}},          // v4-mapped listener
		{"[::ffff:127.0.0.1]:9003", []uint64{1104}}, //
		{"[2001:db8::5]:9000", []uint64{1105}},      //
		{"127.0.0.1:80", nil},                       // bad inode
		{"127.0.0.1:81", nil},                       // inode 0
		{"127.0.0.1:82", nil},                       // no inode
		{"127.0.0.1:7", nil},                        //
	} {
		a, err := fcgi.ParseAddr(tt.addr)
		if err != nil {
			t.Fatal(err)
		}
		wants, port, err := tcpTargets(a)
		if err != nil {
			t.Errorf("tcpTargets(%s): %v", a, err)
			continue
		}
		if got := matchTCP(socks, wants, port); !slices.Equal(got, tt.want) {
			t.Errorf("matchTCP(%s) = %v, want %v", a, got, tt.want)
		}
	}
}

func TestTCPTargetsRefusesHostNames(t *testing.T) {
	_, _, err := tcpTargets(fcgi.Addr{Network: "tcp", Address: "php.example:9000"})
	if err == nil || errors.Is(err, ErrNoHolder) {
		t.Errorf("tcpTargets(php.example:9000) = %v, want an error that is not ErrNoHolder", err)
	}
}

// fakeProc builds a /proc with the given processes: pid -> ppid, comm,
// cmdline and fd links.
func fakeProc(t *testing.T, procs map[int]fakeProcess) string {
	t.Helper()
	dir := t.TempDir()
	for pid, p := range procs {
		pdir := filepath.Join(dir, strconv.Itoa(pid))
		if err := os.MkdirAll(filepath.Join(pdir, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		stat := strconv.Itoa(pid) + " (" + p.comm + ") S " + strconv.Itoa(p.ppid) + " 1 1 0 -1 4194560\n"
		files := map[string]string{"stat": stat, "comm": p.comm + "\n", "cmdline": p.cmdline}
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(pdir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for fd, target := range p.fds {
			if err := os.Symlink(target, filepath.Join(pdir, "fd", strconv.Itoa(fd))); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"net", "sys"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("100", filepath.Join(dir, "self")); err != nil {
		t.Fatal(err)
	}
	return dir
}

type fakeProcess struct {
	ppid          int
	comm, cmdline string
	fds           map[int]string
}

func TestScanHoldersFakeProc(t *testing.T) {
	proc := fakeProc(t, map[int]fakeProcess{
		1:   {0, "systemd", "/sbin/init\x00", map[int]string{3: "socket:[1]"}},
		100: {1, "php-fpm8.2", "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)\x00\x00\x00", map[int]string{0: "/dev/null", 7: "socket:[555]"}},
		101: {100, "php-fpm8.2", "php-fpm: pool www\x00", map[int]string{0: "socket:[555]", 1: "pipe:[9]"}},
		102: {100, "a) b) c", "", map[int]string{0: "socket:[555]"}},
		200: {1, "nginx", "nginx: master process /usr/sbin/nginx\x00", map[int]string{6: "socket:[556]", 7: "socket:[5560]"}},
		// A master with a higher pid than its worker, after the pids wrapped.
		300: {1, "php-fpm8.2", "php-fpm: master process\x00", map[int]string{5: "socket:[557]"}},
		250: {300, "php-fpm8.2", "php-fpm: pool www\x00", map[int]string{5: "socket:[557]"}},
	})
	held, denied, err := scanHolders(proc, []uint64{555, 556, 557, 558})
	if err != nil {
		t.Fatal(err)
	}
	if denied != 0 {
		t.Errorf("denied = %d, want 0", denied)
	}
	want := map[uint64][]int{555: {100, 101, 102}, 556: {200}, 557: {250, 300}}
	if len(held) != len(want) {
		t.Errorf("scanHolders = %v, want %v", held, want)
	}
	for ino, pids := range want {
		if !slices.Equal(held[ino], pids) {
			t.Errorf("scanHolders[%d] = %v, want %v", ino, held[ino], pids)
		}
	}
	for _, tt := range []struct {
		pids []int
		want int
	}{
		{[]int{100, 101, 102}, 100},
		{[]int{101, 102}, 101}, // parents not among them: the first
		{[]int{250, 300}, 300},
		{[]int{999}, 999}, // gone
	} {
		if got := masterOf(proc, tt.pids); got != tt.want {
			t.Errorf("masterOf(%v) = %d, want %d", tt.pids, got, tt.want)
		}
	}
	if ppid, ok := readPPid(proc, 102); !ok || ppid != 100 {
		t.Errorf("readPPid of a command name with parentheses = %d, %v; want 100", ppid, ok)
	}
	h := readHolder(proc, 100)
	if want := (Holder{Pid: 100, Name: "php-fpm8.2", Cmdline: "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"}); h != want {
		t.Errorf("readHolder = %#v, want %#v", h, want)
	}
	if h := readHolder(proc, 999); h != (Holder{Pid: 999}) {
		t.Errorf("readHolder of a gone process = %#v", h)
	}
}

func TestUnseenReason(t *testing.T) {
	if s := unseenReason([]uint64{555}, 3); !strings.Contains(s, "inode 555") || !strings.Contains(s, "3 processes") || !strings.Contains(s, "permission denied") {
		t.Errorf("unseenReason with denied processes = %q", s)
	}
	if s := unseenReason([]uint64{555, 554}, 0); !strings.Contains(s, "2 socket inodes") || !strings.Contains(s, "pid namespace") {
		t.Errorf("unseenReason without denied processes = %q", s)
	}
}

// checkSelf checks that h is this test process.
func checkSelf(t *testing.T, a fcgi.Addr, h Holder) {
	t.Helper()
	if h.Pid != os.Getpid() {
		t.Errorf("ListenerHolder(%s).Pid = %d, want this process, %d", a, h.Pid, os.Getpid())
	}
	// comm is the executable's base name cut to 15 bytes.
	if base := filepath.Base(os.Args[0]); h.Name == "" || !strings.HasPrefix(base, h.Name) {
		t.Errorf("ListenerHolder(%s).Name = %q, want a prefix of %q", a, h.Name, base)
	}
	if arg0 := os.Args[0]; !strings.HasPrefix(h.Cmdline, arg0[:min(len(arg0), maxCmdline)]) {
		t.Errorf("ListenerHolder(%s).Cmdline = %q, want it to start with %q", a, h.Cmdline, arg0)
	}
	if s := h.String(); !strings.HasPrefix(s, "pid "+strconv.Itoa(os.Getpid())+" (") {
		t.Errorf("Holder.String() = %q", s)
	}
}

func holderListen(t *testing.T, network, address string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func TestListenerHolderTCP(t *testing.T) {
	ln := holderListen(t, "tcp", "127.0.0.1:0")
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, host := range []string{"127.0.0.1", "localhost", "0.0.0.0"} {
		a := fcgi.Addr{Network: "tcp", Address: net.JoinHostPort(host, port)}
		h, err := ListenerHolder(a)
		if err != nil {
			t.Errorf("ListenerHolder(%s): %v", a, err)
			continue
		}
		checkSelf(t, a, h)
	}
}

// TestListenerHolderDualStack listens on [::] and finds it from IPv4 and
// IPv6 loopback addresses.
func TestListenerHolderDualStack(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	for _, host := range []string{"127.0.0.1", "::1", "::"} {
		a := fcgi.Addr{Network: "tcp", Address: net.JoinHostPort(host, port)}
		h, err := ListenerHolder(a)
		if err != nil {
			t.Errorf("ListenerHolder(%s): %v", a, err)
			continue
		}
		checkSelf(t, a, h)
	}
}

func TestListenerHolderUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "holder.sock")
	holderListen(t, "unix", path)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, filepath.Join(link, "holder.sock")} {
		a := fcgi.Addr{Network: "unix", Address: p}
		h, err := ListenerHolder(a)
		if err != nil {
			t.Errorf("ListenerHolder(%s): %v", a, err)
			continue
		}
		checkSelf(t, a, h)
	}
}

func TestListenerHolderNone(t *testing.T) {
	// A port that was just freed, a unix socket whose listener closed, a
	// path where nothing was ever bound, and a connected (not listening)
	// unix socket.
	ln := holderListen(t, "tcp", "127.0.0.1:0")
	closedTCP := fcgi.Addr{Network: "tcp", Address: ln.Addr().String()}
	ln.Close()

	dir := t.TempDir()
	uln := holderListen(t, "unix", filepath.Join(dir, "closed.sock"))
	uln.Close()

	pair, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "dgram.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()

	for _, a := range []fcgi.Addr{
		closedTCP,
		{Network: "unix", Address: filepath.Join(dir, "closed.sock")},
		{Network: "unix", Address: filepath.Join(dir, "never.sock")},
		{Network: "unix", Address: filepath.Join(dir, "dgram.sock")},
	} {
		h, err := ListenerHolder(a)
		if !errors.Is(err, ErrNoHolder) {
			t.Errorf("ListenerHolder(%s) = %v, %v; want ErrNoHolder", a, h, err)
			continue
		}
		if !strings.Contains(err.Error(), a.String()) || !strings.Contains(err.Error(), "nothing listens") {
			t.Errorf("ListenerHolder(%s) error %q does not name the address and say nothing listens", a, err)
		}
	}

	for _, a := range []fcgi.Addr{
		{Network: "udp", Address: "127.0.0.1:53"},
		{Network: "tcp", Address: "php.example:9000"},
		{Network: "tcp", Address: "no-port"},
	} {
		if _, err := ListenerHolder(a); err == nil || errors.Is(err, ErrNoHolder) {
			t.Errorf("ListenerHolder(%s) = %v, want an error that is not ErrNoHolder", a, err)
		}
	}
}
