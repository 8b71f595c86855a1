package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/cliflag"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

const requestUsage = `Usage: fcgiscope request [flags] /script.php?query
       fcgiscope request --replay ID [--upstream ADDR] [-H ...] [--param ...]

Sends one FastCGI request to php-fpm, the way nginx would, and prints the
response headers and body to stdout. php-fpm's FastCGI stderr and the timings
go to stderr. When the request fails, it says why, in the words the sidecar
uses (cause id, detail, hints).

With --replay it sends again a request that failed through fcgiscope serve:
ID is the request id on the error page, in the log line or on the
dashboard. The params php-fpm got come from serve's admin endpoint, without
cookies, Authorization or secret-looking values; the new outcome is printed
beside the first one.

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
	// rootGiven is false when root is the current directory by default;
	// upstreamGiven is true when --upstream was.
	rootGiven, upstreamGiven bool
	timeout                  time.Duration
	// replay is the id of the recorded request to send again, from the
	// admin endpoint at admin.
	replay, admin string
	target        *url.URL
}

type requestHeader struct{ name, value string }

// curlHabits answers the curl flags people type out of habit.
var curlHabits = map[string]string{
	"i":           "the response head is always printed, on stdout before the body; drop -i",
	"include":     "the response head is always printed, on stdout before the body; drop --include",
	"v":           "php-fpm's stderr and the timings always go to stderr; drop -v",
	"verbose":     "php-fpm's stderr and the timings always go to stderr; drop --verbose",
	"s":           "drop -s; send stderr elsewhere with 2>/dev/null",
	"silent":      "drop --silent; send stderr elsewhere with 2>/dev/null",
	"data":        "write the body with -d, as in -d 'a=1' or -d @body.json",
	"data-raw":    "write the body with -d, as in -d 'a=1' or -d @body.json",
	"data-binary": "write the body with -d, as in -d @body.bin",
	"json":        "write the body with -d @body.json and -H 'Content-Type: application/json'",
	"F":           "multipart forms are not built; send a prepared body with -d @file and its -H 'Content-Type: multipart/form-data; boundary=...'",
	"form":        "multipart forms are not built; send a prepared body with -d @file and its -H 'Content-Type: multipart/form-data; boundary=...'",
	"header":      "write headers with -H 'Name: value'",
	"request":     "write the method with -X, as in -X PUT",
	"o":           "the body goes to stdout; redirect it, as in > page.html",
	"output":      "the body goes to stdout; redirect it, as in > page.html",
	"L":           "one FastCGI request is sent; a redirect is printed, not followed",
	"location":    "one FastCGI request is sent; a redirect is printed, not followed",
	"k":           "there is no TLS between fcgiscope and php-fpm; an https:// URL only sets HTTPS=on",
	"insecure":    "there is no TLS between fcgiscope and php-fpm; an https:// URL only sets HTTPS=on",
	"u":           "send credentials as a header, as in -H 'Authorization: Basic ...'",
	"user":        "send credentials as a header, as in -H 'Authorization: Basic ...'",
	"b":           "send cookies as a header, as in -H 'Cookie: a=1'",
	"cookie":      "send cookies as a header, as in -H 'Cookie: a=1'",
}

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
		if ce := (*cliflag.Error)(nil); !errors.As(err, &ce) {
			fmt.Fprintln(stderr, "Run 'fcgiscope request -h' for the flags.")
		}
		return exitUsage
	}
	var rp *web.Replay
	var params []fcgi.Pair
	var body io.Reader
	var closeBody func()
	if opts.replay != "" {
		if rp, err = fetchReplay(ctx, opts.admin, opts.replay); err == nil {
			opts.upstream, err = opts.replayTarget(rp)
		}
		if err != nil {
			fmt.Fprintf(stderr, "fcgiscope request: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stderr, "fcgiscope request: replaying request %s, %s %s, to %s\n", rp.RequestID, rp.Method, rp.URI, opts.upstream)
		params, body, closeBody, err = opts.replayParams(rp, stderr)
	} else {
		params, body, closeBody, err = opts.build(stderr)
	}
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
		d := c.Diagnose(t)
		if d != nil {
			if d.Cause == diagnostics.CauseScriptNotFound && rp == nil {
				d.Hints = opts.scriptHints(t.Script)
			}
			printDiagnosis(stderr, d)
		}
		if rp != nil {
			fmt.Fprintln(stderr, compareLine(rp, t, d))
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
	d := classifier.Diagnose(t)
	printDiagnosis(stderr, d)
	if rp != nil {
		fmt.Fprintln(stderr, compareLine(rp, t, d))
	}
	return exitFailure
}

func parseRequestArgs(args []string, stderr io.Writer) (*requestOptions, error) {
	fs := flag.NewFlagSet("request", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var upstream string
	var headers, params repeated
	var data string
	dataSet := false
	fs.StringVar(&upstream, "upstream", "", "php-fpm address, host:port or unix:/run/php/php8.2-fpm.sock (default: FCGISCOPE_UPSTREAM, else 127.0.0.1:9000)")
	method := fs.String("X", "", "request method (default GET, or POST with -d)")
	fs.Var(&headers, "H", "request header 'Name: value', sent as HTTP_NAME; repeatable")
	fs.Func("d", "request body, or @file to send a file's content", func(v string) error {
		data, dataSet = v, true
		return nil
	})
	fs.Var(&params, "param", "FastCGI param K=V, sent as given and overriding the built ones; repeatable")
	root := fs.String("root", "", "document root, as php-fpm sees it, that SCRIPT_FILENAME is built from (default: the current directory)")
	replay := fs.String("replay", "", "send again the request with this id (from the error page, the log line or the dashboard), as fcgiscope serve recorded it")
	admin := fs.String("admin", "", "address of fcgiscope serve's admin endpoint, for --replay (default: FCGISCOPE_ADMIN_LISTEN, else "+defaultAdmin+")")
	timeout := fs.Duration("timeout", 10*time.Second, "give up when connecting, or waiting for php-fpm to send anything, takes longer than this")
	fs.Usage = func() {
		fmt.Fprint(stderr, requestUsage)
		fs.PrintDefaults()
	}

	// Flags may come after the URL too, as with curl.
	var positional []string
	for {
		if err := cliflag.Parse(fs, args, cliflag.Options{Help: "'fcgiscope request -h' lists the flags", Aliases: curlHabits}); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
	if *replay != "" {
		if len(positional) > 0 || *root != "" || *method != "" {
			return nil, &usageError{"--replay sends the recorded request as it was: it takes no script URL, --root or -X (change params with -H and --param)"}
		}
	} else if len(positional) != 1 {
		return nil, &usageError{fmt.Sprintf("want exactly one script URL such as /index.php?x=1, got %d arguments %q", len(positional), positional)}
	}

	opts := &requestOptions{method: strings.ToUpper(*method), timeout: *timeout, rootGiven: *root != "", upstreamGiven: upstream != "",
		replay: *replay, admin: cmp.Or(*admin, os.Getenv("FCGISCOPE_ADMIN_LISTEN"), defaultAdmin)}
	var err error
	if opts.upstream, err = fcgi.ParseAddr(cmp.Or(upstream, os.Getenv("FCGISCOPE_UPSTREAM"), "127.0.0.1:9000")); err != nil {
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
	if opts.replay != "" {
		return opts, nil
	}
	if opts.target, err = parseTarget(positional[0]); err != nil {
		return nil, err
	}
	return opts, nil
}

// scriptHints replace the advice about nginx's fastcgi_param for a script
// php-fpm did not find: here SCRIPT_FILENAME came from --root, or from the
// current directory without it.
func (o *requestOptions) scriptHints(script string) []string {
	if !o.rootGiven {
		return []string{fmt.Sprintf("SCRIPT_FILENAME %s was built from the current directory, since no --root was given: give the document root as php-fpm sees it, as in --root /var/www/html (nginx's root directive names it).", script)}
	}
	return []string{fmt.Sprintf("SCRIPT_FILENAME %s is --root %s followed by the path: check that php-fpm sees the file there (a container of its own mounts the application elsewhere).", script, o.root)}
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
