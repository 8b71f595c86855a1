// Package phpfpm finds php-fpm on this machine and runs one with a
// configuration of its own: the private php-fpm of `fcgiscope http --fpm
// auto`, and the real php-fpm the tests start. The doctor finds the binary
// that checks a configuration here too.
package phpfpm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/child"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Dirs are the directories Find looks in besides PATH: Debian installs
// php-fpm in /usr/sbin, which is often missing from PATH, and the official
// Docker images in /usr/local/sbin.
var Dirs = []string{"/usr/sbin", "/usr/local/sbin"}

// versioned matches versioned php-fpm binaries such as php-fpm8.2.
var versioned = regexp.MustCompile(`^php-fpm(\d+)\.(\d+)$`)

// ErrNotFound means no php-fpm executable was found.
var ErrNotFound = errors.New("no php-fpm found in PATH, /usr/sbin or /usr/local/sbin; install it (apt-get install php-fpm)")

// Find returns the newest php-fpm executable in PATH and Dirs: php-fpm8.3
// before php-fpm8.2, a versioned name before a plain php-fpm, which is often
// a link to an unknown version; among equals the earlier directory wins, as
// in a PATH lookup.
func Find() (string, error) {
	if path := FindIn(append(filepath.SplitList(os.Getenv("PATH")), Dirs...)); path != "" {
		return path, nil
	}
	return "", ErrNotFound
}

// FindIn returns the newest php-fpm executable in dirs, or "".
func FindIn(dirs []string) string {
	type cand struct {
		path         string
		major, minor int // both -1 for a plain php-fpm
	}
	var found []cand
	seen := map[string]bool{}
	for _, dir := range dirs {
		if dir == "" || seen[dir] {
			continue
		}
		seen[dir] = true
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // missing PATH entries are common and harmless
		}
		for _, e := range entries {
			c := cand{path: filepath.Join(dir, e.Name()), major: -1, minor: -1}
			if major, minor, ok := Version(e.Name()); ok {
				c.major, c.minor = major, minor
			} else if e.Name() != "php-fpm" {
				continue
			}
			if fi, err := os.Stat(c.path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				found = append(found, c)
			}
		}
	}
	if len(found) == 0 {
		return ""
	}
	sort.SliceStable(found, func(i, j int) bool {
		if found[i].major != found[j].major {
			return found[i].major > found[j].major
		}
		return found[i].minor > found[j].minor
	})
	return found[0].path
}

// Version returns the PHP version a versioned php-fpm binary's name gives,
// 8 and 2 for /usr/sbin/php-fpm8.2.
func Version(bin string) (major, minor int, ok bool) {
	m := versioned.FindStringSubmatch(filepath.Base(bin))
	if m == nil {
		return 0, 0, false
	}
	major, _ = strconv.Atoi(m[1])
	minor, _ = strconv.Atoi(m[2])
	return major, minor, true
}

// Config is the php-fpm to run: one pool, named www. Its zero value is a
// static pool of a few workers on a unix socket in a new directory.
type Config struct {
	// Binary is the executable; "" means Find's choice.
	Binary string
	// Dir holds the configuration, the logs and, by default, the socket;
	// "" means a new temporary directory, which Stop removes.
	Dir string
	// Listen is the pool's listen address, "127.0.0.1:PORT" or a socket
	// path ("unix:/path" is accepted too); "" means php-fpm.sock in Dir.
	Listen string
	// ListenMode is listen.mode of a unix socket; "" means 0600.
	ListenMode string
	// ListenBacklog is listen.backlog; 0 keeps php-fpm's default.
	ListenBacklog int
	// PM is the process manager, static (the default), dynamic or
	// ondemand; MaxChildren is pm.max_children, 0 meaning the number of
	// CPUs, at least 2 and at most 4.
	PM          string
	MaxChildren int
	// RequestTerminateTimeout and SlowlogTimeout are the pool's
	// request_terminate_timeout and request_slowlog_timeout, rounded up to
	// whole seconds; 0 turns them off.
	RequestTerminateTimeout, SlowlogTimeout time.Duration
	// StatusPath and PingPath are pm.status_path and ping.path.
	StatusPath, PingPath string
	// CatchWorkersOutput puts what scripts write to their stderr into
	// php-fpm's error log.
	CatchWorkersOutput bool
	// KeepEnv passes php-fpm's environment on to scripts (clear_env =
	// no), as a developer running an app locally expects.
	KeepEnv bool
	// ProcessControlTimeout is how long a graceful stop waits for
	// requests in flight; 0 means php-fpm's default, no wait.
	ProcessControlTimeout time.Duration
	// Extra is appended to the pool's section, after every setting it
	// may override.
	Extra string
	// Env is php-fpm's environment; nil means this process's.
	Env []string
	// ReadyTimeout bounds the wait for the pool to accept; 0 means 10s.
	ReadyTimeout time.Duration
}

// Process is a running php-fpm master started by Start.
type Process struct {
	// Binary is the executable that runs, Pid the master's pid.
	Binary string
	Pid    int
	// Addr is the pool's listen address.
	Addr fcgi.Addr
	// Dir holds the files below; ConfigPath is the php-fpm.conf written,
	// ErrorLog and SlowLog php-fpm's logs (SlowLog is "" without a
	// slowlog timeout), Output what the master printed.
	Dir, ConfigPath, ErrorLog, SlowLog, Output string

	cfg      Config
	ownDir   bool
	child    *child.Child
	stopOnce sync.Once
	stopErr  error
}

// conf is the php-fpm.conf Start writes.
var conf = template.Must(template.New("php-fpm.conf").Parse(`; Written by fcgiscope; removed when it stops.
[global]
pid = {{.Dir}}/php-fpm.pid
error_log = {{.ErrorLog}}
log_level = notice
daemonize = no
{{- if .ControlSeconds}}
; A graceful stop (SIGQUIT) waits this long for requests in flight.
process_control_timeout = {{.ControlSeconds}}s
{{- end}}

[www]
{{- if .Root}}
; php-fpm runs as root only with -R, and then the pool must name its user.
user = root
group = root
{{- end}}
listen = {{.Listen}}
{{- if .Unix}}
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
decorate_workers_output = no
{{- end}}
{{- if .KeepEnv}}
clear_env = no
{{- end}}
{{.Extra}}
`))

// Start writes a php-fpm configuration for cfg, starts php-fpm with it in
// the foreground (-F) as a child process, and returns once the pool accepts
// connections with all its static workers running. As root it passes -R
// and runs the workers as root, since php-fpm refuses root otherwise. The
// child gets SIGTERM if this process dies without calling Stop.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	p := &Process{cfg: cfg, Binary: cfg.Binary}
	if p.Binary == "" {
		bin, err := Find()
		if err != nil {
			return nil, err
		}
		p.Binary = bin
	}
	p.Dir = cfg.Dir
	if p.Dir == "" {
		dir, err := shortTempDir()
		if err != nil {
			return nil, err
		}
		p.Dir, p.ownDir = dir, true
	}
	fail := func(err error) (*Process, error) {
		if p.ownDir {
			os.RemoveAll(p.Dir)
		}
		return nil, err
	}
	if err := p.writeConfig(); err != nil {
		return fail(err)
	}
	if err := p.launch(ctx); err != nil {
		return fail(err)
	}
	return p, nil
}

func (p *Process) writeConfig() error {
	cfg := &p.cfg
	p.ConfigPath = filepath.Join(p.Dir, "php-fpm.conf")
	p.ErrorLog = filepath.Join(p.Dir, "php-fpm.log")
	p.Output = filepath.Join(p.Dir, "php-fpm.out")
	if cfg.SlowlogTimeout > 0 {
		p.SlowLog = filepath.Join(p.Dir, "php-fpm-slow.log")
	}
	listen := cfg.Listen
	if listen == "" {
		listen = filepath.Join(p.Dir, "php-fpm.sock")
	}
	if strings.HasPrefix(listen, "/") {
		listen = "unix:" + listen
	}
	addr, err := fcgi.ParseAddr(listen)
	if err != nil {
		return fmt.Errorf("php-fpm's listen address: %w", err)
	}
	p.Addr = addr
	pm, children, mode := cfg.PM, cfg.MaxChildren, cfg.ListenMode
	if pm == "" {
		pm = "static"
	}
	if children <= 0 {
		children = min(max(runtime.NumCPU(), 2), 4)
	}
	if mode == "" {
		mode = "0600"
	}
	var b strings.Builder
	err = conf.Execute(&b, map[string]any{
		"Dir": p.Dir, "ErrorLog": p.ErrorLog, "SlowLog": p.SlowLog,
		"ControlSeconds": wholeSeconds(cfg.ProcessControlTimeout),
		"Root":           os.Geteuid() == 0,
		"Listen":         addr.Address, "Unix": addr.Network == "unix", "ListenMode": mode, "ListenBacklog": cfg.ListenBacklog,
		"PM": pm, "MaxChildren": children,
		"TerminateSeconds": wholeSeconds(cfg.RequestTerminateTimeout),
		"SlowlogSeconds":   wholeSeconds(cfg.SlowlogTimeout),
		"StatusPath":       cfg.StatusPath, "PingPath": cfg.PingPath,
		"CatchWorkersOutput": cfg.CatchWorkersOutput, "KeepEnv": cfg.KeepEnv,
		"Extra": cfg.Extra,
	})
	if err == nil {
		err = os.WriteFile(p.ConfigPath, []byte(b.String()), 0o644)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", p.ConfigPath, err)
	}
	return nil
}

// launch starts the master and waits until the pool is ready.
func (p *Process) launch(ctx context.Context) error {
	out, err := os.OpenFile(p.Output, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	args := []string{"-F", "-y", p.ConfigPath}
	if os.Geteuid() == 0 {
		args = append(args, "-R")
	}
	cmd := exec.Command(p.Binary, args...)
	cmd.Env = child.Env(p.cfg.Env)
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group, so that a Ctrl-C in the terminal reaches
	// fcgiscope only, and Stop stops php-fpm gracefully.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// On SIGTERM the master stops its workers before it exits; a SIGKILL
	// would orphan them.
	c, err := child.Start(cmd, syscall.SIGTERM)
	if err != nil {
		return err
	}
	p.child, p.Pid = c, c.Pid()
	if err := p.waitReady(ctx); err != nil {
		p.Stop(time.Second)
		return err
	}
	return nil
}

// waitReady waits until the pool accepts connections and, for a static
// pool, until all its workers are forked: the master accepts on the socket
// before it forks them, and a status page or a kill of "all the workers"
// that came in between would see too few.
func (p *Process) waitReady(ctx context.Context) error {
	timeout := p.cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- p.child.WaitReady(p.Addr.Network, p.Addr.Address, timeout) }()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("php-fpm (%s -y %s) did not start: %w\n%s", p.Binary, p.ConfigPath, err, p.diagnostics())
		}
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	if p.cfg.PM != "" && p.cfg.PM != "static" {
		return nil
	}
	want := p.cfg.MaxChildren
	if want <= 0 {
		want = min(max(runtime.NumCPU(), 2), 4)
	}
	for len(p.Workers()) < want {
		if p.child.Exited() {
			return fmt.Errorf("php-fpm (%s -y %s) exited while starting its workers: %v\n%s", p.Binary, p.ConfigPath, p.child.Err(), p.diagnostics())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("php-fpm started %d of its %d workers within %s\n%s", len(p.Workers()), want, timeout, p.diagnostics())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// diagnostics returns the end of php-fpm's output and error log, for a
// start that failed.
func (p *Process) diagnostics() string {
	var b strings.Builder
	for _, name := range []string{p.Output, p.ErrorLog} {
		data, _ := os.ReadFile(name)
		if s := strings.TrimSpace(string(data)); s != "" {
			lines := strings.Split(s, "\n")
			fmt.Fprintf(&b, "%s:\n  %s\n", filepath.Base(name), strings.Join(lines[max(0, len(lines)-15):], "\n  "))
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// Done is closed when the master has exited.
func (p *Process) Done() <-chan struct{} { return p.child.Done() }

// Workers returns the pids of the master's children.
func (p *Process) Workers() []int { return p.child.Children() }

// Signal sends sig to the master, such as SIGUSR2 to reload it. It returns
// os.ErrProcessDone once the master has exited.
func (p *Process) Signal(sig os.Signal) error { return p.child.Signal(sig) }

// Stop stops php-fpm: SIGQUIT, which lets requests in flight finish for
// process_control_timeout, then after grace SIGTERM, after 2 more seconds
// SIGKILL, and finally SIGKILL for every worker that outlived its master.
// It removes the directory when Start made it. It is safe to call more than
// once, and at once; later calls return the first one's result.
func (p *Process) Stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		killed, orphans := p.child.Stop(child.Step{Signal: syscall.SIGQUIT, Wait: grace}, child.Step{Signal: syscall.SIGTERM, Wait: 2 * time.Second})
		switch {
		case killed:
			p.stopErr = fmt.Errorf("php-fpm (pid %d) ignored SIGQUIT and SIGTERM and was killed", p.Pid)
		case orphans > 0:
			p.stopErr = fmt.Errorf("%d php-fpm workers outlived their master and were killed", orphans)
		}
		if p.ownDir {
			if err := os.RemoveAll(p.Dir); err != nil && p.stopErr == nil {
				p.stopErr = err
			}
		}
	})
	return p.stopErr
}

// Restart stops php-fpm and starts it again with the same configuration,
// as a package upgrade or an operator's restart does. The Process then
// stands for the new master.
func (p *Process) Restart(ctx context.Context, grace time.Duration) error {
	own := p.ownDir
	p.ownDir = false // the files stay for the new master
	p.Stop(grace)
	p.ownDir = own
	p.stopOnce, p.stopErr = sync.Once{}, nil
	return p.launch(ctx)
}

// shortTempDir makes the directory for php-fpm's files. A unix socket path
// has at most 107 bytes, so a long TMPDIR gives way to /tmp.
func shortTempDir() (string, error) {
	dir, err := os.MkdirTemp("", "fcgiscope-fpm-")
	if err == nil && len(dir)+len("/php-fpm.sock") > 107 {
		os.RemoveAll(dir)
		dir, err = os.MkdirTemp("/tmp", "fcgiscope-fpm-")
	}
	if err != nil {
		return "", fmt.Errorf("creating php-fpm's directory: %w", err)
	}
	return dir, nil
}

// wholeSeconds renders a php-fpm duration, which takes whole seconds,
// rounding up so that a short limit does not become 0, which means off.
func wholeSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// Development is the php-fpm of `fcgiscope http --fpm auto`: a pool made for
// one developer, with the limits a production pool should have, so that the
// failure pages can be seen, and the environment passed on to scripts.
func Development() Config {
	return Config{
		RequestTerminateTimeout: 30 * time.Second,
		SlowlogTimeout:          5 * time.Second,
		CatchWorkersOutput:      true,
		KeepEnv:                 true,
		ProcessControlTimeout:   10 * time.Second,
	}
}
