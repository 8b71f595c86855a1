package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTick is the unit of utime and stime in /proc/PID/stat (USER_HZ),
// 100 per second on every Linux this runs on.
const clockTick = 10_000 // microseconds

// treeCPU returns the CPU time, in microseconds, used so far by the process
// pid and its children (php-fpm's and nginx's workers, socat's forks), the
// exited ones included.
func treeCPU(pid int) int64 {
	var total int64
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// The command name may hold spaces; the fields after it do not.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		// f[0] is the state (field 3), so field n is f[n-3].
		if len(f) < 15 {
			continue
		}
		self, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		ppid, _ := strconv.Atoi(f[1])
		if self != pid && ppid != pid {
			continue
		}
		// utime and stime, then cutime and cstime: the children that
		// have exited and been waited for, such as socat's forks.
		for _, field := range f[11:15] {
			n, _ := strconv.ParseInt(field, 10, 64)
			total += n * clockTick
		}
	}
	return total
}

// cpuMeter measures the CPU time a set of process trees spend during a run.
type cpuMeter struct {
	pids  map[string]int
	start map[string]int64
}

func newCPUMeter(pids map[string]int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: make(map[string]int64)}
	for name, pid := range pids {
		m.start[name] = treeCPU(pid)
	}
	return m
}

// perRequest returns each tree's CPU microseconds per request since the
// meter started.
func (m *cpuMeter) perRequest(requests int) map[string]float64 {
	out := make(map[string]float64)
	if requests == 0 {
		return out
	}
	for name, pid := range m.pids {
		out[name] = float64(treeCPU(pid)-m.start[name]) / float64(requests)
	}
	return out
}
