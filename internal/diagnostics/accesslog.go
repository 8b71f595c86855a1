package diagnostics

import (
	"maps"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// AccessLog writes one log line per finished request. Its zero value
// discards them.
type AccessLog struct {
	Log zerolog.Logger
	// Stderr also logs the FCGI_STDERR of requests that went well, as
	// nginx's error log would ("FastCGI sent in stderr"), for a server
	// with no nginx in front: fcgiscope http.
	Stderr bool
	// Redact hides the values of secret-looking query parameters in the
	// uri, as the pages and the admin API always do (RedactQuery).
	Redact bool
}

var _ Sink = (*AccessLog)(nil)

// Record logs t: at info when it went well, warn when php-fpm completed it
// with a problem or the client went away, error when it failed.
func (a *AccessLog) Record(t *outcome.Trace, d *Diagnosis) {
	if a.Stderr && d == nil && len(t.Stderr) > 0 {
		a.Log.Warn().Str("request_id", t.RequestID).Str("script", t.Script).Bytes("stderr", t.Stderr).Msg("php-fpm stderr")
	}
	ev := a.Log.Info()
	switch {
	case t.Err != nil && d.Cause == CauseClientAborted:
		ev = a.Log.Warn()
	case t.Err != nil:
		ev = a.Log.Error()
	case d != nil:
		ev = a.Log.Warn()
	}
	if ev == nil {
		return
	}
	status := t.Status
	outcome := "ok"
	if d != nil {
		outcome = d.Cause.ID
		if t.Err != nil && status == 0 {
			status = d.StatusCode()
		}
	}
	ev = ev.Str("request_id", t.RequestID)
	if t.Span != nil {
		ev = ev.Str("trace_id", t.Span.TraceID())
	}
	ev = ev.Uint64("conn", t.ConnID).
		Str("method", t.Method).
		Str("uri", a.uri(t)).
		Str("script", t.Script).
		Int("status", status).
		Str("outcome", outcome).
		Str("upstream", t.Upstream.String()).
		Float64("duration_ms", ms(t.Duration())).
		Float64("connect_ms", ms(t.ConnectTime())).
		Float64("ttfb_ms", ms(t.TimeToFirstByte())).
		Int64("bytes_in", t.BytesIn).
		Int64("bytes_out", t.BytesOut)
	if !t.QueueStart.IsZero() {
		ev = ev.Float64("queue_ms", ms(t.QueueTime()))
	}
	if t.DialAttempts > 1 {
		ev = ev.Int("dial_attempts", t.DialAttempts)
	}
	if t.Resent > 0 {
		ev = ev.Int("resent", t.Resent)
	}
	if t.UpstreamReused {
		// connect_ms is then the check that the kept connection is
		// still open, not a connect.
		ev = ev.Bool("upstream_reused", true)
	}
	if d != nil {
		ev = ev.Str("cause", d.Cause.ID).
			Str("detail", d.Detail).
			Strs("hints", d.Hints).
			Str("phase", string(t.Phase())).
			Bool("truncated", t.Truncated).
			Bool("replaced", t.Replaced)
		if len(d.Evidence) > 0 {
			dict := zerolog.Dict()
			for _, k := range slices.Sorted(maps.Keys(d.Evidence)) {
				dict = dict.Str(k, d.Evidence[k])
			}
			ev = ev.Dict("evidence", dict)
		}
		if d.FPMPid != 0 {
			ev = ev.Int("fpm_pid", d.FPMPid)
		}
	}
	ev.Msg("request")
}

func (a *AccessLog) uri(t *outcome.Trace) string {
	if a.Redact {
		return RedactQuery(t.URI)
	}
	return t.URI
}

// ms converts d to milliseconds with microsecond precision.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
