package hostprobe

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// procNetUnix is /proc/net/unix as Linux 6.1 prints it (%pK hides the
// kernel addresses for unprivileged readers, hence the zeros in some lines).
const sampleUnix = `Num       RefCount Protocol Flags    Type St Inode Path
ffff8881003c5400: 00000002 00000000 00010000 0001 01 23456 /run/php/php8.2-fpm.sock
ffff8881003c5800: 00000002 00000000 00010000 0001 01 23457 /dev/shm/php-cgi.sock
ffff8881003c5c00: 00000003 00000000 00000000 0001 03 23458 /run/php/php8.2-fpm.sock
ffff8881003c6000: 00000002 00000000 00010000 0001 01 12001 @/tmp/.X11-unix/X0
ffff8881003c6400: 00000002 00000000 00010000 0001 01 12002 /tmp/.X11-unix/X0
ffff8881003c6800: 00000002 00000000 00010000 0005 01 12003 /run/udev/control
ffff8881003c6c00: 0000000A 00000000 00000000 0002 01 12004 /run/systemd/journal/dev-log
ffff8881003c7000: 00000002 00000000 00010000 0001 01 12005 /run/my app/php fpm.sock
0000000000000000: 00000003 00000000 00000000 0001 03  1073
0000000000000000: 00000002 00000000 00010000 0001 01 12006 relative.sock
ffff8881003c7c00: 00000002 00000000 00010000 0001 01   845 /run/dbus/system_bus_socket
ffff8881003c8000: 00000002 00000000 00010000 0001 01 12007 @
ffff8881003c8400: 00000002 00000000 00010000 0001 01 12008 @fcgiscope-abstract
this line is not from the kernel
ffff8881003c8800: 00000002 00000000 zzzzzzzz 0001 01 12009 /bad/flags.sock
ffff8881003c8c00: 00000003 00000000 00000000 0001 03 12010
`

func TestParseUnix(t *testing.T) {
	got, err := parseUnix(strings.NewReader(sampleUnix))
	if err != nil {
		t.Fatal(err)
	}
	want := []fcgi.Addr{
		{Network: "unix", Address: "/run/php/php8.2-fpm.sock"},
		{Network: "unix", Address: "/dev/shm/php-cgi.sock"},
		{Network: "unix", Address: "/tmp/.X11-unix/X0"},
		{Network: "unix", Address: "/run/my app/php fpm.sock"},
		{Network: "unix", Address: "/run/dbus/system_bus_socket"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseUnix =\n%v\nwant\n%v", got, want)
	}
}

// sampleTCP is /proc/net/tcp of a little-endian host: php-fpm on
// 127.0.0.1:9000 with one connection from nginx, nginx on 0.0.0.0:8080,
// a pool on the LAN address 10.0.0.5:9000, systemd-resolved on
// 127.0.0.53:53, sshd on 0.0.0.0:22, and a TIME_WAIT and a SYN_SENT line.
const sampleTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0                      
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31338 1 0000000000000000 100 0 0 10 0                      
   2: 0500000A:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 31339 1 0000000000000000 100 0 0 10 0                      
   3: 3500007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 18012 1 0000000000000000 100 0 0 10 5                      
   4: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 19500 1 0000000000000000 100 0 0 10 0                      
   5: 0100007F:2328 0100007F:C350 01 00000000:00000000 00:00000000 00000000    33        0 41234 1 0000000000000000 20 4 30 10 -1                    
   6: 0100007F:C350 0100007F:2328 01 00000000:00000000 00:00000000 00000000    33        0 41235 1 0000000000000000 20 4 30 10 -1                    
   7: 0100007F:0CEA 0100007F:2328 06 00000000:00000000 03:00001234 00000000     0        0 0 3 0000000000000000                                      
   8: 0500000A:D2F0 0800000A:0050 02 00000001:00000000 01:00000064 00000002     0        0 51234 1 0000000000000000 200 0 0 1 7                      
   9: 0100007F:ZZZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51235 1 0000000000000000 100 0 0 10 0                      
  10: 0100007F 00000000:0000 0A
`

func TestParseTCP(t *testing.T) {
	got, err := parseTCP(strings.NewReader(sampleTCP), binary.LittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	want := []fcgi.Addr{
		{Network: "tcp", Address: "127.0.0.1:9000"},
		{Network: "tcp", Address: "127.0.0.1:8080"},
		{Network: "tcp", Address: "127.0.0.53:53"},
		{Network: "tcp", Address: "127.0.0.1:22"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseTCP =\n%v\nwant\n%v", got, want)
	}
}

// sampleTCP6 is /proc/net/tcp6 of a little-endian host: php-fpm on
// [::]:9000, a pool on [::1]:8081, one on the v4-mapped 127.0.0.1:9001, one on
// the v4-mapped wildcard :9002, one on 2001:db8::5:9000 and one on the
// link-local fe80::5054:ff:fea1:d2c4:9000, plus an ESTABLISHED [::1] pair.
const sampleTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31400 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 31401 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 31402 1 0000000000000000 100 0 0 10 0
   3: 0000000000000000FFFF000000000000:232A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 31403 1 0000000000000000 100 0 0 10 0
   4: B80D0120000000000000000005000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 31404 1 0000000000000000 100 0 0 10 0
   5: 000080FE00000000FF005452C4D2A1FE:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 31405 1 0000000000000000 100 0 0 10 0
   6: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:C351 01 00000000:00000000 00:00000000 00000000    33        0 41300 1 0000000000000000 20 4 30 10 -1
`

func TestParseTCP6(t *testing.T) {
	got, err := parseTCP(strings.NewReader(sampleTCP6), binary.LittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	want := []fcgi.Addr{
		{Network: "tcp", Address: "[::1]:9000"},
		{Network: "tcp", Address: "[::1]:8081"},
		{Network: "tcp", Address: "127.0.0.1:9001"},
		{Network: "tcp", Address: "127.0.0.1:9002"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("parseTCP(tcp6) =\n%v\nwant\n%v", got, want)
	}
}

func TestParseProcAddrByteOrder(t *testing.T) {
	for _, tt := range []struct {
		in    string
		order binary.ByteOrder
		want  string
	}{
		{"0100007F:2328", binary.LittleEndian, "127.0.0.1:9000"},
		{"7F000001:2328", binary.BigEndian, "127.0.0.1:9000"},
		{"00000000000000000000000001000000:0050", binary.LittleEndian, "[::1]:80"},
		{"00000000000000000000000000000001:0050", binary.BigEndian, "[::1]:80"},
		{"B80D0120000000000000000005000000:0050", binary.LittleEndian, "[2001:db8::5]:80"},
	} {
		ap, ok := parseProcAddr(tt.in, tt.order)
		if !ok || ap.String() != tt.want {
			t.Errorf("parseProcAddr(%s, %v) = %v, %v; want %s", tt.in, tt.order, ap, ok, tt.want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:", "0100007F:0000", "0100007:2328", "XX00007F:2328", "0100007F:10000"} {
		if ap, ok := parseProcAddr(bad, binary.LittleEndian); ok {
			t.Errorf("parseProcAddr(%q) = %v, want failure", bad, ap)
		}
	}
}

func TestSortAddrs(t *testing.T) {
	in := []fcgi.Addr{
		{Network: "tcp", Address: "[::1]:9000"},
		{Network: "tcp", Address: "127.0.0.1:9000"},
		{Network: "unix", Address: "/run/php/b.sock"},
		{Network: "tcp", Address: "127.0.0.1:80"},
		{Network: "tcp", Address: "127.0.0.53:53"},
		{Network: "unix", Address: "/dev/shm/php-cgi.sock"},
		{Network: "tcp", Address: "127.0.0.1:9000"},
		{Network: "unix", Address: "/run/php/b.sock"},
		{Network: "tcp", Address: "127.0.0.2:9000"},
	}
	want := []fcgi.Addr{
		{Network: "unix", Address: "/dev/shm/php-cgi.sock"},
		{Network: "unix", Address: "/run/php/b.sock"},
		{Network: "tcp", Address: "127.0.0.53:53"},
		{Network: "tcp", Address: "127.0.0.1:80"},
		{Network: "tcp", Address: "127.0.0.1:9000"},
		{Network: "tcp", Address: "127.0.0.2:9000"},
		{Network: "tcp", Address: "[::1]:9000"},
	}
	if got := sortAddrs(in); !slices.Equal(got, want) {
		t.Errorf("sortAddrs =\n%v\nwant\n%v", got, want)
	}
}

// TestListeningLive reads this host's /proc. Every address must be one a
// test may dial: a unix path or a loopback TCP address.
func TestListeningLive(t *testing.T) {
	addrs, err := Listening()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(addrs, func(a, b fcgi.Addr) int {
		if a.Network != b.Network {
			return strings.Compare(b.Network, a.Network) // unix before tcp
		}
		return 0
	}) {
		t.Errorf("unix sockets are not listed first: %v", addrs)
	}
	for _, a := range addrs {
		switch a.Network {
		case "unix":
			if !strings.HasPrefix(a.Address, "/") {
				t.Errorf("unix address %q is not an absolute path", a.Address)
			}
		case "tcp":
			host, _, ok := splitTCP(a)
			if !ok || !loopbackHost(host) || host == "localhost" {
				t.Errorf("tcp address %q is not a loopback IP address", a.Address)
			}
		default:
			t.Errorf("address %v has network %q", a, a.Network)
		}
		if _, err := fcgi.ParseAddr(a.String()); err != nil {
			t.Errorf("fcgi.ParseAddr(%q): %v", a, err)
		}
	}
}
