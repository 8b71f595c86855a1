package testbed

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"
)

// FPMConfig configures the php-fpm started by StartFPM. The zero value is a
// static pool of 4 workers on a new unix socket.
type FPMConfig struct {
	// Listen is "127.0.0.1:PORT" or an absolute unix socket path ("unix:/path"
	// is accepted too). Empty means a new unix socket "fpm.sock" in a
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
	// Extra is appended verbatim to the [www] pool section, after every
	// generated setting, so it can override them.
	Extra string
}

// FPM is a running php-fpm master started by StartFPM.
type FPM struct {
	Pid        int    // master pid
	Addr       string // nginx fastcgi_pass syntax: "127.0.0.1:PORT" or "unix:/path/fpm.sock"
	Network    string // "tcp" or "unix"
	Address    string // "127.0.0.1:PORT" or "/path/fpm.sock", as net.Dial takes it
	ConfigPath string // the php-fpm.conf written: [global] plus one pool named "www"
	ErrorLog   string // php-fpm error_log, at log_level notice
	SlowLog    string // slowlog path; "" when SlowlogTimeout is off
	Dir        string // temp dir holding the config and logs

	proc     *process
	stopOnce sync.Once
	bin      string
	asRoot   bool
}

// fpmTemplate renders php-fpm.conf. Workers inherit the system php.ini
// (output_buffering = 4096 on Debian), so scripts that stream must end output
// buffering themselves.
var fpmTemplate = template.Must(template.New("php-fpm.conf").Parse(`; Written by fcgiscope internal/testbed.
[global]
pid = {{.Dir}}/php-fpm.pid
error_log = {{.ErrorLog}}
log_level = notice
daemonize = no

[www]
{{- if .Root}}
; php-fpm runs as root only with -R, and then the pool must name its user.
user = root
group = root
{{- end}}
listen = {{.Address}}
{{- if eq .Network "unix"}}
listen.mode = {{.ListenMode}}
{{- end}}
{{- if .ListenBacklog}}
listen.backlog = {{.ListenBacklog}}
{{- end}}
pm = {{.PM}}
pm.max_children = {{.MaxChildren}}
{{- if eq .PM "dynamic"}}
pm.start_servers = 1
pm.min_spare_servers = 1
pm.max_spare_servers = {{.MaxChildren}}
{{- end}}
{{- if .TerminateSeconds}}
request_terminate_timeout = {{.TerminateSeconds}}s
{{- end}}
{{- if .SlowlogSeconds}}
request_slowlog_timeout = {{.SlowlogSeconds}}s
slowlog = {{.SlowLog}}
{{- end}}
{{- if .StatusPath}}
pm.status_path = {{.StatusPath}}
{{- end}}
{{- if .PingPath}}
ping.path = {{.PingPath}}
{{- end}}
{{- if .CatchWorkersOutput}}
catch_workers_output = yes
{{- end}}
; Debian's php.ini caps request bodies at 8M; the tests send more.
php_admin_value[post_max_size] = 2G
php_admin_value[upload_max_filesize] = 2G
{{.Extra}}
`))

// fpmTemplateData is the input of fpmTemplate.
type fpmTemplateData struct {
	FPMConfig
	Dir, Network, Address, ErrorLog, SlowLog string
	Root                                     bool
	TerminateSeconds, SlowlogSeconds         int
}

// StartFPM starts php-fpm with a generated php-fpm.conf, waits until its
// listen address accepts a connection, and stops it in t.Cleanup. It skips the
// test when php-fpm is not installed (see RequireFPM). When running as root it
// passes -R and runs the workers as root, because php-fpm refuses to start as
// root otherwise.
func StartFPM(t testing.TB, cfg FPMConfig) *FPM {
	t.Helper()
	bin := RequireFPM(t)
	dir := ShortTempDir(t)

	if cfg.Listen == "" {
		cfg.Listen = filepath.Join(dir, "fpm.sock")
	}
	network, address, err := parseNginxAddr(cfg.Listen)
	if err != nil {
		t.Fatalf("testbed: FPMConfig.Listen: %v", err)
	}
	if cfg.PM == "" {
		cfg.PM = "static"
	}
	if cfg.MaxChildren <= 0 {
		cfg.MaxChildren = 4
	}
	if cfg.ListenMode == "" {
		cfg.ListenMode = "0666"
	}

	f := &FPM{
		Network:    network,
		Address:    address,
		Addr:       address,
		ConfigPath: filepath.Join(dir, "php-fpm.conf"),
		ErrorLog:   filepath.Join(dir, "php-fpm.log"),
		Dir:        dir,
	}
	if network == "unix" {
		f.Addr = "unix:" + address
	}
	if cfg.SlowlogTimeout > 0 {
		f.SlowLog = filepath.Join(dir, "slow.log")
	}

	data := fpmTemplateData{
		FPMConfig:        cfg,
		Dir:              dir,
		Network:          network,
		Address:          address,
		ErrorLog:         f.ErrorLog,
		SlowLog:          f.SlowLog,
		Root:             os.Geteuid() == 0,
		TerminateSeconds: wholeSeconds(cfg.RequestTerminateTimeout),
		SlowlogSeconds:   wholeSeconds(cfg.SlowlogTimeout),
	}
	if err := writeTemplate(f.ConfigPath, fpmTemplate, data); err != nil {
		t.Fatalf("testbed: %v", err)
	}

	f.bin, f.asRoot = bin, data.Root
	f.launch(t)
	return f
}

// Restart starts php-fpm again with the same configuration, stopping it
// first if it still runs, as a package upgrade or an operator's restart
// does.
func (f *FPM) Restart(t testing.TB) {
	t.Helper()
	f.Stop()
	f.stopOnce = sync.Once{}
	f.launch(t)
}

// launch starts the master and waits until it accepts connections.
func (f *FPM) launch(t testing.TB) {
	t.Helper()
	bin, dir, network, address := f.bin, f.Dir, f.Network, f.Address
	out, err := openLog(filepath.Join(dir, "php-fpm.out"))
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	defer out.Close() // The child has its own copy.
	args := []string{"-F", "-y", f.ConfigPath}
	if f.asRoot {
		args = append(args, "-R")
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = serverEnv()
	cmd.Stdout, cmd.Stderr = out, out // Stdin stays nil, i.e. /dev/null.
	// On SIGTERM the master kills its workers before exiting; a SIGKILL
	// would orphan them.
	f.proc, err = startProcess(cmd, syscall.SIGTERM)
	if err != nil {
		t.Fatalf("testbed: php-fpm: %v", err)
	}
	f.Pid = cmd.Process.Pid
	t.Cleanup(func() {
		f.Stop()
		if t.Failed() {
			t.Logf("testbed: php-fpm error log %s:\n%s", f.ErrorLog, tail(f.ReadErrorLog(), 40))
		}
	})

	if err := f.proc.waitReady(network, address); err != nil {
		t.Fatalf("testbed: php-fpm (%s) not ready: %v\nerror log tail:\n%s\noutput:\n%s",
			f.ConfigPath, err, tail(f.ReadErrorLog(), 30), tail(readFileString(out.Name()), 30))
	}
	t.Logf("testbed: php-fpm pid %d listening on %s (dir %s)", f.Pid, f.Addr, dir)
}

// Stop stops php-fpm and waits for it: SIGQUIT (graceful, lets running
// requests finish), after 5 s SIGTERM, after 2 more seconds SIGKILL; then it
// SIGKILLs workers that survived. It is idempotent and safe to call
// concurrently. A unix socket file may be left behind.
func (f *FPM) Stop() {
	f.stopOnce.Do(func() {
		f.proc.shutdown(
			stopStep{sig: syscall.SIGQUIT, wait: 5 * time.Second},
			stopStep{sig: syscall.SIGTERM, wait: 2 * time.Second},
		)
	})
}

// Signal sends sig to the master, e.g. SIGUSR2 to reload it. It returns
// os.ErrProcessDone once the master has exited.
func (f *FPM) Signal(sig os.Signal) error {
	return f.proc.signal(sig)
}

// WorkerPIDs returns the pids of the master's current child processes (its
// workers), read from /proc.
func (f *FPM) WorkerPIDs() []int {
	return childPIDs(f.Pid)
}

// ReadErrorLog returns the current contents of the error log, or "" if it
// does not exist yet.
func (f *FPM) ReadErrorLog() string {
	return readFileString(f.ErrorLog)
}

// wholeSeconds converts d to whole seconds for configs that take no smaller
// unit, rounding up so that a short non-zero timeout does not turn into 0,
// which means "off".
func wholeSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(math.Ceil(d.Seconds()))
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
