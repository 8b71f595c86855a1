package hostprobe

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// SocketDirs are the directories where php-fpm sockets usually live, in the
// order Nearby searches them.
var SocketDirs = []string{"/run/php", "/var/run/php", "/run/php-fpm", "/var/run/php-fpm", "/dev/shm", "/tmp"}

// Limits of Nearby.
const (
	maxNearby  = 50   // addresses returned
	maxDirScan = 4096 // entries read from one directory
)

// Nearby returns the unix socket files in the directory of path, then in
// SocketDirs, for "the socket you named does not exist; these do" hints.
// Only existing directories are read, each once (/var/run/php is usually
// /run/php), not recursively, and at most 50 sockets are returned, sorted by
// name within each directory. A symbolic link to a socket counts, under the
// link's name, as Debian's /run/php/php-fpm.sock is. path itself is left out;
// a "unix:" prefix is accepted.
func Nearby(path string) []fcgi.Addr {
	path = strings.TrimPrefix(path, "unix:")
	var dirs []string
	if path != "" {
		dirs = append(dirs, filepath.Dir(filepath.Clean(path)))
	}
	dirs = append(dirs, SocketDirs...)

	var out []fcgi.Addr
	seenDir := make(map[string]bool)
	seen := make(map[string]bool)
	if path != "" {
		seen[filepath.Clean(path)] = true
	}
	for _, dir := range dirs {
		real, err := filepath.EvalSymlinks(dir)
		if err != nil || seenDir[real] {
			continue
		}
		seenDir[real] = true
		for _, name := range readDirNames(dir) {
			p := filepath.Join(dir, name)
			if seen[p] {
				continue
			}
			seen[p] = true
			if fi, err := os.Stat(p); err != nil || fi.Mode().Type() != fs.ModeSocket {
				continue
			}
			out = append(out, fcgi.Addr{Network: "unix", Address: p})
			if len(out) == maxNearby {
				return out
			}
		}
	}
	return out
}

// readDirNames returns the sorted names of at most maxDirScan entries of dir.
func readDirNames(dir string) []string {
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, _ := f.Readdirnames(maxDirScan)
	slices.Sort(names)
	return names
}
