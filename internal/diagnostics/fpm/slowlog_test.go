package fpm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// writeSlowScripts adds to root the scripts whose slow log entries
// testdata/slowlog/php82.log holds: cpu.php, a loop in the top-level code,
// and deep.php, a stack through a method, a static method, a closure and
// two includes.
func writeSlowScripts(t testing.TB, root string) {
	t.Helper()
	files := map[string]string{
		"cpu.php": `<?php
$t = time() + 2;
$x = 0;
while (true) {
    $x++;
    if ($x % 10000000 == 0 && time() > $t) break;
}
echo $x;
`,
		"deep.php": `<?php
class Report {
    public function build($s) {
        return self::render($s);
    }
    public static function render($s) {
        $f = function ($s) { require __DIR__ . '/inc2.php'; };
        return $f($s);
    }
}
function handle($s) {
    $r = new Report();
    return $r->build($s);
}
handle(2);
echo "done\n";
`,
		"inc2.php": `<?php
require_once __DIR__ . '/inc.php';
wait_here($s);
`,
		"inc.php": `<?php
function wait_here($s) {
    usleep((int)($s * 1e6));
}
`,
	}
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseSlowlogCapturedFromPHPFPM82(t *testing.T) {
	entries, err := ParseSlowlog(bytes.NewReader(testdataFile(t, "slowlog/php82.log")), time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("%d entries: %+v", len(entries), entries)
	}
	byScript := map[string]SlowEntry{}
	for _, e := range entries {
		if e.Pool != "www" || e.PID <= 0 || e.Time.Year() < 2020 || !e.Arrived.IsZero() || e.DumpFailed {
			t.Errorf("entry %+v", e)
		}
		byScript[filepath.Base(e.Script)] = e
	}
	sleep, cpu, deep := byScript["sleep.php"], byScript["cpu.php"], byScript["deep.php"]
	if len(sleep.Frames) != 1 || sleep.Frames[0].Function != "usleep" || filepath.Base(sleep.Frames[0].File) != "sleep.php" || sleep.Frames[0].Line != 24 {
		t.Errorf("sleep.php: %+v", sleep)
	}
	if cpu.PID == 0 || len(cpu.Frames) != 0 {
		t.Errorf("cpu.php, a loop in top-level code, should have no frames: %+v", cpu)
	}
	var got []string
	for _, f := range deep.Frames {
		got = append(got, f.Function+"() "+filepath.Base(f.File)+":"+strconv.Itoa(f.Line))
	}
	want := []string{
		"usleep() inc.php:3", "wait_here() inc2.php:3", "[INCLUDE_OR_EVAL]() deep.php:7",
		"{closure}() deep.php:8", "render() deep.php:4", "build() deep.php:13", "handle() deep.php:15",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("deep.php frames\n got %q\nwant %q", got, want)
	}
	if top, ok := deep.Top(); !ok || top.Function != "usleep" || !strings.HasSuffix(top.String(), "/inc.php:3") || !strings.HasPrefix(top.String(), "usleep() /") {
		t.Errorf("Top = %+v %v (%s)", top, ok, top)
	}
	if _, ok := cpu.Top(); ok {
		t.Error("Top of a frameless entry")
	}
}

func TestParseSlowlogSynthetic(t *testing.T) {
	loc := time.FixedZone("CET", 3600)
	entries, err := ParseSlowlog(bytes.NewReader(testdataFile(t, "slowlog/synthetic.log")), loc)
	if err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("02-Jan-2006 15:04:05", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	want := []SlowEntry{
		{Time: at("27-Nov-2026 10:46:53"), Pool: "www", PID: 12500, Script: "/srv/sleep.php", Frames: []Frame{
			{"sleep", "/srv/sleep.php", 11}, {"main", "/srv/sleep.php", 5}}},
		{Time: at("27-Nov-2026 10:46:54"), Pool: "www", PID: 12501, Script: "/srv/cpu.php"},
		{Time: at("27-Nov-2026 10:46:55"), Pool: "api v2", PID: 7, Script: "/srv/my app/x:y.php", DumpFailed: true, Frames: []Frame{
			{"{closure:/srv/my app/x:y.php:3}", "/srv/my app/x:y.php", 4}, {Function: "???"}}},
		{Time: at("27-Nov-2026 10:46:56"), Pool: "www", PID: 8, Script: "/srv/crlf.php", Frames: []Frame{{"usleep", "/srv/crlf.php", 2}}},
		{Time: at("28-Nov-2026 00:00:01"), Pool: "www", PID: 9, Script: "/srv/eof.php", Frames: []Frame{{"fread", "/srv/eof.php", 7}}},
	}
	if !reflect.DeepEqual(entries, want) {
		t.Errorf("got\n%+v\nwant\n%+v", entries, want)
	}
	if got := want[0].Frames[0].String(); got != "sleep() /srv/sleep.php:11" {
		t.Errorf("Frame.String = %q", got)
	}

	for _, in := range []string{"", "\n\n", "garbage\n[0x1] f() /x:1\n", "[32-Foo-2026 10:46:53]  [pool www] pid 1\n", "[27-Nov-2026 10:46:53]  [pool www] pid 99999999999999999999\n"} {
		if entries, err := ParseSlowlog(strings.NewReader(in), nil); err != nil || len(entries) != 0 {
			t.Errorf("ParseSlowlog(%q) = %+v, %v", in, entries, err)
		}
	}
	// An overlong line is cut, not fatal.
	long := "[27-Nov-2026 10:46:53]  [pool www] pid 1\nscript_filename = /" + strings.Repeat("x", 200<<10) + "\n[0x1] f() /a.php:1\n"
	entries, err = ParseSlowlog(strings.NewReader(long), nil)
	if err != nil || len(entries) != 1 || len(entries[0].Script) > maxLine || len(entries[0].Frames) != 1 {
		t.Errorf("long line: %d entries, %v", len(entries), err)
	}
}

// slowEntryText is an entry as php-fpm writes it.
func slowEntryText(pid int, script string, frames ...string) string {
	var b strings.Builder
	b.WriteString("\n[" + time.Now().Format("02-Jan-2006 15:04:05") + "]  [pool www] pid " + strconv.Itoa(pid) + "\n")
	b.WriteString("script_filename = " + script + "\n")
	for i, f := range frames {
		b.WriteString("[0x00007f9791a13" + strconv.Itoa(100+i) + "] " + f + "\n")
	}
	return b.String()
}

func appendSlowlog(t *testing.T, path, s string) {
	t.Helper()
	fh, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.WriteString(s); err != nil {
		t.Fatal(err)
	}
	fh.Close()
}

func startSlowlogFollower(t *testing.T, path string) *SlowlogFollower {
	t.Helper()
	f := &SlowlogFollower{Path: path}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	time.Sleep(100 * time.Millisecond) // let it open the file and watch
	return f
}

func TestSlowlogFollowerSynthetic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slow.log")
	appendSlowlog(t, path, slowEntryText(1, "/srv/old.php", "sleep() /srv/old.php:2"))
	f := startSlowlogFollower(t, path)
	if _, ok := f.Find(1, time.Time{}, 200*time.Millisecond); ok {
		t.Error("an entry written before the follower started was taken as news")
	}

	since := time.Now()
	appendSlowlog(t, path, slowEntryText(100, "/srv/a.php", "usleep() /srv/a.php:3", "main() /srv/a.php:9"))
	e, ok := f.Find(100, since, 10*time.Second)
	if !ok || e.Script != "/srv/a.php" || len(e.Frames) != 2 || e.Frames[1].Function != "main" || e.Arrived.Before(since) || e.Pool != "www" {
		t.Fatalf("Find(100) = %+v, %v", e, ok)
	}
	if _, ok := f.Find(100, time.Now(), 0); ok {
		t.Error("an entry that arrived before since was returned")
	}
	if _, ok := f.Find(101, since, 0); ok {
		t.Error("an entry of another pid was returned")
	}

	// An entry cut in the middle of a line, the rest written soon after.
	text := slowEntryText(101, "/srv/b.php", "usleep() /srv/b.php:3", "main() /srv/b.php:9")
	cut := strings.Index(text, "pid 1") + 5
	appendSlowlog(t, path, text[:cut])
	time.Sleep(10 * time.Millisecond)
	appendSlowlog(t, path, text[cut:])
	if e, ok := f.Find(101, since, 10*time.Second); !ok || len(e.Frames) != 2 || e.PID != 101 {
		t.Errorf("entry cut mid-line: %+v, %v", e, ok)
	}

	// An entry whose last frame comes after the quiet period: it is
	// found at once and completed when the rest arrives.
	text = slowEntryText(102, "/srv/c.php", "usleep() /srv/c.php:3", "main() /srv/c.php:9")
	cut = strings.Index(text, "main()")
	appendSlowlog(t, path, text[:cut])
	if e, ok := f.Find(102, since, 10*time.Second); !ok || len(e.Frames) != 1 {
		t.Errorf("first part: %+v, %v", e, ok)
	}
	time.Sleep(2 * slowQuiet)
	appendSlowlog(t, path, text[cut:])
	eventually(t, 10*time.Second, "the rest of the entry", func() bool {
		e, ok := f.Find(102, since, 0)
		return ok && len(e.Frames) == 2 && e.Frames[1].Function == "main"
	})
	// The next entry ends it: later frames are not added to it.
	appendSlowlog(t, path, slowEntryText(103, "/srv/d.php")+"[0x1] late() /srv/d.php:1\n")
	if e, ok := f.Find(103, since, 10*time.Second); !ok || len(e.Frames) != 1 {
		t.Errorf("pid 103: %+v, %v", e, ok)
	}
	if e, _ := f.Find(102, since, 0); len(e.Frames) != 2 {
		t.Errorf("pid 102 changed: %+v", e)
	}

	// logrotate's create mode: rename, then a new file.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	since = time.Now()
	appendSlowlog(t, path, slowEntryText(200, "/srv/rotated.php", "usleep() /srv/rotated.php:1"))
	if e, ok := f.Find(200, since, 10*time.Second); !ok || e.Script != "/srv/rotated.php" {
		t.Errorf("after rotation: %+v, %v", e, ok)
	}
	// copytruncate mode.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	since = time.Now()
	appendSlowlog(t, path, slowEntryText(300, "/srv/truncated.php", "usleep() /srv/truncated.php:1"))
	if e, ok := f.Find(300, since, 10*time.Second); !ok || e.Script != "/srv/truncated.php" {
		t.Errorf("after truncation: %+v, %v", e, ok)
	}
}

func TestSlowlogFollowerKeepsAtMostKeep(t *testing.T) {
	path := filepath.Join(t.TempDir(), "slow.log")
	f := &SlowlogFollower{Path: path, Keep: 3}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	time.Sleep(50 * time.Millisecond)
	since := time.Now()
	var all strings.Builder
	for pid := 1; pid <= 5; pid++ {
		all.WriteString(slowEntryText(pid, "/srv/x.php"))
	}
	appendSlowlog(t, path, all.String())
	if _, ok := f.Find(5, since, 3*time.Second); !ok {
		t.Fatal("pid 5 not found")
	}
	for pid, want := range map[int]bool{1: false, 2: false, 3: true, 4: true, 5: true} {
		if _, ok := f.Find(pid, since, 0); ok != want {
			t.Errorf("Find(%d) = %v, want %v", pid, ok, want)
		}
	}
}

// TestSlowlogFollowerWithPHPFPM makes real php-fpm write slow log entries
// and finds them by the worker's pid, which the status page gives, also
// after the log was rotated and truncated.
func TestSlowlogFollowerWithPHPFPM(t *testing.T) {
	fpm := testbed.StartFPM(t, testbed.FPMConfig{StatusPath: "/fpm-status", MaxChildren: 2, SlowlogTimeout: time.Second})
	root := testbed.PHPRoot(t)
	addr := fpmAddr(fpm)
	f := startSlowlogFollower(t, fpm.SlowLog)

	// slow runs sleep.php for 2s and returns the worker's pid, read from
	// the status page while the request runs, and its entry.
	slow := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		since := time.Now()
		query := "s=2&case=" + what
		done := make(chan error, 1)
		go func() {
			_, err := fcgiGet(ctx, addr, root, "/sleep.php", query)
			done <- err
		}()
		pid := 0
		eventually(t, 3*time.Second, "the request in the status page", func() bool {
			st, err := FetchStatus(ctx, addr, "/fpm-status")
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range st.Processes {
				if p.RequestURI == "/sleep.php?"+query && p.State == "Running" {
					pid = p.PID
					return true
				}
			}
			return false
		})
		e, ok := f.Find(pid, since, 5*time.Second)
		if !ok {
			b, _ := os.ReadFile(fpm.SlowLog)
			t.Fatalf("%s: no slow log entry for pid %d; slow log:\n%s\nerror log:\n%s", what, pid, b, fpm.ReadErrorLog())
		}
		if e.Script != filepath.Join(root, "sleep.php") || e.Pool != "www" || time.Since(e.Time) > time.Minute {
			t.Errorf("%s: entry %+v", what, e)
		}
		if top, ok := e.Top(); !ok || top.Function != "usleep" || top.File != filepath.Join(root, "sleep.php") || top.Line == 0 {
			t.Errorf("%s: top frame %+v", what, top)
		}
		if d := e.Arrived.Sub(since); d < time.Second || d > 4*time.Second {
			t.Errorf("%s: the entry arrived %v after the request started; request_slowlog_timeout is 1s", what, d)
		}
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: pid %d, entry arrived %v after the request started: %s", what, pid, e.Arrived.Sub(since).Round(time.Millisecond), e.Frames[0])
	}

	slow("first")
	if err := os.Rename(fpm.SlowLog, fpm.SlowLog+".1"); err != nil {
		t.Fatal(err)
	}
	slow("rotated")
	if err := os.Truncate(fpm.SlowLog, 0); err != nil {
		t.Fatal(err)
	}
	slow("truncated")
}

func FuzzParseSlowlog(f *testing.F) {
	for _, name := range []string{"slowlog/php82.log", "slowlog/synthetic.log"} {
		f.Add(testdataFile(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := ParseSlowlog(bytes.NewReader(b), time.UTC)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) > bytes.Count(b, []byte("[pool "))+0 {
			t.Errorf("%d entries from %d headers", len(entries), bytes.Count(b, []byte("[pool ")))
		}
		for _, e := range entries {
			if e.PID < 0 || len(e.Frames) > maxSlowFrames {
				t.Errorf("entry %+v", e)
			}
			for _, fr := range e.Frames {
				_ = fr.String()
				if fr.Line < 0 {
					t.Errorf("frame %+v", fr)
				}
			}
		}
	})
}
