// Package httpgateway serves a PHP application over HTTP with no web server in
// front: static files from a document root, PHP scripts through php-fpm. It
// is the engine of `fcgiscope http`, a server for local debugging.
//
// Every request that reaches php-fpm produces the same outcome.Trace the
// relay produces, so a failure gets the same cause id, error page and log line as
// it would behind nginx with the sidecar. The CGI environment is built with
// gofast's middleware (github.com/yookoala/gofast), the request is carried by
// package fcgi, and the response's CGI headers are parsed here.
//
// The package also starts a private php-fpm for the one-command demo
// (StartFPM).
package httpgateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Defaults applied to zero fields of Gateway.
const (
	DefaultConnectTimeout = exchange.DefaultConnectTimeout
	// DefaultMaxHeaderBytes bounds the CGI headers of a response. It is
	// far above nginx's fastcgi_buffer_size (4 or 8 KiB), so that a page
	// nginx would refuse with "upstream sent too big header" still shows
	// here, and far above gofast's own parser, which fails on a header line
	// longer than about 1 KiB.
	DefaultMaxHeaderBytes = 256 << 10
	// DefaultStderrExcerpt bounds the FCGI_STDERR bytes kept in a Trace.
	DefaultStderrExcerpt = exchange.DefaultStderrExcerpt
)

// A Responder explains a failed request with the response sent in its
// place, as the relay's does.
type Responder interface {
	Respond(t *outcome.Trace) cgi.Reply
}

// A Reviewer looks at a response php-fpm completed before it is sent, for
// a developer on this machine: when PHP reported a problem the page hides
// (a fatal error behind an empty 500, a request body PHP threw away), it
// returns the cause's id, a whole page that explains it, for a response
// without a body, and an HTML fragment to put at the top of an HTML page.
// cause is "" when there is nothing to show.
type Reviewer interface {
	Review(t *outcome.Trace) (cause string, page cgi.Reply, banner []byte)
}

// A Tracer starts a request's span: it is given the client's traceparent and
// tracestate headers, sets t.Span when the span is recorded, and returns the
// trace context php-fpm gets instead ("" leaves the params alone). The
// tracing package's Tracer is one.
type Tracer interface {
	StartSpan(t *outcome.Trace, traceparent, tracestate string) (newTraceparent, newTracestate string)
}

// An Observer receives the Trace of every request sent to the upstream,
// once the request is over; it must not keep t.
type Observer interface {
	Observe(t *outcome.Trace)
}

// Gateway is an http.Handler that serves Root: static files itself and PHP
// scripts through the FastCGI application at Upstream. Root and Upstream
// must be set; every other field has a usable zero value. Fields must not
// change once the Gateway serves requests.
type Gateway struct {
	// Root is the document root.
	Root string
	// Upstream is php-fpm.
	Upstream fcgi.Addr
	// Index lists the directory index files, tried in order, as nginx's
	// index directive; nil means index.php. The first one ending in .php
	// is the front controller of TryFiles.
	Index []string
	// TryFiles sends every request for a path that is neither a file nor a
	// directory to the front controller with the original REQUEST_URI, as
	// nginx's `try_files $uri $uri/ /index.php?$query_string` does.
	// Otherwise such requests get a 404.
	TryFiles bool
	// ConnectTimeout bounds the connection to the upstream; 0 means
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReadTimeout, when positive, fails a request whose upstream sends
	// nothing for that long.
	ReadTimeout time.Duration
	// HoldBytes is how much of a response body is held back after its
	// headers, so that a worker dying early can still be answered with an
	// explanation instead of a cut transfer. Responses with
	// X-Accel-Buffering: no or Content-Type text/event-stream are never
	// held. 0 streams at once.
	HoldBytes int
	// MaxHeaderBytes bounds a response's CGI headers; 0 means
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// StderrExcerpt bounds the FCGI_STDERR bytes kept in a Trace; 0 means
	// DefaultStderrExcerpt.
	StderrExcerpt int
	// ServerTiming adds a Server-Timing header with the time spent
	// connecting to php-fpm and waiting for its first byte.
	ServerTiming bool
	// ServerSoftware is the SERVER_SOFTWARE param; "" means "fcgiscope".
	ServerSoftware string
	// TempDir holds request bodies of unknown length while they are read
	// whole, since php-fpm reads only CONTENT_LENGTH bytes; "" means
	// os.TempDir().
	TempDir string
	// Responder builds the response to a failed request; nil gives a
	// plain one. diagnostics.Responder is the one fcgiscope uses.
	Responder Responder
	// Tracer, when set, starts each PHP request's span in a distributed
	// trace and passes it on to php-fpm as the parent of PHP's spans, as
	// the relay does.
	Tracer Tracer
	// Observer receives the Trace of every request sent to the upstream;
	// nil means none. diagnostics.AccessLog is the one fcgiscope uses.
	Observer Observer
	// Reviewer, when set, looks at every response held back whole before
	// it is sent; nil sends them as php-fpm made them.
	Reviewer Reviewer
	// Log receives a line per static file served, at debug level, and
	// php-fpm's FastCGI stderr, at warn level, which nginx would put in its
	// error log. The zero Logger discards them.
	Log zerolog.Logger

	initOnce sync.Once
	initErr  error
	absRoot  string
	idPrefix string
	idSeq    atomic.Uint64
	connSeq  atomic.Uint64
}

// Init checks the configuration. ServeHTTP calls it too; calling it first
// reports a bad root before the first request.
func (g *Gateway) Init() error {
	g.initOnce.Do(func() {
		var b [6]byte
		rand.Read(b[:])
		g.idPrefix = hex.EncodeToString(b[:]) + "-"
		if g.Upstream.IsZero() {
			g.initErr = errors.New("httpgateway: no upstream")
			return
		}
		if g.Root == "" {
			g.initErr = errors.New("httpgateway: no document root")
			return
		}
		abs, err := filepath.Abs(g.Root)
		if err != nil {
			g.initErr = err
			return
		}
		fi, err := os.Stat(abs)
		if err != nil {
			g.initErr = err
			return
		}
		if !fi.IsDir() {
			g.initErr = &fs.PathError{Op: "serve", Path: abs, Err: errors.New("not a directory")}
			return
		}
		g.absRoot = abs
		for _, name := range g.Index {
			if name == "" || strings.ContainsAny(name, "/\\") {
				g.initErr = errors.New("httpgateway: index " + strconv.Quote(name) + " must be a file name, as in index.php")
				return
			}
		}
	})
	return g.initErr
}

// DocumentRoot returns the absolute document root, once Init succeeded.
func (g *Gateway) DocumentRoot() string { return g.absRoot }

type connIDKey struct{}

// ConnContext numbers connections for the Trace's ConnID. Set it as the
// http.Server's ConnContext.
func (g *Gateway) ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connIDKey{}, g.connSeq.Add(1))
}

func (g *Gateway) index() []string {
	if len(g.Index) == 0 {
		return []string{"index.php"}
	}
	return g.Index
}

// frontController is the script TryFiles falls back to.
func (g *Gateway) frontController() string {
	for _, name := range g.index() {
		if isPHP(name) {
			return "/" + name
		}
	}
	return "/index.php"
}

func isPHP(name string) bool { return strings.HasSuffix(name, ".php") }

// ServeHTTP serves one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := g.Init(); err != nil {
		http.Error(w, "fcgiscope: "+err.Error(), http.StatusInternalServerError)
		return
	}
	rt := g.route(r.URL.Path)
	switch rt.kind {
	case routePHP:
		g.servePHP(w, r, rt)
	case routeStatic:
		g.serveStatic(w, r, rt)
	case routeRedirect:
		target := rt.location
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
	case routeHidden:
		http.Error(w, "403 Forbidden: fcgiscope does not serve hidden files (.env, .git, ...)", http.StatusForbidden)
	case routeNoIndex:
		http.Error(w, "403 Forbidden: no index file in this directory, and directory listing is off", http.StatusForbidden)
	case routeBad:
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
	default:
		http.NotFound(w, r)
	}
}

type routeKind int

const (
	routeNotFound routeKind = iota
	routePHP
	routeStatic
	routeRedirect
	routeHidden
	routeNoIndex
	routeBad
)

// route is where a request goes.
type route struct {
	kind routeKind
	// file is the absolute path of the script or static file.
	file string
	// scriptName is the script's URL path, SCRIPT_NAME; pathInfo the rest
	// of the request path after it, PATH_INFO.
	scriptName, pathInfo string
	// location is the redirect target's path.
	location string
}

// route decides, from the file system, what serves urlPath: the decision
// nginx makes with
//
//	location / { try_files $uri $uri/ /index.php?$query_string; }
//	location ~ [^/]\.php(/|$) { fastcgi_split_path_info ^(.+?\.php)(/.*)$; ... }
//
// The path is cleaned first, so ".." cannot leave the root; symbolic links
// inside the root are followed, as nginx and http.Dir do.
func (g *Gateway) route(urlPath string) route {
	if strings.ContainsRune(urlPath, 0) {
		return route{kind: routeBad}
	}
	if !strings.HasPrefix(urlPath, "/") {
		urlPath = "/" + urlPath
	}
	trailing := strings.HasSuffix(urlPath, "/")
	clean := path.Clean(urlPath)
	for _, seg := range strings.Split(clean, "/") {
		if strings.HasPrefix(seg, ".") && seg != ".well-known" {
			return route{kind: routeHidden}
		}
	}

	// A script, possibly followed by PATH_INFO: /app.php/users/1.
	for i := 0; i < len(clean); {
		j := strings.Index(clean[i:], ".php")
		if j < 0 {
			break
		}
		end := i + j + len(".php")
		if end == len(clean) || clean[end] == '/' {
			script := clean[:end]
			file := g.fsPath(script)
			if fi, err := os.Stat(file); err == nil && fi.Mode().IsRegular() {
				return route{kind: routePHP, file: file, scriptName: script, pathInfo: clean[end:]}
			}
			if end == len(clean) {
				// A missing script still goes to php-fpm, as with nginx's
				// usual `location ~ \.php$`: php-fpm answers 404 "File not
				// found." and the log names it script_not_found.
				return route{kind: routePHP, file: file, scriptName: script}
			}
		}
		i = end
	}

	file := g.fsPath(clean)
	fi, err := os.Stat(file)
	switch {
	case err == nil && fi.IsDir():
		if !trailing && clean != "/" {
			return route{kind: routeRedirect, location: clean + "/"}
		}
		for _, name := range g.index() {
			f := filepath.Join(file, name)
			if ifi, err := os.Stat(f); err == nil && ifi.Mode().IsRegular() {
				if isPHP(name) {
					return route{kind: routePHP, file: f, scriptName: path.Join(clean, name)}
				}
				return route{kind: routeStatic, file: f}
			}
		}
		if g.TryFiles && clean == "/" {
			break
		}
		return route{kind: routeNoIndex}
	case err == nil && fi.Mode().IsRegular():
		return route{kind: routeStatic, file: file}
	}
	if g.TryFiles {
		fc := g.frontController()
		f := g.fsPath(fc)
		if fi, err := os.Stat(f); err == nil && fi.Mode().IsRegular() {
			return route{kind: routePHP, file: f, scriptName: fc}
		}
	}
	return route{kind: routeNotFound}
}

// fsPath maps a cleaned URL path to a file under the root.
func (g *Gateway) fsPath(clean string) string {
	return filepath.Join(g.absRoot, filepath.FromSlash(clean))
}

// serveStatic serves a regular file with http.ServeContent: Range,
// conditional requests and Content-Type by extension.
func (g *Gateway) serveStatic(w http.ResponseWriter, r *http.Request, rt route) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "405 Method Not Allowed: "+r.URL.Path+" is a static file", http.StatusMethodNotAllowed)
		return
	}
	f, err := os.Open(rt.file)
	if err != nil {
		g.staticError(w, r, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		g.staticError(w, r, err)
		return
	}
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
	g.Log.Debug().Str("method", r.Method).Str("uri", r.RequestURI).Str("file", rt.file).Int64("size", fi.Size()).Msg("static")
}

func (g *Gateway) staticError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		http.NotFound(w, r)
	case errors.Is(err, fs.ErrPermission):
		http.Error(w, "403 Forbidden", http.StatusForbidden)
	default:
		http.Error(w, "500 Internal Server Error", http.StatusInternalServerError)
	}
}

// requestID returns the client's X-Request-Id when it is sane, else a new
// id.
func (g *Gateway) requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 128 && printable(id) {
		return id
	}
	return g.idPrefix + strconv.FormatUint(g.idSeq.Add(1), 10)
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return true
}
