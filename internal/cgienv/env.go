// Package cgienv builds the CGI environment of an HTTP request, the
// FastCGI params php-fpm runs a script with, as nginx with Debian's
// fastcgi.conf sends them. The HTTP gateway (fcgiscope http) and the
// request command (fcgiscope request) both send what it builds.
package cgienv

import (
	"net"
	"net/http"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/yookoala/gofast"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Script is the script a request runs.
type Script struct {
	// File is its path as php-fpm sees it, SCRIPT_FILENAME.
	File string
	// Name is its URL path, SCRIPT_NAME; PathInfo the rest of the request
	// path after it, PATH_INFO.
	Name, PathInfo string
}

// Options are the server's side of the environment.
type Options struct {
	// Root is the document root, DOCUMENT_ROOT.
	Root string
	// RequestID is REQUEST_ID.
	RequestID string
	// Software is SERVER_SOFTWARE; "" means "fcgiscope".
	Software string
}

// Build builds the CGI environment of r, a request for script s, with
// gofast's session middleware: BasicParamsMap (method, URI, query, remote
// and server address, content type and length), MapHeader (HTTP_*) and
// MapEndpoint (SCRIPT_FILENAME), then fix, which repairs what gofast gets
// wrong for PHP. Nothing of gofast's transport or response parser is used:
// the chain ends in a handler that only keeps the params.
//
// The server's own address comes from r's context
// (http.LocalAddrContextKey), as net/http puts it there.
func Build(r *http.Request, s Script, o Options) (map[string]string, error) {
	var out map[string]string
	keep := func(_ gofast.Client, req *gofast.Request) (*gofast.ResponsePipe, error) {
		out = req.Params
		return nil, nil
	}
	chain := gofast.Chain(
		gofast.BasicParamsMap,
		gofast.MapHeader,
		gofast.MapEndpoint(s.File),
		fix(s, o),
	)
	req := gofast.NewRequest(r)
	req.Stdin = nil // the body is sent by the exchange, not by gofast
	if _, err := chain(keep)(nil, req); err != nil {
		return nil, err
	}
	return out, nil
}

// fix is the last middleware of the chain. It guards against gofast
// v0.8.0's defects and fills in what nginx's fastcgi_params would send:
//
//   - MapHeader turns a client's Proxy header into HTTP_PROXY, which PHP
//     libraries read as the outgoing proxy (httpoxy, CVE-2016-5385): dropped.
//   - MapHeader maps a header spelt with underscores (X_Forwarded_For) to the
//     same name as the dashed one (X-Forwarded-For), and which one wins
//     depends on map order; nginx ignores such headers: dropped.
//   - Several Cookie headers are joined with "," instead of "; ", which PHP
//     reads as one cookie: joined with "; ".
//   - REQUEST_SCHEME is left empty (r.URL.Scheme of a server request) and
//     SERVER_ADDR unset; SERVER_PORT comes from the Host header rather
//     than the listening socket: all three filled from the connection.
//   - MapEndpoint sets DOCUMENT_ROOT to the script's directory and
//     SCRIPT_NAME to its base name: set from the document root.
func fix(s Script, o Options) gofast.Middleware {
	return func(inner gofast.SessionHandler) gofast.SessionHandler {
		return func(client gofast.Client, req *gofast.Request) (*gofast.ResponsePipe, error) {
			r, p := req.Raw, req.Params

			for name := range r.Header {
				if !strings.Contains(name, "_") {
					continue
				}
				key := HeaderParam(name)
				delete(p, key)
				// A dashed header with the same CGI name keeps its value.
				for other, values := range r.Header {
					if !strings.Contains(other, "_") && HeaderParam(other) == key {
						p[key] = strings.Join(values, ",")
					}
				}
			}
			delete(p, "HTTP_PROXY")
			if cookies := r.Header.Values("Cookie"); len(cookies) > 1 {
				p["HTTP_COOKIE"] = strings.Join(cookies, "; ")
			}

			p["REQUEST_SCHEME"] = "http"
			if r.TLS != nil {
				p["REQUEST_SCHEME"] = "https"
			}
			if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
				if host, port, err := net.SplitHostPort(a.String()); err == nil {
					p["SERVER_ADDR"], p["SERVER_PORT"] = host, port
				}
			}
			if p["SERVER_NAME"] == "" {
				p["SERVER_NAME"] = p["SERVER_ADDR"]
			}
			if r.RequestURI != "" && strings.HasPrefix(r.RequestURI, "/") {
				p["REQUEST_URI"] = r.RequestURI
			} else {
				p["REQUEST_URI"] = r.URL.RequestURI()
			}
			p["DOCUMENT_ROOT"] = o.Root
			p["SCRIPT_FILENAME"] = s.File
			p["SCRIPT_NAME"] = s.Name
			p["DOCUMENT_URI"] = s.Name + s.PathInfo
			if s.PathInfo != "" {
				p["PATH_INFO"] = s.PathInfo
				p["PATH_TRANSLATED"] = filepath.Join(o.Root, filepath.FromSlash(s.PathInfo))
			}
			p["SERVER_SOFTWARE"] = o.Software
			if o.Software == "" {
				p["SERVER_SOFTWARE"] = "fcgiscope"
			}
			if o.RequestID != "" {
				p["REQUEST_ID"] = o.RequestID
			}
			if r.ContentLength <= 0 && r.Header.Get("Content-Length") == "" {
				// As nginx: no body, no length. A body of unknown length
				// gets its length once spooled.
				delete(p, "CONTENT_LENGTH")
			}
			return inner(client, req)
		}
	}
}

// HeaderParam is the param a request header goes in, as nginx and gofast's
// MapHeader name it: X-Foo is HTTP_X_FOO.
func HeaderParam(name string) string {
	return "HTTP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Pairs orders params by name, so that what php-fpm gets does not depend on
// map order.
func Pairs(p map[string]string) []fcgi.Pair {
	names := make([]string, 0, len(p))
	for k := range p {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]fcgi.Pair, 0, len(names))
	for _, k := range names {
		out = append(out, fcgi.Pair{Name: k, Value: p[k]})
	}
	return out
}

// SetContentLength sets CONTENT_LENGTH, for a body whose length became
// known once it was read.
func SetContentLength(p map[string]string, n int64) {
	p["CONTENT_LENGTH"] = strconv.FormatInt(n, 10)
}
