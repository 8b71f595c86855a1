package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// peakRSS returns the most memory the process pid has had resident
// (VmHWM), in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// rssBound is the growth of fcgiscope's peak memory a flooding request may
// cause: what one request holds back (FCGISCOPE_HOLD_BYTES, a head of
// FCGISCOPE_MAX_HEADER_BYTES and a record, about 200 KiB with the
// defaults) and the buffers of a busy Go process, with room for the
// garbage collector's pacing.
const rssBound = 24 << 20

// Whatever shape the upstream's output takes before and around the
// response (a flood of stderr, padded empty records), fcgiscope holds a
// bounded amount of it, and the response arrives whole.
func TestFloodFromTheUpstreamHoldsBoundedMemory(t *testing.T) {
	const flood = 100 << 20
	chunk := bytes.Repeat([]byte("x"), 8000)
	shapes := []struct {
		name    string
		respond func(w *fcgi.Writer, id uint16)
	}{
		{"stderr before the headers", func(w *fcgi.Writer, id uint16) {
			for n := 0; n < flood; n += len(chunk) {
				w.WriteStream(fcgi.TypeStderr, id, chunk)
			}
			w.WriteStream(fcgi.TypeStdout, id, []byte("Content-Type: text/plain\r\n\r\nafter the flood\n"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
		}},
		{"stderr inside the held response", func(w *fcgi.Writer, id uint16) {
			w.WriteStream(fcgi.TypeStdout, id, []byte("Content-Type: text/plain\r\n\r\nbefore "))
			for n := 0; n < flood; n += len(chunk) {
				w.WriteStream(fcgi.TypeStderr, id, chunk)
			}
			w.WriteStream(fcgi.TypeStdout, id, []byte("after the flood\n"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
		}},
		{"padded empty records", func(w *fcgi.Writer, id uint16) {
			empty := append([]byte{1, byte(fcgi.TypeStderr), byte(id >> 8), byte(id), 0, 0, 255, 0}, make([]byte, 255)...)
			for range 400_000 {
				w.WriteRaw(empty)
			}
			w.WriteStream(fcgi.TypeStdout, id, []byte("Content-Type: text/plain\r\n\r\nafter the flood\n"))
			w.EndStream(fcgi.TypeStdout, id)
			w.WriteEndRequest(id, fcgi.EndRequest{})
		}},
	}
	for _, shape := range shapes {
		t.Run(shape.name, func(t *testing.T) {
			up := fakeFastCGI(t, shape.respond)
			listen := "unix:" + testbed.ShortTempDir(t) + "/fcgiscope.sock"
			p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN="+listen, "FCGISCOPE_UPSTREAM="+up, "FCGISCOPE_FPM_CONFIG=/nonexistent", "FCGISCOPE_NGINX_CONFIG=-")
			addr, _ := fcgi.ParseAddr(listen)
			before := peakRSS(t, p.Pid)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			resp, err := fcgitest.Do(ctx, addr, fcgitest.NewRequest("SCRIPT_FILENAME", "/srv/flood.php", "REQUEST_URI", "/flood.php"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasSuffix(resp.Stdout, []byte("after the flood\n")) {
				t.Errorf("the response did not arrive whole: %q", tail(resp.Stdout, 100))
			}
			if len(resp.Stderr) < 8000 && shape.name != "padded empty records" {
				t.Errorf("only %d bytes of stderr arrived", len(resp.Stderr))
			}
			if grew := peakRSS(t, p.Pid) - before; grew > rssBound {
				t.Errorf("fcgiscope's peak memory grew by %d MiB for one request, bound %d MiB", grew>>20, rssBound>>20)
			} else {
				t.Logf("peak memory grew by %.1f MiB (bound %d MiB)", float64(grew)/(1<<20), rssBound>>20)
			}
		})
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// A script that writes 200,000 lines to stderr before its output, through
// nginx: fcgiscope's memory stays bounded, and nginx serves the page as it
// would without fcgiscope.
func TestStderrFloodFromPHPHoldsBoundedMemory(t *testing.T) {
	testbed.RequireFPM(t)
	fpm := testbed.StartFPM(t, testbed.FPMConfig{})
	s := startFailStack(t, "unix", fpm.Addr, "FCGISCOPE_FPM_CONFIG="+fpm.ConfigPath)
	before := peakRSS(t, s.fcgiscope.Pid)
	resp, err := http.Get(s.nginx.URL + "/stderrflood.php?n=200000")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "flooded 200000\n" {
		t.Errorf("got %d %q, want the page", resp.StatusCode, body)
	}
	if grew := peakRSS(t, s.fcgiscope.Pid) - before; grew > rssBound {
		t.Errorf("fcgiscope's peak memory grew by %d MiB, bound %d MiB", grew>>20, rssBound>>20)
	} else {
		t.Logf("peak memory grew by %.1f MiB (bound %d MiB)", float64(grew)/(1<<20), rssBound>>20)
	}
}
