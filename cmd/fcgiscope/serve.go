package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/front"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
)

// serve runs the sidecar until ctx ends, then drains.
func serve(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	var cfg serveConfig
	if exit, ok := configure(&cfg, "serve", args, environ, stderr, "", "settings are flags such as --upstream"); !ok {
		return exit
	}
	log := newLogger(cfg.LogFormat, cfg.logLevel, stdout)

	conf, pool, fpmLog := loadFPM(&cfg, log)
	if err := checkKeepAlive(&cfg, pool, log); err != nil {
		fmt.Fprintf(stderr, "fcgiscope serve: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	if fpmLog != nil {
		go func() {
			if err := fpmLog.Run(ctx); err != nil {
				log.Warn().Err(err).Str("fpm_log", fpmLog.Path).Msg("cannot follow php-fpm's error log")
			}
		}()
	}
	nginx := watchNginx(ctx, &cfg, log)
	warnSoonerThanNginx(&cfg, nginx.Front(), log)
	classifier := &diagnostics.Classifier{
		Pool:   pool,
		Log:    fpmLog,
		Finder: &diagnostics.Finder{Exclude: []fcgi.Addr{cfg.listenAddr}},
		Front:  nginx,
		// Following a script nginx gave up on must not hold up a
		// shutdown; what is known by then is logged.
		Done: ctx.Done(),
	}
	watchPHP(ctx, classifier, conf, cfg.PHPIni, cfg.PHPLog, log)
	reloadOnSignal(ctx, &cfg, classifier, nginx, log)
	var poller *fpm.Poller
	if path := statusPath(&cfg, pool); path != "" {
		addr := cfg.upstreamAddr
		if pool != nil && !pool.StatusListen.IsZero() {
			// A listener of its own: the page comes even when every
			// worker is busy, which is when it matters.
			addr = pool.StatusListen
		}
		poller = &fpm.Poller{Addr: addr, Path: path, Interval: cfg.FPMStatusInterval}
		go poller.Run(ctx)
		classifier.Status = poller
		log.Info().Str("status_path", path).Str("status_address", addr.String()).Stringer("interval", cfg.FPMStatusInterval).Msg("polling php-fpm's status page")
	}
	if pool != nil && pool.Slowlog != "" && fpm.Readable(pool.Slowlog) {
		slow := &fpm.SlowlogFollower{Path: pool.Slowlog}
		go slow.Run(ctx)
		classifier.Slowlog = slow
	}
	maxConns := cfg.MaxConns
	if maxConns == 0 && pool != nil && pool.MaxChildren > 0 {
		maxConns = pool.MaxChildren
		log.Info().Int("max_conns", maxConns).Msg("limiting requests in flight to the pool's pm.max_children; more wait up to FCGISCOPE_QUEUE_TIMEOUT")
	}
	var srv *proxy.Server
	recorder := &web.Recorder{
		Size:         cfg.RecentRequests,
		InFlight:     func() float64 { return float64(srv.InFlight()) },
		Queued:       func() float64 { return float64(srv.Queued()) },
		UpstreamIdle: func() float64 { return float64(srv.IdleUpstream()) },
		Version:      version,
		Commit:       commit,
	}
	if poller != nil { // a nil *fpm.Poller must not become a non-nil interface
		recorder.Pool = poller
	}
	if pool != nil {
		recorder.MaxChildren, recorder.PoolName = pool.MaxChildren, pool.Name
	}
	if fpmLog != nil {
		recorder.FPMLog = fpmLog
	}
	explainer := &diagnostics.Explainer{
		Classifier: classifier,
		Detail:     cfg.errorDetail,
		Trusted:    cfg.trusted,
		Sinks:      []diagnostics.Sink{&diagnostics.AccessLog{Log: log, Redact: cfg.LogRedact}, recorder},
	}
	tracer, err := startTracing(ctx, pool, log)
	if err != nil {
		fmt.Fprintf(stderr, "fcgiscope serve: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	if tracer != nil {
		explainer.Sinks = append(explainer.Sinks, tracer)
		defer stopTracing(tracer, log)
	}
	srv = &proxy.Server{
		Upstream:                 cfg.upstreamAddr,
		MaxConns:                 maxConns,
		QueueTimeout:             cfg.queueTimeout,
		RetryClosed:              classifier.UpstreamWasRestarting,
		ConnectTimeout:           cfg.ConnectTimeout,
		ReadTimeout:              cfg.ReadTimeout,
		HoldBytes:                cfg.HoldBytes,
		ReplayBodyBytes:          cfg.ReplayBodyBytes,
		MaxParamsBytes:           cfg.MaxParamsBytes,
		MaxHeaderBytes:           cfg.MaxHeaderBytes,
		IdleTimeout:              cfg.IdleTimeout,
		ParamsTimeout:            cfg.ParamsTimeout,
		MaxClientConns:           cfg.MaxClientConns,
		ServerTiming:             cfg.ServerTiming,
		UpstreamKeepAlive:        cfg.upstreamKeepAlive,
		UpstreamKeepAliveTimeout: cfg.UpstreamKeepAliveTimeout,
		Responder:                explainer,
		Observer:                 explainer,
		Log:                      log,
	}
	if tracer != nil { // a nil *tracing.Tracer must not become a non-nil interface
		srv.Tracer = tracer
	}
	if cfg.queueAuto {
		srv.Patience = func() time.Duration { return nginx.Front().Patience() }
	}
	srv.WebServerHeadLimits = func() (int, int) { return nginx.Front().HeadLimits() }
	ln, err := inheritedListener(environ)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitFailure
	}
	listenDesc := cfg.listenAddr.String()
	if ln != nil {
		listenDesc = ln.Addr().String() + " (inherited through LISTEN_FDS)"
	} else if ln, err = proxy.Listen(cfg.listenAddr, cfg.listenMode); err != nil {
		log.Error().Err(err).Msg(listenProblem(err, cfg.listenAddr, "FCGISCOPE_LISTEN"))
		return exitFailure
	}
	if cfg.AdminListen != "" {
		if err := web.CheckExposure(cfg.AdminListen, cfg.AdminToken); err != nil {
			log.Warn().Err(err).Msg("FCGISCOPE_ADMIN_INSECURE=true: the admin endpoint is open to other hosts without a token; it shows them /metrics, the probes, and the recent requests with minimal detail unless FCGISCOPE_TRUSTED_NETWORKS includes them")
		}
		adminLn, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			ln.Close()
			log.Error().Err(err).Msg(listenProblem(err, fcgi.Addr{Network: "tcp", Address: cfg.AdminListen}, "FCGISCOPE_ADMIN_LISTEN") + " (empty turns the admin endpoint off)")
			return exitFailure
		}
		admin := &web.Handler{
			Recorder: recorder,
			Upstream: cfg.upstreamAddr,
			Token:    cfg.AdminToken,
			Detail:   cfg.errorDetail,
			Trusted:  cfg.trusted,
			Pprof:    cfg.AdminPprof,
			Log:      log.With().Str("component", "admin").Logger(),
		}
		if pool != nil {
			admin.PingPath = pool.PingPath
		}
		// The admin endpoint outlives the drain, so that /metrics and the
		// dashboard show it; it stops when serve returns.
		adminCtx, stopAdmin := context.WithCancel(context.Background())
		adminDone := make(chan struct{})
		go func() {
			defer close(adminDone)
			if err := admin.Serve(adminCtx, adminLn); err != nil {
				log.Error().Err(err).Msg("the admin endpoint failed")
			}
		}()
		defer func() { stopAdmin(); <-adminDone }()
		log.Info().Str("admin", "http://"+adminLn.Addr().String()+"/").Bool("token", cfg.AdminToken != "").Msg("admin endpoint: dashboard at /, /metrics, /healthz, /readyz")
	}
	log.Info().Str("listen", listenDesc).Str("upstream", cfg.upstreamAddr.String()).Str("version", version).
		Int("gomaxprocs", runtime.GOMAXPROCS(0)).Msg("fcgiscope is relaying")

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		log.Error().Err(err).Msg("the listener failed")
		return exitFailure
	case <-ctx.Done():
	}
	log.Info().Str("reason", context.Cause(ctx).Error()).Stringer("timeout", cfg.ShutdownTimeout).Msg("stopping: no new connections, waiting for requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("requests still in flight were cut off")
	}
	if err := <-served; err != nil && !errors.Is(err, proxy.ErrServerClosed) {
		log.Warn().Err(err).Msg("listener error during shutdown")
	}
	log.Info().Stringer("drained_in", time.Since(start)).Msg("stopped")
	return exitCodeForContext(ctx)
}

// loadFPM reads the php-fpm configuration and returns the pool that listens
// on the upstream address and php-fpm's error log. Not finding them costs
// only precision in the explanations, so every problem is a warning.
func loadFPM(cfg *serveConfig, log zerolog.Logger) (*fpm.Config, *fpm.Pool, *fpm.Follower) {
	conf, err := readFPMConfig(cfg.FPMConfig)
	if err != nil {
		log.Warn().Err(err).Msg("php-fpm configuration not read: a killed worker is reported as worker_died, not worker_timeout_killed; set FCGISCOPE_FPM_CONFIG")
		return nil, nil, errorLog(cfg.FPMLog, nil, log)
	}
	for _, w := range conf.Warnings {
		log.Warn().Str("config", conf.Path).Msg("php-fpm configuration: " + w)
	}
	tail := errorLog(cfg.FPMLog, conf, log)
	pool := conf.PoolFor(cfg.upstreamAddr)
	if pool == nil {
		var listens []string
		for _, p := range conf.Pools {
			listens = append(listens, p.Name+"="+p.ListenAddr.String())
		}
		log.Warn().Str("config", conf.Path).Strs("pools", listens).Str("upstream", cfg.upstreamAddr.String()).
			Msg("no php-fpm pool in the configuration listens on the upstream address; is FCGISCOPE_UPSTREAM right?")
		return conf, nil, tail
	}
	log.Info().Str("config", conf.Path).Str("pool", pool.Name).Stringer("request_terminate_timeout", pool.RequestTerminateTimeout).
		Int("pm.max_children", pool.MaxChildren).Msg("read the php-fpm pool configuration")
	return conf, pool, tail
}

// reloadOnSignal reads php-fpm's pool, php.ini and nginx's configuration
// again on SIGHUP, as operators and process managers expect of a daemon,
// and on SIGUSR1 and SIGUSR2 (which nginx and php-fpm take to reopen their
// logs or reload), whose default would kill fcgiscope with every request
// in flight. Requests go on meanwhile; the logs fcgiscope follows are
// reopened after rotation by themselves.
func reloadOnSignal(ctx context.Context, cfg *serveConfig, c *diagnostics.Classifier, nginx *front.Watcher, log zerolog.Logger) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case sig := <-ch:
				log.Info().Str("signal", sig.String()).Msg("reading php-fpm's pool, php.ini and nginx's configuration again")
				conf, pool, _ := loadFPM(cfg, log)
				c.Reload(pool, loadPHPIni(ctx, conf, cfg.PHPIni, log))
				if nginx != nil {
					nginx.ReadAgain()
				}
			}
		}
	}()
}

// watchNginx reads nginx's configuration, logs what it says of the
// locations that pass to fcgiscope, and follows it until ctx ends.
func watchNginx(ctx context.Context, cfg *serveConfig, log zerolog.Logger) *front.Watcher {
	w := &front.Watcher{Path: cfg.NginxConfig, Listen: cfg.listenAddr}
	f := w.Load()
	if cfg.NginxConfig == "-" {
		return w
	}
	logNginx(f, log, "nginx")
	w.Changed = func(f *front.Front) { logNginx(f, log, "nginx's configuration changed") }
	go w.Run(ctx)
	return w
}

func logNginx(f *front.Front, log zerolog.Logger, what string) {
	ev := log.Info()
	if !f.Known() {
		ev = log.Warn()
	}
	ev.Str("fastcgi_read_timeout", f.ReadTimeout().String()).Str("fastcgi_buffer_size", f.BufferSize().String()).
		Msg(what + ": " + f.Describe())
}

// warnSoonerThanNginx warns of the settings that make fcgiscope fail a
// request sooner than nginx alone would.
func warnSoonerThanNginx(cfg *serveConfig, f *front.Front, log zerolog.Logger) {
	rt := f.ReadTimeout()
	if !cfg.queueAuto && cfg.queueTimeout < rt.Value {
		log.Warn().Str("fastcgi_read_timeout", rt.String()).
			Msgf("FCGISCOPE_QUEUE_TIMEOUT=%s fails a request that waits for a free php-fpm worker after %s, but nginx waits up to %s and would have served it; unset FCGISCOPE_QUEUE_TIMEOUT to wait as long as nginx does", cfg.QueueTimeout, cfg.queueTimeout, rt.Value)
	}
	if bs := f.BufferSize(); cfg.MaxHeaderBytes > 0 && int64(cfg.MaxHeaderBytes) < int64(bs.Value) {
		log.Warn().Str("fastcgi_buffer_size", bs.String()).
			Msgf("FCGISCOPE_MAX_HEADER_BYTES=%d refuses response headers that nginx takes (up to %s); raise it to at least %d", cfg.MaxHeaderBytes, bs.Value, int64(bs.Value))
	}
	if cfg.ReadTimeout > 0 && cfg.ReadTimeout < rt.Value {
		log.Warn().Str("fastcgi_read_timeout", rt.String()).
			Msgf("FCGISCOPE_READ_TIMEOUT=%s fails a request whose script is silent for %s, but nginx waits up to %s; raise it above nginx's fastcgi_read_timeout or set it to 0", cfg.ReadTimeout, cfg.ReadTimeout, rt.Value)
	}
}

// readFPMConfig reads the php-fpm configuration at path, or in the usual
// places when path is empty.
func readFPMConfig(path string) (*fpm.Config, error) {
	if path != "" {
		return fpm.Load(path, nil)
	}
	return fpm.Discover(nil)
}

// checkKeepAlive refuses kept upstream connections that the pool would
// punish: php-fpm counts a worker waiting on a kept connection as busy, so
// it must not hold every worker, nor idle long enough for php-fpm to log it
// as slow or kill it as timed out.
//
// With FCGISCOPE_UPSTREAM_KEEPALIVE=auto it chooses instead of refusing:
// up to pm.max_children - 1 connections, idle no longer than half of the
// pool's timeouts, and none when the pool is unknown or has one worker.
func checkKeepAlive(cfg *serveConfig, pool *fpm.Pool, log zerolog.Logger) error {
	if cfg.keepAliveAuto {
		autoKeepAlive(cfg, pool, log)
		return nil
	}
	if cfg.upstreamKeepAlive == 0 {
		return nil
	}
	if pool == nil {
		log.Warn().Int("upstream_keepalive", cfg.upstreamKeepAlive).Stringer("upstream_keepalive_timeout", cfg.UpstreamKeepAliveTimeout).
			Msg("keeping php-fpm connections without knowing the pool: keep FCGISCOPE_UPSTREAM_KEEPALIVE below pm.max_children and FCGISCOPE_UPSTREAM_KEEPALIVE_TIMEOUT below request_terminate_timeout and request_slowlog_timeout, or php-fpm kills idle workers as timed out; set FCGISCOPE_FPM_CONFIG to have this checked")
		return nil
	}
	var errs []error
	if pool.MaxChildren > 0 && cfg.upstreamKeepAlive >= pool.MaxChildren {
		errs = append(errs, &configError{"FCGISCOPE_UPSTREAM_KEEPALIVE", strconv.Itoa(cfg.upstreamKeepAlive),
			fmt.Sprintf("idle kept connections would hold all of pool %s's pm.max_children = %d workers%s, leaving none for its status page and other clients; set it to %d or less",
				pool.Name, pool.MaxChildren, settingAt(pool, "pm.max_children"), pool.MaxChildren-1)})
	}
	timeout := cfg.UpstreamKeepAliveTimeout
	if timeout == 0 {
		timeout = proxy.DefaultUpstreamKeepAliveTimeout
	}
	for _, limit := range []struct {
		key, consequence string
		d                time.Duration
	}{
		{"request_terminate_timeout", "kill the idle worker and log it as timed out", pool.RequestTerminateTimeout},
		{"request_slowlog_timeout", "log the idle worker as a slow request", pool.RequestSlowlogTimeout},
	} {
		if limit.d > 0 && timeout >= limit.d {
			errs = append(errs, &configError{"FCGISCOPE_UPSTREAM_KEEPALIVE_TIMEOUT", timeout.String(),
				fmt.Sprintf("not below pool %s's %s = %s%s: php-fpm would %s; set it to %s or less",
					pool.Name, limit.key, limit.d, settingAt(pool, limit.key), limit.consequence, limit.d/2)})
		}
	}
	return errors.Join(errs...)
}

// autoKeepAlive sets the kept upstream connections from the pool's
// settings: one worker less than pm.max_children, so that the status page
// and other clients of the pool always find one, and an idle timeout below
// what php-fpm punishes, because php-fpm counts a worker waiting on a kept
// connection as busy (php-src bug #78405). Without the pool's settings it
// keeps none: too many kept connections could hold every worker.
func autoKeepAlive(cfg *serveConfig, pool *fpm.Pool, log zerolog.Logger) {
	cfg.upstreamKeepAlive = 0
	switch {
	case pool == nil || pool.MaxChildren == 0:
		log.Info().Msg("opening a php-fpm connection per request: FCGISCOPE_UPSTREAM_KEEPALIVE=auto keeps connections only when it knows the pool's pm.max_children; set FCGISCOPE_FPM_CONFIG, or FCGISCOPE_UPSTREAM_KEEPALIVE to a number below pm.max_children")
		return
	case pool.MaxChildren == 1:
		log.Info().Msgf("opening a php-fpm connection per request: pool %s has pm.max_children = 1%s, and a kept connection would hold its only worker (FCGISCOPE_UPSTREAM_KEEPALIVE=auto)", pool.Name, settingAt(pool, "pm.max_children"))
		return
	}
	timeout := cfg.UpstreamKeepAliveTimeout
	if timeout <= 0 {
		timeout = proxy.DefaultUpstreamKeepAliveTimeout
	}
	for _, limit := range []time.Duration{pool.RequestTerminateTimeout, pool.RequestSlowlogTimeout} {
		if limit > 0 && timeout >= limit {
			timeout = limit / 2
		}
	}
	cfg.upstreamKeepAlive, cfg.UpstreamKeepAliveTimeout = pool.MaxChildren-1, timeout
	log.Info().Int("upstream_keepalive", cfg.upstreamKeepAlive).Stringer("upstream_keepalive_timeout", timeout).
		Msgf("keeping up to %d idle php-fpm connections for %s each: pool %s has pm.max_children = %d%s, and one worker stays free for its status page and other clients (FCGISCOPE_UPSTREAM_KEEPALIVE=auto); FCGISCOPE_UPSTREAM_KEEPALIVE=0 opens a connection per request",
			cfg.upstreamKeepAlive, timeout, pool.Name, pool.MaxChildren, settingAt(pool, "pm.max_children"))
}

// settingAt returns " (file:line)" for a pool setting whose place in the
// configuration is known, else "".
func settingAt(pool *fpm.Pool, key string) string {
	if s, ok := pool.Settings[key]; ok && s.File != "" {
		return fmt.Sprintf(" (%s:%d)", s.File, s.Line)
	}
	return ""
}

// errorLog returns php-fpm's error log: the one named in FCGISCOPE_FPM_LOG,
// else the configuration's error_log.
func errorLog(path string, conf *fpm.Config, log zerolog.Logger) *fpm.Follower {
	if path == "" && conf != nil {
		path = conf.ErrorLog
		if path != "" && !filepath.IsAbs(path) && path != "syslog" {
			path = filepath.Join(conf.Prefix, path)
		}
	}
	if path == "" {
		return nil
	}
	if !fpm.Readable(path) {
		log.Warn().Str("fpm_log", path).Msg("php-fpm's error log cannot be read here (syslog, another process's stderr, or no permission): crashes are reported without the signal; set FCGISCOPE_FPM_LOG")
		return nil
	}
	log.Info().Str("fpm_log", path).Msg("reading php-fpm's error log to explain dead workers")
	return &fpm.Follower{Path: path}
}

// statusPath is the status page to poll: the setting, else the pool's
// pm.status_path.
func statusPath(cfg *serveConfig, pool *fpm.Pool) string {
	switch {
	case cfg.FPMStatusPath == "-":
		return ""
	case cfg.FPMStatusPath != "":
		return cfg.FPMStatusPath
	case pool != nil:
		return pool.StatusPath
	}
	return ""
}
