package testbed

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/child"
)

// Process is a running fcgiscope binary started by StartFcgiscope.
type Process struct {
	Pid int
	// Cmd is the started command. The harness already waits for it, so do
	// not call Cmd.Wait; after Stop, Cmd.ProcessState holds the exit status.
	Cmd *exec.Cmd

	proc     *child.Child
	output   *syncBuffer
	stopOnce sync.Once
}

// build caches the result of building fcgiscope, which is shared by all tests
// of a test binary because building is slow compared to a test.
var build struct {
	once sync.Once
	path string
	err  error
}

// BuildFcgiscope builds ./cmd/fcgiscope of this module once per test binary
// and returns the path of the executable; a build failure fails the test with
// the compiler output. The binary is built with -race when the test binary
// was, so that races in the server fail the integration tests too.
//
// The executable is kept in a per-checkout directory under os.TempDir and
// replaced atomically on each build, rather than in a new temp dir per test
// binary, because no cleanup runs after the last test of a package and every
// `go test` run would otherwise leave a binary behind.
func BuildFcgiscope(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.path, build.err = buildFcgiscope()
	})
	if build.err != nil {
		t.Fatalf("testbed: building fcgiscope: %v", build.err)
	}
	return build.path
}

// buildFcgiscope runs `go build` for ./cmd/fcgiscope and returns the path of
// the executable.
func buildFcgiscope() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	key := sha256.Sum256([]byte(fmt.Sprintf("%s race=%t", root, raceEnabled)))
	outDir := filepath.Join(os.TempDir(), fmt.Sprintf("fcgiscope-testbed-%x", key[:6]))
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}
	// Build into a private directory and rename, so that test binaries of
	// other packages running concurrently never execute a half-written file.
	tmpDir, err := os.MkdirTemp(outDir, "build-")
	if err != nil {
		return "", fmt.Errorf("creating build dir: %w", err)
	}
	defer os.RemoveAll(tmpDir)

	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	tmpBin := filepath.Join(tmpDir, "fcgiscope")
	args = append(args, "-o", tmpBin, "./cmd/fcgiscope")
	// `go test` puts $GOROOT/bin first in the test binary's PATH, so this is
	// the toolchain that built the test.
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (in %s): %w\n%s", strings.Join(args, " "), root, err, output)
	}
	bin := filepath.Join(outDir, "fcgiscope")
	if err := os.Rename(tmpBin, bin); err != nil {
		return "", fmt.Errorf("installing built binary: %w", err)
	}
	return bin, nil
}

// moduleRoot returns the nearest directory at or above the working directory
// (the package directory under `go test`) that contains go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding module root: %w", err)
	}
	for {
		_, err := os.Stat(filepath.Join(dir, "go.mod"))
		if err == nil {
			return dir, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("finding module root: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// StartFcgiscope builds fcgiscope (see BuildFcgiscope) and runs `fcgiscope
// serve` with env appended to the test's environment (later entries win, e.g.
// "FCGISCOPE_LISTEN=127.0.0.1:9001", "FCGISCOPE_UPSTREAM=unix:/x.sock"). It
// waits until the FCGISCOPE_LISTEN address (nginx syntax: host:port or
// unix:/path) accepts a connection and stops the process in t.Cleanup.
// FCGISCOPE_LISTEN must be set, in env or in the test's environment, because
// the harness cannot otherwise tell when the server is ready.
func StartFcgiscope(t testing.TB, env ...string) *Process {
	t.Helper()
	return startServe(t, BuildFcgiscope(t), nil, env)
}

// StartFcgiscopeAs is StartFcgiscope with the process running as uid:gid,
// for tests of what an unprivileged fcgiscope may and may not open. The
// caller must be root, and the built binary and any unix socket directory
// must be reachable by that user.
func StartFcgiscopeAs(t testing.TB, uid, gid uint32, env ...string) *Process {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("testbed: StartFcgiscopeAs needs root to switch users")
	}
	return startServe(t, BuildFcgiscope(t), &syscall.Credential{Uid: uid, Gid: gid}, env)
}

// StartFcgiscopeBinary is StartFcgiscope with an fcgiscope binary built
// elsewhere, such as a release or an earlier commit, instead of this
// checkout's, for benchmarks that compare the two under the same load. The
// binary must understand `serve` and FCGISCOPE_LISTEN as this one does.
func StartFcgiscopeBinary(t testing.TB, bin string, env ...string) *Process {
	t.Helper()
	return startServe(t, bin, nil, env)
}

// startServe runs `bin serve` as StartFcgiscope describes. It is separate so
// that the process handling can be tested without building fcgiscope.
func startServe(t testing.TB, bin string, cred *syscall.Credential, env []string) *Process {
	t.Helper()
	// The admin endpoint's default port would clash between instances
	// running at once; tests that want it name an address.
	fullEnv := append(append(child.Env(nil), "FCGISCOPE_ADMIN_LISTEN="), env...)
	listen := lastEnv(fullEnv, "FCGISCOPE_LISTEN")
	if listen == "" {
		t.Fatalf("testbed: StartFcgiscope needs FCGISCOPE_LISTEN to know when fcgiscope is ready")
	}
	network, address, err := parseNginxAddr(listen)
	if err != nil {
		t.Fatalf("testbed: FCGISCOPE_LISTEN: %v", err)
	}

	output := &syncBuffer{}
	cmd := exec.Command(bin, "serve")
	cmd.Env = fullEnv
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	cmd.Stdout, cmd.Stderr = output, output // Stdin stays nil, i.e. /dev/null.
	// A child that inherited the output pipe must not block Stop forever.
	cmd.WaitDelay = 2 * time.Second
	proc, err := child.Start(cmd, syscall.SIGTERM)
	if err != nil {
		t.Fatalf("testbed: fcgiscope: %v", err)
	}
	p := &Process{Pid: cmd.Process.Pid, Cmd: cmd, proc: proc, output: output}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("testbed: fcgiscope output:\n%s", tail(p.Output(), 60))
		}
	})

	if err := proc.WaitReady(network, address, readyTimeout); err != nil {
		t.Fatalf("testbed: fcgiscope not ready: %v\noutput:\n%s", err, tail(p.Output(), 60))
	}
	t.Logf("testbed: fcgiscope pid %d listening on %s", p.Pid, listen)
	return p
}

// lastEnv returns the value of the last key=value entry for key in env, the
// one exec uses when a key is duplicated.
func lastEnv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// Stop sends SIGTERM, waits up to 10 s for a graceful exit, then SIGKILLs
// the process and waits for it. It is idempotent and safe to call
// concurrently.
func (p *Process) Stop() {
	p.stopOnce.Do(func() {
		p.proc.Stop(child.Step{Signal: syscall.SIGTERM, Wait: 10 * time.Second})
	})
}

// StopWith stops the process with sig, waiting up to 10 s before it
// SIGKILLs it, for tests of how each signal stops it; Cmd.ProcessState
// then holds the exit status. It is a Stop, and as idempotent.
func (p *Process) StopWith(sig syscall.Signal) {
	p.stopOnce.Do(func() {
		p.proc.Stop(child.Step{Signal: sig, Wait: 10 * time.Second})
	})
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) error {
	return p.proc.Signal(sig)
}

// Output returns everything the process wrote to stdout and stderr so far
// (fcgiscope's JSON log lines).
func (p *Process) Output() string {
	return p.output.String()
}
