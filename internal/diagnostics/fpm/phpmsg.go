package fpm

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Message is one error PHP logged, wherever it went: into the request's
// FastCGI stderr, into the file PHP's error_log names, or into php-fpm's
// own log through catch_workers_output.
type Message struct {
	// Level is PHP's word for it: "Warning", "Fatal error", "Notice",
	// "Parse error", "Deprecated"; php-fpm's own worker lines ("Connection
	// disallowed") carry php-fpm's level, "ERROR".
	Level string
	// Text is the message without its level and without the trailing
	// " in FILE on line N".
	Text string
	// File and Line are where PHP says the error is; File is "" for
	// "Unknown", PHP's word for an error before the script runs.
	File string
	Line int
	// Time is PHP's own timestamp, zero when the source has none.
	Time time.Time
	// Pid is the worker that wrote it, when the source tells (php-fpm's
	// log does); 0 otherwise.
	Pid int
	// Source is where it was read: "FastCGI stderr" or a file's path.
	Source string
	// Arrived is when a follower read it; zero for FastCGI stderr.
	Arrived time.Time
	// Raw is the line as read.
	Raw string
}

// Where returns "file:line", or "" when PHP named no file.
func (m Message) Where() string {
	if m.File == "" {
		return ""
	}
	return m.File + ":" + strconv.Itoa(m.Line)
}

var (
	// [05-Dec-2026 04:11:52 UTC] or [05-Dec-2026 04:11:52 Europe/Berlin]
	phpLogTime = regexp.MustCompile(`^\[(\d{2}-[A-Za-z]{3}-\d{4} \d{2}:\d{2}:\d{2})(?: ([A-Za-z0-9_+/-]+))?\] `)
	phpLevel   = regexp.MustCompile(`^PHP ([A-Z][A-Za-z ]*?):\s+(.*)$`)
	phpWhere   = regexp.MustCompile(`^(.*) in (.+?) on line (\d+)$`)
)

// ParseMessage reads one line as PHP writes an error: "PHP Warning:  text
// in /f.php on line 3", with the timestamp PHP's error_log file puts
// before it, the "PHP message: " FastCGI stderr puts before it, or the
// "NOTICE: " php-fpm puts before a worker's line. It also takes php-fpm's
// own "ERROR: Connection disallowed: ..." worker line. It reports false
// for anything else, such as the lines of a stack trace.
func ParseMessage(line string) (Message, bool) {
	s := strings.TrimRight(line, "\r\n")
	m := Message{Raw: s}
	if t := phpLogTime.FindStringSubmatch(s); t != nil {
		loc := time.UTC
		if t[2] != "" && t[2] != "UTC" {
			if l, err := time.LoadLocation(t[2]); err == nil {
				loc = l
			}
		}
		m.Time, _ = time.ParseInLocation("02-Jan-2006 15:04:05", t[1], loc)
		s = s[len(t[0]):]
	}
	for _, level := range []string{"NOTICE: ", "WARNING: ", "ERROR: "} {
		if rest, ok := strings.CutPrefix(s, level); ok {
			if strings.HasPrefix(rest, "Connection disallowed: ") {
				m.Level, m.Text = "ERROR", rest
				return m, true
			}
			s = rest
			break
		}
	}
	s = strings.TrimPrefix(s, "PHP message: ")
	l := phpLevel.FindStringSubmatch(s)
	if l == nil {
		return Message{}, false
	}
	m.Level, m.Text = l[1], l[2]
	if w := phpWhere.FindStringSubmatch(m.Text); w != nil {
		m.Text = w[1]
		if w[2] != "Unknown" {
			m.File = w[2]
			m.Line, _ = strconv.Atoi(w[3])
		}
	}
	return m, true
}

// StderrMessages returns the PHP messages in a request's FastCGI stderr.
func StderrMessages(stderr []byte) []Message {
	if len(stderr) == 0 {
		return nil
	}
	var out []Message
	for _, line := range bytes.Split(stderr, []byte("\n")) {
		if m, ok := ParseMessage(string(line)); ok {
			m.Source = "FastCGI stderr"
			out = append(out, m)
		}
	}
	return out
}

// MessageLog follows the file PHP writes its errors to (the error_log ini
// setting) and keeps the recent messages with the time each arrived.
type MessageLog struct {
	// Path is the file.
	Path string
	// Keep bounds the messages kept; 0 means 512.
	Keep int

	mu      sync.Mutex
	msgs    []Message // ring, oldest first once full
	next    int
	last    time.Time // when the latest message arrived
	arrived arrivals
	catch   catchUp
}

// Run follows the file until ctx ends, from its end: only what PHP writes
// from now on is of interest. It returns an error only when the directory
// cannot be watched.
func (l *MessageLog) Run(ctx context.Context) error {
	return l.catch.follow(ctx, l.Path, &l.mu, &l.arrived, nil, func(lines []string) {
		now := time.Now()
		for _, line := range lines {
			if m, ok := ParseMessage(line); ok {
				m.Source, m.Arrived = l.Path, now
				l.add(m)
				l.last = now
			}
		}
	})
}

func (l *MessageLog) add(m Message) {
	keep := l.Keep
	if keep <= 0 {
		keep = 512
	}
	if len(l.msgs) < keep {
		l.msgs = append(l.msgs, m)
		return
	}
	l.msgs[l.next] = m
	l.next = (l.next + 1) % keep
}

// Catch makes sure that what PHP wrote before after has been read, waiting
// up to wait for it. A request's messages are written before its response
// ends, but the file's change is noticed a moment later; a request that
// is explained at once would miss them. It costs at most an fstat when
// nothing new was written.
func (l *MessageLog) Catch(after time.Time, wait time.Duration) {
	l.catch.catch(after, l.Path, &l.mu, &l.arrived, wait)
}

// catchUp lets a caller of a follower make sure that what was written to
// the file before now has been read, instead of waiting for the change to
// be noticed. It keeps the file open to look at its size with fstat, which
// costs a request a fraction of a stat by name.
type catchUp struct {
	wake  chan time.Time
	size  atomic.Int64 // the offset read up to
	fd    atomic.Int64 // the open file, -1 when none; replaced after rotation
	file  *os.File     // guarded by the follower's mutex
	reads uint64       // completed reads; guarded by the follower's mutex
	// clean is when a look last found nothing unread (Unix nanoseconds).
	clean atomic.Int64
}

// follow runs follow for a follower whose state mu guards and whose
// waiters arrived wakes: onRead is called with mu held, and each read is
// counted for catch.
func (c *catchUp) follow(ctx context.Context, path string, mu *sync.Mutex, arrived *arrivals, started func(), onRead func(lines []string)) error {
	mu.Lock()
	if c.wake == nil {
		c.wake = make(chan time.Time, 1)
	}
	wake := c.wake
	c.fd.Store(-1)
	c.look(path)
	if c.file != nil {
		// follow starts at the end of the file.
		if fi, err := c.file.Stat(); err == nil {
			c.size.Store(fi.Size())
		}
	}
	mu.Unlock()
	defer func() {
		mu.Lock()
		c.fd.Store(-1)
		if c.file != nil {
			c.file.Close()
			c.file = nil
		}
		mu.Unlock()
	}()
	return follow(ctx, path, started, wake, func(lines []string, off int64) {
		mu.Lock()
		defer mu.Unlock()
		onRead(lines)
		c.look(path)
		c.size.Store(off)
		c.reads++
		arrived.notify()
	})
}

// look opens the file anew when it was replaced (rotated) or is there for
// the first time.
func (c *catchUp) look(path string) {
	var named, open syscall.Stat_t
	if syscall.Stat(path, &named) != nil {
		return
	}
	if c.file == nil || syscall.Fstat(int(c.file.Fd()), &open) != nil || open.Ino != named.Ino || open.Dev != named.Dev {
		if c.file != nil {
			c.fd.Store(-1)
			c.file.Close()
			c.file = nil
		}
		if f, err := os.Open(path); err == nil {
			c.file = f
			c.fd.Store(int64(f.Fd()))
		}
	}
}

// catch has the file read now when it grew since the last read, and waits
// up to wait for that read: afterwards everything written before after has
// been read. A look that found nothing unread later than after answers for
// every caller, so that under load most requests make no system call.
func (c *catchUp) catch(after time.Time, path string, mu *sync.Mutex, arrived *arrivals, wait time.Duration) {
	if c.clean.Load() > after.UnixNano() {
		return
	}
	var st syscall.Stat_t
	looked := time.Now().UnixNano()
	if fd := c.fd.Load(); fd >= 0 {
		if syscall.Fstat(int(fd), &st) != nil {
			return
		}
	} else if syscall.Stat(path, &st) != nil {
		st.Size = c.size.Load() // no file yet: nothing to read
	} else {
		st.Size = -1 // a new file: the follower opens and reads it
	}
	if st.Size == c.size.Load() {
		// Nothing unread at looked: all written before it is read.
		for {
			clean := c.clean.Load()
			if clean >= looked || c.clean.CompareAndSwap(clean, looked) {
				return
			}
		}
	}
	mu.Lock()
	wake, before := c.wake, c.reads
	mu.Unlock()
	select {
	case wake <- time.Now():
	default: // a read is already due
	}
	// Done when the read reached the size seen, or when a read that began
	// after the wake ended (the file was truncated or replaced): a read
	// under way when the wake was sent may have missed the newest lines.
	target := st.Size
	waitFor(mu, arrived, wait, func() (struct{}, bool) {
		return struct{}{}, target >= 0 && c.size.Load() >= target || c.reads >= before+2
	})
}

// Since returns the messages that arrived at or after since, oldest first.
func (l *MessageLog) Since(since time.Time) []Message {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.Before(since) {
		return nil
	}
	var out []Message
	for i := range l.msgs {
		m := l.msgs[(l.next+i)%len(l.msgs)]
		if !m.Arrived.Before(since) {
			out = append(out, m)
		}
	}
	return out
}

// ToWorkerStderr reports whether an error_log setting sends PHP's errors
// to the worker's standard error (/proc/self/fd/2, /dev/stderr), which
// php-fpm copies into its own log with catch_workers_output.
func ToWorkerStderr(errorLog string) bool {
	return strings.HasPrefix(errorLog, "/proc/self/fd/") || strings.HasPrefix(errorLog, "/dev/std")
}

// MessageLogReadable reports whether fcgiscope can follow PHP's error log
// at path, creating nothing: syslog, a standard stream and a path it may
// not read cannot be followed. A file that does not exist yet can, when its
// directory exists: PHP creates it with its first error.
func MessageLogReadable(path string) bool {
	if Readable(path) {
		return true
	}
	if path == "" || path == "syslog" || strings.HasPrefix(path, "/proc/") || strings.HasPrefix(path, "/dev/") {
		return false
	}
	_, err := os.Stat(path)
	if !os.IsNotExist(err) {
		return false
	}
	fi, err := os.Stat(filepath.Dir(path))
	return err == nil && fi.IsDir()
}
