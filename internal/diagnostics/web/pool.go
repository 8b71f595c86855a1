package web

import (
	"slices"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
)

// poolSummary renders a php-fpm status for the dashboard: busy workers
// first, longest-running first. With minimal detail the workers' scripts and
// query strings are left out.
func poolSummary(st *fpm.Status, at, now time.Time, full bool) *Pool {
	busy, _ := st.Busiest()
	kept := st.Kept()
	p := &Pool{
		Name:               st.Pool,
		ProcessManager:     st.ProcessManager,
		At:                 at,
		AgeSeconds:         now.Sub(at).Seconds(),
		Busy:               busy,
		Idle:               max(st.TotalProcesses-busy-kept, 0),
		Kept:               kept,
		Total:              st.TotalProcesses,
		ListenQueue:        st.ListenQueue,
		MaxChildrenReached: st.MaxChildrenReached,
		SlowRequests:       st.SlowRequests,
		Workers:            []Worker{},
	}
	for _, pr := range st.Processes {
		if pr.PID == 0 {
			continue // a slot whose worker is still starting
		}
		w := Worker{
			PID:        pr.PID,
			State:      pr.State,
			Busy:       pr.Busy() && !isStatusPoll(pr),
			Method:     dash(pr.Method),
			URI:        dash(pr.RequestURI),
			DurationMS: msOf(pr.RequestDuration),
			Requests:   pr.Requests,
		}
		if isStatusPoll(pr) {
			// What a worker did for the status poll is of no interest.
			w.Method, w.URI, w.StatusPoll = "", "", pr.Busy()
		}
		if full {
			w.Script = dash(pr.Script)
		} else {
			w.URI, _, _ = strings.Cut(w.URI, "?")
		}
		p.Workers = append(p.Workers, w)
	}
	slices.SortStableFunc(p.Workers, func(a, b Worker) int {
		if a.Busy != b.Busy {
			if a.Busy {
				return -1
			}
			return 1
		}
		switch {
		case a.DurationMS > b.DurationMS:
			return -1
		case a.DurationMS < b.DurationMS:
			return 1
		}
		return a.PID - b.PID
	})
	return p
}

// dash turns php-fpm's "-" for "none" into "".
func dash(s string) string {
	if s == "-" {
		return ""
	}
	return s
}

// isStatusPoll reports whether the worker serves a poll of the status page
// itself, which is no application work: it runs no script and its query
// only names status page formats.
func isStatusPoll(p fpm.Process) bool {
	_, query, _ := strings.Cut(p.RequestURI, "?")
	if dash(p.Script) != "" || query == "" {
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
