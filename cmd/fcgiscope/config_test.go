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
		cfg := serveConfig{UpstreamKeepAlive: tt.keep, UpstreamKeepAliveTimeout: tt.timeout}
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
