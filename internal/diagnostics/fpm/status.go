package fpm

import (
	"fmt"
	"strings"
	"time"
)

// Status is one poll of php-fpm's status page (pm.status_path) in its JSON
// form. The numbers are php-fpm's own: ActiveProcesses includes the worker
// that served the status request itself, and php-fpm measures the listen
// queue only on TCP sockets: on a unix socket the three listen queue
// fields are always 0.
type Status struct {
	Pool               string
	ProcessManager     string // static, dynamic or ondemand
	StartTime          time.Time
	AcceptedConn       int64
	ListenQueue        int
	MaxListenQueue     int
	ListenQueueLen     int
	IdleProcesses      int
	ActiveProcesses    int
	TotalProcesses     int
	MaxActiveProcesses int
	MaxChildrenReached int64
	SlowRequests       int64
	// Processes is the per-worker list, present when the page was asked
	// for with "full".
	Processes []Process
	// At is when the answer arrived; zero from ParseStatus.
	At time.Time
	// Latency is how long the answer took, from the start of the
	// connection; zero from ParseStatus.
	Latency time.Duration

	// path is the status path that was polled, so that the workers
	// serving the poll itself are not taken for busy ones.
	path string
}

// Process is one worker in the full status page.
type Process struct {
	PID int
	// State is php-fpm's request stage: "Idle", "Reading headers",
	// "Getting request information", "Running", "Ending" or "Finishing";
	// "(null)", with PID 0, for a slot whose worker is still starting.
	State     string
	StartTime time.Time
	// Requests is how many requests the worker has served.
	Requests int64
	// RequestDuration is how long the current request has run, or, for
	// an idle worker, how long its last request took.
	RequestDuration time.Duration
	// Method, RequestURI and Script describe the current (or, when idle,
	// the last) request; php-fpm writes "-" when it has none. RequestURI
	// is SCRIPT_NAME (with PATH_INFO) plus "?" and QUERY_STRING, not
	// REQUEST_URI, cut by php-fpm 8.2's scoreboard to 127 bytes of path
	// and 511 of query. Script is SCRIPT_FILENAME, "-" for the status
	// page itself.
	Method, RequestURI, Script string
	ContentLength              int64
	// User is the HTTP basic authentication user, "-" for none, cut to
	// 31 bytes.
	User string
	// LastCPU is the CPU use of the last request in percent and
	// LastMemory its peak memory in bytes; both are 0 while a request
	// runs.
	LastCPU    float64
	LastMemory int64
}

// Busy reports whether the worker is serving a request: it is in any
// state but "Idle", waiting on a kept connection (Kept), and "(null)",
// which php-fpm 8.2 shows, with pid 0 and a meaningless request duration,
// for a worker that is still starting.
func (p Process) Busy() bool {
	switch p.State {
	case "Idle", "(null)", "":
		return false
	}
	return !p.Kept()
}

// Kept reports whether the worker waits for the next request on a
// connection its client keeps open (fcgiscope's FCGISCOPE_UPSTREAM_KEEPALIVE,
// nginx's fastcgi_keep_conn). php-fpm counts such a worker as active, in
// "Reading headers" with no request, although it runs nothing; the worker
// is not free for other connections until the client closes its own.
func (p Process) Kept() bool {
	return p.State == "Reading headers" && (p.RequestURI == "" || p.RequestURI == "-")
}

// Busiest counts the busy workers and returns the one whose request has
// run longest. Workers serving the status page itself are not counted.
// Without a process list it counts ActiveProcesses, less the poll's own
// request when the Status comes from a poll.
func (s *Status) Busiest() (busy int, longest Process) {
	if s.Processes == nil {
		busy = s.ActiveProcesses
		if s.path != "" && busy > 0 {
			busy--
		}
		return busy, Process{}
	}
	for _, p := range s.Processes {
		if !p.Busy() || isStatusRequest(p, s.path) {
			continue
		}
		busy++
		if busy == 1 || p.RequestDuration > longest.RequestDuration {
			longest = p
		}
	}
	return busy, longest
}

// Kept counts the workers waiting for their next request on kept
// connections (Process.Kept); 0 without the process list.
func (s *Status) Kept() int {
	n := 0
	for _, p := range s.Processes {
		if p.Kept() {
			n++
		}
	}
	return n
}

// Summary describes the pool's load in one sentence for an explanation,
// such as "all 5 workers of pool www were busy; the longest-running request
// was GET /report.php for 41s (pid 123)". A worker serving the status page
// is not busy; when the poll had to wait for a free worker, the sentence
// says so, since that is the mark of a saturated pool.
func (s *Status) Summary() string {
	busy, longest := s.Busiest()
	total := s.TotalProcesses
	var b strings.Builder
	if total > 0 && busy >= total {
		fmt.Fprintf(&b, "all %d workers of pool %s were busy", total, s.Pool)
	} else {
		fmt.Fprintf(&b, "%d of %d workers of pool %s were busy", busy, total, s.Pool)
	}
	if kept := s.Kept(); kept > 0 {
		fmt.Fprintf(&b, ", %d more waited for their next request on kept connections", kept)
	}
	if busy > 0 && longest.PID != 0 {
		what := longest.RequestURI
		if what == "" || what == "-" {
			what = longest.Script
		}
		if longest.Method != "" && longest.Method != "-" {
			what = longest.Method + " " + what
		}
		fmt.Fprintf(&b, "; the longest-running request was %s for %s (pid %d)", what, roundForText(longest.RequestDuration), longest.PID)
	}
	if s.ListenQueue > 0 {
		fmt.Fprintf(&b, "; %d connections were waiting in the listen queue", s.ListenQueue)
	}
	if s.Latency >= slowStatus {
		fmt.Fprintf(&b, "; the status page itself waited %s for a free worker", roundForText(s.Latency))
	}
	return b.String()
}

// slowStatus is the status page latency taken for a wait for a free
// worker; an idle pool answers in well under a millisecond.
const slowStatus = 500 * time.Millisecond

func roundForText(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}

// isStatusRequest reports whether p is serving php-fpm's status page: its
// request is for path, or it runs no script and its query only names
// status page formats, as a monitoring poll does.
func isStatusRequest(p Process, path string) bool {
	uri, query, _ := strings.Cut(p.RequestURI, "?")
	if path != "" && uri == path {
		return true
	}
	if p.Script != "-" || query == "" {
		return false
	}
	for w := range strings.SplitSeq(query, "&") {
		switch w {
		case "json", "full", "html", "xml", "openmetrics":
		default:
			return false
		}
	}
	return true
}
