// Package diagnostics turns the relay's Traces into explanations and
// records: the access log, and (as they are added) the cause catalogue,
// error pages and metrics.
package diagnostics

import (
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/proxy"
)

// AccessLog writes one log line per finished request. Its zero value
// discards them.
type AccessLog struct {
	Log zerolog.Logger
}

// Observe logs t.
func (a *AccessLog) Observe(t *proxy.Trace) {
	ev := a.Log.Info()
	if t.Err != nil {
		ev = a.Log.Error()
	}
	if ev == nil {
		return
	}
	ev = ev.Str("request_id", t.RequestID).
		Uint64("conn", t.ConnID).
		Str("method", t.Method).
		Str("uri", t.URI).
		Str("script", t.Script).
		Int("status", t.Status)
	if t.Err == nil {
		ev = ev.Str("outcome", "ok")
	} else {
		ev = ev.Str("outcome", "error").Str("error", t.Err.Error()).Str("phase", string(t.Phase()))
	}
	ev.Str("upstream", t.Upstream.String()).
		Float64("duration_ms", ms(t.Duration())).
		Float64("connect_ms", ms(t.ConnectTime())).
		Float64("ttfb_ms", ms(t.TimeToFirstByte())).
		Int64("bytes_in", t.BytesIn).
		Int64("bytes_out", t.BytesOut).
		Bool("truncated", t.Truncated).
		Msg("request")
}

// ms converts d to milliseconds with microsecond precision.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

var _ proxy.Observer = (*AccessLog)(nil)
