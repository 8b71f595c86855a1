package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/diagnostics"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/fpm"
	"github.com/fcgiscope/fcgiscope/internal/diagnostics/hostprobe"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/nginxconf"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// collectTargets lists the addresses nginx sends FastCGI requests to, with
// the directives that name them.
func (c *checkup) collectTargets() {
	byAddr := map[fcgi.Addr]*target{}
	get := func(a fcgi.Addr) *target {
		t := byAddr[a]
		if t == nil {
			t = &target{addr: a}
			if c.fpm != nil {
				t.pool = c.fpm.PoolFor(a)
			}
			byAddr[a] = t
			c.targets = append(c.targets, t)
		}
		return t
	}
	if !c.d.Upstream.IsZero() {
		get(c.d.Upstream)
	}
	if c.ngx == nil {
		return
	}
	if len(c.ngx.Passes) == 0 {
		c.noFastCGIPass()
	}
	variables := map[string]bool{}
	for _, p := range c.ngx.Passes {
		arg := p.Dir.Arg(0)
		if strings.Contains(arg, "$") {
			if !variables[arg] {
				variables[arg] = true
				c.add(Finding{ID: "fastcgi_pass_variable", Severity: SeverityInfo,
					Title:  "fastcgi_pass " + arg + " is chosen at run time and was not checked",
					Detail: "The address contains a variable, so it is known only for a given request.",
					Nginx:  []*Location{locOf(p.Dir)},
					Fix:    "To check it, run fcgiscope doctor --upstream ADDR for each address the variable can take."})
			}
			continue
		}
		if u := c.ngx.Upstream(arg); u != nil {
			for _, s := range u.Servers {
				if hasArg(s, "down") {
					continue
				}
				a, err := nginxconf.ParseServerAddr(s.Arg(0))
				if err != nil {
					c.notChecked("%s:%d: server %s in upstream %s: %v", s.File, s.Line, s.Arg(0), u.Name, err)
					continue
				}
				t := get(a)
				t.upstream = u
				t.refs = appendDir(t.refs, s)
				t.passes = appendPass(t.passes, p)
			}
			continue
		}
		if !strings.Contains(arg, ":") {
			c.notChecked("%s:%d: fastcgi_pass %s names no upstream block and has no port; nginx -t rejects it", p.Dir.File, p.Dir.Line, arg)
			continue
		}
		a, err := fcgi.ParseAddr(arg)
		if err != nil {
			c.notChecked("%s:%d: fastcgi_pass %s: %v", p.Dir.File, p.Dir.Line, arg, err)
			continue
		}
		t := get(a)
		t.refs = appendDir(t.refs, p.Dir)
		t.passes = appendPass(t.passes, p)
	}
}

func hasArg(d *nginxconf.Directive, arg string) bool {
	for _, a := range d.Args[min(1, len(d.Args)):] {
		if a == arg {
			return true
		}
	}
	return false
}

func appendDir(ds []*nginxconf.Directive, d *nginxconf.Directive) []*nginxconf.Directive {
	for _, x := range ds {
		if x == d {
			return ds
		}
	}
	return append(ds, d)
}

func appendPass(ps []*nginxconf.Pass, p *nginxconf.Pass) []*nginxconf.Pass {
	for _, x := range ps {
		if x == p {
			return ps
		}
	}
	return append(ps, p)
}

// dialable turns a pool's listen address into one a client can connect to
// and nginx accepts in fastcgi_pass: a port alone or a wildcard host
// becomes the loopback address.
func dialable(a fcgi.Addr) fcgi.Addr {
	if a.Network != "tcp" {
		return a
	}
	host, port, err := net.SplitHostPort(a.Address)
	if err != nil {
		return a
	}
	if host == "" || host == "0.0.0.0" || host == "::" || host == "*" {
		return fcgi.Addr{Network: "tcp", Address: net.JoinHostPort("127.0.0.1", port)}
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return fcgi.Addr{Network: "tcp", Address: net.JoinHostPort("127.0.0.1", port)}
	}
	return a
}

// probeAll reaches every target and every pool's listen address at once,
// and then what the fcgiscope instances among them relay to.
func (c *checkup) probeAll(ctx context.Context) {
	c.probes = map[fcgi.Addr]*Probe{}
	var order []fcgi.Addr
	add := func(a fcgi.Addr, pool *fpm.Pool) {
		if c.probes[a] != nil {
			return
		}
		p := &Probe{Addr: a.String()}
		if pool != nil {
			p.Pool = pool.Name
		}
		c.probes[a] = p
		order = append(order, a)
	}
	for _, t := range c.targets {
		add(t.addr, t.pool)
		p := c.probes[t.addr]
		for _, r := range t.refs {
			p.Via = append(p.Via, fmt.Sprintf("%s:%d", r.File, r.Line))
		}
	}
	if c.fpm != nil {
		for _, pool := range c.fpm.Pools {
			if !pool.ListenAddr.IsZero() {
				add(dialable(pool.ListenAddr), pool)
			}
		}
	}
	c.probeEach(ctx, order)
	// A chain of fcgiscope instances is followed a few steps, no more: a
	// loop would otherwise never end.
	for range 3 {
		before := len(order)
		for _, t := range c.followRelays() {
			add(t.addr, t.pool)
			p := c.probes[t.addr]
			p.Via = append(p.Via, "fcgiscope at "+t.via.addr.String())
		}
		if len(order) == before {
			break
		}
		c.probeEach(ctx, order[before:])
	}
	for _, a := range order {
		c.report.Probes = append(c.report.Probes, *c.probes[a])
	}
}

// probeEach probes the addresses at once.
func (c *checkup) probeEach(ctx context.Context, addrs []fcgi.Addr) {
	var wg sync.WaitGroup
	for _, a := range addrs {
		p := c.probes[a]
		wg.Go(func() {
			start := time.Now()
			r, err := c.d.probe(ctx, a)
			p.err = err
			if err == nil {
				p.OK = true
				p.LatencyMS = ms(r.Latency)
				p.values = r.Values
				if up, ok := relaysTo(r); ok {
					p.relay, p.Relays = up, up.String()
				}
				return
			}
			p.Error = err.Error()
			if d := c.classify(a, err, start); d != nil {
				p.Cause = d.Cause.ID
			}
		})
	}
	wg.Wait()
}

// relaysTo reports where the fcgiscope that answered r relays to, when it
// is one.
func relaysTo(r hostprobe.Responder) (fcgi.Addr, bool) {
	v, ok := r.Values[fcgi.ValueRelayUpstream]
	if !ok {
		return fcgi.Addr{}, false
	}
	a, err := fcgi.ParseAddr(v)
	return a, err == nil
}

// followRelays adds, for every target where fcgiscope answered, the
// address it relays to as a target of its own, reached through it; it
// returns the targets it added.
func (c *checkup) followRelays() []*target {
	var added []*target
	for _, t := range c.targets {
		pr := c.probes[t.addr]
		if pr == nil || pr.relay.IsZero() {
			continue
		}
		next := dialable(pr.relay)
		var nt *target
		for _, x := range c.targets {
			if x.addr == next {
				nt = x
			}
		}
		if nt == nil {
			nt = &target{addr: next, via: t}
			if c.fpm != nil {
				nt.pool = c.fpm.PoolFor(pr.relay)
			}
			c.targets = append(c.targets, nt)
			added = append(added, nt)
		}
		// The passes that reach fcgiscope reach what it relays to: the
		// pool's timeouts are checked against theirs.
		for _, p := range t.passes {
			nt.passes = appendPass(nt.passes, p)
		}
	}
	return added
}

func (d *Doctor) probe(ctx context.Context, a fcgi.Addr) (hostprobe.Responder, error) {
	if d.Probe != nil {
		return d.Probe(ctx, a)
	}
	return hostprobe.Options{Timeout: d.timeout()}.Probe(ctx, a)
}

// classify explains a probe failure the way the sidecar would explain a
// request that failed the same way.
func (c *checkup) classify(a fcgi.Addr, err error, start time.Time) *diagnostics.Diagnosis {
	var pool *fpm.Pool
	if c.fpm != nil {
		pool = c.fpm.PoolFor(a)
	}
	return (&diagnostics.Classifier{Pool: pool}).Diagnose(hostprobe.Trace(a, err, start, c.d.timeout()))
}

func isDialError(err error) bool {
	var de *outcome.DialError
	return errors.As(err, &de)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// answering returns the pools whose listen address answered FastCGI, and
// the others.
func (c *checkup) pools() (answering, silent []*fpm.Pool) {
	if c.fpm == nil {
		return nil, nil
	}
	for _, p := range c.fpm.Pools {
		if p.ListenAddr.IsZero() {
			continue
		}
		if pr := c.probes[dialable(p.ListenAddr)]; pr != nil && pr.OK {
			answering = append(answering, p)
		} else {
			silent = append(silent, p)
		}
	}
	return answering, silent
}

func (c *checkup) hostResponders(ctx context.Context) []hostprobe.Responder {
	if c.respondersRead {
		return c.responders
	}
	c.respondersRead = true
	if c.d.Responders != nil {
		c.responders = c.d.Responders(ctx)
		return c.responders
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cands, _ := hostprobe.Listening()
	c.responders = hostprobe.FindFastCGI(sctx, cands)
	return c.responders
}

// alternative is an address that could replace a broken one.
type alternative struct {
	addr fcgi.Addr
	why  string // "pool www (/etc/php/8.2/fpm/pool.d/www.conf:41), answers FastCGI"
	ok   bool
	loc  *Location
}

// alternatives lists where php-fpm does listen, best first: pools that
// answer, then answering FastCGI servers found on this host, then pools
// that are configured but silent.
func (c *checkup) alternatives(ctx context.Context, not fcgi.Addr) []alternative {
	answering, silent := c.pools()
	var out []alternative
	seen := map[fcgi.Addr]bool{not: true}
	for _, p := range answering {
		a := dialable(p.ListenAddr)
		if seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, alternative{addr: a, ok: true, loc: settingLoc(p.Listen),
			why: fmt.Sprintf("pool %s listens there (%s) and answers FastCGI", p.Name, p.Listen.Where())})
	}
	if len(out) == 0 {
		for _, r := range c.hostResponders(ctx) {
			if _, relay := relaysTo(r); seen[r.Addr] || relay {
				// A fcgiscope is no place to send requests to
				// instead of php-fpm.
				continue
			}
			seen[r.Addr] = true
			out = append(out, alternative{addr: r.Addr, ok: true, why: "a FastCGI server answers there"})
		}
	}
	for _, p := range silent {
		a := dialable(p.ListenAddr)
		if seen[a] {
			continue
		}
		seen[a] = true
		out = append(out, alternative{addr: a, loc: settingLoc(p.Listen),
			why: fmt.Sprintf("pool %s is configured to listen there (%s), but nothing answers now", p.Name, p.Listen.Where())})
	}
	return out
}

func settingLoc(s fpm.Setting) *Location {
	if !s.IsSet() {
		return nil
	}
	return &Location{File: s.File, Line: s.Line, Text: s.Key + " = " + s.Raw}
}

// nginxSays is the line nginx writes to its error log when it fails to
// connect to a FastCGI server this way, so that people can match it.
func nginxSays(a fcgi.Addr, err error) string {
	var dns *net.DNSError
	switch {
	case errors.As(err, &dns):
		return fmt.Sprintf("nginx resolves the name when it starts: `nginx -t` fails with \"host not found in upstream %q\"", a.Address)
	case errors.Is(err, syscall.ENOENT):
		return fmt.Sprintf("nginx answers 502 Bad Gateway and logs \"connect() to %s failed (2: No such file or directory) while connecting to upstream\"", a)
	case errors.Is(err, syscall.ECONNREFUSED) && a.Network == "unix":
		return fmt.Sprintf("nginx answers 502 Bad Gateway and logs \"connect() to %s failed (111: Connection refused) while connecting to upstream\"", a)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nginx answers 502 Bad Gateway and logs \"connect() failed (111: Connection refused) while connecting to upstream\""
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("nginx answers 502 Bad Gateway and logs \"connect() to %s failed (13: Permission denied) while connecting to upstream\"", a)
	case errors.Is(err, hostprobe.ErrNoAnswer) && !isDialError(err):
		return "requests wait until a worker is free; past fastcgi_read_timeout nginx answers 504 Gateway Time-out"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return "nginx waits fastcgi_connect_timeout (60s by default), then answers 504 Gateway Time-out and logs \"upstream timed out (110: Connection timed out) while connecting to upstream\""
	}
	var nf *hostprobe.NotFastCGIError
	if errors.As(err, &nf) {
		var ve *fcgi.VersionError
		if errors.As(err, &ve) {
			return fmt.Sprintf("nginx answers 502 Bad Gateway and logs \"upstream sent unsupported FastCGI protocol version: %d while reading response header from upstream\"", ve.Version())
		}
		return "nginx answers 502 Bad Gateway and logs an upstream protocol error"
	}
	return "nginx answers 502 Bad Gateway"
}

// checkTargets turns the probe of every nginx target into findings.
func (c *checkup) checkTargets(ctx context.Context) {
	c.covered = map[*fpm.Pool]bool{}
	for _, t := range c.targets {
		pr := c.probes[t.addr]
		if pr == nil {
			continue
		}
		if pr.OK && !pr.relay.IsZero() {
			c.relayFound(t, pr)
			continue
		}
		if pr.OK {
			if t.pool == nil && c.fpm != nil && (len(t.refs) > 0 || t.via != nil) {
				refs := t.refs
				if t.via != nil {
					refs = t.via.refs
				}
				c.add(Finding{ID: "fastcgi_pass_unknown_pool", Severity: SeverityInfo,
					Title:  fmt.Sprintf("%s answers FastCGI, but no pool in %s listens there", t.addr, c.fpm.Path),
					Detail: "Another php-fpm (another configuration, a container) serves this address, so the php-fpm checks in this report are not about it.",
					Nginx:  locs(refs),
					Fix:    "Give that php-fpm's configuration with --fpm to check it too."})
			}
			continue
		}
		c.targetFailure(ctx, t, pr)
	}
}

func (c *checkup) targetFailure(ctx context.Context, t *target, pr *Probe) {
	err := pr.err
	diag := c.classify(t.addr, err, time.Now())
	f := Finding{Severity: SeverityError, Nginx: locs(t.refs), Impact: nginxSays(t.addr, err) + " for every request sent there."}
	if diag != nil {
		f.Cause = diag.Cause.ID
		f.Detail = diag.Detail
	}
	who := "nginx sends FastCGI requests to " + t.addr.String()
	switch {
	case t.via != nil:
		who = fmt.Sprintf("nginx sends FastCGI requests to fcgiscope at %s, which relays them to %s", t.via.addr, t.addr)
		f.Nginx = locs(t.via.refs)
		f.Impact = fmt.Sprintf("fcgiscope answers every request sent there with a %d and the explanation (%s), where nginx alone would answer a bare error.", causeStatus(diag), f.Cause)
	case len(t.refs) == 0:
		who = t.addr.String() + " was checked"
	}
	pool := t.pool
	if pool != nil {
		f.FPM = []*Location{settingLoc(pool.Listen)}
	}
	running, runErr := c.runningMaster()
	service := serviceName(c.fpm)
	unix := t.addr.Network == "unix"
	var nf *hostprobe.NotFastCGIError
	switch {
	case errors.As(err, &nf):
		f.ID = "not_fastcgi"
		f.Title = fmt.Sprintf("%s answers, but not in FastCGI", t.addr)
		f.Detail = fmt.Sprintf("%s; the server at %s is not php-fpm. %s", who, t.addr, f.Detail)
		f.Fix = c.repointFix(ctx, t)
	case errors.Is(err, hostprobe.ErrNoAnswer) && !isDialError(err):
		f.ID = "upstream_no_answer"
		f.Severity = SeverityWarning
		f.Title = fmt.Sprintf("%s accepts connections but did not answer within %s", t.addr, c.d.timeout())
		f.Detail = who + ". php-fpm answers GET_VALUES at once when a worker is free, so every worker is probably busy (pm.max_children reached), or the server is not FastCGI."
		f.Fix = "Look at the pool's status page (pm.status_path) for \"listen queue\" and \"max children reached\"; raise pm.max_children or find the slow scripts (request_slowlog_timeout)."
	case pool != nil && unix && errors.Is(err, syscall.ENOENT):
		c.covered[pool] = true
		f.ID = "socket_missing"
		f.Title = fmt.Sprintf("The socket %s does not exist: php-fpm is not listening", t.addr.Address)
		f.Detail = fmt.Sprintf("%s. Pool %s is configured to listen there (%s), but the socket file is missing%s.", who, pool.Name, pool.Listen.Where(), masterState(running, runErr, c.fpm))
		f.Fix = startFix(running, service, c.fpm)
	case pool != nil && unix && errors.Is(err, syscall.ECONNREFUSED):
		c.covered[pool] = true
		f.ID = "socket_refused"
		f.Title = fmt.Sprintf("The socket %s is stale: the file exists but nobody accepts", t.addr.Address)
		f.Detail = fmt.Sprintf("%s. Pool %s is configured to listen there (%s); php-fpm died without removing the socket file, or is restarting%s.", who, pool.Name, pool.Listen.Where(), masterState(running, runErr, c.fpm))
		f.Fix = startFix(running, service, c.fpm) + " php-fpm replaces the stale file when it starts."
	case pool != nil && errors.Is(err, syscall.ECONNREFUSED) && running == nil:
		c.covered[pool] = true
		f.ID = "fpm_not_running"
		f.Title = fmt.Sprintf("php-fpm is not running: nothing listens on %s", t.addr)
		f.Detail = fmt.Sprintf("%s. Pool %s is configured to listen there (%s)%s.", who, pool.Name, pool.Listen.Where(), masterState(running, runErr, c.fpm))
		f.Fix = startFix(running, service, c.fpm)
	case pool == nil && c.fpm == nil && unix && errors.Is(err, syscall.ENOENT):
		f.ID = "socket_missing"
		f.Title = fmt.Sprintf("The socket %s does not exist", t.addr.Address)
		f.Detail = who + ". " + f.Detail
		f.Fix = c.repointFix(ctx, t)
	case pool == nil && c.fpm == nil && unix && errors.Is(err, syscall.ECONNREFUSED):
		f.ID = "socket_refused"
		f.Title = fmt.Sprintf("The socket %s is stale: the file exists but nobody accepts", t.addr.Address)
		f.Detail = who + ". " + f.Detail
		f.Fix = "Start php-fpm; it replaces the stale file. " + c.repointFix(ctx, t)
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		f.ID = "socket_permission"
		f.Title = fmt.Sprintf("fcgiscope doctor may not connect to %s", t.addr)
		f.Detail = who + ". " + f.Detail
		f.Fix = "Run fcgiscope doctor as root or as nginx's user to check this address; the socket_permission check below compares the socket with nginx's user."
	default:
		f.ID = "fastcgi_pass_unreachable"
		f.Title = fmt.Sprintf("%s reaches no php-fpm", t.addr)
		switch {
		case pool != nil && running != nil:
			f.Detail = fmt.Sprintf("%s. Pool %s is configured to listen there (%s) and php-fpm runs (master pid %d), but nothing accepts: the listen line changed after php-fpm started. %s", who, pool.Name, pool.Listen.Where(), running.Pid, f.Detail)
			f.Fix = fmt.Sprintf("Reload php-fpm so that it binds the configured address: systemctl reload %s (or kill -USR2 %d).", service, running.Pid)
		case pool != nil:
			f.Detail = fmt.Sprintf("%s. Pool %s is configured to listen there (%s). %s", who, pool.Name, pool.Listen.Where(), f.Detail)
			f.Fix = c.repointFix(ctx, t)
		default:
			noPool := ""
			if c.fpm != nil {
				noPool = fmt.Sprintf(" No pool in %s listens there.", c.fpm.Path)
			}
			f.Detail = fmt.Sprintf("%s. %s%s", who, f.Detail, noPool)
			f.Fix = c.repointFix(ctx, t)
		}
	}
	if f.ID == "fastcgi_pass_unreachable" || f.ID == "not_fastcgi" {
		for _, alt := range c.alternatives(ctx, t.addr) {
			if alt.loc != nil {
				f.FPM = append(f.FPM, alt.loc)
			}
		}
		f.FPM = compactLocs(f.FPM)
	}
	c.add(f)
}

// repointFix writes the change that sends nginx to where php-fpm listens:
// the exact directive for each line that names the broken address.
func (c *checkup) repointFix(ctx context.Context, t *target) string {
	alts := c.alternatives(ctx, t.addr)
	if len(alts) == 0 {
		if t.via != nil {
			return fmt.Sprintf("Start php-fpm on %s, or set fcgiscope's FCGISCOPE_UPSTREAM to the listen address of your php-fpm pool (listen = ... in the pool file).", t.addr)
		}
		if len(t.refs) == 0 {
			return "Start php-fpm, or use the listen address of its pool (listen = ... in the pool file)."
		}
		return fmt.Sprintf("Point %s at the listen address of your php-fpm pool (listen = ... in the pool file), or start php-fpm on %s.", refList(t.refs), t.addr)
	}
	best := alts[0]
	var b strings.Builder
	switch {
	case t.via != nil:
		fmt.Fprintf(&b, "Set fcgiscope's FCGISCOPE_UPSTREAM=%s (%s) and restart fcgiscope.", best.addr, best.why)
	case len(t.refs) == 0:
		fmt.Fprintf(&b, "Use %s: %s.", best.addr, best.why)
	}
	for i, r := range t.refs {
		if i > 0 {
			b.WriteString("\n")
		}
		line := fmt.Sprintf("fastcgi_pass %s;", best.addr)
		if r.Name == "server" {
			// Keep the server's parameters (weight=, max_fails=, ...).
			line = strings.TrimSuffix(strings.Join(append([]string{"server", best.addr.String()}, r.Args[1:]...), " "), " ") + ";"
		}
		fmt.Fprintf(&b, "In %s:%d write\n    %s\n(%s.)", r.File, r.Line, line, best.why)
	}
	if len(t.refs) > 0 {
		b.WriteString("\nThen run nginx -t and reload nginx (systemctl reload nginx).")
	}
	if !best.ok {
		fmt.Fprintf(&b, "\nphp-fpm must be running for that: %s", startFix(nil, serviceName(c.fpm), c.fpm))
	}
	if len(alts) > 1 {
		var others []string
		for _, a := range alts[1:] {
			others = append(others, fmt.Sprintf("%s (%s)", a.addr, a.why))
		}
		fmt.Fprintf(&b, "\nOther candidates: %s.", strings.Join(others, "; "))
	}
	return b.String()
}

func refList(refs []*nginxconf.Directive) string {
	var s []string
	for _, r := range refs {
		s = append(s, fmt.Sprintf("%s (%s:%d)", r.Text(), r.File, r.Line))
	}
	return strings.Join(s, ", ")
}

func locs(ds []*nginxconf.Directive) []*Location {
	var out []*Location
	for _, d := range ds {
		out = append(out, locOf(d))
	}
	return out
}

func compactLocs(ls []*Location) []*Location {
	var out []*Location
	seen := map[string]bool{}
	for _, l := range ls {
		if l == nil || seen[l.String()] {
			continue
		}
		seen[l.String()] = true
		out = append(out, l)
	}
	return out
}

// serviceName guesses the systemd unit of php-fpm from its configuration
// path: Debian's /etc/php/8.2/fpm/php-fpm.conf belongs to php8.2-fpm.
func serviceName(conf *fpm.Config) string {
	if conf != nil {
		if v := debianVersion(conf.Path); v != "" {
			return "php" + v + "-fpm"
		}
	}
	return "php-fpm"
}

func masterState(running *FPMMaster, err error, conf *fpm.Config) string {
	switch {
	case err != nil:
		return ""
	case running != nil:
		return fmt.Sprintf("; a php-fpm master runs with %s (pid %d)", running.Config, running.Pid)
	case conf != nil:
		return fmt.Sprintf("; no php-fpm master process runs with %s", conf.Path)
	}
	return ""
}

func startFix(running *FPMMaster, service string, conf *fpm.Config) string {
	if running != nil {
		return fmt.Sprintf("Restart php-fpm: systemctl restart %s (master pid %d), then check its error log for why it does not listen.", service, running.Pid)
	}
	s := fmt.Sprintf("Start php-fpm: systemctl start %s", service)
	if conf != nil {
		s += fmt.Sprintf(" (or %s -y %s). If it does not stay up, php-fpm -t -y %s and its error log%s say why.", fpmBinaryName(conf.Path), conf.Path, conf.Path, errorLogHint(conf))
	} else {
		s += "."
	}
	return s
}

func errorLogHint(conf *fpm.Config) string {
	if conf.ErrorLog == "" || conf.ErrorLog == "syslog" {
		return ""
	}
	return " (" + conf.ErrorLog + ")"
}

// noFastCGIPass notes an nginx that sends nothing to FastCGI, and says how
// to send PHP to the pool that exists.
func (c *checkup) noFastCGIPass() {
	f := Finding{ID: "no_fastcgi_pass", Severity: SeverityInfo,
		Title:  "No location in nginx's configuration passes requests to FastCGI (fastcgi_pass)",
		Detail: fmt.Sprintf("Read %d files from %s; none has a fastcgi_pass directive outside comments.", len(c.ngx.Files), c.ngx.Source),
		Impact: "PHP does not run behind this nginx: a request for a .php file gets its source code as a download, or 404.",
	}
	var server *nginxconf.Directive
	for _, d := range c.ngx.Servers {
		server = d
		break
	}
	addr := "unix:/run/php/php8.2-fpm.sock"
	if c.fpm != nil && len(c.fpm.Pools) > 0 && !c.fpm.Pools[0].ListenAddr.IsZero() {
		addr = dialable(c.fpm.Pools[0].ListenAddr).String()
	}
	where := "the server block"
	if server != nil {
		where = fmt.Sprintf("the server block at %s:%d", server.File, server.Line)
		f.Nginx = []*Location{locOf(server)}
	}
	f.Fix = fmt.Sprintf("If PHP should run, add to %s\n    location ~ \\.php$ {\n        include snippets/fastcgi-php.conf;\n        fastcgi_pass %s;\n    }\n(without Debian's snippets: include fastcgi.conf; instead).", where, addr)
	c.add(f)
}
