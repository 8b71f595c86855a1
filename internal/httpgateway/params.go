package httpgateway

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

// params builds the CGI environment of a PHP request with gofast's session
// middleware: BasicParamsMap (method, URI, query, remote and server
// address, content type and length), MapHeader (HTTP_*) and MapEndpoint
// (SCRIPT_FILENAME), then fixParams, which repairs what gofast gets wrong
// for PHP behind this gateway. Nothing of gofast's transport or response
// parser is used: the chain ends in a handler that only keeps the params.
func (g *Gateway) params(r *http.Request, rt route, requestID string) (map[string]string, error) {
	var out map[string]string
	keep := func(_ gofast.Client, req *gofast.Request) (*gofast.ResponsePipe, error) {
		out = req.Params
		return nil, nil
	}
	chain := gofast.Chain(
		gofast.BasicParamsMap,
		gofast.MapHeader,
		gofast.MapEndpoint(rt.file),
		g.fixParams(rt, requestID),
	)
	req := gofast.NewRequest(r)
	req.Stdin = nil // the body is sent by RoundTrip, not by gofast
	if _, err := chain(keep)(nil, req); err != nil {
		return nil, err
	}
	return out, nil
}

// fixParams is the last middleware of the chain. It guards against gofast
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
func (g *Gateway) fixParams(rt route, requestID string) gofast.Middleware {
	return func(inner gofast.SessionHandler) gofast.SessionHandler {
		return func(client gofast.Client, req *gofast.Request) (*gofast.ResponsePipe, error) {
			r, p := req.Raw, req.Params

			for name := range r.Header {
				if !strings.Contains(name, "_") {
					continue
				}
				key := cgiHeaderName(name)
				delete(p, key)
				// A dashed header with the same CGI name keeps its value.
				for other, values := range r.Header {
					if !strings.Contains(other, "_") && cgiHeaderName(other) == key {
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
			p["DOCUMENT_ROOT"] = g.absRoot
			p["SCRIPT_FILENAME"] = rt.file
			p["SCRIPT_NAME"] = rt.scriptName
			p["DOCUMENT_URI"] = rt.scriptName + rt.pathInfo
			if rt.pathInfo != "" {
				p["PATH_INFO"] = rt.pathInfo
				p["PATH_TRANSLATED"] = filepath.Join(g.absRoot, filepath.FromSlash(rt.pathInfo))
			}
			p["SERVER_SOFTWARE"] = g.serverSoftware()
			p["REQUEST_ID"] = requestID
			if r.ContentLength <= 0 && r.Header.Get("Content-Length") == "" {
				// As nginx: no body, no length. A body of unknown length
				// gets its length once spooled.
				delete(p, "CONTENT_LENGTH")
			}
			return inner(client, req)
		}
	}
}

// cgiHeaderName is MapHeader's name for a header: X-Foo is HTTP_X_FOO.
func cgiHeaderName(name string) string {
	return "HTTP_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func (g *Gateway) serverSoftware() string {
	if g.ServerSoftware != "" {
		return g.ServerSoftware
	}
	return "fcgiscope"
}

// pairs orders params by name, so that what php-fpm gets does not depend
// on map order.
func pairs(p map[string]string) []fcgi.Pair {
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

func setContentLength(p map[string]string, n int64) {
	p["CONTENT_LENGTH"] = strconv.FormatInt(n, 10)
}
