package nginxconf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSplitDump(t *testing.T) {
	dump := "# configuration file /etc/nginx/nginx.conf:\nuser www-data;\nhttp {\n    include /etc/nginx/conf.d/*.conf;\n}\n\n" +
		"# configuration file /etc/nginx/conf.d/php.conf:\nserver {\n\n    location ~ \\.php$ { fastcgi_pass 127.0.0.1:9000; }\n}\n\n"
	main, files, err := SplitDump([]byte(dump))
	if err != nil {
		t.Fatal(err)
	}
	if main != "/etc/nginx/nginx.conf" || len(files) != 2 {
		t.Fatalf("main %q, %d files", main, len(files))
	}
	fsys := DumpFS(files)
	cfg, err := Read("nginx -T", main, fsys.Open, fsys.Glob)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Passes) != 1 {
		t.Fatalf("%d passes, want 1", len(cfg.Passes))
	}
	if p := cfg.Passes[0].Dir; p.File != "/etc/nginx/conf.d/php.conf" || p.Line != 3 {
		t.Errorf("fastcgi_pass at %s:%d, want /etc/nginx/conf.d/php.conf:3: line numbers must be the file's own", p.File, p.Line)
	}
	if _, _, err := SplitDump([]byte("nginx: [emerg] unknown directive\n")); err == nil {
		t.Error("output without markers was accepted")
	}
}

func TestParseNginxTime(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"60": 60 * time.Second, "60s": 60 * time.Second, "500ms": 500 * time.Millisecond,
		"5m": 5 * time.Minute, "1m30s": 90 * time.Second, "1h": time.Hour, "2d": 48 * time.Hour,
	} {
		if got, ok := ParseTime(in); !ok || got != want {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "s", "10x", "-1"} {
		if _, ok := ParseTime(bad); ok {
			t.Errorf("ParseTime(%q) accepted", bad)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "4k": 4096, "32K": 32 << 10, "1m": 1 << 20, "2G": 2 << 30, "0": 0} {
		if got, ok := ParseSize(in); !ok || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "k", "1x", "-1"} {
		if _, ok := ParseSize(bad); ok {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

// TestPassSettingsAreInheritedWithTheirDirective checks the settings the
// sidecar reads from nginx: set at http, server or location level, or
// nginx's defaults (with no directive), each with the file and line it
// comes from.
func TestPassSettingsAreInheritedWithTheirDirective(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("php.conf", "fastcgi_buffer_size 32k;\nfastcgi_buffers 16 16k;\n")
	main := write("nginx.conf", `http {
    fastcgi_read_timeout 90s;
    client_max_body_size 10m;
    server {
        fastcgi_send_timeout 20;
        location ~ \.php$ {
            include `+dir+`/php.conf;
            fastcgi_keep_conn on;
            fastcgi_pass 127.0.0.1:9001;
        }
        location /api/ {
            fastcgi_read_timeout 5m;
            fastcgi_ignore_client_abort on;
            fastcgi_pass unix:/run/fcgiscope.sock;
        }
    }
}
`)
	cfg, err := Load(main)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Passes) != 2 {
		t.Fatalf("%d passes", len(cfg.Passes))
	}
	php, api := cfg.Passes[0], cfg.Passes[1]
	check := func(what string, got, want any, dir *Directive, line int) {
		t.Helper()
		if got != want || (line == 0) != (dir == nil) || (dir != nil && dir.Line != line) {
			t.Errorf("%s = %v at %v, want %v at line %d", what, got, dir, want, line)
		}
	}
	check("php read timeout", php.ReadTimeout.Value, 90*time.Second, php.ReadTimeout.Dir, 2)
	check("php send timeout", php.SendTimeout.Value, 20*time.Second, php.SendTimeout.Dir, 5)
	check("php connect timeout", php.ConnectTimeout.Value, DefaultTimeout, php.ConnectTimeout.Dir, 0)
	check("php buffer size", php.BufferSize.Value, int64(32<<10), php.BufferSize.Dir, 1)
	check("php buffers", php.Buffers.Value*php.BuffersSize, int64(16*16<<10), php.Buffers.Dir, 2)
	check("php keep_conn", php.KeepConn.Value, true, php.KeepConn.Dir, 8)
	check("php body size", php.ClientMaxBodySize.Value, int64(10<<20), php.ClientMaxBodySize.Dir, 3)
	check("api read timeout", api.ReadTimeout.Value, 5*time.Minute, api.ReadTimeout.Dir, 12)
	check("api buffer size", api.BufferSize.Value, DefaultBufferSize, api.BufferSize.Dir, 0)
	check("api ignore_client_abort", api.IgnoreClientAbort.Value, true, api.IgnoreClientAbort.Dir, 13)
	if php.BufferSize.Dir.File != filepath.Join(dir, "php.conf") {
		t.Errorf("fastcgi_buffer_size comes from %s, want the included file", php.BufferSize.Dir.File)
	}
}

// A site file from conf.d, read on its own (a Kubernetes sidecar gets only
// that), is read as if inside http; an include it names that is not there
// (fastcgi_params, relative to another prefix) is a problem noted, not a
// crash.
func TestSiteFileIsReadAsInsideHTTP(t *testing.T) {
	site := filepath.Join(t.TempDir(), "default.conf")
	text := `upstream sidecar { server unix:/sockets/fcgiscope.sock; keepalive 8; }
server {
    listen 8080;
    fastcgi_buffer_size 16k;
    location ~ \.php$ {
        include fastcgi_params;
        fastcgi_read_timeout 120s;
        fastcgi_pass sidecar;
    }
}
`
	if err := os.WriteFile(site, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(site)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Fragment || len(cfg.Passes) != 1 || cfg.Upstream("sidecar") == nil {
		t.Fatalf("fragment %v, %d passes, upstream %v", cfg.Fragment, len(cfg.Passes), cfg.Upstream("sidecar"))
	}
	p := cfg.Passes[0]
	if p.ReadTimeout.Value != 120*time.Second || p.BufferSize.Value != 16<<10 || p.BufferSize.Dir.Line != 4 {
		t.Errorf("read timeout %v, buffer size %d at line %d", p.ReadTimeout.Value, p.BufferSize.Value, p.BufferSize.Dir.Line)
	}
	if len(cfg.Problems) == 0 || !strings.Contains(strings.Join(cfg.Problems, " "), "fastcgi_params") {
		t.Errorf("problems %v: the missing include is not reported", cfg.Problems)
	}
}
