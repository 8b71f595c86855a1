package gateway

import (
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// spawn requests go to one goroutine locked to its OS thread for the life
// of the process. Linux sends a child's parent-death signal when the thread
// that forked it exits, not the process, and the Go runtime ends the thread
// of a goroutine that exits while locked to it: a child started from an
// arbitrary goroutine could be killed in the middle of serving.
var (
	spawnOnce sync.Once
	spawnReqs chan spawnRequest
)

type spawnRequest struct {
	cmd    *exec.Cmd
	result chan<- error
}

// startChild starts cmd so that it gets deathSig when this process dies
// without stopping it (a SIGKILL, a crash), where the system supports it.
func startChild(cmd *exec.Cmd, deathSig syscall.Signal) error {
	setDeathSignal(cmd, deathSig)
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked, on purpose
			for req := range spawnReqs {
				req.result <- req.cmd.Start()
			}
		}()
	})
	result := make(chan error, 1)
	spawnReqs <- spawnRequest{cmd: cmd, result: result}
	return <-result
}

// procID names a process across pid reuse by its start time.
type procID struct {
	pid   int
	start string
}

// procStat reads the state, parent and start time from /proc/<pid>/stat.
// The command name may hold spaces and parentheses, so fields are counted
// from the last ')'.
func procStat(pid int) (state byte, ppid int, start string, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, "", false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 > len(data) {
		return 0, 0, "", false
	}
	fields := strings.Fields(string(data[i+2:]))
	if len(fields) < 20 {
		return 0, 0, "", false
	}
	ppid, err = strconv.Atoi(fields[1])
	if err != nil {
		return 0, 0, "", false
	}
	return fields[0][0], ppid, fields[19], true
}

// childrenOf returns the live children of ppid, read from /proc; it
// returns nil where there is no /proc.
func childrenOf(ppid int) []procID {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []procID
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, parent, start, ok := procStat(pid)
		if !ok || parent != ppid || state == 'Z' || state == 'X' {
			continue
		}
		kids = append(kids, procID{pid, start})
	}
	return kids
}

// alive reports whether the process still runs; a zombie holds nothing and
// counts as gone.
func (p procID) alive() bool {
	state, _, start, ok := procStat(p.pid)
	return ok && start == p.start && state != 'Z' && state != 'X'
}

// killAll SIGKILLs the processes of ids still alive, waits up to wait for
// them to go, and returns how many had to be killed.
func killAll(ids []procID, wait time.Duration) int {
	n := 0
	for _, id := range ids {
		if id.alive() {
			if syscall.Kill(id.pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	deadline := time.Now().Add(wait)
	for _, id := range ids {
		for id.alive() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return n
}
