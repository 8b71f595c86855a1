package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/fcgiscope/fcgiscope/internal/cliflag"
	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// serveConfig is the configuration of `fcgiscope serve`. Every field is read
// from its environment variable and can be overridden by the flag of the same
// name in kebab case (FCGISCOPE_CONNECT_TIMEOUT -> --connect-timeout).
type serveConfig struct {
	Listen                   string        `env:"FCGISCOPE_LISTEN" envDefault:"127.0.0.1:9001" help:"address the web server connects to (host:port or unix:/path)"`
	ListenMode               string        `env:"FCGISCOPE_LISTEN_MODE" envDefault:"0660" help:"file mode of a unix listen socket, in octal"`
	Upstream                 string        `env:"FCGISCOPE_UPSTREAM" envDefault:"127.0.0.1:9000" help:"php-fpm address (host:port or unix:/path)"`
	ConnectTimeout           time.Duration `env:"FCGISCOPE_CONNECT_TIMEOUT" envDefault:"3s" help:"how long to wait for php-fpm to accept a connection"`
	ReadTimeout              time.Duration `env:"FCGISCOPE_READ_TIMEOUT" envDefault:"0s" help:"fail a request when php-fpm sends nothing for this long; 0 turns it off"`
	HoldBytes                int           `env:"FCGISCOPE_HOLD_BYTES" envDefault:"65536" help:"response bytes held back so that a dying worker's response can still be replaced; 0 streams at once"`
	ReplayBodyBytes          int           `env:"FCGISCOPE_REPLAY_BODY_BYTES" envDefault:"0" help:"keep the body of a failed request, when it is at most this many bytes, for fcgiscope request --replay (secret-looking form and JSON fields are replaced); 0 keeps no body"`
	MaxConns                 int           `env:"FCGISCOPE_MAX_CONNS" envDefault:"0" help:"requests in flight to php-fpm at most; more wait in line. 0 means the pool's pm.max_children when known, else no limit"`
	QueueTimeout             string        `env:"FCGISCOPE_QUEUE_TIMEOUT" envDefault:"auto" help:"how long a request may wait for a free slot or for a restarting php-fpm before a 503; auto waits as long as nginx does (its fastcgi_read_timeout), 0 fails at once"`
	UpstreamKeepAlive        string        `env:"FCGISCOPE_UPSTREAM_KEEPALIVE" envDefault:"auto" help:"idle php-fpm connections kept open for the next bodyless GET, HEAD or OPTIONS, as nginx's keepalive; each holds a worker, so keep it below pm.max_children. auto keeps up to pm.max_children - 1 when the pool's configuration is known and none otherwise; 0 opens a connection per request"`
	UpstreamKeepAliveTimeout time.Duration `env:"FCGISCOPE_UPSTREAM_KEEPALIVE_TIMEOUT" envDefault:"1s" help:"close a kept php-fpm connection idle for this long; must stay below request_terminate_timeout and request_slowlog_timeout"`
	MaxHeaderBytes           int           `env:"FCGISCOPE_MAX_HEADER_BYTES" envDefault:"65536" help:"largest CGI header block accepted from php-fpm; longer headers fail the request with upstream_protocol_error"`
	IdleTimeout              time.Duration `env:"FCGISCOPE_IDLE_TIMEOUT" envDefault:"120s" help:"close a web server connection that starts no request, or stalls in a request body, for this long; 0 turns it off"`
	ParamsTimeout            time.Duration `env:"FCGISCOPE_PARAMS_TIMEOUT" envDefault:"30s" help:"how long the web server may take to send a request head (PARAMS), and a new connection its first request (idle connections that send none would use up FCGISCOPE_MAX_CLIENT_CONNS); 0 turns it off"`
	MaxClientConns           int           `env:"FCGISCOPE_MAX_CLIENT_CONNS" envDefault:"10000" help:"open web server connections at most; more wait in the listen queue. 0 means no limit"`
	MaxParamsBytes           int           `env:"FCGISCOPE_MAX_PARAMS_BYTES" envDefault:"1048576" help:"largest FastCGI PARAMS stream accepted from the web server"`
	ErrorDetail              string        `env:"FCGISCOPE_ERROR_DETAIL" envDefault:"local" help:"what error pages show: full, local (full for loopback and FCGISCOPE_TRUSTED_NETWORKS clients, minimal otherwise) or minimal"`
	TrustedNetworks          string        `env:"FCGISCOPE_TRUSTED_NETWORKS" help:"networks (CIDR, comma-separated) whose clients count as local for FCGISCOPE_ERROR_DETAIL and the admin API, besides loopback. Empty trusts loopback only: in a cluster every visitor comes from the ingress's private address"`
	LogRedact                bool          `env:"FCGISCOPE_LOG_REDACT" envDefault:"false" help:"hide the values of secret-looking query parameters (password, token, key, ...) in the log's uri, as the pages and the admin API always do"`
	ServerTiming             bool          `env:"FCGISCOPE_SERVER_TIMING" envDefault:"false" help:"add a Server-Timing header with connect and wait times to every response"`
	NginxConfig              string        `env:"FCGISCOPE_NGINX_CONFIG" help:"nginx.conf, or the output of nginx -T saved to a file, to learn nginx's timeouts and buffer sizes where it passes to fcgiscope; empty looks in the usual places, - turns it off"`
	FPMConfig                string        `env:"FCGISCOPE_FPM_CONFIG" help:"php-fpm.conf or pool file to read timeouts and limits from; empty looks in the usual places"`
	FPMLog                   string        `env:"FCGISCOPE_FPM_LOG" help:"php-fpm error log to read when a worker dies; empty takes error_log from the php-fpm configuration"`
	PHPIni                   string        `env:"FCGISCOPE_PHP_INI" help:"the php.ini php-fpm loads, to read PHP's limits (post_max_size, upload_max_filesize) and error_log; its conf.d beside it is read too. Empty looks beside the php-fpm configuration, then asks the local php-fpm binary"`
	PHPLog                   string        `env:"FCGISCOPE_PHP_LOG" help:"the file PHP writes its errors to, when error_log sends them to a file; empty takes error_log from the pool and php.ini"`
	FPMStatusPath            string        `env:"FCGISCOPE_FPM_STATUS_PATH" help:"php-fpm's pm.status_path to poll; empty takes it from the pool configuration, - turns polling off"`
	FPMStatusInterval        time.Duration `env:"FCGISCOPE_FPM_STATUS_INTERVAL" envDefault:"2s" help:"how often to poll php-fpm's status page"`
	AdminListen              string        `env:"FCGISCOPE_ADMIN_LISTEN" envDefault:"127.0.0.1:9180" help:"host:port of the admin HTTP endpoint: /metrics, /healthz, /readyz, the API and the dashboard; empty turns it off"`
	AdminToken               string        `env:"FCGISCOPE_ADMIN_TOKEN" help:"bearer token the admin endpoint requires for everything but /healthz and /readyz; empty requires none"`
	AdminInsecure            bool          `env:"FCGISCOPE_ADMIN_INSECURE" envDefault:"false" help:"let FCGISCOPE_ADMIN_LISTEN be reachable from other hosts without FCGISCOPE_ADMIN_TOKEN; without it fcgiscope refuses to start so"`
	AdminPprof               bool          `env:"FCGISCOPE_ADMIN_PPROF" envDefault:"false" help:"serve Go's profiler under /debug/pprof/ on the admin endpoint"`
	RecentRequests           int           `env:"FCGISCOPE_RECENT_REQUESTS" envDefault:"1000" help:"how many recent requests the admin endpoint keeps for its API and dashboard"`
	ShutdownTimeout          time.Duration `env:"FCGISCOPE_SHUTDOWN_TIMEOUT" envDefault:"30s" help:"how long requests in flight may take to finish on SIGTERM"`
	LogFormat                string        `env:"FCGISCOPE_LOG_FORMAT" envDefault:"json" help:"log format: json or console"`
	LogLevel                 string        `env:"FCGISCOPE_LOG_LEVEL" envDefault:"info" help:"log level: debug, info, warn or error"`

	// Parsed forms, filled in by validate.
	queueTimeout time.Duration // when not queueAuto
	queueAuto    bool
	// upstreamKeepAlive is FCGISCOPE_UPSTREAM_KEEPALIVE's number, or,
	// with keepAliveAuto, what checkKeepAlive makes of the pool.
	upstreamKeepAlive int
	keepAliveAuto     bool
	listenAddr        fcgi.Addr
	listenMode        fs.FileMode
	upstreamAddr      fcgi.Addr
	logLevel          zerolog.Level
	errorDetail       diagnostics.Detail
	trusted           []netip.Prefix
}

// configError is an invalid setting, reported once at start.
type configError struct {
	Var, Value, Problem string
}

func (e *configError) Error() string {
	return fmt.Sprintf("%s=%q: %s", e.Var, e.Value, e.Problem)
}

// flagName turns FCGISCOPE_CONNECT_TIMEOUT into connect-timeout.
func flagName(envName string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(envName, "FCGISCOPE_")), "_", "-")
}

// configFields lists the fields of a config struct that have an env tag.
func configFields(cfg any) []reflect.StructField {
	var fields []reflect.StructField
	t := reflect.TypeOf(cfg).Elem()
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("env") != "" {
			fields = append(fields, f)
		}
	}
	return fields
}

// configure reads and checks the settings of a command that takes no
// arguments, such as serve and http. It reports any problem on stderr and
// then returns false with the exit code; with -h it prints help after the
// flags. noArgs tells a user who passed an argument where it belongs.
func configure(cfg interface{ validate() error }, name string, args, environ []string, stderr io.Writer, help, noArgs string) (exit int, ok bool) {
	rest, err := loadConfig(cfg, name, args, environ, stderr)
	if err != nil {
		if isHelp(err) {
			fmt.Fprint(stderr, help)
			return exitOK, false
		}
		if ce := (*cliflag.Error)(nil); errors.As(err, &ce) {
			fmt.Fprintf(stderr, "fcgiscope %s: %v\n", name, err)
			return exitUsage, false
		}
		fmt.Fprintf(stderr, "fcgiscope %s: invalid configuration:\n%v\n", name, err)
		return exitUsage, false
	}
	if len(rest) > 0 {
		fmt.Fprintf(stderr, "fcgiscope %s: takes no arguments, got %q; %s\n", name, rest, noArgs)
		return exitUsage, false
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintf(stderr, "fcgiscope %s: invalid configuration:\n%v\n", name, err)
		return exitUsage, false
	}
	return exitOK, true
}

// loadConfig reads cfg from environ and then from args, which are flags
// named after the variables. It returns the remaining arguments.
func loadConfig(cfg any, name string, args []string, environ []string, usage io.Writer) ([]string, error) {
	vars := make(map[string]string)
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	fields := configFields(cfg)
	fset := flag.NewFlagSet(name, flag.ContinueOnError)
	fset.SetOutput(usage)
	for _, f := range fields {
		envName := f.Tag.Get("env")
		def, _ := f.Tag.Lookup("envDefault")
		fset.Func(flagName(envName), fmt.Sprintf("%s (env %s)", f.Tag.Get("help"), envName), func(v string) error {
			vars[envName] = v
			return nil
		})
		// The usage and the example of a flag without its value show
		// the default.
		fset.Lookup(flagName(envName)).DefValue = def
	}
	fset.Usage = func() {
		fmt.Fprintf(usage, "Usage: fcgiscope %s [flags]\n\nEvery flag can also be set by its environment variable; flags win.\n\n", name)
		fset.PrintDefaults()
	}
	if err := cliflag.Parse(fset, args, cliflag.Options{Help: fmt.Sprintf("'fcgiscope %s -h' lists the flags", name)}); err != nil {
		return nil, err
	}
	opts := env.Options{
		Environment: vars,
		FuncMap: map[reflect.Type]env.ParserFunc{
			reflect.TypeOf(time.Duration(0)): func(v string) (any, error) {
				d, err := time.ParseDuration(v)
				if err != nil || d < 0 {
					return nil, errors.New("not a duration; write it with a unit, as in 3s, 500ms or 1m, or 0 to turn it off")
				}
				return d, nil
			},
			reflect.TypeOf(false): func(v string) (any, error) {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return nil, errors.New("must be true or false")
				}
				return b, nil
			},
			reflect.TypeOf(0): func(v string) (any, error) {
				n, err := strconv.Atoi(v)
				if err != nil || n < 0 {
					return nil, errors.New("not a whole number of zero or more")
				}
				return n, nil
			},
		},
	}
	if err := env.ParseWithOptions(cfg, opts); err != nil {
		return nil, explainEnvError(err, fields, vars)
	}
	// The env package takes an empty variable for an unset one and applies
	// the default; here an empty value set on purpose means empty, as
	// FCGISCOPE_ADMIN_LISTEN= turning the admin endpoint off.
	v := reflect.ValueOf(cfg).Elem()
	for _, f := range fields {
		if val, set := vars[f.Tag.Get("env")]; set && val == "" && f.Type.Kind() == reflect.String {
			v.FieldByIndex(f.Index).SetString("")
		}
	}
	return fset.Args(), nil
}

// explainEnvError rewrites the env package's error, which names the Go
// field, so that it names the variable and the value the user gave.
func explainEnvError(err error, fields []reflect.StructField, vars map[string]string) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	var msgs []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if !errors.As(e, &pe) {
			msgs = append(msgs, e)
			continue
		}
		for _, f := range fields {
			if f.Name == pe.Name {
				name := f.Tag.Get("env")
				problem := pe.Err.Error()
				msgs = append(msgs, &configError{Var: name, Value: vars[name], Problem: problem})
			}
		}
	}
	return errors.Join(msgs...)
}

// validate checks the values and fills in the parsed forms.
func (c *serveConfig) validate() error {
	var errs []error
	var err error
	if c.listenAddr, err = fcgi.ParseAddr(c.Listen); err != nil {
		errs = append(errs, &configError{"FCGISCOPE_LISTEN", c.Listen, err.Error()})
	}
	if c.upstreamAddr, err = fcgi.ParseAddr(c.Upstream); err != nil {
		errs = append(errs, &configError{"FCGISCOPE_UPSTREAM", c.Upstream, err.Error()})
	}
	if err == nil && c.listenAddr == c.upstreamAddr {
		errs = append(errs, &configError{"FCGISCOPE_UPSTREAM", c.Upstream, "it is the address fcgiscope listens on; point it at php-fpm"})
	}
	if c.QueueTimeout == "auto" {
		c.queueAuto = true
	} else if d, err := time.ParseDuration(c.QueueTimeout); err != nil || d < 0 {
		errs = append(errs, &configError{"FCGISCOPE_QUEUE_TIMEOUT", c.QueueTimeout, "not a duration; write it with a unit, as in 30s, or auto to wait as long as nginx does"})
	} else {
		c.queueTimeout = d
	}
	if c.UpstreamKeepAlive == "auto" {
		c.keepAliveAuto = true
	} else if n, err := strconv.Atoi(c.UpstreamKeepAlive); err != nil || n < 0 {
		errs = append(errs, &configError{"FCGISCOPE_UPSTREAM_KEEPALIVE", c.UpstreamKeepAlive, "not a number of connections; write auto to keep up to pm.max_children - 1, or 0 to open a connection per request"})
	} else {
		c.upstreamKeepAlive = n
	}
	if m, err := strconv.ParseUint(c.ListenMode, 8, 32); err != nil || m > 0o777 {
		errs = append(errs, &configError{"FCGISCOPE_LISTEN_MODE", c.ListenMode, "not an octal file mode; write it as php-fpm's listen.mode, as in 0660"})
	} else {
		c.listenMode = fs.FileMode(m)
	}
	if c.errorDetail, err = diagnostics.ParseDetail(c.ErrorDetail); err != nil {
		errs = append(errs, &configError{"FCGISCOPE_ERROR_DETAIL", c.ErrorDetail, err.Error()})
	}
	if c.trusted, err = diagnostics.ParseNetworks(c.TrustedNetworks); err != nil {
		errs = append(errs, &configError{"FCGISCOPE_TRUSTED_NETWORKS", c.TrustedNetworks, err.Error() + "; write networks as 10.0.0.0/8, comma-separated"})
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			errs = append(errs, &configError{"FCGISCOPE_ADMIN_LISTEN", c.AdminListen, "not host:port, as in 127.0.0.1:9180; empty turns the admin endpoint off"})
		} else if err := web.CheckExposure(c.AdminListen, c.AdminToken); err != nil && !c.AdminInsecure {
			errs = append(errs, &configError{"FCGISCOPE_ADMIN_LISTEN", c.AdminListen, "reachable from other hosts without FCGISCOPE_ADMIN_TOKEN: anyone who reaches it reads recent URIs, script paths and php-fpm's stderr. Set FCGISCOPE_ADMIN_TOKEN, listen on 127.0.0.1, or set FCGISCOPE_ADMIN_INSECURE=true to accept that"})
		}
	}
	if c.RecentRequests < 1 {
		errs = append(errs, &configError{"FCGISCOPE_RECENT_REQUESTS", strconv.Itoa(c.RecentRequests), "must be at least 1"})
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

// newLogger returns the logger the configuration asks for, writing to w.
func newLogger(format string, level zerolog.Level, w io.Writer) zerolog.Logger {
	if format == "console" {
		// Colours only on a terminal: a log redirected to a file or a
		// pipe must read without escape codes.
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.DateTime, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
