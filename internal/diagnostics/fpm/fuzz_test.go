package fpm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics, stays fast, and cites only
// lines that exist. The seeds are in testdata/fuzz/FuzzParse; the files
// under testdata/synthetic are added too.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/synthetic/*.conf")
	files = append(files, "testdata/debian/etc/php/8.2/fpm/pool.d/www.conf")
	for _, file := range files {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b)
		}
	}
	env := fakeEnv(map[string]string{"A": "1", "POOL": "$pool"})
	f.Fuzz(func(t *testing.T, src []byte) {
		start := time.Now()
		c := Parse("f.conf", src, env)
		if d := time.Since(start); d > 2*time.Second && len(src) < 1<<20 {
			t.Errorf("Parse took %v for %d bytes", d, len(src))
		}
		lines := strings.Count(string(src), "\n") + 1
		cited := func(s Setting) {
			if s.File != "f.conf" || s.Line < 1 || s.Line > lines {
				t.Errorf("setting %q cited at %s:%d; the input has %d lines", s.Key, s.File, s.Line, lines)
			}
		}
		for _, s := range c.Global {
			cited(s)
		}
		for _, p := range c.Pools {
			if p.Line < 1 || p.Line > lines {
				t.Errorf("pool %q at line %d", p.Name, p.Line)
			}
			for _, s := range p.Settings {
				cited(s)
			}
			for _, v := range p.PHPValues {
				cited(v.Setting)
			}
		}
		for _, w := range c.Warnings {
			if !strings.HasPrefix(w, "f.conf") {
				t.Errorf("warning %q does not name the file", w)
			}
		}
		if c.fatal > len(c.Warnings) {
			t.Errorf("%d fatal warnings out of %d", c.fatal, len(c.Warnings))
		}
	})
}
