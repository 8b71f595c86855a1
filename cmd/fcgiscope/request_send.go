package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgienv"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// build returns the request php-fpm gets: the params nginx would send with
// Debian's fastcgi.conf, built as fcgiscope http builds them, and the body.
func (o *requestOptions) build(stderr io.Writer) ([]fcgi.Pair, io.Reader, func(), error) {
	body, length, closeBody, err := o.openBody()
	if err != nil {
		return nil, nil, nil, err
	}

	u := o.target
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "": "80"}[u.Scheme]
	}
	r := &http.Request{
		Method:        o.method,
		URL:           &url.URL{Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery},
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{},
		Host:          hostHeader(u),
		RemoteAddr:    "127.0.0.1:0",
		RequestURI:    u.RequestURI(),
		ContentLength: length,
	}
	if u.Scheme == "https" {
		r.TLS = &tls.ConnectionState{}
	}
	n, _ := strconv.Atoi(port)
	r = r.WithContext(context.WithValue(context.Background(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: n}))
	if body != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, h := range o.headers {
		switch {
		case strings.EqualFold(h.name, "Proxy"):
			// httpoxy: PHP would read HTTP_PROXY as the proxy to use for
			// its own outgoing requests. nginx setups drop it too.
			fmt.Fprintln(stderr, "fcgiscope request: not sending the Proxy header: PHP would take HTTP_PROXY as its outgoing proxy (httpoxy)")
		case strings.EqualFold(h.name, "Content-Length"):
			// CONTENT_LENGTH is the body's.
		case strings.EqualFold(h.name, "Content-Type"):
			r.Header.Set("Content-Type", h.value)
		default:
			r.Header.Add(h.name, h.value)
		}
	}
	script, pathInfo := splitPathInfo(u.Path)
	params, err := cgienv.Build(r, cgienv.Script{File: strings.TrimRight(o.root, "/") + script, Name: script, PathInfo: pathInfo},
		cgienv.Options{Root: o.root})
	if err != nil {
		closeBody()
		return nil, nil, nil, err
	}
	if body == nil {
		// As nginx: a request without a body has an empty length.
		params["CONTENT_LENGTH"] = ""
	}
	for _, p := range o.params {
		params[p.Name] = p.Value
	}
	return cgienv.Pairs(params), body, closeBody, nil
}

// openBody returns the body -d gives, its length and how to close it; a
// nil body when -d was not given.
func (o *requestOptions) openBody() (io.Reader, int64, func(), error) {
	switch {
	case o.body != nil:
		return strings.NewReader(*o.body), int64(len(*o.body)), func() {}, nil
	case o.bodyFile != "":
		f, err := os.Open(o.bodyFile)
		if err != nil {
			return nil, 0, nil, fmt.Errorf("-d @%s: %w", o.bodyFile, err)
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			f.Close()
			return nil, 0, nil, fmt.Errorf("-d @%s: not a regular file", o.bodyFile)
		}
		return f, fi.Size(), func() { f.Close() }, nil
	}
	return nil, 0, func() {}, nil
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

// requestResult is one exchange with php-fpm.
type requestResult struct {
	trace *outcome.Trace
	// firstOutput is when the first STDOUT or STDERR byte came.
	firstOutput time.Time
}

// maxStderrKept bounds the stderr kept for the diagnosis; all of it is
// printed.
const maxStderrKept = 64 << 10

// sendRequest sends one request over a new connection and streams the
// response to stdout and php-fpm's stderr to stderr as they come. The Trace
// is filled by the same exchange the doctor and the HTTP gateway use, so
// that the classifier explains it in the sidecar's words. timeout bounds
// the connection attempt and every wait for php-fpm to send something.
func sendRequest(ctx context.Context, addr fcgi.Addr, timeout time.Duration, params []fcgi.Pair, body io.Reader, stdout, stderr io.Writer) *requestResult {
	res := &requestResult{trace: &outcome.Trace{RequestID: "fcgiscope-request"}}
	errOut := &prefixWriter{w: stderr, prefix: "php-fpm stderr: "}
	exchange.Do(ctx, &exchange.Request{
		Upstream:       addr,
		Params:         params,
		Body:           body,
		Stdout:         &noteFirst{w: stdout, at: &res.firstOutput},
		Stderr:         &noteFirst{w: errOut, at: &res.firstOutput},
		ConnectTimeout: timeout,
		ReadTimeout:    timeout,
		StderrExcerpt:  maxStderrKept,
	}, res.trace)
	errOut.flush()
	res.trace.BytesOut = res.trace.UpstreamBytes
	return res
}

// noteFirst notes when the first byte is written through it.
type noteFirst struct {
	w  io.Writer
	at *time.Time
}

func (n *noteFirst) Write(p []byte) (int, error) {
	if n.at.IsZero() && len(p) > 0 {
		*n.at = time.Now()
	}
	return n.w.Write(p)
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
	parts = append(parts, "total "+msString(t.End.Sub(t.DialStart)), fmt.Sprintf("%d bytes", t.UpstreamBytes))
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
