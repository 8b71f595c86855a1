package doctor

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	crossplane "github.com/nginxinc/nginx-go-crossplane"
)

// ndir is one nginx directive with includes resolved: where it is written,
// and the include directive that brought its file in.
type ndir struct {
	name  string
	args  []string
	file  string
	line  int
	via   *ndir
	block []*ndir
}

func (d *ndir) loc() *Location {
	if d == nil {
		return nil
	}
	return &Location{File: d.file, Line: d.line, Text: d.text()}
}

// text renders the directive as it would be written, for quoting.
func (d *ndir) text() string {
	s := d.name
	for _, a := range d.args {
		if a == "" || strings.ContainsAny(a, " \t;{}\"'") {
			a = strconv.Quote(a)
		}
		s += " " + a
	}
	if d.block != nil {
		return s + " { ... }"
	}
	return s + ";"
}

func (d *ndir) arg(i int) string {
	if i < len(d.args) {
		return d.args[i]
	}
	return ""
}

// nginxConfig is what the checks need from an nginx configuration.
type nginxConfig struct {
	// source says where the configuration came from, for the report.
	source string
	main   string
	files  []string
	// problems are parts crossplane could not read; they were skipped.
	problems []string

	user            *ndir // nil: nginx's default, nobody
	workerProcesses int
	workerDir       *ndir
	upstreams       []*upstreamBlock
	servers         []*ndir
	passes          []*pass
	tempPath        string
}

type upstreamBlock struct {
	name      string
	dir       *ndir
	servers   []*ndir
	keepalive int
	keepDir   *ndir
}

// fparam is one fastcgi_param in effect.
type fparam struct {
	name, value string
	dir         *ndir
}

// pass is one fastcgi_pass and the settings in effect where it is.
type pass struct {
	dir      *ndir // the fastcgi_pass directive
	location *ndir // the location (or if) block that holds it
	server   *ndir
	names    []string // server_name values
	params   []fparam
	// paramsAt is the block whose fastcgi_param list is in effect; nil
	// when none sets any.
	paramsAt    *ndir
	readTimeout time.Duration
	readDir     *ndir
	keepConn    bool
	keepDir     *ndir
	root        string
	rootDir     *ndir
	alias       bool
	split       string
	index       string
}

func (p *pass) param(name string) (fparam, bool) {
	for i := len(p.params) - 1; i >= 0; i-- {
		if strings.EqualFold(p.params[i].name, name) {
			return p.params[i], true
		}
	}
	return fparam{}, false
}

// scope is what a block inherits from the blocks around it.
type scope struct {
	params      []fparam
	paramsAt    *ndir
	readTimeout time.Duration
	readDir     *ndir
	keepConn    bool
	keepDir     *ndir
	root        string
	rootDir     *ndir
	alias       bool
	split       string
	index       string
	server      *ndir
	names       []string
}

// nginxDefaultReadTimeout is fastcgi_read_timeout when nothing sets it.
const nginxDefaultReadTimeout = 60 * time.Second

// readNginx parses the configuration whose main file is main, opening files
// with open and expanding include patterns with glob. File names in the
// result are the ones nginx sees.
func readNginx(source, main string, open func(string) (io.ReadCloser, error), glob func(string) ([]string, error)) (*nginxConfig, error) {
	payload, err := crossplane.Parse(main, &crossplane.ParseOptions{
		Open:                      open,
		Glob:                      glob,
		SkipDirectiveContextCheck: true,
		SkipDirectiveArgsCheck:    true,
		ErrorCallback:             func(err error) any { return err },
	})
	if err != nil {
		return nil, fmt.Errorf("reading nginx configuration %s: %w", main, err)
	}
	cfg := &nginxConfig{source: source, main: main}
	for _, c := range payload.Config {
		cfg.files = append(cfg.files, c.File)
	}
	for _, e := range payload.Errors {
		cfg.problems = append(cfg.problems, e.Error.Error())
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
func inline(p *crossplane.Payload, dirs crossplane.Directives, file string, via *ndir, seen map[int]bool) []*ndir {
	var out []*ndir
	for _, d := range dirs {
		n := &ndir{name: d.Directive, args: d.Args, file: file, line: d.Line, via: via}
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
			n.block = inline(p, d.Block, file, via, seen)
			if n.block == nil {
				n.block = []*ndir{}
			}
		}
		out = append(out, n)
	}
	return out
}

func (c *nginxConfig) interpret(top []*ndir) {
	c.workerProcesses = 1
	for _, d := range top {
		switch d.name {
		case "user":
			c.user = d
		case "worker_processes":
			c.workerDir = d
			if d.arg(0) == "auto" {
				c.workerProcesses = numCPU()
			} else if n, err := strconv.Atoi(d.arg(0)); err == nil && n > 0 {
				c.workerProcesses = n
			}
		case "http":
			c.http(d)
		}
	}
}

func (c *nginxConfig) http(h *ndir) {
	sc := scope{readTimeout: nginxDefaultReadTimeout, root: "html"}
	sc = c.apply(sc, h)
	for _, d := range h.block {
		switch d.name {
		case "upstream":
			u := &upstreamBlock{name: d.arg(0), dir: d}
			for _, s := range d.block {
				switch s.name {
				case "server":
					u.servers = append(u.servers, s)
				case "keepalive":
					u.keepalive, _ = strconv.Atoi(s.arg(0))
					u.keepDir = s
				}
			}
			c.upstreams = append(c.upstreams, u)
		case "server":
			c.servers = append(c.servers, d)
			ssc := c.apply(sc, d)
			ssc.server = d
			ssc.names = nil
			for _, s := range d.block {
				if s.name == "server_name" {
					ssc.names = append(ssc.names, s.args...)
				}
			}
			c.locations(ssc, d, false)
		}
	}
}

// locations walks the location and if blocks inside b.
func (c *nginxConfig) locations(sc scope, b *ndir, inLocation bool) {
	for _, d := range b.block {
		switch {
		case d.name == "location", d.name == "if", d.name == "limit_except" && inLocation:
			lsc := c.apply(sc, d)
			for _, s := range d.block {
				if s.name == "fastcgi_pass" {
					c.passes = append(c.passes, &pass{
						dir: s, location: d, server: lsc.server, names: lsc.names,
						params: lsc.params, paramsAt: lsc.paramsAt,
						readTimeout: lsc.readTimeout, readDir: lsc.readDir,
						keepConn: lsc.keepConn, keepDir: lsc.keepDir,
						root: lsc.root, rootDir: lsc.rootDir, alias: lsc.alias,
						split: lsc.split, index: lsc.index,
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
func (c *nginxConfig) apply(sc scope, b *ndir) scope {
	var own []fparam
	for _, d := range b.block {
		switch d.name {
		case "fastcgi_param":
			own = append(own, fparam{name: d.arg(0), value: d.arg(1), dir: d})
		case "fastcgi_read_timeout":
			if t, ok := parseNginxTime(d.arg(0)); ok {
				sc.readTimeout, sc.readDir = t, d
			}
		case "fastcgi_keep_conn":
			sc.keepConn, sc.keepDir = d.arg(0) == "on", d
		case "root":
			sc.root, sc.rootDir, sc.alias = d.arg(0), d, false
		case "alias":
			sc.root, sc.rootDir, sc.alias = d.arg(0), d, true
		case "fastcgi_split_path_info":
			sc.split = d.arg(0)
		case "fastcgi_index":
			sc.index = d.arg(0)
		case "fastcgi_temp_path":
			if b.name == "http" {
				c.tempPath = d.arg(0)
			}
		}
	}
	if len(own) > 0 {
		sc.params, sc.paramsAt = own, b
	}
	return sc
}

// parseNginxTime reads an nginx time value: a number with an optional unit
// (ms, s, m, h, d, w, M, y), several of them in a row ("1m30s"); a bare
// number is seconds.
func parseNginxTime(s string) (time.Duration, bool) {
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

// dumpMarker starts each file in the output of nginx -T.
const dumpMarker = "# configuration file "

// splitDump splits the output of `nginx -T` into its files. nginx writes
// each file as it is, after a "# configuration file NAME:" line and
// followed by one newline of its own, so line numbers stay those of the
// files. The first file is the main one.
func splitDump(out []byte) (main string, files map[string][]byte, err error) {
	files = make(map[string][]byte)
	var name string
	var buf bytes.Buffer
	flush := func() {
		if name == "" {
			return
		}
		b := bytes.Clone(buf.Bytes())
		// Drop the newline nginx adds after each file.
		b = bytes.TrimSuffix(b, []byte("\n"))
		files[name] = b
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, dumpMarker) && strings.HasSuffix(line, ":") {
			flush()
			name = strings.TrimSuffix(strings.TrimPrefix(line, dumpMarker), ":")
			buf.Reset()
			if main == "" {
				main = name
			}
			continue
		}
		if name != "" {
			buf.WriteString(line)
			buf.WriteByte('\n')
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return "", nil, err
	}
	if main == "" {
		return "", nil, errors.New("no \"# configuration file\" line in the output of nginx -T")
	}
	return main, files, nil
}

// dumpFS serves the files of an nginx -T dump to crossplane.
type dumpFS map[string][]byte

func (m dumpFS) open(name string) (io.ReadCloser, error) {
	b, ok := m[filepath.Clean(name)]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m dumpFS) glob(pattern string) ([]string, error) {
	var out []string
	for name := range m {
		if ok, err := filepath.Match(pattern, name); err != nil {
			return nil, err
		} else if ok {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// rootFS reads files under root as if root were "/".
type rootFS string

func (r rootFS) path(name string) string {
	if r == "" {
		return name
	}
	return filepath.Join(string(r), name)
}

func (r rootFS) open(name string) (io.ReadCloser, error) {
	f, err := os.Open(r.path(name))
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (r rootFS) glob(pattern string) ([]string, error) {
	m, err := filepath.Glob(r.path(pattern))
	if err != nil || r == "" {
		return m, err
	}
	for i := range m {
		m[i] = "/" + strings.TrimPrefix(strings.TrimPrefix(m[i], string(r)), "/")
	}
	return m, nil
}
