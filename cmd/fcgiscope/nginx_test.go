package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/front"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// serve warns at start-up of each setting that fails a request sooner than
// nginx would, naming nginx's setting with its file and line, and of none
// with the defaults.
func TestStartUpWarnsOfSettingsThatFailSoonerThanNginx(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "nginx.conf")
	text := "http { server { location ~ \\.php$ {\n    fastcgi_read_timeout 120s;\n    fastcgi_buffer_size 128k;\n    fastcgi_pass 127.0.0.1:9001;\n} } }\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	f := front.Load(conf, fcgi.Addr{Network: "tcp", Address: "127.0.0.1:9001"})
	if !f.Known() {
		t.Fatalf("nginx configuration not understood: %s", f.Describe())
	}
	warnings := func(cfg *serveConfig) string {
		var buf bytes.Buffer
		warnSoonerThanNginx(cfg, f, zerolog.New(&buf))
		return buf.String()
	}
	out := warnings(&serveConfig{QueueTimeout: "30s", queueTimeout: 30 * time.Second, ReadTimeout: 60 * time.Second, MaxHeaderBytes: 65536})
	for _, want := range []string{"FCGISCOPE_QUEUE_TIMEOUT=30s", "FCGISCOPE_READ_TIMEOUT=1m0s", "FCGISCOPE_MAX_HEADER_BYTES=65536", conf + ":2", conf + ":3"} {
		if !strings.Contains(out, want) {
			t.Errorf("the warnings do not say %q:\n%s", want, out)
		}
	}
	if out := warnings(&serveConfig{QueueTimeout: "auto", queueAuto: true, MaxHeaderBytes: 1 << 20}); out != "" {
		t.Errorf("warnings with settings that wait as long as nginx:\n%s", out)
	}
}
