package outcome

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

func TestPhaseIsHowFarTheRequestGot(t *testing.T) {
	now := time.Now()
	tests := []struct {
		trace Trace
		want  Phase
	}{
		{Trace{Accepted: now}, PhaseParams},
		{Trace{Accepted: now, ParamsDone: now, QueueStart: now}, PhaseQueued},
		{Trace{Accepted: now, ParamsDone: now, DialStart: now}, PhaseConnect},
		{Trace{Accepted: now, ParamsDone: now, DialStart: now, DialEnd: now}, PhaseSending},
		{Trace{Accepted: now, ParamsDone: now, DialStart: now, DialEnd: now, StdinDone: now}, PhaseWaiting},
		{Trace{Accepted: now, ParamsDone: now, DialStart: now, DialEnd: now, StdinDone: now, FirstByte: now}, PhaseStreaming},
	}
	for _, tt := range tests {
		if got := tt.trace.Phase(); got != tt.want {
			t.Errorf("%+v: phase %s, want %s", tt.trace, got, tt.want)
		}
	}
}

func TestEndErrorReadsEndRequestAsNginxWould(t *testing.T) {
	var re *RejectedError
	if err := EndError(fcgi.EndRequest{ProtocolStatus: fcgi.StatusOverloaded}, true, 10); !errors.As(err, &re) || re.Status != fcgi.StatusOverloaded {
		t.Errorf("OVERLOADED: %v", err)
	}
	if err := EndError(fcgi.EndRequest{}, true, 10); err != nil {
		t.Errorf("a whole response: %v", err)
	}
	for stdout, want := range map[int64]string{0: "without any STDOUT", 25: "after 25 STDOUT bytes"} {
		var pe *ProtocolError
		if err := EndError(fcgi.EndRequest{}, false, stdout); !errors.As(err, &pe) || !pe.Upstream || !strings.Contains(pe.Reason, want) {
			t.Errorf("no head after %d bytes: %v", stdout, err)
		}
	}
}

func TestUpstreamReadErrorNamesWhatHappened(t *testing.T) {
	ve := &fcgi.VersionError{Header: [8]byte{'H', 'T', 'T', 'P'}}
	if err := UpstreamReadError(ve, time.Second); err != ve {
		t.Errorf("a stream that is not FastCGI became %v", err)
	}
	var rte *ReadTimeoutError
	if err := UpstreamReadError(os.ErrDeadlineExceeded, 3*time.Second); !errors.As(err, &rte) || rte.Timeout != 3*time.Second {
		t.Errorf("a deadline: %v", err)
	}
	if err := UpstreamReadError(io.EOF, 0); !errors.Is(err, ErrNoEndRequest) || !errors.Is(err, io.EOF) {
		t.Errorf("a close: %v", err)
	}
	// Without a read timeout of its own, a deadline is someone else's:
	// the connection ended under the request.
	if err := UpstreamReadError(os.ErrDeadlineExceeded, 0); !errors.Is(err, ErrNoEndRequest) {
		t.Errorf("a deadline without a read timeout: %v", err)
	}
}

func TestNoteParamPrefersREQUEST_ID(t *testing.T) {
	for _, order := range [][2]string{{"REQUEST_ID", "HTTP_X_REQUEST_ID"}, {"HTTP_X_REQUEST_ID", "REQUEST_ID"}} {
		var tr Trace
		for _, name := range order {
			tr.NoteParam(name, name)
		}
		if tr.RequestID != "REQUEST_ID" {
			t.Errorf("order %v: request id %q", order, tr.RequestID)
		}
	}
	var tr Trace
	if tr.NoteParam("HTTP_COOKIE", "secret") || !tr.NoteParam("SCRIPT_FILENAME", "/x.php") || tr.Script != "/x.php" {
		t.Errorf("NoteParam keeps what it should not, or not what it should: %+v", tr)
	}
}

func TestNoteStderrKeepsTheStartAndCountsAll(t *testing.T) {
	var tr Trace
	tr.NoteStderr([]byte("abcdef"), 4)
	tr.NoteStderr([]byte("gh"), 4)
	if string(tr.Stderr) != "abcd" || tr.StderrBytes != 8 {
		t.Errorf("stderr %q, %d bytes", tr.Stderr, tr.StderrBytes)
	}
	if !tr.NoteStdout(3) || tr.NoteStdout(2) || tr.UpstreamBytes != 5 || tr.FirstByte.IsZero() {
		t.Errorf("stdout: first byte %v, %d bytes", tr.FirstByte, tr.UpstreamBytes)
	}
}
