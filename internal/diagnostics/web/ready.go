package web

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/proxy"
)

// Readiness is the body of /readyz.
type Readiness struct {
	Ready    bool   `json:"ready"`
	Upstream string `json:"upstream,omitempty"`
	// Check is "get_values" or "ping", or "none" without an upstream.
	Check string `json:"check"`
	// Cause is the cause id the failure would give a request, as in
	// X-Fcgiscope-Cause; Title its headline and Detail the explanation
	// (left out for clients that get minimal detail).
	Cause     string    `json:"cause,omitempty"`
	Title     string    `json:"title,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	CheckedAt time.Time `json:"checked_at"`
	ElapsedMS float64   `json:"elapsed_ms"`
}

// readiness caches the last probe.
type readiness struct {
	mu   sync.Mutex // held during a probe, so that one runs at a time
	at   time.Time
	last Readiness
}

func (h *Handler) serveReady(w http.ResponseWriter, r *http.Request) {
	res := h.checkReady(r.Context())
	code := http.StatusOK
	if !res.Ready {
		code = http.StatusServiceUnavailable
	}
	// The probe paths need no token, so only a client that would see
	// everything anyway gets the addresses and the explanation.
	if !h.full(r) || (h.Token != "" && !h.authorized(r)) {
		res.Upstream, res.Detail = "", ""
	}
	writeJSON(w, code, res)
}

// checkReady returns the cached answer, or probes the upstream when it is
// older than ReadyCache. Probes that arrive during a probe wait for it.
func (h *Handler) checkReady(ctx context.Context) Readiness {
	if h.Upstream.IsZero() {
		return Readiness{Ready: true, Check: "none", CheckedAt: time.Now()}
	}
	ttl := h.ReadyCache
	if ttl <= 0 {
		ttl = time.Second
	}
	rd := &h.ready
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if !rd.at.IsZero() && time.Since(rd.at) < ttl {
		return rd.last
	}
	// The probe is not cut short by the client that happened to ask:
	// its answer serves the others too.
	rd.last = h.probe(context.WithoutCancel(ctx))
	rd.at = time.Now()
	return rd.last
}

// probe asks the upstream for FCGI_MPXS_CONNS, or requests PingPath, and
// explains a failure with the cause a request would get.
func (h *Handler) probe(ctx context.Context) Readiness {
	timeout := h.ReadyTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	addr := h.Upstream
	c := fcgi.Client{Addr: addr, DialTimeout: timeout}
	res := Readiness{Upstream: addr.String(), Check: "get_values"}
	start := time.Now()
	t := &proxy.Trace{
		RequestID:  "readyz",
		Method:     "GET",
		URI:        h.PingPath,
		Script:     h.PingPath,
		Upstream:   addr,
		Accepted:   start,
		ParamsDone: start,
		DialStart:  start,
	}
	var err error
	if h.PingPath == "" {
		_, err = c.GetValues(ctx, "FCGI_MPXS_CONNS")
	} else {
		res.Check = "ping"
		var resp *fcgi.Response
		resp, err = c.Do(ctx, pingRequest(h.PingPath))
		if err == nil {
			t.Status = cgiStatus(resp.Stdout)
			t.Stderr = resp.Stderr
		}
	}
	t.End = time.Now()
	res.CheckedAt, res.ElapsedMS = t.End, msOf(t.End.Sub(start))
	if err == nil && (t.Status == 0 || t.Status == http.StatusOK) {
		res.Ready = true
		return res
	}

	var classifier diagnostics.Classifier // no scans, no waiting for logs
	var op *net.OpError
	switch {
	case err == nil:
		// php-fpm answered the ping with an error page.
		d := classifier.Diagnose(t)
		if d != nil {
			res.Cause, res.Title = d.Cause.ID, d.Cause.Title
		}
		res.Detail = fmt.Sprintf("php-fpm answered the ping request for %s with status %d; check ping.path in the pool.", h.PingPath, t.Status)
		return res
	case errors.As(err, &op) && op.Op == "dial":
		t.Err = &proxy.DialError{Addr: addr, Err: op}
	default:
		t.DialEnd, t.StdinDone = start, start
		switch {
		case ctx.Err() != nil:
			t.Err = fmt.Errorf("%w (%s)", proxy.ErrReadTimeout, timeout)
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			t.Err = fmt.Errorf("%w: %w", fcgi.ErrNoEndRequest, err)
		default:
			t.Err = err
		}
	}
	d := classifier.Diagnose(t)
	res.Cause, res.Title, res.Detail = d.Cause.ID, d.Cause.Title, d.Detail
	if errors.Is(t.Err, proxy.ErrReadTimeout) {
		res.Detail = fmt.Sprintf("%s accepted the connection but no php-fpm worker answered within %s: every worker is busy, or php-fpm is stuck.", addr, timeout)
	}
	return res
}

// pingRequest is a request for php-fpm's ping.path.
func pingRequest(path string) *fcgi.Request {
	return &fcgi.Request{Params: []fcgi.Pair{
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "fcgiscope"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_NAME", Value: path},
		{Name: "SCRIPT_FILENAME", Value: path},
		{Name: "REQUEST_URI", Value: path},
		{Name: "QUERY_STRING", Value: ""},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
	}}
}

// cgiStatus returns the Status header of a CGI response, 200 without one.
func cgiStatus(b []byte) int {
	head := string(b)
	if i := strings.Index(head, "\r\n\r\n"); i >= 0 {
		head = head[:i]
	} else if i := strings.Index(head, "\n\n"); i >= 0 {
		head = head[:i]
	}
	for line := range strings.SplitSeq(head, "\n") {
		name, value, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if ok && strings.EqualFold(strings.TrimSpace(name), "status") {
			if n, err := strconv.Atoi(strings.Fields(value + " 0")[0]); err == nil {
				return n
			}
		}
	}
	return http.StatusOK
}
