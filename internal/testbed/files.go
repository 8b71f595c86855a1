package testbed

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// phpScripts holds the PHP test scripts copied by PHPRoot.
//
//go:embed php
var phpScripts embed.FS

// maxSunPath is the usable length of sockaddr_un.sun_path on Linux (108 bytes
// including the terminating NUL).
const maxSunPath = 107

// ShortTempDir returns a new directory with a short path, removed in
// t.Cleanup. Unix socket paths are limited to 108 bytes and t.TempDir paths,
// which embed the test name, easily exceed that. The directory has mode 0755
// so that worker processes running as another user can traverse it.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fs")
	if err != nil {
		t.Fatalf("testbed: creating short temp dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("testbed: removing %s: %v", dir, err)
		}
	})
	// MkdirTemp creates the directory with mode 0700.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatalf("testbed: chmod %s: %v", dir, err)
	}
	return dir
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. The
// port is released before returning, so another process could take it; this
// is accepted because the alternative, passing listeners to child processes,
// is not supported by php-fpm and nginx configs.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testbed: finding a free port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatalf("testbed: releasing port %d: %v", port, err)
	}
	return port
}

// PHPRoot copies the embedded PHP test scripts into a new directory and returns
// its absolute path, for use as a document root. Directories get mode 0755 and
// files 0644, and the directory lives in a ShortTempDir rather than
// t.TempDir, because php-fpm workers may run as another user and must be able
// to traverse every parent directory.
//
// The scripts are:
//
//   - hello.php: prints "hello from php\n".
//   - echo.php: prints "len=<bytes> sha256=<hex>\n" of the request body.
//   - big.php?mb=N: streams N MiB (default 20) of application/octet-stream.
//     The content is made of 1 KiB blocks; block k is fmt.Sprintf("%07d\n", k)
//     repeated 128 times.
//   - sha.php?mb=N: prints only the sha256 hex (64 characters, no newline) of
//     what big.php?mb=N sends.
//   - cookies.php: status 201, Set-Cookie a=1, b=2, c=3, X-Custom: yes, body
//     "cookies\n".
//   - stderr.php: writes "this goes to stderr\n" to the worker's stderr (seen
//     in the php-fpm error log only with CatchWorkersOutput) and logs
//     "this goes to fastcgi stderr" with error_log(), which PHP sends over
//     FastCGI stderr so that nginx logs "FastCGI sent in stderr"; prints
//     "stderr ok\n".
//   - sleep.php?s=F&flush=1: optionally prints and flushes "started\n" (with
//     X-Accel-Buffering: no, so that nginx forwards it at once), sleeps F
//     seconds (default 1) even when signalled, prints "slept\n".
//   - env.php: prints the HTTP_* request variables and REQUEST_METHOD,
//     SCRIPT_FILENAME, REQUEST_URI, QUERY_STRING, CONTENT_LENGTH as sorted
//     "KEY=value\n" lines.
//   - crash.php?sig=N&flush=1: optionally prints and flushes "partial\n" (with
//     X-Accel-Buffering: no), then kills its worker with signal N (default 11,
//     SIGSEGV) via posix_kill.
//   - fatal.php: calls an undefined function (PHP Fatal error, status 500).
//   - memory.php: exhausts an 8M memory_limit (PHP Fatal error, status 500).
//   - session.php?kb=N: starts a session and stores N KiB (default 64) in
//     it, which PHP writes to session.save_path when the script ends.
//   - hog.php?mb=N: allocates and touches N MiB (default 256), for a worker
//     the OOM killer takes; the pool must lift memory_limit.
//   - stderrflood.php?n=N: writes N lines (default 50000) with error_log()
//     before any output, then prints "flooded N\n".
//   - bigcontent.inc.php: the generator shared by big.php and sha.php; it
//     prints nothing.
func PHPRoot(t testing.TB) string {
	t.Helper()
	root := ShortTempDir(t)
	scripts, err := fs.Sub(phpScripts, "php")
	if err != nil {
		t.Fatalf("testbed: embedded PHP scripts: %v", err)
	}
	err = fs.WalkDir(scripts, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(root, filepath.FromSlash(name))
		if d.IsDir() {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			return os.Chmod(dst, 0o755) // Undo the umask.
		}
		data, err := fs.ReadFile(scripts, name)
		if err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
		return os.Chmod(dst, 0o644)
	})
	if err != nil {
		t.Fatalf("testbed: copying PHP scripts to %s: %v", root, err)
	}
	return root
}

// parseNginxAddr splits an address in nginx fastcgi_pass syntax
// ("host:port" or "unix:/path") into what net.Dial takes. A bare absolute path
// is accepted as a unix socket too, because php-fpm's listen uses that form.
func parseNginxAddr(addr string) (network, address string, err error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		network, address = "unix", strings.TrimPrefix(addr, "unix:")
	case strings.HasPrefix(addr, "/"):
		network, address = "unix", addr
	default:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return "", "", fmt.Errorf("address %q is neither host:port nor unix:/path: %w", addr, err)
		}
		return "tcp", addr, nil
	}
	if !path.IsAbs(address) {
		return "", "", fmt.Errorf("unix socket path %q is not absolute", address)
	}
	if len(address) > maxSunPath {
		return "", "", fmt.Errorf("unix socket path %q is %d bytes, longer than the %d allowed (use ShortTempDir)",
			address, len(address), maxSunPath)
	}
	return network, address, nil
}

// readFileString returns the contents of name, or "" when it does not exist
// yet (logs are created lazily by the servers).
func readFileString(name string) string {
	data, err := os.ReadFile(name)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("<reading %s: %v>", name, err)
	}
	return string(data)
}

// tail returns the last n lines of s, which is enough context in a failure
// message without flooding it.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
