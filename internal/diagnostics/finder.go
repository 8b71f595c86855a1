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
	var found []namedResponder
	for _, r := range hostprobe.FindFastCGI(ctx, cands, f.Exclude...) {
		// Another fcgiscope answers FastCGI too, but is no php-fpm to
		// send requests to.
		if _, relay := r.Values[fcgi.ValueRelayUpstream]; relay {
			continue
		}
		h, err := hostprobe.ListenerHolder(r.Addr)
		found = append(found, namedResponder{r, h, err == nil})
	}
	f.cached = worthNaming(found)
	f.at = time.Now()
	return f.cached
}

// namedResponder is a FastCGI server and, when it could be seen, the
// process that listens for it.
type namedResponder struct {
	hostprobe.Responder
	holder hostprobe.Holder
	seen   bool
}

// worthNaming returns the servers a hint may point at: php-fpm, or a server
// whose process cannot be seen (another container, no permission), but not
// other programs that speak FastCGI. A private pool, one whose php-fpm.conf
// (or socket) lives in a temporary directory, is what fcgiscope http --fpm
// auto or a test suite starts for itself: such pools are named only when no
// other php-fpm answers.
func worthNaming(found []namedResponder) []hostprobe.Responder {
	var shared, private []hostprobe.Responder
	for _, r := range found {
		switch {
		case r.seen && !strings.Contains(r.holder.Name, "php") && !strings.Contains(r.holder.Cmdline, "php"):
		case isPrivatePool(r):
			private = append(private, r.Responder)
		default:
			shared = append(shared, r.Responder)
		}
	}
	if len(shared) > 0 {
		return shared
	}
	return private
}

// isPrivatePool reports whether r's configuration, as php-fpm's master
// names it in its title ("php-fpm: master process (/tmp/x/php-fpm.conf)"),
// or else its socket, is in a temporary directory.
func isPrivatePool(r namedResponder) bool {
	if _, conf, ok := strings.Cut(r.holder.Cmdline, "master process ("); ok {
		return inTempDir(strings.TrimSuffix(conf, ")"))
	}
	return r.Addr.Network == "unix" && inTempDir(r.Addr.Address)
}

// inTempDir reports whether path is in a temporary directory.
func inTempDir(path string) bool {
	for _, dir := range []string{os.TempDir(), "/tmp", "/var/tmp", "/dev/shm"} {
		if strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/") {
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
