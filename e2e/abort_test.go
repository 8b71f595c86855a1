package e2e

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// abortExchange sends a request whose body is cut short by ABORT_REQUEST
// (during), or a whole request followed by an ABORT_REQUEST (after) or by
// a half-close of the connection (half-close), and
// returns the records that come back up to END_REQUEST, as "TYPE content"
// lines.
func abortExchange(t *testing.T, network, address, root, when string) []string {
	t.Helper()
	c, err := net.Dial(network, address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := fcgi.NewWriter(c)
	w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder, Flags: fcgi.FlagKeepConn})
	script := "/echo.php"
	if when != "during" {
		script = "/sleep.php"
	}
	var p []byte
	for _, kv := range [][2]string{{"SCRIPT_FILENAME", root + script}, {"REQUEST_METHOD", "POST"}, {"CONTENT_LENGTH", "100"}, {"QUERY_STRING", "s=0.5"}} {
		p = fcgi.AppendPair(p, kv[0], kv[1])
	}
	w.WriteStream(fcgi.TypeParams, 1, p)
	w.EndStream(fcgi.TypeParams, 1)
	if when == "during" {
		w.WriteStream(fcgi.TypeStdin, 1, make([]byte, 10)) // of 100
	} else {
		w.WriteStream(fcgi.TypeStdin, 1, make([]byte, 100))
		w.EndStream(fcgi.TypeStdin, 1)
	}
	w.Flush()
	time.Sleep(100 * time.Millisecond)
	if when == "half-close" {
		if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
			t.Fatal(err)
		}
	} else {
		w.WriteRecord(fcgi.TypeAbortRequest, 1, nil)
		w.Flush()
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := fcgi.NewReader(c)
	var got []string
	for {
		h, err := r.Next()
		if err != nil {
			return append(got, "error: "+err.Error())
		}
		if h.Type == fcgi.TypeStdout && len(r.Content()) == 0 {
			continue // stream ends are framed differently, not answered differently
		}
		if h.Type == fcgi.TypeEndRequest {
			// php-fpm leaves the reserved bytes as they happen to be.
			end, err := fcgi.ParseEndRequest(r.Content())
			if err != nil {
				t.Fatal(err)
			}
			return append(got, fmt.Sprintf("END_REQUEST app status %d, protocol status %d", end.AppStatus, end.ProtocolStatus))
		}
		got = append(got, fmt.Sprintf("%s %q", h.Type, r.Content()))
	}
}

// ABORT_REQUEST and a half-close get the answer php-fpm itself gives:
// during the body, the script runs with what came and END_REQUEST follows;
// after the body, the script runs on and its response comes whole, to a
// client that half-closed too.
func TestAbortRequestIsAnsweredAsPHPFPMAnswersIt(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	root := testbed.PHPRoot(t)
	listen := "unix:" + testbed.ShortTempDir(t) + "/fcgiscope.sock"
	testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	relay, _ := fcgi.ParseAddr(listen)
	// The same over TCP, where a half-close and a close send the same FIN.
	tcp := fmt.Sprintf("127.0.0.1:%d", testbed.FreePort(t))
	testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+tcp, "FCGISCOPE_UPSTREAM="+fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	for _, down := range []fcgi.Addr{relay, {Network: "tcp", Address: tcp}} {
		for _, when := range []string{"during", "after", "half-close"} {
			t.Run(down.Network+" "+when, func(t *testing.T) {
				direct := abortExchange(t, fpm.Network, fpm.Address, root, when)
				through := abortExchange(t, down.Network, down.Address, root, when)
				if fmt.Sprint(direct) != fmt.Sprint(through) {
					t.Errorf("php-fpm answers\n  %q\nthrough fcgiscope\n  %q", direct, through)
				}
				if len(through) == 0 || through[len(through)-1] != "END_REQUEST app status 0, protocol status 0" {
					t.Errorf("no END_REQUEST: %q", through)
				}
			})
		}
	}
}

// php-fpm drops a request it cannot take without a record (a role it does
// not play, params longer than one record); through fcgiscope the client
// learns why.
func TestRequestsPHPFPMRejectsAreExplained(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	listen := "unix:" + testbed.ShortTempDir(t) + "/fcgiscope.sock"
	testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	relay, _ := fcgi.ParseAddr(listen)
	// From loopback, for the whole explanation.
	script := fcgi.AppendPair(fcgi.AppendPair(nil, "SCRIPT_FILENAME", testbed.PHPRoot(t)+"/hello.php"), "REMOTE_ADDR", "127.0.0.1")
	huge := script
	for i := range 20000 {
		huge = fcgi.AppendPair(huge, fmt.Sprintf("HTTP_X_%d", i), "v")
	}
	for _, tt := range []struct {
		name   string
		role   fcgi.Role
		params []byte
		why    string
	}{
		{"role 999", fcgi.Role(999), script, "RESPONDER"},
		{"params longer than a record", fcgi.RoleResponder, huge, "one FastCGI record"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			stdout := rawExchange(t, relay, fcgi.BeginRequest{Role: tt.role}, tt.params)
			if !bytes.Contains(stdout, []byte("Status: 502")) || !bytes.Contains(stdout, []byte("upstream_rejected_request")) || !bytes.Contains(stdout, []byte(tt.why)) {
				t.Errorf("the answer does not explain the rejection:\n%s", stdout)
			}
		})
	}
}

// rawExchange sends one request with params p and an empty body, and
// returns its STDOUT once END_REQUEST came.
func rawExchange(t *testing.T, addr fcgi.Addr, b fcgi.BeginRequest, p []byte) []byte {
	t.Helper()
	c, err := net.Dial(addr.Network, addr.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := fcgi.NewWriter(c)
	w.WriteBeginRequest(1, b)
	w.WriteStream(fcgi.TypeParams, 1, p)
	w.EndStream(fcgi.TypeParams, 1)
	w.EndStream(fcgi.TypeStdin, 1)
	w.Flush()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	r := fcgi.NewReader(c)
	var stdout []byte
	for {
		h, err := r.Next()
		if err != nil {
			t.Fatalf("no END_REQUEST: %v (stdout %q)", err, stdout)
		}
		if h.Type == fcgi.TypeStdout {
			stdout = append(stdout, r.Content()...)
		}
		if h.Type == fcgi.TypeEndRequest {
			return stdout
		}
	}
}
