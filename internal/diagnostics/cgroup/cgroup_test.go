package cgroup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fixturePid is the process whose /proc/PID/cgroup every fixture has.
const fixturePid = 1234

// fixture copies testdata/name into a temporary directory and returns a
// Reader of its proc/ and the directory. The fixture's cgroup filesystems
// live under fs/; "$FS" in its mountinfo stands for that directory.
func fixture(t *testing.T, name string) (Reader, string) {
	t.Helper()
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS(filepath.Join("testdata", name))); err != nil {
		t.Fatal(err)
	}
	mi := filepath.Join(root, "proc", "self", "mountinfo")
	b, err := os.ReadFile(mi)
	if err != nil {
		t.Fatal(err)
	}
	b = []byte(strings.ReplaceAll(string(b), "$FS", filepath.Join(root, "fs")))
	if err := os.WriteFile(mi, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return Reader{Proc: filepath.Join(root, "proc")}, root
}

func TestReadMemoryFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		dir     string // under the fixture's fs/
		want    Memory // without Dir
	}{
		{
			// This machine's layout: v1 memory plus a cgroup2 without
			// the memory controller.
			fixture: "hybrid",
			dir:     "sys/fs/cgroup/memory/kubepods/pod1/abc",
			want:    Memory{Version: 1, Limit: 256 << 20, Usage: 144 << 20, Peak: 192 << 20, OOMKills: 3},
		},
		{
			fixture: "v2",
			dir:     "sys/fs/cgroup/system.slice/php8.2-fpm.service",
			want:    Memory{Version: 2, Limit: 0, Usage: 50 << 20, Peak: 400 << 20, OOMKills: 2},
		},
		{
			// A container with a cgroup namespace, on a kernel
			// without memory.peak.
			fixture: "v2ns",
			dir:     "sys/fs/cgroup",
			want:    Memory{Version: 2, Limit: 512 << 20, Usage: 10 << 20, Peak: 0, OOMKills: 0},
		},
		{
			// A v1 container without a cgroup namespace, the memory
			// hierarchy mounted from its own cgroup, on a kernel
			// before 4.13 and without a limit.
			fixture: "container",
			dir:     "sys/fs/cgroup/memory/www",
			want:    Memory{Version: 1, Limit: 0, Usage: 16 << 20, Peak: 32 << 20, OOMKills: -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			r, root := fixture(t, tt.fixture)
			got, err := r.ReadMemory(fixturePid)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			want.Dir = filepath.Join(root, "fs", tt.dir)
			if got != want {
				t.Errorf("ReadMemory = %+v\nwant         %+v", got, want)
			}
		})
	}
}

func TestReadMemoryErrors(t *testing.T) {
	t.Run("process gone", func(t *testing.T) {
		r, _ := fixture(t, "hybrid")
		_, err := r.ReadMemory(999999)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "999999") {
			t.Errorf("err = %v, want one naming the process and wrapping fs.ErrNotExist", err)
		}
	})
	t.Run("no cgroup mounted", func(t *testing.T) {
		r, root := fixture(t, "hybrid")
		write(t, filepath.Join(root, "proc/self/mountinfo"), "22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n")
		_, err := r.ReadMemory(fixturePid)
		if !errors.Is(err, ErrNoMemoryCgroup) {
			t.Errorf("err = %v, want ErrNoMemoryCgroup", err)
		}
	})
	t.Run("v2 without the memory controller", func(t *testing.T) {
		// A hybrid host whose v1 memory hierarchy is not mounted
		// here: the cgroup2 left has no memory.events.
		r, root := fixture(t, "hybrid")
		mi := filepath.Join(root, "proc/self/mountinfo")
		b, _ := os.ReadFile(mi)
		var keep []string
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "rw,memory") {
				keep = append(keep, line)
			}
		}
		write(t, mi, strings.Join(keep, "\n"))
		_, err := r.ReadMemory(fixturePid)
		if !errors.Is(err, ErrNoMemoryCgroup) || !strings.Contains(err.Error(), "unified") {
			t.Errorf("err = %v, want ErrNoMemoryCgroup naming the cgroup2 directory", err)
		}
	})
	t.Run("cgroup directory missing", func(t *testing.T) {
		r, root := fixture(t, "hybrid")
		write(t, filepath.Join(root, "proc/1234/cgroup"), "4:memory:/kubepods/pod2/def\n0::/\n")
		_, err := r.ReadMemory(fixturePid)
		want := filepath.Join(root, "fs/sys/fs/cgroup/memory/kubepods/pod2/def")
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want fs.ErrNotExist naming %s", err, want)
		}
	})
	t.Run("cgroup outside the namespace", func(t *testing.T) {
		r, root := fixture(t, "v2ns")
		write(t, filepath.Join(root, "proc/1234/cgroup"), "0::/../other\n")
		_, err := r.ReadMemory(fixturePid)
		if !errors.Is(err, ErrNoMemoryCgroup) {
			t.Errorf("err = %v, want ErrNoMemoryCgroup", err)
		}
	})
	t.Run("counter file missing", func(t *testing.T) {
		r, root := fixture(t, "v2")
		os.Remove(filepath.Join(root, "fs/sys/fs/cgroup/system.slice/php8.2-fpm.service/memory.events"))
		_, err := r.ReadMemory(fixturePid)
		if !errors.Is(err, ErrNoMemoryCgroup) {
			t.Errorf("err = %v, want ErrNoMemoryCgroup", err)
		}
	})
	t.Run("garbage in a file", func(t *testing.T) {
		r, root := fixture(t, "hybrid")
		write(t, filepath.Join(root, "fs/sys/fs/cgroup/memory/kubepods/pod1/abc/memory.usage_in_bytes"), "lots\n")
		_, err := r.ReadMemory(fixturePid)
		if !errors.Is(err, strconv.ErrSyntax) || !strings.Contains(err.Error(), "memory.usage_in_bytes") {
			t.Errorf("err = %v, want a syntax error naming memory.usage_in_bytes", err)
		}
	})
	t.Run("permission", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads files whatever their mode")
		}
		r, root := fixture(t, "hybrid")
		if err := os.Chmod(filepath.Join(root, "fs/sys/fs/cgroup/memory/kubepods/pod1/abc/memory.oom_control"), 0); err != nil {
			t.Fatal(err)
		}
		_, err := r.ReadMemory(fixturePid)
		if !errors.Is(err, fs.ErrPermission) {
			t.Errorf("err = %v, want fs.ErrPermission", err)
		}
	})
}

func TestParseProcCgroup(t *testing.T) {
	tests := []struct {
		in           string
		v1, v2       string
		hasV1, hasV2 bool
	}{
		{"4:memory:/a/b\n0::/c\n", "/a/b", "/c", true, true},
		{"7:cpu,memory,foo:/a:b\n", "/a:b", "", true, false}, // a colon in the path
		{"7:memoryx:/a\n3:name=memory:/b\n0::/\n", "", "/", false, true},
		{"0::/system.slice/php-fpm.service\n", "", "/system.slice/php-fpm.service", false, true},
		{"garbage\n", "", "", false, false},
	}
	for _, tt := range tests {
		v1, v2, hasV1, hasV2 := parseProcCgroup([]byte(tt.in))
		if v1 != tt.v1 || v2 != tt.v2 || hasV1 != tt.hasV1 || hasV2 != tt.hasV2 {
			t.Errorf("parseProcCgroup(%q) = %q, %q, %v, %v; want %q, %q, %v, %v",
				tt.in, v1, v2, hasV1, hasV2, tt.v1, tt.v2, tt.hasV1, tt.hasV2)
		}
	}
}

func TestParseMountinfo(t *testing.T) {
	in := "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n" +
		"35 30 0:32 / /sys/fs/cgroup/memory\\040x rw shared:5 master:1 - cgroup cgroup rw,cpu,memory\n" +
		"36 30 0:33 / /sys/fs/cgroup/memorystuff rw - cgroup cgroup rw,name=memory\n" +
		"37 30 0:34 / /mnt/memory rw - tmpfs memory rw,memory\n" +
		"40 30 0:37 /sub /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n" +
		"broken line\n"
	v1, v2 := parseMountinfo([]byte(in))
	wantV1 := []mount{{"/", "/sys/fs/cgroup/memory"}, {"/", "/sys/fs/cgroup/memory x"}}
	wantV2 := []mount{{"/sub", "/sys/fs/cgroup/unified"}}
	if !slices.Equal(v1, wantV1) || !slices.Equal(v2, wantV2) {
		t.Errorf("parseMountinfo = %v, %v; want %v, %v", v1, v2, wantV1, wantV2)
	}
}

func TestWatchCountsKillsSinceTheLastLook(t *testing.T) {
	r, root := fixture(t, "hybrid")
	oomControl := filepath.Join(root, "fs/sys/fs/cgroup/memory/kubepods/pod1/abc/memory.oom_control")
	setKills := func(n int) {
		t.Helper()
		write(t, oomControl, fmt.Sprintf("oom_kill_disable 0\nunder_oom 0\noom_kill %d\n", n))
	}
	pid := fixturePid
	w := &Watch{Reader: r, Pid: func() int { return pid }}

	// Without a baseline, Kills takes one: the 3 kills before are old.
	if n, m, err := w.Kills(); err != nil || n != 0 || m.OOMKills != 3 {
		t.Fatalf("first Kills = %d, %+v, %v; want 0 with the counter at 3", n, m, err)
	}
	setKills(4)
	if n, m, err := w.Kills(); err != nil || n != 1 || m.OOMKills != 4 || m.Limit != 256<<20 {
		t.Fatalf("Kills after one kill = %d, %+v, %v; want 1", n, m, err)
	}
	if n, _, err := w.Kills(); err != nil || n != 0 {
		t.Fatalf("Kills again = %d, %v; want 0", n, err)
	}

	setKills(6)
	if m, err := w.Baseline(); err != nil || m.OOMKills != 6 {
		t.Fatalf("Baseline = %+v, %v", m, err)
	}
	if n, _, err := w.Kills(); err != nil || n != 0 {
		t.Fatalf("Kills right after Baseline = %d, %v; want 0", n, err)
	}

	// The cgroup was removed and created again: all it counts is new.
	setKills(1)
	if n, _, err := w.Kills(); err != nil || n != 1 {
		t.Fatalf("Kills after the counter went down = %d, %v; want 1", n, err)
	}

	// An error leaves the baseline alone.
	pid = 0
	if _, _, err := w.Kills(); err == nil {
		t.Fatal("Kills with pid 0 did not fail")
	}
	pid = 999999
	if _, _, err := w.Kills(); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Kills of a gone process = %v, want fs.ErrNotExist", err)
	}
	pid = fixturePid
	setKills(3)
	if n, _, err := w.Kills(); err != nil || n != 2 {
		t.Fatalf("Kills after failed looks = %d, %v; want 2", n, err)
	}

	// The process moved to another cgroup, whose counter may be old.
	other := filepath.Join(root, "fs/sys/fs/cgroup/memory/kubepods/pod1/def")
	if err := os.CopyFS(other, os.DirFS(filepath.Dir(oomControl))); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(other, "memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 50\n")
	write(t, filepath.Join(root, "proc/1234/cgroup"), "4:memory:/kubepods/pod1/def\n")
	if n, m, err := w.Kills(); err != nil || n != 0 || m.Dir != other {
		t.Fatalf("Kills in another cgroup = %d, %+v, %v; want 0 from %s", n, m, err, other)
	}
}

func TestWatchWithoutACounter(t *testing.T) {
	r, _ := fixture(t, "container")
	w := &Watch{Reader: r, Pid: func() int { return fixturePid }}
	if _, err := w.Baseline(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Baseline = %v, want errors.ErrUnsupported", err)
	}
	if _, _, err := w.Kills(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("Kills = %v, want errors.ErrUnsupported", err)
	}
	var nilPid Watch
	if _, err := nilPid.Baseline(); err == nil {
		t.Error("Baseline of a Watch without Pid did not fail")
	}
}

// TestWatchConcurrentLooksCountEveryKillOnce has callers look while the
// counter grows: the kills they report add up to the growth.
func TestWatchConcurrentLooksCountEveryKillOnce(t *testing.T) {
	r, root := fixture(t, "hybrid")
	oomControl := filepath.Join(root, "fs/sys/fs/cgroup/memory/kubepods/pod1/abc/memory.oom_control")
	w := &Watch{Reader: r, Pid: func() int { return fixturePid }}
	if _, err := w.Baseline(); err != nil {
		t.Fatal(err)
	}
	const growth = 40
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		done  = make(chan struct{})
	)
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				n, _, err := w.Kills()
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += n
				mu.Unlock()
			}
		})
	}
	for i := 1; i <= growth; i++ {
		// Replaced, not rewritten, so that no reader sees it half written.
		tmp := oomControl + ".tmp"
		write(t, tmp, fmt.Sprintf("oom_kill_disable 0\nunder_oom 0\noom_kill %d\n", 3+i))
		if err := os.Rename(tmp, oomControl); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	n, _, err := w.Kills()
	if err != nil {
		t.Fatal(err)
	}
	if total+n != growth {
		t.Errorf("the looks counted %d kills, want %d", total+n, growth)
	}
}

// TestReadMemoryOfThisProcess reads the memory cgroup this test runs in,
// with the zero Reader: the real /proc and mounts.
func TestReadMemoryOfThisProcess(t *testing.T) {
	m, err := Reader{}.ReadMemory(os.Getpid())
	if errors.Is(err, ErrNoMemoryCgroup) {
		t.Skipf("SKIPPING: no memory cgroup of this process is visible here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this process's memory cgroup: %+v", m)
	if fi, err := os.Stat(m.Dir); err != nil || !fi.IsDir() {
		t.Errorf("Dir %s: %v", m.Dir, err)
	}
	if m.OOMKills < 0 {
		t.Errorf("OOMKills = %d, want a counter (Linux %s)", m.OOMKills, kernelRelease())
	}
	if m.Usage <= 0 || m.Limit < 0 || m.Version != 1 && m.Version != 2 {
		t.Errorf("implausible %+v", m)
	}
	// The directory found is this process's cgroup, not just any.
	procs, err := os.ReadFile(filepath.Join(m.Dir, "cgroup.procs"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(os.Getpid())) {
		t.Errorf("%s/cgroup.procs does not list this process (%d): %q", m.Dir, os.Getpid(), procs)
	}
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
