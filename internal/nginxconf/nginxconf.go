// Package nginxconf reads nginx's configuration, from its files or from the
// saved output of `nginx -T`, with nginx-go-crossplane: the directives with
// the file and line each is written at, and, for every fastcgi_pass, the
// settings in effect there, inherited ones and nginx's defaults included.
// The doctor checks it, and the sidecar learns from it how patient the web
// server in front of it is.
package nginxconf

import (
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	crossplane "github.com/nginxinc/nginx-go-crossplane"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Directive is one nginx directive with includes resolved: where it is
// written, and the include directive that brought its file in.
type Directive struct {
	Name  string
	Args  []string
	File  string
	Line  int
	Via   *Directive   // the include that brought File in; nil in the main file
	Block []*Directive // the block's directives; nil when it is no block
}

// Arg returns the i-th argument, or "".
func (d *Directive) Arg(i int) string {
	if i < len(d.Args) {
		return d.Args[i]
	}
	return ""
}

// Text renders the directive as it would be written, for quoting.
func (d *Directive) Text() string {
	s := d.Name
	for _, a := range d.Args {
		if a == "" || strings.ContainsAny(a, " \t;{}\"'") {
			a = strconv.Quote(a)
		}
		s += " " + a
	}
	if d.Block != nil {
		return s + " { ... }"
	}
	return s + ";"
}

// Where returns "file:line".
func (d *Directive) Where() string { return fmt.Sprintf("%s:%d", d.File, d.Line) }

// Config is what fcgiscope needs from an nginx configuration.
type Config struct {
	// Source says where the configuration came from, for reports.
	Source string
	// Main is the main file; Files are all the files read.
	Main  string
	Files []string
	// Problems are parts crossplane could not read; they were skipped.
	Problems []string
	// Fragment says that Main has server or upstream blocks at its top
	// level: a file nginx includes inside http (conf.d/*.conf,
	// sites-enabled/*), read as if it were inside http.
	Fragment bool

	User            *Directive // nil: nginx's default, nobody
	WorkerProcesses int
	WorkerDir       *Directive
	Upstreams       []*Upstream
	Servers         []*Directive
	Passes          []*Pass
	TempPath        string
}

// Upstream is an upstream block.
type Upstream struct {
	Name      string
	Dir       *Directive
	Servers   []*Directive
	Keepalive int
	KeepDir   *Directive
}

// Upstream returns the upstream block called name, or nil.
func (c *Config) Upstream(name string) *Upstream {
	for _, u := range c.Upstreams {
		if strings.EqualFold(u.Name, name) {
			return u
		}
	}
	return nil
}

// Param is one fastcgi_param in effect.
type Param struct {
	Name, Value string
	Dir         *Directive
}

// Duration is a time setting in effect and the directive that sets it; Dir
// is nil when nginx's default applies.
type Duration struct {
	Value time.Duration
	Dir   *Directive
}

// Size is a size setting in effect and the directive that sets it; Dir is
// nil when nginx's default applies.
type Size struct {
	Value int64
	Dir   *Directive
}

// Flag is an on/off setting in effect and the directive that sets it; Dir
// is nil when nginx's default applies.
type Flag struct {
	Value bool
	Dir   *Directive
}

// Pass is one fastcgi_pass and the settings in effect where it is.
type Pass struct {
	Dir      *Directive // the fastcgi_pass directive
	Location *Directive // the location (or if) block that holds it
	Server   *Directive
	Names    []string // server_name values
	Params   []Param
	// ParamsAt is the block whose fastcgi_param list is in effect; nil
	// when none sets any.
	ParamsAt *Directive

	ReadTimeout, SendTimeout, ConnectTimeout Duration
	BufferSize                               Size
	// Buffers is fastcgi_buffers: Buffers.Value buffers of BuffersSize
	// bytes, set by the same directive.
	Buffers           Size
	BuffersSize       int64
	KeepConn          Flag
	IgnoreClientAbort Flag
	ClientMaxBodySize Size
	Root              string
	RootDir           *Directive
	Alias             bool
	Split, Index      string
}

// Param returns the fastcgi_param name in effect at the pass.
func (p *Pass) Param(name string) (Param, bool) {
	for i := len(p.Params) - 1; i >= 0; i-- {
		if strings.EqualFold(p.Params[i].Name, name) {
			return p.Params[i], true
		}
	}
	return Param{}, false
}

// nginx's defaults for the settings a Pass carries.
const (
	DefaultTimeout           = 60 * time.Second
	DefaultClientMaxBodySize = 1 << 20
)

// DefaultBufferSize is nginx's default fastcgi_buffer_size, and the size of
// each of its 8 default fastcgi_buffers: one memory page.
var DefaultBufferSize = int64(os.Getpagesize())

// scope is what a block inherits from the blocks around it.
type scope struct {
	params                                   []Param
	paramsAt                                 *Directive
	readTimeout, sendTimeout, connectTimeout Duration
	bufferSize, buffers                      Size
	buffersSize                              int64
	keepConn, ignoreClientAbort              Flag
	clientMaxBodySize                        Size
	root                                     string
	rootDir                                  *Directive
	alias                                    bool
	split                                    string
	index                                    string
	server                                   *Directive
	names                                    []string
}

// Read parses the configuration whose main file is main, opening files
// with open and expanding include patterns with glob. File names in the
// result are the ones nginx sees; source says where it came from.
func Read(source, main string, open func(string) (io.ReadCloser, error), glob func(string) ([]string, error)) (cfg *Config, err error) {
	// crossplane v0.4.48 closes the file it failed to open when an
	// explicit include is missing, so a failed open must still return
	// something to close; and as a guard for other such slips, a panic
	// in the parser is a configuration that cannot be read, not a crash.
	openOrEmpty := func(name string) (io.ReadCloser, error) {
		f, err := open(name)
		if err != nil {
			return io.NopCloser(strings.NewReader("")), err
		}
		return f, nil
	}
	defer func() {
		if r := recover(); r != nil {
			cfg, err = nil, fmt.Errorf("reading nginx configuration %s: the parser failed: %v", main, r)
		}
	}()
	payload, err := crossplane.Parse(main, &crossplane.ParseOptions{
		Open:                      openOrEmpty,
		Glob:                      glob,
		SkipDirectiveContextCheck: true,
		SkipDirectiveArgsCheck:    true,
		ErrorCallback:             func(err error) any { return err },
	})
	if err != nil {
		return nil, fmt.Errorf("reading nginx configuration %s: %w", main, err)
	}
	cfg = &Config{Source: source, Main: main}
	for _, c := range payload.Config {
		cfg.Files = append(cfg.Files, c.File)
	}
	for _, e := range payload.Errors {
		cfg.Problems = append(cfg.Problems, e.Error.Error())
	}
	if len(payload.Config) == 0 {
		return cfg, nil
	}
	seen := map[int]bool{0: true}
	top := inline(payload, payload.Config[0].Parsed, payload.Config[0].File, nil, seen)
	cfg.interpret(top)
	return cfg, nil
}

// inline resolves include directives into the blocks that hold them,
// keeping each directive's own file. seen guards against a file including
// itself through a chain, which crossplane reports but still links.
func inline(p *crossplane.Payload, dirs crossplane.Directives, file string, via *Directive, seen map[int]bool) []*Directive {
	var out []*Directive
	for _, d := range dirs {
		n := &Directive{Name: d.Directive, Args: d.Args, File: file, Line: d.Line, Via: via}
		if d.Directive == "include" {
			for _, idx := range d.Includes {
				if idx < 0 || idx >= len(p.Config) || seen[idx] {
					continue
				}
				seen[idx] = true
				out = append(out, inline(p, p.Config[idx].Parsed, p.Config[idx].File, n, seen)...)
				delete(seen, idx)
			}
			continue
		}
		if d.IsBlock() {
			n.Block = inline(p, d.Block, file, via, seen)
			if n.Block == nil {
				n.Block = []*Directive{}
			}
		}
		out = append(out, n)
	}
	return out
}

func (c *Config) interpret(top []*Directive) {
	c.WorkerProcesses = 1
	hasHTTP := false
	for _, d := range top {
		switch d.Name {
		case "user":
			c.User = d
		case "worker_processes":
			c.WorkerDir = d
			if d.Arg(0) == "auto" {
				c.WorkerProcesses = runtime.NumCPU()
			} else if n, err := strconv.Atoi(d.Arg(0)); err == nil && n > 0 {
				c.WorkerProcesses = n
			}
		case "http":
			c.http(d)
			hasHTTP = true
		case "server", "upstream":
			c.Fragment = true
		}
	}
	c.Fragment = c.Fragment && !hasHTTP
	if c.Fragment {
		c.http(&Directive{Name: "http", Block: top})
	}
}

func (c *Config) http(h *Directive) {
	sc := scope{
		readTimeout:       Duration{Value: DefaultTimeout},
		sendTimeout:       Duration{Value: DefaultTimeout},
		connectTimeout:    Duration{Value: DefaultTimeout},
		bufferSize:        Size{Value: DefaultBufferSize},
		buffers:           Size{Value: 8},
		buffersSize:       DefaultBufferSize,
		clientMaxBodySize: Size{Value: DefaultClientMaxBodySize},
		root:              "html",
	}
	sc = c.apply(sc, h)
	for _, d := range h.Block {
		switch d.Name {
		case "upstream":
			u := &Upstream{Name: d.Arg(0), Dir: d}
			for _, s := range d.Block {
				switch s.Name {
				case "server":
					u.Servers = append(u.Servers, s)
				case "keepalive":
					u.Keepalive, _ = strconv.Atoi(s.Arg(0))
					u.KeepDir = s
				}
			}
			c.Upstreams = append(c.Upstreams, u)
		case "server":
			c.Servers = append(c.Servers, d)
			ssc := c.apply(sc, d)
			ssc.server = d
			ssc.names = nil
			for _, s := range d.Block {
				if s.Name == "server_name" {
					ssc.names = append(ssc.names, s.Args...)
				}
			}
			c.locations(ssc, d, false)
		}
	}
}

// locations walks the location and if blocks inside b.
func (c *Config) locations(sc scope, b *Directive, inLocation bool) {
	for _, d := range b.Block {
		switch {
		case d.Name == "location", d.Name == "if", d.Name == "limit_except" && inLocation:
			lsc := c.apply(sc, d)
			for _, s := range d.Block {
				if s.Name == "fastcgi_pass" {
					c.Passes = append(c.Passes, &Pass{
						Dir: s, Location: d, Server: lsc.server, Names: lsc.names,
						Params: lsc.params, ParamsAt: lsc.paramsAt,
						ReadTimeout: lsc.readTimeout, SendTimeout: lsc.sendTimeout, ConnectTimeout: lsc.connectTimeout,
						BufferSize: lsc.bufferSize, Buffers: lsc.buffers, BuffersSize: lsc.buffersSize,
						KeepConn: lsc.keepConn, IgnoreClientAbort: lsc.ignoreClientAbort,
						ClientMaxBodySize: lsc.clientMaxBodySize,
						Root:              lsc.root, RootDir: lsc.rootDir, Alias: lsc.alias,
						Split: lsc.split, Index: lsc.index,
					})
				}
			}
			c.locations(lsc, d, true)
		}
	}
}

// apply returns the scope of block b: what it inherits from sc, with what
// b sets itself. fastcgi_param is inherited only by blocks that set none
// of their own, as nginx does for array directives.
func (c *Config) apply(sc scope, b *Directive) scope {
	var own []Param
	for _, d := range b.Block {
		switch d.Name {
		case "fastcgi_param":
			own = append(own, Param{Name: d.Arg(0), Value: d.Arg(1), Dir: d})
		case "fastcgi_read_timeout":
			setDuration(&sc.readTimeout, d)
		case "fastcgi_send_timeout":
			setDuration(&sc.sendTimeout, d)
		case "fastcgi_connect_timeout":
			setDuration(&sc.connectTimeout, d)
		case "fastcgi_buffer_size":
			if n, ok := ParseSize(d.Arg(0)); ok {
				sc.bufferSize = Size{Value: n, Dir: d}
			}
		case "fastcgi_buffers":
			n, err := strconv.ParseInt(d.Arg(0), 10, 64)
			size, ok := ParseSize(d.Arg(1))
			if err == nil && ok {
				sc.buffers, sc.buffersSize = Size{Value: n, Dir: d}, size
			}
		case "fastcgi_keep_conn":
			sc.keepConn = Flag{Value: d.Arg(0) == "on", Dir: d}
		case "fastcgi_ignore_client_abort":
			sc.ignoreClientAbort = Flag{Value: d.Arg(0) == "on", Dir: d}
		case "client_max_body_size":
			if n, ok := ParseSize(d.Arg(0)); ok {
				sc.clientMaxBodySize = Size{Value: n, Dir: d}
			}
		case "root":
			sc.root, sc.rootDir, sc.alias = d.Arg(0), d, false
		case "alias":
			sc.root, sc.rootDir, sc.alias = d.Arg(0), d, true
		case "fastcgi_split_path_info":
			sc.split = d.Arg(0)
		case "fastcgi_index":
			sc.index = d.Arg(0)
		case "fastcgi_temp_path":
			if b.Name == "http" {
				c.TempPath = d.Arg(0)
			}
		}
	}
	if len(own) > 0 {
		sc.params, sc.paramsAt = own, b
	}
	return sc
}

func setDuration(s *Duration, d *Directive) {
	if t, ok := ParseTime(d.Arg(0)); ok {
		*s = Duration{Value: t, Dir: d}
	}
}

// ParseTime reads an nginx time value: a number with an optional unit (ms,
// s, m, h, d, w, M, y), several of them in a row ("1m30s"); a bare number
// is seconds.
func ParseTime(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	units := map[string]time.Duration{
		"ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour,
		"d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "M": 30 * 24 * time.Hour, "y": 365 * 24 * time.Hour,
	}
	var total time.Duration
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == 0 {
			return 0, false
		}
		n, _ := strconv.Atoi(s[:i])
		s = s[i:]
		j := 0
		for j < len(s) && (s[j] < '0' || s[j] > '9') {
			j++
		}
		unit := s[:j]
		s = s[j:]
		if unit == "" {
			unit = "s"
		}
		u, ok := units[unit]
		if !ok {
			return 0, false
		}
		total += time.Duration(n) * u
	}
	return total, true
}

// ParseSize reads an nginx size value: a number with an optional k or m
// suffix, in either case.
func ParseSize(s string) (int64, bool) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "m"), strings.HasSuffix(s, "M"):
		mult, s = 1<<20, s[:len(s)-1]
	case strings.HasSuffix(s, "g"), strings.HasSuffix(s, "G"):
		mult, s = 1<<30, s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return n * mult, true
}

// ParseServerAddr reads the address of an upstream block's server line,
// which is port 80 when it names none.
func ParseServerAddr(s string) (fcgi.Addr, error) {
	if !strings.HasPrefix(s, "unix:") {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "80")
		}
	}
	return fcgi.ParseAddr(s)
}
