package web

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Replay is what sending a request again needs, from
// /api/requests/{id}/replay: the params the upstream got, without the
// client's secrets, and the body when the sidecar was asked to keep it.
type Replay struct {
	ID        uint64 `json:"id"`
	RequestID string `json:"request_id"`
	Upstream  string `json:"upstream"`
	Method    string `json:"method"`
	URI       string `json:"uri"`
	// Outcome, Title, Status and DurationMS are how it went the first
	// time, to set beside the replay's.
	Outcome    string  `json:"outcome"`
	Title      string  `json:"title,omitempty"`
	Status     int     `json:"status"`
	DurationMS float64 `json:"duration_ms"`
	// Params are in the order the web server sent them.
	Params []Param `json:"params"`
	// Redacted names the params left out or changed because they held
	// secrets: cookies, Authorization, secret-looking query values.
	Redacted []string `json:"redacted,omitempty"`
	// BodyBytes is the body's CONTENT_LENGTH; Body is set when BodyKept.
	BodyBytes    int64  `json:"body_bytes"`
	BodyKept     bool   `json:"body_kept"`
	BodyRedacted bool   `json:"body_redacted,omitempty"`
	Body         []byte `json:"body,omitempty"`
}

// Param is one FastCGI param.
type Param struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// ReplayPath is the admin API path of a request's replay.
func ReplayPath(id string) string { return "/api/requests/" + id + "/replay" }

func (h *Handler) serveReplay(w http.ResponseWriter, r *http.Request) {
	if !h.full(r) {
		writeError(w, http.StatusForbidden, "a replay holds the request's paths and params: it is given to clients with full detail only (loopback, FCGISCOPE_TRUSTED_NETWORKS, or FCGISCOPE_ERROR_DETAIL=full)")
		return
	}
	id := r.PathValue("id")
	d, ok := h.lookup(id)
	if !ok {
		writeError(w, http.StatusNotFound, "no request "+strconv.Quote(id)+" among the recent ones; older requests are only in the log")
		return
	}
	rp := d.replay
	if rp == nil {
		why := "it went well, and fcgiscope keeps what a replay needs only for requests that failed, got an error status or wrote to stderr"
		if d.rec.cause != nil {
			why = fmt.Sprintf("it ended as %s with status %d and nothing on stderr, and fcgiscope keeps what a replay needs only for requests that failed, got an error status or wrote to stderr; or its params were over 16 KiB", d.rec.cause.ID, d.rec.status)
		}
		writeError(w, http.StatusNotFound, "request "+strconv.Quote(id)+" cannot be replayed: "+why)
		return
	}
	out := Replay{
		ID: d.rec.seq, RequestID: d.rec.requestID, Upstream: d.rec.upstream.String(),
		Method: d.rec.method, URI: d.rec.uri,
		Outcome: d.rec.outcome(), Status: d.rec.status, DurationMS: msOf(d.rec.duration()),
		Params:    make([]Param, len(rp.params)),
		Redacted:  rp.redacted,
		BodyBytes: rp.bodyBytes, BodyKept: rp.body != nil, BodyRedacted: rp.bodyRedacted, Body: rp.body,
	}
	if d.rec.cause != nil {
		out.Title = d.rec.cause.Title
	}
	for i, p := range rp.params {
		out.Params[i] = Param(p)
		if p.Name == "REQUEST_URI" {
			out.URI = p.Value
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// replayCommand is the command line that replays rec through the admin
// endpoint at host, the address the dashboard was reached at.
func replayCommand(rec record, host string) string {
	id := rec.requestID
	if id == "" || strings.ContainsAny(id, " '\"\\$`/") {
		id = strconv.FormatUint(rec.seq, 10)
	}
	return "fcgiscope request --replay " + id + " --admin " + host
}
