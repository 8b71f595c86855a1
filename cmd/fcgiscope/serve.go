package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fcgiscope/fcgiscope/diagnostics"
	"github.com/fcgiscope/fcgiscope/proxy"
)

// serve runs the sidecar until ctx ends, then drains.
func serve(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	var cfg serveConfig
	rest, err := loadConfig(&cfg, "serve", args, environ, stderr)
	if err != nil {
		if isHelp(err) {
			return exitOK
		}
		fmt.Fprintf(stderr, "fcgiscope: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "fcgiscope: serve takes no arguments, got %q; settings are flags such as --upstream\n", rest)
		return exitUsage
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "fcgiscope: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	log := newLogger(cfg.LogFormat, cfg.logLevel, stdout)

	srv := &proxy.Server{
		Upstream:       cfg.upstreamAddr,
		ConnectTimeout: cfg.ConnectTimeout,
		ReadTimeout:    cfg.ReadTimeout,
		HoldBytes:      cfg.HoldBytes,
		MaxParamsBytes: cfg.MaxParamsBytes,
		Observer:       &diagnostics.AccessLog{Log: log},
		Log:            log,
	}
	ln, err := proxy.Listen(cfg.listenAddr, cfg.listenMode)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitFailure
	}
	log.Info().Str("listen", cfg.listenAddr.String()).Str("upstream", cfg.upstreamAddr.String()).Str("version", version).Msg("fcgiscope is relaying")

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		log.Error().Err(err).Msg("the listener failed")
		return exitFailure
	case <-ctx.Done():
	}
	log.Info().Str("reason", context.Cause(ctx).Error()).Dur("timeout", cfg.ShutdownTimeout).Msg("stopping: no new connections, waiting for requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("requests still in flight were cut off")
	}
	if err := <-served; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		log.Warn().Err(err).Msg("listener error during shutdown")
	}
	log.Info().Dur("drained_in", time.Since(start)).Msg("stopped")
	return exitCodeForContext(ctx)
}
