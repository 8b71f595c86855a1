// Package procfs reads the little of Linux's /proc that fcgiscope needs to
// look after the processes it starts: state, parent, start time and CPU time
// of a process, and its children. It lets php-fpm and nginx workers be found
// and stopped by pid without ever touching a process that merely reuses a
// pid.
package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stat is the part of /proc/PID/stat that fcgiscope uses.
type Stat struct {
	State byte // R, S, D, Z, X, ...
	PPID  int
	// Start is the start time in clock ticks since boot, as written; with
	// the pid it names a process across pid reuse.
	Start string
	// CPUTicks is the CPU time, user and system, of the process and of its
	// children that have exited and been waited for, in clock ticks
	// (USER_HZ, 100 a second).
	CPUTicks int64
}

// Gone reports whether the process has ended: a zombie holds nothing and
// counts as gone, since an orphan reparented to an init that does not reap
// (common in containers) stays a zombie forever.
func (s Stat) Gone() bool { return s.State == 'Z' || s.State == 'X' }

// ReadStat reads /proc/PID/stat. The command name may hold spaces and
// parentheses, so fields are counted from the last ')'.
func ReadStat(pid int) (Stat, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 > len(data) {
		return Stat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	// f[0] is field 3 (state), so field n is f[n-3].
	f := strings.Fields(string(data[i+2:]))
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return Stat{}, fmt.Errorf("parsing the parent in /proc/%d/stat: %w", pid, err)
	}
	st := Stat{State: f[0][0], PPID: ppid, Start: f[19]}
	// utime, stime, cutime, cstime: fields 14 to 17.
	for _, field := range f[11:15] {
		n, _ := strconv.ParseInt(field, 10, 64)
		st.CPUTicks += n
	}
	return st, nil
}

// ID names a process across pid reuse by its start time.
type ID struct {
	PID   int
	Start string
}

// IDOf returns the ID of the process running as pid now; its Start is empty
// when there is none.
func IDOf(pid int) ID {
	st, _ := ReadStat(pid)
	return ID{PID: pid, Start: st.Start}
}

// Alive reports whether the process still runs.
func (id ID) Alive() bool {
	st, err := ReadStat(id.PID)
	return err == nil && st.Start == id.Start && !st.Gone()
}

// Children returns the live children of ppid by scanning /proc, because
// /proc/PID/task/TID/children needs CONFIG_PROC_CHILDREN, which not every
// kernel has. It returns nil where there is no /proc.
func Children(ppid int) []ID {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []ID
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := ReadStat(pid)
		if err != nil || st.PPID != ppid || st.Gone() {
			continue
		}
		kids = append(kids, ID{PID: pid, Start: st.Start})
	}
	return kids
}

// KillAll SIGKILLs the processes of ids still alive, waits up to wait for
// them to go, and returns how many it had to kill.
func KillAll(ids []ID, wait time.Duration) int {
	n := 0
	for _, id := range ids {
		// ESRCH means it died meanwhile.
		if id.Alive() && syscall.Kill(id.PID, syscall.SIGKILL) == nil {
			n++
		}
	}
	deadline := time.Now().Add(wait)
	for _, id := range ids {
		for id.Alive() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return n
}
