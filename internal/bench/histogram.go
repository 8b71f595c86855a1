package bench

import (
	"math"
	"math/bits"
	"slices"
	"time"
)

// Histogram records durations in log-linear buckets, as HdrHistogram does:
// values below 256 ns each have their own bucket, and every larger power of
// two is split into 128 buckets of equal width. A bucket is therefore never
// wider than 1/128 of the values it holds, and a percentile, reported as the
// middle of its bucket, is within 1/256 (0.4%) of the true value.
//
// Memory is bounded: the bucket array grows only up to the largest value
// recorded, at most 7296 counters (57 KiB) for the whole int64 range, and
// typically 2000 (16 KiB) for latencies under a second. Recording does not
// allocate once the array covers the values seen.
//
// Histograms are mergeable, so that each worker can record into its own and
// the results can be combined exactly. The zero value is an empty histogram
// ready to use. A Histogram is not safe for concurrent use.
type Histogram struct {
	counts []uint64
	total  uint64
	sum    float64 // nanoseconds, for the mean
	min    int64
	max    int64
}

// subBits is the number of bits below the leading one that select a
// sub-bucket: 2^subBits sub-buckets per power of two.
const (
	subBits  = 7
	subCount = 1 << subBits // 128
	// maxBuckets covers every non-negative int64.
	maxBuckets = (63-subBits)*subCount + subCount
)

// bucketOf returns the bucket index of a non-negative value v. Values below
// 2*subCount are their own index; above, shift is how many low bits are
// dropped and the index is shift*subCount plus the top subBits+1 bits.
func bucketOf(v int64) int {
	n := bits.Len64(uint64(v))
	if n <= subBits+1 {
		return int(v)
	}
	shift := n - subBits - 1
	return shift*subCount + int(uint64(v)>>shift)
}

// bucketBounds returns the smallest value of bucket i and its width.
func bucketBounds(i int) (low, width int64) {
	if i < 2*subCount {
		return int64(i), 1
	}
	shift := i/subCount - 1
	m := int64(i - shift*subCount) // in [subCount, 2*subCount)
	return m << shift, 1 << shift
}

// NewHistogram returns an empty histogram. The zero value works as well.
func NewHistogram() *Histogram { return &Histogram{} }

// Record adds one duration. Negative durations count as 0.
func (h *Histogram) Record(d time.Duration) {
	v := max(int64(d), 0)
	i := bucketOf(v)
	if i >= len(h.counts) {
		h.grow(i)
	}
	h.counts[i]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// grow extends the counters to hold index i, a whole power of two at a time,
// so that growth happens at most once per octave.
func (h *Histogram) grow(i int) {
	n := min((i/subCount+1)*subCount, maxBuckets)
	h.counts = slices.Grow(h.counts, n-len(h.counts))[:n]
}

// Merge adds every value recorded in o to h. o is not changed.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.total == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.grow(len(o.counts) - 1)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// Reset empties h, keeping its memory.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.total, h.sum, h.min, h.max = 0, 0, 0, 0
}

// Count returns the number of values recorded.
func (h *Histogram) Count() int64 { return int64(h.total) }

// Min returns the smallest value recorded, exactly; 0 when empty.
func (h *Histogram) Min() time.Duration { return time.Duration(h.min) }

// Max returns the largest value recorded, exactly; 0 when empty.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean returns the arithmetic mean of the values recorded; 0 when empty.
func (h *Histogram) Mean() time.Duration {
	if h.total == 0 {
		return 0
	}
	return time.Duration(math.Round(h.sum / float64(h.total)))
}

// Percentile returns the value below or at which p percent of the recorded
// values lie, p from 0 to 100 (99.9 for the 99.9th percentile): the value of
// rank ceil(p/100 * Count) in sorted order, to within 0.4%. Percentile(0) is
// Min and Percentile(100) is Max, exactly. An empty histogram gives 0.
func (h *Histogram) Percentile(p float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	switch {
	case math.IsNaN(p) || p <= 0:
		return time.Duration(h.min)
	case p >= 100:
		return time.Duration(h.max)
	}
	rank := uint64(math.Ceil(p / 100 * float64(h.total)))
	rank = min(max(rank, 1), h.total)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := bucketBounds(i)
			v := low + (width-1)/2
			return time.Duration(min(max(v, h.min), h.max))
		}
	}
	return time.Duration(h.max) // not reached: the counts add up to total
}
