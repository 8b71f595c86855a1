package proxy

import (
	"bytes"
	"strconv"
)

// DefaultMaxHeaderBytes bounds the CGI headers of a response when
// Server.MaxHeaderBytes is 0. nginx's own limit (fastcgi_buffer_size) is
// smaller by default; this one catches an upstream whose headers never end.
const DefaultMaxHeaderBytes = 64 << 10

// headerScanner finds the end of the CGI response headers in the STDOUT
// stream, which may arrive split across records at any byte, and reads the
// few headers the relay cares about.
type headerScanner struct {
	limit     int // 0 means DefaultMaxHeaderBytes
	buf       []byte
	done      bool // headers complete, or given up on
	complete  bool // the blank line was seen
	status    int
	ctype     string
	streaming bool // the response asked not to be buffered
}

// feed adds STDOUT content.
func (s *headerScanner) feed(p []byte) {
	if s.done {
		return
	}
	maxHeaderScan := s.limit
	if maxHeaderScan <= 0 {
		maxHeaderScan = DefaultMaxHeaderBytes
	}
	prev := len(s.buf)
	if prev == 0 {
		// The usual case: the headers arrive whole in the first record
		// and are parsed in place.
		if end := headerEnd(p[:min(len(p), maxHeaderScan)]); end >= 0 {
			s.parse(p[:end])
			s.done, s.complete = true, true
			return
		}
	}
	take := min(len(p), maxHeaderScan-prev)
	s.buf = append(s.buf, p[:take]...)
	// Search from a little before the new bytes, so a terminator split
	// across records is found.
	from := max(prev-3, 0)
	end := headerEnd(s.buf[from:])
	if end >= 0 {
		s.parse(s.buf[:from+end])
		s.done, s.complete = true, true
		s.buf = s.buf[:0]
		return
	}
	if len(s.buf) >= maxHeaderScan {
		s.done = true
		s.buf = s.buf[:0]
	}
}

// headerEnd returns the index of the blank line that ends the headers in b,
// accepting CRLF and bare LF line ends as php-fpm and nginx do, or -1.
func headerEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 1
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 1
		}
	}
	return -1
}

func (s *headerScanner) parse(head []byte) {
	s.status = 200
	sawStatus, sawLocation := false, false
	defer func() {
		// A CGI redirect without Status is a 302, as nginx sends it.
		if sawLocation && !sawStatus {
			s.status = 302
		}
	}()
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte{'\n'})
		line = bytes.TrimRight(line, "\r")
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Status"):
			code, _, _ := bytes.Cut(value, []byte{' '})
			if n, err := strconv.Atoi(string(code)); err == nil && n >= 100 && n <= 999 {
				s.status, sawStatus = n, true
			}
		case asciiEqualFold(name, "Location"):
			sawLocation = len(value) > 0
		case asciiEqualFold(name, "Content-Type"):
			s.ctype = internContentType(value)
			if len(value) >= len("text/event-stream") && asciiEqualFold(value[:len("text/event-stream")], "text/event-stream") {
				s.streaming = true
			}
		case asciiEqualFold(name, "X-Accel-Buffering"):
			if asciiEqualFold(value, "no") {
				s.streaming = true
			}
		}
	}
}

// internContentType returns value as a string, without allocating for the
// types PHP sends most.
func internContentType(value []byte) string {
	switch string(value) {
	case "text/html; charset=UTF-8":
		return "text/html; charset=UTF-8"
	case "application/json":
		return "application/json"
	case "text/html":
		return "text/html"
	case "text/plain; charset=UTF-8":
		return "text/plain; charset=UTF-8"
	}
	return string(value)
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
