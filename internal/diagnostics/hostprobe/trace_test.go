package hostprobe_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// A failed probe is explained with the cause a request sent there would
// get, as doctor and /readyz report it.
func TestTraceOfAFailedProbeGetsTheCauseOfARequest(t *testing.T) {
	addr := fcgi.Addr{Network: "unix", Address: "/run/php/gone.sock"}
	refused := &outcome.DialError{Addr: addr, Err: &net.OpError{Op: "dial", Net: "unix", Err: os.NewSyscallError("connect", syscall.ENOENT)}}
	for _, tt := range []struct {
		err   error
		cause *diagnostics.Cause
	}{
		{fmt.Errorf("hostprobe: probing %s: %w", addr, refused), diagnostics.CauseSocketMissing},
		{fmt.Errorf("%w in time: %w", hostprobe.ErrNoAnswer, os.ErrDeadlineExceeded), diagnostics.CauseReadTimeout},
		{fmt.Errorf("%w: %w", hostprobe.ErrNoAnswer, outcome.ErrNoEndRequest), diagnostics.CauseWorkerDied},
		{&hostprobe.NotFastCGIError{Err: &fcgi.VersionError{Header: [8]byte{'H', 'T', 'T', 'P', '/', '1', '.', '1'}}}, diagnostics.CauseNotFastCGI},
		{&hostprobe.NotFastCGIError{Err: io.ErrUnexpectedEOF}, diagnostics.CauseProtocolError},
		{errors.New("something else"), diagnostics.CauseUnexplained},
	} {
		start := time.Now()
		tr := hostprobe.Trace(addr, tt.err, start, 2*time.Second)
		if tr.Upstream != addr || tr.Accepted != start || tr.End.IsZero() {
			t.Errorf("%v: trace %+v", tt.err, tr)
		}
		d := (&diagnostics.Classifier{}).Diagnose(tr)
		if d == nil || d.Cause != tt.cause {
			t.Errorf("%v: %v, want %s", tt.err, d, tt.cause.ID)
		}
	}
}
