package fpm

import (
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
)

// maxIncludeDepth is how many files deep php-fpm reads: the main file and 4
// nested includes ("failed to include more than 5 files recursively").
const maxIncludeDepth = 5

// maxFileSize bounds what is read of one file, so that a wrong path (a
// device, a huge log) cannot exhaust memory.
const maxFileSize = 16 << 20

// loader holds the state php-fpm keeps while reading: the section in
// effect and the stack of files being read.
type loader struct {
	cfg       *Config
	root      string
	env       func(string) (string, bool)
	cur       *Pool // nil in the global section
	inSection bool  // a section header has been seen
	stack     []string
	seen      map[string]bool
	noInclude bool
	// arrays remembers, per pool and array key, the first definition of
	// each kind, because the first one wins.
	arrays map[*Pool]map[string]*arrayDefs
	// pools finds a pool by lower-case name; suppress counts each pool's
	// access.suppress_path entries.
	pools    map[string]*Pool
	suppress map[*Pool]int
}

type arrayDefs struct {
	user, admin *PHPValue
}

func newLoader(path string, opts Options) *loader {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = defaultPrefix(absPath(path))
	}
	return &loader{
		cfg: &Config{
			Path:   path,
			Prefix: filepath.Clean(prefix),
			Global: map[string]Setting{},
		},
		root:     opts.Root,
		env:      lookupEnvOrOS(opts.LookupEnv),
		seen:     map[string]bool{},
		arrays:   map[*Pool]map[string]*arrayDefs{},
		pools:    map[string]*Pool{},
		suppress: map[*Pool]int{},
	}
}

// absPath makes a path absolute, relative to the working directory.
func absPath(path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// onDisk returns where a path php-fpm would see is on this machine.
func (l *loader) onDisk(path string) string {
	if l.root == "" {
		return path
	}
	return filepath.Join(l.root, path)
}

func (l *loader) read(path string) ([]byte, error) {
	f, err := os.Open(l.onDisk(path))
	if err != nil {
		return nil, fmt.Errorf("php-fpm configuration: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return nil, fmt.Errorf("php-fpm configuration %s: is a directory", path)
	}
	src, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("php-fpm configuration %s: %w", path, err)
	}
	if len(src) > maxFileSize {
		return nil, fmt.Errorf("php-fpm configuration %s: larger than %d bytes", path, maxFileSize)
	}
	if !l.seen[path] {
		l.seen[path] = true
		l.cfg.Files = append(l.cfg.Files, path)
	}
	return src, nil
}

// warn records a warning at file:line (line 0 leaves the line out).
func (l *loader) warn(file string, line int, format string, args ...any) {
	at := file
	if line > 0 {
		at += ":" + strconv.Itoa(line)
	}
	l.cfg.Warnings = append(l.cfg.Warnings, at+": "+fmt.Sprintf(format, args...))
}

// reject records a warning for something php-fpm refuses to start with.
func (l *loader) reject(file string, line int, format string, args ...any) {
	l.warn(file, line, format+" (php-fpm refuses to start)", args...)
	l.cfg.fatal++
}

// file reads one file's lines, as php-fpm does: each line on its own.
func (l *loader) file(path string, src []byte) {
	l.stack = append(l.stack, path)
	defer func() { l.stack = l.stack[:len(l.stack)-1] }()
	lineno := 0
	for len(src) > 0 {
		lineno++
		var line []byte
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			line, src = src[:i], src[i+1:]
		} else {
			line, src = src, nil
		}
		if i := bytes.IndexByte(line, 0); i >= 0 {
			// php-fpm hands the line to the scanner as a C string.
			line = line[:i]
		}
		// The scanner takes a carriage return as a line end too.
		for _, part := range strings.Split(string(line), "\r") {
			l.statement(path, lineno, part)
		}
	}
}

func (l *loader) statement(file string, line int, text string) {
	st := scanLine(text, l.env)
	switch {
	case st.hashComment:
		l.reject(file, line, "'#' does not start a comment in php-fpm 8.2 (PHP 7 removed it); use ';'")
		return
	case st.err != "":
		l.reject(file, line, "syntax error: %s", st.err)
		return
	}
	if st.note != "" {
		l.warn(file, line, "%s", st.note)
	}
	switch st.kind {
	case stmtSection:
		l.section(file, line, st.name)
		if st.trailing {
			l.reject(file, line, "unexpected text after the section header [%s]", st.name)
		}
	case stmtEntry:
		if st.noValue {
			l.reject(file, line, "%s has no '=' and no value", st.name)
			return
		}
		if st.name == "include" {
			l.include(file, line, st)
			return
		}
		l.entry(file, line, st)
	case stmtArray:
		if st.noValue {
			l.reject(file, line, "%s[%s] has no '=' and no value", st.name, st.offset)
			return
		}
		l.array(file, line, st)
	}
}

func (l *loader) section(file string, line int, name string) {
	l.inSection = true
	if equalFold(name, "global") {
		l.cur = nil
		return
	}
	if p, ok := l.pools[lowerASCII(name)]; ok {
		l.cur = p
		return
	}
	p := newPool(name, file, line)
	l.cfg.Pools = append(l.cfg.Pools, p)
	l.pools[lowerASCII(name)] = p
	l.cur = p
}

func newPool(name, file string, line int) *Pool {
	return &Pool{
		Name:                    name,
		File:                    file,
		Line:                    line,
		Settings:                map[string]Setting{},
		ListenBacklog:           -1,
		ProcessIdleTimeout:      10 * second,
		DecorateWorkersOutput:   true,
		ClearEnv:                true,
		SecurityLimitExtensions: []string{".php", ".phar"},
		PHPValues:               map[string]PHPValue{},
		Env:                     map[string]Setting{},
		MaxExecutionTime:        -1,
	}
}

// equalFold compares ASCII case-insensitively, as strcasecmp does.
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func (l *loader) entry(file string, line int, st stmt) {
	key := lowerASCII(st.name)
	set := Setting{Key: st.name, Value: st.value, Raw: st.raw, File: file, Line: line}
	where := "[global]"
	if l.cur != nil {
		where = "[pool " + l.cur.Name + "]"
	}
	if l.cur == nil {
		d, known := globalDirectives[key]
		if !known {
			switch _, isPool := poolDirectives[key]; {
			case isPool && !l.inSection:
				l.reject(file, line, "%s comes before any [section]; php-fpm reads it as a global directive, and there is no global %s", st.name, st.name)
			case isPool:
				l.reject(file, line, "%s is a pool directive, not allowed in [global]", st.name)
			default:
				l.reject(file, line, "unknown directive %s", st.name)
			}
			l.cfg.Global[key] = set
			return
		}
		if d.kind == kindString && strings.Contains(set.Value, "$pool") {
			l.reject(file, line, "%s: $pool cannot be used in [global]", st.name)
		}
		l.check(file, line, where, st.name, set.Value, d.kind)
		l.cfg.Global[key] = set
		return
	}
	d, known := poolDirectives[key]
	if !known {
		if _, isGlobal := globalDirectives[key]; isGlobal {
			l.reject(file, line, "%s is a global directive, not allowed in %s", st.name, where)
		} else {
			l.reject(file, line, "unknown directive %s in %s", st.name, where)
		}
		l.cur.Settings[key] = set
		return
	}
	if d.kind == kindString {
		set.Value = strings.ReplaceAll(set.Value, "$pool", l.cur.Name)
	}
	l.check(file, line, where, st.name, set.Value, d.kind)
	l.cur.Settings[key] = set
}

// check reports a value php-fpm cannot parse for a directive of kind k.
func (l *loader) check(file string, line int, where, name, value string, k kind) {
	if msg := validate(k, value); msg != "" {
		l.reject(file, line, "%s %s = %q: %s", where, name, value, msg)
		return
	}
	if k == kindTime {
		// php-fpm takes the last character as the unit and atoi of the
		// rest, so "10ms" is 10 seconds and "1.5m" one minute.
		n := value
		if last := value[len(value)-1]; last < '0' || last > '9' {
			n = value[:len(value)-1]
		}
		if n == "" || n == "-" || !isInteger(n) {
			l.warn(file, line, "%s %s = %q: php-fpm reads only the leading integer, %s", where, name, value, formatSeconds(timeSeconds(value)))
		}
	}
}

// arrayNames are php-fpm's array directives; the names are case-sensitive.
var arrayNames = map[string]bool{
	"php_value": true, "php_admin_value": true, "php_flag": true, "php_admin_flag": true,
	"env": true, "access.suppress_path": true,
}

func (l *loader) array(file string, line int, st stmt) {
	key := st.name + "[" + st.offset + "]"
	if !arrayNames[st.name] {
		if l.cur != nil {
			l.cur.Settings[key] = Setting{Key: key, Value: st.value, Raw: st.raw, File: file, Line: line}
		}
		l.reject(file, line, "unknown directive %s", st.name)
		return
	}
	if st.name == "access.suppress_path" {
		bad := false
		if st.offset != "" {
			l.reject(file, line, "access.suppress_path takes no key: write access.suppress_path[] = %s", st.value)
			bad = true
		}
		if !strings.HasPrefix(st.value, "/") {
			l.reject(file, line, "access.suppress_path[] = %q must begin with '/'", st.value)
			bad = true
		}
		if bad {
			return
		}
	} else if st.offset == "" {
		l.reject(file, line, "%s[] needs a key, as in %s[name]", st.name, st.name)
		return
	}
	if l.cur == nil {
		l.reject(file, line, "%s is not allowed in [global]", key)
		return
	}
	p := l.cur
	set := Setting{Key: key, Value: st.value, Raw: st.raw, File: file, Line: line}
	switch st.name {
	case "access.suppress_path":
		// Several are allowed; keep them all, numbered, in Settings.
		p.Settings["access.suppress_path["+strconv.Itoa(l.suppress[p])+"]"] = set
		l.suppress[p]++
		return
	case "env":
		if st.value == "" {
			l.reject(file, line, "env[%s] has an empty value", st.offset)
			return
		}
		set.Value = strings.ReplaceAll(set.Value, "$pool", p.Name)
		if prev, ok := p.Env[st.offset]; ok {
			l.warn(file, line, "[pool %s] env[%s] is ignored: php-fpm uses the first definition, at %s", p.Name, st.offset, prev.Where())
			return
		}
		p.Env[st.offset] = set
		p.Settings[key] = set
		return
	}
	admin := strings.HasPrefix(st.name, "php_admin_")
	if strings.HasSuffix(st.name, "_flag") {
		b, ok := parseBool(st.value)
		if !ok {
			l.reject(file, line, "[pool %s] %s = %q: invalid boolean value", p.Name, key, st.value)
			return
		}
		set.Value = "0"
		if b {
			set.Value = "1"
		}
	} else {
		set.Value = strings.ReplaceAll(set.Value, "$pool", p.Name)
	}
	defs := l.arrays[p]
	if defs == nil {
		defs = map[string]*arrayDefs{}
		l.arrays[p] = defs
	}
	d := defs[st.offset]
	if d == nil {
		d = &arrayDefs{}
		defs[st.offset] = d
	}
	slot := &d.user
	if admin {
		slot = &d.admin
	}
	if *slot != nil {
		l.warn(file, line, "[pool %s] %s is ignored: php-fpm uses the first definition, %s at %s", p.Name, key, (*slot).Key, (*slot).Where())
		return
	}
	*slot = &PHPValue{Setting: set, Admin: admin}
	p.Settings[key] = set
	eff := d.user
	if d.admin != nil {
		eff = d.admin
	}
	p.PHPValues[st.offset] = *eff
}

// include expands an include directive and reads the files, as php-fpm
// does once the line is done.
func (l *loader) include(file string, line int, st stmt) {
	set := Setting{Key: st.name, Value: st.value, Raw: st.raw, File: file, Line: line}
	if l.cur == nil {
		l.cfg.Global["include"] = set
	} else {
		l.cur.Settings["include"] = set
	}
	if l.noInclude {
		return
	}
	pattern := st.value
	if pattern == "" {
		l.reject(file, line, "include has an empty pattern")
		return
	}
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(l.cfg.Prefix, pattern)
	}
	matches, err := l.glob(pattern)
	if err != nil {
		l.reject(file, line, "include = %s: %v", st.value, err)
		return
	}
	for _, m := range matches {
		if cycle := l.cycle(m); cycle != "" {
			l.reject(file, line, "include cycle: %s", cycle)
			continue
		}
		if len(l.stack) >= maxIncludeDepth {
			l.reject(file, line, "include of %s nests more than %d files deep", m, maxIncludeDepth)
			continue
		}
		src, err := l.read(m)
		if err != nil {
			l.reject(file, line, "cannot include %s: %v", m, unwrapPath(err))
			continue
		}
		l.file(m, src)
	}
}

// unwrapPath drops the *PathError's path, which the message already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// cycle returns "a -> b -> a" when path is already being read.
func (l *loader) cycle(path string) string {
	for i, f := range l.stack {
		if f == path {
			return strings.Join(append(append([]string{}, l.stack[i:]...), path), " -> ")
		}
	}
	return ""
}

// glob expands pattern like glob(3) with php-fpm's flags: matches sorted,
// directories left out, '*' and '?' and '[...]' not matching a leading dot
// unless the pattern's element starts with one, and a directory that cannot
// be read an error (php-fpm passes GLOB_ERR, so a missing pool.d is fatal
// while an existing one with no match is not).
func (l *loader) glob(pattern string) ([]string, error) {
	pattern = filepath.Clean(pattern)
	if !hasMeta(pattern) {
		st, err := os.Stat(l.onDisk(pattern))
		if err != nil || st.IsDir() {
			return nil, nil
		}
		return []string{pattern}, nil
	}
	dir, _ := filepath.Split(pattern)
	dir = filepath.Clean(dir)
	if !hasMeta(dir) {
		if _, err := os.ReadDir(l.onDisk(dir)); err != nil {
			return nil, fmt.Errorf("cannot read the directory %s: %w", dir, unwrapPath(err))
		}
	}
	full := l.onDisk(pattern)
	if l.root != "" {
		// Escape Root's own metacharacters so only the pattern's count.
		full = filepath.Join(escapeMeta(l.root), pattern)
	}
	found, err := filepath.Glob(full)
	if err != nil {
		return nil, fmt.Errorf("bad pattern: %w", err)
	}
	var out []string
	for _, m := range found {
		rel := m
		if l.root != "" {
			r, err := filepath.Rel(l.root, m)
			if err != nil {
				continue
			}
			rel = "/" + r
		}
		if hiddenMismatch(pattern, rel) {
			continue
		}
		if st, err := os.Stat(m); err != nil || st.IsDir() {
			continue
		}
		out = append(out, rel)
	}
	sort.Strings(out)
	return out, nil
}

func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

func escapeMeta(p string) string {
	var b strings.Builder
	for _, c := range p {
		if strings.ContainsRune(`*?[\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// hiddenMismatch reports whether match has a dot file where pattern has a
// wildcard element not starting with '.', which glob(3) does not match.
func hiddenMismatch(pattern, match string) bool {
	pe := strings.Split(pattern, "/")
	me := strings.Split(filepath.Clean(match), "/")
	if len(pe) != len(me) {
		return false
	}
	for i := range pe {
		if strings.HasPrefix(me[i], ".") && !strings.HasPrefix(pe[i], ".") && hasMeta(pe[i]) {
			return true
		}
	}
	return false
}
