package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

//go:embed assets
var assets embed.FS

// cookieName holds the token for browsers, which cannot send an
// Authorization header from a page load or an EventSource.
const cookieName = "fcgiscope_admin"

// Handler is the admin HTTP endpoint:
//
//	GET /metrics             Prometheus metrics
//	GET /healthz             200 "ok" while the process runs
//	GET /readyz              200 when the upstream accepts a FastCGI connection, else 503 naming the cause
//	GET /api/requests        recent requests, newest first (?outcome=ok|failed, ?cause=ID, ?limit=N)
//	GET /api/requests/{id}   one request in full: timeline, explanation, hints, evidence, stderr
//	GET /api/summary         what the dashboard shows: throughput, latency series, causes, the pool
//	GET /api/events          new requests as Server-Sent Events
//	GET /                    the dashboard
//	GET /debug/pprof/        Go's profiler, when Pprof is set
//
// When Token is set, every path but /healthz and /readyz needs it, as
// "Authorization: Bearer <token>" or, for browsers, in a cookie set by the
// dashboard's sign-in form.
//
// The zero value serves an empty Recorder and reports ready without probing.
// Fields must not change after the first request. Serve runs it with
// suitable timeouts; an http.Server of the caller's must not set
// ReadTimeout or WriteTimeout, which would cut the event streams.
type Handler struct {
	// Recorder supplies the metrics and the recent requests; nil means an
	// empty one.
	Recorder *Recorder
	// Upstream is probed by /readyz; the zero Addr makes /readyz the same
	// as /healthz.
	Upstream fcgi.Addr
	// PingPath, when set, makes /readyz send a request for php-fpm's
	// ping.path and want a 200, instead of asking for FCGI_MPXS_CONNS
	// with GET_VALUES. Both are answered by a php-fpm worker, so both
	// fail while every worker is busy.
	PingPath string
	// ReadyTimeout bounds the readiness probe; 0 means 1s.
	ReadyTimeout time.Duration
	// ReadyCache is how long a probe's answer is reused, so that a storm of
	// probes cannot load php-fpm; 0 means 1s.
	ReadyCache time.Duration
	// Token, when set, is required for everything but the probes.
	Token string
	// Detail is how much the API shows of each request, as
	// FCGISCOPE_ERROR_DETAIL is for error pages: DetailMinimal hides
	// script paths, query strings, addresses, explanations, evidence and
	// stderr; DetailLocal, the default, shows everything to admin clients
	// on loopback and on the Trusted networks, and minimal detail to the
	// rest. Secret-looking query parameters are redacted even then.
	Detail diagnostics.Detail
	// Trusted are the networks DetailLocal treats as local, besides
	// loopback.
	Trusted []netip.Prefix
	// Log receives a line for each request with a wrong token, with the
	// client's address; the zero Logger discards them.
	Log zerolog.Logger
	// Pprof serves Go's profiler under /debug/pprof/.
	Pprof bool

	once  sync.Once
	mux   *http.ServeMux
	rec   *Recorder
	ready readiness
	// guessing serializes the answers to wrong tokens, each delayed,
	// so that guesses cannot be made faster than one per
	// wrongTokenDelay, however many connections make them.
	guessing sync.Mutex
}

// wrongTokenDelay is what a wrong token costs its sender.
const wrongTokenDelay = 250 * time.Millisecond

func (h *Handler) init() {
	h.once.Do(func() {
		h.rec = h.Recorder
		if h.rec == nil {
			h.rec = &Recorder{}
		}
		h.rec.init()
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Write([]byte("ok\n"))
		})
		mux.HandleFunc("GET /readyz", h.serveReady)
		mux.Handle("GET /metrics", promhttp.HandlerFor(h.rec.Registry(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, EnableOpenMetrics: true}))
		mux.HandleFunc("GET /api/requests", h.serveRequests)
		mux.HandleFunc("GET /api/requests/{id}", h.serveRequest)
		mux.HandleFunc("GET /api/requests/{id}/replay", h.serveReplay)
		mux.HandleFunc("GET /api/summary", h.serveSummary)
		mux.HandleFunc("GET /api/events", h.serveEvents)
		mux.HandleFunc("POST /login", h.serveLogin)
		static, _ := fs.Sub(assets, "assets")
		mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(static)))
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-store")
			http.ServeFileFS(w, r, static, "index.html")
		})
		if h.Pprof {
			mux.HandleFunc("GET /debug/pprof/", pprof.Index)
			mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
		}
		h.mux = mux
	})
}

// ServeHTTP answers one admin request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.init()
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'")
	switch r.URL.Path {
	case "/healthz", "/readyz", "/login":
	default:
		if !h.authorized(r) {
			if h.offeredToken(r) {
				h.wrongToken(r)
			}
			h.unauthorized(w, r)
			return
		}
	}
	h.mux.ServeHTTP(w, r)
}

// authorized reports whether r carries the token, when one is needed.
func (h *Handler) authorized(r *http.Request) bool {
	if h.Token == "" {
		return true
	}
	if auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return h.tokenMatches(strings.TrimSpace(auth))
	}
	if c, err := r.Cookie(cookieName); err == nil {
		return h.tokenMatches(c.Value)
	}
	return false
}

// tokenMatches compares digests, which have one length whatever the token
// offered, so that the time taken tells nothing of the token's length.
func (h *Handler) tokenMatches(s string) bool {
	offered, want := sha256.Sum256([]byte(s)), sha256.Sum256([]byte(h.Token))
	return subtle.ConstantTimeCompare(offered[:], want[:]) == 1
}

// offeredToken reports whether r carries a token at all, as opposed to a
// first visit that is to be shown the sign-in form.
func (h *Handler) offeredToken(r *http.Request) bool {
	if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		return true
	}
	_, err := r.Cookie(cookieName)
	return err == nil
}

// wrongToken logs a wrong token with the client's address and makes its
// sender wait, one guess at a time.
func (h *Handler) wrongToken(r *http.Request) {
	h.Log.Warn().Str("client", r.RemoteAddr).Str("path", r.URL.Path).
		Msg("admin endpoint: wrong token (FCGISCOPE_ADMIN_TOKEN); the answer is delayed")
	h.guessing.Lock()
	defer h.guessing.Unlock()
	time.Sleep(wrongTokenDelay)
}

var loginPage = template.Must(template.ParseFS(assets, "assets/login.html"))

// unauthorized answers a request without the token: a browser opening the
// dashboard gets a sign-in form, everything else a 401.
func (h *Handler) unauthorized(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="fcgiscope admin"`)
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/" && strings.Contains(r.Header.Get("Accept"), "text/html") {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		loginPage.Execute(w, struct{ Failed bool }{false})
		return
	}
	writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "this endpoint needs the admin token (FCGISCOPE_ADMIN_TOKEN) as Authorization: Bearer <token>"})
}

// serveLogin takes the token from the sign-in form and keeps it in a cookie
// the browser sends with every later request of the dashboard.
func (h *Handler) serveLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	token := r.PostFormValue("token")
	if h.Token == "" {
		http.Redirect(w, r, "./", http.StatusSeeOther)
		return
	}
	if !h.tokenMatches(token) {
		// A wrong guess costs time, so that the form is no fast oracle.
		h.wrongToken(r)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusUnauthorized)
		loginPage.Execute(w, struct{ Failed bool }{true})
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     cookieName,
		Value:    token,
		Path:     "/",
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "./", http.StatusSeeOther)
}

// full reports whether the admin client r gets full detail.
func (h *Handler) full(r *http.Request) bool {
	return diagnostics.Audience{Detail: h.Detail, Trusted: h.Trusted}.Full(r.RemoteAddr)
}

// Serve answers admin requests on ln until ctx ends. Then it ends the event
// streams, gives other requests up to 5 seconds to finish, and returns nil;
// otherwise it returns the error that stopped the listener.
func (h *Handler) Serve(ctx context.Context, ln net.Listener) error {
	// No ReadTimeout or WriteTimeout: either would cut the event streams
	// and a CPU profile; the only request body, the sign-in form's, is
	// bounded in size.
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Requests see ctx end, which stops the event streams.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    log.New(discard{}, "", 0),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// ErrExposed is wrapped by CheckExposure's warning.
var ErrExposed = errors.New("the admin endpoint is reachable from other hosts without a token")

// CheckExposure returns an error wrapping ErrExposed when addr, a host:port
// the admin endpoint is to listen on, is not a loopback address and token
// is empty: the recent requests' URIs, script paths and php-fpm's stderr
// would be open to anyone who can reach it. fcgiscope starts anyway; the
// caller logs the error as a warning. It returns other errors for an addr
// that is not host:port.
func CheckExposure(addr, token string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("admin address %q: %w", addr, err)
	}
	if token != "" || isLoopbackHost(host) {
		return nil
	}
	return fmt.Errorf("%w: %s listens on %s; set FCGISCOPE_ADMIN_TOKEN, or listen on 127.0.0.1", ErrExposed, addr, orDefault(host, "every interface"))
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
