package hostprobe

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// socketFile leaves a socket file at path with nothing listening on it, as
// a stopped php-fpm may.
func socketFile(t *testing.T, path string) {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
}

// under returns the addresses of addrs in dir.
func under(addrs []fcgi.Addr, dir string) []fcgi.Addr {
	var out []fcgi.Addr
	for _, a := range addrs {
		if filepath.Dir(a.Address) == dir {
			out = append(out, a)
		}
	}
	return out
}

func unixAddrs(paths ...string) []fcgi.Addr {
	var out []fcgi.Addr
	for _, p := range paths {
		out = append(out, fcgi.Addr{Network: "unix", Address: p})
	}
	return out
}

func TestNearby(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "php-fpm.sock")
	listenUnix(t, dir, "a.sock") // listening
	socketFile(t, b)             // stale
	if err := os.WriteFile(filepath.Join(dir, "not-a.sock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}

	got := Nearby(filepath.Join(dir, "php-cgi.sock"))
	want := unixAddrs(a, b)
	if !slices.Equal(got[:min(2, len(got))], want) {
		t.Errorf("Nearby = %v, want it to start with %v", got, want)
	}
	if !slices.Equal(under(got, dir), want) {
		t.Errorf("Nearby lists %v in %s, want %v", under(got, dir), dir, want)
	}
	for _, a := range got {
		if fi, err := os.Stat(a.Address); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Errorf("Nearby lists %v, which is not a socket (%v)", a, err)
		}
		if !slices.ContainsFunc(append([]string{dir}, SocketDirs...), func(d string) bool { return filepath.Dir(a.Address) == d }) {
			t.Errorf("Nearby lists %v, outside the directories searched", a)
		}
	}
	if slices.Contains(got[2:], got[0]) || slices.Contains(got[2:], got[1]) {
		t.Errorf("Nearby lists duplicates: %v", got)
	}

	// The named path is left out, "unix:" is accepted.
	got = Nearby("unix:" + b)
	if !slices.Equal(under(got, dir), unixAddrs(a)) {
		t.Errorf("Nearby(unix:%s) lists %v in its directory, want only %s", b, under(got, dir), a)
	}
}

func TestNearbySymlinkAndLimit(t *testing.T) {
	dir := testbed.ShortTempDir(t)
	target := filepath.Join(dir, "php8.2-fpm.sock")
	socketFile(t, target)
	link := filepath.Join(dir, "php-fpm.sock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(dir, "missing.sock"), filepath.Join(dir, "dangling.sock")); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	socketFile(t, filepath.Join(sub, "deep.sock"))
	got := under(Nearby(filepath.Join(dir, "x.sock")), dir)
	if want := unixAddrs(link, target); !slices.Equal(got, want) {
		t.Errorf("Nearby = %v, want %v (a link to a socket counts, subdirectories are not searched)", got, want)
	}

	many := testbed.ShortTempDir(t)
	for i := range 60 {
		socketFile(t, filepath.Join(many, fmt.Sprintf("s%03d.sock", i)))
	}
	got = Nearby(filepath.Join(many, "x.sock"))
	if len(got) != maxNearby {
		t.Fatalf("Nearby in a directory of 60 sockets returned %d, want %d", len(got), maxNearby)
	}
	if got[0].Address != filepath.Join(many, "s000.sock") || got[49].Address != filepath.Join(many, "s049.sock") {
		t.Errorf("Nearby = %v ... %v, want s000 ... s049", got[0], got[49])
	}
}
