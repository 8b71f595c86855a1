package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestParseOOMKill(t *testing.T) {
	tests := []struct {
		msg string
		pid int // 0: must not match
	}{
		// Linux 5.x and 6.x, global and memory cgroup OOM.
		{"Out of memory: Killed process 1234 (php-fpm8.2) total-vm:412340kB, anon-rss:301234kB, file-rss:0kB, shmem-rss:0kB, UID:33 pgtables:700kB oom_score_adj:0", 1234},
		{"Memory cgroup out of memory: Killed process 1234 (php-fpm) total-vm:412340kB, anon-rss:65000kB, file-rss:12kB, shmem-rss:0kB, UID:0 pgtables:200kB oom_score_adj:0", 1234},
		{"Out of memory (oom_kill_allocating_task): Killed process 77 (php-fpm) total-vm:1kB", 77},
		{"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,task_memcg=/x,task=php-fpm8.2,pid=1234,uid=33", 1234},
		{"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task=php-fpm8.2,pid=99,uid=0", 99},
		// A command name holding ",pid=": the last one is the kernel's.
		{"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,task_memcg=/x,task=a,pid=1,b,pid=4321,uid=33", 4321},
		// Older kernels gave no reason before the kill line.
		{"Killed process 555 (php5-fpm) total-vm:123kB, anon-rss:100kB, file-rss:0kB", 555},
		// /dev/kmsg records, with and without the caller field, and
		// dmesg's timestamp.
		{"3,1234,5678901,-;Out of memory: Killed process 4242 (php-fpm8.2) total-vm:1kB, anon-rss:1kB", 4242},
		{"6,1234,5678901,-,caller=T12;Memory cgroup out of memory: Killed process 4243 (php-fpm) total-vm:1kB", 4243},
		{"3,1234,5678901,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,task_memcg=/x,task=php-fpm8.2,pid=4244,uid=33\n SUBSYSTEM=memory\n", 4244},
		{"[ 1234.567890] Out of memory: Killed process 4245 (php-fpm8.2) total-vm:1kB", 4245},

		// Not kills, or not by the kernel.
		{"php-fpm8.2 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0", 0},
		{"Out of memory: Kill process 1234 (php-fpm) score 999 or sacrifice child", 0},
		{"Memory cgroup out of memory: Kill process 1234 (php-fpm) score 999 or sacrifice child", 0},
		{"oom_reaper: reaped process 1234 (php-fpm8.2), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB", 0},
		{"Memory cgroup stats for /x:", 0},
		{"[  1234]     0  1234   103088     75421   655360        0             0 php-fpm8.2", 0},
		{"oom-kill:constraint=CONSTRAINT_MEMCG,task=php-fpm8.2,pid=,uid=33", 0},
		{"oom-kill:constraint=CONSTRAINT_MEMCG,task=php-fpm8.2,pid=0,uid=33", 0},
		{"audit: type=1400 audit(1.2:3): apparmor=\"DENIED\" pid=1234 comm=\"php-fpm\"", 0},
		{"systemd[1]: php8.2-fpm.service: Killed process 1234 (php-fpm8.2) with signal SIGKILL.", 0},
		{" Killed process 1234 (php-fpm) total-vm:1kB", 0},                               // a continuation line
		{"12,99,5678901,-;Out of memory: Killed process 1234 (php-fpm) total-vm:1kB", 0}, // user facility: forged
		{"Out of memory: Killed process 99999999999999999999 (x) total-vm:1kB", 0},
		{"", 0},
	}
	for _, tt := range tests {
		pid, ok := ParseOOMKill(tt.msg)
		if pid != tt.pid || ok != (tt.pid != 0) {
			t.Errorf("ParseOOMKill(%q) = %d, %v; want %d, %v", tt.msg, pid, ok, tt.pid, tt.pid != 0)
		}
	}
}

// TestKernelLogFollowsTheLogFromStart stands a regular file in for
// /dev/kmsg: what was in it before Start is not news, kills appended after
// are remembered, and after the context ends neither the goroutine nor the
// file is left.
func TestKernelLogFollowsTheLogFromStart(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	path := filepath.Join(t.TempDir(), "kmsg")
	write(t, path, "3,1,100,-;Out of memory: Killed process 11 (php-fpm) total-vm:1kB\n")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := &KernelLog{Path: path}
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := k.Start(ctx); err == nil {
		t.Error("a second Start did not fail")
	}

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	appendRecords := func(records ...string) {
		t.Helper()
		for _, r := range records {
			if _, err := f.WriteString(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	appendRecords(
		"6,2,200,-;eth0: link up\n",
		"4,3,300,-;php-fpm8.2 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n",
		"12,4,350,-;Out of memory: Killed process 13 (php-fpm) total-vm:1kB\n",
		"3,5,400,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/x,task_memcg=/x,task=php-fpm8.2,pid=12,uid=33\n SUBSYSTEM=memory\n",
		// A record written in two pieces.
		"3,6,500,-;Memory cgroup out of memory: Killed process 12 (php-fpm8.2) ",
	)
	waitFor(t, "pid 12 to be reported", func() bool { _, ok := k.Killed(12); return ok })
	if line, _ := k.Killed(12); !strings.HasPrefix(line, "oom-kill:") {
		t.Errorf("Killed(12) = %q before the second record about it was complete", line)
	}
	appendRecords("total-vm:1kB, anon-rss:1kB\n")
	waitFor(t, "the newest message about pid 12", func() bool {
		line, _ := k.Killed(12)
		return line == "Memory cgroup out of memory: Killed process 12 (php-fpm8.2) total-vm:1kB, anon-rss:1kB"
	})
	if line, ok := k.Killed(11); ok {
		t.Errorf("Killed(11) = %q: a kill from before Start", line)
	}
	if line, ok := k.Killed(13); ok {
		t.Errorf("Killed(13) = %q: a kill forged by a user process", line)
	}

	f.Close() // the test's own writer
	cancel()
	waitFor(t, "the log to be closed", func() bool { return !openFile(t, path) })
}

func TestKernelLogRemembersTheLast256Kills(t *testing.T) {
	var k KernelLog
	k.killed = make(map[int]string)
	for pid := 1; pid <= 300; pid++ {
		k.note(fmt.Sprintf("3,%d,100,-;Out of memory: Killed process %d (php-fpm) total-vm:1kB", pid, pid))
	}
	k.note("3,301,100,-;oom-kill:constraint=CONSTRAINT_NONE,task=php-fpm,pid=100,uid=0")
	if _, ok := k.Killed(44); ok {
		t.Error("pid 44 is still remembered after 256 newer kills")
	}
	for _, pid := range []int{45, 100, 300} {
		if _, ok := k.Killed(pid); !ok {
			t.Errorf("pid %d was forgotten", pid)
		}
	}
	if len(k.killed) != recentKills || len(k.order) != recentKills {
		t.Errorf("remembers %d kills in a list of %d, want %d", len(k.killed), len(k.order), recentKills)
	}
}

func TestKernelLogStartFails(t *testing.T) {
	k := &KernelLog{Path: filepath.Join(t.TempDir(), "missing")}
	if err := k.Start(context.Background()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Start = %v, want a not-exist error", err)
	}
}

// TestKernelLogOnDevKmsg follows the real /dev/kmsg and stops: the
// goroutine, parked in the runtime poller, must go when the context ends.
func TestKernelLogOnDevKmsg(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx, cancel := context.WithCancel(context.Background())
	k := &KernelLog{}
	if err := k.Start(ctx); err != nil {
		cancel()
		t.Skipf("SKIPPING: /dev/kmsg cannot be followed here: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	waitFor(t, "/dev/kmsg to be closed", func() bool { return !openFile(t, "/dev/kmsg") })
}

// openFile reports whether this process has name open.
func openFile(t *testing.T, name string) bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && target == name {
			return true
		}
	}
	return false
}

// waitFor waits up to 5 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
