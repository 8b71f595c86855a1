package diagnostics

import (
	"context"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Finder looks for the FastCGI servers that do answer on this host, so that
// a refused or missing upstream can be answered with the address that would
// work. A scan probes every listening socket, so results are kept for a
// while: a php-fpm that is down fails every request, and one scan must serve
// them all.
type Finder struct {
	// Exclude lists fcgiscope's own listeners, which answer FastCGI too.
	Exclude []fcgi.Addr
	// TTL is how long a scan is reused; 0 means 10 seconds.
	TTL time.Duration
	// Timeout bounds one scan; 0 means 500 ms.
	Timeout time.Duration

	mu     sync.Mutex
	at     time.Time
	cached []hostprobe.Responder
}

func (f *Finder) ttl() time.Duration {
	if f.TTL > 0 {
		return f.TTL
	}
	return 10 * time.Second
}

func (f *Finder) timeout() time.Duration {
	if f.Timeout > 0 {
		return f.Timeout
	}
	return 500 * time.Millisecond
}

// Responders returns the FastCGI servers listening on this host.
func (f *Finder) Responders() []hostprobe.Responder {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.at.IsZero() && time.Since(f.at) < f.ttl() {
		return f.cached
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout())
	defer cancel()
	// A partial list is still worth probing.
	cands, _ := hostprobe.Listening()
	// A new slice: callers may still hold the last one.
	f.cached = nil
	var temporary []hostprobe.Responder
	for _, r := range hostprobe.FindFastCGI(ctx, cands, f.Exclude...) {
		// Another fcgiscope answers FastCGI too, but is no php-fpm to
		// send requests to; nor is a FastCGI server of another kind.
		if _, relay := r.Values[fcgi.ValueRelayUpstream]; relay || !maybePHP(r.Addr) {
			continue
		}
		// A socket in a temporary directory is some program's private
		// pool (fcgiscope http --fpm auto, a test): named only when
		// nothing else answers.
		if inTempDir(r.Addr) {
			temporary = append(temporary, r)
			continue
		}
		f.cached = append(f.cached, r)
	}
	if len(f.cached) == 0 {
		f.cached = temporary[:min(len(temporary), maxTemporary)]
	}
	f.at = time.Now()
	return f.cached
}

// maxTemporary bounds the private pools Responders returns when nothing
// else answers: each becomes a line of advice, and more than a few is a
// list nobody reads.
const maxTemporary = 3

// maybePHP reports whether the process listening on a is php-fpm, or
// cannot be seen (another container, no permission): anything else that
// speaks FastCGI is no php-fpm to point at.
func maybePHP(a fcgi.Addr) bool {
	h, err := hostprobe.ListenerHolder(a)
	if err != nil {
		return true
	}
	return strings.Contains(h.Name, "php") || strings.Contains(h.Cmdline, "php")
}

// inTempDir reports whether a is a unix socket in a temporary directory.
func inTempDir(a fcgi.Addr) bool {
	if a.Network != "unix" {
		return false
	}
	for _, dir := range []string{os.TempDir(), "/tmp", "/var/tmp", "/dev/shm"} {
		if strings.HasPrefix(a.Address, strings.TrimSuffix(dir, "/")+"/") {
			return true
		}
	}
	return false
}

// Nearby returns the FastCGI servers among the unix sockets near path.
func (f *Finder) Nearby(path string) []fcgi.Addr {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout())
	defer cancel()
	var addrs []fcgi.Addr
	for _, r := range hostprobe.FindFastCGI(ctx, hostprobe.Nearby(path), f.Exclude...) {
		addrs = append(addrs, r.Addr)
	}
	return addrs
}
