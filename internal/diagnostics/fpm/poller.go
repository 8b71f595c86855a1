package fpm

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/exchange"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// FetchStatus asks the php-fpm pool at addr for its status page at path
// (pm.status_path) in JSON with the process list, and parses it. The
// context bounds the whole exchange.
func FetchStatus(ctx context.Context, addr fcgi.Addr, path string) (*Status, error) {
	return fetchStatus(ctx, addr, path, 0)
}

func fetchStatus(ctx context.Context, addr fcgi.Addr, path string, dialTimeout time.Duration) (*Status, error) {
	if path == "" || path[0] != '/' {
		return nil, fmt.Errorf("fpm status: path %q must start with /", path)
	}
	var out bytes.Buffer
	t := &outcome.Trace{}
	exchange.Do(ctx, &exchange.Request{Upstream: addr, Params: PageParams(path, "json&full"), Stdout: &out, ConnectTimeout: dialTimeout}, t)
	if t.Err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fpm status %s%s: no answer: %w", addr, path, context.Cause(ctx))
		}
		return nil, fmt.Errorf("fpm status %s%s: %w", addr, path, t.Err)
	}
	_, bodyStart := cgi.HeadEnd(out.Bytes(), 0)
	body := out.Bytes()[max(bodyStart, 0):]
	if t.Status != 200 || !strings.HasPrefix(t.ContentType, "application/json") {
		why := strings.TrimSpace(string(t.Stderr))
		if why == "" {
			why = strings.TrimSpace(jsonSnippet(body))
		}
		if t.Status == 404 {
			return nil, fmt.Errorf("fpm status %s%s: php-fpm answered 404 (%s): the pool's pm.status_path is not %q, or it has none", addr, path, why, path)
		}
		return nil, fmt.Errorf("fpm status %s%s: php-fpm answered %d %q, not the JSON status page (%s)", addr, path, t.Status, t.ContentType, why)
	}
	st, err := ParseStatus(body)
	if err != nil {
		return nil, fmt.Errorf("fpm status %s%s: %w", addr, path, err)
	}
	st.At, st.Latency, st.path = t.End, t.End.Sub(t.DialStart), path
	return st, nil
}

// PageParams are the FastCGI params of a request for one of the pages
// php-fpm answers itself: its status page (pm.status_path, with query
// "json&full" for JSON with the process list) and its ping page
// (ping.path).
//
// php-fpm serves such a page only when SCRIPT_NAME is exactly its path,
// REQUEST_METHOD is set (GET; HEAD gets no body) and SCRIPT_FILENAME is
// present (its value does not matter; without it php-fpm answers "Primary
// script unknown"). QUERY_STRING chooses the status page's format. php-fpm
// ignores REQUEST_URI here; it is sent for access logs.
func PageParams(path, query string) []fcgi.Pair {
	uri := path
	if query != "" {
		uri += "?" + query
	}
	return []fcgi.Pair{
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "fcgiscope"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_NAME", Value: path},
		{Name: "SCRIPT_FILENAME", Value: path},
		{Name: "REQUEST_URI", Value: uri},
		{Name: "DOCUMENT_URI", Value: path},
		{Name: "QUERY_STRING", Value: query},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
		{Name: "REMOTE_ADDR", Value: "127.0.0.1"},
	}
}

// Poller polls a pool's status page at an interval and keeps the latest
// answer.
//
// A php-fpm worker serves the status page, so a saturated pool answers only
// when a worker frees up, which may take as long as the longest request.
// The Poller keeps at most one poll in flight: a tick that finds the last
// poll still waiting is skipped (and counted) rather than adding another
// connection to the pool's listen queue. A poll that has no answer within
// Timeout counts as failed, but it keeps waiting, up to MaxWait, so that
// its late answer, taken when the pool got to it, is not lost and no
// abandoned request is left in the queue for every tick.
type Poller struct {
	Addr fcgi.Addr
	// Path is the pool's pm.status_path.
	Path string
	// Interval is the time between polls; 0 means 2s.
	Interval time.Duration
	// Timeout is how long a poll may take before it counts as failed,
	// and bounds connecting; 0 means 1s.
	Timeout time.Duration
	// MaxWait is how long a poll waits for a late answer before it gives
	// up and closes its connection; 0 means 30s. It is at least Timeout.
	MaxWait time.Duration

	mu       sync.Mutex
	latest   *Status
	inFlight bool
	stats    PollerStats
}

// PollerStats counts what a Poller did, for metrics.
type PollerStats struct {
	// Polls is the number of polls started.
	Polls int64
	// Answers is the number of status pages received, late ones
	// included.
	Answers int64
	// Failures is the number of polls that failed or got no answer
	// within Timeout; TimedOut counts the latter.
	Failures, TimedOut int64
	// Late is the number of answers that arrived after Timeout.
	Late int64
	// Skipped is the number of ticks skipped because the previous poll
	// was still waiting.
	Skipped int64
	// InFlight reports whether a poll is waiting now.
	InFlight bool
	// LastError is the error of the last failed poll, and LastErrorAt
	// when it happened.
	LastError   string
	LastErrorAt time.Time
	// LastLatency is how long the last answer took.
	LastLatency time.Duration
}

func (p *Poller) interval() time.Duration {
	if p.Interval > 0 {
		return p.Interval
	}
	return 2 * time.Second
}

func (p *Poller) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return time.Second
}

func (p *Poller) maxWait() time.Duration {
	w := p.MaxWait
	if w <= 0 {
		w = 30 * time.Second
	}
	return max(w, p.timeout())
}

// Run polls at once and then every Interval until ctx ends. It returns
// when ctx ends, after the poll in flight has been abandoned.
func (p *Poller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(p.interval())
	defer tick.Stop()
	for {
		p.start(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// start starts a poll unless one is in flight.
func (p *Poller) start(ctx context.Context, wg *sync.WaitGroup) {
	p.mu.Lock()
	if p.inFlight {
		p.stats.Skipped++
		p.mu.Unlock()
		return
	}
	p.inFlight = true
	p.stats.Polls++
	p.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.poll(ctx)
	}()
}

func (p *Poller) poll(parent context.Context) {
	timeout := p.timeout()
	ctx, cancel := context.WithTimeout(parent, p.maxWait())
	defer cancel()
	// The timer marks the poll failed when the answer is slow; the poll
	// itself goes on waiting.
	var timedOut bool // guarded by p.mu
	fired := make(chan struct{})
	timer := time.AfterFunc(timeout, func() {
		defer close(fired)
		p.mu.Lock()
		defer p.mu.Unlock()
		timedOut = true
		p.stats.Failures++
		p.stats.TimedOut++
		p.stats.LastError = fmt.Sprintf("fpm status %s%s: no answer within %v; the pool may be saturated", p.Addr, p.Path, timeout)
		p.stats.LastErrorAt = time.Now()
	})
	st, err := fetchStatus(ctx, p.Addr, p.Path, timeout)
	if !timer.Stop() {
		<-fired
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight = false
	switch {
	case err != nil && parent.Err() != nil:
		// Run is ending; an abandoned poll is no failure of the pool.
	case err != nil:
		if !timedOut {
			p.stats.Failures++
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("fpm status %s%s: no answer within %v, giving up", p.Addr, p.Path, p.maxWait())
		}
		p.stats.LastError = err.Error()
		p.stats.LastErrorAt = time.Now()
	default:
		p.stats.Answers++
		if timedOut {
			p.stats.Late++
		}
		p.stats.LastLatency = st.Latency
		p.latest = st
	}
}

// Latest returns the most recent status received and when it arrived; ok
// is false when none has arrived yet. The Status must not be modified.
func (p *Poller) Latest() (st *Status, at time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.latest == nil {
		return nil, time.Time{}, false
	}
	return p.latest, p.latest.At, true
}

// Stats returns the poller's counters.
func (p *Poller) Stats() PollerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.InFlight = p.inFlight
	return s
}

// Running returns the worker with the given pid in the latest status, and
// whether it is there.
func (p *Poller) Running(pid int) (Process, bool) {
	st, _, ok := p.Latest()
	if !ok || pid <= 0 {
		return Process{}, false
	}
	for _, pr := range st.Processes {
		if pr.PID == pid {
			return pr, true
		}
	}
	return Process{}, false
}
