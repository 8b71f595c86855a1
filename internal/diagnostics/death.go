package diagnostics

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// signalAdvice is what to do about a worker that died on each signal.
var signalAdvice = map[syscall.Signal]string{
	syscall.SIGSEGV: "SIGSEGV is a crash inside PHP or an extension (opcache, xdebug, imagick, grpc are usual suspects): note the script and request, turn extensions off one at a time, or get a backtrace from a core dump (rlimit_core = unlimited in the pool, and gdb on the core).",
	syscall.SIGBUS:  "SIGBUS is a bad memory access, usually a file mapped into memory that shrank under it: opcache's shared memory or file cache on a full or changed file system, or an extension; check free space on /dev/shm and opcache.file_cache, and get a core dump (rlimit_core = unlimited).",
	syscall.SIGILL:  "SIGILL is an instruction the CPU does not have: PHP or an extension was built for a newer CPU than this one (a container image built elsewhere); rebuild it for this machine, or turn the JIT off (opcache.jit = off).",
	syscall.SIGABRT: "SIGABRT is PHP or a library giving up on itself (a failed assertion, a double free detected by glibc, an extension calling abort()): the lines just before it in php-fpm's error log usually say which; get a core dump (rlimit_core = unlimited) for a backtrace.",
	syscall.SIGFPE:  "SIGFPE is an arithmetic fault in native code (an integer division by zero in an extension), not in PHP code, which throws DivisionByZeroError instead: find the extension from a core dump (rlimit_core = unlimited).",
	syscall.SIGKILL: "SIGKILL cannot be caught: the kernel's OOM killer (dmesg says \"Killed process\"), a container runtime over its memory limit, or an operator or supervisor (kill -9) sent it. fcgiscope tells the OOM killer's work apart when it sees php-fpm's memory cgroup (the same host or container) or the kernel's log.",
}

// adviseSignal returns the hint for a worker that died on sig.
func adviseSignal(sig syscall.Signal, name string) string {
	if a, ok := signalAdvice[sig]; ok {
		return a
	}
	return "Something sent the worker " + name + ": an operator, a deploy script, or systemd."
}

// oomKilled explains a worker that died on SIGKILL (or without a word)
// as the OOM killer's doing when php-fpm's memory cgroup or the kernel's
// log says so, and reports whether it did.
func (c *Classifier) oomKilled(t *outcome.Trace, d *Diagnosis, pid int, how string, elapsed time.Duration) bool {
	ev := d.Evidence
	var source string
	if c.Memory != nil {
		kills, mem, err := c.Memory.Kills()
		if err == nil {
			now := time.Now()
			if kills > 0 {
				c.oomAt.Store(now.UnixNano())
			}
			last := time.Unix(0, c.oomAt.Load())
			if kills > 0 || !last.Before(t.DialStart.Add(-time.Second)) {
				source = fmt.Sprintf("the oom_kill counter of php-fpm's memory cgroup (%s) went up, to %d", mem.Dir, mem.OOMKills)
				ev["cgroup"] = mem.Dir
				ev["oom_kill"] = strconv.FormatInt(mem.OOMKills, 10)
				c.describeMemory(d, mem.Limit, mem.Peak)
			}
		}
	}
	if source == "" && c.Kernel != nil && pid != 0 {
		if line, ok := c.Kernel.Killed(pid); ok {
			source = "the kernel's log says so"
			ev["kernel_log"] = line
		}
	}
	if source == "" {
		return false
	}
	d.Cause = CauseOOMKilled
	if pid != 0 {
		d.FPMPid = pid
	}
	worker := "The php-fpm worker"
	if pid != 0 {
		worker = fmt.Sprintf("The php-fpm worker (pid %d)", pid)
	}
	d.Detail = fmt.Sprintf("%s %s after %s: the kernel's OOM killer killed it with SIGKILL; %s.", worker, how, seconds(elapsed), source) + d.Detail
	children := "pm.max_children"
	if p := c.pool(); p != nil && p.MaxChildren > 0 {
		children = fmt.Sprintf("pm.max_children = %d%s", p.MaxChildren, at(p.Settings["pm.max_children"].Where()))
	}
	_, memLimit := c.phpSetting(t, "memory_limit")
	d.Hints = []string{
		fmt.Sprintf("Keep %s times the memory one worker takes below the limit: fewer workers, or a lower %s so that a greedy script stops with a PHP error instead of taking its worker down, or a higher memory limit for the container.", children, memLimit),
	}
	return true
}

// describeMemory adds the cgroup's limit and peak to d's detail.
func (c *Classifier) describeMemory(d *Diagnosis, limit, peak int64) {
	var parts []string
	if limit > 0 {
		d.Evidence["memory_limit_bytes"] = strconv.FormatInt(limit, 10)
		parts = append(parts, "its memory limit is "+size(limit))
	} else {
		parts = append(parts, "it has no memory limit of its own (the whole machine ran out)")
	}
	if peak > 0 {
		d.Evidence["memory_peak_bytes"] = strconv.FormatInt(peak, 10)
		parts = append(parts, "its peak use "+size(peak))
	}
	d.Detail += " The cgroup: " + strings.Join(parts, ", ") + "."
}

// clientNotAllowed explains a TCP connection php-fpm closed at once,
// before any record, as listen.allowed_clients at work: the pool's
// setting leaves out the address fcgiscope connects from, or, when
// readLog is set, php-fpm's log says "Connection disallowed" (a line
// php-fpm writes only with catch_workers_output). It reports whether it
// did. It waits for nothing: the first look, by the setting, needs no log,
// and the second comes after fromLog has waited for php-fpm's lines.
func (c *Classifier) clientNotAllowed(t *outcome.Trace, d *Diagnosis, elapsed time.Duration, readLog bool) bool {
	if t.Upstream.Network != "tcp" || t.UpstreamRecords > 0 {
		return false
	}
	ev := d.Evidence
	from := ""
	if a, ok := t.UpstreamLocal.(*net.TCPAddr); ok {
		from = a.IP.String()
	}
	p := c.pool()
	var listed, where string
	if p != nil && p.ListenAllowedClients != "" {
		listed = p.ListenAllowedClients
		where = p.Settings["listen.allowed_clients"].Where()
	}
	var logged fpm.Event
	var saidSo bool
	if readLog && c.Log != nil && elapsed < time.Second {
		logged, saidSo = c.Log.Find(t.DialStart, 0, func(e fpm.Event) bool {
			return e.Kind == fpm.EventOutput && strings.Contains(e.Output, "Connection disallowed")
		})
	}
	if !saidSo && (listed == "" || from == "" || allowed(listed, from)) {
		return false
	}
	d.Cause = CauseClientNotAllowed
	if from != "" {
		ev["connected_from"] = from
	}
	pool := "The pool"
	if p != nil {
		pool = fmt.Sprintf("Pool %q", p.Name)
		ev["pool"] = p.Name
	}
	if saidSo {
		ev["fpm_log_line"] = logged.Line
	}
	setting := "listen.allowed_clients"
	if listed != "" {
		ev["listen.allowed_clients"] = listed
		setting = fmt.Sprintf("listen.allowed_clients = %s%s", listed, at(where))
	}
	d.Detail = fmt.Sprintf("php-fpm at %s accepted the connection from %s and closed it at once, after %s, without a record: %s has %s, which does not let fcgiscope's address in.", t.Upstream, orUnknown(from), seconds(elapsed), pool, setting)
	if saidSo {
		d.Detail += " php-fpm's log says: " + strings.TrimSpace(strings.TrimPrefix(logged.Output, "ERROR: "))
	}
	d.Hints = []string{fmt.Sprintf("Add %s to listen.allowed_clients%s (a comma-separated list of addresses), or remove the setting and keep the port off the network another way (listen on 127.0.0.1 or a unix socket).", orUnknown(from), at(where))}
	return true
}

func orUnknown(s string) string {
	if s == "" {
		return "fcgiscope's address"
	}
	return s
}

// allowed reports whether php-fpm's listen.allowed_clients list lets ip in.
func allowed(list, ip string) bool {
	want, err := netip.ParseAddr(ip)
	if err != nil {
		return true // cannot tell: do not blame the setting
	}
	for _, item := range strings.Split(list, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(item)); err == nil && a.Unmap() == want.Unmap() {
			return true
		}
	}
	return false
}
