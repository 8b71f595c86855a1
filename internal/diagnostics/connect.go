package diagnostics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

func (c *Classifier) dialFailure(t *outcome.Trace, de *outcome.DialError, d *Diagnosis) {
	err := de.Err
	addr := de.Addr
	ev := d.Evidence
	var dnsErr *net.DNSError
	unix := addr.Network == "unix"
	switch {
	case errors.As(err, &dnsErr):
		d.Cause = CauseDNSFailed
		ev["host"] = dnsErr.Name
		if dnsErr.IsTimeout || errors.Is(err, context.DeadlineExceeded) {
			// A lookup that timed out is a gateway timeout, not a bad name.
			d.Status = CauseDNSFailed.AltStatus
			d.Detail = fmt.Sprintf("Looking up %q timed out: %v.", dnsErr.Name, dnsErr.Err)
		} else {
			d.Detail = fmt.Sprintf("The host name %q of %s does not resolve: %v.", dnsErr.Name, addr, dnsErr.Err)
		}
		d.Hints = []string{"Check the spelling of the host in FCGISCOPE_UPSTREAM, or use php-fpm's IP address or unix socket."}
	case errors.Is(err, syscall.ENOENT):
		d.Cause = CauseSocketMissing
		d.Detail = fmt.Sprintf("The socket file %s does not exist: php-fpm is not running, or listens somewhere else.", addr.Address)
		d.Hints = append(d.Hints, c.listenHint(addr, "Start php-fpm (systemctl start php8.2-fpm, or your image's entrypoint) and compare its pool's listen = ... with FCGISCOPE_UPSTREAM."))
		d.Hints = append(d.Hints, c.nearbyHints(addr)...)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		d.Cause = CausePermissionDenied
		d.Detail = fmt.Sprintf("Connecting to %s was refused for lack of permission (%v).", addr.Address, errnoName(err))
		d.Hints = permissionHints(addr.Address, ev)
	case errors.Is(err, syscall.EAGAIN):
		d.Cause = CauseBacklogFull
		d.Detail = fmt.Sprintf("php-fpm's listen queue on %s is full (EAGAIN): every worker is busy and the queue of waiting connections is at its limit.", addr.Address)
		if p := c.pool(); p != nil {
			ev["pm.max_children"] = strconv.Itoa(p.MaxChildren)
			ev["listen.backlog"] = strconv.Itoa(p.ListenBacklog)
			d.Detail += fmt.Sprintf(" Pool %q runs at most %d workers with listen.backlog = %d.", p.Name, p.MaxChildren, p.ListenBacklog)
		}
		d.Hints = []string{
			"Raise pm.max_children if the machine has memory for more workers, and listen.backlog to absorb bursts.",
			"Find what keeps the workers busy: request_slowlog_timeout and pm.status_path show the slow scripts.",
		}
	case errors.Is(err, syscall.ECONNREFUSED) && unix:
		d.Cause = CauseSocketStale
		d.Detail = fmt.Sprintf("The socket file %s exists, but no process accepts connections on it: php-fpm died without removing it, or is restarting.", addr.Address)
		d.Hints = []string{c.listenHint(addr, "Check whether php-fpm runs (pgrep -a php-fpm) and start it; it replaces the stale file when it starts.")}
		d.Hints = append(d.Hints, c.finderHints(t)...)
	case errors.Is(err, syscall.ECONNREFUSED):
		d.Cause = CauseRefused
		d.Detail = fmt.Sprintf("Nothing accepts connections on %s (connection refused).", addr)
		hints := c.finderHints(t)
		if len(hints) == 0 || c.pool() != nil {
			hints = append([]string{c.listenHint(addr, "Start php-fpm, or set FCGISCOPE_UPSTREAM to the listen address of its pool (listen = ... in the pool file).")}, hints...)
		}
		d.Hints = hints
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		d.Cause = CauseConnectTimeout
		d.Detail = fmt.Sprintf("%s did not accept the connection within %s. On TCP the kernel drops new connections silently when php-fpm's listen queue is full.", addr, seconds(t.DialEnd.Sub(t.DialStart)))
		if t.DialEnd.IsZero() {
			d.Detail = fmt.Sprintf("%s did not accept the connection within FCGISCOPE_CONNECT_TIMEOUT (%s). On TCP the kernel drops new connections silently when php-fpm's listen queue is full.", addr, seconds(t.End.Sub(t.DialStart)))
		}
		d.Hints = []string{"Check that php-fpm's workers are not all busy (pm.status_path), and that no firewall drops packets to the port."}
	default:
		unexplained(d, fmt.Sprintf("Connecting to %s failed: %v.", addr, err))
	}
	if n := errnoName(err); n != "" {
		ev["errno"] = n
	}
}

func (c *Classifier) finderHints(t *outcome.Trace) []string {
	if c.Finder == nil {
		return nil
	}
	found := c.Finder.Responders()
	var hints []string
	for _, r := range found {
		if r.Addr == t.Upstream {
			continue
		}
		hints = append(hints, fmt.Sprintf("A FastCGI server answers on %s: if that is your php-fpm, set FCGISCOPE_UPSTREAM=%s (without fcgiscope: fastcgi_pass %s;).", r.Addr, r.Addr, r.Addr))
	}
	return hints
}

func (c *Classifier) nearbyHints(addr fcgi.Addr) []string {
	if c.Finder == nil {
		return nil
	}
	var hints []string
	for _, a := range c.Finder.Nearby(addr.Address) {
		hints = append(hints, fmt.Sprintf("A socket exists at %s: if that is php-fpm, set FCGISCOPE_UPSTREAM=%s.", a, a))
	}
	return hints
}

// listenHint says what to do about an upstream address that does not
// answer, in the words of the pool's own listen setting when the pool's
// configuration is known, or else says otherwise.
func (c *Classifier) listenHint(addr fcgi.Addr, otherwise string) string {
	p := c.pool()
	if p == nil || !p.Listen.IsSet() {
		return otherwise
	}
	if p.ListenAddr != addr {
		return fmt.Sprintf("fcgiscope connects to %s (FCGISCOPE_UPSTREAM), but pool %s has listen = %s (%s): set FCGISCOPE_UPSTREAM=%s, or change the pool's listen.", addr, p.Name, p.Listen.Value, p.Listen.Where(), p.ListenAddr)
	}
	return fmt.Sprintf("Pool %s has listen = %s (%s), so php-fpm is not running or is restarting: start it (systemctl start php8.2-fpm, or your image's entrypoint); it listens there once it runs.", p.Name, p.Listen.Value, p.Listen.Where())
}
