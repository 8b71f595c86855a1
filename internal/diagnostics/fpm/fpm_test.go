package fpm

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// fakeEnv is the environment the tests give ${NAME}.
func fakeEnv(vars map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := vars[name]
		return v, ok
	}
}

var testEnv = map[string]string{
	"FCGISCOPE_TEST_LISTEN":  "/tmp/fcgiscope-fpm-test-subst.sock",
	"FCGISCOPE_TEST_TIMEOUT": "90s",
}

func noWarnings(t *testing.T, c *Config) {
	t.Helper()
	for _, w := range c.Warnings {
		t.Errorf("unexpected warning: %s", w)
	}
}

// wantWarning fails unless exactly one warning contains each of parts, in
// order, and reports whether it makes php-fpm refuse to start.
func wantWarning(t *testing.T, c *Config, parts ...string) (fatal bool) {
	t.Helper()
	var found []string
	for _, w := range c.Warnings {
		rest, ok := w, true
		for _, p := range parts {
			i := strings.Index(rest, p)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(p):]
		}
		if ok {
			found = append(found, w)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one warning with %q, got %d among:\n%s", parts, len(found), strings.Join(c.Warnings, "\n"))
	}
	return strings.HasSuffix(found[0], "(php-fpm refuses to start)")
}

func mustPool(t *testing.T, c *Config, name string) *Pool {
	t.Helper()
	p := c.Pool(name)
	if p == nil {
		var names []string
		for _, p := range c.Pools {
			names = append(names, p.Name)
		}
		t.Fatalf("no pool %q; pools: %q; warnings:\n%s", name, names, strings.Join(c.Warnings, "\n"))
	}
	return p
}

// lineOf returns the 1-based number of the line of file that equals text.
func lineOf(t *testing.T, file, text string) int {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(b), "\n") {
		if l == text {
			return i + 1
		}
	}
	t.Fatalf("%s has no line %q", file, text)
	return 0
}

// TestDebian reads unmodified copies of Debian bookworm's php8.2-fpm files,
// laid out under testdata/debian as they are under /, so that the include
// path in php-fpm.conf needs no rewriting.
func TestDebian(t *testing.T) {
	c, err := LoadOptions("/etc/php/8.2/fpm/php-fpm.conf", Options{Root: "testdata/debian", LookupEnv: fakeEnv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	noWarnings(t, c)
	wantFiles := []string{"/etc/php/8.2/fpm/php-fpm.conf", "/etc/php/8.2/fpm/pool.d/www.conf"}
	if !reflect.DeepEqual(c.Files, wantFiles) {
		t.Errorf("Files = %q, want %q", c.Files, wantFiles)
	}
	if c.ErrorLog != "/var/log/php8.2-fpm.log" {
		t.Errorf("ErrorLog = %q", c.ErrorLog)
	}
	if got := c.Global["pid"].Value; got != "/run/php/php8.2-fpm.pid" {
		t.Errorf("pid = %q", got)
	}
	if len(c.Pools) != 1 {
		t.Fatalf("%d pools, want 1", len(c.Pools))
	}
	p := mustPool(t, c, "www")
	want := fcgi.Addr{Network: "unix", Address: "/run/php/php8.2-fpm.sock"}
	if p.ListenAddr != want {
		t.Errorf("ListenAddr = %v, want %v", p.ListenAddr, want)
	}
	if p.PM != "dynamic" || p.MaxChildren != 5 || p.StartServers != 2 || p.MinSpare != 1 || p.MaxSpare != 3 {
		t.Errorf("pm = %s %d %d %d %d, want dynamic 5 2 1 3", p.PM, p.MaxChildren, p.StartServers, p.MinSpare, p.MaxSpare)
	}
	if p.ListenOwner != "www-data" || p.ListenGroup != "www-data" || p.User != "www-data" || p.Group != "www-data" {
		t.Errorf("owner %q group %q user %q group %q", p.ListenOwner, p.ListenGroup, p.User, p.Group)
	}
	if p.ListenBacklog != -1 || p.RequestTerminateTimeout != 0 || p.MaxExecutionTime != -1 || !p.ClearEnv {
		t.Errorf("defaults: backlog %d, terminate %v, max_execution_time %v, clear_env %v", p.ListenBacklog, p.RequestTerminateTimeout, p.MaxExecutionTime, p.ClearEnv)
	}
	line := lineOf(t, "testdata/debian/etc/php/8.2/fpm/pool.d/www.conf", "pm.max_children = 5")
	if line != 127 {
		t.Errorf("pm.max_children is on line %d of Debian's www.conf, the test expects 127", line)
	}
	if got, want := p.Settings["pm.max_children"].Where(), "/etc/php/8.2/fpm/pool.d/www.conf:127"; got != want {
		t.Errorf("pm.max_children is cited at %q, want %q", got, want)
	}
	if got := p.Listen.Where(); got != "/etc/php/8.2/fpm/pool.d/www.conf:41" {
		t.Errorf("listen is cited at %q", got)
	}
	if p.File != "/etc/php/8.2/fpm/pool.d/www.conf" || p.Line != 4 {
		t.Errorf("pool header at %s:%d", p.File, p.Line)
	}
	if got := p.Settings["request_terminate_timeout"].Where(); got != "" {
		t.Errorf("an unset directive is cited at %q", got)
	}
}

// TestDocker reads the configuration of the official php:8.2-fpm image; see
// testdata/docker/README.md for where the files come from. php-fpm.conf
// includes etc/php-fpm.d/*.conf, relative to the image's prefix /usr/local,
// which Load guesses from /usr/local/etc/php-fpm.conf.
func TestDocker(t *testing.T) {
	c, err := LoadOptions("/usr/local/etc/php-fpm.conf", Options{Root: "testdata/docker", LookupEnv: fakeEnv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	noWarnings(t, c)
	if c.Prefix != "/usr/local" {
		t.Errorf("Prefix = %q", c.Prefix)
	}
	// www.conf.default does not match *.conf.
	wantFiles := []string{
		"/usr/local/etc/php-fpm.conf",
		"/usr/local/etc/php-fpm.d/docker.conf",
		"/usr/local/etc/php-fpm.d/www.conf",
		"/usr/local/etc/php-fpm.d/zz-docker.conf",
	}
	if !reflect.DeepEqual(c.Files, wantFiles) {
		t.Errorf("Files = %q, want %q", c.Files, wantFiles)
	}
	if c.ErrorLog != "/proc/self/fd/2" {
		t.Errorf("ErrorLog = %q", c.ErrorLog)
	}
	if d := c.Global["daemonize"]; d.Value != "" || d.Raw != "no" || d.Where() != "/usr/local/etc/php-fpm.d/zz-docker.conf:2" {
		t.Errorf("daemonize = %+v", d)
	}
	if len(c.Pools) != 1 {
		t.Fatalf("%d pools, want 1", len(c.Pools))
	}
	p := mustPool(t, c, "www")
	// www.conf says 127.0.0.1:9000; zz-docker.conf, read last, says 9000.
	if p.Listen.Value != "9000" || p.Listen.Where() != "/usr/local/etc/php-fpm.d/zz-docker.conf:5" {
		t.Errorf("listen = %q at %s", p.Listen.Value, p.Listen.Where())
	}
	if want := (fcgi.Addr{Network: "tcp", Address: ":9000"}); p.ListenAddr != want {
		t.Errorf("ListenAddr = %v, want %v", p.ListenAddr, want)
	}
	if p.File != "/usr/local/etc/php-fpm.d/docker.conf" {
		t.Errorf("the pool first appears in %s", p.File)
	}
	if p.AccessLog != "/proc/self/fd/2" || p.ClearEnv || !p.CatchWorkersOutput || p.DecorateWorkersOutput {
		t.Errorf("access.log %q clear_env %v catch_workers_output %v decorate_workers_output %v", p.AccessLog, p.ClearEnv, p.CatchWorkersOutput, p.DecorateWorkersOutput)
	}
	if p.User != "www-data" || p.PM != "dynamic" || p.MaxChildren != 5 {
		t.Errorf("user %q pm %q max_children %d", p.User, p.PM, p.MaxChildren)
	}
	for _, addr := range []string{"127.0.0.1:9000", "localhost:9000", "[::1]:9000", "php:9000"} {
		a, err := fcgi.ParseAddr(addr)
		if err != nil {
			t.Fatal(err)
		}
		if c.PoolFor(a) != p {
			t.Errorf("PoolFor(%s) is not www", addr)
		}
	}
}

func TestIncludes(t *testing.T) {
	dir, err := filepath.Abs("testdata/synthetic/includes")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Load("testdata/synthetic/includes/php-fpm.conf", fakeEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	// empty/*.conf matches nothing, which is fine; .hidden.conf and the
	// directory sub.conf are not read.
	noWarnings(t, c)
	if c.Prefix != dir {
		t.Errorf("Prefix = %q, want %q", c.Prefix, dir)
	}
	var rel []string
	for _, f := range c.Files {
		r, _ := filepath.Rel(dir, f)
		rel = append(rel, r)
	}
	want := []string{"php-fpm.conf", "pool.d/10-a.conf", "pool.d/20-b.conf", "nested/c.conf"}
	if !reflect.DeepEqual(rel, want) {
		t.Errorf("files read: %q, want %q", rel, want)
	}
	var names []string
	for _, p := range c.Pools {
		names = append(names, p.Name)
	}
	if want := []string{"a", "b", "c"}; !reflect.DeepEqual(names, want) {
		t.Errorf("pools %q, want %q", names, want)
	}
	// The section in effect carries into and out of included files.
	for _, tc := range []struct {
		pool  string
		max   int
		where string
	}{
		{"a", 9, "nested/c.conf:7"},
		{"b", 77, "php-fpm.conf:10"},
		{"c", 5, "pool.d/20-b.conf:7"},
	} {
		p := mustPool(t, c, tc.pool)
		where, _ := filepath.Rel(dir, p.Settings["pm.max_requests"].Where())
		if p.MaxRequests != tc.max || where != tc.where {
			t.Errorf("pool %s: pm.max_requests = %d at %s, want %d at %s", tc.pool, p.MaxRequests, where, tc.max, tc.where)
		}
	}
	if p := c.Pool("A"); p == nil || p.Name != "a" {
		t.Errorf("Pool(\"A\") = %v, want pool a", p)
	}
	if a := mustPool(t, c, "c").ListenAddr; a != (fcgi.Addr{Network: "tcp", Address: ":19003"}) {
		t.Errorf("c listens on %v", a)
	}
}

func TestIncludeCycle(t *testing.T) {
	c, err := Load("testdata/synthetic/cycle/php-fpm.conf", fakeEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !wantWarning(t, c, "b.conf:1: include cycle:", "a.conf -> ", "b.conf -> ", "a.conf") {
		t.Error("an include cycle is not fatal")
	}
	if len(c.Warnings) != 1 || len(c.Pools) != 1 {
		t.Errorf("warnings %q, pools %d", c.Warnings, len(c.Pools))
	}
}

func TestIncludeMissingDirectory(t *testing.T) {
	c, err := Load("testdata/synthetic/missingdir/php-fpm.conf", fakeEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !wantWarning(t, c, "php-fpm.conf:5: include = nonexistent/*.conf: cannot read the directory") {
		t.Error("a missing include directory is not fatal")
	}
}

func TestIncludeDepth(t *testing.T) {
	dir := t.TempDir()
	// 0.conf includes 1.conf ... includes 6.conf: php-fpm reads 5 deep.
	for i := 0; i <= 6; i++ {
		src := "include = " + filepath.Join(dir, string(rune('0'+i+1))+".conf") + "\n"
		if i == 0 {
			src = "[global]\ninclude = 1.conf\n[www]\nlisten = 9000\npm = static\npm.max_children = 1\n"
		}
		if err := os.WriteFile(filepath.Join(dir, string(rune('0'+i))+".conf"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := LoadOptions(filepath.Join(dir, "0.conf"), Options{Prefix: dir, LookupEnv: fakeEnv(nil)})
	if err != nil {
		t.Fatal(err)
	}
	wantWarning(t, c, "4.conf:1: include of ", "5.conf nests more than 5 files deep")
	if len(c.Files) != 5 {
		t.Errorf("read %d files, want 5", len(c.Files))
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load("testdata/no-such-file.conf", nil)
	if err == nil || !os.IsNotExist(unwrapPath(err)) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Load("testdata", nil); err == nil {
		t.Error("a directory loads")
	}
}

// TestSyntheticFiles checks what the files under testdata/synthetic come to;
// TestPHPFPMAgreement checks that php-fpm agrees.
func TestSyntheticFiles(t *testing.T) {
	load := func(t *testing.T, name string) *Config {
		t.Helper()
		c, err := Load(filepath.Join("testdata/synthetic", name), fakeEnv(testEnv))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	t.Run("timeunits", func(t *testing.T) {
		c := load(t, "timeunits.conf")
		wantWarning(t, c, "timeunits.conf:52: [pool fraction] request_terminate_timeout = \"1.5m\": php-fpm reads only the leading integer, 1m0s")
		if len(c.Warnings) != 1 || c.fatal != 0 {
			t.Errorf("warnings: %q", c.Warnings)
		}
		for pool, want := range map[string]time.Duration{
			"seconds": 5 * time.Second, "minutes": 5 * time.Minute, "hours": time.Hour,
			"days": 24 * time.Hour, "bare": 30 * time.Second, "zero": 0, "fraction": time.Minute,
		} {
			if got := mustPool(t, c, pool).RequestTerminateTimeout; got != want {
				t.Errorf("pool %s: request_terminate_timeout %v, want %v", pool, got, want)
			}
		}
		if c.ProcessControlTimeout != 10*time.Second {
			t.Errorf("process_control_timeout %v", c.ProcessControlTimeout)
		}
		if got := mustPool(t, c, "minutes").ProcessIdleTimeout; got != 2*time.Minute {
			t.Errorf("pm.process_idle_timeout %v", got)
		}
		if got := mustPool(t, c, "seconds").ProcessIdleTimeout; got != 10*time.Second {
			t.Errorf("default pm.process_idle_timeout %v", got)
		}
	})
	t.Run("badunit", func(t *testing.T) {
		c := load(t, "badunit.conf")
		if !wantWarning(t, c, "badunit.conf:9: [pool www] request_terminate_timeout = \"5x\": unknown suffix") {
			t.Error("not fatal")
		}
		if p := mustPool(t, c, "www"); p.RequestTerminateTimeout != 0 || p.Settings["request_terminate_timeout"].Value != "5x" {
			t.Errorf("request_terminate_timeout %v, setting %+v", p.RequestTerminateTimeout, p.Settings["request_terminate_timeout"])
		}
	})
	t.Run("unknown", func(t *testing.T) {
		c := load(t, "unknown.conf")
		if !wantWarning(t, c, "unknown.conf:9: unknown directive request_timeout in [pool www]") {
			t.Error("not fatal")
		}
		if s := mustPool(t, c, "www").Settings["request_timeout"]; s.Value != "30s" {
			t.Errorf("the unknown directive is not kept: %+v", s)
		}
	})
	t.Run("beforesection", func(t *testing.T) {
		c := load(t, "beforesection.conf")
		if !wantWarning(t, c, "beforesection.conf:3: listen comes before any [section]") {
			t.Error("not fatal")
		}
		if len(c.Warnings) != 1 || mustPool(t, c, "www").Listen.Value != "/tmp/fcgiscope-fpm-test-before.sock" {
			t.Errorf("warnings %q", c.Warnings)
		}
	})
	t.Run("hashcomment", func(t *testing.T) {
		c := load(t, "hashcomment.conf")
		if !wantWarning(t, c, "hashcomment.conf:3: '#' does not start a comment") {
			t.Error("not fatal")
		}
		if len(c.Warnings) != 1 {
			t.Errorf("warnings %q", c.Warnings)
		}
	})
	t.Run("quoting", func(t *testing.T) {
		c := load(t, "quoting.conf")
		noWarnings(t, c)
		p := mustPool(t, c, "www")
		if c.ErrorLog != "/proc/self/fd/2" || p.Listen.Value != "/tmp/fcgiscope-fpm-test-quoting.sock" || p.PM != "static" {
			t.Errorf("error_log %q listen %q pm %q", c.ErrorLog, p.Listen.Value, p.PM)
		}
		if p.MaxChildren != 4 || p.MaxRequests != 100 {
			t.Errorf("max_children %d max_requests %d", p.MaxChildren, p.MaxRequests)
		}
		if p.PingResponse != "pong; not a comment" {
			t.Errorf("ping.response %q", p.PingResponse)
		}
		if got := p.Settings["access.format"].Value; got != `%R - %u %t "%m %r" %s` {
			t.Errorf("access.format %q", got)
		}
		if !reflect.DeepEqual(p.SecurityLimitExtensions, []string{".php", ".php8"}) {
			t.Errorf("security.limit_extensions %q", p.SecurityLimitExtensions)
		}
		for name, want := range map[string]string{
			"error_reporting":   "32759",
			"include_path":      ".:/usr/share/php",
			"date.timezone":     "Europe/Paris",
			"auto_prepend_file": "",
			"sendmail_path":     "/usr/sbin/sendmail -t -i",
		} {
			if got := p.PHPValues[name].Value; got != want {
				t.Errorf("php value %s = %q, want %q", name, got, want)
			}
		}
		if raw := p.PHPValues["error_reporting"].Raw; raw != "E_ALL & ~E_NOTICE" {
			t.Errorf("raw error_reporting %q", raw)
		}
	})
	t.Run("booleans", func(t *testing.T) {
		c := load(t, "booleans.conf")
		noWarnings(t, c)
		p := mustPool(t, c, "www")
		if !p.CatchWorkersOutput || p.DecorateWorkersOutput || p.ClearEnv || !p.RequestTerminateTimeoutTrackFinished {
			t.Errorf("catch %v decorate %v clear_env %v track_finished %v", p.CatchWorkersOutput, p.DecorateWorkersOutput, p.ClearEnv, p.RequestTerminateTimeoutTrackFinished)
		}
		for name, want := range map[string]string{"display_errors": "1", "log_errors": "1", "html_errors": "0", "short_open_tag": "0", "expose_php": "0"} {
			if got := p.PHPValues[name].Value; got != want {
				t.Errorf("php flag %s = %q, want %q", name, got, want)
			}
		}
		if c.Global["daemonize"].Value != "" {
			t.Errorf("daemonize = %q", c.Global["daemonize"].Value)
		}
	})
	t.Run("badbool", func(t *testing.T) {
		c := load(t, "badbool.conf")
		if !wantWarning(t, c, `badbool.conf:9: [pool www] catch_workers_output = "Yes": invalid boolean value`) {
			t.Error("not fatal")
		}
	})
	t.Run("phpvalues", func(t *testing.T) {
		c := load(t, "phpvalues.conf")
		wantWarning(t, c, "phpvalues.conf:10: [pool www] php_value[memory_limit] is ignored: php-fpm uses the first definition", "phpvalues.conf:8")
		wantWarning(t, c, "phpvalues.conf:17: [pool www] env[APP_ENV] is ignored", "phpvalues.conf:15")
		if len(c.Warnings) != 2 || c.fatal != 0 {
			t.Errorf("warnings %q", c.Warnings)
		}
		p := mustPool(t, c, "www")
		if p.MemoryLimit != "128M" || p.PHPValues["memory_limit"].Where() != c.Path+":8" {
			t.Errorf("memory_limit %q at %s", p.MemoryLimit, p.PHPValues["memory_limit"].Where())
		}
		met := p.PHPValues["max_execution_time"]
		if p.MaxExecutionTime != time.Minute || !met.Admin || met.Key != "php_admin_value[max_execution_time]" {
			t.Errorf("max_execution_time %v %+v", p.MaxExecutionTime, met)
		}
		if p.ErrorLog != "/var/log/fpm-www.log" || !p.PHPValues["error_log"].Admin {
			t.Errorf("error_log %q", p.ErrorLog)
		}
		if p.Env["APP_ENV"].Value != "production" {
			t.Errorf("env %+v", p.Env)
		}
		if p.Settings["php_value[memory_limit]"].Value != "128M" || p.Settings["php_value[max_execution_time]"].Value != "30" {
			t.Errorf("Settings lose the php values: %+v", p.Settings)
		}
	})
	t.Run("subst", func(t *testing.T) {
		c := load(t, "subst.conf")
		noWarnings(t, c)
		p := mustPool(t, c, "app")
		if p.ListenAddr != (fcgi.Addr{Network: "unix", Address: "/tmp/fcgiscope-fpm-test-subst.sock"}) || p.Listen.Raw != "${FCGISCOPE_TEST_LISTEN}" {
			t.Errorf("listen %+v -> %v", p.Listen, p.ListenAddr)
		}
		if p.Slowlog != "/var/log/app.slow" || p.Settings["slowlog"].Raw != "/var/log/$pool.slow" {
			t.Errorf("slowlog %q", p.Slowlog)
		}
		if p.RequestTerminateTimeout != 90*time.Second {
			t.Errorf("request_terminate_timeout %v", p.RequestTerminateTimeout)
		}
		if got := p.Settings["access.format"].Value; got != "app %R %s " {
			t.Errorf("access.format %q", got)
		}
		if got := p.Env["POOL"].Value; got != "app-90s" {
			t.Errorf("env[POOL] %q", got)
		}
		if got := p.PHPValues["session.save_path"].Value; got != "/var/lib/php/sessions/app" {
			t.Errorf("session.save_path %q", got)
		}
	})
	t.Run("poolsubstglobal", func(t *testing.T) {
		c := load(t, "poolsubstglobal.conf")
		if !wantWarning(t, c, "poolsubstglobal.conf:4: pid: $pool cannot be used in [global]") {
			t.Error("not fatal")
		}
	})
	t.Run("listens", func(t *testing.T) {
		c := load(t, "listens.conf")
		noWarnings(t, c)
		dir := filepath.Dir(c.Path)
		for pool, want := range map[string]fcgi.Addr{
			"unix":         {Network: "unix", Address: "/run/php/php8.2-fpm.sock"},
			"relative":     {Network: "unix", Address: filepath.Join(dir, "run/relative.sock")},
			"port":         {Network: "tcp", Address: ":9000"},
			"loopback":     {Network: "tcp", Address: "127.0.0.1:9001"},
			"any4":         {Network: "tcp", Address: "0.0.0.0:9002"},
			"any6":         {Network: "tcp", Address: "[::]:9003"},
			"localhost":    {Network: "tcp", Address: "localhost:9004"},
			"ipv6loopback": {Network: "tcp", Address: "[::1]:9005"},
		} {
			if got := mustPool(t, c, pool).ListenAddr; got != want {
				t.Errorf("pool %s listens on %v, want %v", pool, got, want)
			}
		}
	})
	t.Run("dynamic", func(t *testing.T) {
		c := load(t, "dynamic.conf")
		noWarnings(t, c)
		if p := mustPool(t, c, "www"); p.StartServers != 4 {
			t.Errorf("computed pm.start_servers %d, want 4", p.StartServers)
		}
	})
	t.Run("nopm", func(t *testing.T) {
		c := load(t, "nopm.conf")
		if !wantWarning(t, c, "nopm.conf:5: [pool www] pm is not set") {
			t.Error("not fatal")
		}
		if p := mustPool(t, c, "www"); p.PM != "" {
			t.Errorf("pm %q", p.PM)
		}
	})
	t.Run("duplisten", func(t *testing.T) {
		c := load(t, "duplisten.conf")
		if !wantWarning(t, c, "duplisten.conf:10: [pool two] listen = /tmp/fcgiscope-fpm-test-dup.sock is already used by pool one", "duplisten.conf:5") {
			t.Error("not fatal")
		}
	})
	t.Run("syntax", func(t *testing.T) {
		c := load(t, "syntax.conf")
		if !wantWarning(t, c, "syntax.conf:10: syntax error: unexpected '!'") {
			t.Error("not fatal")
		}
	})
	t.Run("slowlog", func(t *testing.T) {
		c := load(t, "slowlog.conf")
		if !wantWarning(t, c, "slowlog.conf:9: [pool www] request_slowlog_timeout needs slowlog") {
			t.Error("not fatal")
		}
	})
}

// TestParse covers single lines through Parse: each case is one pool
// directive (or a few lines) inside a valid pool.
func TestParse(t *testing.T) {
	const head = "[global]\nerror_log = /proc/self/fd/2\n[www]\nlisten = /tmp/x.sock\npm = static\npm.max_children = 1\n"
	const firstLine = 7
	cases := []struct {
		name string
		src  string
		// key and want: the Settings value; want "-" means not set.
		key, want string
		// warn is a part of the only warning, "" for none; fatal says
		// whether php-fpm refuses it.
		warn  string
		fatal bool
	}{
		{"bare value", "user = nobody", "user", "nobody", "", false},
		{"blanks kept inside", "ping.response = a   b ; comment", "ping.response", "a   b", "", false},
		{"tab around =", "user\t=\tnobody", "user", "nobody", "", false},
		{"double quotes", `ping.response = "a;b"`, "ping.response", "a;b", "", false},
		{"escapes", `ping.response = "a\"b\\c\nd\$e"`, "ping.response", `a"b\c\nd$e`, "", false},
		{"single quotes are raw", `ping.response = 'a\"${HOME}'`, "ping.response", `a\"${HOME}`, "", false},
		{"concatenation", `ping.response = "a" b "c"`, "ping.response", "abc", "", false},
		{"blanks around single quotes kept", `ping.response = a 'b' c`, "ping.response", "a b c", "", false},
		{"env", "ping.response = ${FCGISCOPE_TEST_TIMEOUT}x", "ping.response", "90sx", "", false},
		{"env in quotes", `ping.response = "<${FCGISCOPE_TEST_TIMEOUT}>"`, "ping.response", "<90s>", "", false},
		{"unset env", "ping.response = a${NOPE}b", "ping.response", "ab", "", false},
		{"dollar alone", "ping.response = a$b$", "ping.response", "a$b$", "", false},
		{"pool", "ping.response = $pool-$poolx", "ping.response", "www-wwwx", "", false},
		{"empty value", "user =", "user", "", "", false},
		{"name case", "USER = nobody", "user", "nobody", "", false},
		{"constant", "ping.response = E_ALL", "ping.response", "32767", "", false},
		{"not a constant", "ping.response = e_all", "ping.response", "e_all", "", false},
		{"expression", "ping.response = (1|2)&3", "ping.response", "3", "", false},
		{"not", "ping.response = !0", "ping.response", "1", "", false},
		{"bool word", "ping.response = On", "ping.response", "1", "", false},
		{"null word", "ping.response = NULL", "ping.response", "", "", false},
		{"braces and brackets", "ping.response = a{b}[c]", "ping.response", "a{b}[c]", "", false},
		{"crlf", "user = nobody\r", "user", "nobody", "", false},
		{"tab before header", "\t[other]\nlisten = /tmp/o.sock\npm = static\npm.max_children = 1", "user", "-", "", false},
		{"later value wins", "user = a\nuser = b", "user", "b", "", false},
		{"time 1.5m", "request_terminate_timeout = 1.5m", "request_terminate_timeout", "1.5m", "reads only the leading integer, 1m0s", false},
		{"time 10ms", "request_terminate_timeout = 10ms", "request_terminate_timeout", "10ms", "reads only the leading integer, 10s", false},
		{"time bad unit", "request_terminate_timeout = 10 sec", "request_terminate_timeout", "10 sec", "unknown suffix used in time value", true},
		{"time unit alone", "request_terminate_timeout = s", "request_terminate_timeout", "s", "reads only the leading integer, 0s", false},
		{"time empty", "request_terminate_timeout =", "request_terminate_timeout", "", "invalid time value", true},
		{"int", "pm.max_requests = 007", "pm.max_requests", "007", "", false},
		{"bad int", "pm.max_requests = 1e3", "pm.max_requests", "1e3", "is not a valid number", true},
		{"rlimit unlimited", "rlimit_core = unlimited", "rlimit_core", "unlimited", "", false},
		{"rlimit negative", "rlimit_core = -1", "rlimit_core", "-1", "must be greater than zero or 'unlimited'", true},
		{"bool 2", "clear_env = 2", "clear_env", "2", "invalid boolean value", true},
		{"bool Yes quoted", `clear_env = "Yes"`, "clear_env", "Yes", "invalid boolean value", true},
		{"bool yes quoted", `clear_env = "yes"`, "clear_env", "yes", "", false},
		{"pm case", "pm = OnDemand", "pm", "OnDemand", "", false},
		{"pm bad", "pm = adaptive", "pm", "adaptive", "invalid process manager", true},
		{"equals in value", "ping.response = a=b", "ping.response", "-", "unexpected '=' in a value", true},
		{"bang", "ping.response = pong!", "ping.response", "-", "unexpected '!'", true},
		{"bool word inside", "ping.response = a yes", "ping.response", "-", "boolean word", true},
		{"empty single quotes", "ping.response = ''", "ping.response", "-", "''", true},
		{"unterminated quote", `ping.response = "abc`, "ping.response", "-", "expecting '\"'", true},
		{"unterminated variable", "ping.response = ${HOME", "ping.response", "-", "expecting '}'", true},
		{"no value", "ping.response", "ping.response", "-", "has no '=' and no value", true},
		{"hash", "# comment", "user", "-", "'#' does not start a comment", true},
		{"indented header", "  [other]", "user", "-", "section header cannot be indented with spaces", true},
		{"header junk", "[www] junk", "user", "-", "unexpected text after the section header", true},
		{"unterminated header", "[www", "user", "-", "expecting ']'", true},
		{"global directive in pool", "log_level = debug", "log_level", "debug", "log_level is a global directive, not allowed in [pool www]", true},
		{"include is case-sensitive", "Include = /x/*.conf", "include", "/x/*.conf", "unknown directive Include", true},
		{"array unknown", "php_values[x] = 1", "php_values[x]", "1", "unknown directive php_values", true},
		{"array names are case-sensitive", "PHP_VALUE[x] = 1", "PHP_VALUE[x]", "1", "unknown directive PHP_VALUE", true},
		{"array without key", "php_value[] = 1", "php_value[]", "-", "php_value[] needs a key", true},
		{"array offset blanks", "php_value[ a ] = 1", "php_value[a ]", "1", "", false},
		{"array quoted offset", `php_value["a b"] = 1`, "php_value[a b]", "1", "", false},
		{"env empty", "env[X] =", "env[X]", "-", "env[X] has an empty value", true},
		{"suppress path", "access.suppress_path[] = /ping", "access.suppress_path[0]", "/ping", "", false},
		{"suppress path key", "access.suppress_path[x] = /ping", "access.suppress_path[0]", "-", "takes no key", true},
		{"flag invalid", "php_flag[display_errors] = maybe", "php_flag[display_errors]", "-", "invalid boolean value", true},
		{"status path", "pm.status_path = /st atus", "pm.status_path", "/st atus", "may only contain", true},
		{"status path short", "pm.status_path = /", "pm.status_path", "/", "is too short", true},
		{"ping path relative", "ping.path = ping", "ping.path", "ping", "must start with '/'", true},
		{"priority", "process.priority = 30", "process.priority", "30", "must be from -19 to 20", true},
		{"slowlog bigger", "slowlog = /tmp/s\nrequest_slowlog_timeout = 5\nrequest_terminate_timeout = 2", "slowlog", "/tmp/s", "request_slowlog_timeout (5s) cannot be greater than request_terminate_timeout (2s)", true},
		{"trace depth", "request_slowlog_trace_depth = 5", "request_slowlog_trace_depth", "5", "request_slowlog_trace_depth needs slowlog", true},
		{"star host", "listen = *:9000", "listen", "*:9000", "'*' is not a wildcard", false},
		{"empty host", "listen = :9000", "listen", ":9000", "the host is empty", true},
		{"bad port", "listen = 127.0.0.1:http", "listen", "127.0.0.1:http", "invalid port", true},
		{"no listen", "listen =", "listen", "", "no listen address", true},
		{"max_children 0", "pm.max_children = 0", "pm.max_children", "0", "pm.max_children must be a positive number", true},
		{"array in global", "[global]\nphp_value[x] = 1", "php_value[x]", "-", "php_value[x] is not allowed in [global]", true},
		{"pool directive in global", "[global]\nuser = x", "user", "-", "user is a pool directive, not allowed in [global]", true},
		{"log_limit", "[global]\nlog_limit = 100", "user", "-", "log_limit = 100: it must be at least 512", true},
		{"events", "[global]\nevents.mechanism = kqueue", "user", "-", "not available on Linux", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := Parse("t.conf", []byte(head+tc.src+"\n"), fakeEnv(testEnv))
			p := mustPool(t, c, "www")
			s, ok := p.Settings[tc.key]
			switch {
			case tc.want == "-" && ok:
				t.Errorf("%s is set: %+v", tc.key, s)
			case tc.want != "-" && !ok:
				t.Errorf("%s is not set; settings %v", tc.key, p.Settings)
			case ok && s.Value != tc.want:
				t.Errorf("%s = %q, want %q", tc.key, s.Value, tc.want)
			case ok && s.Line < firstLine:
				t.Errorf("%s comes from line %d", tc.key, s.Line)
			}
			if tc.warn == "" {
				noWarnings(t, c)
				return
			}
			if len(c.Warnings) != 1 {
				t.Fatalf("want one warning with %q, got %q", tc.warn, c.Warnings)
			}
			w := c.Warnings[0]
			if !strings.Contains(w, tc.warn) || !strings.HasPrefix(w, "t.conf:") {
				t.Errorf("warning %q, want t.conf:line: ...%s...", w, tc.warn)
			}
			if fatal := strings.HasSuffix(w, "(php-fpm refuses to start)"); fatal != tc.fatal || (c.fatal > 0) != tc.fatal {
				t.Errorf("warning %q: fatal %v (count %d), want %v", w, fatal, c.fatal, tc.fatal)
			}
		})
	}
}

func TestParseNoPool(t *testing.T) {
	c := Parse("t.conf", []byte("[global]\ninclude = /etc/php/8.2/fpm/pool.d/*.conf\n"), fakeEnv(nil))
	if len(c.Pools) != 0 || c.Global["include"].Value != "/etc/php/8.2/fpm/pool.d/*.conf" {
		t.Errorf("pools %d, include %+v", len(c.Pools), c.Global["include"])
	}
	if !wantWarning(t, c, "t.conf: no pool defined") {
		t.Error("not fatal")
	}
}

func TestPoolFor(t *testing.T) {
	src := `[global]
[sock]
listen = /run/php/php8.2-fpm.sock
[sock2]
listen = /run/php//other/../second.sock
[port]
listen = 9000
[loop]
listen = 127.0.0.1:9001
[any4]
listen = 0.0.0.0:9002
[any6]
listen = [::]:9003
[v6loop]
listen = [::1]:9004
[name]
listen = localhost:9005
[exact]
listen = 127.0.0.1:9006
[wide]
listen = 0.0.0.0:9006
`
	c := Parse("t.conf", []byte(src), fakeEnv(nil))
	cases := []struct {
		addr string
		want string // "" for nil
	}{
		{"unix:/run/php/php8.2-fpm.sock", "sock"},
		{"unix:///run/php/php8.2-fpm.sock", "sock"},
		{"unix:/run/php/second.sock", "sock2"},
		{"unix:/run/php/php8.1-fpm.sock", ""},
		{"127.0.0.1:9000", "port"},
		{"[::1]:9000", "port"},
		{"php:9000", "port"},
		{"127.0.0.1:9001", "loop"},
		{"localhost:9001", "loop"},
		{"[::1]:9001", ""},
		{"10.0.0.1:9001", ""},
		{"127.0.0.1:9002", "any4"},
		{"10.1.2.3:9002", "any4"},
		{"[::1]:9002", ""},
		{"[::1]:9003", "any6"},
		{"127.0.0.1:9003", "any6"},
		{"[::1]:9004", "v6loop"},
		{"localhost:9004", "v6loop"},
		{"127.0.0.1:9004", ""},
		{"localhost:9005", "name"},
		{"LOCALHOST:9005", "name"},
		{"127.0.0.1:9005", "name"},
		{"[::1]:9005", "name"},
		{"10.0.0.1:9005", ""},
		{"127.0.0.1:9006", "exact"},
		{"10.0.0.1:9006", "wide"},
		{"127.0.0.1:9999", ""},
		{"tcp://127.0.0.1:9000", "port"},
	}
	for _, tc := range cases {
		a, err := fcgi.ParseAddr(tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		got := c.PoolFor(a)
		name := ""
		if got != nil {
			name = got.Name
		}
		if name != tc.want {
			t.Errorf("PoolFor(%s) = %q, want %q", tc.addr, name, tc.want)
		}
	}
	if c.PoolFor(fcgi.Addr{}) != nil {
		t.Error("PoolFor of the zero Addr is not nil")
	}
}

// TestLoadSystem reads this machine's php-fpm configuration, when there is
// one.
func TestLoadSystem(t *testing.T) {
	const path = "/etc/php/8.2/fpm/php-fpm.conf"
	if _, err := os.Stat(path); err != nil {
		t.Skipf("%s is not installed here: %v", path, err)
	}
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Pools) == 0 {
		t.Errorf("no pools in %s; warnings %q", path, c.Warnings)
	}
	for _, w := range c.Warnings {
		t.Logf("warning: %s", w)
	}
	for _, p := range c.Pools {
		if p.ListenAddr.IsZero() {
			t.Errorf("pool %s has no listen address", p.Name)
		}
		if c.PoolFor(p.ListenAddr) == nil {
			t.Errorf("PoolFor(%v) finds no pool", p.ListenAddr)
		}
	}
}

func TestDiscover(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "php-fpm.conf")
	if err := os.WriteFile(good, []byte("[www]\nlisten = 9000\npm = static\npm.max_children = 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.conf")
	c, err := discover([]string{missing, dir, good}, fakeEnv(nil))
	if err != nil || c.Path != good {
		t.Fatalf("discover: %v, %v", c, err)
	}
	_, err = discover([]string{missing, dir}, fakeEnv(nil))
	if err == nil || !strings.Contains(err.Error(), missing+" (not found)") || !strings.Contains(err.Error(), dir+" (") {
		t.Errorf("error %v does not list the paths tried", err)
	}
	for _, p := range DiscoverPaths() {
		if !filepath.IsAbs(p) {
			t.Errorf("DiscoverPaths returns %q", p)
		}
	}
}

func TestNewestFirst(t *testing.T) {
	got := newestFirst([]string{
		"/etc/php/7.4/fpm/php-fpm.conf",
		"/etc/php/8.10/fpm/php-fpm.conf",
		"/etc/php/8.2/fpm/php-fpm.conf",
		"/etc/php/8.9/fpm/php-fpm.conf",
	}, 3)
	want := []string{
		"/etc/php/8.10/fpm/php-fpm.conf",
		"/etc/php/8.9/fpm/php-fpm.conf",
		"/etc/php/8.2/fpm/php-fpm.conf",
		"/etc/php/7.4/fpm/php-fpm.conf",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
	got = newestFirst([]string{"/etc/php81/php-fpm.conf", "/etc/php83/php-fpm.conf", "/etc/php8/php-fpm.conf"}, 2)
	want = []string{"/etc/php83/php-fpm.conf", "/etc/php81/php-fpm.conf", "/etc/php8/php-fpm.conf"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
}

func TestSettingWhere(t *testing.T) {
	if got := (Setting{File: "/a.conf", Line: 3}).Where(); got != "/a.conf:3" {
		t.Errorf("Where = %q", got)
	}
	if (Setting{}).Where() != "" || (Setting{}).IsSet() {
		t.Error("the zero Setting has a place")
	}
}
