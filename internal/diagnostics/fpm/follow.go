package fpm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Follower follows php-fpm's error log as it grows, across rotation and
// truncation, and keeps the recent events with the time each one arrived.
// Matching on arrival time rather than on php-fpm's own timestamps, which
// have whole seconds, keeps an earlier death in the same second from being
// taken for a later one.
type Follower struct {
	// Path is the log file.
	Path string
	// Location is the time zone php-fpm writes in; nil means time.Local.
	Location *time.Location
	// Keep bounds the events kept; 0 means 1024.
	Keep int

	readyOnce sync.Once
	ready     chan struct{}

	catch   catchUp
	mu      sync.Mutex
	counts  map[EventKind]int64
	events  []Arrival // ring, oldest first once full
	next    int
	last    time.Time // when the latest event arrived
	arrived arrivals
}

// Arrival is an event and when the Follower read it.
type Arrival struct {
	Event
	At time.Time
}

// maxLine bounds a line kept while waiting for its end; php-fpm cuts its
// own lines at log_limit (1024 by default).
const maxLine = 64 << 10

// Run follows the log until ctx ends. It starts at the end of the file:
// only what php-fpm writes from now on is of interest. It returns an error
// only when the directory cannot be watched at all.
func (f *Follower) Run(ctx context.Context) error {
	started := func() {
		f.readyOnce.Do(f.initReady)
		close(f.ready)
	}
	return f.catch.follow(ctx, f.Path, &f.mu, &f.arrived, started, func(lines []string) {
		for _, line := range lines {
			if e, ok := ParseLogLine(line, f.loc()); ok {
				f.add(e)
			} else if _, ok := ParseMessage(line); ok {
				// A worker's line copied undecorated
				// (decorate_workers_output = no): no time, no pid.
				f.add(Event{Kind: EventOutput, Output: line, Line: line})
			}
		}
	})
}

// Catch makes sure that what php-fpm wrote before after has been read,
// waiting up to wait for it; it costs at most an fstat when nothing new
// was written.
func (f *Follower) Catch(after time.Time, wait time.Duration) {
	f.catch.catch(after, f.Path, &f.mu, &f.arrived, wait)
}

// follow calls onRead with the complete lines appended to path each time the
// file changes, once a second in case a change went unnoticed, and whenever
// wake fires, until ctx ends, and with the offset in the file read up to.
// It starts at the end of the file and follows it across rotation and
// truncation (see tail). started, when set, is called once the file is
// being followed.
func follow(ctx context.Context, path string, started func(), wake <-chan time.Time, onRead func(lines []string, off int64)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	// Watch the directory: a rotated log is a new file with the same name.
	if err := w.Add(filepath.Dir(path)); err != nil {
		return err
	}
	t := &tail{path: path}
	t.open(true)
	defer t.close()
	if started != nil {
		started()
	}
	// Events can be missed (overlay file systems, a full queue); a slow
	// check every second catches up without busy polling.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) != filepath.Clean(path) {
				continue
			}
		case <-w.Errors:
		case <-tick.C:
		case <-wake:
		}
		lines := t.read()
		onRead(lines, t.off)
	}
}

func (f *Follower) initReady() { f.ready = make(chan struct{}) }

// Ready is closed once Run follows the file, so that a caller that wants
// the lines about something it is about to do can wait for it.
func (f *Follower) Ready() <-chan struct{} {
	f.readyOnce.Do(f.initReady)
	return f.ready
}

func (f *Follower) loc() *time.Location {
	if f.Location != nil {
		return f.Location
	}
	return time.Local
}

// add keeps e; f.mu is held.
func (f *Follower) add(e Event) {
	keep := f.Keep
	if keep <= 0 {
		keep = 1024
	}
	a := Arrival{Event: e, At: time.Now()}
	f.last = a.At
	if f.counts == nil {
		f.counts = make(map[EventKind]int64)
	}
	f.counts[e.Kind]++
	if len(f.events) < keep {
		f.events = append(f.events, a)
	} else {
		f.events[f.next] = a
		f.next = (f.next + 1) % keep
	}
	f.arrived.notify()
}

// Counts returns how many events of each kind arrived since Run started,
// for metrics such as worker deaths by signal and max_children warnings.
func (f *Follower) Counts() map[EventKind]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[EventKind]int64, len(f.counts))
	for k, v := range f.counts {
		out[k] = v
	}
	return out
}

// Find returns the latest event that arrived at or after since and
// satisfies match, waiting until wait has passed for one to arrive.
func (f *Follower) Find(since time.Time, wait time.Duration, match func(Event) bool) (Event, bool) {
	return waitFor(&f.mu, &f.arrived, wait, func() (found Event, ok bool) {
		for i := range f.events {
			a := f.events[(f.next+i)%len(f.events)]
			if !a.At.Before(since) && match(a.Event) {
				found, ok = a.Event, true
			}
		}
		return found, ok
	})
}

// Since returns the events of kind that arrived at or after since, oldest
// first.
func (f *Follower) Since(since time.Time, kind EventKind) []Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.last.Before(since) {
		return nil
	}
	var out []Event
	for i := range f.events {
		a := f.events[(f.next+i)%len(f.events)]
		if a.Kind == kind && !a.At.Before(since) {
			out = append(out, a.Event)
		}
	}
	return out
}

// arrivals wakes the callers of waitFor when something new arrives. The
// followers call notify with their mutex held.
type arrivals struct {
	changed chan struct{} // closed and replaced on each arrival
}

func (a *arrivals) notify() {
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
}

// waitFor calls scan with mu held until it finds something or wait has
// passed, sleeping between arrivals.
func waitFor[T any](mu *sync.Mutex, a *arrivals, wait time.Duration, scan func() (T, bool)) (T, bool) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		mu.Lock()
		found, ok := scan()
		if ok || wait <= 0 {
			mu.Unlock()
			return found, ok
		}
		if a.changed == nil {
			a.changed = make(chan struct{})
		}
		changed := a.changed
		mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			var zero T
			return zero, false
		}
	}
}

// tail reads what is appended to a file, reopening it when it is replaced
// and starting over when it is truncated.
type tail struct {
	path    string
	f       *os.File
	ino     uint64
	off     int64
	partial []byte
	// last holds the bytes just before off, to notice a truncation that
	// was followed by new writes past the old offset before we looked.
	last []byte
}

func (t *tail) open(atEnd bool) {
	f, err := os.Open(t.path)
	if err != nil {
		return
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return
	}
	t.f, t.ino, t.off, t.partial, t.last = f, inode(fi), 0, nil, nil
	if atEnd {
		t.off = fi.Size()
		b := make([]byte, min(t.off, lastLen))
		n, _ := f.ReadAt(b, t.off-int64(len(b)))
		t.remember(b[:n])
	}
}

// lastLen is how many of the bytes before the offset tail compares to
// notice a truncation.
const lastLen = 64

// remember keeps the last lastLen bytes read, however small the reads.
func (t *tail) remember(b []byte) {
	t.last = append(t.last, b...)
	if len(t.last) > lastLen {
		t.last = append(t.last[:0], t.last[len(t.last)-lastLen:]...)
	}
}

func (t *tail) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

// read returns the complete lines appended since the last call.
func (t *tail) read() []string {
	fi, err := os.Stat(t.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil // rotated away; the new file will appear
	case err != nil:
		return nil
	case t.f == nil || inode(fi) != t.ino:
		// A new file: read what was written before we noticed it.
		var lines []string
		if t.f != nil {
			lines = t.drain()
			t.close()
		}
		t.open(false)
		return append(lines, t.drain()...)
	case fi.Size() < t.off || !t.unchanged():
		t.off, t.partial, t.last = 0, nil, nil // truncated (copytruncate rotation)
	}
	return t.drain()
}

// unchanged reports whether the bytes before off are still the ones read.
func (t *tail) unchanged() bool {
	if t.f == nil || len(t.last) == 0 {
		return true
	}
	b := make([]byte, len(t.last))
	n, _ := t.f.ReadAt(b, t.off-int64(len(t.last)))
	return n == len(b) && bytes.Equal(b, t.last)
}

func (t *tail) drain() []string {
	if t.f == nil {
		return nil
	}
	var lines []string
	buf := make([]byte, 32<<10)
	for {
		n, err := t.f.ReadAt(buf, t.off)
		t.off += int64(n)
		t.remember(buf[:n])
		data := append(t.partial, buf[:n]...)
		for {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				break
			}
			lines = append(lines, strings.TrimRight(string(data[:i]), "\r"))
			data = data[i+1:]
		}
		if len(data) > maxLine {
			data = data[:0] // a line this long is not php-fpm's
		}
		t.partial = append(t.partial[:0], data...)
		if err == io.EOF || n == 0 || err != nil {
			return lines
		}
	}
}

func inode(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// Readable reports whether path names a log file fcgiscope can read, as
// opposed to syslog or another process's standard error.
func Readable(path string) bool {
	if path == "" || path == "syslog" || strings.HasPrefix(path, "/proc/self/fd/") || strings.HasPrefix(path, "/dev/") {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
