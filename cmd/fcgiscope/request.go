package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

const requestUsage = `Usage: fcgiscope request [flags] /script.php?query

Sends one FastCGI request to php-fpm, the way nginx would, and prints the
response headers and body to stdout. php-fpm's FastCGI stderr and the timings
go to stderr. When the request fails, it says why, in the words the sidecar
uses (cause id, detail, hints).

Exit status: 0 when php-fpm completed the response (whatever its HTTP
status), 1 when the request failed, 2 for a usage error.

Flags:
`

// requestOptions is what the command line of `fcgiscope request` asks for.
type requestOptions struct {
	upstream fcgi.Addr
	method   string
	headers  []requestHeader
	// body is the literal -d value; bodyFile the path of -d @file.
	body     *string
	bodyFile string
	params   []fcgi.Pair
	root     string
	timeout  time.Duration
	target   *url.URL
}

type requestHeader struct{ name, value string }

// usageError is a command line the command cannot run.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// repeated collects a flag given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ", ") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

// requestMain runs `fcgiscope request`.
func requestMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseRequestArgs(args, stderr)
	if err != nil {
		if isHelp(err) {
			return exitOK
		}
		fmt.Fprintf(stderr, "fcgiscope request: %v\n", err)
		fmt.Fprintln(stderr, "Run 'fcgiscope request -h' for the flags.")
		return exitUsage
	}
	params, body, closeBody, err := opts.build(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "fcgiscope request: %v\n", err)
		return exitUsage
	}
	defer closeBody()

	// Follow php-fpm's error log from before the request, so that a worker
	// that dies is named with its signal as the sidecar would name it.
	pool, conf := poolFor(opts.upstream)
	var follower *fpm.Follower
	if conf != nil && fpm.Readable(conf.ErrorLog) {
		follower = &fpm.Follower{Path: conf.ErrorLog}
		fctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go follower.Run(fctx)
		select {
		case <-follower.Ready():
		case <-time.After(500 * time.Millisecond):
			follower = nil
		}
	}

	res := sendRequest(ctx, opts.upstream, opts.timeout, params, body, stdout, stderr)
	t := res.trace
	if ctx.Err() != nil && t.Err != nil {
		fmt.Fprintf(stderr, "fcgiscope request: interrupted (%v) after %s\n", context.Cause(ctx), msString(t.End.Sub(t.DialStart)))
		return exitFailure
	}
	if t.Err == nil {
		fmt.Fprintln(stderr, res.timingLine())
		// A completed response may still tell of a problem: a missing
		// script, a fatal error. Name it as the sidecar's log would.
		// PHP's limits come from php.ini and the pool, with their
		// file:line.
		c := &diagnostics.Classifier{Pool: pool, PHPIni: loadPHPIni(ctx, conf, os.Getenv("FCGISCOPE_PHP_INI"), zerolog.Nop())}
		if d := c.Diagnose(t); d != nil {
			printDiagnosis(stderr, d)
		}
		return exitOK
	}
	if !t.DialEnd.IsZero() {
		fmt.Fprintln(stderr, res.timingLine())
	}
	classifier := &diagnostics.Classifier{Finder: &diagnostics.Finder{}, Pool: pool, Log: follower,
		// The user of request sets these as flags.
		SettingNames: map[string]string{
			"FCGISCOPE_UPSTREAM":        "--upstream",
			"FCGISCOPE_READ_TIMEOUT":    "--timeout",
			"FCGISCOPE_CONNECT_TIMEOUT": "--timeout",
		}}
	printDiagnosis(stderr, classifier.Diagnose(t))
	return exitFailure
}

func parseRequestArgs(args []string, stderr io.Writer) (*requestOptions, error) {
	fs := flag.NewFlagSet("request", flag.ContinueOnError)
	fs.SetOutput(stderr)
	upstream := os.Getenv("FCGISCOPE_UPSTREAM")
	if upstream == "" {
		upstream = "127.0.0.1:9000"
	}
	var headers, params repeated
	var data string
	dataSet := false
	fs.StringVar(&upstream, "upstream", upstream, "php-fpm address: 127.0.0.1:9000 or unix:/run/php/php8.2-fpm.sock (default: FCGISCOPE_UPSTREAM, else 127.0.0.1:9000)")
	method := fs.String("X", "", "request method (default GET, or POST with -d)")
	fs.Var(&headers, "H", "request header 'Name: value', sent as HTTP_NAME; repeatable")
	fs.Func("d", "request body, or @file to send a file's content", func(v string) error {
		data, dataSet = v, true
		return nil
	})
	fs.Var(&params, "param", "FastCGI param K=V, sent as given and overriding the built ones; repeatable")
	root := fs.String("root", "", "document root SCRIPT_FILENAME is built from (default: the current directory)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up when connecting, or waiting for php-fpm to send anything, takes longer than this")
	fs.Usage = func() {
		fmt.Fprint(stderr, requestUsage)
		fs.PrintDefaults()
	}

	// Flags may come after the URL too, as with curl.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if len(positional) != 1 {
		return nil, &usageError{fmt.Sprintf("want exactly one script URL such as /index.php?x=1, got %d arguments %q", len(positional), positional)}
	}

	opts := &requestOptions{method: strings.ToUpper(*method), timeout: *timeout}
	var err error
	if opts.upstream, err = fcgi.ParseAddr(upstream); err != nil {
		return nil, &usageError{"--upstream: " + err.Error()}
	}
	if opts.timeout <= 0 {
		return nil, &usageError{"--timeout must be more than 0, as in 10s"}
	}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, &usageError{fmt.Sprintf("-H %q: write a header as 'Name: value'", h)}
		}
		opts.headers = append(opts.headers, requestHeader{name, strings.TrimSpace(value)})
	}
	for _, p := range params {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, &usageError{fmt.Sprintf("--param %q: write a param as NAME=value", p)}
		}
		opts.params = append(opts.params, fcgi.Pair{Name: k, Value: v})
	}
	if dataSet {
		if f, ok := strings.CutPrefix(data, "@"); ok {
			if f == "" {
				return nil, &usageError{"-d @: name the file to send, as in -d @body.json"}
			}
			opts.bodyFile = f
		} else {
			opts.body = &data
		}
	}
	if opts.method == "" {
		opts.method = "GET"
		if dataSet {
			opts.method = "POST"
		}
	}
	if *root == "" {
		*root = "."
	}
	if opts.root, err = filepath.Abs(*root); err != nil {
		return nil, &usageError{"--root: " + err.Error()}
	}
	if opts.target, err = parseTarget(positional[0]); err != nil {
		return nil, err
	}
	return opts, nil
}

// parseTarget reads the script URL: a path with an optional query, or a
// whole http(s) URL whose host becomes the Host header.
func parseTarget(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, &usageError{fmt.Sprintf("script URL %q: %v", s, err)}
	}
	if u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
		return nil, &usageError{fmt.Sprintf("script URL %q: only a path such as /index.php?x=1, or an http(s) URL, is accepted", s)}
	}
	if !strings.HasPrefix(u.Path, "/") {
		return nil, &usageError{fmt.Sprintf("script URL %q must start with /, as in /index.php", s)}
	}
	return u, nil
}

// poolFor finds the php-fpm configuration and the pool in it that listens
// on addr, for the limits the classifier quotes (request_terminate_timeout)
// and the error log. Not finding them only costs precision.
func poolFor(addr fcgi.Addr) (*fpm.Pool, *fpm.Config) {
	conf, err := readFPMConfig(os.Getenv("FCGISCOPE_FPM_CONFIG"))
	if err != nil {
		return nil, nil
	}
	return conf.PoolFor(addr), conf
}
