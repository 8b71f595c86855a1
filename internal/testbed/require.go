package testbed

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"testing"
)

// sbinDir is searched before PATH because Debian installs php-fpm and nginx
// there and /usr/sbin is often missing from PATH of unprivileged users.
const sbinDir = "/usr/sbin"

// RequireFPM returns the path of the newest installed php-fpm binary. It looks
// for php-fpmX.Y and php-fpm in /usr/sbin and in every PATH directory. When none
// is found the test is skipped, or fails when CI=true.
func RequireFPM(t testing.TB) string {
	t.Helper()
	dirs := append([]string{sbinDir}, filepath.SplitList(os.Getenv("PATH"))...)
	if path := findFPM(dirs); path != "" {
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

// fpmName matches versioned php-fpm binaries such as php-fpm8.2, capturing the
// version so that candidates can be ordered newest first.
var fpmName = regexp.MustCompile(`^php-fpm(\d+)\.(\d+)$`)

// fpmCandidate is an executable php-fpm found by findFPM.
type fpmCandidate struct {
	path         string
	major, minor int // both -1 for an unversioned "php-fpm"
}

// findFPM returns the newest php-fpm executable in dirs, or "" if there is
// none. Versioned binaries are preferred over a plain "php-fpm" because the
// latter is usually an alternatives symlink whose target is unknown; among
// equal versions the earlier directory wins, as in PATH lookup.
func findFPM(dirs []string) string {
	var found []fpmCandidate
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // Nonexistent PATH entries are common and harmless.
		}
		for _, e := range entries {
			c := fpmCandidate{path: filepath.Join(dir, e.Name()), major: -1, minor: -1}
			if m := fpmName.FindStringSubmatch(e.Name()); m != nil {
				c.major, _ = strconv.Atoi(m[1])
				c.minor, _ = strconv.Atoi(m[2])
			} else if e.Name() != "php-fpm" {
				continue
			}
			if isExecutable(c.path) {
				found = append(found, c)
			}
		}
	}
	if len(found) == 0 {
		return ""
	}
	sort.SliceStable(found, func(i, j int) bool {
		if found[i].major != found[j].major {
			return found[i].major > found[j].major
		}
		return found[i].minor > found[j].minor
	})
	return found[0].path
}

// isExecutable reports whether path (after following symlinks) is a regular
// file with an execute bit set.
func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
