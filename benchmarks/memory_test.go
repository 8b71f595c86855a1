package benchmarks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgitest"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
	"github.com/fcgiscope/fcgiscope/internal/testbed"
)

// procStatus reads a field such as VmRSS or VmHWM (in KiB) of a process.
func procStatus(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestIdleKeptAliveConnectionsMemory opens 10,000 downstream connections
// that send nothing, as nginx's idle keep-alive connections do, and reports
// fcgiscope's resident memory per connection.
func TestIdleKeptAliveConnectionsMemory(t *testing.T) {
	if os.Getenv("FCGISCOPE_BENCH") != "1" {
		t.Skip("benchmarks run with make bench (FCGISCOPE_BENCH=1)")
	}
	const n = 10000
	sock := filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+sock, "FCGISCOPE_UPSTREAM=unix:/nonexistent.sock", "FCGISCOPE_FPM_CONFIG=/nonexistent")
	time.Sleep(200 * time.Millisecond)
	before := procStatus(t, p.Pid, "VmRSS")
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for len(conns) < n {
		c, err := net.Dial("unix", sock)
		if errors.Is(err, syscall.EAGAIN) {
			// The listen queue is full for a moment: fcgiscope
			// accepts more slowly than this loop connects.
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("after %d connections: %v (raise ulimit -n)", len(conns), err)
		}
		conns = append(conns, c)
	}
	time.Sleep(time.Second)
	after := procStatus(t, p.Pid, "VmRSS")
	per := float64(after-before) * 1024 / n
	report := fmt.Sprintf("idle downstream connections: %d, RSS %d KiB -> %d KiB, %.1f KiB per connection", n, before, after, per/1024)
	fmt.Println(report)
	writeResults(t, "idle", map[string]any{"connections": n, "rss_before_kib": before, "rss_after_kib": after, "bytes_per_conn": per}, report)
}

// fastUpstream is a FastCGI application that reads the whole body and then
// answers with size bytes of body, as fast as the sockets allow.
func fastUpstream(t *testing.T, size int64) string {
	return fcgitest.Serve(t, func(c net.Conn) {
		id, err := fcgitest.DiscardRequest(fcgi.NewReader(c))
		if err != nil {
			return
		}
		w := fcgi.NewWriter(c)
		w.WriteStream(fcgi.TypeStdout, id, []byte("Content-Type: application/octet-stream\r\n\r\n"))
		chunk := make([]byte, fcgi.MaxWriteContent)
		for left := size; left > 0; left -= int64(len(chunk)) {
			w.WriteStream(fcgi.TypeStdout, id, chunk[:min(int64(len(chunk)), left)])
		}
		w.EndStream(fcgi.TypeStdout, id)
		w.WriteEndRequest(id, fcgi.EndRequest{})
		w.Flush()
	}).String()
}

// rawCopyRate measures io.Copy of size bytes between two unix sockets: the
// machine's limit for moving bytes through a process.
func rawCopyRate(t *testing.T, size int64) float64 {
	dir := testbed.ShortTempDir(t)
	ln, _ := net.Listen("unix", filepath.Join(dir, "sink.sock"))
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	src, _ := net.Listen("unix", filepath.Join(dir, "src.sock"))
	defer src.Close()
	go func() {
		c, err := net.Dial("unix", filepath.Join(dir, "src.sock"))
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for left := size; left > 0; left -= int64(len(buf)) {
			c.Write(buf[:min(int64(len(buf)), left)])
		}
		c.Close()
	}()
	in, _ := src.Accept()
	out, _ := net.Dial("unix", filepath.Join(dir, "sink.sock"))
	start := time.Now()
	io.Copy(out, in)
	out.Close()
	return float64(size) / time.Since(start).Seconds()
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

type zeroReader struct{ left int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	return n, nil
}

// TestStreamingOneGiB sends a 1 GiB request body and receives a 1 GiB
// response through fcgiscope, and reports throughput next to a plain copy
// between two sockets, and fcgiscope's peak resident memory.
func TestStreamingOneGiB(t *testing.T) {
	if os.Getenv("FCGISCOPE_BENCH") != "1" {
		t.Skip("benchmarks run with make bench (FCGISCOPE_BENCH=1)")
	}
	const size = 1 << 30
	up := fastUpstream(t, size)
	sock := filepath.Join(testbed.ShortTempDir(t), "fcgiscope.sock")
	p := testbed.StartFcgiscope(t, "FCGISCOPE_LISTEN=unix:"+sock, "FCGISCOPE_UPSTREAM="+up, "FCGISCOPE_FPM_CONFIG=/nonexistent")
	time.Sleep(200 * time.Millisecond)
	rssBefore := procStatus(t, p.Pid, "VmRSS")

	raw := rawCopyRate(t, size)
	var out countingWriter
	start := time.Now()
	var tr outcome.Trace
	exchange.Do(context.Background(), &exchange.Request{Upstream: fcgi.Addr{Network: "unix", Address: sock},
		Params: []fcgi.Pair{{Name: "REQUEST_METHOD", Value: "POST"}}, Body: &zeroReader{left: size}, Stdout: &out}, &tr)
	elapsed := time.Since(start)
	if tr.Err != nil {
		t.Fatal(tr.Err)
	}
	peak := procStatus(t, p.Pid, "VmHWM")
	rate := float64(2*size) / elapsed.Seconds() // a body in and a response out
	report := fmt.Sprintf("streaming 1 GiB up and 1 GiB down through fcgiscope: %.2f GiB/s (both directions together) vs raw socket copy %.2f GiB/s (one direction): ratio %.2f; RSS %d KiB at rest, peak %d KiB (growth %.1f MiB)",
		rate/(1<<30), raw/(1<<30), rate/raw, rssBefore, peak, float64(peak-rssBefore)/1024)
	fmt.Println(report)
	if out.n < size {
		t.Errorf("got %d response bytes, want at least %d", out.n, size)
	}
	writeResults(t, "streaming", map[string]any{"bytes_each_way": size, "seconds": elapsed.Seconds(), "raw_copy_bytes_per_s": raw, "rss_kib": rssBefore, "peak_rss_kib": peak}, report)
}
