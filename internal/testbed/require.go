package testbed

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
)

// sbinDir is searched before PATH because Debian installs php-fpm and nginx
// there and /usr/sbin is often missing from PATH of unprivileged users.
const sbinDir = "/usr/sbin"

// RequireFPM returns the path of the newest installed php-fpm binary, as
// phpfpm.Find chooses it. When none is found the test is skipped, or fails
// when CI=true.
func RequireFPM(t testing.TB) string {
	t.Helper()
	if path, err := phpfpm.Find(); err == nil {
		return path
	}
	missingBinary(t, inCI(), "php-fpm", "apt-get install php8.2-fpm")
	return ""
}

// RequireNginx returns the path of the nginx binary, /usr/sbin/nginx or the
// first nginx in PATH. When none is found the test is skipped, or fails when
// CI=true.
func RequireNginx(t testing.TB) string {
	t.Helper()
	dirs := append([]string{sbinDir}, filepath.SplitList(os.Getenv("PATH"))...)
	for _, dir := range dirs {
		if path := filepath.Join(dir, "nginx"); isExecutable(path) {
			return path
		}
	}
	missingBinary(t, inCI(), "nginx", "apt-get install nginx")
	return ""
}

// inCI reports whether the tests run in CI, where missing integration
// dependencies must fail the build instead of being skipped.
func inCI() bool {
	return os.Getenv("CI") == "true"
}

// missingBinary ends the test because binary is not installed. It is separate
// from the lookups so that the skip-or-fail decision can be tested with a fake
// testing.TB. The message is deliberately loud: a skipped integration test is
// easy to overlook in a long `go test` output.
func missingBinary(t testing.TB, ci bool, binary, install string) {
	t.Helper()
	if ci {
		t.Fatalf("integration test needs %s, which was not found in %s or PATH; install it with `%s` "+
			"(failing instead of skipping because CI=true)", binary, sbinDir, install)
		return
	}
	t.Skipf("SKIPPING integration test: %s not found (%s); set CI=true to make this a failure", binary, install)
}

// isExecutable reports whether path (after following symlinks) is a regular
// file with an execute bit set.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
