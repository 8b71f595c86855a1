package httpgateway

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// response turns php-fpm's STDOUT stream into the HTTP response. It is the
// Stdout of the request's exchange, so it sees the stream record by record:
// it reads the CGI head (of any line length, up to MaxHeaderBytes), then
// holds back up to HoldBytes of the body, then streams, flushing after every
// record so that streamed pages arrive as PHP flushes them.
type response struct {
	g  *Gateway
	w  http.ResponseWriter
	rc *http.ResponseController
	t  *outcome.Trace

	head      cgi.Scanner
	hold      []byte
	committed bool // the HTTP headers went to the client
}

// clientGone is the error of a failed write to the HTTP client.
func clientGone(err error) error {
	return fmt.Errorf("%w: writing to the client: %w", outcome.ErrClientAborted, err)
}

// Write takes one STDOUT record's content.
func (res *response) Write(p []byte) (int, error) {
	ended := res.head.Ended()
	body := res.head.Feed(p)
	if !res.head.Ended() {
		if res.head.Done() {
			return 0, &outcome.HeadTooLongError{Limit: res.g.maxHeaderBytes()}
		}
		return len(p), nil
	}
	if !ended && (res.g.HoldBytes <= 0 || res.head.Head().Streaming) {
		if err := res.commit(); err != nil {
			return 0, err
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
	head := res.head.Head()
	res.writeHeader(head)
	res.t.BytesOut += int64(head.Len)
	hold := res.hold
	res.hold = nil
	if len(hold) > 0 {
		return res.writeBody(hold)
	}
	if err := res.rc.Flush(); err != nil {
		return clientGone(err)
	}
	return nil
}

// writeHeader sends the status and the headers of head, with those every
// PHP response gets.
func (res *response) writeHeader(head *cgi.Head) {
	t := res.t
	h := res.w.Header()
	for _, f := range head.Fields {
		if !validName(f.Name) {
			continue
		}
		if key := http.CanonicalHeaderKey(f.Name); !dropHeaders[key] {
			h.Add(key, headerSafe(f.Value))
		}
	}
	h.Set("X-Fcgiscope-Request-Id", headerSafe(t.RequestID))
	if res.g.ServerTiming && !t.DialEnd.IsZero() {
		h.Add("Server-Timing", cgi.ServerTiming(t.ConnectTime(), t.UpstreamWait()))
	}
	status := head.Status
	if status < 200 {
		// net/http sends a 1xx as an interim response and then a 200 of
		// its own; nginx would pass the status on as it is.
		status = http.StatusOK
	}
	res.w.WriteHeader(status)
	res.committed = true
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
		return clientGone(err)
	}
	return nil
}

// replace answers for a failed request that sent nothing to the client yet.
func (res *response) replace() {
	t := res.t
	var rep cgi.Reply
	if r := res.g.Responder; r != nil {
		rep = r.Respond(t)
	} else {
		rep = cgi.PlainReply(t.Err, t.RequestID)
	}
	res.send(rep)
}

// review shows the developer what PHP reported of a response held back
// whole: the Reviewer's page in place of an empty body, its banner at the
// top of an HTML page, and the cause's header on any.
func (res *response) review(rv Reviewer) {
	cause, page, banner := rv.Review(res.t)
	if cause == "" {
		return
	}
	if len(bytes.TrimSpace(res.hold)) == 0 {
		res.send(page)
		return
	}
	res.w.Header().Set("X-Fcgiscope-Cause", headerSafe(cause))
	head := res.head.Head()
	if len(banner) == 0 || !strings.HasPrefix(strings.ToLower(head.ContentType), "text/html") {
		return
	}
	res.hold = withBanner(res.hold, banner)
	// The page grew: a Content-Length php-fpm sent no longer holds.
	fields := head.Fields[:0]
	for _, f := range head.Fields {
		if !strings.EqualFold(f.Name, "Content-Length") {
			fields = append(fields, f)
		}
	}
	head.Fields = fields
}

// withBanner puts banner just inside the page's <body>, or first when the
// page has none.
func withBanner(page, banner []byte) []byte {
	at := 0
	if i := bytes.Index(bytes.ToLower(page), []byte("<body")); i >= 0 {
		if j := bytes.IndexByte(page[i:], '>'); j >= 0 {
			at = i + j + 1
		}
	}
	out := make([]byte, 0, len(page)+len(banner))
	out = append(out, page[:at]...)
	out = append(out, banner...)
	return append(out, page[at:]...)
}

// send writes rep, a whole CGI response of fcgiscope's, in place of
// php-fpm's.
func (res *response) send(rep cgi.Reply) {
	t := res.t
	end, bodyStart := cgi.HeadEnd(rep.CGI, 0)
	if end < 0 {
		end, bodyStart = len(rep.CGI), len(rep.CGI)
	}
	head := cgi.ParseHead(rep.CGI[:end])
	t.Status, t.ContentType = head.Status, head.ContentType
	t.Replaced = true
	res.writeHeader(&head)
	// rep.LogLine is for nginx's error log; the access log line says the
	// same and more.
	if _, err := res.w.Write(rep.CGI[bodyStart:]); err == nil {
		t.BytesOut += int64(len(rep.CGI))
	}
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

// validName reports whether s is an HTTP field name (an RFC 9110 token).
func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
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
