package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgienv"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/web"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// defaultAdmin is where serve's admin endpoint listens by default.
const defaultAdmin = "127.0.0.1:9180"

// fetchReplay asks the sidecar's admin endpoint for what replaying request
// id needs. The token, when the endpoint wants one, comes from
// FCGISCOPE_ADMIN_TOKEN as for serve, never from the command line, where
// other users of the host could read it.
func fetchReplay(ctx context.Context, admin, id string) (*web.Replay, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+web.ReplayPath(url.PathEscape(id)), nil)
	if err != nil {
		return nil, fmt.Errorf("--admin %s: %w", admin, err)
	}
	if tok := os.Getenv("FCGISCOPE_ADMIN_TOKEN"); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("nothing listens at %s (--admin, default FCGISCOPE_ADMIN_LISTEN or %s): give the address of the admin endpoint of the fcgiscope serve that handled the request", admin, defaultAdmin)
		}
		return nil, fmt.Errorf("asking fcgiscope at %s for request %s: %w", admin, id, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("reading request %s from %s: %w", id, admin, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(body, &e)
		msg := e.Error
		if msg == "" {
			msg = strings.TrimSpace(string(body))
		}
		if resp.StatusCode == http.StatusUnauthorized {
			msg += "; set FCGISCOPE_ADMIN_TOKEN to the sidecar's token"
		}
		return nil, fmt.Errorf("fcgiscope at %s answered %s: %s", admin, resp.Status, msg)
	}
	var rp web.Replay
	if err := json.Unmarshal(body, &rp); err != nil {
		return nil, fmt.Errorf("fcgiscope at %s sent a replay this version cannot read: %w", admin, err)
	}
	return &rp, nil
}

// replayParams returns the request to send again: the recorded params with
// the command line's -H, --param and -d applied, and the body. It tells on
// stderr what differs from the first time.
func (o *requestOptions) replayParams(rp *web.Replay, stderr io.Writer) ([]fcgi.Pair, io.Reader, func(), error) {
	params := make([]fcgi.Pair, 0, len(rp.Params)+len(o.headers)+len(o.params)+1)
	for _, p := range rp.Params {
		params = append(params, fcgi.Pair(p))
	}
	set := func(name, value string) {
		for i := range params {
			if params[i].Name == name {
				params[i].Value = value
				return
			}
		}
		params = append(params, fcgi.Pair{Name: name, Value: value})
	}
	for _, h := range o.headers {
		if strings.EqualFold(h.name, "Content-Type") {
			set("CONTENT_TYPE", h.value)
		}
		set(cgienv.HeaderParam(h.name), h.value)
	}
	body, length, closeBody, err := o.openBody()
	if err != nil {
		return nil, nil, nil, err
	}
	switch {
	case body != nil:
		set("CONTENT_LENGTH", strconv.FormatInt(length, 10))
	case rp.BodyKept:
		body = bytes.NewReader(rp.Body)
		set("CONTENT_LENGTH", strconv.Itoa(len(rp.Body)))
		if rp.BodyRedacted {
			fmt.Fprintln(stderr, "fcgiscope request: the body is sent with its secret-looking fields replaced by REDACTED")
		}
	case rp.BodyBytes > 0:
		set("CONTENT_LENGTH", "")
		fmt.Fprintf(stderr, "fcgiscope request: the body (%d bytes) was not kept, so the request goes without it; the sidecar keeps bodies up to FCGISCOPE_REPLAY_BODY_BYTES, or give one with -d @file\n", rp.BodyBytes)
	}
	// nginx passes the client's Content-Length header on as well; keep
	// the two in step with the body sent.
	for i := range params {
		if params[i].Name == "HTTP_CONTENT_LENGTH" {
			params[i].Value = paramOf(params, "CONTENT_LENGTH")
		}
	}
	for _, p := range o.params {
		set(p.Name, p.Value)
	}
	if len(rp.Redacted) > 0 {
		fmt.Fprintf(stderr, "fcgiscope request: the sidecar kept no secrets, so these go without their values or not at all: %s; give your own with -H or --param\n", strings.Join(rp.Redacted, ", "))
	}
	return params, body, closeBody, nil
}

// replayTarget is the upstream a replay goes to: --upstream when given,
// else where the request went the first time.
func (o *requestOptions) replayTarget(rp *web.Replay) (fcgi.Addr, error) {
	if o.upstreamGiven {
		return o.upstream, nil
	}
	a, err := fcgi.ParseAddr(rp.Upstream)
	if err != nil {
		return fcgi.Addr{}, fmt.Errorf("the recorded upstream %q: %w; give one with --upstream", rp.Upstream, err)
	}
	return a, nil
}

// compareLine sets the replay's outcome beside the first time's.
func compareLine(rp *web.Replay, t *outcome.Trace, d *diagnostics.Diagnosis) string {
	before := fmt.Sprintf("%s (HTTP %d) after %s", rp.Outcome, rp.Status, msString(time.Duration(rp.DurationMS*float64(time.Millisecond))))
	now := fmt.Sprintf("ok (HTTP %d) after %s", t.Status, msString(t.End.Sub(t.DialStart)))
	if d != nil {
		status := t.Status
		if status == 0 || t.Err != nil {
			status = d.StatusCode()
		}
		now = fmt.Sprintf("%s (HTTP %d) after %s", d.Cause.ID, status, msString(t.End.Sub(t.DialStart)))
	}
	return fmt.Sprintf("fcgiscope: request %s: first %s; replayed %s", rp.RequestID, before, now)
}

func paramOf(params []fcgi.Pair, name string) string {
	for _, p := range params {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
}
