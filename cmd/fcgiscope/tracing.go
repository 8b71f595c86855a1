package main

import (
	"context"
	"os"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/tracing"
)

// startTracing starts the OpenTelemetry exporter when the standard OTEL_*
// variables ask for traces, and returns nil when they do not. A collector
// that cannot be reached costs a warning a minute, never a request's time.
func startTracing(ctx context.Context, pool *fpm.Pool, log zerolog.Logger) (*tracing.Tracer, error) {
	s, err := tracing.ReadSettings(os.Getenv)
	if err != nil || !s.On {
		return nil, err
	}
	warn := tracing.Throttled(func(err error, dropped int) {
		log.Warn().Err(err).Str("endpoint", s.Endpoint).Int("errors_since_last", dropped).
			Msg("cannot send spans to the OpenTelemetry collector (OTEL_EXPORTER_OTLP_ENDPOINT); requests are not slowed, spans that do not fit the queue (OTEL_BSP_MAX_QUEUE_SIZE) are dropped")
	})
	t, err := tracing.New(ctx, s, version, warn)
	if err != nil {
		return nil, err
	}
	if pool != nil {
		t.Pool = pool.Name
	}
	endpoint := s.Endpoint
	if endpoint == "" {
		endpoint = "the exporter's default, localhost"
	}
	log.Info().Str("endpoint", endpoint).Str("protocol", s.Protocol).
		Msg("tracing: a span per request, passed on to php-fpm as the parent of PHP's spans (HTTP_TRACEPARENT)")
	return t, nil
}

// stopTracing sends the spans still queued, for up to 5 seconds.
func stopTracing(t *tracing.Tracer, log zerolog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("tracing: spans still queued at the stop were not all sent")
	}
}
