package diagnostics

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

// errnoName returns the symbolic name of the errno inside err, such as
// "ECONNREFUSED", or "".
func errnoName(err error) string {
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	for _, e := range []struct {
		n syscall.Errno
		s string
	}{
		{syscall.ECONNREFUSED, "ECONNREFUSED"}, {syscall.ENOENT, "ENOENT"}, {syscall.EACCES, "EACCES"},
		{syscall.EPERM, "EPERM"}, {syscall.EAGAIN, "EAGAIN"}, {syscall.ECONNRESET, "ECONNRESET"},
		{syscall.ETIMEDOUT, "ETIMEDOUT"}, {syscall.EHOSTUNREACH, "EHOSTUNREACH"}, {syscall.ENETUNREACH, "ENETUNREACH"},
		{syscall.EPIPE, "EPIPE"}, {syscall.ENOTSOCK, "ENOTSOCK"},
	} {
		if errno == e.n {
			return e.s
		}
	}
	return "errno " + strconv.Itoa(int(errno))
}

func seconds(d time.Duration) string {
	if d < time.Second {
		return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func at(where string) string {
	if where == "" {
		return ""
	}
	return " (" + where + ")"
}

func scriptName(t *outcome.Trace) string {
	if t.Script != "" {
		return t.Script
	}
	if t.URI != "" {
		return t.URI
	}
	return "the script"
}

// quoteBounded quotes s for a page or a log line, escaping what is not
// printable, and cuts it after max bytes.
func quoteBounded(s string, max int) string {
	if len(s) > max {
		return strconv.Quote(s[:max]) + fmt.Sprintf(" (and %d bytes more)", len(s)-max)
	}
	return strconv.Quote(s)
}
