package e2e

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
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
		{"a header line nginx refuses", func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStdout, id, []byte("Hello world\r\nContent-Type: text/html\r\n\r\nbody"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
		}, "upstream_invalid_header", 502, `"Hello world"`},
		{"a Status without a status", func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStdout, id, []byte("Status: OK\r\n\r\nbody"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
		}, "upstream_invalid_header", 502, `"Status: OK"`},
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

// The heads fcgiscope calls invalid are the ones nginx itself refuses, and
// the odd ones nginx takes pass through fcgiscope untouched: checked
// against nginx with nothing between it and the upstream.
func TestInvalidHeaderLinesAreTheOnesNginxRefuses(t *testing.T) {
	testbed.RequireNginx(t)
	for _, tt := range []struct {
		head    string
		refused bool
	}{
		{"Hello world\r\nContent-Type: text/html\r\n", true},
		{"Status: OK\r\n", true},
		{"X-Broken: a\rb\r\n", true},
		{"NoColonAtAll\r\nContent-Type: text/html\r\n", false},
		{"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n", false},
		{"X_Under_Score: ok\r\nContent-Type: text/html\r\n", false},
	} {
		up := fakeFastCGI(t, func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStdout, id, []byte(tt.head+"\r\nthe body"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
		})
		direct := testbed.StartNginx(t, testbed.NginxConfig{FastCGIPass: up})
		resp, err := http.Get(direct.URL + "/hello.php")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if nginxRefused := resp.StatusCode == 502; nginxRefused != tt.refused {
			t.Errorf("%q: nginx alone answered %d; the test expects it to refuse: %v", tt.head, resp.StatusCode, tt.refused)
			continue
		}
		s := startFailStack(t, "tcp", up)
		resp, err = http.Get(s.nginx.URL + "/hello.php")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cause := resp.Header.Get("X-Fcgiscope-Cause")
		switch {
		case tt.refused && (resp.StatusCode != 502 || cause != "upstream_invalid_header"):
			t.Errorf("%q: through fcgiscope %d %q, want 502 upstream_invalid_header", tt.head, resp.StatusCode, cause)
		case !tt.refused && (resp.StatusCode != 200 || cause != "" || string(body) != "the body"):
			t.Errorf("%q: through fcgiscope %d %q %q, want it passed through as nginx takes it", tt.head, resp.StatusCode, cause, body)
		}
	}
}
