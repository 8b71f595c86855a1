package fpm

import (
	"regexp"
	"strconv"
	"strings"
	"time"
)

// EventKind is what a php-fpm error log line reports.
type EventKind string

// The events fcgiscope reads from php-fpm's error log.
const (
	EventTimedOut    EventKind = "timed_out"    // request_terminate_timeout fired; the worker is being terminated
	EventSlow        EventKind = "slow"         // request_slowlog_timeout fired
	EventSignal      EventKind = "signal"       // a worker exited on a signal
	EventExit        EventKind = "exit"         // a worker exited with a code
	EventStarted     EventKind = "started"      // a worker started
	EventMaxChildren EventKind = "max_children" // the pool reached pm.max_children
	EventOutput      EventKind = "output"       // a worker wrote to stdout or stderr (catch_workers_output)
	EventReloading   EventKind = "reloading"    // the master got SIGUSR2 and is reloading
	EventStopping    EventKind = "stopping"     // the master got SIGQUIT, SIGTERM or SIGINT and is stopping
	EventReady       EventKind = "ready"        // the master is ready to handle connections
)

// Event is one parsed line of php-fpm's error log.
type Event struct {
	Kind  EventKind
	Time  time.Time
	Level string // WARNING, NOTICE, ...
	Pool  string
	Pid   int
	// Script and Request are set for EventTimedOut and EventSlow:
	// SCRIPT_FILENAME and the request line ("GET /x.php?a=1").
	Script, Request string
	// Seconds is how long the request or the worker had run.
	Seconds float64
	// Signal and SignalName are set for EventSignal.
	Signal     int
	SignalName string
	CoreDumped bool
	// Code is the exit code of EventExit; MaxChildren the setting of
	// EventMaxChildren.
	Code, MaxChildren int
	// Output is what the worker wrote, for EventOutput.
	Output string
	// Line is the log line as php-fpm wrote it.
	Line string
}

var (
	// [27-Nov-2026 10:46:54] or, at log_level = debug,
	// [27-Nov-2026 10:46:54.123456] DEBUG: pid 1, fpm_x(), line 1: ...
	logPrefix = regexp.MustCompile(`^\[(\d{2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2}:\d{2}(?:\.\d+)?)\] ([A-Z]+): (?:pid \d+, [a-z_]+\(\), line \d+: )?(?:\[pool ([^\]]+)\] )?(.*)$`)

	reTimedOut    = regexp.MustCompile(`^child (\d+), script '(.*)' \(request: "(.*)"\) execution timed out \(([\d.]+) sec\), terminating$`)
	reSlow        = regexp.MustCompile(`^child (\d+), script '(.*)' \(request: "(.*)"\) executing too slow \(([\d.]+) sec\), logging$`)
	reSignal      = regexp.MustCompile(`^child (\d+) exited on signal (\d+) \(([A-Z0-9]+)( - core dumped)?\) after ([\d.]+) seconds from start$`)
	reExit        = regexp.MustCompile(`^child (\d+) exited with code (\d+) after ([\d.]+) seconds from start$`)
	reStarted     = regexp.MustCompile(`^child (\d+) started$`)
	reMaxChildren = regexp.MustCompile(`^server reached (?:pm\.)?max_children setting \((\d+)\), consider raising it$`)
	reOutput      = regexp.MustCompile(`^child (\d+) said into (?:stderr|stdout): "(.*)"(?:, pipe is closed)?$`)
)

// ParseLogLine parses one line of php-fpm's error log, reading its time in
// loc (php-fpm writes local time). It reports false for lines of no interest.
func ParseLogLine(line string, loc *time.Location) (Event, bool) {
	m := logPrefix.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
	if m == nil {
		return Event{}, false
	}
	ts := m[1]
	layout := "02-Jan-2006 15:04:05"
	if strings.Contains(ts, ".") {
		layout += ".000000"
	}
	at, err := time.ParseInLocation(layout, ts, loc)
	if err != nil {
		return Event{}, false
	}
	ev := Event{Time: at, Level: m[2], Pool: m[3], Line: strings.TrimRight(line, "\r\n")}
	msg := m[4]
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	atof := func(s string) float64 { f, _ := strconv.ParseFloat(s, 64); return f }
	switch {
	case reTimedOut.MatchString(msg):
		s := reTimedOut.FindStringSubmatch(msg)
		ev.Kind, ev.Pid, ev.Script, ev.Request, ev.Seconds = EventTimedOut, atoi(s[1]), s[2], s[3], atof(s[4])
	case reSlow.MatchString(msg):
		s := reSlow.FindStringSubmatch(msg)
		ev.Kind, ev.Pid, ev.Script, ev.Request, ev.Seconds = EventSlow, atoi(s[1]), s[2], s[3], atof(s[4])
	case reSignal.MatchString(msg):
		s := reSignal.FindStringSubmatch(msg)
		ev.Kind, ev.Pid, ev.Signal, ev.SignalName, ev.CoreDumped, ev.Seconds = EventSignal, atoi(s[1]), atoi(s[2]), s[3], s[4] != "", atof(s[5])
	case reExit.MatchString(msg):
		s := reExit.FindStringSubmatch(msg)
		ev.Kind, ev.Pid, ev.Code, ev.Seconds = EventExit, atoi(s[1]), atoi(s[2]), atof(s[3])
	case reStarted.MatchString(msg):
		s := reStarted.FindStringSubmatch(msg)
		ev.Kind, ev.Pid = EventStarted, atoi(s[1])
	case reMaxChildren.MatchString(msg):
		s := reMaxChildren.FindStringSubmatch(msg)
		ev.Kind, ev.MaxChildren = EventMaxChildren, atoi(s[1])
	case msg == "Reloading in progress ...":
		ev.Kind = EventReloading
	case msg == "Finishing ..." || msg == "Terminating ...":
		ev.Kind = EventStopping
	case msg == "ready to handle connections":
		ev.Kind = EventReady
	case reOutput.MatchString(msg):
		s := reOutput.FindStringSubmatch(msg)
		ev.Kind, ev.Pid, ev.Output = EventOutput, atoi(s[1]), s[2]
	default:
		return Event{}, false
	}
	return ev, true
}
