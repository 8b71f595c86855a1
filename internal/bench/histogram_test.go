package bench

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactPercentile is the definition Histogram.Percentile approximates: the
// value of rank ceil(p/100*n) in sorted order.
func exactPercentile(sorted []time.Duration, p float64) time.Duration {
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

var testPercentiles = []float64{0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 99.99, 100}

func checkAccuracy(t *testing.T, values []time.Duration) {
	t.Helper()
	var h Histogram
	for _, v := range values {
		h.Record(v)
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	if h.Count() != int64(len(values)) {
		t.Fatalf("count %d, want %d", h.Count(), len(values))
	}
	if h.Min() != sorted[0] || h.Max() != sorted[len(sorted)-1] {
		t.Errorf("min/max %v/%v, want exactly %v/%v", h.Min(), h.Max(), sorted[0], sorted[len(sorted)-1])
	}
	worst := 0.0
	for _, p := range testPercentiles {
		got, want := h.Percentile(p), exactPercentile(sorted, p)
		rel := 0.0
		if want != 0 {
			rel = math.Abs(float64(got-want)) / float64(want)
		} else if got != 0 {
			rel = math.Inf(1)
		}
		worst = max(worst, rel)
		if rel > 0.01 {
			t.Errorf("p%v = %v, want %v (relative error %.4f > 1%%)", p, got, want, rel)
		}
	}
	var sum float64
	for _, v := range values {
		sum += float64(v)
	}
	mean := time.Duration(math.Round(sum / float64(len(values))))
	if d := h.Mean() - mean; d < -1 || d > 1 {
		t.Errorf("mean %v, want %v", h.Mean(), mean)
	}
	t.Logf("%d values, worst relative error %.5f", len(values), worst)
}

func TestHistogramAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	gen := func(f func() float64) []time.Duration {
		v := make([]time.Duration, n)
		for i := range v {
			v[i] = time.Duration(f())
		}
		return v
	}
	cases := map[string][]time.Duration{
		// Latencies from 1 µs to 100 ms, uniformly.
		"uniform": gen(func() float64 { return 1e3 + rng.Float64()*(100e6-1e3) }),
		// Exponential with a 2 ms mean: a long tail.
		"exponential": gen(func() float64 { return rng.ExpFloat64() * 2e6 }),
		// Log-normal around 1 ms spanning orders of magnitude.
		"lognormal": gen(func() float64 { return math.Exp(math.Log(1e6) + 1.5*rng.NormFloat64()) }),
		// Bimodal: fast hits and slow misses.
		"bimodal": gen(func() float64 {
			if rng.IntN(10) == 0 {
				return 50e6 + rng.Float64()*10e6
			}
			return 200e3 + rng.Float64()*50e3
		}),
		// Small values are kept exactly.
		"nanoseconds": gen(func() float64 { return float64(rng.IntN(300)) }),
		// Every value the same.
		"constant": gen(func() float64 { return 1234567 }),
		// Hours and more.
		"huge": gen(func() float64 { return 3600e9 * (1 + rng.Float64()*1000) }),
	}
	for name, values := range cases {
		t.Run(name, func(t *testing.T) { checkAccuracy(t, values) })
	}
}

func TestHistogramBucketsCoverEveryValue(t *testing.T) {
	// Every value falls in a bucket whose bounds contain it, and buckets
	// are contiguous and never wider than 1/128 of their values.
	prevEnd := int64(0)
	for i := range maxBuckets {
		low, width := bucketBounds(i)
		if low != prevEnd {
			t.Fatalf("bucket %d starts at %d, want %d", i, low, prevEnd)
		}
		if low >= 256 && float64(width)/float64(low) > 1.0/128 {
			t.Fatalf("bucket %d [%d, +%d) is %.4f of its values wide", i, low, width, float64(width)/float64(low))
		}
		for _, v := range []int64{low, low + width/2, low + width - 1} {
			if got := bucketOf(v); got != i {
				t.Fatalf("value %d in bucket %d, want %d", v, got, i)
			}
		}
		prevEnd = low + width
		if i == maxBuckets-1 && prevEnd-1 != math.MaxInt64 {
			t.Fatalf("last bucket ends at %d, want MaxInt64", prevEnd-1)
		}
	}
}

func TestHistogramMerge(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var all Histogram
	parts := make([]Histogram, 8)
	for i := range 100_000 {
		v := time.Duration(rng.ExpFloat64() * float64(time.Duration(i%8+1)*time.Millisecond))
		all.Record(v)
		parts[i%8].Record(v)
	}
	var merged Histogram
	merged.Merge(&Histogram{}) // empty: no effect
	merged.Merge(nil)
	for i := range parts {
		merged.Merge(&parts[i])
	}
	if merged.Count() != all.Count() || merged.Min() != all.Min() || merged.Max() != all.Max() {
		t.Errorf("merged count/min/max %d/%v/%v, want %d/%v/%v", merged.Count(), merged.Min(), merged.Max(), all.Count(), all.Min(), all.Max())
	}
	if d := merged.Mean() - all.Mean(); d < -1 || d > 1 {
		t.Errorf("merged mean %v, want %v", merged.Mean(), all.Mean())
	}
	for _, p := range testPercentiles {
		if got, want := merged.Percentile(p), all.Percentile(p); got != want {
			t.Errorf("merged p%v = %v, want %v", p, got, want)
		}
	}
	// Merging into a histogram with smaller values grows it.
	var small Histogram
	small.Record(time.Microsecond)
	small.Merge(&all)
	if small.Count() != all.Count()+1 || small.Max() != all.Max() || small.Min() != min(time.Microsecond, all.Min()) {
		t.Errorf("merge into small: count %d max %v min %v", small.Count(), small.Max(), small.Min())
	}
}

func TestHistogramEmptyAndReset(t *testing.T) {
	var h Histogram
	for _, p := range testPercentiles {
		if got := h.Percentile(p); got != 0 {
			t.Errorf("empty p%v = %v", p, got)
		}
	}
	if h.Mean() != 0 || h.Min() != 0 || h.Max() != 0 || h.Count() != 0 {
		t.Error("empty histogram reports values")
	}
	h.Record(-time.Second) // counts as 0
	h.Record(5 * time.Millisecond)
	if h.Min() != 0 || h.Max() != 5*time.Millisecond {
		t.Errorf("min/max %v/%v", h.Min(), h.Max())
	}
	h.Reset()
	if h.Count() != 0 || h.Percentile(50) != 0 {
		t.Error("Reset left values")
	}
	h.Record(time.Second)
	if h.Min() != time.Second || h.Percentile(50) != time.Second {
		t.Errorf("after Reset: min %v p50 %v", h.Min(), h.Percentile(50))
	}
}

func TestHistogramMemoryBounded(t *testing.T) {
	var h Histogram
	h.Record(time.Millisecond)
	if n := len(h.counts); n > 2048 {
		t.Errorf("%d counters for values up to 1ms", n)
	}
	h.Record(time.Duration(math.MaxInt64))
	if n := len(h.counts); n != maxBuckets {
		t.Errorf("%d counters for the whole range, want %d", n, maxBuckets)
	}
	allocs := testing.AllocsPerRun(1000, func() { h.Record(3 * time.Second) })
	if allocs != 0 {
		t.Errorf("Record allocates %v times", allocs)
	}
}
