package exchange_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// TestMain fails the tests when a goroutine outlives them: an exchange that
// leaked its body sender would leak one per request of the gateway.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// do runs one exchange and returns its Trace and STDOUT.
func do(ctx context.Context, req *exchange.Request) (*outcome.Trace, string) {
	var out bytes.Buffer
	if req.Stdout == nil {
		req.Stdout = &out
	}
	t := &outcome.Trace{}
	exchange.Do(ctx, req, t)
	return t, out.String()
}

// sha256App answers a request with the SHA-256 of its body and its params
// on STDOUT, in two records with FCGI_STDERR between them, and the app
// status given in the APP_STATUS param.
func sha256App(t *testing.T) func(net.Conn) {
	return func(conn net.Conn) {
		r := fcgi.NewReader(conn)
		id, params, body, err := fcgitest.ReadRequest(r)
		if err != nil {
			t.Errorf("fake: %v", err)
			return
		}
		sum := sha256.Sum256(body)
		var out bytes.Buffer
		out.WriteString("Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n")
		fmt.Fprintf(&out, "sha256=%s\nstdin=%d\n", hex.EncodeToString(sum[:]), len(body))
		fmt.Fprintf(&out, "SCRIPT_FILENAME=%s\n", params["SCRIPT_FILENAME"])
		status, _ := strconv.Atoi(params["APP_STATUS"])
		w := fcgi.NewWriter(conn)
		half := out.Len() / 2
		w.WriteStream(fcgi.TypeStdout, id, out.Bytes()[:half])
		w.WriteStream(fcgi.TypeStderr, id, []byte("PHP Warning: fake\n"))
		w.WriteStream(fcgi.TypeStdout, id, out.Bytes()[half:])
		w.EndStream(fcgi.TypeStdout, id)
		w.WriteEndRequest(id, fcgi.EndRequest{AppStatus: uint32(status)})
		w.Flush()
	}
}

func TestExchangeSendsBodyAndFillsTheTrace(t *testing.T) {
	addr := fcgitest.Serve(t, sha256App(t))
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i*31 + i>>8)
	}
	want := sha256.Sum256(body)
	var stderr bytes.Buffer
	tr, out := do(context.Background(), &exchange.Request{
		Upstream: addr,
		Params: []fcgi.Pair{
			{Name: "SCRIPT_FILENAME", Value: "/var/www/index.php"},
			{Name: "REQUEST_METHOD", Value: "POST"},
			{Name: "REQUEST_URI", Value: "/index.php?x=1"},
			{Name: "HTTP_X_REQUEST_ID", Value: "abc"},
			{Name: "APP_STATUS", Value: "3"},
		},
		Body:   bytes.NewReader(body),
		Stderr: &stderr,
	})
	if tr.Err != nil {
		t.Fatalf("Err = %v", tr.Err)
	}
	if !strings.Contains(out, "sha256="+hex.EncodeToString(want[:])+"\nstdin=1048576\n") {
		t.Errorf("stdout = %q", out)
	}
	if tr.Status != 201 || tr.ContentType != "text/plain" || !tr.Ended || tr.EndRequest.AppStatus != 3 {
		t.Errorf("status %d %q ended %v app status %d", tr.Status, tr.ContentType, tr.Ended, tr.EndRequest.AppStatus)
	}
	if tr.Method != "POST" || tr.Script != "/var/www/index.php" || tr.URI != "/index.php?x=1" || tr.RequestID != "abc" || tr.Upstream != addr {
		t.Errorf("request fields %+v", tr)
	}
	if string(tr.Stderr) != "PHP Warning: fake\n" || stderr.String() != "PHP Warning: fake\n" || tr.StderrBytes != 18 {
		t.Errorf("stderr %q (copied %q, %d bytes)", tr.Stderr, stderr.String(), tr.StderrBytes)
	}
	if tr.BytesIn != 1<<20 || tr.UpstreamBytes != int64(len(out)) || tr.DialAttempts != 1 {
		t.Errorf("bytes in %d, upstream bytes %d, dial attempts %d", tr.BytesIn, tr.UpstreamBytes, tr.DialAttempts)
	}
	steps := []time.Time{tr.Accepted, tr.DialStart, tr.DialEnd, tr.FirstByte, tr.End}
	for i := 1; i < len(steps); i++ {
		if steps[i].IsZero() || steps[i].Before(steps[i-1]) {
			t.Errorf("timestamps out of order: %v", steps)
		}
	}
	if tr.StdinDone.IsZero() || tr.Phase() != outcome.PhaseStreaming {
		t.Errorf("stdin done %v, phase %s", tr.StdinDone, tr.Phase())
	}
}

func TestExchangeWithoutBody(t *testing.T) {
	addr := fcgitest.Serve(t, sha256App(t))
	tr, out := do(context.Background(), &exchange.Request{Upstream: addr})
	empty := sha256.Sum256(nil)
	if tr.Err != nil || !strings.Contains(out, "sha256="+hex.EncodeToString(empty[:])) || tr.BytesIn != 0 || tr.StdinDone.IsZero() {
		t.Errorf("err %v, stdout %q, bytes in %d, stdin done %v", tr.Err, out, tr.BytesIn, tr.StdinDone)
	}
}

// endOnly answers every request with nothing but END_REQUEST.
func endOnly(t *testing.T, end fcgi.EndRequest, stdout string) func(net.Conn) {
	return func(conn net.Conn) {
		id, _, _, err := fcgitest.ReadRequest(fcgi.NewReader(conn))
		if err != nil {
			t.Errorf("fake: %v", err)
			return
		}
		w := fcgi.NewWriter(conn)
		if stdout != "" {
			w.WriteStream(fcgi.TypeStdout, id, []byte(stdout))
		}
		w.WriteEndRequest(id, end)
		w.Flush()
	}
}

func TestExchangeJudgesEndRequestAsTheRelayDoes(t *testing.T) {
	tests := []struct {
		name      string
		end       fcgi.EndRequest
		stdout    string
		forwarded bool
		check     func(error) bool
	}{
		{"overloaded", fcgi.EndRequest{ProtocolStatus: fcgi.StatusOverloaded}, "", false, func(err error) bool {
			var re *outcome.RejectedError
			return errors.As(err, &re) && re.Status == fcgi.StatusOverloaded
		}},
		{"no stdout", fcgi.EndRequest{}, "", false, func(err error) bool {
			var pe *outcome.ProtocolError
			return errors.As(err, &pe) && strings.Contains(pe.Reason, "without any STDOUT")
		}},
		{"no end of head", fcgi.EndRequest{}, "Content-Type: text/html\r\n", false, func(err error) bool {
			var pe *outcome.ProtocolError
			return errors.As(err, &pe) && strings.Contains(pe.Reason, "25 STDOUT bytes")
		}},
		{"no end of head, forwarded", fcgi.EndRequest{}, "Content-Type: text/html\r\n", true, func(err error) bool { return err == nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := fcgitest.Serve(t, endOnly(t, tt.end, tt.stdout))
			tr, _ := do(context.Background(), &exchange.Request{Upstream: addr, Forwarded: func() bool { return tt.forwarded }})
			if !tt.check(tr.Err) || !tr.Ended {
				t.Errorf("Err = %v, ended %v", tr.Err, tr.Ended)
			}
		})
	}
}

func TestExchangePeerClosesWithoutEndRequest(t *testing.T) {
	addr := fcgitest.Serve(t, func(conn net.Conn) {
		id, _, _, err := fcgitest.ReadRequest(fcgi.NewReader(conn))
		if err != nil {
			return
		}
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, id, []byte("Status: 200\r\n\r\npartial"))
		w.WriteStream(fcgi.TypeStderr, id, []byte("about to die"))
		w.Flush()
		// The worker is killed: the connection closes, no END_REQUEST.
	})
	tr, out := do(context.Background(), &exchange.Request{Upstream: addr, Body: strings.NewReader("body")})
	if !errors.Is(tr.Err, outcome.ErrNoEndRequest) {
		t.Fatalf("Err = %v, want ErrNoEndRequest", tr.Err)
	}
	if out != "Status: 200\r\n\r\npartial" || string(tr.Stderr) != "about to die" || tr.Ended {
		t.Errorf("stdout %q stderr %q ended %v", out, tr.Stderr, tr.Ended)
	}
}

func TestExchangePeerClosesInsideARecord(t *testing.T) {
	addr := fcgitest.Serve(t, func(conn net.Conn) {
		id, _, _, err := fcgitest.ReadRequest(fcgi.NewReader(conn))
		if err != nil {
			return
		}
		rec := fcgi.AppendRecord(nil, fcgi.TypeStdout, id, []byte("0123456789"))
		conn.Write(append(fcgi.AppendRecord(nil, fcgi.TypeStdout, id, []byte("whole")), rec[:12]...))
	})
	tr, out := do(context.Background(), &exchange.Request{Upstream: addr})
	if !errors.Is(tr.Err, outcome.ErrNoEndRequest) || !errors.Is(tr.Err, fcgi.ErrTruncated) {
		t.Fatalf("Err = %v, want ErrNoEndRequest and ErrTruncated", tr.Err)
	}
	if out != "whole" {
		t.Errorf("stdout = %q", out)
	}
}

func TestExchangePeerSpeaksHTTP(t *testing.T) {
	addr := fcgitest.Serve(t, func(conn net.Conn) {
		fcgitest.ReadRequest(fcgi.NewReader(conn))
		io.WriteString(conn, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	})
	tr, _ := do(context.Background(), &exchange.Request{Upstream: addr})
	var ve *fcgi.VersionError
	if !errors.As(tr.Err, &ve) || !ve.LooksLikeHTTP() || errors.Is(tr.Err, outcome.ErrNoEndRequest) {
		t.Fatalf("Err = %v, want a VersionError that looks like HTTP", tr.Err)
	}
}

func TestExchangeRecordOfAnotherRequestIsAProtocolError(t *testing.T) {
	addr := fcgitest.Serve(t, func(conn net.Conn) {
		id, _, _, _ := fcgitest.ReadRequest(fcgi.NewReader(conn))
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, id+1, []byte("NOT MINE"))
		w.Flush()
	})
	tr, _ := do(context.Background(), &exchange.Request{Upstream: addr})
	var pe *outcome.ProtocolError
	if !errors.As(tr.Err, &pe) || !pe.Upstream {
		t.Errorf("Err = %v, want an upstream ProtocolError", tr.Err)
	}
}

func TestExchangeDialErrors(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, tt := range []struct {
		addr  fcgi.Addr
		errno syscall.Errno
	}{
		{fcgi.Addr{Network: "unix", Address: filepath.Join(dir, "missing.sock")}, syscall.ENOENT},
		{fcgi.Addr{Network: "tcp", Address: refused}, syscall.ECONNREFUSED},
	} {
		tr, _ := do(context.Background(), &exchange.Request{Upstream: tt.addr, ConnectTimeout: time.Second})
		var de *outcome.DialError
		if !errors.As(tr.Err, &de) || de.Addr != tt.addr || !errors.Is(tr.Err, tt.errno) {
			t.Errorf("%s: Err = %v, want a DialError wrapping %v", tt.addr, tr.Err, tt.errno)
		}
		if !tr.DialEnd.IsZero() || tr.Phase() != outcome.PhaseConnect || tr.End.IsZero() {
			t.Errorf("%s: dial end %v phase %s end %v", tt.addr, tr.DialEnd, tr.Phase(), tr.End)
		}
	}
}

// silent reads everything and never answers.
func silent(conn net.Conn) { io.Copy(io.Discard, conn) }

func TestExchangeReadTimeout(t *testing.T) {
	addr := fcgitest.Serve(t, silent)
	start := time.Now()
	tr, _ := do(context.Background(), &exchange.Request{Upstream: addr, ReadTimeout: 100 * time.Millisecond})
	var rte *outcome.ReadTimeoutError
	if !errors.As(tr.Err, &rte) || rte.Timeout != 100*time.Millisecond {
		t.Fatalf("Err = %v, want a ReadTimeoutError of 100ms", tr.Err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("returned after %v", elapsed)
	}
}

func TestExchangeContextEndIsAClientAbort(t *testing.T) {
	addr := fcgitest.Serve(t, silent)
	ctx, cancel := context.WithCancelCause(context.Background())
	gone := errors.New("the client went away")
	time.AfterFunc(50*time.Millisecond, func() { cancel(gone) })
	tr, _ := do(ctx, &exchange.Request{Upstream: addr, Body: strings.NewReader("x")})
	if !errors.Is(tr.Err, outcome.ErrClientAborted) || !errors.Is(tr.Err, gone) {
		t.Errorf("Err = %v, want a client abort naming the cause", tr.Err)
	}
}

// answerAfterParams answers with stdout as soon as the request's params
// are in, without reading the body, as php-fpm does for a missing script.
func answerAfterParams(stdout string) func(net.Conn) {
	return func(conn net.Conn) {
		r := fcgi.NewReader(conn)
		for {
			h, err := r.Next()
			if err != nil {
				return
			}
			if h.Type == fcgi.TypeParams && h.ContentLength == 0 {
				break
			}
		}
		w := fcgi.NewWriter(conn)
		w.WriteStream(fcgi.TypeStdout, 1, []byte(stdout))
		w.EndStream(fcgi.TypeStdout, 1)
		w.WriteEndRequest(1, fcgi.EndRequest{})
		w.Flush()
	}
}

func TestExchangeAppAnswersBeforeReadingBody(t *testing.T) {
	addr := fcgitest.Serve(t, answerAfterParams("Status: 404 Not Found\r\n\r\nFile not found.\n"))
	tr, out := do(context.Background(), &exchange.Request{Upstream: addr, Body: bytes.NewReader(make([]byte, 8<<20))})
	if tr.Err != nil || tr.Status != 404 || !strings.Contains(out, "File not found.") {
		t.Errorf("err %v status %d stdout %q", tr.Err, tr.Status, out)
	}
}

// blockedBody is a request body whose Read waits until it is stopped, like
// a client that stops sending its upload.
type blockedBody struct {
	reading chan struct{} // closed when Read begins
	stop    chan struct{}
	stopped atomic.Bool
}

func (b *blockedBody) Read(p []byte) (int, error) {
	close(b.reading)
	<-b.stop
	return 0, os.ErrDeadlineExceeded
}

func TestExchangeStopsABodyReadThatWaits(t *testing.T) {
	body := &blockedBody{reading: make(chan struct{}), stop: make(chan struct{})}
	answer := answerAfterParams("Status: 413\r\n\r\n")
	// The application answers once the body's Read waits: answering
	// before it began would leave nothing to stop.
	addr := fcgitest.Serve(t, func(conn net.Conn) {
		<-body.reading
		answer(conn)
	})
	tr, _ := do(context.Background(), &exchange.Request{Upstream: addr, Body: body, StopBody: func() {
		body.stopped.Store(true)
		close(body.stop)
	}})
	if tr.Err != nil || tr.Status != 413 {
		t.Errorf("err %v status %d", tr.Err, tr.Status)
	}
	if !body.stopped.Load() || !tr.StdinDone.IsZero() {
		t.Errorf("stopped %v, stdin done %v: the waiting read was not stopped", body.stopped.Load(), tr.StdinDone)
	}
}

// failingBody fails as a client's connection does when the client leaves.
type failingBody struct{}

func (failingBody) Read([]byte) (int, error) { return 0, syscall.ECONNRESET }

func TestExchangeBodyThatFailsIsAClientAbort(t *testing.T) {
	addr := fcgitest.Serve(t, silent)
	tr, _ := do(context.Background(), &exchange.Request{Upstream: addr, Body: failingBody{}})
	if !errors.Is(tr.Err, outcome.ErrClientAborted) || !errors.Is(tr.Err, syscall.ECONNRESET) {
		t.Errorf("Err = %v, want a client abort wrapping ECONNRESET", tr.Err)
	}
}

// failingWriter fails every write.
type failingWriter struct{ err error }

func (f failingWriter) Write([]byte) (int, error) { return 0, f.err }

func TestExchangeStdoutWriterErrorEndsIt(t *testing.T) {
	addr := fcgitest.Serve(t, sha256App(t))
	boom := errors.New("disk full")
	tr, _ := do(context.Background(), &exchange.Request{Upstream: addr, Stdout: failingWriter{boom}})
	if !errors.Is(tr.Err, boom) {
		t.Errorf("Err = %v, want %v", tr.Err, boom)
	}
}
