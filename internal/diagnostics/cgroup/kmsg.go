package cgroup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The messages of mm/oom_kill.c that name the process killed. The first is
// "<reason>: Killed process PID (COMM) total-vm:..." where the reason is
// "Out of memory", "Memory cgroup out of memory" or "Out of memory
// (oom_kill_allocating_task)"; older kernels wrote "Killed process PID
// (COMM) ..." alone, after a "Kill process PID (COMM) score N or sacrifice
// child" that only names the one chosen. Newer kernels write a one-line
// summary "oom-kill:constraint=...,task=COMM,pid=PID,uid=UID" first; its
// last ",pid=" counts, because a command name may hold one.
var (
	killedRE  = regexp.MustCompile(`^(?:(?:Out of memory|Memory cgroup out of memory)(?: \([a-z_]+\))?: )?Killed process (\d+) \(`)
	summaryRE = regexp.MustCompile(`^oom-kill:.*,pid=(\d+),uid=\d+$`)
)

// ParseOOMKill reads one kernel log message and returns the pid the OOM
// killer killed, if it says so. The message may be a /dev/kmsg record
// ("6,1234,5678901,-;text"), which then must come from the kernel itself
// (facility 0): a process allowed to write to /dev/kmsg could otherwise
// forge a kill. A "[ 1234.567890] " timestamp as dmesg prints it is
// skipped too. A continuation line of a record (one beginning with a space)
// is never a kill.
func ParseOOMKill(msg string) (pid int, ok bool) {
	msg, _, _ = strings.Cut(msg, "\n")
	if strings.HasPrefix(msg, " ") {
		return 0, false
	}
	if prefix, text, found := strings.Cut(msg, ";"); found && isKmsgPrefix(prefix) {
		prio, _ := strconv.Atoi(prefix[:strings.IndexByte(prefix, ',')])
		if prio>>3 != 0 {
			return 0, false
		}
		msg = text
	}
	msg = stripDmesgTime(strings.TrimRight(msg, "\r"))
	m := killedRE.FindStringSubmatch(msg)
	if m == nil {
		m = summaryRE.FindStringSubmatch(msg)
	}
	if m == nil {
		return 0, false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// stripDmesgTime removes the "[ 1234.567890] " that dmesg and the console
// put before a message.
func stripDmesgTime(s string) string {
	rest, ok := strings.CutPrefix(s, "[")
	if !ok {
		return s
	}
	stamp, text, ok := strings.Cut(rest, "] ")
	if !ok {
		return s
	}
	if _, err := strconv.ParseFloat(strings.TrimSpace(stamp), 64); err != nil {
		return s
	}
	return text
}

// isKmsgPrefix reports whether s is the "priority,sequence,microseconds,flags"
// (and maybe more fields, like "caller=T12") prefix of a /dev/kmsg record.
func isKmsgPrefix(s string) bool {
	f := strings.Split(s, ",")
	if len(f) < 4 {
		return false
	}
	for _, n := range f[:3] {
		if _, err := strconv.ParseUint(n, 10, 64); err != nil {
			return false
		}
	}
	return true
}

// recentKills bounds how many kills a KernelLog remembers.
const recentKills = 256

// pollInterval is how often a KernelLog looks again at a log that cannot
// wake it up: a regular file at its end, or a device the runtime poller
// does not take.
const pollInterval = 200 * time.Millisecond

// KernelLog follows /dev/kmsg from the moment Start is called and remembers
// the pids the OOM killer killed recently (bounded: keep at most 256).
//
// It opens the log non-blocking. /dev/kmsg then waits in Go's runtime
// poller, and closing the file when the context ends wakes the reading
// goroutine at once; a log the poller cannot wait on (a regular file
// standing in for /dev/kmsg in tests) is looked at again every 200 ms.
// Either way the goroutine and the file are gone soon after the context
// ends.
//
// The kernel writes the kill message just after it sends SIGKILL, so a
// caller that sees the worker die may have to wait a moment for Killed to
// know.
type KernelLog struct {
	Path string // "" = /dev/kmsg

	mu      sync.Mutex
	started bool
	killed  map[int]string // pid: the message
	order   []int          // pids in killed, oldest first
}

// Start opens the log, skips what is in it already, and follows it in a
// goroutine until ctx ends. It fails when the log cannot be opened: reading
// /dev/kmsg needs CAP_SYSLOG where kernel.dmesg_restrict is 1, and
// containers often have no /dev/kmsg. A KernelLog is started once.
func (k *KernelLog) Start(ctx context.Context) error {
	path := k.Path
	if path == "" {
		path = "/dev/kmsg"
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.started {
		return fmt.Errorf("following %s: already started", path)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("following the kernel log: %w", err)
	}
	// On /dev/kmsg, SEEK_END moves to after the newest record.
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		f.Close()
		return fmt.Errorf("following the kernel log: seeking to the end of %s: %w", path, err)
	}
	k.started = true
	k.killed = make(map[int]string)
	stop := context.AfterFunc(ctx, func() { f.Close() })
	go func() {
		defer stop()
		defer f.Close()
		k.follow(ctx, f)
	}()
	return nil
}

// follow reads records until ctx ends. A read of /dev/kmsg returns one
// record, its continuation lines included; a regular file returns what it
// has, so lines are split here and an incomplete last line waits for the
// rest.
func (k *KernelLog) follow(ctx context.Context, f *os.File) {
	buf := make([]byte, 16<<10) // a record is at most about 8 KiB, or the read fails with EINVAL
	var pending []byte
	for ctx.Err() == nil {
		n, err := f.Read(buf)
		if n > 0 {
			pending = append(pending, buf[:n]...)
			for {
				i := bytes.IndexByte(pending, '\n')
				if i < 0 {
					break
				}
				k.note(string(pending[:i]))
				pending = pending[i+1:]
			}
			if len(pending) == 0 {
				pending = nil // let the array go
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, syscall.EPIPE):
			// Records were overwritten before we read them; the next
			// read returns the oldest one left.
		case errors.Is(err, os.ErrClosed):
			return
		default:
			// io.EOF at the end of a regular file, EAGAIN from a
			// device the poller does not wait on, or something
			// passing: look again later.
			select {
			case <-ctx.Done():
				return
			case <-time.After(pollInterval):
			}
		}
	}
}

// note remembers line if it is a kill.
func (k *KernelLog) note(line string) {
	pid, ok := ParseOOMKill(line)
	if !ok {
		return
	}
	if _, text, found := strings.Cut(line, ";"); found {
		line = text
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, seen := k.killed[pid]; seen {
		// A second message about the same kill, or a reused pid: keep
		// the newest, once.
		for i, p := range k.order {
			if p == pid {
				k.order = append(k.order[:i], k.order[i+1:]...)
				break
			}
		}
	} else if len(k.order) >= recentKills {
		delete(k.killed, k.order[0])
		k.order = k.order[1:]
	}
	k.killed[pid] = line
	k.order = append(k.order, pid)
}

// Killed reports whether the OOM killer killed pid since Start, among the
// last 256 kills, and returns the kernel's message.
func (k *KernelLog) Killed(pid int) (line string, ok bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	line, ok = k.killed[pid]
	return line, ok
}
