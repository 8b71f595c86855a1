// Package cgi reads and writes the head of a CGI response, the form in
// which php-fpm answers: header lines, a blank line, the body. The relay, the
// HTTP gateway, the clients and the load generator all read response heads
// with this package, so that a Status header means the same everywhere, and
// the relay and the gateway answer for a failed request with the same Reply.
package cgi

import (
	"bytes"
	"fmt"
)

// DefaultLimit bounds a head when Scanner.Limit is 0. nginx's own limit
// (fastcgi_buffer_size) is smaller by default; this one catches an upstream
// whose headers never end.
const DefaultLimit = 64 << 10

// Head is what a CGI header block says.
type Head struct {
	// Status is the status of the response, as nginx works it out: the
	// Status header's, 302 for a Location without a Status, else 200.
	Status int
	// BadStatus is the value of a Status header that holds no status;
	// Status is then worked out as if it were absent.
	BadStatus string
	// Rejected is the first header line nginx refuses ("upstream sent
	// invalid header"), as it came but for its line end, and RejectedWhy
	// what is wrong with it.
	// A Status without a status is one of them.
	Rejected, RejectedWhy string
	// ContentType is the Content-Type header.
	ContentType string
	// Streaming is set when the response asked not to be buffered:
	// X-Accel-Buffering: no, or Content-Type text/event-stream.
	Streaming bool
	// Len is the length of the header block, up to and including the
	// line end before the blank line.
	Len int
	// Fields are the header lines in order, Status included, with their
	// names and values trimmed; only ParseHead and a Scanner with
	// KeepFields fill them.
	Fields []Field
}

// Field is one header line.
type Field struct {
	Name, Value string
}

// ParseStatus reads the value of a Status header the way nginx does: its
// first three bytes are the status code. It reports false for a value that
// holds no status from 100 to 999, which nginx refuses as "upstream sent
// invalid status".
func ParseStatus(value []byte) (int, bool) {
	value = bytes.TrimLeft(value, " \t")
	if len(value) < 3 {
		return 0, false
	}
	code := 0
	for _, c := range value[:3] {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	if code < 100 {
		return 0, false
	}
	return code, true
}

// HeadEnd finds the blank line that ends the header block in b, looking from
// index from on, with CRLF or bare LF line ends as php-fpm and nginx accept
// them. It returns the length of the header block (Head.Len) and the index
// where the body starts, or -1, -1 while the blank line has not come.
func HeadEnd(b []byte, from int) (end, body int) {
	if from <= 0 {
		// No headers at all: the blank line comes first.
		if len(b) > 0 && b[0] == '\n' {
			return 0, 1
		}
		if len(b) > 1 && b[0] == '\r' && b[1] == '\n' {
			return 0, 2
		}
		from = 0
	}
	for i := from; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' {
			return i + 1, i + 2
		}
		if i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n' {
			return i + 1, i + 3
		}
	}
	return -1, -1
}

// ParseHead reads a whole header block (without the blank line), keeping
// every field.
func ParseHead(head []byte) Head {
	var h Head
	h.parse(head, true)
	return h
}

// parse reads the header block into h, and its fields when keep is set.
func (h *Head) parse(head []byte, keep bool) {
	h.Len = len(head)
	h.Status = 200
	sawStatus, sawLocation := false, false
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte{'\n'})
		why := nginxRefuses(line)
		line = bytes.TrimRight(line, "\r")
		if why != "" && h.Rejected == "" {
			h.Rejected, h.RejectedWhy = string(line), why
		}
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		name, value = bytes.TrimSpace(name), bytes.TrimSpace(value)
		if keep {
			h.Fields = append(h.Fields, Field{Name: string(name), Value: string(value)})
		}
		switch {
		case asciiEqualFold(name, "Status"):
			if code, ok := ParseStatus(value); ok {
				h.Status, sawStatus = code, true
			} else {
				h.BadStatus = string(value)
				if h.Rejected == "" {
					h.Rejected, h.RejectedWhy = string(line), "its Status does not start with a three-digit status code"
				}
			}
		case asciiEqualFold(name, "Location"):
			sawLocation = len(value) > 0
		case asciiEqualFold(name, "Content-Type"):
			h.ContentType = internContentType(value)
			if len(value) >= len("text/event-stream") && asciiEqualFold(value[:len("text/event-stream")], "text/event-stream") {
				h.Streaming = true
			}
		case asciiEqualFold(name, "X-Accel-Buffering"):
			if asciiEqualFold(value, "no") {
				h.Streaming = true
			}
		}
	}
	if sawLocation && !sawStatus {
		// A CGI redirect without Status is a 302, as nginx sends it.
		h.Status = 302
	}
}

// nginxRefuses says why nginx's header parser would refuse line (without
// its LF), or "" when it takes it: nginx 1.22's ngx_http_parse_header_line
// refuses a control character, a space or DEL in a name or at the start of
// a line, a line that starts with ':', a NUL byte in a value, and a CR that
// is not followed by the end of the line. It skips the "HTTP/1.1 200 OK"
// lines IIS sends, and takes a line without a colon as a header without a
// value.
func nginxRefuses(line []byte) string {
	if bytes.HasPrefix(line, []byte("HTTP/")) {
		return ""
	}
	line = bytes.TrimRight(line, "\r")
	if len(line) == 0 {
		return ""
	}
	if bytes.IndexByte(line, '\r') >= 0 {
		return "a CR inside the line"
	}
	if c := line[0]; c <= ' ' || c == 0x7f || c == ':' {
		return "the line starts with " + describeByte(c)
	}
	name, value, _ := bytes.Cut(line, []byte{':'})
	for _, c := range name {
		if c <= ' ' || c == 0x7f {
			return describeByte(c) + " in the header name (or no colon after it)"
		}
	}
	if bytes.IndexByte(value, 0) >= 0 {
		return "a NUL byte in the value"
	}
	return ""
}

func describeByte(c byte) string {
	switch c {
	case ' ':
		return "a space"
	case '\t':
		return "a tab"
	case ':':
		return "a colon"
	}
	return fmt.Sprintf("the control character %q", rune(c))
}

// Scanner finds the head of a CGI response in a STDOUT stream that may be
// split across records at any byte, and reads it. Its zero value is ready to
// use; Reset makes it ready for the next response.
type Scanner struct {
	// Limit bounds the head; a head longer than that is given up on.
	// 0 means DefaultLimit.
	Limit int
	// KeepFields keeps every header line in Head().Fields, for a caller
	// that passes the headers on.
	KeepFields bool

	buf   []byte
	done  bool
	ended bool
	head  Head
}

// Feed adds STDOUT content. Once the head has ended it returns the part of p
// that belongs to the body; before that, and after giving up, it returns nil.
func (s *Scanner) Feed(p []byte) []byte {
	if s.done {
		if s.ended {
			return p
		}
		return nil
	}
	limit := s.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	prev := len(s.buf)
	if prev == 0 {
		// The usual case: the head arrives whole in the first record and
		// is read in place.
		if end, body := HeadEnd(p[:min(len(p), limit+2)], 0); end >= 0 && end <= limit {
			s.head.parse(p[:end], s.KeepFields)
			s.done, s.ended = true, true
			return p[body:]
		}
	}
	s.buf = append(s.buf, p[:min(len(p), limit+2-prev)]...)
	// Look from a little before the new bytes, so that a blank line split
	// across records is found.
	end, body := HeadEnd(s.buf, max(prev-3, 0))
	switch {
	case end >= 0 && end <= limit:
		s.head.parse(s.buf[:end], s.KeepFields)
		s.done, s.ended = true, true
		rest := p[body-prev:]
		s.buf = s.buf[:0]
		return rest
	case end >= 0 || len(s.buf) >= limit+2:
		s.done = true
		s.buf = s.buf[:0]
	}
	return nil
}

// Done reports whether the head has ended or was given up on.
func (s *Scanner) Done() bool { return s.done }

// Ended reports whether the blank line that ends the head was seen within
// the limit.
func (s *Scanner) Ended() bool { return s.ended }

// Head returns what the head said; it is valid once Ended.
func (s *Scanner) Head() *Head { return &s.head }

// Reset makes the Scanner ready for another response, keeping its buffer
// and settings.
func (s *Scanner) Reset() {
	*s = Scanner{Limit: s.Limit, KeepFields: s.KeepFields, buf: s.buf[:0]}
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
