package testbed

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/cgroup"
)

// cgroupRemoveTimeout bounds how long MemoryCgroup's cleanup retries rmdir,
// which fails with EBUSY until the last process has left and the kernel has
// let go of it.
const cgroupRemoveTimeout = 10 * time.Second

// MemoryCgroup creates a memory cgroup limited to limit bytes under the
// cgroup this test process runs in, so that a test can make the kernel's
// OOM killer strike a process of its own. It returns the directory and "",
// or, when this machine does not allow it, "" and the exact reason (no
// memory controller, not root, read-only cgroupfs, the kernel refused the
// limit, with the errno), for the caller to t.Skip with. When CI=true a
// reason other than "not root" or "no memory controller" fails the test
// here instead, in the spirit of RequireFPM: a CI machine that could run the
// test must not skip it silently.
//
// On cgroup v1 it writes memory.limit_in_bytes and, where writable,
// memory.memsw.limit_in_bytes = limit and memory.swappiness = 0; on v2
// memory.max and, where present, memory.swap.max = 0: the OOM killer is to
// fire instead of the kernel swapping. On v2 the memory controller must be
// enabled in this cgroup's cgroup.subtree_control, which v2 allows only in a
// cgroup without processes of its own (or the root): run such tests from a
// delegated cgroup.
//
// The cgroup is removed in t.Cleanup. Cleanups run last registered first,
// so call MemoryCgroup before starting the processes that JoinCgroup moves
// into it: their cleanups stop them before this one runs. A process still
// in the cgroup then is moved back to the parent, because rmdir fails with
// EBUSY while a cgroup has processes.
func MemoryCgroup(t testing.TB, limit int64) (dir string, why string) {
	t.Helper()
	ci := inCI()
	own, err := cgroup.Reader{}.ReadMemory(os.Getpid())
	if errors.Is(err, cgroup.ErrNoMemoryCgroup) {
		return "", cgroupUnavailable(t, ci, true, "no memory controller: "+err.Error())
	}
	if err != nil {
		return "", cgroupUnavailable(t, ci, false, "finding this process's memory cgroup: "+err.Error())
	}
	parent := own.Dir
	if own.Version == 2 {
		ctl, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
		if err != nil {
			return "", cgroupUnavailable(t, ci, false, fmt.Sprintf("reading cgroup.subtree_control: %v", err))
		}
		if !slices.Contains(strings.Fields(string(ctl)), "memory") {
			return "", cgroupUnavailable(t, ci, true, fmt.Sprintf("no memory controller for child cgroups: "+
				"%s/cgroup.subtree_control is %q, without memory (cgroup v2 enables it only in a cgroup "+
				"without processes of its own, and this test process is in %s)",
				parent, strings.TrimSpace(string(ctl)), parent))
		}
	}

	cg, err := os.MkdirTemp(parent, "fcgiscope-test-")
	switch {
	case errors.Is(err, syscall.EROFS):
		return "", cgroupUnavailable(t, ci, false, "read-only cgroupfs: "+withErrno(err))
	case errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0:
		return "", cgroupUnavailable(t, ci, true, fmt.Sprintf("not root (euid %d): %s", os.Geteuid(), withErrno(err)))
	case errors.Is(err, fs.ErrPermission):
		// Root in a user namespace or without CAP_SYS_ADMIN is root
		// only in name.
		return "", cgroupUnavailable(t, ci, true, "not root, as far as cgroups go (no CAP_SYS_ADMIN?): "+withErrno(err))
	case err != nil:
		return "", cgroupUnavailable(t, ci, false, "creating a memory cgroup: "+withErrno(err))
	}
	t.Cleanup(func() { removeCgroup(t, cg, parent) })

	limitFile, swapFiles := "memory.limit_in_bytes", [][2]string{
		{"memory.swappiness", "0"},
		{"memory.memsw.limit_in_bytes", strconv.FormatInt(limit, 10)},
	}
	if own.Version == 2 {
		limitFile, swapFiles = "memory.max", [][2]string{{"memory.swap.max", "0"}}
	}
	if err := writeCgroupFile(cg, limitFile, strconv.FormatInt(limit, 10)); err != nil {
		return "", cgroupUnavailable(t, ci, false, fmt.Sprintf("the kernel refused %s = %d: %s", limitFile, limit, withErrno(err)))
	}
	for _, f := range swapFiles {
		// Without swap, or without swap accounting, these are absent
		// or refused, and there is nothing to swap to anyway.
		_ = writeCgroupFile(cg, f[0], f[1])
	}
	t.Logf("testbed: memory cgroup v%d %s limited to %d bytes", own.Version, cg, limit)
	return cg, ""
}

// cgroupUnavailable returns why MemoryCgroup gives no cgroup, or fails the
// test when ci is set and the reason is not inherent to the machine (no
// privilege, no memory controller). It takes ci and a testing.TB so that the
// decision can be tested with a fake.
func cgroupUnavailable(t testing.TB, ci, inherent bool, why string) string {
	t.Helper()
	if ci && !inherent {
		t.Fatalf("testbed: this machine should give a test a memory cgroup, but: %s "+
			"(failing instead of skipping because CI=true)", why)
	}
	return why
}

// JoinCgroup moves pid and all its current children (procfs.Children in
// internal/procfs) into the cgroup dir by writing each pid to cgroup.procs.
// The parent moves first, so that a child it forks meanwhile is born in dir;
// a child that exits meanwhile is passed over. Memory a process has already
// used stays charged where it was; what it allocates from now on counts
// against dir's limit.
func JoinCgroup(t testing.TB, dir string, pid int) {
	t.Helper()
	if err := writeCgroupFile(dir, "cgroup.procs", strconv.Itoa(pid)); err != nil {
		t.Fatalf("testbed: moving process %d into cgroup %s: %v", pid, dir, err)
	}
	moved := []int{pid}
	for _, kid := range childPIDs(pid) {
		err := writeCgroupFile(dir, "cgroup.procs", strconv.Itoa(kid))
		if errors.Is(err, syscall.ESRCH) {
			continue
		}
		if err != nil {
			t.Fatalf("testbed: moving process %d, a child of %d, into cgroup %s: %v", kid, pid, dir, err)
		}
		moved = append(moved, kid)
	}
	t.Logf("testbed: moved processes %v into cgroup %s", moved, dir)
}

// removeCgroup removes the cgroup dir, moving what processes are left in it
// to parent first. rmdir fails with EBUSY while processes remain, and for a
// moment after the last one exits, so it is retried.
func removeCgroup(t testing.TB, dir, parent string) {
	deadline := time.Now().Add(cgroupRemoveTimeout)
	for {
		left := cgroupProcs(dir)
		for _, pid := range left {
			if err := writeCgroupFile(parent, "cgroup.procs", strconv.Itoa(pid)); err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Errorf("testbed: moving process %d out of cgroup %s: %v", pid, dir, err)
			}
		}
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			t.Errorf("testbed: removing cgroup %s: %v (processes left: %v)", dir, err, left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cgroupProcs returns the pids in the cgroup dir.
func cgroupProcs(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// writeCgroupFile writes value to the control file dir/name in one write,
// as the kernel takes it, without creating or truncating anything.
func writeCgroupFile(dir, name, value string) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(value); err != nil {
		f.Close()
		return err // "write DIR/NAME: invalid argument"
	}
	return f.Close()
}

// withErrno adds the errno number to err's text, which names only its
// meaning ("invalid argument"), so that a reason can be looked up.
func withErrno(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Sprintf("%v (errno %d)", err, int(errno))
	}
	return err.Error()
}
