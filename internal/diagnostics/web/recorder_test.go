package web

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/metricstest"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

func TestRingKeepsTheNewestInOrder(t *testing.T) {
	r := &Recorder{Size: 5}
	for i := 1; i <= 12; i++ {
		observe(r, okTrace(i))
	}
	got := r.list(filter{}, 100)
	var ids []string
	for _, rec := range got {
		ids = append(ids, fmt.Sprintf("%d:%s", rec.seq, rec.requestID))
	}
	want := "12:ok-12 11:ok-11 10:ok-10 9:ok-9 8:ok-8"
	if strings.Join(ids, " ") != want {
		t.Errorf("list = %v, want %s", ids, want)
	}
	if got := r.list(filter{}, 2); len(got) != 2 || got[0].seq != 12 {
		t.Errorf("limit 2: %d records, first %d", len(got), got[0].seq)
	}
	if _, ok := r.get(7); ok {
		t.Error("request 7 should have been overwritten")
	}
	if _, ok := r.get(13); ok {
		t.Error("request 13 does not exist yet")
	}
	if d, ok := r.get(8); !ok || d.rec.requestID != "ok-8" {
		t.Errorf("get(8) = %v, %v", d.rec.requestID, ok)
	}
	if d, ok := r.getRequestID("ok-10"); !ok || d.rec.seq != 10 {
		t.Errorf("getRequestID(ok-10) = %d, %v", d.rec.seq, ok)
	}
	for _, tt := range []struct {
		after uint64
		limit int
		want  []uint64
	}{
		{0, 100, []uint64{8, 9, 10, 11, 12}},
		{9, 100, []uint64{10, 11, 12}},
		{12, 100, nil},
		{0, 2, []uint64{11, 12}},
	} {
		var seqs []uint64
		for _, rec := range r.after(tt.after, tt.limit) {
			seqs = append(seqs, rec.seq)
		}
		if fmt.Sprint(seqs) != fmt.Sprint(tt.want) {
			t.Errorf("after(%d, %d) = %v, want %v", tt.after, tt.limit, seqs, tt.want)
		}
	}
}

func TestRingBoundsWhatItKeeps(t *testing.T) {
	r := &Recorder{Size: 3}
	tr := diedTrace(1)
	tr.URI = "/x.php?q=" + strings.Repeat("a", 100<<10)
	tr.Stderr = []byte(strings.Repeat("e", 10<<10))
	observe(r, tr)
	d, ok := r.get(1)
	if !ok {
		t.Fatal("request 1 not kept")
	}
	if len(d.rec.uri) != maxField {
		t.Errorf("kept %d bytes of the URI, want %d", len(d.rec.uri), maxField)
	}
	if len(d.stderr) != maxStderr {
		t.Errorf("kept %d bytes of stderr, want %d", len(d.stderr), maxStderr)
	}
	// The relay may reuse its buffer: the ring must own its copy.
	tr.Stderr[0] = 'X'
	if d, _ := r.get(1); d.stderr[0] != 'e' {
		t.Error("the ring shares the Trace's stderr buffer")
	}
	// A slot's stderr buffer is reused, not grown, when it is overwritten.
	for i := range 10 {
		observe(r, diedTrace(i))
	}
	for i := range r.slots {
		if c := cap(r.slots[i].stderr); c > maxStderr+512 {
			t.Errorf("slot %d holds a %d-byte stderr buffer", i, c)
		}
	}
}

func TestRecordAllocatesNothingForASuccessfulRequest(t *testing.T) {
	r := &Recorder{Size: 16, InFlight: func() float64 { return 1 }}
	sub, _ := r.subscribe()
	defer r.unsubscribe(sub)
	tr := okTrace(1)
	for range 64 {
		observe(r, tr)
		for len(sub.ch) > 0 {
			<-sub.ch
		}
	}
	allocs := testing.AllocsPerRun(1000, func() {
		observe(r, tr)
		select {
		case <-sub.ch:
		default:
		}
	})
	if allocs > 0 {
		t.Errorf("Observe allocates %.1f times per successful request, want 0", allocs)
	}
}

// A subscriber that never reads must not slow Observe down: its events are
// dropped and counted.
func TestRecordNeverBlocksOnAStalledSubscriber(t *testing.T) {
	const n = 100_000
	t.Run("channel", func(t *testing.T) {
		r := &Recorder{Size: 100}
		sub, ok := r.subscribe()
		if !ok {
			t.Fatal("subscribe refused")
		}
		defer r.unsubscribe(sub)
		tr := okTrace(1)
		start := time.Now()
		for range n {
			observe(r, tr)
		}
		elapsed := time.Since(start)
		t.Logf("%d Observe calls with a stalled subscriber took %v (%v each)", n, elapsed, elapsed/n)
		if elapsed > 20*time.Second {
			t.Errorf("Observe took %v for %d requests", elapsed, n)
		}
		if got, want := sub.dropped.Load(), uint64(n-subscriberBuffer); got != want {
			t.Errorf("subscriber dropped %d events, want %d", got, want)
		}
		if got := r.Dropped(); got != uint64(n-subscriberBuffer) {
			t.Errorf("Recorder.Dropped() = %d", got)
		}
		mfs := metricstest.Parse(t, strings.NewReader(metricsText(t, r)))
		if got := counter(t, mfs, "fcgiscope_admin_events_dropped_total"); got != n-subscriberBuffer {
			t.Errorf("fcgiscope_admin_events_dropped_total = %v", got)
		}
	})
	t.Run("http client that does not read", func(t *testing.T) {
		r := &Recorder{Size: 100}
		srv := httptest.NewServer(&Handler{Recorder: r})
		defer srv.Close()
		resp, err := http.Get(srv.URL + "/api/events")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		waitFor(t, func() bool { return r.subscribers() == 1 })
		tr := okTrace(1)
		tr.URI = "/" + strings.Repeat("u", 1000) // fill the socket buffers sooner
		start := time.Now()
		for range n {
			observe(r, tr)
		}
		elapsed := time.Since(start)
		t.Logf("%d Observe calls with a stalled HTTP client took %v; %d events dropped", n, elapsed, r.Dropped())
		if elapsed > 20*time.Second {
			t.Errorf("Observe took %v for %d requests", elapsed, n)
		}
		if r.Dropped() == 0 {
			t.Error("no events were dropped for a client that reads nothing")
		}
	})
}

func metricsText(t *testing.T, r *Recorder) string {
	t.Helper()
	resp := get(t, &Handler{Recorder: r}, "/metrics")
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return b.String()
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRecordKeepsTheDiagnosisItIsGiven(t *testing.T) {
	r := &Recorder{}
	tr := diedTrace(1)
	d := (&diagnostics.Classifier{}).Diagnose(tr)
	r.Record(tr, d)
	got, _ := r.get(1)
	if got.diag != d {
		t.Error("the Recorder worked out its own diagnosis instead of keeping the one it was given")
	}
	if got.rec.outcome() != "worker_died" || got.rec.status != 502 {
		t.Errorf("outcome %s status %d, want worker_died 502", got.rec.outcome(), got.rec.status)
	}
}

func TestSeriesPercentiles(t *testing.T) {
	var s series
	now := time.Now()
	// 1..1000 ms: p50 = 500 ms, p95 = 950 ms, p99 = 990 ms.
	for i := 1; i <= 1000; i++ {
		s.add(now, time.Duration(i)*time.Millisecond, i%10 == 0)
	}
	buckets := s.snapshot(now)
	if len(buckets) != numBuckets {
		t.Fatalf("%d buckets, want %d", len(buckets), numBuckets)
	}
	b := buckets[len(buckets)-1]
	if b.count != 1000 || b.failed != 100 {
		t.Errorf("count %d failed %d", b.count, b.failed)
	}
	for _, tt := range []struct {
		name      string
		got, want time.Duration
	}{{"p50", b.p50, 500 * time.Millisecond}, {"p95", b.p95, 950 * time.Millisecond}, {"p99", b.p99, 990 * time.Millisecond}} {
		if ratio := float64(tt.got) / float64(tt.want); ratio < 0.95 || ratio > 1.05 {
			t.Errorf("%s = %v, want %v ± 5%%", tt.name, tt.got, tt.want)
		}
	}
	if b.maxDuration != time.Second {
		t.Errorf("max = %v", b.maxDuration)
	}
	// Ten minutes later the bucket is gone from the series.
	later := s.snapshot(now.Add(numBuckets * bucketWidth))
	for _, b := range later {
		if b.count != 0 {
			t.Errorf("bucket at %v still has %d requests", b.start, b.count)
		}
	}
	w := s.window(now, time.Minute)
	if w.count != 1000 || w.failed != 100 {
		t.Errorf("window: %d requests, %d failed", w.count, w.failed)
	}
}

func BenchmarkRecord(b *testing.B) {
	for _, tt := range []struct {
		name  string
		trace func(int) *outcome.Trace
	}{{"ok", okTrace}, {"worker_died", diedTrace}} {
		b.Run(tt.name, func(b *testing.B) {
			r := &Recorder{}
			sub, _ := r.subscribe()
			defer r.unsubscribe(sub)
			tr := tt.trace(1)
			d := (&diagnostics.Classifier{}).Diagnose(tr)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r.Record(tr, d)
				}
			})
		})
	}
}
