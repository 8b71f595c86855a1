package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
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
		if d := (&diagnostics.Classifier{}).Diagnose(t); d != nil {
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

// build returns the params nginx would send with Debian's fastcgi.conf, and
// the request body.
func (o *requestOptions) build(stderr io.Writer) ([]fcgi.Pair, io.Reader, func(), error) {
	var body io.Reader
	closeBody := func() {}
	length := int64(-1)
	switch {
	case o.body != nil:
		body = strings.NewReader(*o.body)
		length = int64(len(*o.body))
	case o.bodyFile != "":
		f, err := os.Open(o.bodyFile)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("-d @%s: %w", o.bodyFile, err)
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return nil, nil, nil, fmt.Errorf("-d @%s: not a regular file", o.bodyFile)
		}
		body, length, closeBody = f, fi.Size(), func() { f.Close() }
	}

	u := o.target
	script, pathInfo := splitPathInfo(u.Path)
	host, port := "localhost", "80"
	if u.Host != "" {
		host = u.Hostname()
		port = u.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
		}
	}
	requestURI := u.EscapedPath()
	if u.RawQuery != "" {
		requestURI += "?" + u.RawQuery
	}
	ps := &pairList{}
	ps.set("SCRIPT_FILENAME", strings.TrimRight(o.root, "/")+script)
	ps.set("QUERY_STRING", u.RawQuery)
	ps.set("REQUEST_METHOD", o.method)
	contentType := ""
	if body != nil {
		contentType = "application/x-www-form-urlencoded"
	}
	for _, h := range o.headers {
		if strings.EqualFold(h.name, "Content-Type") {
			contentType = h.value
		}
	}
	ps.set("CONTENT_TYPE", contentType)
	if length >= 0 {
		ps.set("CONTENT_LENGTH", strconv.FormatInt(length, 10))
	} else {
		ps.set("CONTENT_LENGTH", "")
	}
	ps.set("SCRIPT_NAME", script)
	ps.set("REQUEST_URI", requestURI)
	ps.set("DOCUMENT_URI", u.Path)
	ps.set("DOCUMENT_ROOT", o.root)
	ps.set("SERVER_PROTOCOL", "HTTP/1.1")
	if u.Scheme == "https" {
		ps.set("REQUEST_SCHEME", "https")
		ps.set("HTTPS", "on")
	} else {
		ps.set("REQUEST_SCHEME", "http")
	}
	ps.set("GATEWAY_INTERFACE", "CGI/1.1")
	ps.set("SERVER_SOFTWARE", "fcgiscope")
	ps.set("REMOTE_ADDR", "127.0.0.1")
	ps.set("REMOTE_PORT", "0")
	ps.set("SERVER_ADDR", "127.0.0.1")
	ps.set("SERVER_PORT", port)
	ps.set("SERVER_NAME", host)
	ps.set("REDIRECT_STATUS", "200")
	if pathInfo != "" {
		ps.set("PATH_INFO", pathInfo)
	}
	ps.set("HTTP_HOST", hostHeader(u))
	for _, h := range o.headers {
		switch {
		case strings.EqualFold(h.name, "Proxy"):
			// httpoxy: PHP would read HTTP_PROXY as the proxy to use for
			// its own outgoing requests. nginx setups drop it too.
			fmt.Fprintln(stderr, "fcgiscope request: not sending the Proxy header: PHP would take HTTP_PROXY as its outgoing proxy (httpoxy)")
		case strings.EqualFold(h.name, "Content-Type"), strings.EqualFold(h.name, "Content-Length"):
			// CONTENT_TYPE and CONTENT_LENGTH carry these.
		default:
			ps.set("HTTP_"+strings.ToUpper(strings.ReplaceAll(h.name, "-", "_")), h.value)
		}
	}
	for _, p := range o.params {
		ps.set(p.Name, p.Value)
	}
	return ps.pairs, body, closeBody, nil
}

func hostHeader(u *url.URL) string {
	if u.Host != "" {
		return u.Host
	}
	return "localhost"
}

// splitPathInfo splits /index.php/extra into the script and PATH_INFO, as
// nginx's usual fastcgi_split_path_info ^(.+?\.php)(/.*)$ does.
func splitPathInfo(p string) (script, pathInfo string) {
	if i := strings.Index(p, ".php/"); i > 0 {
		return p[:i+4], p[i+4:]
	}
	return p, ""
}

// pairList keeps params in order; setting a name again replaces its value
// in place, so --param overrides without reordering.
type pairList struct{ pairs []fcgi.Pair }

func (l *pairList) set(name, value string) {
	for i := range l.pairs {
		if l.pairs[i].Name == name {
			l.pairs[i].Value = value
			return
		}
	}
	l.pairs = append(l.pairs, fcgi.Pair{Name: name, Value: value})
}

func (l pairList) get(name string) string {
	for _, p := range l.pairs {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}

// requestResult is one exchange with php-fpm.
type requestResult struct {
	trace *proxy.Trace
	// firstOutput is when the first STDOUT or STDERR byte came.
	firstOutput time.Time
	stdoutBytes int64
}

// maxStderrKept bounds the stderr kept for the diagnosis; all of it is
// printed.
const maxStderrKept = 64 << 10

// sendRequest sends one request over a new connection and streams the
// response to stdout as it comes. The Trace it fills is the one the sidecar
// would have made of the same exchange, so that the classifier explains it
// in the same words. timeout bounds the connection attempt and every wait
// for php-fpm to send something.
func sendRequest(ctx context.Context, addr fcgi.Addr, timeout time.Duration, params []fcgi.Pair, body io.Reader, stdout, stderr io.Writer) *requestResult {
	pl := pairList{params}
	t := &proxy.Trace{
		RequestID:     "fcgiscope-request",
		FCGIRequestID: 1,
		Role:          fcgi.RoleResponder,
		Method:        pl.get("REQUEST_METHOD"),
		URI:           pl.get("REQUEST_URI"),
		Script:        pl.get("SCRIPT_FILENAME"),
		RemoteAddr:    pl.get("REMOTE_ADDR"),
		Host:          pl.get("HTTP_HOST"),
		Upstream:      addr,
	}
	res := &requestResult{trace: t}
	now := time.Now()
	t.Accepted, t.ParamsDone, t.DialStart = now, now, now
	fail := func(err error) *requestResult {
		t.Err = err
		t.End = time.Now()
		return res
	}

	dctx, cancel := context.WithTimeout(ctx, timeout)
	var d net.Dialer
	conn, err := d.DialContext(dctx, addr.Network, addr.Address)
	cancel()
	if err != nil {
		return fail(&proxy.DialError{Addr: addr, Err: err})
	}
	t.DialEnd = time.Now()
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	w := fcgi.NewWriter(conn)
	w.WriteBeginRequest(1, fcgi.BeginRequest{Role: fcgi.RoleResponder})
	var pbuf []byte
	for _, p := range params {
		pbuf = fcgi.AppendPair(pbuf, p.Name, p.Value)
	}
	w.WriteStream(fcgi.TypeParams, 1, pbuf)
	w.EndStream(fcgi.TypeParams, 1)
	if err := w.Flush(); err != nil {
		return fail(fmt.Errorf("%w: sending the request head: %w", fcgi.ErrNoEndRequest, err))
	}

	// The body goes out while the response is read: php-fpm may answer
	// (a missing script) before reading it all.
	stdinDone := make(chan time.Time, 1)
	go func() {
		var done time.Time
		defer func() { stdinDone <- done }()
		if body != nil {
			sw := fcgi.NewStreamWriter(w, fcgi.TypeStdin, 1)
			if _, err := io.Copy(sw, body); err != nil {
				return
			}
		}
		if w.EndStream(fcgi.TypeStdin, 1) == nil && w.Flush() == nil {
			done = time.Now()
		}
	}()
	finish := func() {
		conn.Close() // unblocks a body still being sent
		if done := <-stdinDone; !done.IsZero() {
			t.StdinDone = done
		}
	}

	errOut := &prefixWriter{w: stderr, prefix: "php-fpm stderr: "}
	var headers headerScan
	r := fcgi.NewReader(conn)
	for {
		conn.SetReadDeadline(time.Now().Add(timeout))
		h, err := r.Next()
		if err != nil {
			var ve *fcgi.VersionError
			switch {
			case errors.As(err, &ve):
			case errors.Is(err, os.ErrDeadlineExceeded):
				err = fmt.Errorf("%w (%s)", proxy.ErrReadTimeout, timeout)
			default:
				err = fmt.Errorf("%w: %w", fcgi.ErrNoEndRequest, err)
			}
			errOut.flush()
			fail(err)
			finish()
			return res
		}
		t.UpstreamRecords++
		if h.RequestID != 1 {
			errOut.flush()
			fail(&proxy.ProtocolError{Upstream: true, Reason: fmt.Sprintf("%s record for request %d, but request 1 was sent", h.Type, h.RequestID)})
			finish()
			return res
		}
		content := r.Content()
		switch h.Type {
		case fcgi.TypeStdout:
			if len(content) == 0 {
				continue
			}
			if t.FirstByte.IsZero() {
				t.FirstByte = time.Now()
			}
			if res.firstOutput.IsZero() {
				res.firstOutput = t.FirstByte
			}
			t.UpstreamBytes += int64(len(content))
			res.stdoutBytes += int64(len(content))
			headers.feed(content)
			stdout.Write(content)
		case fcgi.TypeStderr:
			if len(content) == 0 {
				continue
			}
			if res.firstOutput.IsZero() {
				res.firstOutput = time.Now()
			}
			t.StderrBytes += int64(len(content))
			if keep := maxStderrKept - len(t.Stderr); keep > 0 {
				t.Stderr = append(t.Stderr, content[:min(keep, len(content))]...)
			}
			errOut.Write(content)
		case fcgi.TypeEndRequest:
			errOut.flush()
			end, err := fcgi.ParseEndRequest(content)
			t.End = time.Now()
			t.Status, t.ContentType = headers.result()
			switch {
			case err != nil:
				t.Err = &proxy.ProtocolError{Upstream: true, Reason: err.Error()}
			case end.ProtocolStatus != fcgi.StatusRequestComplete:
				t.Err = &proxy.RejectedError{Status: end.ProtocolStatus}
			default:
				t.EndRequest, t.Ended = end, true
				t.BytesOut = res.stdoutBytes
			}
			finish()
			return res
		default:
			errOut.flush()
			fail(&proxy.ProtocolError{Upstream: true, Reason: fmt.Sprintf("unexpected %s record from the upstream", h.Type)})
			finish()
			return res
		}
	}
}

// timingLine is the line printed after the response.
func (r *requestResult) timingLine() string {
	t := r.trace
	parts := []string{}
	if t.Status != 0 {
		parts = append(parts, "HTTP "+strconv.Itoa(t.Status))
	}
	parts = append(parts, "connect "+msString(t.ConnectTime()))
	if !r.firstOutput.IsZero() {
		parts = append(parts, "first byte "+msString(r.firstOutput.Sub(t.DialStart)))
	} else {
		parts = append(parts, "first byte none")
	}
	parts = append(parts, "total "+msString(t.End.Sub(t.DialStart)), fmt.Sprintf("%d bytes", r.stdoutBytes))
	if t.Ended {
		parts = append(parts, fmt.Sprintf("app status %d", t.EndRequest.AppStatus))
	}
	return strings.Join(parts, " · ")
}

func msString(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000)
}

// printDiagnosis prints a diagnosis as the sidecar's log line carries it.
func printDiagnosis(w io.Writer, d *diagnostics.Diagnosis) {
	if d == nil {
		return
	}
	fmt.Fprintf(w, "fcgiscope: %s (%d): %s\n", d.Cause.ID, d.Cause.Status, d.Cause.Title)
	if d.Detail != "" {
		fmt.Fprintf(w, "  %s\n", d.Detail)
	}
	for _, h := range d.Hints {
		fmt.Fprintf(w, "  hint: %s\n", h)
	}
	if len(d.Evidence) > 0 {
		keys := make([]string, 0, len(d.Evidence))
		for k := range d.Evidence {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%s=%q", k, d.Evidence[k])
		}
		fmt.Fprintf(w, "  evidence: %s\n", b.String())
	}
}

// poolFor finds the php-fpm configuration and the pool in it that listens
// on addr, for the limits the classifier quotes (request_terminate_timeout)
// and the error log. Not finding them only costs precision.
func poolFor(addr fcgi.Addr) (*fpm.Pool, *fpm.Config) {
	var conf *fpm.Config
	var err error
	if p := os.Getenv("FCGISCOPE_FPM_CONFIG"); p != "" {
		conf, err = fpm.Load(p, nil)
	} else {
		conf, err = fpm.Discover(nil)
	}
	if err != nil {
		return nil, nil
	}
	return conf.PoolFor(addr), conf
}

// headerScan finds the Status and Content-Type of a CGI response in its
// first bytes.
type headerScan struct {
	buf  []byte
	done bool
	// status and ctype are valid once done.
	status int
	ctype  string
}

func (h *headerScan) feed(p []byte) {
	if h.done {
		return
	}
	h.buf = append(h.buf, p[:min(len(p), 64<<10-len(h.buf))]...)
	end := bytes.Index(h.buf, []byte("\r\n\r\n"))
	if e := bytes.Index(h.buf, []byte("\n\n")); e >= 0 && (end < 0 || e < end) {
		end = e
	}
	if end < 0 && len(h.buf) < 64<<10 {
		return
	}
	if end < 0 {
		end = len(h.buf)
	}
	h.done = true
	h.status = 200
	for _, line := range strings.Split(string(h.buf[:end]), "\n") {
		name, value, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch {
		case strings.EqualFold(name, "Status"):
			if f := strings.Fields(value); len(f) > 0 {
				if n, err := strconv.Atoi(f[0]); err == nil {
					h.status = n
				}
			}
		case strings.EqualFold(name, "Content-Type"):
			h.ctype = value
		}
	}
	h.buf = nil
}

// result returns the status and content type; a response whose headers
// never ended has status 0.
func (h *headerScan) result() (int, string) {
	if !h.done {
		return 0, ""
	}
	return h.status, h.ctype
}

// prefixWriter writes every line with a prefix, so that php-fpm's stderr
// cannot be mistaken for fcgiscope's own messages.
type prefixWriter struct {
	w       io.Writer
	prefix  string
	partial []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			p.partial = append(p.partial, b...)
			break
		}
		line := append(p.partial, b[:i]...)
		p.partial = nil
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, strings.TrimRight(string(line), "\r"))
		b = b[i+1:]
	}
	return n, nil
}

func (p *prefixWriter) flush() {
	if len(p.partial) > 0 {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.partial)
		p.partial = nil
	}
}
