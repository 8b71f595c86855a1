package httpgateway

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
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
