package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
)

func TestConfigFlagsOverrideEnvironmentAndDefaultsApply(t *testing.T) {
	var cfg serveConfig
	environ := []string{"FCGISCOPE_UPSTREAM=unix:/run/php/php8.2-fpm.sock", "FCGISCOPE_CONNECT_TIMEOUT=1s", "UNRELATED=x"}
	rest, err := loadConfig(&cfg, "serve", []string{"--connect-timeout", "250ms", "--hold-bytes=0"}, environ, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	if len(rest) != 0 {
		t.Errorf("rest = %q", rest)
	}
	if cfg.upstreamAddr.Network != "unix" || cfg.upstreamAddr.Address != "/run/php/php8.2-fpm.sock" {
		t.Errorf("upstream = %+v", cfg.upstreamAddr)
	}
	if cfg.ConnectTimeout != 250*time.Millisecond {
		t.Errorf("connect timeout = %v, want the flag's 250ms", cfg.ConnectTimeout)
	}
	if cfg.HoldBytes != 0 {
		t.Errorf("hold bytes = %d, want the flag's 0", cfg.HoldBytes)
	}
	if cfg.Listen != "127.0.0.1:9001" || cfg.listenMode != 0o660 || cfg.ShutdownTimeout != 30*time.Second {
		t.Errorf("defaults not applied: listen %q mode %o shutdown %v", cfg.Listen, cfg.listenMode, cfg.ShutdownTimeout)
	}
}

func TestInvalidConfigurationNamesVariableValueAndFix(t *testing.T) {
	tests := []struct {
		name    string
		environ []string
		args    []string
		want    []string
	}{
		{"duration without unit", []string{"FCGISCOPE_CONNECT_TIMEOUT=3"}, nil, []string{"FCGISCOPE_CONNECT_TIMEOUT", `"3"`, "as in 3s"}},
		{"flag value reported under its variable", nil, []string{"--read-timeout", "soon"}, []string{"FCGISCOPE_READ_TIMEOUT", `"soon"`}},
		{"negative number", []string{"FCGISCOPE_HOLD_BYTES=-1"}, nil, []string{"FCGISCOPE_HOLD_BYTES", "zero or more"}},
		{"port alone", []string{"FCGISCOPE_UPSTREAM=9000"}, nil, []string{"FCGISCOPE_UPSTREAM", "127.0.0.1:9000"}},
		{"socket path without prefix", []string{"FCGISCOPE_UPSTREAM=/run/php.sock"}, nil, []string{"FCGISCOPE_UPSTREAM", "unix:/run/php.sock"}},
		{"listen mode not octal", []string{"FCGISCOPE_LISTEN_MODE=rw"}, nil, []string{"FCGISCOPE_LISTEN_MODE", "0660"}},
		{"log format", []string{"FCGISCOPE_LOG_FORMAT=xml"}, nil, []string{"FCGISCOPE_LOG_FORMAT", "json or console"}},
		{"upstream is ourselves", []string{"FCGISCOPE_UPSTREAM=127.0.0.1:9001"}, nil, []string{"FCGISCOPE_UPSTREAM", "point it at php-fpm"}},
		{"admin open to other hosts without a token", []string{"FCGISCOPE_ADMIN_LISTEN=0.0.0.0:9180"}, nil, []string{"FCGISCOPE_ADMIN_LISTEN", "FCGISCOPE_ADMIN_TOKEN", "127.0.0.1", "FCGISCOPE_ADMIN_INSECURE=true"}},
		{"trusted network mistyped", []string{"FCGISCOPE_TRUSTED_NETWORKS=10.0.0.0/33"}, nil, []string{"FCGISCOPE_TRUSTED_NETWORKS", "10.0.0.0/8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg serveConfig
			_, err := loadConfig(&cfg, "serve", tt.args, tt.environ, io.Discard)
			if err == nil {
				err = cfg.validate()
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// An operator can open the admin endpoint to other hosts without a token,
// but only by saying so.
func TestAdminOpenWithoutTokenOnlyWhenSaidSo(t *testing.T) {
	for _, environ := range [][]string{
		{"FCGISCOPE_ADMIN_LISTEN=0.0.0.0:9180", "FCGISCOPE_ADMIN_INSECURE=true"},
		{"FCGISCOPE_ADMIN_LISTEN=0.0.0.0:9180", "FCGISCOPE_ADMIN_TOKEN=s3cret"},
		{"FCGISCOPE_ADMIN_LISTEN=127.0.0.1:9180"},
		{"FCGISCOPE_ADMIN_LISTEN=[::1]:9180"},
	} {
		var cfg serveConfig
		if _, err := loadConfig(&cfg, "serve", nil, environ, io.Discard); err != nil {
			t.Fatal(err)
		}
		if err := cfg.validate(); err != nil {
			t.Errorf("%v refused: %v", environ, err)
		}
	}
}

func TestEveryVariableHasAFlag(t *testing.T) {
	for _, f := range configFields(&serveConfig{}) {
		name := f.Tag.Get("env")
		var cfg serveConfig
		if _, err := loadConfig(&cfg, "serve", []string{"--" + flagName(name) + "=1"}, nil, io.Discard); err != nil && strings.HasPrefix(err.Error(), "unknown flag") {
			t.Errorf("%s has no flag --%s", name, flagName(name))
		}
		if f.Tag.Get("help") == "" {
			t.Errorf("%s has no help text", name)
		}
	}
}

func TestUnknownCommandAndFlagAreUsageErrors(t *testing.T) {
	if code := run([]string{"frobnicate"}); code != exitUsage {
		t.Errorf("unknown command exit = %d, want %d", code, exitUsage)
	}
	if code := run([]string{"serve", "--no-such-flag"}); code != exitUsage {
		t.Errorf("unknown flag exit = %d, want %d", code, exitUsage)
	}
}

func TestAnEmptyVariableMeansEmptyNotTheDefault(t *testing.T) {
	var cfg serveConfig
	if _, err := loadConfig(&cfg, "serve", nil, []string{"FCGISCOPE_ADMIN_LISTEN="}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if cfg.AdminListen != "" {
		t.Errorf("FCGISCOPE_ADMIN_LISTEN= gave %q, want empty (admin endpoint off)", cfg.AdminListen)
	}
	cfg = serveConfig{}
	if _, err := loadConfig(&cfg, "serve", []string{"--admin-listen="}, nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	if cfg.AdminListen != "" {
		t.Errorf("--admin-listen= gave %q, want empty", cfg.AdminListen)
	}
	cfg = serveConfig{}
	loadConfig(&cfg, "serve", nil, nil, io.Discard)
	if cfg.AdminListen != "127.0.0.1:9180" {
		t.Errorf("unset gave %q, want the default", cfg.AdminListen)
	}
}

func TestKeptConnectionsThatThePoolWouldPunishAreRefused(t *testing.T) {
	pool := &fpm.Pool{
		Name: "www", MaxChildren: 4, RequestTerminateTimeout: 30 * time.Second, RequestSlowlogTimeout: 2 * time.Second,
		Settings: map[string]fpm.Setting{"request_slowlog_timeout": {File: "/etc/php/8.2/fpm/pool.d/www.conf", Line: 12}},
	}
	tests := []struct {
		keep    int
		timeout time.Duration
		want    []string
	}{
		{3, time.Second, nil},
		{4, time.Second, []string{"FCGISCOPE_UPSTREAM_KEEPALIVE", "pm.max_children = 4", "3 or less"}},
		{2, 2 * time.Second, []string{"FCGISCOPE_UPSTREAM_KEEPALIVE_TIMEOUT", "request_slowlog_timeout = 2s (/etc/php/8.2/fpm/pool.d/www.conf:12)", "1s or less"}},
		{0, time.Minute, nil}, // off: nothing to check
	}
	for _, tt := range tests {
		cfg := serveConfig{upstreamKeepAlive: tt.keep, UpstreamKeepAliveTimeout: tt.timeout}
		err := checkKeepAlive(&cfg, pool, zerolog.Nop())
		if (err == nil) != (tt.want == nil) {
			t.Errorf("keepalive %d timeout %v: error %v", tt.keep, tt.timeout, err)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	}
}

func TestServeRefusesKeptConnectionsForAllWorkers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "php-fpm.conf")
	sock := filepath.Join(dir, "fpm.sock")
	os.WriteFile(conf, []byte("[global]\nerror_log = "+filepath.Join(dir, "fpm.log")+"\n[www]\nlisten = "+sock+"\npm = static\npm.max_children = 2\n"), 0o644)
	var stderr strings.Builder
	code := serve(t.Context(), nil, []string{
		"FCGISCOPE_LISTEN=unix:" + filepath.Join(dir, "fs.sock"), "FCGISCOPE_ADMIN_LISTEN=",
		"FCGISCOPE_UPSTREAM=unix:" + sock, "FCGISCOPE_FPM_CONFIG=" + conf, "FCGISCOPE_UPSTREAM_KEEPALIVE=2",
	}, io.Discard, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "pm.max_children = 2") || !strings.Contains(stderr.String(), "set it to 1 or less") {
		t.Errorf("exit %d, stderr %q; want 2 and the pool's pm.max_children with the fix", code, stderr.String())
	}
}

func TestAutoKeepAliveLeavesTheStatusPageAWorker(t *testing.T) {
	www := func(maxChildren int, terminate, slowlog time.Duration) *fpm.Pool {
		return &fpm.Pool{Name: "www", MaxChildren: maxChildren, RequestTerminateTimeout: terminate, RequestSlowlogTimeout: slowlog,
			Settings: map[string]fpm.Setting{"pm.max_children": {File: "/etc/php/8.2/fpm/pool.d/www.conf", Line: 113}}}
	}
	tests := []struct {
		name        string
		pool        *fpm.Pool
		keep        int
		timeout     time.Duration
		logContains string
	}{
		{"unknown pool", nil, 0, time.Second, "FCGISCOPE_FPM_CONFIG"},
		{"one worker", www(1, 0, 0), 0, time.Second, "pm.max_children = 1 (/etc/php/8.2/fpm/pool.d/www.conf:113)"},
		{"five workers", www(5, 30*time.Second, 0), 4, time.Second, "pm.max_children = 5 (/etc/php/8.2/fpm/pool.d/www.conf:113)"},
		{"short slowlog", www(5, 0, 800*time.Millisecond), 4, 400 * time.Millisecond, "400ms"},
		{"short terminate", www(3, 600*time.Millisecond, 0), 2, 300 * time.Millisecond, "FCGISCOPE_UPSTREAM_KEEPALIVE=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logged strings.Builder
			var cfg serveConfig
			if _, err := loadConfig(&cfg, "serve", nil, nil, io.Discard); err != nil {
				t.Fatal(err)
			}
			if err := cfg.validate(); err != nil {
				t.Fatal(err)
			}
			if err := checkKeepAlive(&cfg, tt.pool, zerolog.New(&logged)); err != nil {
				t.Fatalf("auto refused: %v", err)
			}
			if cfg.upstreamKeepAlive != tt.keep || cfg.UpstreamKeepAliveTimeout != tt.timeout {
				t.Errorf("kept %d for %v, want %d for %v", cfg.upstreamKeepAlive, cfg.UpstreamKeepAliveTimeout, tt.keep, tt.timeout)
			}
			if !strings.Contains(logged.String(), tt.logContains) {
				t.Errorf("log %q does not say %q", logged.String(), tt.logContains)
			}
		})
	}
}

func TestUpstreamKeepAliveMustBeANumberOrAuto(t *testing.T) {
	for _, v := range []string{"-1", "many", "3.5"} {
		var cfg serveConfig
		_, err := loadConfig(&cfg, "serve", nil, []string{"FCGISCOPE_UPSTREAM_KEEPALIVE=" + v}, io.Discard)
		if err == nil {
			err = cfg.validate()
		}
		if err == nil || !strings.Contains(err.Error(), "FCGISCOPE_UPSTREAM_KEEPALIVE") || !strings.Contains(err.Error(), "auto") {
			t.Errorf("%q: %v, want an error naming the variable and auto", v, err)
		}
	}
}
