package httpgateway

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
)

// response turns php-fpm's STDOUT stream into the HTTP response. It is the
// stdout writer of fcgi.RoundTrip, so it sees the stream record by record:
// it collects the CGI headers (of any line length, up to MaxHeaderBytes),
// then holds back up to HoldBytes of the body, then streams, flushing after
// every record so that streamed pages arrive as PHP flushes them.
type response struct {
	g  *Gateway
	w  http.ResponseWriter
	rc *http.ResponseController
	t  *proxy.Trace

	head     []byte // CGI header bytes while they are incomplete
	headDone bool
	header   cgiHeader

	hold      []byte
	committed bool // the HTTP headers went to the client
	stdout    int64
}

// clientWriteError is a failed write to the HTTP client.
type clientWriteError struct{ err error }

func (e *clientWriteError) Error() string { return "writing to the client: " + e.err.Error() }
func (e *clientWriteError) Unwrap() error { return e.err }

// Write takes one STDOUT record's content.
func (res *response) Write(p []byte) (int, error) {
	t := res.t
	t.UpstreamRecords++
	if len(p) == 0 {
		return 0, nil
	}
	if t.FirstByte.IsZero() {
		t.FirstByte = time.Now()
	}
	t.UpstreamBytes += int64(len(p))
	res.stdout += int64(len(p))
	body := p
	if !res.headDone {
		prev := len(res.head)
		res.head = append(res.head, p...)
		// Look a little before the new bytes: the blank line may be split
		// across records.
		from := max(prev-3, 0)
		end, bodyStart := headerEnd(res.head, from)
		if end < 0 {
			if len(res.head) > res.g.maxHeaderBytes() {
				return 0, &proxy.ProtocolError{Upstream: true, Reason: fmt.Sprintf("the CGI headers did not end within %d bytes", res.g.maxHeaderBytes())}
			}
			return len(p), nil
		}
		if end > res.g.maxHeaderBytes() {
			return 0, &proxy.ProtocolError{Upstream: true, Reason: fmt.Sprintf("the CGI headers did not end within %d bytes", res.g.maxHeaderBytes())}
		}
		res.header = parseCGIHeader(res.head[:end])
		res.headDone = true
		t.Status, t.ContentType = res.header.status, res.header.contentType
		body = res.head[bodyStart:]
		res.head = nil
		if res.g.HoldBytes <= 0 || res.header.streaming {
			if err := res.commit(); err != nil {
				return 0, err
			}
		}
	}
	if len(body) == 0 {
		return len(p), nil
	}
	if !res.committed {
		res.hold = append(res.hold, body...)
		if len(res.hold) < res.g.HoldBytes {
			return len(p), nil
		}
		return len(p), res.commit()
	}
	if err := res.writeBody(body); err != nil {
		return 0, err
	}
	return len(p), nil
}

// commit sends the headers and whatever is held back.
func (res *response) commit() error {
	h := res.w.Header()
	for _, f := range res.header.fields {
		h.Add(f.name, f.value)
	}
	res.common(h)
	res.w.WriteHeader(res.header.status)
	res.committed = true
	res.t.BytesOut += int64(res.header.size)
	hold := res.hold
	res.hold = nil
	if len(hold) > 0 {
		return res.writeBody(hold)
	}
	if err := res.rc.Flush(); err != nil {
		return &clientWriteError{err}
	}
	return nil
}

func (res *response) writeBody(b []byte) error {
	n, err := res.w.Write(b)
	res.t.BytesOut += int64(n)
	if errors.Is(err, http.ErrBodyNotAllowed) {
		// A 204 or 304 with stray output (a newline after "?>"): nginx
		// drops it too.
		return nil
	}
	if err == nil {
		err = res.rc.Flush()
	}
	if err != nil {
		return &clientWriteError{err}
	}
	return nil
}

// common adds the headers every PHP response gets.
func (res *response) common(h http.Header) {
	t := res.t
	h.Set("X-Fcgiscope-Request-Id", headerSafe(t.RequestID))
	if res.g.ServerTiming && !t.DialEnd.IsZero() {
		wait := time.Duration(0)
		if !t.FirstByte.IsZero() {
			wait = t.FirstByte.Sub(t.DialEnd)
		}
		h.Add("Server-Timing", fmt.Sprintf("fcgi-connect;dur=%.3f;desc=\"connect to php-fpm\", fcgi-wait;dur=%.3f;desc=\"wait for php-fpm\"",
			msFloat(t.ConnectTime()), msFloat(wait)))
	}
}

// complete is called when END_REQUEST arrived; it returns the error that
// makes the request a failure, if any.
func (res *response) complete(end fcgi.EndRequest) error {
	switch {
	case end.ProtocolStatus != fcgi.StatusRequestComplete && !res.committed:
		return &proxy.RejectedError{Status: end.ProtocolStatus}
	case !res.headDone:
		// nginx answers a blank 502 "upstream prematurely closed FastCGI
		// stdout"; an explanation is better.
		reason := "END_REQUEST came without any STDOUT"
		if res.stdout > 0 {
			reason = fmt.Sprintf("the response ended after %d STDOUT bytes without the blank line that ends the CGI headers", res.stdout)
		}
		return &proxy.ProtocolError{Upstream: true, Reason: reason}
	case !res.committed:
		if err := res.commit(); err != nil {
			return fmt.Errorf("%w: %w", proxy.ErrClientAborted, err)
		}
	}
	return nil
}

// replace answers for a failed request that sent nothing to the client yet.
func (res *response) replace() {
	t := res.t
	var rep proxy.Reply
	if r := res.g.Responder; r != nil {
		rep = r.Respond(t)
	} else {
		rep = plainReply(t)
	}
	end, bodyStart := headerEnd(rep.CGI, 0)
	if end < 0 {
		end, bodyStart = len(rep.CGI), len(rep.CGI)
	}
	hdr := parseCGIHeader(rep.CGI[:end])
	h := res.w.Header()
	for _, f := range hdr.fields {
		h.Add(f.name, f.value)
	}
	res.common(h)
	t.Status, t.ContentType = hdr.status, hdr.contentType
	t.Replaced = true
	res.w.WriteHeader(hdr.status)
	res.committed = true
	// rep.LogLine is for nginx's error log; the access log line says the
	// same and more.
	if _, err := res.w.Write(rep.CGI[bodyStart:]); err == nil {
		t.BytesOut += int64(len(rep.CGI))
	}
}

// plainReply is the reply when no Responder is set.
func plainReply(t *proxy.Trace) proxy.Reply {
	msg := "fcgiscope: the request failed: " + t.Err.Error()
	return proxy.Reply{
		CGI:     []byte("Status: 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nCache-Control: no-store\r\n\r\n" + msg + "\n"),
		LogLine: msg + " (request_id=" + t.RequestID + ")",
	}
}

// cgiHeader is a parsed CGI response header section.
type cgiHeader struct {
	status      int
	contentType string
	fields      []headerField
	// streaming is set by X-Accel-Buffering: no and text/event-stream.
	streaming bool
	size      int
}

type headerField struct{ name, value string }

// headerEnd finds the blank line that ends the CGI headers in b, looking
// from index from on, accepting CRLF and bare LF line ends as php-fpm and
// nginx do. It returns the end of the last header line and the start of the
// body, or -1, -1.
func headerEnd(b []byte, from int) (end, body int) {
	if from == 0 {
		if len(b) > 0 && b[0] == '\n' {
			return 0, 1
		}
		if len(b) > 1 && b[0] == '\r' && b[1] == '\n' {
			return 0, 2
		}
	}
	for i := max(from, 0); i < len(b); i++ {
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

// Headers that are the HTTP server's business, or that nginx consumes.
var dropHeaders = map[string]bool{
	"Status":            true,
	"Connection":        true,
	"Keep-Alive":        true,
	"Transfer-Encoding": true,
	"Upgrade":           true,
	"Trailer":           true,
	"X-Accel-Buffering": true,
}

// parseCGIHeader reads the header section of a CGI response: Status gives
// the status, a Location without Status means 302 as nginx has it, and
// every other field is kept in order, repeated ones (Set-Cookie) included.
// Lines without a colon and names that are not HTTP tokens are dropped.
func parseCGIHeader(head []byte) cgiHeader {
	h := cgiHeader{status: http.StatusOK, size: len(head)}
	sawStatus, sawLocation := false, false
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte{'\n'})
		line = bytes.TrimRight(line, "\r")
		name, value, ok := bytes.Cut(line, []byte{':'})
		if !ok || !validName(name) {
			continue
		}
		key := http.CanonicalHeaderKey(string(name))
		val := strings.TrimSpace(string(value))
		switch key {
		case "Status":
			code, _, _ := strings.Cut(val, " ")
			if n, err := strconv.Atoi(code); err == nil && n >= 200 && n <= 999 {
				h.status, sawStatus = n, true
			}
		case "Location":
			sawLocation = val != ""
		case "Content-Type":
			h.contentType = val
			if strings.HasPrefix(strings.ToLower(val), "text/event-stream") {
				h.streaming = true
			}
		case "X-Accel-Buffering":
			if strings.EqualFold(val, "no") {
				h.streaming = true
			}
		}
		if !dropHeaders[key] {
			h.fields = append(h.fields, headerField{key, headerSafe(val)})
		}
	}
	if sawLocation && !sawStatus {
		h.status = http.StatusFound
	}
	return h
}

// validName reports whether b is an HTTP field name (an RFC 9110 token).
func validName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// headerSafe drops bytes that would end or split a header line.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

func msFloat(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
