package diagnostics

import (
	"fmt"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// maxFollowed bounds the requests followed at once after the web server
// gave up on them; a storm of aborted requests must not pin a goroutine and
// a Trace each for minutes.
const maxFollowed = 256

// followTick is how often a followed request's sources are looked at.
const followTick = 100 * time.Millisecond

// afterwards follows the php-fpm worker of a request that the web server
// (or its client) gave up on while PHP ran, until it is known how the
// script ended, and says so in d. Without a web server waiting for it, PHP
// goes on: it finishes and its output is thrown away, or
// request_terminate_timeout kills it. That is what the user needs to know
// to see that raising max_execution_time would have changed nothing.
//
// The wait is bounded by request_terminate_timeout (and a margin), or by
// FollowFor when the pool has none, and cut short by Done.
func (c *Classifier) afterwards(t *outcome.Trace, d *Diagnosis, gaveUp string) {
	if t.DialEnd.IsZero() {
		return // never reached php-fpm
	}
	say := func(s string) {
		d.Evidence["afterwards"] = s
		d.Detail += " Afterwards: " + s
	}
	if t.Ended && t.EndedAt.After(t.End) {
		// The relay went on as php-fpm would, and saw the end itself.
		say(fmt.Sprintf("PHP went on and finished the script %s after %s, having run %s in all; its output was discarded.", seconds(t.EndedAt.Sub(t.End)), gaveUp, seconds(t.EndedAt.Sub(t.DialEnd))))
		return
	}
	rtt := time.Duration(0)
	if c.pool() != nil {
		rtt = c.pool().RequestTerminateTimeout
	}
	switch {
	case c.Status == nil && c.Log == nil:
		say("what PHP did cannot be known here: fcgiscope reads neither php-fpm's status page (pm.status_path) nor its error log.")
		return
	case c.Status == nil && rtt <= 0:
		// The error log tells of kills and crashes only, and without
		// request_terminate_timeout nothing bounds the wait for one.
		say("whether PHP finished the script cannot be known without php-fpm's status page: set pm.status_path in the pool.")
		return
	}
	if c.followed.Add(1) > maxFollowed {
		c.followed.Add(-1)
		say(fmt.Sprintf("not followed: more than %d such requests were being followed at once.", maxFollowed))
		return
	}
	defer c.followed.Add(-1)

	f := follower{c: c, t: t, gaveUp: gaveUp}
	deadline := t.End.Add(c.followFor())
	if rtt > 0 {
		deadline = t.DialEnd.Add(rtt + rtt/3 + 2*time.Second)
	}
	tick := time.NewTicker(followTick)
	defer tick.Stop()
	for {
		if s, ok := f.look(); ok {
			say(s + f.stack())
			return
		}
		if !time.Now().Before(deadline) {
			say(f.stillRunning() + f.stack())
			return
		}
		select {
		case <-c.Done:
			say(fmt.Sprintf("fcgiscope stopped %s after %s, before it learned how the script ended.", seconds(time.Since(t.End)), gaveUp))
			return
		case <-tick.C:
		}
	}
}

func (c *Classifier) followFor() time.Duration {
	if c.FollowFor > 0 {
		return c.FollowFor
	}
	return 2 * time.Minute
}

// follower is what is known of one followed request's worker.
type follower struct {
	c      *Classifier
	t      *outcome.Trace
	gaveUp string // "nginx gave up", "the client went away"

	statusAt time.Time // the last status page looked at
	pid      int       // the worker, once found on the status page
	start    time.Time // when it began the request, by the status page
	served   int64     // its request count then
	ran      time.Duration
	seen     time.Time // the last status page that showed it at the request
}

// look reads php-fpm's error log and its latest status page, and returns
// how the script ended, once that is known.
func (f *follower) look() (string, bool) {
	t, c := f.t, f.c
	if c.Log != nil {
		killed, ok := c.Log.Find(t.DialStart, 0, func(e fpm.Event) bool {
			return e.Kind == fpm.EventTimedOut && e.Script == t.Script && (f.pid == 0 || e.Pid == f.pid)
		})
		if ok {
			f.pid = killed.Pid
			return f.killed(killed), true
		}
		if f.pid != 0 {
			if died, ok := c.Log.Find(t.DialStart, 0, func(e fpm.Event) bool { return e.Kind == fpm.EventSignal && e.Pid == f.pid }); ok {
				return fmt.Sprintf("its worker (pid %d) died on %s before the script finished (php-fpm's error log).", f.pid, died.SignalName), true
			}
		}
	}
	if c.Status == nil {
		return "", false
	}
	st, at, ok := c.Status.Latest()
	if !ok || !at.After(f.statusAt) {
		return "", false
	}
	f.statusAt = at
	if f.pid == 0 {
		return f.find(st, at)
	}
	for _, p := range st.Processes {
		if p.PID != f.pid {
			continue
		}
		// php-fpm counts a request when it begins: while the count
		// stays, the worker is at this request or idle after it.
		switch {
		case p.Requests == f.served && p.Busy():
			f.ran, f.seen = p.RequestDuration, at
			return "", false
		case p.Requests == f.served:
			return f.finished(p.RequestDuration, p.PID), true
		}
		// It has begun another since (the status page's own request,
		// perhaps): the script ended between the last sight of it and
		// that request's start.
		end := at
		if p.Busy() {
			end = at.Add(-p.RequestDuration)
		}
		return fmt.Sprintf("PHP went on and finished %s to %s after %s (worker pid %d, php-fpm's status page); its output was discarded.", seconds(max(f.seen.Sub(t.End), 0)), seconds(max(end.Sub(t.End), 0)), f.gaveUp, f.pid), true
	}
	if c.Log != nil {
		// The worker is gone; its log line may be a moment behind.
		return "", false
	}
	return fmt.Sprintf("its worker (pid %d) left php-fpm's status page within %s after %s: it was killed or crashed.", f.pid, seconds(at.Sub(t.End)), f.gaveUp), true
}

// stack adds where php-fpm's slowlog caught the script, when it did: the
// line a slow request was at tells what to make faster.
func (f *follower) stack() string {
	if f.c.Slowlog == nil || f.pid == 0 {
		return ""
	}
	entry, ok := f.c.Slowlog.Find(f.pid, f.t.DialStart, 0)
	if !ok {
		return ""
	}
	if top, ok := entry.Top(); ok {
		return fmt.Sprintf(" php-fpm's slowlog caught it in %s.", top)
	}
	return ""
}

// find looks for the request's worker on a status page taken at at: busy
// with a request of the same script and method that began when this one
// reached php-fpm, or idle after one that ran at least until the web server
// gave up, and began no sooner than this one did.
func (f *follower) find(st *fpm.Status, at time.Time) (string, bool) {
	t := f.t
	same := func(p fpm.Process) bool { return t.Script != "" && p.Script == t.Script && p.Method == t.Method }
	for _, p := range st.Processes {
		if !same(p) {
			continue
		}
		if p.Busy() {
			start := at.Add(-p.RequestDuration)
			if start.After(t.DialStart.Add(-time.Second)) && start.Before(t.End.Add(time.Second)) {
				f.pid, f.start, f.served, f.ran, f.seen = p.PID, start, p.Requests, p.RequestDuration, at
				return "", false
			}
			continue
		}
		if at.After(t.End) && p.RequestDuration >= t.End.Sub(t.DialEnd)-200*time.Millisecond &&
			p.RequestDuration <= at.Sub(t.DialStart)+200*time.Millisecond {
			return f.finished(p.RequestDuration, p.PID), true
		}
	}
	return "", false
}

// finished says that the script ended by itself after running ran.
func (f *follower) finished(ran time.Duration, pid int) string {
	t := f.t
	start := f.start
	if start.IsZero() {
		start = t.DialEnd
	}
	later := start.Add(ran).Sub(t.End)
	return fmt.Sprintf("PHP went on and finished %s after %s, having run %s in all (worker pid %d, php-fpm's status page); its output was discarded.", seconds(max(later, 0)), f.gaveUp, seconds(ran), pid)
}

// killed says that php-fpm ended the script at request_terminate_timeout.
func (f *follower) killed(e fpm.Event) string {
	t := f.t
	limit := "request_terminate_timeout"
	if p := f.c.pool(); p != nil && p.RequestTerminateTimeout > 0 {
		limit = fmt.Sprintf("request_terminate_timeout = %s%s", p.RequestTerminateTimeout, at(p.Settings["request_terminate_timeout"].Where()))
	}
	ran := time.Duration(e.Seconds * float64(time.Second))
	later := t.DialEnd.Add(ran).Sub(t.End)
	return fmt.Sprintf("PHP went on until php-fpm killed it at %s, having run %s, %s after %s (\"execution timed out\" in php-fpm's error log, worker pid %d); its output was lost.", limit, seconds(ran), seconds(max(later, 0)), f.gaveUp, e.Pid)
}

// stillRunning says what is known when the follow ran out of time.
func (f *follower) stillRunning() string {
	if f.pid != 0 {
		return fmt.Sprintf("PHP was still running it (worker pid %d, %s in all) when fcgiscope stopped following it, %s after %s.", f.pid, seconds(f.ran), seconds(time.Since(f.t.End)), f.gaveUp)
	}
	return fmt.Sprintf("fcgiscope could not tell: the request did not show on php-fpm's status page, nor in its error log, within %s after %s.", seconds(time.Since(f.t.End)), f.gaveUp)
}
