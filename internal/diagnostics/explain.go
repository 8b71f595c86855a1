package diagnostics

import (
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
	// Sinks receive every finished request.
	Sinks []Sink

	// replied holds the Diagnosis of each request Respond answered for,
	// until Observe takes it.
	replied sync.Map // *outcome.Trace -> *Diagnosis
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
	return render(t, d, e.Detail)
}

// Observe hands a finished request and its diagnosis to every Sink.
func (e *Explainer) Observe(t *outcome.Trace) {
	var d *Diagnosis
	if v, ok := e.replied.LoadAndDelete(t); ok {
		d = v.(*Diagnosis)
	} else {
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
	return c.Diagnose(t)
}
