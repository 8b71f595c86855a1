// Package child runs a server (php-fpm, nginx, fcgiscope itself) as a child
// process and stops it again, workers included. fcgiscope http runs its
// private php-fpm with it, and the test harness every server it starts.
package child

import (
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

// Child is a started process whose exit is collected by exactly one
// goroutine, so that stopping it can wait with a timeout while other code
// watches Done.
type Child struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the result of cmd.Wait; written before done is closed
}

// Start starts cmd so that it gets deathSig if this process dies without
// stopping it (a crash, a SIGKILL, a test binary's timeout), instead of
// lingering and holding its sockets. deathSig should be a signal that makes
// the server stop its own workers, which a SIGKILL of the master would
// orphan.
func Start(cmd *exec.Cmd, deathSig syscall.Signal) (*Child, error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = deathSig
	if err := spawn(cmd); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	c := &Child{cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
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

// spawn starts cmd from an OS thread that lives as long as the process.
// Linux sends the death signal when the thread that forked the child exits,
// not the process, and the Go runtime ends the thread of a goroutine that
// exits while locked to it: a child started from an arbitrary goroutine
// could be killed in the middle of its work.
func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReqs = make(chan spawnRequest)
		go func() {
			// Never unlocked: this goroutine, and so its thread, must
			// outlive every child started with a death signal.
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

// Pid returns the child's pid.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Done is closed once the child has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// Err returns how the child exited; it is valid once Done is closed.
func (c *Child) Err() error { return c.err }

// Exited reports whether the child has exited and been reaped.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// WaitExit waits up to d for the child to exit and reports whether it did.
func (c *Child) WaitExit(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.done:
		return true
	case <-timer.C:
		return false
	}
}

// Step is one escalation step of Stop: a signal and how long to wait for
// the child to exit after it.
type Step struct {
	Signal syscall.Signal
	Wait   time.Duration
}

// Stop sends each step's signal in turn until the child exits, then
// SIGKILLs it if it still runs, and finally SIGKILLs its own children that
// survived it: php-fpm's and nginx's workers outlive a killed master. It
// returns the number of those it had to kill, and whether the child itself
// had to be killed. Children are listed before the first signal, because
// once the master is gone they are reparented and can no longer be told
// apart from other processes.
func (c *Child) Stop(steps ...Step) (killed bool, orphans int) {
	pid := c.Pid()
	kids := procfs.Children(pid)
	for _, s := range steps {
		if c.Exited() {
			break
		}
		// An error means the child has just exited, which is what we
		// want.
		_ = c.cmd.Process.Signal(s.Signal)
		if c.WaitExit(s.Wait) {
			break
		}
	}
	if !c.Exited() {
		// Workers forked since the first list must not escape either.
		kids = append(kids, procfs.Children(pid)...)
		_ = c.cmd.Process.Kill()
		<-c.done
		killed = true
	}
	return killed, procfs.KillAll(kids, 2*time.Second)
}

// Signal sends sig to the child, reporting os.ErrProcessDone once it has
// exited.
func (c *Child) Signal(sig os.Signal) error {
	if c.Exited() {
		return os.ErrProcessDone
	}
	if err := c.cmd.Process.Signal(sig); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			return err
		}
		return fmt.Errorf("signalling pid %d with %v: %w", c.Pid(), sig, err)
	}
	return nil
}

// Children returns the pids of the child's own children, its workers.
func (c *Child) Children() []int {
	var pids []int
	for _, k := range procfs.Children(c.Pid()) {
		pids = append(pids, k.PID)
	}
	return pids
}

// WaitReady polls until network/address accepts a connection, the child
// exits, or timeout passes. A connect (rather than, say, an HTTP request)
// keeps the check out of access logs and works for every protocol.
func (c *Child) WaitReady(network, address string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := net.DialTimeout(network, address, time.Second)
		if err == nil {
			return conn.Close()
		}
		if c.Exited() {
			return fmt.Errorf("the process exited before %s %s accepted connections: %v", network, address, c.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s %s did not accept connections within %v: %w", network, address, timeout, err)
		}
		c.WaitExit(20 * time.Millisecond)
	}
}

// Env returns env without NOTIFY_SOCKET, so that a server built with
// systemd support does not report to a systemd unit that started fcgiscope
// or the tests; nil env means this process's environment.
func Env(env []string) []string {
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") {
			out = append(out, kv)
		}
	}
	return out
}
