package diagnostics

import (
	"net/netip"
	"sync"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// A Sink receives every finished request with its diagnosis, nil for a
// request that went well. Record is called once per request, possibly from
// several goroutines at once, and must not keep t or d after it returns.
type Sink interface {
	Record(t *outcome.Trace, d *Diagnosis)
}

// Explainer is the one diagnosis step between the relay (or the HTTP
// gateway) and everything that reports on requests. When a request fails
// while its response can still be replaced, Respond diagnoses it and renders
// the explanation; when a request is over, Observe hands it to every Sink
// with the same Diagnosis, worked out once, so that the page, the log line,
// the metrics and the dashboard never disagree, whatever order the Sinks
// come in.
//
// Its zero value works: it classifies without php-fpm knowledge, shows full
// detail to local clients only, and records nothing.
type Explainer struct {
	// Classifier explains failures; nil means one without php-fpm
	// knowledge.
	Classifier *Classifier
	// Detail is how much a replacement response tells the client.
	Detail Detail
	// Trusted are the networks whose clients DetailLocal shows everything
	// to, besides loopback.
	Trusted []netip.Prefix
	// Sinks receive every finished request.
	Sinks []Sink

	// replied holds the Diagnosis of each request Respond answered for,
	// and reviewed that of each Review looked at, until Observe takes it.
	replied, reviewed sync.Map // *outcome.Trace -> *Diagnosis
}

// plainClassifier explains failures for an Explainer without a Classifier.
var plainClassifier Classifier

// Respond diagnoses a request that failed before any of its response was
// sent, and returns the response that explains it.
func (e *Explainer) Respond(t *outcome.Trace) cgi.Reply {
	d := e.diagnose(t)
	if d == nil {
		// A Trace without an error needs no replacement; should one
		// come anyway, it is no less a failure for that.
		d = &Diagnosis{Evidence: map[string]string{}}
		unexplained(d, "The request failed without an error.")
	}
	e.replied.Store(t, d)
	return render(t, d, Audience{e.Detail, e.Trusted})
}

// Observe hands a finished request and its diagnosis to every Sink.
func (e *Explainer) Observe(t *outcome.Trace) {
	var d *Diagnosis
	reviewed, wasReviewed := e.reviewed.LoadAndDelete(t)
	switch v, ok := e.replied.LoadAndDelete(t); {
	case ok:
		d = v.(*Diagnosis)
	case wasReviewed && t.Err == nil:
		// Unless sending the reviewed response failed after all.
		d = reviewed.(*Diagnosis)
	default:
		d = e.diagnose(t)
	}
	for _, s := range e.Sinks {
		s.Record(t, d)
	}
}

// diagnose explains t with the Classifier.
func (e *Explainer) diagnose(t *outcome.Trace) *Diagnosis {
	c := e.Classifier
	if c == nil {
		c = &plainClassifier
	}
	d := c.Diagnose(t)
	if d != nil && t.Span != nil {
		// The trace holds PHP's spans too: the page and the log lead
		// there.
		if d.Evidence == nil {
			d.Evidence = map[string]string{}
		}
		d.Evidence["trace_id"] = t.Span.TraceID()
	}
	return d
}

// shownToDevelopers are the problems of completed responses that the local
// HTTP gateway puts on the page: PHP hides them from the browser, and a
// developer at the keyboard wants them there.
var shownToDevelopers = map[*Cause]bool{
	CausePHPFatal: true, CauseMemory: true, CauseBodyDiscarded: true,
	CauseUploadTooLarge: true, CauseDiskFull: true,
}

// Review diagnoses a response php-fpm completed, before it is sent, for a
// developer on this machine. When PHP reported a problem the page hides,
// it returns the cause's id, a whole page that explains it, for a response
// without a body, and an HTML fragment that says the same, to put at the
// top of an HTML page; otherwise cause is "". Observe reuses the
// Diagnosis. Clients not on loopback get nothing: the explanation holds
// paths and settings.
func (e *Explainer) Review(t *outcome.Trace) (cause string, page cgi.Reply, banner []byte) {
	if !(Audience{Detail: DetailLocal}).Full(t.RemoteAddr) { // loopback only
		return "", cgi.Reply{}, nil
	}
	d := e.diagnose(t)
	e.reviewed.Store(t, d)
	if d == nil || !shownToDevelopers[d.Cause] {
		return "", cgi.Reply{}, nil
	}
	// The page keeps the status php-fpm gave.
	d = &Diagnosis{Cause: d.Cause, Status: t.Status, Detail: d.Detail, Hints: d.Hints, Evidence: d.Evidence, FPMPid: d.FPMPid}
	return d.Cause.ID, render(t, d, Audience{Detail: DetailFull}), renderBanner(d)
}
