package bench

import (
	"encoding/hex"
	"testing"
	"time"
)

// newBenchWorker returns a worker of a run against f, ready for roundTrip.
func newBenchWorker(tb testing.TB, f *fakeFCGI, cfg Config) *worker {
	tb.Helper()
	cfg.Upstream, cfg.Script, cfg.Concurrency, cfg.Requests = f.addr, "/srv/www/hello.php", 1, 1
	cfg, err := cfg.withDefaults()
	if err != nil {
		tb.Fatal(err)
	}
	r := newRunner(cfg)
	r.beginMeasure()
	w := r.workers[0]
	tb.Cleanup(func() { w.finish(); r.cancel() })
	return w
}

// request is one measured request of the worker's loop: the round trip and
// its accounting.
func (w *worker) request(tb testing.TB) {
	start := time.Now()
	c, err := w.roundTrip(start)
	if c != causeOK {
		tb.Fatalf("request failed: %s: %v", causeName(c, err), err)
	}
	w.stats.record(w, c, err, time.Since(start))
}

var benchConfigs = []struct {
	name string
	cfg  Config
}{
	{"keep-conn", Config{KeepConn: true, ExpectBodyPrefix: "hello from php"}},
	{"keep-conn+sha256", Config{KeepConn: true, ExpectBodySHA256: hex.EncodeToString(sha(helloBody))}},
	{"keep-conn+body-4KiB", Config{KeepConn: true, BodySize: 4096, ExpectBodyPrefix: "hello"}},
	{"new-conn", Config{ExpectBodyPrefix: "hello from php"}},
}

// BenchmarkRequest measures the per-request path of a worker (send the
// encoded request, read and validate the response, record the latency)
// against the in-process fake responder on a unix socket. The fake costs
// nothing in allocations over a kept connection, so allocs/op is the
// generator's own; without keep-conn it includes dialling and accepting.
func BenchmarkRequest(b *testing.B) {
	for _, bc := range benchConfigs {
		b.Run(bc.name, func(b *testing.B) {
			f := startFake(b, "unix", fakeOK, helloResponse)
			w := newBenchWorker(b, f, bc.cfg)
			w.request(b) // connect and size the buffers
			b.ReportAllocs()
			for b.Loop() {
				w.request(b)
			}
		})
	}
}

func TestRequestOverKeptConnectionDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	for _, bc := range benchConfigs[:3] {
		t.Run(bc.name, func(t *testing.T) {
			f := startFake(t, "unix", fakeOK, helloResponse)
			w := newBenchWorker(t, f, bc.cfg)
			w.request(t)
			if allocs := testing.AllocsPerRun(2000, func() { w.request(t) }); allocs != 0 {
				t.Errorf("%v allocations per request over a kept connection, want 0", allocs)
			}
		})
	}
}
