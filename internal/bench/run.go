package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Phases of a run.
const (
	phaseWarmup int32 = iota
	phaseMeasure
	phaseDone
)

// Run sends requests as cfg says until its request count or duration is
// reached, or ctx ends, and returns what was measured. The error is non-nil
// only for an invalid Config: failed requests are counted in the Result.
// When ctx ends first, the Result covers the requests measured until then
// and has Interrupted set.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := newRunner(cfg)
	defer r.cancel()

	stopWatch := context.AfterFunc(ctx, func() { r.stop(true) })
	defer stopWatch()

	if cfg.Warmup > 0 {
		r.mu.Lock()
		r.warmupTimer = time.AfterFunc(cfg.Warmup, r.beginMeasure)
		r.mu.Unlock()
	} else {
		r.beginMeasure()
	}

	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(w.loop)
	}
	wg.Wait()
	finished := time.Now()

	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range []*time.Timer{r.warmupTimer, r.endTimer} {
		if t != nil {
			t.Stop()
		}
	}
	res := newResult(cfg)
	res.Start = r.measureStart
	res.Interrupted = r.interrupted
	if !r.measureStart.IsZero() {
		end := finished
		if !r.stopAt.IsZero() {
			end = r.stopAt
		}
		res.Elapsed = max(end.Sub(r.measureStart), 0)
	}
	for _, w := range r.workers {
		res.add(&w.stats)
	}
	return res, nil
}

// runner is the state the workers of one run share.
type runner struct {
	cfg     Config
	ctx     context.Context // ends when the run stops, aborting dials
	cancel  context.CancelFunc
	phase   atomic.Int32
	tickets atomic.Int64 // measured requests claimed so far
	limit   int64        // cfg.Requests; 0 means none
	workers []*worker

	mu           sync.Mutex
	warmupTimer  *time.Timer
	endTimer     *time.Timer
	measureStart time.Time
	stopAt       time.Time
	interrupted  bool
}

func newRunner(cfg Config) *runner {
	r := &runner{cfg: cfg, limit: int64(cfg.Requests)}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	req := encodeRequest(cfg)
	r.workers = make([]*worker, cfg.Concurrency)
	for i := range r.workers {
		r.workers[i] = newWorker(r, req)
	}
	return r
}

// beginMeasure ends the warm-up: requests started from now on are measured.
func (r *runner) beginMeasure() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.phase.CompareAndSwap(phaseWarmup, phaseMeasure) {
		return // stopped during the warm-up
	}
	r.measureStart = time.Now()
	if r.cfg.Duration > 0 {
		r.endTimer = time.AfterFunc(r.cfg.Duration, func() { r.stop(false) })
	}
}

// stop ends the run: no new requests start, and those in flight are cut off
// and counted as unfinished.
func (r *runner) stop(interrupted bool) {
	r.mu.Lock()
	if r.phase.Load() == phaseDone {
		r.mu.Unlock()
		return
	}
	r.phase.Store(phaseDone)
	r.stopAt = time.Now()
	r.interrupted = interrupted
	r.mu.Unlock()
	r.cancel()
	for _, w := range r.workers {
		w.interrupt()
	}
}
