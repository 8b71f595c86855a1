// Package front is what fcgiscope knows of the web server in front of it:
// the nginx locations whose fastcgi_pass reaches fcgiscope's listen address,
// and the settings in effect there (how long nginx waits for a response,
// how large a response head it takes), each with the file and line it is
// set at, or nginx's default when nothing sets it. The relay's waits follow
// it, so that fcgiscope never fails a request sooner than nginx alone would,
// and the explanations quote it.
package front

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
)

// Front is what nginx's configuration says of the locations that pass to
// fcgiscope. A nil or empty Front knows nothing: its settings are nginx's
// defaults, and it says so.
type Front struct {
	// Source is the configuration read: a file, or nginx -T's output saved
	// to one; "" when none was.
	Source string
	// Files are the files it was read from, for noticing a reload.
	Files []string
	// Passes are the fastcgi_pass directives that reach fcgiscope.
	Passes []*nginxconf.Pass
	// Problem says why nginx's settings are not known, when they are not.
	Problem string
}

// Known reports whether nginx's settings for fcgiscope's locations are
// known.
func (f *Front) Known() bool { return f != nil && len(f.Passes) > 0 }

// Setting is one of nginx's settings as it applies to fcgiscope's
// locations: the value that bounds what fcgiscope may do, where it is set,
// and where other locations set it otherwise.
type Setting[T any] struct {
	Value T
	// Where is the directive's "file:line", or says that it is nginx's
	// default, or that nginx's configuration is not known.
	Where string
	// Others lists, when locations disagree, the other values and where
	// they apply, for an explanation.
	Others []string
}

// String renders the setting for a log line or an explanation.
func (s Setting[T]) String() string {
	text := fmt.Sprintf("%v (%s)", s.Value, s.Where)
	if len(s.Others) > 0 {
		text += "; elsewhere " + strings.Join(s.Others, ", ")
	}
	return text
}

// ReadTimeout is nginx's fastcgi_read_timeout for fcgiscope's locations:
// the longest, which no wait may outlast without failing a request that
// nginx would have waited for.
func (f *Front) ReadTimeout() Setting[time.Duration] {
	return pick(f, true, func(p *nginxconf.Pass) (time.Duration, *nginxconf.Directive) {
		return p.ReadTimeout.Value, p.ReadTimeout.Dir
	}, nginxconf.DefaultTimeout, "fastcgi_read_timeout")
}

// BufferSize is nginx's fastcgi_buffer_size for fcgiscope's locations: the
// largest, since a response head that fits it fits somewhere, and only one
// that fits none is refused wherever the request came from.
func (f *Front) BufferSize() Setting[Bytes] {
	return pick(f, true, func(p *nginxconf.Pass) (Bytes, *nginxconf.Directive) {
		return Bytes(p.BufferSize.Value), p.BufferSize.Dir
	}, Bytes(nginxconf.DefaultBufferSize), "fastcgi_buffer_size")
}

// ClientMaxBodySize is nginx's client_max_body_size for fcgiscope's
// locations: the largest request body nginx lets through to PHP.
func (f *Front) ClientMaxBodySize() Setting[Bytes] {
	return pick(f, true, func(p *nginxconf.Pass) (Bytes, *nginxconf.Directive) {
		return Bytes(p.ClientMaxBodySize.Value), p.ClientMaxBodySize.Dir
	}, Bytes(nginxconf.DefaultClientMaxBodySize), "client_max_body_size")
}

// RootWhere returns where nginx sets the root docRoot comes from ("root
// /srv/app (/etc/nginx/sites-enabled/app:4)"), or "" when no location that
// passes to fcgiscope has it.
func (f *Front) RootWhere(docRoot string) string {
	if !f.Known() || docRoot == "" {
		return ""
	}
	for _, p := range f.Passes {
		if p.RootDir != nil && strings.TrimRight(p.Root, "/") == strings.TrimRight(docRoot, "/") {
			return fmt.Sprintf("%s %s (%s)", p.RootDir.Name, p.Root, p.RootDir.Where())
		}
	}
	return ""
}

// HeadLimits says which response heads nginx refuses, in bytes of FastCGI
// records: every one larger than refuse (0 when nginx's configuration is
// not known), and possibly one larger than suspect, when it comes through a
// location with a smaller fastcgi_buffer_size, or nginx's default is only
// assumed. The relay asks for every response, so it builds no text.
func (f *Front) HeadLimits() (suspect, refuse int) {
	if !f.Known() {
		return int(nginxconf.DefaultBufferSize), 0
	}
	for i, p := range f.Passes {
		n := int(p.BufferSize.Value)
		if i == 0 || n < suspect {
			suspect = n
		}
		refuse = max(refuse, n)
	}
	return suspect, refuse
}

// Patience is how long nginx waits for a response from fcgiscope: the
// Value of ReadTimeout, without the text that goes with it, for the relay,
// which asks for every request.
func (f *Front) Patience() time.Duration {
	if !f.Known() {
		return nginxconf.DefaultTimeout
	}
	var longest time.Duration
	for _, p := range f.Passes {
		longest = max(longest, p.ReadTimeout.Value)
	}
	return longest
}

// Bytes is a size as nginx's configuration writes it.
type Bytes int64

// String renders the size the way nginx users write it: 4k, 32k, 1m, or
// bytes when it is no whole number of kilobytes.
func (b Bytes) String() string {
	switch {
	case b != 0 && b%(1<<20) == 0:
		return fmt.Sprintf("%dm", b>>20)
	case b != 0 && b%(1<<10) == 0:
		return fmt.Sprintf("%dk", b>>10)
	}
	return strconv.FormatInt(int64(b), 10)
}

// pick returns the largest (or smallest) value of a setting over the
// passes, with where it is set and the other values.
func pick[T ~int64](f *Front, largest bool, get func(*nginxconf.Pass) (T, *nginxconf.Directive), def T, name string) Setting[T] {
	if !f.Known() {
		return Setting[T]{Value: def, Where: "nginx's default, assumed: nginx's configuration is not known (FCGISCOPE_NGINX_CONFIG)"}
	}
	var best Setting[T]
	var bestPass *nginxconf.Pass
	for i, p := range f.Passes {
		v, _ := get(p)
		if i == 0 || (largest && v > best.Value) || (!largest && v < best.Value) {
			best.Value, bestPass = v, p
		}
	}
	_, dir := get(bestPass)
	best.Where = where(dir, name, bestPass)
	for _, p := range f.Passes {
		if v, d := get(p); v != best.Value {
			best.Others = append(best.Others, fmt.Sprintf("%v (%s)", v, where(d, name, p)))
		}
	}
	return best
}

// where says where a setting of pass p comes from.
func where(d *nginxconf.Directive, name string, p *nginxconf.Pass) string {
	if d != nil {
		return d.Where()
	}
	return fmt.Sprintf("nginx's default; no %s where %s passes to fcgiscope", name, p.Dir.Where())
}

// Describe says in one line what fcgiscope knows of nginx, for the log.
func (f *Front) Describe() string {
	switch {
	case f == nil || f.Source == "":
		if f != nil && f.Problem != "" {
			return "nginx's configuration is not known (" + f.Problem + "); nginx's defaults are assumed"
		}
		return "nginx's configuration is not known; nginx's defaults are assumed"
	case !f.Known():
		return fmt.Sprintf("no fastcgi_pass in %s reaches fcgiscope (%s); nginx's defaults are assumed", f.Source, f.Problem)
	}
	var at []string
	for _, p := range f.Passes {
		at = append(at, p.Dir.Where())
	}
	return fmt.Sprintf("%d locations of %s pass to fcgiscope (%s)", len(f.Passes), f.Source, strings.Join(at, ", "))
}

// Load reads nginx's configuration at path, or at the first of
// nginxconf.DefaultPaths that exists when path is empty ("-" reads none),
// and keeps the
// locations whose fastcgi_pass reaches listen. A configuration that cannot
// be read gives a Front that says why.
func Load(path string, listen fcgi.Addr) *Front {
	if path == "-" {
		return &Front{Problem: "reading it is turned off"}
	}
	if path == "" {
		for _, p := range nginxconf.DefaultPaths {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
		if path == "" {
			return &Front{Problem: "no nginx.conf in " + strings.Join(nginxconf.DefaultPaths, ", ") + "; set FCGISCOPE_NGINX_CONFIG"}
		}
	}
	cfg, err := nginxconf.Load(path)
	if err != nil {
		return &Front{Problem: err.Error()}
	}
	f := &Front{Source: cfg.Source, Files: cfg.Files}
	if cfg.Source != path {
		// Saved nginx -T output: the files it names are in it, not here.
		f.Files = []string{path}
	}
	for _, p := range cfg.Passes {
		if reaches(cfg, p.Dir.Arg(0), listen) {
			f.Passes = append(f.Passes, p)
		}
	}
	if len(f.Passes) == 0 {
		f.Problem = fmt.Sprintf("fcgiscope listens on %s", listen)
	}
	return f
}

// reaches reports whether the fastcgi_pass argument arg, an address or the
// name of an upstream block, sends requests to listen.
func reaches(cfg *nginxconf.Config, arg string, listen fcgi.Addr) bool {
	if strings.Contains(arg, "$") {
		return false // chosen at run time
	}
	if u := cfg.Upstream(arg); u != nil {
		for _, s := range u.Servers {
			if a, err := nginxconf.ParseServerAddr(s.Arg(0)); err == nil && SameAddr(a, listen) {
				return true
			}
		}
		return false
	}
	a, err := fcgi.ParseAddr(arg)
	return err == nil && SameAddr(a, listen)
}

// SameAddr reports whether a client connecting to pass reaches a listener
// on listen: the same socket path; or the same port, on the same host, on
// a loopback address for a loopback listener (localhost, 127.0.0.1 and ::1
// alike), or on any host for a listener on every interface, as a sidecar
// reached by the pod's address or a service name is.
func SameAddr(pass, listen fcgi.Addr) bool {
	if pass.Network != listen.Network {
		return false
	}
	if pass.Network == "unix" {
		return filepath.Clean(pass.Address) == filepath.Clean(listen.Address)
	}
	ph, pp, err1 := net.SplitHostPort(pass.Address)
	lh, lp, err2 := net.SplitHostPort(listen.Address)
	if err1 != nil || err2 != nil || pp != lp {
		return false
	}
	switch {
	case lh == "" || lh == "*" || isUnspecified(lh):
		return true
	case strings.EqualFold(ph, lh):
		return true
	case isLoopback(lh) && isLoopback(ph):
		return true
	}
	return false
}

func isUnspecified(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// Watcher keeps what fcgiscope knows of nginx current: it reads the
// configuration again when one of its files changes, as it does when nginx
// is reloaded after an edit or a ConfigMap is updated. Load reads it a
// first time; Run follows it.
type Watcher struct {
	// Path is the configuration, or "" for the usual places.
	Path string
	// Listen is fcgiscope's own address, which the locations must pass to.
	Listen fcgi.Addr
	// Interval is how often the files are looked at; 0 means 2 seconds.
	Interval time.Duration
	// Changed, when set, is told of every new reading.
	Changed func(*Front)

	cur    atomic.Pointer[Front]
	stamps map[string]stamp // Run's goroutine only, after Load

	againOnce sync.Once
	again     chan struct{} // ReadAgain's requests
}

// stamp is what says a file changed.
type stamp struct {
	mod  time.Time
	size int64
}

// Load reads the configuration and returns what it says.
func (w *Watcher) Load() *Front {
	f := Load(w.Path, w.Listen)
	w.cur.Store(f)
	w.stamps = w.stampsOf(f)
	return f
}

// Front returns the latest reading; nil before Load.
func (w *Watcher) Front() *Front {
	if w == nil {
		return nil
	}
	return w.cur.Load()
}

// Run looks at the files every Interval until ctx ends, and reads the
// configuration again when one changed, appeared or went away.
func (w *Watcher) Run(ctx context.Context) {
	interval := w.Interval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	again := w.againChan()
	for {
		forced := false
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-again:
			forced = true
		}
		if !forced && maps.Equal(w.stamps, w.stampsOf(w.cur.Load())) {
			continue
		}
		f := w.Load()
		if w.Changed != nil {
			w.Changed(f)
		}
	}
}

// ReadAgain makes Run read the configuration at once, changed or not, as
// on SIGHUP. It does not wait for the reading.
func (w *Watcher) ReadAgain() {
	select {
	case w.againChan() <- struct{}{}:
	default: // a reading is due already
	}
}

func (w *Watcher) againChan() chan struct{} {
	w.againOnce.Do(func() { w.again = make(chan struct{}, 1) })
	return w.again
}

// stampsOf stamps the files f was read from, and the configured path.
func (w *Watcher) stampsOf(f *Front) map[string]stamp {
	names := []string{w.Path}
	if w.Path == "" {
		names = nginxconf.DefaultPaths
	}
	if f != nil {
		names = append(names, f.Files...)
	}
	out := make(map[string]stamp)
	for _, n := range names {
		if n == "" {
			continue
		}
		if fi, err := os.Stat(n); err == nil {
			out[n] = stamp{fi.ModTime(), fi.Size()}
		}
	}
	return out
}

// GaveUpAfter returns nginx's timeout that ends a request after elapsed,
// when one does: fastcgi_read_timeout while nginx waits for the response,
// fastcgi_send_timeout while it sends the body (sending), of whichever
// location has that value; nginx's default when the configuration is not
// known. nginx measures from the end of its request, which comes a moment
// after fcgiscope began timing, and wakes up a little late.
func (f *Front) GaveUpAfter(elapsed time.Duration, sending bool) (Setting[time.Duration], bool) {
	name := "fastcgi_read_timeout"
	if sending {
		name = "fastcgi_send_timeout"
	}
	matches := func(t time.Duration) bool { return elapsed >= t-100*time.Millisecond && elapsed <= t+time.Second }
	if !f.Known() {
		s := Setting[time.Duration]{Value: nginxconf.DefaultTimeout, Where: "nginx's default, assumed: nginx's configuration is not known (FCGISCOPE_NGINX_CONFIG)"}
		return s, matches(s.Value)
	}
	for _, p := range f.Passes {
		d := p.ReadTimeout
		if sending {
			d = p.SendTimeout
		}
		if matches(d.Value) {
			return Setting[time.Duration]{Value: d.Value, Where: where(d.Dir, name, p)}, true
		}
	}
	return Setting[time.Duration]{}, false
}
