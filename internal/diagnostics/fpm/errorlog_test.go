package fpm

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestParseLogLineReadsTheEventsPHPFPMWrites(t *testing.T) {
	loc := time.UTC
	tests := []struct {
		line string
		want Event
	}{
		{`[27-Nov-2026 10:46:54] WARNING: [pool www] child 12500, script '/srv/sleep.php' (request: "GET /sleep.php?s=5") execution timed out (2.092795 sec), terminating`,
			Event{Kind: EventTimedOut, Level: "WARNING", Pool: "www", Pid: 12500, Script: "/srv/sleep.php", Request: "GET /sleep.php?s=5", Seconds: 2.092795}},
		{`[27-Nov-2026 10:46:53] WARNING: [pool www] child 12500, script '/srv/sleep.php' (request: "GET /sleep.php?s=5") executing too slow (1.091923 sec), logging`,
			Event{Kind: EventSlow, Level: "WARNING", Pool: "www", Pid: 12500, Script: "/srv/sleep.php", Request: "GET /sleep.php?s=5", Seconds: 1.091923}},
		{`[27-Nov-2026 10:46:54] WARNING: [pool www] child 12500 exited on signal 15 (SIGTERM) after 5.353270 seconds from start`,
			Event{Kind: EventSignal, Level: "WARNING", Pool: "www", Pid: 12500, Signal: 15, SignalName: "SIGTERM", Seconds: 5.35327}},
		{`[27-Nov-2026 10:46:54] WARNING: [pool dyn] child 7 exited on signal 11 (SIGSEGV - core dumped) after 0.5 seconds from start`,
			Event{Kind: EventSignal, Level: "WARNING", Pool: "dyn", Pid: 7, Signal: 11, SignalName: "SIGSEGV", CoreDumped: true, Seconds: 0.5}},
		{`[27-Nov-2026 10:46:54] NOTICE: [pool www] child 8 exited with code 3 after 1.000000 seconds from start`,
			Event{Kind: EventExit, Level: "NOTICE", Pool: "www", Pid: 8, Code: 3, Seconds: 1}},
		{`[27-Nov-2026 10:46:54] NOTICE: [pool www] child 13002 started`,
			Event{Kind: EventStarted, Level: "NOTICE", Pool: "www", Pid: 13002}},
		{`[27-Nov-2026 10:46:54] WARNING: [pool dyn] server reached pm.max_children setting (2), consider raising it`,
			Event{Kind: EventMaxChildren, Level: "WARNING", Pool: "dyn", MaxChildren: 2}},
		{`[27-Nov-2026 10:46:54] WARNING: [pool od] server reached max_children setting (3), consider raising it`,
			Event{Kind: EventMaxChildren, Level: "WARNING", Pool: "od", MaxChildren: 3}},
		{`[27-Nov-2026 10:46:54] WARNING: [pool www] child 184 said into stderr: "hello"`,
			Event{Kind: EventOutput, Level: "WARNING", Pool: "www", Pid: 184, Output: "hello"}},
		{`[27-Nov-2026 13:00:43] NOTICE: Reloading in progress ...`, Event{Kind: EventReloading, Level: "NOTICE"}},
		{`[27-Nov-2026 13:00:44] NOTICE: Finishing ...`, Event{Kind: EventStopping, Level: "NOTICE"}},
		{`[27-Nov-2026 13:00:44] NOTICE: Terminating ...`, Event{Kind: EventStopping, Level: "NOTICE"}},
		{`[27-Nov-2026 13:00:43] NOTICE: ready to handle connections`, Event{Kind: EventReady, Level: "NOTICE"}},
		{`[27-Nov-2026 10:46:54.123456] WARNING: pid 99, fpm_children_bury(), line 256: [pool www] child 5 exited on signal 9 (SIGKILL) after 1.0 seconds from start`,
			Event{Kind: EventSignal, Level: "WARNING", Pool: "www", Pid: 5, Signal: 9, SignalName: "SIGKILL", Seconds: 1}},
	}
	for _, tt := range tests {
		got, ok := ParseLogLine(tt.line, loc)
		if !ok {
			t.Errorf("not parsed: %s", tt.line)
			continue
		}
		tt.want.Line = tt.line
		tt.want.Time = got.Time
		if got != tt.want {
			t.Errorf("%s\n got %+v\nwant %+v", tt.line, got, tt.want)
		}
		if got.Time.Year() != 2026 || got.Time.Day() != 27 {
			t.Errorf("time %v", got.Time)
		}
	}
	for _, line := range []string{"", "garbage", `[27-Nov-2026 10:46:54] NOTICE: fpm is running, pid 1`, `[27-Nov-2026 10:46:54] NOTICE: Reloading in progress ... or not`} {
		if _, ok := ParseLogLine(line, loc); ok {
			t.Errorf("parsed %q", line)
		}
	}
}

func TestFollowerSeesNewLinesAcrossRotationAndTruncation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fpm.log")
	stamp := time.Now().Format("02-Jan-2006 15:04:05")
	line := func(pid int, sig string) string {
		return "[" + stamp + "] WARNING: [pool www] child " + strconv.Itoa(pid) + " exited on signal 9 (" + sig + ") after 2.0 seconds from start\n"
	}
	// Lines already in the log are history, not news.
	os.WriteFile(path, []byte(line(1, "SIGKILL")), 0o644)
	f := &Follower{Path: path}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)

	appendLine := func(s string) {
		fh, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
		fh.WriteString(s)
		fh.Close()
	}
	find := func(pid int) bool {
		_, ok := f.Find(time.Time{}, 3*time.Second, func(e Event) bool { return e.Pid == pid })
		return ok
	}
	if _, ok := f.Find(time.Time{}, 0, func(e Event) bool { return e.Pid == 1 }); ok {
		t.Error("a line written before the follower started was taken as news")
	}
	before := time.Now()
	go func() { time.Sleep(50 * time.Millisecond); appendLine(line(2, "SIGKILL")) }()
	ev, ok := f.Find(before, 3*time.Second, func(e Event) bool { return e.Kind == EventSignal })
	if !ok || ev.Pid != 2 {
		t.Fatalf("appended line not found: %+v %v", ev, ok)
	}
	if _, ok := f.Find(time.Now(), 0, func(e Event) bool { return e.Pid == 2 }); ok {
		t.Error("an event that arrived before since was returned")
	}
	if c := f.Counts(); c[EventSignal] != 1 {
		t.Errorf("counts %v, want one signal event", c)
	}
	// logrotate's create mode: rename, then a new file.
	os.Rename(path, path+".1")
	appendLine(line(3, "SIGSEGV"))
	if !find(3) {
		t.Error("line in the new file after rotation not found")
	}
	// copytruncate mode.
	os.Truncate(path, 0)
	appendLine(line(4, "SIGSEGV"))
	if !find(4) {
		t.Error("line after truncation not found")
	}
}

func FuzzParseLogLine(f *testing.F) {
	f.Add(`[27-Nov-2026 10:46:54] WARNING: [pool www] child 12500 exited on signal 15 (SIGTERM) after 5.353270 seconds from start`)
	f.Add(`[27-Nov-2026 10:46:54] WARNING: [pool www] child 1, script 'x' (request: "GET /") execution timed out (1 sec), terminating`)
	f.Fuzz(func(t *testing.T, line string) {
		ParseLogLine(line, time.UTC)
	})
}
