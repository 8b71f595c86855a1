package benchmarks

import (
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/procfs"
)

// clockTick is the unit of CPU time in /proc (USER_HZ), 100 per second on
// every Linux this runs on.
const clockTick = 10_000 // microseconds

// treeCPU returns the CPU time, in microseconds, used so far by the process
// pid and its children (php-fpm's and nginx's workers), the exited ones
// included.
func treeCPU(pid int) int64 {
	var ticks int64
	if st, err := procfs.ReadStat(pid); err == nil {
		ticks += st.CPUTicks
	}
	for _, kid := range procfs.Children(pid) {
		if st, err := procfs.ReadStat(kid.PID); err == nil {
			ticks += st.CPUTicks
		}
	}
	return ticks * clockTick
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

// waitIdle waits until the process trees pids have used no CPU time for
// 200 ms, or 30 s have passed; a pid of 0 (no relay) is left out. A
// configuration that fell behind its load leaves requests queued in
// php-fpm's listen backlog when its nginx stops, and php-fpm works through
// them afterwards; measured then, the next configuration would share
// php-fpm with its predecessor's leftovers.
func waitIdle(t *testing.T, pids ...int) {
	t.Helper()
	used := func() int64 {
		var sum int64
		for _, pid := range pids {
			if pid > 0 {
				sum += treeCPU(pid)
			}
		}
		return sum
	}
	deadline := time.Now().Add(30 * time.Second)
	for last := used(); time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		now := used()
		if now == last {
			return
		}
		last = now
	}
	t.Logf("processes %v still busy after 30 s; measuring the next configuration anyway", pids)
}
