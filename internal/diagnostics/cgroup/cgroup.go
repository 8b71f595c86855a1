// Package cgroup reads the memory cgroup of a process, so that fcgiscope can
// tell a php-fpm worker killed by the kernel's OOM killer (cause
// worker_oom_killed) from one killed by anything else that sends SIGKILL,
// and say what the limit and the peak were.
//
// The cgroup's oom_kill counter is the first source: Watch remembers it and
// reports how many kills happened since it last looked. It needs the memory
// controller mounted where fcgiscope can see it (cgroup v1, or v2 with the
// controller enabled for the cgroup) and, on v1, Linux 4.13 or later. Where
// it is not visible, the kernel log is the second source: KernelLog follows
// /dev/kmsg and remembers the pids the OOM killer named.
package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// ErrNoMemoryCgroup means that no memory cgroup of the process is visible
// here: neither a cgroup v1 memory hierarchy nor a cgroup v2 hierarchy with
// the memory controller enabled for the process's cgroup is mounted.
var ErrNoMemoryCgroup = errors.New("no memory cgroup is mounted")

// Memory is what the memory cgroup of a process says.
type Memory struct {
	Dir      string // the cgroup's directory as fcgiscope sees it, e.g. /sys/fs/cgroup/memory/kubepods/pod1/abc
	Version  int    // 1 or 2
	Limit    int64  // bytes; 0 when unlimited ("max" on v2, or the v1 huge sentinel >= 1<<62)
	Usage    int64  // bytes now (v2 memory.current, v1 memory.usage_in_bytes); 0 unknown
	Peak     int64  // bytes (v2 memory.peak when the kernel has it, v1 memory.max_usage_in_bytes); 0 unknown
	OOMKills int64  // the oom_kill counter (v2 memory.events "oom_kill N"; v1 memory.oom_control "oom_kill N", present since Linux 4.13); -1 unknown
}

// v1Unlimited is where a v1 limit stops meaning anything: the kernel writes
// "no limit" as its page counter maximum (9223372036854771712 with 4 KiB
// pages), and no machine has 4 EiB of memory.
const v1Unlimited = 1 << 62

// Reader finds and reads memory cgroups. Its zero value reads the real /proc
// and uses the mounts in /proc/self/mountinfo.
type Reader struct {
	Proc string // "" means /proc; tests point it at a fixture directory
}

func (r Reader) proc() string {
	if r.Proc == "" {
		return "/proc"
	}
	return r.Proc
}

// ReadMemory finds the memory cgroup of pid and reads its limit, usage, peak
// and oom_kill counter. The cgroup v1 memory controller is preferred when it
// is mounted, because on a hybrid host the v2 hierarchy has no memory
// controller. An error wraps the cause, so that errors.Is(err,
// fs.ErrNotExist) holds when the process is gone and errors.Is(err,
// fs.ErrPermission) when a file may not be read; it is ErrNoMemoryCgroup
// when no memory cgroup is mounted.
func (r Reader) ReadMemory(pid int) (Memory, error) {
	dir, version, err := r.find(pid)
	if err != nil {
		return Memory{}, err
	}
	m := Memory{Dir: dir, Version: version, OOMKills: -1}
	if version == 1 {
		err = readV1(&m)
	} else {
		err = readV2(&m)
	}
	if err != nil {
		return Memory{}, fmt.Errorf("reading the memory cgroup of process %d: %w", pid, err)
	}
	return m, nil
}

// find returns the directory and the version of pid's memory cgroup.
func (r Reader) find(pid int) (string, int, error) {
	cgFile := filepath.Join(r.proc(), strconv.Itoa(pid), "cgroup")
	data, err := os.ReadFile(cgFile)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", 0, fmt.Errorf("reading the cgroup of process %d: the process is gone: %w", pid, err)
		}
		return "", 0, fmt.Errorf("reading the cgroup of process %d: %w", pid, err)
	}
	v1Path, v2Path, hasV1, hasV2 := parseProcCgroup(data)

	miFile := filepath.Join(r.proc(), "self", "mountinfo")
	mi, err := os.ReadFile(miFile)
	if err != nil {
		return "", 0, fmt.Errorf("reading fcgiscope's mounts: %w", err)
	}
	v1Mounts, v2Mounts := parseMountinfo(mi)

	if len(v1Mounts) > 0 && hasV1 {
		dir, err := join(v1Mounts, v1Path)
		if err != nil {
			return "", 0, fmt.Errorf("process %d: %w", pid, err)
		}
		return dir, 1, nil
	}
	if len(v2Mounts) > 0 && hasV2 {
		dir, err := join(v2Mounts, v2Path)
		if err != nil {
			return "", 0, fmt.Errorf("process %d: %w", pid, err)
		}
		// The memory controller may be mounted but not enabled for this
		// cgroup (or this is the root, which has no memory files).
		if _, err := os.Stat(filepath.Join(dir, "memory.events")); err != nil {
			return "", 0, fmt.Errorf("process %d: cgroup v2 %s has no memory controller (%v): %w", pid, dir, err, ErrNoMemoryCgroup)
		}
		return dir, 2, nil
	}
	return "", 0, fmt.Errorf("process %d: %w (looked in %s and %s)", pid, ErrNoMemoryCgroup, cgFile, miFile)
}

// parseProcCgroup reads /proc/PID/cgroup: the path in the v1 hierarchy
// whose controllers include memory ("4:memory:/path" or
// "4:cpu,memory:/path") and the v2 path ("0::/path").
func parseProcCgroup(data []byte) (v1, v2 string, hasV1, hasV2 bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// The path may itself hold colons, so split only twice.
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			v2, hasV2 = f[2], true
		case hasItem(f[1], "memory"):
			v1, hasV1 = f[2], true
		}
	}
	return v1, v2, hasV1, hasV2
}

// mount is a cgroup filesystem mounted here: Root is the cgroup shown at
// Point, "/" unless only a subtree is mounted (a container without a cgroup
// namespace).
type mount struct {
	Root, Point string
}

// parseMountinfo returns the v1 memory and the v2 cgroup mounts of a
// /proc/self/mountinfo, in its order. A line is "ID PARENT MAJ:MIN ROOT
// POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
func parseMountinfo(data []byte) (v1, v2 []mount) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		before, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(before), strings.Fields(after)
		if len(f) < 5 || len(g) < 1 {
			continue
		}
		m := mount{Root: unescapeMount(f[3]), Point: unescapeMount(f[4])}
		switch g[0] {
		case "cgroup":
			if len(g) >= 3 && hasItem(g[2], "memory") {
				v1 = append(v1, m)
			}
		case "cgroup2":
			v2 = append(v2, m)
		}
	}
	return v1, v2
}

// unescapeMount undoes the octal escapes (\040 for a space, \011, \012,
// \134) with which the kernel writes paths in mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// join finds the directory of the cgroup path under one of mounts. The mount
// whose root is the longest prefix of path wins, and that prefix is cut off:
// inside a container without a cgroup namespace the hierarchy is mounted
// from the container's own cgroup ("/docker/abc"), and /proc/PID/cgroup
// still shows the host's path. A path under no mount's root is taken as
// relative to the first mount: with a cgroup namespace, paths are shown from
// the namespace's root, so a process in that root ("/") is in the cgroup
// mounted there whatever root mountinfo shows.
func join(mounts []mount, path string) (string, error) {
	if slices.Contains(strings.Split(path, "/"), "..") {
		// Shown from fcgiscope's cgroup namespace, the cgroup lies
		// outside it, where no mount of fcgiscope's reaches.
		return "", fmt.Errorf("cgroup %s is outside fcgiscope's cgroup namespace: %w", path, ErrNoMemoryCgroup)
	}
	best, rel := -1, path
	for i, m := range mounts {
		r, ok := under(path, m.Root)
		if ok && (best < 0 || len(m.Root) > len(mounts[best].Root)) {
			best, rel = i, r
		}
	}
	if best < 0 {
		best = 0
	}
	dir := filepath.Join(mounts[best].Point, rel)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("cgroup %s is not at %s: %w", path, dir, err)
	}
	return dir, nil
}

// under reports whether path lies in the subtree root, and returns its path
// relative to root (beginning with "/").
func under(path, root string) (string, bool) {
	if root == "/" {
		return path, true
	}
	if path == root {
		return "/", true
	}
	if rest, ok := strings.CutPrefix(path, root); ok && strings.HasPrefix(rest, "/") {
		return rest, true
	}
	return "", false
}

// hasItem reports whether the comma-separated list has item.
func hasItem(list, item string) bool {
	for _, s := range strings.Split(list, ",") {
		if s == item {
			return true
		}
	}
	return false
}

func readV1(m *Memory) error {
	var err error
	if m.Limit, err = readInt(m.Dir, "memory.limit_in_bytes"); err != nil {
		return err
	}
	if m.Limit >= v1Unlimited {
		m.Limit = 0
	}
	if m.Usage, err = readInt(m.Dir, "memory.usage_in_bytes"); err != nil {
		return err
	}
	if m.Peak, err = readInt(m.Dir, "memory.max_usage_in_bytes"); err != nil {
		return err
	}
	m.OOMKills, err = readKey(m.Dir, "memory.oom_control", "oom_kill")
	return err
}

func readV2(m *Memory) error {
	limit, err := readFile(m.Dir, "memory.max")
	if err != nil {
		return err
	}
	if limit != "max" {
		if m.Limit, err = parseInt(m.Dir, "memory.max", limit); err != nil {
			return err
		}
	}
	if m.Usage, err = readInt(m.Dir, "memory.current"); err != nil {
		return err
	}
	// memory.peak came with Linux 5.19.
	if m.Peak, err = readInt(m.Dir, "memory.peak"); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	m.OOMKills, err = readKey(m.Dir, "memory.events", "oom_kill")
	return err
}

// readFile returns the trimmed contents of dir/name.
func readFile(dir, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// readInt reads a file that holds one number of bytes.
func readInt(dir, name string) (int64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return 0, err
	}
	return parseInt(dir, name, s)
}

func parseInt(dir, name, s string) (int64, error) {
	// ParseUint, so that a v1 "unlimited" written as an unsigned number
	// larger than int64 still reads.
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(dir, name), err)
	}
	if n > 1<<63-1 {
		n = 1<<63 - 1
	}
	return int64(n), nil
}

// readKey reads the value of key in a flat keyed file ("key value" lines);
// -1 when the key is not there, as oom_kill is not in a v1 memory.oom_control
// before Linux 4.13.
func readKey(dir, name, key string) (int64, error) {
	s, err := readFile(dir, name)
	if err != nil {
		return -1, err
	}
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, err := parseInt(dir, name, strings.TrimSpace(v))
			if err != nil {
				return -1, err
			}
			return n, nil
		}
	}
	return -1, nil
}

// errNoPid is Watch's error when its Pid func does not know the process.
var errNoPid = errors.New("the process to watch is not known (pid 0)")

// Watch remembers a cgroup's oom_kill counter between looks. Safe for
// concurrent use.
type Watch struct {
	Reader Reader
	Pid    func() int // the process whose cgroup to watch (php-fpm's master); returns 0 when unknown

	mu    sync.Mutex
	taken bool   // a baseline was read
	last  int64  // the counter at the last look
	dir   string // the cgroup the counter was read from
}

// Baseline reads the counter now, so that a later Kills counts from here;
// it returns what it read. An error leaves the previous baseline in place.
// When the kernel has no oom_kill counter the error wraps
// errors.ErrUnsupported, and the kernel log (KernelLog) is the source left.
func (w *Watch) Baseline() (Memory, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, err := w.read()
	if err != nil {
		return m, err
	}
	w.taken, w.last, w.dir = true, m.OOMKills, m.Dir
	return m, nil
}

// Kills reads the counter and returns how many OOM kills happened since the
// previous Baseline or Kills call, with the Memory read now.
//
// When no baseline was ever taken, Kills takes it and returns 0: kills
// before the first look are not news. When the process is now in another
// cgroup (php-fpm restarted elsewhere), Kills starts counting there and
// returns 0, because that cgroup's counter may predate the last look. When
// the counter went down, the cgroup was removed and created again since the
// last look, so every kill it counts is new, and Kills returns the counter.
// An error leaves the baseline in place; it wraps errors.ErrUnsupported when
// the kernel has no oom_kill counter.
func (w *Watch) Kills() (int64, Memory, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m, err := w.read()
	if err != nil {
		return 0, m, err
	}
	var n int64
	switch {
	case !w.taken || m.Dir != w.dir:
		n = 0
	case m.OOMKills < w.last:
		n = m.OOMKills
	default:
		n = m.OOMKills - w.last
	}
	w.taken, w.last, w.dir = true, m.OOMKills, m.Dir
	return n, m, nil
}

// read reads the Memory of the watched process and insists on a counter.
func (w *Watch) read() (Memory, error) {
	pid := 0
	if w.Pid != nil {
		pid = w.Pid()
	}
	if pid <= 0 {
		return Memory{}, errNoPid
	}
	m, err := w.Reader.ReadMemory(pid)
	if err != nil {
		return m, err
	}
	if m.OOMKills < 0 {
		return m, fmt.Errorf("memory cgroup %s has no oom_kill counter (cgroup v1 has it since Linux 4.13): %w", m.Dir, errors.ErrUnsupported)
	}
	return m, nil
}
