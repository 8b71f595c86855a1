package httpgateway

import (
	"context"
	"errors"
	"fmt"
	"net"
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

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/procfs"
)

// FPMOptions configures the php-fpm that StartFPM runs. The zero value is
// usable.
type FPMOptions struct {
	// Binary is the php-fpm executable; "" means FindFPM's choice.
	Binary string
	// Workers is pm.max_children of the static pool; 0 means the number
	// of CPUs, at least 2 and at most 4.
	Workers int
	// TerminateTimeout is request_terminate_timeout; 0 means 30s.
	TerminateTimeout time.Duration
	// SlowlogTimeout is request_slowlog_timeout; 0 means 5s.
	SlowlogTimeout time.Duration
	// ReadyTimeout bounds the wait for the socket to accept; 0 means 10s.
	ReadyTimeout time.Duration
	// Env is the environment of php-fpm, which the pool passes on to
	// scripts (clear_env = no); nil means this process's. NOTIFY_SOCKET
	// is always removed, so that php-fpm does not report to a systemd unit
	// that started fcgiscope.
	Env []string
}

// FPM is a php-fpm master started by StartFPM, with its files in a
// temporary directory of its own.
type FPM struct {
	// Binary is the executable that runs.
	Binary string
	// Pid is the master's pid.
	Pid int
	// Addr is the pool's unix socket.
	Addr fcgi.Addr
	// Dir holds the configuration, the socket and the logs; Stop removes
	// it.
	Dir string
	// ConfigPath is the php-fpm.conf written; ErrorLog, SlowLog and
	// Output are php-fpm's error log, its slow log and what the master
	// printed to stdout and stderr.
	ConfigPath, ErrorLog, SlowLog, Output string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// fpmConf is the configuration StartFPM writes. The pool is made for one
// developer: a few static workers, the limits a production pool should
// have, so that the failure pages can be demonstrated, and PHP's environment
// passed through.
var fpmConf = template.Must(template.New("php-fpm.conf").Parse(`; Written by fcgiscope http --fpm auto; removed when it stops.
[global]
pid = {{.Dir}}/php-fpm.pid
error_log = {{.ErrorLog}}
log_level = notice
daemonize = no
; A graceful stop (SIGQUIT) waits this long for requests in flight.
process_control_timeout = 10s

[www]
{{- if .Root}}
; php-fpm runs as root only with -R, and then the pool must name its user.
user = root
group = root
{{- end}}
listen = {{.Socket}}
listen.mode = 0600
pm = static
pm.max_children = {{.Workers}}
request_terminate_timeout = {{.Terminate}}s
request_slowlog_timeout = {{.Slowlog}}s
slowlog = {{.SlowLog}}
catch_workers_output = yes
decorate_workers_output = no
clear_env = no
`))

// fpmName matches versioned php-fpm binaries such as php-fpm8.2.
var fpmName = regexp.MustCompile(`^php-fpm(\d+)\.(\d+)$`)

// FindFPM returns the newest php-fpm executable in PATH, /usr/sbin and
// /usr/local/sbin (where the official Docker images have it): php-fpm8.3
// before php-fpm8.2, a versioned name before a plain php-fpm, which is often
// a symbolic link to an unknown version.
func FindFPM() (string, error) {
	dirs := append(filepath.SplitList(os.Getenv("PATH")), "/usr/sbin", "/usr/local/sbin")
	type cand struct {
		path         string
		major, minor int
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
			continue
		}
		for _, e := range entries {
			c := cand{path: filepath.Join(dir, e.Name()), major: -1, minor: -1}
			if m := fpmName.FindStringSubmatch(e.Name()); m != nil {
				c.major, _ = strconv.Atoi(m[1])
				c.minor, _ = strconv.Atoi(m[2])
			} else if e.Name() != "php-fpm" {
				continue
			}
			if fi, err := os.Stat(c.path); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				found = append(found, c)
			}
		}
	}
	if len(found) == 0 {
		return "", errors.New("no php-fpm found in PATH, /usr/sbin or /usr/local/sbin; install it (apt-get install php-fpm) or pass --upstream")
	}
	sort.SliceStable(found, func(i, j int) bool {
		if found[i].major != found[j].major {
			return found[i].major > found[j].major
		}
		return found[i].minor > found[j].minor
	})
	return found[0].path, nil
}

// StartFPM writes a php-fpm configuration into a new temporary directory,
// starts php-fpm with it in the foreground (-F) as a child process, and
// returns once its socket accepts connections. Running as root it passes -R
// and runs the workers as root, since php-fpm refuses root otherwise. The
// child gets SIGTERM if this process dies without calling Stop (Linux), and
// lives in its own process group, so that a Ctrl-C in the terminal reaches
// fcgiscope only and php-fpm is stopped gracefully by Stop.
func StartFPM(ctx context.Context, opts FPMOptions) (*FPM, error) {
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = FindFPM(); err != nil {
			return nil, err
		}
	}
	dir, err := shortTempDir()
	if err != nil {
		return nil, err
	}
	f := &FPM{
		Binary:     bin,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "php-fpm.conf"),
		ErrorLog:   filepath.Join(dir, "php-fpm.log"),
		SlowLog:    filepath.Join(dir, "php-fpm-slow.log"),
		Output:     filepath.Join(dir, "php-fpm.out"),
		Addr:       fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "php-fpm.sock")},
		done:       make(chan struct{}),
	}
	fail := func(err error) (*FPM, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = min(max(runtime.NumCPU(), 2), 4)
	}
	asRoot := os.Geteuid() == 0
	var conf strings.Builder
	err = fpmConf.Execute(&conf, map[string]any{
		"Dir": dir, "ErrorLog": f.ErrorLog, "SlowLog": f.SlowLog, "Socket": f.Addr.Address,
		"Root": asRoot, "Workers": workers,
		"Terminate": wholeSeconds(opts.TerminateTimeout, 30*time.Second),
		"Slowlog":   wholeSeconds(opts.SlowlogTimeout, 5*time.Second),
	})
	if err == nil {
		err = os.WriteFile(f.ConfigPath, []byte(conf.String()), 0o600)
	}
	if err != nil {
		return fail(fmt.Errorf("writing %s: %w", f.ConfigPath, err))
	}
	out, err := os.OpenFile(f.Output, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fail(err)
	}
	defer out.Close() // the child has its own copy

	args := []string{"-F", "-y", f.ConfigPath}
	if asRoot {
		args = append(args, "-R")
	}
	cmd := exec.Command(bin, args...)
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	for _, kv := range env {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := startChild(cmd, syscall.SIGTERM); err != nil {
		return fail(fmt.Errorf("starting %s: %w", bin, err))
	}
	f.cmd, f.Pid = cmd, cmd.Process.Pid
	go func() {
		f.waitErr = cmd.Wait()
		close(f.done)
	}()

	timeout := opts.ReadyTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if err := f.waitReady(ctx, timeout); err != nil {
		f.Stop(time.Second)
		return nil, err
	}
	return f, nil
}

// waitReady polls the socket until it accepts, php-fpm exits, or the time
// is up.
func (f *FPM) waitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout("unix", f.Addr.Address, time.Second)
		if err == nil {
			return conn.Close()
		}
		select {
		case <-f.done:
			return fmt.Errorf("php-fpm (%s -y %s) exited before accepting connections: %v\n%s", f.Binary, f.ConfigPath, f.waitErr, f.diagnostics())
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("php-fpm did not accept connections on %s within %s: %w\n%s", f.Addr, timeout, err, f.diagnostics())
		}
	}
}

// diagnostics returns the end of php-fpm's output and error log, for a
// start that failed.
func (f *FPM) diagnostics() string {
	var b strings.Builder
	for _, name := range []string{f.Output, f.ErrorLog} {
		data, _ := os.ReadFile(name)
		if s := strings.TrimSpace(string(data)); s != "" {
			lines := strings.Split(s, "\n")
			fmt.Fprintf(&b, "%s:\n  %s\n", filepath.Base(name), strings.Join(lines[max(0, len(lines)-15):], "\n  "))
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

// Done is closed when the master has exited.
func (f *FPM) Done() <-chan struct{} { return f.done }

// Workers returns the pids of the master's children.
func (f *FPM) Workers() []int {
	var pids []int
	for _, p := range procfs.Children(f.Pid) {
		pids = append(pids, p.PID)
	}
	return pids
}

// Stop stops php-fpm: SIGQUIT, which lets requests in flight finish, then
// after grace SIGTERM, after 2 more seconds SIGKILL, and finally SIGKILL for
// every worker that outlived its master. It removes the directory. It is
// safe to call more than once; later calls return the first one's result.
func (f *FPM) Stop(grace time.Duration) error {
	f.stopOnce.Do(func() {
		// Workers are collected before the master goes: once it is gone
		// they are reparented and no longer recognisable as its.
		kids := procfs.Children(f.Pid)
		steps := []struct {
			sig  syscall.Signal
			wait time.Duration
		}{{syscall.SIGQUIT, grace}, {syscall.SIGTERM, 2 * time.Second}}
		for _, s := range steps {
			if f.exited() {
				break
			}
			_ = f.cmd.Process.Signal(s.sig)
			if f.waitExit(s.wait) {
				break
			}
		}
		if !f.exited() {
			kids = append(kids, procfs.Children(f.Pid)...)
			_ = f.cmd.Process.Kill()
			<-f.done
			f.stopErr = fmt.Errorf("php-fpm (pid %d) ignored SIGQUIT and SIGTERM and was killed", f.Pid)
		}
		if n := procfs.KillAll(kids, 2*time.Second); n > 0 && f.stopErr == nil {
			f.stopErr = fmt.Errorf("%d php-fpm workers outlived their master and were killed", n)
		}
		if err := os.RemoveAll(f.Dir); err != nil && f.stopErr == nil {
			f.stopErr = err
		}
	})
	return f.stopErr
}

func (f *FPM) exited() bool {
	select {
	case <-f.done:
		return true
	default:
		return false
	}
}

func (f *FPM) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.done:
		return true
	case <-t.C:
		return false
	}
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
func wholeSeconds(d, def time.Duration) int {
	if d <= 0 {
		d = def
	}
	return int((d + time.Second - 1) / time.Second)
}
