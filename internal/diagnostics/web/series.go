package web

import (
	"math"
	"time"
)

// The dashboard's latency chart comes from a small time series kept next to
// the ring of recent requests: the ring holds a fixed number of requests,
// which at a few hundred requests a second is less than the chart's ten
// minutes. Each 5-second bucket keeps a histogram of request durations with
// eight bins per doubling, from which the percentiles are estimated to
// within 5%.
const (
	bucketWidth     = 5 * time.Second
	numBuckets      = 120 // ten minutes
	minLatency      = 50 * time.Microsecond
	binsPerDoubling = 8
	// numBins covers minLatency to about 2^22 times it (3.5 minutes);
	// the last bin takes everything longer.
	numBins = 22*binsPerDoubling + 1
)

// series is a ring of buckets indexed by time.
type series struct {
	buckets [numBuckets]bucket
}

type bucket struct {
	epoch  int64 // the bucket's start, in bucketWidth units since 1970; 0 when unused
	count  uint32
	failed uint32
	max    time.Duration
	bins   [numBins]uint32
}

// add counts a request that ended at end and took d.
func (s *series) add(end time.Time, d time.Duration, failed bool) {
	e := end.UnixNano() / int64(bucketWidth)
	b := &s.buckets[e%numBuckets]
	switch {
	case b.epoch == e:
	case b.epoch < e:
		*b = bucket{epoch: e}
	default:
		return // older than the whole series
	}
	b.count++
	if failed {
		b.failed++
	}
	b.max = max(b.max, d)
	b.bins[binOf(d)]++
}

func binOf(d time.Duration) int {
	if d <= minLatency {
		return 0
	}
	i := int(math.Ceil(math.Log2(float64(d)/float64(minLatency)) * binsPerDoubling))
	return min(i, numBins-1)
}

// binUpper is the largest duration bin i holds.
func binUpper(i int) time.Duration {
	return time.Duration(float64(minLatency) * math.Exp2(float64(i)/binsPerDoubling))
}

// bucketStats is one bucket as the dashboard shows it.
type bucketStats struct {
	start          time.Time
	count, failed  int
	p50, p95, p99  time.Duration
	maxDuration    time.Duration
	hasPercentiles bool
}

// snapshot returns the numBuckets buckets up to the one holding now, oldest
// first; buckets without requests have zero counts.
func (s *series) snapshot(now time.Time) []bucketStats {
	cur := now.UnixNano() / int64(bucketWidth)
	out := make([]bucketStats, 0, numBuckets)
	for e := cur - numBuckets + 1; e <= cur; e++ {
		bs := bucketStats{start: time.Unix(0, e*int64(bucketWidth))}
		b := &s.buckets[((e%numBuckets)+numBuckets)%numBuckets]
		if b.epoch == e && b.count > 0 {
			bs.count, bs.failed, bs.maxDuration = int(b.count), int(b.failed), b.max
			bs.p50 = b.quantile(0.50)
			bs.p95 = b.quantile(0.95)
			bs.p99 = b.quantile(0.99)
			bs.hasPercentiles = true
		}
		out = append(out, bs)
	}
	return out
}

// quantile estimates the q-quantile of the bucket's durations: the
// geometric middle of the bin that holds it, never more than the largest
// duration seen.
func (b *bucket) quantile(q float64) time.Duration {
	rank := uint32(math.Ceil(q * float64(b.count)))
	rank = max(rank, 1)
	var seen uint32
	for i, n := range b.bins {
		seen += n
		if seen < rank {
			continue
		}
		var est time.Duration
		if i == 0 {
			est = minLatency
		} else {
			est = time.Duration(math.Sqrt(float64(binUpper(i-1)) * float64(binUpper(i))))
		}
		return min(est, b.max)
	}
	return b.max
}

// summaryWindow is the stretch the dashboard's headline numbers cover.
const summaryWindow = time.Minute

// windowStats sums the buckets of the last stretch of time.
type windowStats struct {
	start         time.Time // the first bucket's start
	count, failed int
	p95           time.Duration
}

// window sums the buckets that cover the last d up to now, the one holding
// now included.
func (s *series) window(now time.Time, d time.Duration) windowStats {
	n := int64(d / bucketWidth)
	cur := now.UnixNano() / int64(bucketWidth)
	ws := windowStats{start: time.Unix(0, (cur-n+1)*int64(bucketWidth))}
	var merged bucket
	for e := cur - n + 1; e <= cur; e++ {
		b := &s.buckets[((e%numBuckets)+numBuckets)%numBuckets]
		if b.epoch != e {
			continue
		}
		merged.count += b.count
		merged.failed += b.failed
		merged.max = max(merged.max, b.max)
		for i, c := range b.bins {
			merged.bins[i] += c
		}
	}
	ws.count, ws.failed = int(merged.count), int(merged.failed)
	if merged.count > 0 {
		ws.p95 = merged.quantile(0.95)
	}
	return ws
}
