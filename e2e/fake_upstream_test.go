package e2e

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
)

// fakeFastCGI serves FastCGI on a unix socket: it reads each request whole
// and answers it with respond. It stands in for upstream behaviour php-fpm
// cannot be made to show.
func fakeFastCGI(t *testing.T, respond func(w *fcgi.Writer, id uint16)) string {
	t.Helper()
	return fcgitest.Serve(t, func(c net.Conn) {
		id, err := fcgitest.DiscardRequest(fcgi.NewReader(c))
		if err != nil {
			return
		}
		w := fcgi.NewWriter(c)
		respond(w, id)
		w.Flush()
	}).String()
}

func TestUpstreamsThatBreakTheProtocol(t *testing.T) {
	tests := []struct {
		name    string
		respond func(w *fcgi.Writer, id uint16)
		cause   string
		status  int
		detail  string
	}{
		{"OVERLOADED", func(w *fcgi.Writer, id uint16) {
			w.WriteEndRequest(id, fcgi.EndRequest{ProtocolStatus: fcgi.StatusOverloaded})
		}, "upstream_overloaded", 503, "OVERLOADED"},
		{"END_REQUEST without STDOUT", func(w *fcgi.Writer, id uint16) {
			w.WriteEndRequest(id, fcgi.EndRequest{})
		}, "upstream_protocol_error", 502, "without any STDOUT"},
		{"headers that never end", func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStdout, id, []byte("Content-Type: text/html\r\nX-Half: a header and no blank line"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
		}, "upstream_protocol_error", 502, "CGI headers"},
		{"endless headers", func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStdout, id, bytes.Repeat([]byte("X-Filler: 0123456789abcdef0123456789abcdef\r\n"), 3000))
		}, "upstream_protocol_error", 502, "did not end within"},
		{"undefined record type", func(w *fcgi.Writer, id uint16) {
			w.WriteRecord(fcgi.RecordType(42), id, []byte("junk"))
		}, "upstream_protocol_error", 502, "type(42)"},
		{"garbage after a valid record", func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStderr, id, []byte("starting\n"))
			w.WriteRaw([]byte("\x07garbage-garbage"))
		}, "upstream_protocol_error", 502, "version"},
		{"wrong request id", func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStdout, id+1, []byte("Status: 200\r\n\r\nsomeone else's page"))
		}, "upstream_protocol_error", 502, "request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startFailStack(t, "tcp", fakeFastCGI(t, tt.respond))
			e := s.getProblem(t, "/hello.php", tt.cause, tt.status)
			if !strings.Contains(e.problem.Detail, tt.detail) {
				t.Errorf("detail %q does not mention %q", e.problem.Detail, tt.detail)
			}
		})
	}
}
