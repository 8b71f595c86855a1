package fpm

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// DiscoverPaths returns the places php-fpm's main configuration file is
// usually found, in the order Discover tries them: Debian and Ubuntu's
// /etc/php/<version>/fpm/php-fpm.conf (newest version first), Red Hat's
// /etc/php-fpm.conf, the official Docker image's and source builds'
// /usr/local/etc/php-fpm.conf, Alpine's /etc/php<version>/php-fpm.conf
// (newest first), Arch's /etc/php/php-fpm.conf, and Homebrew's. Versioned
// paths are listed only when they exist; the others always are.
func DiscoverPaths() []string {
	var out []string
	out = append(out, newestFirst(globAll("/etc/php/*/fpm/php-fpm.conf"), 3)...)
	out = append(out, "/etc/php-fpm.conf", "/usr/local/etc/php-fpm.conf")
	out = append(out, newestFirst(globAll("/etc/php[0-9]*/php-fpm.conf"), 2)...)
	out = append(out, "/etc/php/php-fpm.conf")
	out = append(out, newestFirst(globAll("/opt/homebrew/etc/php/*/php-fpm.conf"), 4)...)
	out = append(out, newestFirst(globAll("/usr/local/etc/php/*/php-fpm.conf"), 4)...)
	return out
}

func globAll(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	return m
}

// newestFirst sorts paths by the version in their path element number elem
// (counted from the end, the file name being 1), newest first: 8.10 comes
// before 8.9, php83 before php82.
func newestFirst(paths []string, elem int) []string {
	version := func(p string) []int {
		parts := strings.Split(p, "/")
		if len(parts) < elem {
			return nil
		}
		v := strings.TrimPrefix(parts[len(parts)-elem], "php")
		var out []int
		for _, f := range strings.Split(v, ".") {
			n, err := strconv.Atoi(f)
			if err != nil {
				return out
			}
			out = append(out, n)
		}
		if len(out) == 1 && len(v) >= 2 && !strings.Contains(v, ".") {
			// Alpine writes 8.3 as 83.
			out = []int{out[0] / 10, out[0] % 10}
		}
		return out
	}
	sort.SliceStable(paths, func(i, j int) bool {
		a, b := version(paths[i]), version(paths[j])
		for k := 0; k < len(a) && k < len(b); k++ {
			if a[k] != b[k] {
				return a[k] > b[k]
			}
		}
		return len(a) > len(b)
	})
	return paths
}

// Discover loads the first of DiscoverPaths that exists and can be read.
// lookupEnv looks up ${NAME}; nil means os.LookupEnv. The error lists the
// paths tried when none works.
func Discover(lookupEnv func(string) (string, bool)) (*Config, error) {
	return discover(DiscoverPaths(), lookupEnv)
}

func discover(paths []string, lookupEnv func(string) (string, bool)) (*Config, error) {
	var problems []string
	for _, p := range paths {
		c, err := Load(p, lookupEnv)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			problems = append(problems, p+" (not found)")
			continue
		}
		problems = append(problems, p+" ("+strings.TrimPrefix(unwrapPath(err).Error(), "php-fpm configuration: ")+")")
	}
	return nil, fmt.Errorf("no php-fpm configuration found; tried %s", strings.Join(problems, ", "))
}
