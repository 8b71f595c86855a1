package testbed

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/procfs"
)

const (
	// readyTimeout bounds how long a started server may take to accept its
	// first connection.
	readyTimeout = 10 * time.Second
	// pollInterval is the pause between readiness and liveness probes.
	pollInterval = 20 * time.Millisecond
)

// process is a started child whose exit is collected by exactly one goroutine,
// so that Stop can wait with a timeout while other code watches done.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // result of cmd.Wait; written before done is closed
}

// startProcess starts cmd so that it receives deathSig if the test binary
// dies without running its cleanups (a -timeout panic, a SIGKILL), instead of
// lingering and holding its ports. deathSig should be a signal that makes the
// server stop its own workers, which a SIGKILL of the master would orphan.
func startProcess(cmd *exec.Cmd, deathSig syscall.Signal) (*process, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = deathSig
	if err := spawn(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// spawnRequest asks the spawner thread to start a command.
type spawnRequest struct {
	cmd    *exec.Cmd
	result chan<- error
}

var (
	spawnOnce sync.Once
	spawnReqs chan spawnRequest
)

// spawn starts cmd from a dedicated OS thread that lives as long as the test
// binary. Linux delivers Pdeathsig when the thread that forked the child exits,
// not the process, and the Go runtime may retire the thread of an arbitrary
// goroutine, which would kill the server in the middle of a test.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnRequest)
		go func() {
			// Never unlocked: this goroutine, and so its thread, must outlive
			// every child started with Pdeathsig.
			runtime.LockOSThread()
			for req := range spawnReqs {
				req.result <- req.cmd.Start()
			}
		}()
	})
	result := make(chan error, 1)
	spawnReqs <- spawnRequest{cmd: cmd, result: result}
	return <-result
}

// exited reports whether the process has exited and been reaped.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to exit and reports whether it did.
func (p *process) waitExit(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		return false
	}
}

// stopStep is one escalation step of process.shutdown.
type stopStep struct {
	sig  syscall.Signal
	wait time.Duration
}

// shutdown sends each step's signal in turn until the process exits, then
// SIGKILLs it if it is still running, and finally SIGKILLs any of its children
// that survived: php-fpm and nginx workers outlive a killed master. Children
// are collected before signalling because once the master is gone they are
// reparented and can no longer be told apart from unrelated processes.
func (p *process) shutdown(steps ...stopStep) {
	pid := p.cmd.Process.Pid
	kids := procfs.Children(pid)
	for _, s := range steps {
		if p.exited() {
			break
		}
		// An error means the process has just exited, which is what we want.
		_ = p.cmd.Process.Signal(s.sig)
		if p.waitExit(s.wait) {
			break
		}
	}
	if !p.exited() {
		// Workers forked since the first snapshot must not escape either.
		kids = append(kids, procfs.Children(pid)...)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	procfs.KillAll(kids, 2*time.Second)
}

// waitReady polls until network/address accepts a connection, the process
// exits, or readyTimeout passes. A dial (rather than, say, an HTTP request)
// keeps the probe out of access logs and works for every protocol.
func (p *process) waitReady(network, address string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		conn, err := net.DialTimeout(network, address, time.Second)
		if err == nil {
			return conn.Close()
		}
		if p.exited() {
			return fmt.Errorf("process exited before %s %s accepted connections: %v", network, address, p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s did not accept connections within %v: %w", network, address, readyTimeout, err)
		}
		p.waitExit(pollInterval)
	}
}

// childPIDs returns the pids of the current children of ppid.
func childPIDs(ppid int) []int {
	var pids []int
	for _, k := range procfs.Children(ppid) {
		pids = append(pids, k.PID)
	}
	return pids
}

// syncBuffer is a bytes.Buffer that may be written by the exec package's
// copying goroutine while a test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p to the buffer.
func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns a copy of everything written so far.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serverEnv returns the environment for started servers: the test's own,
// minus NOTIFY_SOCKET, so that a php-fpm built with systemd support does not
// report readiness to a systemd unit the tests happen to run under.
func serverEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			env = append(env, kv)
		}
	}
	return env
}

// openLog creates the file that receives a server's stdout and stderr.
func openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", name, err)
	}
	return f, nil
}

// signal sends sig to the process, reporting os.ErrProcessDone once it has
// exited.
func (p *process) signal(sig os.Signal) error {
	if p.exited() {
		return os.ErrProcessDone
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return err
		}
		return fmt.Errorf("signalling pid %d with %v: %w", p.cmd.Process.Pid, sig, err)
	}
	return nil
}
