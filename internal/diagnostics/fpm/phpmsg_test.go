package fpm

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseMessageReadsEveryPlacePHPWritesTo(t *testing.T) {
	tests := []struct {
		line              string
		level, text, file string
		lineNo            int
		timed             bool
	}{
		// FastCGI stderr.
		{"PHP message: PHP Warning:  PHP Request Startup: POST Content-Length of 3000002 bytes exceeds the limit of 2097152 bytes in Unknown on line 0",
			"Warning", "PHP Request Startup: POST Content-Length of 3000002 bytes exceeds the limit of 2097152 bytes", "", 0, false},
		// PHP's error_log file.
		{"[05-Dec-2026 04:11:52 UTC] PHP Warning:  session_write_close(): Write failed: No space left on device (28) in /srv/www/sess.php on line 1",
			"Warning", "session_write_close(): Write failed: No space left on device (28)", "/srv/www/sess.php", 1, true},
		{"[05-Dec-2026 04:11:52 Europe/Berlin] PHP Fatal error:  Uncaught Error: Call to undefined function nope() in /srv/f.php:3",
			"Fatal error", "Uncaught Error: Call to undefined function nope() in /srv/f.php:3", "", 0, true},
		// php-fpm's log, catch_workers_output with decorate_workers_output = no.
		{"NOTICE: PHP message: PHP Notice:  file_put_contents(): Write of 200000 bytes failed with errno=28 No space left on device in /srv/fpc.php on line 1",
			"Notice", "file_put_contents(): Write of 200000 bytes failed with errno=28 No space left on device", "/srv/fpc.php", 1, false},
		{"ERROR: Connection disallowed: IP address '127.0.0.1' has been dropped.",
			"ERROR", "Connection disallowed: IP address '127.0.0.1' has been dropped.", "", 0, false},
	}
	for _, tt := range tests {
		m, ok := ParseMessage(tt.line)
		if !ok {
			t.Errorf("%q: not parsed", tt.line)
			continue
		}
		if m.Level != tt.level || m.Text != tt.text || m.File != tt.file || m.Line != tt.lineNo || m.Time.IsZero() == tt.timed {
			t.Errorf("%q:\n got %q %q %q %d time %v", tt.line, m.Level, m.Text, m.File, m.Line, m.Time)
		}
	}
	for _, line := range []string{"", "Stack trace:", "#0 {main}", "  thrown in /srv/f.php on line 3", "[05-Dec-2026 04:11:37] NOTICE: fpm is running, pid 25946"} {
		if m, ok := ParseMessage(line); ok {
			t.Errorf("%q parsed as a PHP message: %+v", line, m)
		}
	}
}

func TestStderrMessagesSplitsLines(t *testing.T) {
	msgs := StderrMessages([]byte("PHP message: PHP Warning:  a in /a.php on line 1\nPHP message: PHP Warning:  b in /b.php on line 2\n"))
	if len(msgs) != 2 || msgs[0].Text != "a" || msgs[1].File != "/b.php" || msgs[1].Source != "FastCGI stderr" {
		t.Errorf("%+v", msgs)
	}
}

func TestParseSizeTakesPHPShorthand(t *testing.T) {
	for in, want := range map[string]int64{"2M": 2 << 20, "512k": 512 << 10, "1G": 1 << 30, "1048576": 1 << 20, " 8M ": 8 << 20, "0": 0} {
		if got, ok := ParseSize(in); !ok || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "M", "-1", "2X", "lots"} {
		if _, ok := ParseSize(in); ok {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
}

// The value PHP uses comes from the pool over php.ini over conf.d order
// over PHP's default, each with where it is set.
func TestPHPSettingPrecedence(t *testing.T) {
	dir := t.TempDir()
	ini := filepath.Join(dir, "php.ini")
	os.WriteFile(ini, []byte("[PHP]\npost_max_size = 8M\nupload_max_filesize = 2M\n[HOST=example.com]\nmemory_limit = 1G\n"), 0o644)
	scan := filepath.Join(dir, "conf.d")
	os.Mkdir(scan, 0o755)
	os.WriteFile(filepath.Join(scan, "20-app.ini"), []byte("upload_max_filesize = 16M\n"), 0o644)
	os.WriteFile(filepath.Join(scan, "10-base.ini"), []byte("upload_max_filesize = 4M\n"), 0o644)
	p, err := LoadPHPIni(ini, scan)
	if err != nil {
		t.Fatal(err)
	}
	if s := PHPSetting(nil, p, "post_max_size"); s.Value != "8M" || s.Where() != ini+":2" {
		t.Errorf("post_max_size from php.ini: %+v", s)
	}
	if s := PHPSetting(nil, p, "upload_max_filesize"); s.Value != "16M" || s.Where() != filepath.Join(scan, "20-app.ini")+":1" {
		t.Errorf("upload_max_filesize from the last conf.d file: %+v", s)
	}
	if s := PHPSetting(nil, p, "memory_limit"); s.Value != "128M" || s.IsSet() {
		t.Errorf("memory_limit in a [HOST=] section must not apply to every request: %+v", s)
	}
	pool := &Pool{PHPValues: map[string]PHPValue{"post_max_size": {Setting: Setting{Key: "php_admin_value[post_max_size]", Value: "2M", File: "/etc/php/8.2/fpm/pool.d/www.conf", Line: 9}, Admin: true}}}
	s := PHPSetting(pool, p, "post_max_size")
	if s.Value != "2M" || s.Describe("post_max_size") != "post_max_size = 2M (php_admin_value[post_max_size] in /etc/php/8.2/fpm/pool.d/www.conf:9)" {
		t.Errorf("the pool's value wins and says where: %q", s.Describe("post_max_size"))
	}
	if d := PHPSetting(nil, nil, "max_input_vars").Describe("max_input_vars"); d != "max_input_vars = 1000 (PHP's default)" {
		t.Errorf("default: %q", d)
	}
}

func TestFindPHPIniBesideDebianAndDockerLayouts(t *testing.T) {
	debian := t.TempDir()
	os.WriteFile(filepath.Join(debian, "php-fpm.conf"), nil, 0o644)
	os.WriteFile(filepath.Join(debian, "php.ini"), nil, 0o644)
	os.Mkdir(filepath.Join(debian, "conf.d"), 0o755)
	if ini, scan := FindPHPIni(&Config{Path: filepath.Join(debian, "php-fpm.conf")}); ini != filepath.Join(debian, "php.ini") || scan != filepath.Join(debian, "conf.d") {
		t.Errorf("Debian layout: %q %q", ini, scan)
	}
	docker := t.TempDir() // /usr/local/etc: php-fpm.conf, php/conf.d, no php.ini
	os.WriteFile(filepath.Join(docker, "php-fpm.conf"), nil, 0o644)
	os.MkdirAll(filepath.Join(docker, "php", "conf.d"), 0o755)
	if ini, scan := FindPHPIni(&Config{Path: filepath.Join(docker, "php-fpm.conf")}); ini != "" || scan != filepath.Join(docker, "php", "conf.d") {
		t.Errorf("Docker layout: %q %q", ini, scan)
	}
}

// A message PHP wrote just before a request ended is read when the request
// is explained, however soon after.
func TestMessageLogCatchReadsWhatWasJustWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "php-errors.log")
	ctx, cancel := context.WithCancel(context.Background())
	l := &MessageLog{Path: path}
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// The file does not exist yet: PHP creates it with its first error.
	for range 50 {
		l.mu.Lock()
		running := l.catch.wake != nil
		l.mu.Unlock()
		if running {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	since := time.Now()
	for i := range 20 {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("[05-Dec-2026 04:11:52 UTC] PHP Warning:  number " + string(rune('a'+i)) + " in /srv/x.php on line 1\n")
		f.Close()
		l.Catch(time.Now(), time.Second)
		got := l.Since(since)
		if len(got) != i+1 || got[i].Text != "number "+string(rune('a'+i)) {
			t.Fatalf("after write %d, Since has %d messages: %+v", i, len(got), got)
		}
	}
}
