package testbed

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// FullFS mounts a tmpfs of size bytes on a new directory, fills it until
// the kernel answers ENOSPC, and unmounts it in t.Cleanup: a file system as
// full as a real one gets. The directory is writable by everyone. When this
// machine does not let the test mount (not root, no CAP_SYS_ADMIN in a
// container), it returns "" and the exact reason.
func FullFS(t testing.TB, size int64) (dir, why string) {
	t.Helper()
	dir = filepath.Join(ShortTempDir(t), "full")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatalf("testbed: %v", err)
	}
	opts := fmt.Sprintf("size=%d,mode=1777", size)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		return "", fmt.Sprintf("mounting a %d-byte tmpfs on %s: %v", size, dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("testbed: unmounting %s: %v", dir, err)
		}
	})
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatalf("testbed: %v", err)
	}
	defer f.Close()
	block := make([]byte, 4096)
	for {
		if _, err := f.Write(block); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("testbed: filling %s: %v", dir, err)
			}
			return dir, ""
		}
	}
}
