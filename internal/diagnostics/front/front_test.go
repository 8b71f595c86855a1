package front

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

func addr(t *testing.T, s string) fcgi.Addr {
	t.Helper()
	a, err := fcgi.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSameAddrFollowsHowAClientReachesAListener(t *testing.T) {
	tests := []struct {
		pass, listen string
		same         bool
	}{
		{"127.0.0.1:9001", "127.0.0.1:9001", true},
		{"localhost:9001", "127.0.0.1:9001", true},
		{"[::1]:9001", "127.0.0.1:9001", true},
		{"127.0.0.1:9001", "localhost:9001", true},
		{"127.0.0.1:9002", "127.0.0.1:9001", false},
		{"10.0.0.5:9001", "0.0.0.0:9001", true}, // a sidecar bound to every interface
		{"fcgiscope:9001", "[::]:9001", true},   // a service name
		{"10.0.0.5:9001", "127.0.0.1:9001", false},
		{"unix:/run/fcgiscope.sock", "unix:/run/fcgiscope.sock", true},
		{"unix:/run/../run/fcgiscope.sock", "unix:/run/fcgiscope.sock", true},
		{"unix:/run/php.sock", "unix:/run/fcgiscope.sock", false},
		{"unix:/run/fcgiscope.sock", "127.0.0.1:9001", false},
	}
	for _, tt := range tests {
		if got := SameAddr(addr(t, tt.pass), addr(t, tt.listen)); got != tt.same {
			t.Errorf("fastcgi_pass %s reaching a listener on %s: %v, want %v", tt.pass, tt.listen, got, tt.same)
		}
	}
}

func writeConf(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nginx.conf")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadKeepsTheLocationsThatPassToFcgiscope(t *testing.T) {
	conf := writeConf(t, `http {
    fastcgi_buffer_size 16k;
    upstream sidecar { server localhost:9001; }
    upstream php { server unix:/run/php/php8.2-fpm.sock; }
    server {
        location ~ \.php$ { fastcgi_pass 127.0.0.1:9001; }
        location /api/ { fastcgi_read_timeout 300s; fastcgi_buffer_size 32k; fastcgi_pass sidecar; }
        location /legacy/ { fastcgi_pass php; }
        location /dyn/ { fastcgi_pass $backend; }
    }
}
`)
	f := Load(conf, addr(t, "127.0.0.1:9001"))
	if !f.Known() || len(f.Passes) != 2 {
		t.Fatalf("%d passes (%s), want the two that reach fcgiscope", len(f.Passes), f.Describe())
	}
	rt := f.ReadTimeout()
	if rt.Value != 300*time.Second || !strings.HasSuffix(rt.Where, ":7") || len(rt.Others) != 1 || !strings.Contains(rt.Others[0], "nginx's default") {
		t.Errorf("read timeout %s", rt)
	}
	bs := f.BufferSize()
	if bs.Value != 32<<10 || !strings.HasPrefix(bs.String(), "32k (") || !strings.HasSuffix(bs.Where, ":7") || len(bs.Others) != 1 || !strings.Contains(bs.Others[0], ":2") {
		t.Errorf("buffer size %s", bs)
	}
	if p := f.Patience(); p != rt.Value {
		t.Errorf("Patience = %v, want the read timeout's %v", p, rt.Value)
	}
	if suspect, refuse := f.HeadLimits(); suspect != 16<<10 || refuse != 32<<10 {
		t.Errorf("HeadLimits = %d, %d: want the smallest buffer to suspect a head, the largest to refuse it", suspect, refuse)
	}
	if d := f.Describe(); !strings.Contains(d, "2 locations") || !strings.Contains(d, conf) {
		t.Errorf("Describe: %s", d)
	}
}

func TestBytesAreWrittenAsInNginxConfiguration(t *testing.T) {
	for b, want := range map[Bytes]string{4096: "4k", 32 << 10: "32k", 1 << 20: "1m", 1500: "1500", 0: "0", 3 << 19: "1536k"} {
		if got := b.String(); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", int64(b), got, want)
		}
	}
}

func TestWithoutNginxConfigurationTheDefaultsAreAssumedAndSaidSo(t *testing.T) {
	for _, f := range []*Front{
		nil,
		Load(filepath.Join(t.TempDir(), "missing.conf"), fcgi.Addr{Network: "tcp", Address: "127.0.0.1:9001"}),
		Load(writeConf(t, "http { server { location / { fastcgi_pass 127.0.0.1:9000; } } }"), fcgi.Addr{Network: "tcp", Address: "127.0.0.1:9001"}),
	} {
		rt := f.ReadTimeout()
		if f.Known() || rt.Value != 60*time.Second || !strings.Contains(rt.Where, "not known") {
			t.Errorf("%s: read timeout %s", f.Describe(), rt)
		}
		if bs := f.BufferSize(); bs.Value != Bytes(os.Getpagesize()) {
			t.Errorf("buffer size %s", bs)
		}
		if p := f.Patience(); p != rt.Value {
			t.Errorf("Patience = %v, want the read timeout's %v", p, rt.Value)
		}
		if suspect, refuse := f.HeadLimits(); suspect != os.Getpagesize() || refuse != 0 {
			t.Errorf("HeadLimits = %d, %d: a head must never be refused on an assumed buffer", suspect, refuse)
		}
	}
}

func TestLoadReadsSavedNginxTOutput(t *testing.T) {
	dump := "# configuration file /etc/nginx/nginx.conf:\nhttp {\n    include /etc/nginx/conf.d/*.conf;\n}\n\n" +
		"# configuration file /etc/nginx/conf.d/app.conf:\nserver {\n    location / {\n        fastcgi_read_timeout 3s;\n        fastcgi_pass unix:/run/fcgiscope/fcgiscope.sock;\n    }\n}\n\n"
	f := Load(writeConf(t, dump), fcgi.Addr{Network: "unix", Address: "/run/fcgiscope/fcgiscope.sock"})
	if rt := f.ReadTimeout(); rt.Value != 3*time.Second || rt.Where != "/etc/nginx/conf.d/app.conf:3" {
		t.Errorf("read timeout %s, want 3s at the file's own line", rt)
	}
	if !strings.HasPrefix(f.Source, "nginx -T output in ") {
		t.Errorf("source %q", f.Source)
	}
}

func TestWatcherFollowsAnEditedConfiguration(t *testing.T) {
	conf := writeConf(t, "http { server { location / { fastcgi_read_timeout 3s; fastcgi_pass 127.0.0.1:9001; } } }")
	changed := make(chan *Front, 1)
	w := &Watcher{Path: conf, Listen: addr(t, "127.0.0.1:9001"), Interval: 10 * time.Millisecond, Changed: func(f *Front) { changed <- f }}
	if rt := w.Load().ReadTimeout(); rt.Value != 3*time.Second {
		t.Fatalf("read timeout %s", rt)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)
	time.Sleep(20 * time.Millisecond)
	if err := os.WriteFile(conf, []byte("http { server { location / { fastcgi_read_timeout 90s; fastcgi_pass 127.0.0.1:9001; } } }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-changed:
		if rt := f.ReadTimeout(); rt.Value != 90*time.Second || w.Front() != f {
			t.Errorf("after the edit: read timeout %s", rt)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the edit was not noticed")
	}
}

func TestGaveUpAfterMatchesTheTimeoutOfSomeLocation(t *testing.T) {
	conf := writeConf(t, `http { server {
        location / { fastcgi_read_timeout 2s; fastcgi_pass 127.0.0.1:9001; }
        location /slow/ { fastcgi_read_timeout 30s; fastcgi_send_timeout 5s; fastcgi_pass 127.0.0.1:9001; }
    } }`)
	f := Load(conf, addr(t, "127.0.0.1:9001"))
	for _, tt := range []struct {
		elapsed time.Duration
		sending bool
		want    time.Duration // 0: no timeout of nginx's
	}{
		{2003 * time.Millisecond, false, 2 * time.Second},
		{30200 * time.Millisecond, false, 30 * time.Second},
		{5 * time.Second, true, 5 * time.Second},
		{60 * time.Second, true, 60 * time.Second}, // the first location's default send timeout
		{10 * time.Second, false, 0},
		{1500 * time.Millisecond, false, 0},
	} {
		s, ok := f.GaveUpAfter(tt.elapsed, tt.sending)
		if ok != (tt.want != 0) || (ok && s.Value != tt.want) {
			t.Errorf("after %v (sending %v): %v %v, want %v", tt.elapsed, tt.sending, s, ok, tt.want)
		}
	}
	if s, ok := (*Front)(nil).GaveUpAfter(60*time.Second, false); !ok || !strings.Contains(s.Where, "not known") {
		t.Errorf("unknown nginx: %v %v", s, ok)
	}
}
