package diagnostics

import (
	"strings"
	"testing"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// abandoned is a request whose web server closed the connection while PHP
// ran it.
func abandoned() *outcome.Trace {
	tr := workerDeath(2 * time.Second)
	tr.Err = outcome.ErrClientAborted
	return tr
}

// What PHP did after the web server gave up is said at once when nothing
// could tell it, and a follow ends, with what is known, when fcgiscope
// stops; a request that never reached php-fpm is not followed.
func TestAfterwardsSaysWhatCanBeKnown(t *testing.T) {
	stopped := make(chan struct{})
	close(stopped)
	rtt := &fpm.Pool{Name: "www", RequestTerminateTimeout: 30 * time.Second}
	for _, tc := range []struct {
		name string
		c    *Classifier
		want string
	}{
		{"no sources", &Classifier{}, "reads neither php-fpm's status page (pm.status_path) nor its error log"},
		{"error log only, nothing bounds the wait", &Classifier{Log: &fpm.Follower{}}, "set pm.status_path"},
		{"stopping", &Classifier{Log: &fpm.Follower{}, Pool: rtt, Done: stopped}, "fcgiscope stopped"},
	} {
		start := time.Now()
		d := tc.c.Diagnose(abandoned())
		if d.Cause != CauseClientAborted || !strings.Contains(d.Detail, "Afterwards: ") || !strings.Contains(d.Evidence["afterwards"], tc.want) {
			t.Errorf("%s: %s %q, want it to say %q", tc.name, d.Cause.ID, d.Detail, tc.want)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("%s: took %v to say so", tc.name, took)
		}
	}
	never := abandoned()
	never.DialEnd = time.Time{}
	if d := (&Classifier{}).Diagnose(never); strings.Contains(d.Detail, "Afterwards") {
		t.Errorf("a request that never reached php-fpm: %q", d.Detail)
	}
}
