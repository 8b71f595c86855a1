package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
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
	addr := h.Upstream
	res := Readiness{Upstream: addr.String(), Check: "get_values"}
	start := time.Now()
	var t *outcome.Trace
	if h.PingPath == "" {
		_, err := hostprobe.Options{Timeout: timeout}.Probe(ctx, addr)
		if err != nil {
			t = hostprobe.Trace(addr, err, start, timeout)
		}
	} else {
		res.Check = "ping"
		t = &outcome.Trace{RequestID: "readyz", Accepted: start}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		exchange.Do(ctx, &exchange.Request{Upstream: addr, Params: fpm.PageParams(h.PingPath, ""),
			ConnectTimeout: timeout, ReadTimeout: timeout}, t)
		if errors.Is(t.Err, outcome.ErrClientAborted) {
			// The probe's own time ran out.
			t.Err = &outcome.ReadTimeoutError{Timeout: timeout}
		}
		if t.Err == nil && t.Status == http.StatusOK {
			t = nil
		}
	}
	end := time.Now()
	res.CheckedAt, res.ElapsedMS = end, msOf(end.Sub(start))
	if t == nil {
		res.Ready = true
		return res
	}

	var classifier diagnostics.Classifier // no scans, no waiting for logs
	d := classifier.Diagnose(t)
	if d != nil {
		res.Cause, res.Title, res.Detail = d.Cause.ID, d.Cause.Title, d.Detail
	}
	var rte *outcome.ReadTimeoutError
	switch {
	case t.Err == nil:
		// php-fpm answered the ping with an error page.
		res.Detail = fmt.Sprintf("php-fpm answered the ping request for %s with status %d; check ping.path in the pool.", h.PingPath, t.Status)
	case errors.As(t.Err, &rte):
		res.Detail = fmt.Sprintf("%s accepted the connection but no php-fpm worker answered within %s: every worker is busy, or php-fpm is stuck.", addr, timeout)
	}
	return res
}
