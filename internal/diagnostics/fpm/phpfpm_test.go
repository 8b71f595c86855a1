package fpm

import (
	"bufio"
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The test in this file runs php-fpm's own configuration test on the files
// under testdata and checks that php-fpm and this package agree: php-fpm
// accepts exactly the files for which Load reports nothing php-fpm refuses,
// and for the files it accepts, the values php-fpm prints with -tt are the
// values Load found.

const phpFPM = "php-fpm8.2"

// fpmCase is one configuration to give both php-fpm and Load.
type fpmCase struct {
	name   string
	path   string // the main file on disk
	prefix string // php-fpm's -p
	// accept says what php-fpm must conclude, so that the test also fails
	// when both get a file wrong in the same way.
	accept bool
}

func findPHPFPM(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath(phpFPM)
	if err != nil {
		for _, p := range []string{"/usr/sbin/" + phpFPM, "/usr/local/sbin/" + phpFPM} {
			if _, serr := os.Stat(p); serr == nil {
				return p
			}
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; CI=true requires it (make deps installs it)", phpFPM)
		}
		t.Skipf("%s is not installed, skipping the comparison with php-fpm's own configuration test", phpFPM)
	}
	return bin
}

// copyTree copies the directory src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// replaceLine replaces the line old of file by new, which must exist.
func replaceLine(t *testing.T, file, old, new string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	found := false
	for i, l := range lines {
		if l == old {
			lines[i], found = new, true
		}
	}
	if !found {
		t.Fatalf("%s has no line %q", file, old)
	}
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fpmCases(t *testing.T) []fpmCase {
	t.Helper()
	tmp := t.TempDir()

	// Debian's files, with the paths php-fpm opens under -t made valid:
	// the include pattern points at the copy, and the log goes to stderr.
	deb := filepath.Join(tmp, "debian")
	copyTree(t, "testdata/debian", deb)
	debMain := filepath.Join(deb, "etc/php/8.2/fpm/php-fpm.conf")
	replaceLine(t, debMain, "include=/etc/php/8.2/fpm/pool.d/*.conf", "include="+filepath.Join(deb, "etc/php/8.2/fpm/pool.d")+"/*.conf")
	replaceLine(t, debMain, "error_log = /var/log/php8.2-fpm.log", "error_log = /proc/self/fd/2")
	replaceLine(t, debMain, "pid = /run/php/php8.2-fpm.pid", "pid = "+filepath.Join(tmp, "php-fpm.pid"))

	// The Docker image's files need nothing: the include is relative to
	// the prefix, and the logs go to stderr already.
	dock := filepath.Join(tmp, "docker")
	copyTree(t, "testdata/docker", dock)

	syn, err := filepath.Abs("testdata/synthetic")
	if err != nil {
		t.Fatal(err)
	}
	cases := []fpmCase{
		{"debian", debMain, deb, true},
		{"docker", filepath.Join(dock, "usr/local/etc/php-fpm.conf"), filepath.Join(dock, "usr/local"), true},
		{"includes", filepath.Join(syn, "includes/php-fpm.conf"), filepath.Join(syn, "includes"), true},
		{"cycle", filepath.Join(syn, "cycle/php-fpm.conf"), filepath.Join(syn, "cycle"), false},
		{"missingdir", filepath.Join(syn, "missingdir/php-fpm.conf"), filepath.Join(syn, "missingdir"), false},
	}
	accepted := map[string]bool{
		"booleans.conf": true, "dynamic.conf": true, "listens.conf": true, "phpvalues.conf": true,
		"quoting.conf": true, "subst.conf": true, "timeunits.conf": true,
	}
	files, err := filepath.Glob(filepath.Join(syn, "*.conf"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no synthetic files: %v", err)
	}
	for _, f := range files {
		cases = append(cases, fpmCase{filepath.Base(f), f, syn, accepted[filepath.Base(f)]})
	}
	return cases
}

func TestPHPFPMAgreement(t *testing.T) {
	bin := findPHPFPM(t)
	for _, tc := range fpmCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-tt", "-n", "-p", tc.prefix, "-y", tc.path}
			if os.Geteuid() == 0 {
				// As root php-fpm wants a user for every pool, or this.
				args = append(args, "-R")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = os.Environ()
			for k, v := range testEnv {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
			out, _ := cmd.CombinedOutput()
			accepted := bytes.Contains(out, []byte("test is successful"))

			c, err := LoadOptions(tc.path, Options{Prefix: tc.prefix, LookupEnv: fakeEnv(testEnv)})
			if err != nil {
				t.Fatal(err)
			}
			ours := c.fatal == 0
			if accepted != tc.accept {
				t.Errorf("php-fpm accepted it: %v, the test expects %v; php-fpm said:\n%s", accepted, tc.accept, out)
			}
			if accepted != ours {
				t.Errorf("php-fpm accepted it: %v; Load found nothing fatal: %v\nwarnings:\n%s\nphp-fpm said:\n%s",
					accepted, ours, strings.Join(c.Warnings, "\n"), out)
			}
			if accepted && ours {
				compareDump(t, c, parseDump(out))
			}
		})
	}
}

var dumpLine = regexp.MustCompile(`^\[[^\]]*\] NOTICE: (.*)$`)

// dumpSection is one section of php-fpm -tt's dump: the directives in the
// order printed (php_value and env can repeat).
type dumpSection struct {
	name    string
	entries [][2]string
}

func (s *dumpSection) get(key string) (string, bool) {
	for i := len(s.entries) - 1; i >= 0; i-- {
		if s.entries[i][0] == key {
			return s.entries[i][1], true
		}
	}
	return "", false
}

// parseDump reads the sections php-fpm -tt prints, in order. With the error
// log on stderr every line comes twice, which does not change the result.
func parseDump(out []byte) []*dumpSection {
	var secs []*dumpSection
	var cur *dumpSection
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		m := dumpLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		text := m[1]
		if strings.HasPrefix(text, "[") && strings.HasSuffix(text, "]") {
			name := text[1 : len(text)-1]
			if cur == nil || cur.name != name {
				cur = &dumpSection{name: name}
				secs = append(secs, cur)
			}
			continue
		}
		if cur == nil || !strings.HasPrefix(text, "\t") {
			continue
		}
		k, v, ok := strings.Cut(text[1:], " = ")
		if !ok {
			continue
		}
		if n := len(cur.entries); n > 0 && cur.entries[n-1] == [2]string{k, v} && !strings.Contains(k, "[") {
			continue // the repeated line
		}
		cur.entries = append(cur.entries, [2]string{k, v})
	}
	return secs
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orUndefined(p *Pool, key string) string {
	if s, ok := p.Settings[key]; ok {
		return s.Value
	}
	return "undefined"
}

// compareDump checks Load's result against php-fpm's dump.
func compareDump(t *testing.T, c *Config, secs []*dumpSection) {
	t.Helper()
	if len(secs) == 0 || secs[0].name != "global" {
		t.Fatalf("no [global] in php-fpm's dump")
	}
	g := secs[0]
	check := func(where, key, got string, sec *dumpSection) {
		t.Helper()
		want, ok := sec.get(key)
		if !ok {
			t.Errorf("%s: php-fpm's dump has no %s", where, key)
			return
		}
		if got != want {
			t.Errorf("%s %s: Load says %q, php-fpm says %q", where, key, got, want)
		}
	}
	if c.ErrorLog != "" && strings.HasPrefix(c.ErrorLog, "/") {
		check("[global]", "error_log", c.ErrorLog, g)
	}
	check("[global]", "process_control_timeout", strconv.Itoa(int(c.ProcessControlTimeout/time.Second))+"s", g)
	if s, ok := c.Global["daemonize"]; ok {
		b, _ := parseBool(s.Value)
		check("[global]", "daemonize", yesNo(b), g)
	}

	pools := secs[1:]
	if len(pools) != len(c.Pools) {
		t.Fatalf("php-fpm has %d pools, Load %d", len(pools), len(c.Pools))
	}
	for i, p := range c.Pools {
		d := pools[i]
		where := "[pool " + p.Name + "]"
		if d.name != p.Name {
			t.Errorf("pool %d is %q for php-fpm, %q for Load", i, d.name, p.Name)
			continue
		}
		listen := p.Listen.Value
		if p.ListenAddr.Network == "unix" {
			listen = p.ListenAddr.Address
		}
		check(where, "listen", listen, d)
		check(where, "pm", p.PM, d)
		for key, v := range map[string]int{
			"pm.max_children": p.MaxChildren, "pm.start_servers": p.StartServers,
			"pm.min_spare_servers": p.MinSpare, "pm.max_spare_servers": p.MaxSpare,
			"pm.max_requests": p.MaxRequests, "listen.backlog": p.ListenBacklog,
			"pm.process_idle_timeout": int(p.ProcessIdleTimeout / time.Second),
		} {
			check(where, key, strconv.Itoa(v), d)
		}
		check(where, "request_terminate_timeout", strconv.Itoa(int(p.RequestTerminateTimeout/time.Second))+"s", d)
		check(where, "request_slowlog_timeout", strconv.Itoa(int(p.RequestSlowlogTimeout/time.Second))+"s", d)
		check(where, "request_terminate_timeout_track_finished", yesNo(p.RequestTerminateTimeoutTrackFinished), d)
		check(where, "catch_workers_output", yesNo(p.CatchWorkersOutput), d)
		check(where, "decorate_workers_output", yesNo(p.DecorateWorkersOutput), d)
		check(where, "clear_env", yesNo(p.ClearEnv), d)
		for _, key := range []string{"user", "group", "listen.owner", "listen.group", "listen.mode", "listen.allowed_clients", "pm.status_path", "ping.path"} {
			check(where, key, orUndefined(p, key), d)
		}
		format := p.AccessFormat
		if _, ok := p.Settings["access.format"]; !ok && format == "" {
			format = "undefined"
		}
		check(where, "access.format", format, d)
		pong := p.PingResponse
		if pong == "" {
			pong = "undefined"
		}
		check(where, "ping.response", pong, d)
		if strings.HasPrefix(p.Slowlog, "/") {
			check(where, "slowlog", p.Slowlog, d)
		}
		if strings.HasPrefix(p.AccessLog, "/") {
			check(where, "access.log", p.AccessLog, d)
		}
		if ext, _ := d.get("security.limit_extensions"); strings.Join(strings.Fields(ext), " ") != strings.Join(p.SecurityLimitExtensions, " ") {
			t.Errorf("%s security.limit_extensions: Load says %q, php-fpm says %q", where, p.SecurityLimitExtensions, ext)
		}
		comparePHPValues(t, where, p, d)
	}
}

// comparePHPValues checks PHPValues and Env against the dump, which lists
// them as php-fpm applies them: the last one listed for a name wins.
func comparePHPValues(t *testing.T, where string, p *Pool, d *dumpSection) {
	t.Helper()
	user, admin, env := map[string]string{}, map[string]string{}, map[string]string{}
	for _, e := range d.entries {
		name, key, ok := strings.Cut(e[0], "[")
		if !ok {
			continue
		}
		key = strings.TrimSuffix(key, "]")
		switch name {
		case "php_value":
			user[key] = e[1]
		case "php_admin_value":
			admin[key] = e[1]
		case "env":
			env[key] = e[1]
		}
	}
	want := map[string]PHPValue{}
	for k, v := range user {
		want[k] = PHPValue{Setting: Setting{Value: v}}
	}
	for k, v := range admin {
		want[k] = PHPValue{Setting: Setting{Value: v}, Admin: true}
	}
	if len(want) != len(p.PHPValues) {
		t.Errorf("%s: php-fpm has %d php values, Load %d: %v vs %v", where, len(want), len(p.PHPValues), want, p.PHPValues)
	}
	for k, w := range want {
		got, ok := p.PHPValues[k]
		if !ok || got.Value != w.Value || got.Admin != w.Admin {
			t.Errorf("%s php value %s: Load says %q (admin %v), php-fpm says %q (admin %v)", where, k, got.Value, got.Admin, w.Value, w.Admin)
		}
	}
	if len(env) != len(p.Env) {
		t.Errorf("%s: php-fpm has env %v, Load %v", where, env, p.Env)
	}
	for k, v := range env {
		if p.Env[k].Value != v {
			t.Errorf("%s env[%s]: Load says %q, php-fpm says %q", where, k, p.Env[k].Value, v)
		}
	}
}

// TestPHPFPMScanner puts awkward values, array keys and section names
// through php-fpm -tt and through Parse, and checks that both accept the
// same ones and read them alike.
func TestPHPFPMScanner(t *testing.T) {
	bin := findPHPFPM(t)
	const head = "[global]\nerror_log = /proc/self/fd/2\n"
	const pool = "listen = /tmp/fcgiscope-fpm-test-scan.sock\npm = static\npm.max_children = 1\n"
	values := []string{
		`pong`, `a   b ; comment`, `"a;b"`, `"a\"b\\c\nd\$e"`, `'a\"${HOME}'`, `"a" b "c"`,
		`a 'b' c`, `'a' 'b'`, `${HOME}x`, `"<${HOME}>"`, `a${NOPE}b`, `a$b$`, `$pool-$poolx`,
		`E_ALL`, `E_ALL & ~E_NOTICE`, `e_all`, `(1|2)&3`, `!0`, `~0`, `( 1 )`, `abc|1`, `On`, `NULL`,
		`yes please`, `a yes`, `a=b`, `pong!`, `a (b)`, `''`, `x''y`, `"abc`, `${HOME`, `${}`,
		`${ HOME }`, `${A$}`, `a{b}[c]`, `[::]:9000`, `$${HOME}`, `x$'y'`, `abc'`, `a 'b`, `'abc`,
		`"a$"`, `$~"${HOME}"`, `1 2`, "a\tb", `#x`, `%R - %u "%m %r" %s`,
	}
	offsets := []string{`a`, ` a `, `"a b"`, `'x y'`, `${HOME}`, `E_NOTICE`, `null`, `yes`, `\]`, `^$]E`, `$`, `a;b`, ``}
	sections := []string{`www`, ` www `, `"w w"`, `'q'`, `${HOME}`, `a"b"c`, `E_ALL`, `\]`, `a;b`, `$`, `  "x"`}
	type input struct{ name, src string }
	var inputs []input
	for _, v := range values {
		inputs = append(inputs, input{"value " + v, head + "[www]\n" + pool + "ping.path = /p\nping.response = " + v + "\n"})
	}
	for _, o := range offsets {
		inputs = append(inputs, input{"offset " + o, head + "[www]\n" + pool + "php_value[" + o + "] = 1\n"})
	}
	for _, s := range sections {
		inputs = append(inputs, input{"section " + s, head + "[" + s + "]\n" + pool})
	}
	dir := t.TempDir()
	env := map[string]string{"HOME": "/home/test"}
	for i, in := range inputs {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			file := filepath.Join(dir, strconv.Itoa(i)+".conf")
			if err := os.WriteFile(file, []byte(in.src), 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"-tt", "-n", "-p", dir, "-y", file}
			if os.Geteuid() == 0 {
				args = append(args, "-R")
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = append(os.Environ(), "HOME="+env["HOME"])
			cmd.Env = append(cmd.Env, "NOPE=") // set but empty, like unset for PHP
			out, _ := cmd.CombinedOutput()
			accepted := bytes.Contains(out, []byte("test is successful"))
			c := Parse(file, []byte(in.src), fakeEnv(env))
			if accepted != (c.fatal == 0) {
				t.Fatalf("%s: php-fpm accepted it: %v, Parse found nothing fatal: %v\nwarnings: %q\nphp-fpm said:\n%s", in.name, accepted, c.fatal == 0, c.Warnings, out)
			}
			if !accepted {
				return
			}
			secs := parseDump(out)
			if len(secs) != 2 || len(c.Pools) != 1 {
				t.Fatalf("%s: php-fpm has %d sections, Parse %d pools", in.name, len(secs), len(c.Pools))
			}
			p, d := c.Pools[0], secs[1]
			if d.name != p.Name {
				t.Errorf("%s: pool %q for php-fpm, %q for Parse", in.name, d.name, p.Name)
			}
			if v, ok := d.get("ping.response"); ok && v != "undefined" && v != p.PingResponse {
				t.Errorf("%s: php-fpm reads %q, Parse %q", in.name, v, p.PingResponse)
			}
			comparePHPValues(t, in.name, p, d)
		})
	}
}
