package benchmarks

import "github.com/fcgiscope/fcgiscope/internal/procfs"

// clockTick is the unit of CPU time in /proc (USER_HZ), 100 per second on
// every Linux this runs on.
const clockTick = 10_000 // microseconds

// treeCPU returns the CPU time, in microseconds, used so far by the process
// pid and its children (php-fpm's and nginx's workers, socat's forks), the
// exited ones included.
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
