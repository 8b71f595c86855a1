package web

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// Event stream timing.
const (
	// heartbeat keeps proxies from closing an idle stream.
	heartbeat = 15 * time.Second
	// writeTimeout drops a client that stops reading: the Recorder then
	// drops its events, and after this long the stream itself ends.
	writeTimeout = 10 * time.Second
	// replayLimit bounds the requests sent again to a client that
	// reconnects with Last-Event-ID.
	replayLimit = 200
)

// serveEvents streams new requests as Server-Sent Events:
//
//	id: 42
//	event: request
//	data: {"id":42,"request_id":"…","status":502,"outcome":"worker_crashed",…}
//
// When the client fell behind and events were dropped for it, an event
// "dropped" says how many ({"dropped":N}); the dashboard then reloads the
// list. A client that reconnects with Last-Event-ID first gets what it
// missed, as far as the ring still has it.
func (h *Handler) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	sub, ok := h.rec.subscribe()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "too many event streams are open")
		return
	}
	defer h.rec.unsubscribe(sub)
	full := h.full(r)

	hd := w.Header()
	hd.Set("Content-Type", "text/event-stream")
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriterSize(w, 8<<10)
	flush := func() error {
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := bw.Flush(); err != nil {
			return err
		}
		return rc.Flush()
	}

	bw.WriteString("retry: 2000\n: connected\n\n")
	if last, err := strconv.ParseUint(r.Header.Get("Last-Event-ID"), 10, 64); err == nil {
		for _, rec := range h.rec.after(last, replayLimit) {
			writeEvent(bw, &rec, full)
		}
	}
	if flush() != nil {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	var reported uint64
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			bw.WriteString(": ping\n\n")
		case rec := <-sub.ch:
			writeEvent(bw, &rec, full)
			// Send what else is waiting in one write.
			for more := len(sub.ch); more > 0; more-- {
				rec := <-sub.ch
				writeEvent(bw, &rec, full)
			}
		}
		if d := sub.dropped.Load(); d != reported {
			bw.WriteString("event: dropped\ndata: {\"dropped\":")
			bw.WriteString(strconv.FormatUint(d-reported, 10))
			bw.WriteString("}\n\n")
			reported = d
		}
		if flush() != nil {
			return
		}
	}
}

func writeEvent(bw *bufio.Writer, rec *record, full bool) {
	b, err := json.Marshal(rec.request(full))
	if err != nil {
		return
	}
	bw.WriteString("id: ")
	bw.WriteString(strconv.FormatUint(rec.seq, 10))
	bw.WriteString("\nevent: request\ndata: ")
	bw.Write(b)
	bw.WriteString("\n\n")
}
