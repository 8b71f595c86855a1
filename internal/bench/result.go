package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// Result is what a run measured. Only requests started after the warm-up
// count; requests cut off by the end of the run are Unfinished, neither
// successes nor errors.
type Result struct {
	// What was run.
	Upstream    string
	Script      string
	Concurrency int
	KeepConn    bool
	Warmup      time.Duration

	// Start is when the measured period began, Elapsed its length: up to
	// the end of Duration, the end of the last request, or the
	// interruption.
	Start   time.Time
	Elapsed time.Duration

	// Requests is Successes plus every error.
	Requests  int64
	Successes int64
	// Errors counts failed requests by cause: CauseClosed,
	// CauseProtocol, CauseTimeout, CauseRejected, CauseBadStatus,
	// CauseBadBody, or CauseDialPrefix with the errno ("dial:ENOENT").
	Errors map[string]int64
	// ErrorSamples holds one error message for each cause.
	ErrorSamples map[string]string
	// Unfinished counts requests in flight when the run stopped, started
	// in the warm-up or not. They are neither successes nor errors.
	Unfinished int64
	// StalledWorkers counts workers that completed no measured request
	// and were cut off in the middle of one: a request that waited the
	// whole run.
	StalledWorkers int
	// Statuses counts the CGI statuses of complete responses, valid or
	// not.
	Statuses map[int]int64
	// Connections is the number of connections opened for measured
	// requests, WarmupConnections for those of the warm-up.
	Connections       int64
	WarmupConnections int64
	// BytesRead is the size of the response records of measured requests,
	// BytesWritten that of the requests sent.
	BytesRead    int64
	BytesWritten int64
	// StderrResponses counts responses with FastCGI stderr output;
	// StderrSample is the start of the first such output seen.
	StderrResponses int64
	StderrSample    string
	// Latency holds the time from the start of each successful request
	// (connecting included, when a connection was opened for it) until
	// its END_REQUEST.
	Latency *Histogram
	// Interrupted is set when the run's context ended before its limit.
	Interrupted bool
}

func newResult(cfg Config) *Result {
	return &Result{
		Upstream:     cfg.Upstream.String(),
		Script:       cfg.Script,
		Concurrency:  cfg.Concurrency,
		KeepConn:     cfg.KeepConn,
		Warmup:       cfg.Warmup,
		Errors:       make(map[string]int64),
		ErrorSamples: make(map[string]string),
		Statuses:     make(map[int]int64),
		Latency:      NewHistogram(),
	}
}

// add merges one worker's measurements.
func (r *Result) add(s *workerStats) {
	r.Requests += s.requests
	r.Successes += s.successes
	r.Unfinished += s.unfinished
	if s.requests == 0 && s.unfinished > 0 {
		r.StalledWorkers++
	}
	r.Connections += s.connections
	r.WarmupConnections += s.warmupConnections
	r.BytesRead += s.bytesIn
	r.BytesWritten += s.bytesOut
	r.StderrResponses += s.stderrResponses
	if r.StderrSample == "" {
		r.StderrSample = s.stderr
	}
	for k, v := range s.errors {
		r.Errors[k] += v
	}
	for k, v := range s.samples {
		if _, ok := r.ErrorSamples[k]; !ok {
			r.ErrorSamples[k] = v
		}
	}
	for k, v := range s.statuses {
		r.Statuses[k] += v
	}
	r.Latency.Merge(&s.hist)
}

// ErrorCount returns the number of failed requests.
func (r *Result) ErrorCount() int64 { return r.Requests - r.Successes }

// Throughput returns the successful requests per second.
func (r *Result) Throughput() float64 { return perSecond(r.Successes, r.Elapsed) }

// ReadRate returns the response bytes read per second.
func (r *Result) ReadRate() float64 { return perSecond(r.BytesRead, r.Elapsed) }

// WriteRate returns the request bytes written per second.
func (r *Result) WriteRate() float64 { return perSecond(r.BytesWritten, r.Elapsed) }

func perSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Percentile returns the latency percentile p (0 to 100) of the successful
// requests; see Histogram.Percentile.
func (r *Result) Percentile(p float64) time.Duration { return r.Latency.Percentile(p) }

// The percentiles reported.
var reportedPercentiles = []struct {
	name string
	p    float64
}{{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p99.9", 99.9}}

type resultJSON struct {
	Upstream        string            `json:"upstream"`
	Script          string            `json:"script"`
	Concurrency     int               `json:"concurrency"`
	KeepConn        bool              `json:"keep_conn"`
	WarmupS         float64           `json:"warmup_s"`
	Start           time.Time         `json:"start"`
	ElapsedS        float64           `json:"elapsed_s"`
	Requests        int64             `json:"requests"`
	Successes       int64             `json:"successes"`
	Errors          int64             `json:"errors"`
	ErrorsByCause   map[string]int64  `json:"errors_by_cause"`
	ErrorSamples    map[string]string `json:"error_samples,omitempty"`
	Unfinished      int64             `json:"unfinished"`
	StalledWorkers  int               `json:"stalled_workers"`
	ThroughputRPS   float64           `json:"throughput_rps"`
	Latency         latencyJSON       `json:"latency_ms"`
	Statuses        map[int]int64     `json:"statuses"`
	Connections     int64             `json:"connections"`
	WarmupConns     int64             `json:"warmup_connections"`
	BytesRead       int64             `json:"bytes_read"`
	BytesWritten    int64             `json:"bytes_written"`
	ReadBytesPerS   float64           `json:"read_bytes_per_s"`
	WriteBytesPerS  float64           `json:"written_bytes_per_s"`
	StderrResponses int64             `json:"stderr_responses"`
	StderrSample    string            `json:"stderr_sample,omitempty"`
	Interrupted     bool              `json:"interrupted"`
}

type latencyJSON struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99.9"`
	Max   float64 `json:"max"`
}

func ms(d time.Duration) float64 { return round(float64(d)/1e6, 4) }

func round(x float64, digits int) float64 {
	f := math.Pow(10, float64(digits))
	return math.Round(x*f) / f
}

// JSON returns the result as one JSON object, for scripts: counts, rates,
// errors_by_cause, statuses, and latency_ms with count, min, mean, p50, p90,
// p99, p99.9 and max in milliseconds.
func (r *Result) JSON() ([]byte, error) {
	h := r.Latency
	return json.Marshal(resultJSON{
		Upstream:       r.Upstream,
		Script:         r.Script,
		Concurrency:    r.Concurrency,
		KeepConn:       r.KeepConn,
		WarmupS:        r.Warmup.Seconds(),
		Start:          r.Start,
		ElapsedS:       round(r.Elapsed.Seconds(), 6),
		Requests:       r.Requests,
		Successes:      r.Successes,
		Errors:         r.ErrorCount(),
		ErrorsByCause:  r.Errors,
		ErrorSamples:   r.ErrorSamples,
		Unfinished:     r.Unfinished,
		StalledWorkers: r.StalledWorkers,
		ThroughputRPS:  round(r.Throughput(), 2),
		Latency: latencyJSON{
			Count: h.Count(),
			Min:   ms(h.Min()),
			Mean:  ms(h.Mean()),
			P50:   ms(h.Percentile(50)),
			P90:   ms(h.Percentile(90)),
			P99:   ms(h.Percentile(99)),
			P999:  ms(h.Percentile(99.9)),
			Max:   ms(h.Max()),
		},
		Statuses:        r.Statuses,
		Connections:     r.Connections,
		WarmupConns:     r.WarmupConnections,
		BytesRead:       r.BytesRead,
		BytesWritten:    r.BytesWritten,
		ReadBytesPerS:   round(r.ReadRate(), 1),
		WriteBytesPerS:  round(r.WriteRate(), 1),
		StderrResponses: r.StderrResponses,
		StderrSample:    r.StderrSample,
		Interrupted:     r.Interrupted,
	})
}

// WriteText writes the result for people, in the manner of wrk.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	conn := "new connection per request"
	if r.KeepConn {
		conn = "kept connections (FCGI_KEEP_CONN)"
	}
	fmt.Fprintf(&b, "fcgiscope bench %s %s\n", r.Upstream, r.Script)
	fmt.Fprintf(&b, "  %d workers, %s, %s measured", r.Concurrency, conn, fmtSeconds(r.Elapsed))
	if r.Warmup > 0 {
		fmt.Fprintf(&b, " after %s warm-up", r.Warmup)
	}
	if r.Interrupted {
		b.WriteString(" (interrupted)")
	}
	b.WriteString("\n\n")

	fmt.Fprintf(&b, "  requests     %d: %d ok, %d errors", r.Requests, r.Successes, r.ErrorCount())
	if r.Unfinished > 0 {
		fmt.Fprintf(&b, " (%d in flight at the end, not counted)", r.Unfinished)
	}
	b.WriteString("\n")
	if r.StalledWorkers > 0 {
		fmt.Fprintf(&b, "  stalled      %d of %d workers completed no request: one request waited the whole run\n", r.StalledWorkers, r.Concurrency)
		if r.KeepConn {
			b.WriteString("               (php-fpm gives each kept connection a worker process of its own: with\n" +
				"               -c above pm.max_children the other connections wait in the listen queue)\n")
		}
	}
	fmt.Fprintf(&b, "  throughput   %.1f req/s (successful)\n", r.Throughput())
	fmt.Fprintf(&b, "  transfer     %s/s read, %s/s written\n", fmtBytes(r.ReadRate()), fmtBytes(r.WriteRate()))
	fmt.Fprintf(&b, "  connections  %d opened", r.Connections)
	if r.WarmupConnections > 0 {
		fmt.Fprintf(&b, " (and %d in the warm-up)", r.WarmupConnections)
	}
	b.WriteString("\n")
	h := r.Latency
	if h.Count() > 0 {
		fmt.Fprintf(&b, "  latency      min %s", fmtDuration(h.Min()))
		for _, p := range reportedPercentiles {
			fmt.Fprintf(&b, "  %s %s", p.name, fmtDuration(h.Percentile(p.p)))
		}
		fmt.Fprintf(&b, "  max %s  (mean %s)\n", fmtDuration(h.Max()), fmtDuration(h.Mean()))
	} else {
		b.WriteString("  latency      no successful requests\n")
	}
	if len(r.Statuses) > 0 {
		b.WriteString("  statuses    ")
		for _, s := range slices.Sorted(maps.Keys(r.Statuses)) {
			fmt.Fprintf(&b, " %d: %d", s, r.Statuses[s])
		}
		b.WriteString("\n")
	}
	if r.StderrResponses > 0 {
		fmt.Fprintf(&b, "  stderr       %d responses wrote FastCGI stderr, first: %q\n", r.StderrResponses, r.StderrSample)
	}
	if len(r.Errors) == 0 {
		b.WriteString("  errors       none\n")
	} else {
		b.WriteString("  errors by cause\n")
		causes := slices.SortedFunc(maps.Keys(r.Errors), func(a, b string) int {
			if r.Errors[a] != r.Errors[b] {
				return int(r.Errors[b] - r.Errors[a])
			}
			return strings.Compare(a, b)
		})
		width := 0
		for _, c := range causes {
			width = max(width, len(c))
		}
		for _, c := range causes {
			fmt.Fprintf(&b, "    %-*s %8d", width, c, r.Errors[c])
			if s := r.ErrorSamples[c]; s != "" {
				fmt.Fprintf(&b, "   e.g. %s", s)
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtDuration prints d with three significant digits.
func fmtDuration(d time.Duration) string {
	switch {
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d)
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.3gs", d.Seconds())
}

func fmtSeconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }

func fmtBytes(n float64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%.0f B", n)
	}
	for _, u := range []string{"KiB", "MiB", "GiB"} {
		n /= unit
		if n < unit {
			return fmt.Sprintf("%.2f %s", n, u)
		}
	}
	return fmt.Sprintf("%.2f TiB", n)
}
