package fpm

import (
	"bufio"
	"context"
	"errors"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SlowEntry is one entry of php-fpm's slow log (request_slowlog_timeout):
// the stack of a worker whose request ran too long, taken with ptrace when
// the timeout fired. php-fpm 8.2 writes it as
//
//	[27-Nov-2026 10:46:53]  [pool www] pid 12500
//	script_filename = /srv/sleep.php
//	[0x00007f9791a130b0] sleep() /srv/sleep.php:11
//	[0x00007f9791a13020] main() /srv/sleep.php:5
//
// after a blank line, innermost frame first, at most
// request_slowlog_trace_depth (20) frames. A request busy in its top-level
// code, such as a CPU-bound loop, gives an entry without frames. Where
// ptrace is not permitted, php-fpm writes "failed to ptrace(ATTACH) child
// N" into its error log and nothing here.
type SlowEntry struct {
	// Time is php-fpm's timestamp, whole seconds of its local time.
	Time time.Time
	Pool string
	PID  int
	// Script is the script_filename line.
	Script string
	// Frames is the stack, innermost first.
	Frames []Frame
	// DumpFailed is set when php-fpm could not read the whole stack
	// ("+++ dump failed"); Frames then has what it read.
	DumpFailed bool
	// Arrived is when a SlowlogFollower read the entry; zero from
	// ParseSlowlog.
	Arrived time.Time
}

// Frame is one line of a slow log stack. Function is the function name
// without its class ("render" for Report::render), "{closure}", or
// "[INCLUDE_OR_EVAL]" for an include or require.
type Frame struct {
	Function string
	File     string
	Line     int
}

// String returns the frame as php-fpm writes it, without the address.
func (f Frame) String() string {
	s := f.Function + "()"
	if f.File != "" {
		s += " " + f.File
		if f.Line > 0 {
			s += ":" + strconv.Itoa(f.Line)
		}
	}
	return s
}

// Top returns the innermost frame: where the request was when the entry
// was taken.
func (e SlowEntry) Top() (Frame, bool) {
	if len(e.Frames) == 0 {
		return Frame{}, false
	}
	return e.Frames[0], true
}

var (
	slowHeader = regexp.MustCompile(`^\[(\d{2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2}:\d{2})\]\s+\[pool (.*)\] pid (\d+)\s*$`)
	slowFrame  = regexp.MustCompile(`^\[0x[0-9A-Fa-f]+\] (.*)$`)
)

// maxSlowFrames bounds the frames kept of one entry; php-fpm's
// request_slowlog_trace_depth defaults to 20.
const maxSlowFrames = 1024

// slowParser turns slow log lines into entries. emit is called with each
// entry when it ends, and again, with again set, when lines for an entry
// that was emitted early (see flush) arrive.
type slowParser struct {
	loc     *time.Location
	cur     SlowEntry
	active  bool // cur has begun
	emitted bool // cur was emitted by flush
	emit    func(e SlowEntry, again bool)
}

func (p *slowParser) line(s string, at time.Time) {
	s = strings.TrimRight(s, "\r")
	if m := slowHeader.FindStringSubmatch(s); m != nil {
		p.end()
		t, err := time.ParseInLocation("02-Jan-2006 15:04:05", m[1], p.loc)
		if err != nil {
			return
		}
		pid, err := strconv.Atoi(m[3])
		if err != nil {
			return
		}
		p.cur = SlowEntry{Time: t, Pool: m[2], PID: pid, Arrived: at}
		p.active = true
		return
	}
	if !p.active {
		return
	}
	switch {
	case strings.TrimSpace(s) == "":
		p.end()
		return
	case strings.HasPrefix(s, "script_filename = "):
		p.cur.Script = strings.TrimPrefix(s, "script_filename = ")
	case strings.HasPrefix(s, "[0x"):
		m := slowFrame.FindStringSubmatch(s)
		if m == nil || len(p.cur.Frames) >= maxSlowFrames {
			return
		}
		p.cur.Frames = append(p.cur.Frames, parseFrame(m[1]))
	case strings.Contains(s, "dump failed"):
		p.cur.DumpFailed = true
	default:
		return
	}
	if p.emitted {
		p.emitCopy(true)
	}
}

func (p *slowParser) emitCopy(again bool) {
	e := p.cur
	e.Frames = slices.Clone(e.Frames)
	p.emit(e, again)
}

// end ends the current entry.
func (p *slowParser) end() {
	if p.active && !p.emitted {
		p.emitCopy(false)
	}
	p.active, p.emitted = false, false
}

// flush emits the current entry without ending it, for when nothing more
// came for a while: php-fpm writes an entry in one go, but it ends only
// when the next one begins.
func (p *slowParser) flush() {
	if p.active && !p.emitted {
		p.emitCopy(false)
		p.emitted = true
	}
}

// pending reports whether an entry has begun but was not emitted.
func (p *slowParser) pending() bool { return p.active && !p.emitted }

// parseFrame parses what follows the address of a frame line:
// "name() /file.php:12".
func parseFrame(s string) Frame {
	var f Frame
	name, where, ok := strings.Cut(s, "() ")
	if !ok {
		f.Function = strings.TrimSuffix(s, "()")
		return f
	}
	f.Function = name
	if i := strings.LastIndexByte(where, ':'); i > 0 {
		if n, err := strconv.Atoi(where[i+1:]); err == nil && n >= 0 {
			f.File, f.Line = where[:i], n
			return f
		}
	}
	f.File = where
	return f
}

// ParseSlowlog reads a whole php-fpm slow log, reading its timestamps in
// loc (php-fpm writes local time; nil means time.Local). Lines it does not
// know are skipped. The error is the reader's.
func ParseSlowlog(r io.Reader, loc *time.Location) ([]SlowEntry, error) {
	if loc == nil {
		loc = time.Local
	}
	var entries []SlowEntry
	p := &slowParser{loc: loc, emit: func(e SlowEntry, again bool) {
		if again && len(entries) > 0 {
			entries[len(entries)-1] = e
			return
		}
		entries = append(entries, e)
	}}
	br := bufio.NewReaderSize(r, 32<<10)
	for {
		line, err := readLimitedLine(br, maxLine)
		if len(line) > 0 || err == nil {
			p.line(line, time.Time{})
		}
		if err != nil {
			p.end()
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return entries, err
		}
	}
}

// readLimitedLine reads a line without its newline, keeping at most limit
// bytes of it.
func readLimitedLine(br *bufio.Reader, limit int) (string, error) {
	var b []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(b) < limit {
			b = append(b, chunk[:min(len(chunk), limit-len(b))]...)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(b) > 0 && b[len(b)-1] == '\n' {
			b = b[:len(b)-1]
		}
		return string(b), err
	}
}

// SlowlogFollower follows php-fpm's slow log as it grows, across rotation
// and truncation, and keeps the recent entries with the time each arrived,
// so that a request that failed can be matched with the stack php-fpm took
// of its worker.
type SlowlogFollower struct {
	// Path is the slow log (the pool's slowlog setting).
	Path string
	// Location is the time zone php-fpm writes in; nil means time.Local.
	Location *time.Location
	// Keep bounds the entries kept; 0 means 256.
	Keep int

	mu      sync.Mutex
	entries []SlowEntry // ring, oldest first once full
	next    int
	last    int // index of the entry added last
	arrived arrivals
}

// slowQuiet is how long the follower waits for more of an entry before it
// takes the entry as complete. php-fpm writes an entry with one write
// unless its stack is longer than a stdio buffer.
const slowQuiet = 50 * time.Millisecond

// Run follows the slow log until ctx ends. It starts at the end of the
// file; a log that does not exist yet is read from its start once php-fpm
// creates it. It returns an error only when the directory cannot be
// watched.
func (f *SlowlogFollower) Run(ctx context.Context) error {
	loc := f.Location
	if loc == nil {
		loc = time.Local
	}
	p := &slowParser{loc: loc, emit: f.add}
	quiet := time.NewTimer(slowQuiet)
	quiet.Stop()
	defer quiet.Stop()
	return follow(ctx, f.Path, nil, quiet.C, func(lines []string, _ int64) {
		now := time.Now()
		for _, line := range lines {
			p.line(line, now)
		}
		if len(lines) == 0 {
			// Nothing more came: an entry that has begun is complete.
			p.flush()
		}
		if p.pending() {
			quiet.Reset(slowQuiet)
		}
	})
}

func (f *SlowlogFollower) add(e SlowEntry, again bool) {
	if e.Arrived.IsZero() {
		e.Arrived = time.Now()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	keep := f.Keep
	if keep <= 0 {
		keep = 256
	}
	switch {
	case again && len(f.entries) > 0:
		f.entries[f.last] = e
	case len(f.entries) < keep:
		f.entries = append(f.entries, e)
		f.last = len(f.entries) - 1
	default:
		f.entries[f.next] = e
		f.last = f.next
		f.next = (f.next + 1) % keep
	}
	f.arrived.notify()
}

// Find returns the latest entry for the worker pid that arrived at or after
// since, waiting until wait has passed for one to arrive.
func (f *SlowlogFollower) Find(pid int, since time.Time, wait time.Duration) (SlowEntry, bool) {
	return f.find(since, wait, func(e SlowEntry) bool { return e.PID == pid })
}

// FindScript returns the latest entry for the script that arrived at or
// after since, waiting until wait has passed for one to arrive: for a
// request whose worker is not known.
func (f *SlowlogFollower) FindScript(script string, since time.Time, wait time.Duration) (SlowEntry, bool) {
	return f.find(since, wait, func(e SlowEntry) bool { return e.Script == script })
}

func (f *SlowlogFollower) find(since time.Time, wait time.Duration, match func(SlowEntry) bool) (SlowEntry, bool) {
	return waitFor(&f.mu, &f.arrived, wait, func() (found SlowEntry, ok bool) {
		for i := range f.entries {
			e := f.entries[(f.next+i)%len(f.entries)]
			if match(e) && !e.Arrived.Before(since) {
				found, ok = e, true
			}
		}
		found.Frames = slices.Clone(found.Frames)
		return found, ok
	})
}
