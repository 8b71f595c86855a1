package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/httpgateway"
	"github.com/fcgiscope/fcgiscope/internal/phpfpm"
)

// httpConfig is the configuration of `fcgiscope http`, read like serve's:
// environment variables, overridden by flags of the same name in kebab case.
// The variables it shares with serve (FCGISCOPE_UPSTREAM and the rest) mean
// the same; the defaults suit one developer on one machine.
type httpConfig struct {
	Listen          string        `env:"FCGISCOPE_LISTEN" envDefault:"127.0.0.1:8080" help:"HTTP address to listen on (host:port); keep it on loopback, this is a debugging server"`
	Root            string        `env:"FCGISCOPE_ROOT" envDefault:"." help:"document root: static files are served from it and PHP scripts run from it"`
	Upstream        string        `env:"FCGISCOPE_UPSTREAM" envDefault:"127.0.0.1:9000" help:"php-fpm address (host:port or unix:/path); ignored with --fpm"`
	FPM             string        `env:"FCGISCOPE_FPM" help:"auto: start a private php-fpm (the newest in PATH, /usr/sbin or /usr/local/sbin) and stop it on exit; or the path of the php-fpm binary to start; empty uses --upstream"`
	FPMWorkers      int           `env:"FCGISCOPE_FPM_WORKERS" envDefault:"0" help:"pm.max_children of the php-fpm that --fpm starts; 0 means the number of CPUs, 2 to 4"`
	Index           string        `env:"FCGISCOPE_INDEX" envDefault:"index.php" help:"directory index files, comma-separated, tried in order; the first .php one is the front controller"`
	TryFiles        bool          `env:"FCGISCOPE_TRY_FILES" envDefault:"true" help:"send paths that are no file to the front controller, as nginx's try_files $uri $uri/ /index.php?$query_string"`
	ConnectTimeout  time.Duration `env:"FCGISCOPE_CONNECT_TIMEOUT" envDefault:"3s" help:"how long to wait for php-fpm to accept a connection"`
	ReadTimeout     time.Duration `env:"FCGISCOPE_READ_TIMEOUT" envDefault:"0s" help:"fail a request when php-fpm sends nothing for this long; 0 turns it off"`
	HoldBytes       int           `env:"FCGISCOPE_HOLD_BYTES" envDefault:"65536" help:"response bytes held back so that a dying worker's response can still be replaced; 0 streams at once"`
	ErrorDetail     string        `env:"FCGISCOPE_ERROR_DETAIL" envDefault:"local" help:"what error pages show: full, local (full for loopback and FCGISCOPE_TRUSTED_NETWORKS clients, minimal otherwise) or minimal"`
	TrustedNetworks string        `env:"FCGISCOPE_TRUSTED_NETWORKS" help:"networks (CIDR, comma-separated) whose clients count as local for FCGISCOPE_ERROR_DETAIL, besides loopback"`
	ServerTiming    bool          `env:"FCGISCOPE_SERVER_TIMING" envDefault:"true" help:"add a Server-Timing header with connect and wait times to every PHP response"`
	FPMConfig       string        `env:"FCGISCOPE_FPM_CONFIG" help:"php-fpm.conf or pool file to read timeouts and limits from; empty looks in the usual places (with --fpm, the one it writes)"`
	FPMLog          string        `env:"FCGISCOPE_FPM_LOG" help:"php-fpm error log to read when a worker dies; empty takes error_log from the php-fpm configuration"`
	PHPIni          string        `env:"FCGISCOPE_PHP_INI" help:"the php.ini php-fpm loads, to read PHP's limits (post_max_size, upload_max_filesize) and error_log; its conf.d beside it is read too. Empty looks beside the php-fpm configuration, then asks the local php-fpm binary"`
	PHPLog          string        `env:"FCGISCOPE_PHP_LOG" help:"the file PHP writes its errors to, when error_log sends them to a file; empty takes error_log from the pool and php.ini"`
	ShutdownTimeout time.Duration `env:"FCGISCOPE_SHUTDOWN_TIMEOUT" envDefault:"5s" help:"how long requests in flight may take to finish on Ctrl-C or SIGTERM"`
	LogFormat       string        `env:"FCGISCOPE_LOG_FORMAT" envDefault:"console" help:"log format: console or json"`
	LogLevel        string        `env:"FCGISCOPE_LOG_LEVEL" envDefault:"info" help:"log level: debug (adds static files), info, warn or error"`

	listenAddr   fcgi.Addr
	upstreamAddr fcgi.Addr
	index        []string
	logLevel     zerolog.Level
	errorDetail  diagnostics.Detail
	trusted      []netip.Prefix
}

const httpUsage = `fcgiscope http serves a PHP application over HTTP for local debugging,
with no nginx: static files from --root, PHP scripts through php-fpm, and for
every failed request the explanation the sidecar gives (cause, page, log line).

  fcgiscope http --root ./public --upstream unix:/run/php/php8.2-fpm.sock
  fcgiscope http --root examples/php --fpm auto     # starts its own php-fpm

`

// validate checks the values and fills in the parsed forms.
func (c *httpConfig) validate() error {
	var errs []error
	var err error
	if c.listenAddr, err = parseHTTPListen(c.Listen); err != nil {
		errs = append(errs, &configError{"FCGISCOPE_LISTEN", c.Listen, err.Error()})
	}
	switch {
	case c.FPM == "", c.FPM == "auto":
	case !filepath.IsAbs(c.FPM) && !strings.Contains(c.FPM, "/"):
		errs = append(errs, &configError{"FCGISCOPE_FPM", c.FPM, "must be auto, empty, or the path of a php-fpm binary such as /usr/sbin/php-fpm8.2"})
	}
	if c.FPM == "" {
		if c.upstreamAddr, err = fcgi.ParseAddr(c.Upstream); err != nil {
			errs = append(errs, &configError{"FCGISCOPE_UPSTREAM", c.Upstream, err.Error()})
		}
	}
	if fi, err := os.Stat(c.Root); err != nil || !fi.IsDir() {
		errs = append(errs, &configError{"FCGISCOPE_ROOT", c.Root, "not a directory"})
	}
	for _, name := range strings.Split(c.Index, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if strings.ContainsAny(name, "/\\") {
			errs = append(errs, &configError{"FCGISCOPE_INDEX", c.Index, "list file names, as in index.php,index.html"})
			break
		}
		c.index = append(c.index, name)
	}
	if c.errorDetail, err = diagnostics.ParseDetail(c.ErrorDetail); err != nil {
		errs = append(errs, &configError{"FCGISCOPE_ERROR_DETAIL", c.ErrorDetail, err.Error()})
	}
	if c.trusted, err = diagnostics.ParseNetworks(c.TrustedNetworks); err != nil {
		errs = append(errs, &configError{"FCGISCOPE_TRUSTED_NETWORKS", c.TrustedNetworks, err.Error() + "; write networks as 10.0.0.0/8, comma-separated"})
	}
	switch c.LogFormat {
	case "json", "console":
	default:
		errs = append(errs, &configError{"FCGISCOPE_LOG_FORMAT", c.LogFormat, "must be json or console"})
	}
	if c.logLevel, err = zerolog.ParseLevel(strings.ToLower(c.LogLevel)); err != nil || c.LogLevel == "" {
		errs = append(errs, &configError{"FCGISCOPE_LOG_LEVEL", c.LogLevel, "must be one of trace, debug, info, warn, error"})
	}
	return errors.Join(errs...)
}

// httpMain runs `fcgiscope http` until ctx ends.
func httpMain(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) int {
	var cfg httpConfig
	if exit, ok := configure(&cfg, "http", args, environ, stderr, "\n"+httpUsage, "the document root is --root"); !ok {
		return exit
	}
	log := newLogger(cfg.LogFormat, cfg.logLevel, stdout)

	// Everything started below stops when this function returns: the
	// goroutines watch ctx, which is cancelled before they are waited for.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var conf *fpm.Config
	var pool *fpm.Pool
	var fpmLog *fpm.Follower
	upstream := cfg.upstreamAddr
	if cfg.FPM != "" {
		fpmCfg := phpfpm.Development()
		if cfg.FPM != "auto" {
			fpmCfg.Binary = cfg.FPM
		}
		fpmCfg.MaxChildren, fpmCfg.Env = cfg.FPMWorkers, environ
		php, err := phpfpm.Start(ctx, fpmCfg)
		if err != nil {
			log.Error().Err(err).Msg("cannot start php-fpm")
			return exitFailure
		}
		defer func() {
			cancel(nil) // php-fpm's exit is expected from here on
			start := time.Now()
			if err := php.Stop(cfg.ShutdownTimeout); err != nil {
				log.Warn().Err(err).Int("pid", php.Pid).Msg("stopping php-fpm")
			} else {
				log.Info().Int("pid", php.Pid).Stringer("took", time.Since(start)).Msg("php-fpm stopped")
			}
		}()
		upstream = php.Addr
		log.Info().Int("pid", php.Pid).Ints("workers", php.Workers()).Str("binary", php.Binary).Str("config", php.ConfigPath).
			Str("error_log", php.ErrorLog).Str("slowlog", php.SlowLog).Str("upstream", upstream.String()).Msg("php-fpm started")
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-php.Done():
				if ctx.Err() == nil {
					log.Error().Int("pid", php.Pid).Str("error_log", php.ErrorLog).Msg("php-fpm exited on its own; requests now fail until fcgiscope is restarted")
				}
			case <-ctx.Done():
			}
		}()
		if c, err := fpm.Load(php.ConfigPath, nil); err == nil {
			conf, pool = c, c.PoolFor(upstream)
		}
		fpmLog = &fpm.Follower{Path: php.ErrorLog}
	} else {
		conf, pool, fpmLog = loadFPM(&serveConfig{FPMConfig: cfg.FPMConfig, FPMLog: cfg.FPMLog, upstreamAddr: upstream}, log)
	}
	if fpmLog != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fpmLog.Run(ctx); err != nil {
				log.Warn().Err(err).Str("fpm_log", fpmLog.Path).Msg("cannot follow php-fpm's error log")
			}
		}()
	}
	classifier := &diagnostics.Classifier{
		Pool:   pool,
		Log:    fpmLog,
		Finder: &diagnostics.Finder{},
		Done:   ctx.Done(),
		// One person waits for the page: a second for php-fpm's word on
		// a dead worker costs nothing and survives a loaded machine.
		LogWait: time.Second,
	}
	watchPHP(ctx, classifier, conf, cfg.PHPIni, cfg.PHPLog, log)
	explainer := &diagnostics.Explainer{
		Classifier: classifier,
		Detail:     cfg.errorDetail,
		Trusted:    cfg.trusted,
		Sinks:      []diagnostics.Sink{&diagnostics.AccessLog{Log: log, Stderr: true}},
	}
	tracer, err := startTracing(ctx, pool, log)
	if err != nil {
		fmt.Fprintf(stderr, "fcgiscope http: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	if tracer != nil {
		explainer.Sinks = append(explainer.Sinks, tracer)
		defer stopTracing(tracer, log)
	}
	gw := &httpgateway.Gateway{
		Root:           cfg.Root,
		Upstream:       upstream,
		Index:          cfg.index,
		TryFiles:       cfg.TryFiles,
		ConnectTimeout: cfg.ConnectTimeout,
		ReadTimeout:    cfg.ReadTimeout,
		HoldBytes:      cfg.HoldBytes,
		ServerTiming:   cfg.ServerTiming,
		ServerSoftware: "fcgiscope/" + version,
		Responder:      explainer,
		Observer:       explainer,
		Reviewer:       explainer,
		Log:            log,
	}
	if tracer != nil { // a nil *tracing.Tracer must not become a non-nil interface
		gw.Tracer = tracer
	}
	if err := gw.Init(); err != nil {
		log.Error().Err(err).Msg("cannot serve")
		return exitFailure
	}

	ln, err := net.Listen(cfg.listenAddr.Network, cfg.listenAddr.Address)
	if err != nil {
		log.Error().Err(err).Str("listen", cfg.Listen).Msg(listenProblem(err, cfg.listenAddr, "FCGISCOPE_LISTEN"))
		return exitFailure
	}
	srv := &http.Server{
		Handler:           gw,
		ConnContext:       gw.ConnContext,
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          stdlog.New(log.With().Str("component", "net/http").Logger(), "", 0),
	}
	url := listenURL(ln.Addr())
	ev := log.Info().Str("listen", ln.Addr().String()).Str("url", url).Str("root", gw.DocumentRoot()).
		Str("upstream", upstream.String()).Bool("try_files", cfg.TryFiles).Str("version", version)
	if pool != nil {
		ev = ev.Str("pool", pool.Name).Stringer("request_terminate_timeout", pool.RequestTerminateTimeout)
	}
	ev.Msg("fcgiscope http is serving; open " + url)
	if !isLoopback(ln.Addr()) {
		log.Warn().Str("listen", ln.Addr().String()).Msg("listening beyond loopback: fcgiscope http is a debugging server, not hardened for the internet; remote clients see minimal error details unless FCGISCOPE_ERROR_DETAIL=full")
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		log.Error().Err(err).Msg("the listener failed")
		return exitFailure
	case <-ctx.Done():
	}
	log.Info().Str("reason", context.Cause(ctx).Error()).Stringer("timeout", cfg.ShutdownTimeout).Msg("stopping: no new connections, waiting for requests in flight")
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("requests still in flight were cut off")
		srv.Close()
	}
	<-served
	return exitCodeForContext(ctx)
}

// parseHTTPListen reads the listen address: host:port, where port 0 picks
// a free port, or a unix socket.
func parseHTTPListen(s string) (fcgi.Addr, error) {
	if strings.HasPrefix(s, "unix:") {
		return fcgi.ParseAddr(s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fcgi.Addr{}, errors.New("write host:port, as in 127.0.0.1:8080 (0 as the port picks a free one)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fcgi.Addr{}, errors.New("the port must be a number from 0 to 65535")
	}
	return fcgi.Addr{Network: "tcp", Address: net.JoinHostPort(host, port)}, nil
}

// listenURL is the address to open in a browser.
func listenURL(a net.Addr) string {
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "http://" + a.String() + "/"
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

func isLoopback(a net.Addr) bool {
	if a.Network() == "unix" {
		return true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
