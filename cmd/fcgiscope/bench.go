package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/bench"
	"github.com/fcgiscope/fcgiscope/internal/cliflag"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

const benchUsageText = `Usage: fcgiscope bench --upstream ADDR --script /path/to/script.php [flags]

Sends FastCGI requests straight to ADDR (php-fpm's listen address, or
fcgiscope's) from -c workers, each with its own connection, and reports
throughput, latency percentiles and errors by cause, as wrk does for HTTP.

Every response is validated: its CGI status (200 when it has no Status
header) against --expect-status, and its body against --expect-body-sha256
or --expect-body-prefix. A response that fails counts as an error, never as
throughput. The run lasts -d, or sends exactly -n requests; with both it ends
at whichever comes first; with neither it lasts 10s.

With --keep-conn, php-fpm binds one worker process to each connection until
it closes: keep -c at or below pm.max_children, or the other connections wait
in the listen queue for the whole run (reported as stalled workers).

Examples:
  fcgiscope bench --upstream unix:/run/php/php8.2-fpm.sock --script /var/www/html/index.php -c 32 -d 30s
  fcgiscope bench --upstream 127.0.0.1:9000 --script /srv/echo.php --method POST --body-size 65536 -n 10000 --format json

Exit status: 0 when every measured request succeeded, 1 when a request
failed or none was measured, 2 for a usage error.

Flags:
`

// benchFlags are the parsed flags of `fcgiscope bench`.
type benchFlags struct {
	upstream, script, method, format, expectStatus, sha, prefix string
	concurrency, requests, bodySize                             int
	duration, warmup, timeout, connectTimeout                   time.Duration
	keepConn                                                    bool
	params                                                      []fcgi.Pair
}

// benchMain runs `fcgiscope bench` with the arguments after "bench". It
// writes the result to stdout and progress and problems to stderr, and
// returns the exit code.
func benchMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, format, err := parseBenchArgs(args, stdout)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "fcgiscope bench: %v\n", err)
		if ce := (*cliflag.Error)(nil); !errors.As(err, &ce) {
			fmt.Fprintln(stderr, "Run 'fcgiscope bench -h' for the flags.")
		}
		return exitUsage
	}

	limit := fmt.Sprintf("%d requests", cfg.Requests)
	switch {
	case cfg.Requests > 0 && cfg.Duration > 0:
		limit += fmt.Sprintf(" or %s", cfg.Duration)
	case cfg.Duration > 0:
		limit = cfg.Duration.String()
	}
	warm := ""
	if cfg.Warmup > 0 {
		warm = fmt.Sprintf(" after a %s warm-up", cfg.Warmup)
	}
	fmt.Fprintf(stderr, "fcgiscope bench: %s%s, %d workers, against %s %s\n", limit, warm, cfg.Concurrency, cfg.Upstream, cfg.Script)

	res, err := bench.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "fcgiscope bench: %v\n", err)
		return exitUsage
	}
	if format == "json" {
		b, err := res.JSON()
		if err != nil {
			fmt.Fprintf(stderr, "fcgiscope bench: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		res.WriteText(stdout)
	}
	if res.Interrupted {
		if code := exitCodeForContext(ctx); code != exitOK {
			return code
		}
	}
	switch {
	case res.ErrorCount() > 0:
		fmt.Fprintf(stderr, "fcgiscope bench: %d of %d requests failed\n", res.ErrorCount(), res.Requests)
		return exitFailure
	case res.Successes == 0:
		fmt.Fprintln(stderr, "fcgiscope bench: no request was measured")
		return exitFailure
	}
	return exitOK
}

// parseBenchArgs turns the arguments into a bench.Config and the output
// format, or explains what is wrong with them. For -h it writes the usage to
// help and returns flag.ErrHelp.
func parseBenchArgs(args []string, help io.Writer) (bench.Config, string, error) {
	var f benchFlags
	fset := flag.NewFlagSet("bench", flag.ContinueOnError)
	// Problems are reported by the caller, in one place.
	fset.SetOutput(io.Discard)
	fset.Usage = func() {}
	fset.StringVar(&f.upstream, "upstream", "", "FastCGI address to load: host:port or unix:/path (required)")
	fset.StringVar(&f.script, "script", "", "absolute path of the script, sent as SCRIPT_FILENAME; a ?query is sent as QUERY_STRING (required)")
	fset.IntVar(&f.concurrency, "c", bench.DefaultConcurrency, "number of workers, each with its own connection")
	fset.DurationVar(&f.duration, "d", 0, "length of the measured run, as in 10s or 1m (default 10s unless -n is given)")
	fset.IntVar(&f.requests, "n", 0, "number of measured requests, shared by the workers")
	fset.BoolVar(&f.keepConn, "keep-conn", false, "set FCGI_KEEP_CONN and reuse each worker's connection; otherwise every request connects anew")
	fset.IntVar(&f.bodySize, "body-size", 0, "bytes of request body sent as STDIN (deterministic content, see bench.Body)")
	fset.StringVar(&f.method, "method", bench.DefaultMethod, "REQUEST_METHOD")
	fset.Func("param", "`NAME=VALUE` to send in PARAMS, replacing a default of that name; repeatable", func(v string) error {
		name, value, ok := strings.Cut(v, "=")
		if !ok || name == "" {
			return fmt.Errorf("want NAME=VALUE, as in --param HTTP_HOST=example.com")
		}
		f.params = append(f.params, fcgi.Pair{Name: name, Value: value})
		return nil
	})
	fset.StringVar(&f.expectStatus, "expect-status", strconv.Itoa(bench.DefaultStatus), "CGI status every response must have, or \"any\"")
	fset.StringVar(&f.sha, "expect-body-sha256", "", "hex SHA-256 every response body must have")
	fset.StringVar(&f.prefix, "expect-body-prefix", "", "text every response body must start with")
	fset.DurationVar(&f.warmup, "warmup", 0, "period before the measured one whose requests are not counted (default 1s with -d, 0 with -n)")
	fset.StringVar(&f.format, "format", "text", "output format: text or json")
	fset.DurationVar(&f.timeout, "timeout", bench.DefaultTimeout, "fail a request without END_REQUEST after this long")
	fset.DurationVar(&f.connectTimeout, "connect-timeout", bench.DefaultDialTimeout, "fail a connection attempt after this long")

	if err := cliflag.Parse(fset, args, cliflag.Options{Help: "'fcgiscope bench -h' lists the flags"}); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(help, benchUsageText)
			fset.SetOutput(help)
			fset.PrintDefaults()
		}
		return bench.Config{}, "", err
	}
	set := make(map[string]bool)
	fset.Visit(func(fl *flag.Flag) { set[fl.Name] = true })

	var problems []string
	bad := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }
	if fset.NArg() > 0 {
		bad("bench takes no arguments, got %q; settings are flags such as --script", fset.Args())
	}
	cfg := bench.Config{
		Script:           f.script,
		Concurrency:      f.concurrency,
		Requests:         f.requests,
		Duration:         f.duration,
		Warmup:           f.warmup,
		KeepConn:         f.keepConn,
		Method:           f.method,
		BodySize:         f.bodySize,
		Params:           f.params,
		ExpectBodySHA256: f.sha,
		ExpectBodyPrefix: f.prefix,
		Timeout:          f.timeout,
		DialTimeout:      f.connectTimeout,
	}
	if f.upstream == "" {
		bad("--upstream is required: php-fpm's address, as in --upstream unix:/run/php/php8.2-fpm.sock or --upstream 127.0.0.1:9000")
	} else if addr, err := fcgi.ParseAddr(f.upstream); err != nil {
		bad("--upstream: %v", err)
	} else {
		cfg.Upstream = addr
	}
	switch {
	case f.script == "":
		bad("--script is required: the absolute path php-fpm runs, as in --script /var/www/html/index.php")
	case !strings.HasPrefix(f.script, "/"):
		bad("--script %q must be an absolute path: php-fpm resolves SCRIPT_FILENAME on its own file system", f.script)
	}
	if f.concurrency < 1 {
		bad("-c %d: need at least 1 worker", f.concurrency)
	}
	if f.requests < 0 || set["n"] && f.requests == 0 {
		bad("-n %d: need at least 1 request", f.requests)
	}
	if f.duration < 0 || set["d"] && f.duration == 0 {
		bad("-d %s: need a positive duration, as in -d 10s", f.duration)
	}
	if !set["d"] && !set["n"] {
		cfg.Duration = 10 * time.Second
	}
	if !set["warmup"] && cfg.Duration > 0 && !set["n"] {
		cfg.Warmup = time.Second
	}
	if f.warmup < 0 {
		bad("--warmup %s must not be negative", f.warmup)
	}
	if f.timeout <= 0 {
		bad("--timeout %s must be positive", f.timeout)
	}
	if f.connectTimeout <= 0 {
		bad("--connect-timeout %s must be positive", f.connectTimeout)
	}
	if f.bodySize < 0 {
		bad("--body-size %d must not be negative", f.bodySize)
	}
	if f.method == "" || strings.ContainsAny(f.method, " \t\r\n") {
		bad("--method %q is not an HTTP method", f.method)
	}
	if f.expectStatus == "any" {
		cfg.ExpectStatus = bench.AnyStatus
	} else if n, err := strconv.Atoi(f.expectStatus); err != nil || n < 100 || n > 999 {
		bad("--expect-status %q: want a three-digit status such as 200, or \"any\"", f.expectStatus)
	} else {
		cfg.ExpectStatus = n
	}
	if f.sha != "" && f.prefix != "" {
		bad("--expect-body-sha256 and --expect-body-prefix both given; give one")
	}
	if f.sha != "" && !isSHA256Hex(f.sha) {
		bad("--expect-body-sha256 %q: want 64 hex digits, as sha256sum prints", f.sha)
	}
	if f.format != "text" && f.format != "json" {
		bad("--format %q: want text or json", f.format)
	}
	if len(problems) > 0 {
		return cfg, "", errors.New(strings.Join(problems, "\nfcgiscope bench: "))
	}
	return cfg, f.format, nil
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}
