package testbed

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
)

// FPMConfig configures the php-fpm started by StartFPM. The zero value is a
// static pool of 4 workers on a new unix socket.
type FPMConfig struct {
	// Listen is "127.0.0.1:PORT" or an absolute unix socket path ("unix:/path"
	// is accepted too). Empty means a new unix socket "php-fpm.sock" in a
	// ShortTempDir.
	Listen string
	// PM is the process manager: "static" (default), "dynamic" or
	// "ondemand". For "dynamic", spare-server settings derived from
	// MaxChildren are written; Extra can override them.
	PM string
	// MaxChildren is pm.max_children; 0 means 4.
	MaxChildren int
	// ListenBacklog is listen.backlog; 0 keeps php-fpm's default.
	ListenBacklog int
	// ListenMode is listen.mode of a unix socket, e.g. "0600". Empty means
	// "0666", so that processes of any user in a test can connect.
	ListenMode string
	// RequestTerminateTimeout is request_terminate_timeout, rounded up to
	// whole seconds; 0 means off.
	RequestTerminateTimeout time.Duration
	// SlowlogTimeout is request_slowlog_timeout, rounded up to whole seconds;
	// when set, the slow log is written to FPM.SlowLog. 0 means off.
	SlowlogTimeout time.Duration
	// StatusPath is pm.status_path, e.g. "/fpm-status"; empty means none.
	StatusPath string
	// PingPath is ping.path, e.g. "/fpm-ping"; empty means none.
	PingPath string
	// CatchWorkersOutput makes php-fpm copy the workers' stdout and stderr
	// into its error log; otherwise that output is discarded.
	CatchWorkersOutput bool
	// ProcessControlTimeout is the global process_control_timeout, rounded
	// up to whole seconds: how long a graceful stop (SIGQUIT) lets busy
	// workers finish before the master sends them SIGTERM. 0 leaves it
	// unset, php-fpm's default, which sends SIGTERM at once.
	ProcessControlTimeout time.Duration
	// Extra is appended verbatim to the [www] pool section, after every
	// generated setting, so it can override them.
	Extra string
}

// FPM is a running php-fpm master started by StartFPM.
type FPM struct {
	Pid        int    // master pid
	Addr       string // nginx fastcgi_pass syntax: "127.0.0.1:PORT" or "unix:/path/php-fpm.sock"
	Network    string // "tcp" or "unix"
	Address    string // "127.0.0.1:PORT" or "/path/php-fpm.sock", as net.Dial takes it
	ConfigPath string // the php-fpm.conf written: [global] plus one pool named "www"
	ErrorLog   string // php-fpm error_log, at log_level notice
	SlowLog    string // slowlog path; "" when SlowlogTimeout is off
	Dir        string // temp dir holding the config and logs

	p *phpfpm.Process
}

// testPool is what every test pool has besides FPMConfig.Extra: Debian's
// php.ini caps request bodies at 8M, and the tests send more.
const testPool = "php_admin_value[post_max_size] = 2G\nphp_admin_value[upload_max_filesize] = 2G\n"

// poolDefaults returns the lines of testPool that extra does not set
// itself: php-fpm takes the first php_admin_value of a name and ignores the
// rest, so a test's own must come alone.
func poolDefaults(extra string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(testPool, "\n") {
		key, _, _ := strings.Cut(line, "=")
		if line != "" && !strings.Contains(extra, strings.TrimSpace(key)) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// StartFPM starts php-fpm with a generated php-fpm.conf, waits until its
// listen address accepts connections with every static worker running, and
// stops it in t.Cleanup. It skips the test when php-fpm is not installed
// (see RequireFPM). Workers inherit the system php.ini (output_buffering =
// 4096 on Debian), so scripts that stream must end output buffering
// themselves.
func StartFPM(t testing.TB, cfg FPMConfig) *FPM {
	t.Helper()
	bin := RequireFPM(t)
	dir := ShortTempDir(t)
	listen := cfg.Listen
	if listen != "" && !strings.HasPrefix(listen, "/") && !strings.HasPrefix(listen, "unix:") {
		if _, _, err := parseNginxAddr(listen); err != nil {
			t.Fatalf("testbed: FPMConfig.Listen: %v", err)
		}
	}
	if cfg.MaxChildren <= 0 {
		cfg.MaxChildren = 4
	}
	mode := cfg.ListenMode
	if mode == "" {
		mode = "0666"
	}
	p, err := phpfpm.Start(context.Background(), phpfpm.Config{
		Binary:                  bin,
		Dir:                     dir,
		Listen:                  listen,
		ListenMode:              mode,
		ListenBacklog:           cfg.ListenBacklog,
		PM:                      cfg.PM,
		MaxChildren:             cfg.MaxChildren,
		RequestTerminateTimeout: cfg.RequestTerminateTimeout,
		SlowlogTimeout:          cfg.SlowlogTimeout,
		StatusPath:              cfg.StatusPath,
		PingPath:                cfg.PingPath,
		CatchWorkersOutput:      cfg.CatchWorkersOutput,
		ProcessControlTimeout:   cfg.ProcessControlTimeout,
		Extra:                   poolDefaults(cfg.Extra) + cfg.Extra,
	})
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	f := &FPM{p: p, Network: p.Addr.Network, Address: p.Addr.Address, Addr: p.Addr.String(),
		ConfigPath: p.ConfigPath, ErrorLog: p.ErrorLog, SlowLog: p.SlowLog, Dir: p.Dir}
	f.Pid = p.Pid
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() {
			t.Logf("testbed: php-fpm error log %s:\n%s", f.ErrorLog, tail(f.ReadErrorLog(), 40))
		}
	})
	t.Logf("testbed: php-fpm pid %d listening on %s (dir %s)", f.Pid, f.Addr, dir)
	return f
}

// Restart starts php-fpm again with the same configuration, stopping it
// first if it still runs, as a package upgrade or an operator's restart
// does.
func (f *FPM) Restart(t testing.TB) {
	t.Helper()
	if err := f.p.Restart(context.Background(), 5*time.Second); err != nil {
		t.Fatalf("testbed: restarting php-fpm: %v", err)
	}
	f.Pid = f.p.Pid
	t.Logf("testbed: php-fpm restarted, pid %d", f.Pid)
}

// Stop stops php-fpm and waits for it: SIGQUIT (graceful), after 5 s
// SIGTERM, after 2 more seconds SIGKILL; then it SIGKILLs workers that
// survived. It is idempotent and safe to call concurrently. A unix socket
// file may be left behind.
func (f *FPM) Stop() {
	f.p.Stop(5 * time.Second)
}

// Signal sends sig to the master, e.g. SIGUSR2 to reload it. It returns
// os.ErrProcessDone once the master has exited.
func (f *FPM) Signal(sig os.Signal) error {
	return f.p.Signal(sig)
}

// WorkerPIDs returns the pids of the master's current child processes (its
// workers), read from /proc.
func (f *FPM) WorkerPIDs() []int {
	return f.p.Workers()
}

// ReadErrorLog returns the current contents of the error log, or "" if it
// does not exist yet.
func (f *FPM) ReadErrorLog() string {
	return readFileString(f.ErrorLog)
}

// writeTemplate renders tmpl with data into the file name.
func writeTemplate(name string, tmpl *template.Template, data any) error {
	var b strings.Builder
	if err := tmpl.Execute(&b, data); err != nil {
		return fmt.Errorf("rendering %s: %w", tmpl.Name(), err)
	}
	if err := os.WriteFile(name, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}
