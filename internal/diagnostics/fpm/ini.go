package fpm

import (
	"strconv"
	"strings"
)

// This file reads one line of php-fpm configuration the way PHP's INI
// scanner does in ZEND_INI_SCANNER_NORMAL mode, which is what php-fpm uses:
// it hands every physical line to zend_parse_ini_string on its own. Only the
// parts of the scanner a configuration file can reach are reproduced; the
// behaviours below were checked against `php-fpm8.2 -tt`, which prints the
// values it ended up with.

// stmtKind says what a line holds.
type stmtKind int

const (
	stmtNone    stmtKind = iota // blank or comment
	stmtSection                 // [name]
	stmtEntry                   // key = value
	stmtArray                   // key[offset] = value
)

// stmt is one scanned line.
type stmt struct {
	kind   stmtKind
	name   string // the section name or the key, trimmed
	offset string // the array offset, for stmtArray
	value  string // the value as php-fpm receives it
	raw    string // the value as written, comment and outer blanks removed
	// noValue is set for a key without "=": the scanner hands php-fpm a
	// NULL value, which it rejects.
	noValue bool
	// hashComment is set for a line starting with '#'. PHP 7 removed '#'
	// comments from the INI scanner, so php-fpm reads such a line as a
	// directive and rejects it; the caller skips it with a warning.
	hashComment bool
	// trailing is set when text follows a section header's ']', which
	// php-fpm reads as a directive without a value and rejects.
	trailing bool
	// err is a syntax error; PHP reports those as "syntax error, unexpected
	// ..." and php-fpm refuses the file.
	err string
	// note describes something php-fpm accepts but surely not as meant.
	note string
}

// phpConstants are the constants a configuration value is most likely to
// name. PHP replaces any defined constant; only the error levels are worth
// reproducing, for php_admin_value[error_reporting] = E_ALL & ~E_NOTICE.
// The values are PHP 8.2's.
var phpConstants = map[string]int32{
	"E_ERROR":             1,
	"E_WARNING":           2,
	"E_PARSE":             4,
	"E_NOTICE":            8,
	"E_CORE_ERROR":        16,
	"E_CORE_WARNING":      32,
	"E_COMPILE_ERROR":     64,
	"E_COMPILE_WARNING":   128,
	"E_USER_ERROR":        256,
	"E_USER_WARNING":      512,
	"E_USER_NOTICE":       1024,
	"E_STRICT":            2048,
	"E_RECOVERABLE_ERROR": 4096,
	"E_DEPRECATED":        8192,
	"E_USER_DEPRECATED":   16384,
	"E_ALL":               32767,
}

// scanner reads one statement. env looks up ${NAME}.
type scanner struct {
	s   string
	i   int
	env func(string) (string, bool)
	err string
	// valueStart is where the value of an entry starts; truncated is set
	// when an unmatched ' ended it early.
	valueStart int
	truncated  bool
}

func (sc *scanner) fail(msg string) {
	if sc.err == "" {
		sc.err = msg
	}
}

func (sc *scanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *scanner) skipBlanks() {
	for sc.i < len(sc.s) && (sc.s[sc.i] == ' ' || sc.s[sc.i] == '\t') {
		sc.i++
	}
}

// atEnd reports whether only blanks and a comment are left.
func (sc *scanner) atEnd() bool {
	j := sc.i
	for j < len(sc.s) && (sc.s[j] == ' ' || sc.s[j] == '\t') {
		j++
	}
	return j >= len(sc.s) || sc.s[j] == ';'
}

// scanLine scans one statement: a physical line, or a part of one when it
// holds a carriage return, which the INI scanner also takes as a line end.
func scanLine(line string, env func(string) (string, bool)) stmt {
	sc := &scanner{s: line, env: env}
	sc.skipBlanks()
	if sc.eof() || sc.s[sc.i] == ';' {
		return stmt{kind: stmtNone}
	}
	if sc.s[sc.i] == '#' {
		return stmt{kind: stmtNone, hashComment: true}
	}
	if sc.s[sc.i] == '[' {
		if sc.i > 0 && sc.s[sc.i-1] == ' ' {
			// The scanner reads spaces followed by '[' as an array
			// directive with an empty name (a tab does not do that).
			return stmt{kind: stmtEntry, err: "a section header cannot be indented with spaces"}
		}
		sc.i++
		name := sc.bracketed(false)
		st := stmt{kind: stmtSection, name: name, err: sc.err}
		if sc.err == "" && !sc.atEnd() {
			st.trailing = true
		}
		return st
	}
	return sc.entry()
}

// bracketed reads a section name or an array offset up to the closing ']'.
// Blanks are part of the text (the pool of "[ www ]" is " www "), except
// next to a double-quoted piece. A '$' or '\' takes the next character
// with it, even ']'. In an offset, leading blanks are dropped, and a bare
// word that is a constant, or null, is replaced.
func (sc *scanner) bracketed(offset bool) string {
	if offset {
		sc.skipBlanks()
	}
	var b strings.Builder
	for sc.err == "" {
		if sc.eof() {
			sc.fail("unexpected end of line, expecting ']'")
			break
		}
		c := sc.s[sc.i]
		switch {
		case c == ']':
			sc.i++
			return b.String()
		case c == ';':
			sc.fail("unexpected ';' before ']'")
		case c == '"':
			b.WriteString(sc.doubleQuoted())
			sc.skipBlanks()
		case c == '\'':
			b.WriteString(sc.singleQuoted())
		case c == '$' && sc.i+1 < len(sc.s) && sc.s[sc.i+1] == '{':
			b.WriteString(sc.variable())
		default:
			start := sc.i
			for sc.i < len(sc.s) && sc.err == "" {
				c := sc.s[sc.i]
				if strings.IndexByte(";\"']", c) >= 0 || (c == '$' && sc.i+1 < len(sc.s) && sc.s[sc.i+1] == '{') {
					break
				}
				if c == '$' || c == '\\' {
					n := 2
					if c == '$' && sc.i+1 < len(sc.s) && sc.s[sc.i+1] == '\\' {
						n = 3
					}
					if sc.i+n > len(sc.s) {
						sc.fail("unexpected end of line, expecting ']'")
					}
					sc.i += n
					continue
				}
				sc.i++
			}
			if sc.i > len(sc.s) {
				sc.i = len(sc.s)
			}
			word := sc.s[start:sc.i]
			if strings.Trim(word, " \t") == "" && sc.i < len(sc.s) && sc.s[sc.i] == '"' {
				continue // blanks before a double quote
			}
			if offset {
				// Only null among the boolean words, and constants.
				if equalFold(strings.TrimRight(word, " \t"), "null") {
					word = ""
				} else if n, ok := phpConstants[word]; ok {
					word = strconv.Itoa(int(n))
				}
			}
			b.WriteString(word)
		}
	}
	return b.String()
}

// isLabelChar reports whether c can be part of a key; these are the
// characters the INI scanner's LABEL excludes.
func isLabelChar(c byte) bool {
	return !strings.ContainsRune("=\n\r\t;&|^$~(){}!\"[]\x00", rune(c))
}

func (sc *scanner) entry() stmt {
	start := sc.i
	for sc.i < len(sc.s) && (isLabelChar(sc.s[sc.i]) || sc.s[sc.i] == '\t') {
		sc.i++
	}
	key := strings.TrimRight(sc.s[start:sc.i], " \t")
	st := stmt{kind: stmtEntry, name: key}
	if key == "" {
		st.err = "unexpected '" + string(sc.s[sc.i]) + "' where a directive name was expected"
		return st
	}
	if sc.atEnd() {
		st.noValue = true
		return st
	}
	switch sc.s[sc.i] {
	case '[':
		sc.i++
		st.kind = stmtArray
		st.offset = sc.bracketed(true)
		if sc.err != "" {
			st.err = sc.err
			return st
		}
		sc.skipBlanks()
		if sc.atEnd() {
			st.noValue = true
			return st
		}
		if sc.s[sc.i] != '=' {
			st.err = "unexpected '" + string(sc.s[sc.i]) + "' after " + key + "[" + st.offset + "], expecting '='"
			return st
		}
	case '=':
	default:
		st.err = "unexpected '" + string(sc.s[sc.i]) + "' in the directive name " + strconv.Quote(sc.s[start:sc.i+1])
		return st
	}
	sc.i++ // '='
	sc.skipBlanks()
	rawStart := sc.i
	sc.valueStart = sc.i
	st.value = sc.value()
	st.raw = strings.TrimRight(sc.s[rawStart:sc.commentStart(rawStart)], " \t")
	st.err = sc.err
	if sc.truncated && st.err == "" {
		st.note = "a ' without its closing quote: php-fpm ignores the rest of the line"
	}
	return st
}

// commentStart returns where the comment of the value part starting at from
// begins: the first ';' outside quotes, or the end of the line.
func (sc *scanner) commentStart(from int) int {
	var quote byte
	for j := from; j < len(sc.s); j++ {
		c := sc.s[j]
		switch {
		case quote == '"' && c == '\\':
			j++
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
		case c == '"' || c == '\'':
			quote = c
		case c == ';':
			return j
		}
	}
	return len(sc.s)
}

// variable reads ${NAME} and returns its value from the environment; an
// unset variable is empty, as in PHP. PHP 8.2 has no ${NAME:-default}.
func (sc *scanner) variable() string {
	sc.i += 2 // "${"
	end := strings.IndexByte(sc.s[sc.i:], '}')
	if end < 0 {
		sc.fail("unexpected end of line, expecting '}' after '${'")
		sc.i = len(sc.s)
		return ""
	}
	name := strings.Trim(sc.s[sc.i:sc.i+end], " ")
	for j := 0; j < len(name); j++ {
		if !isLabelChar(name[j]) {
			sc.fail("unexpected '" + string(name[j]) + "' in a variable name, expecting '}'")
			sc.i = len(sc.s)
			return ""
		}
	}
	sc.i += end + 1
	if name == "" {
		sc.fail("unexpected '}', expecting a variable name after '${'")
		return ""
	}
	if sc.env == nil {
		return ""
	}
	v, _ := sc.env(name)
	return v
}

// doubleQuoted reads "..." with PHP's INI escapes: \" \\ and \$ lose their
// backslash, any other backslash stays. ${NAME} is expanded inside.
func (sc *scanner) doubleQuoted() string {
	sc.i++ // '"'
	var b strings.Builder
	for {
		if sc.eof() {
			sc.fail(`unexpected end of line, expecting '"'`)
			return b.String()
		}
		c := sc.s[sc.i]
		switch {
		case c == '"':
			sc.i++
			return b.String()
		case c == '\\' && sc.i+1 < len(sc.s):
			n := sc.s[sc.i+1]
			if n == '"' || n == '\\' || n == '$' {
				b.WriteByte(n)
			} else {
				b.WriteByte('\\')
				b.WriteByte(n)
			}
			sc.i += 2
		case c == '$' && sc.i+1 < len(sc.s) && sc.s[sc.i+1] == '{':
			b.WriteString(sc.variable())
			if sc.err != "" {
				return b.String()
			}
		default:
			b.WriteByte(c)
			sc.i++
		}
	}
}

// singleQuoted reads '...' raw. PHP's scanner has no token for an empty
// pair, and php-fpm then gets no value at all, which it rejects.
func (sc *scanner) singleQuoted() string {
	sc.i++ // '\''
	end := strings.IndexByte(sc.s[sc.i:], '\'')
	if end < 0 {
		sc.fail("unexpected end of line, expecting a closing '")
		sc.i = len(sc.s)
		return ""
	}
	if end == 0 {
		sc.fail("'' is not a value php-fpm can read (write \"\" for an empty string)")
	}
	v := sc.s[sc.i : sc.i+end]
	sc.i += end + 1
	return v
}

// token kinds of a value.
const (
	tokEnd   = iota
	tokPart  // a piece of text: bare, quoted or ${NAME}
	tokBlank // blanks between pieces
	tokOp    // | & ^ ~ ! ( )
	tokBool  // true/on/yes, false/off/no/none, null
)

type token struct {
	kind int
	text string
	// dq marks a double-quoted piece: the blanks around it are dropped.
	dq bool
}

// isValueChar reports whether c can be part of a bare value: the INI
// scanner's VALUE_CHARS, with '$' handled by the caller.
func isValueChar(c byte) bool {
	return !strings.ContainsRune("$= \t\n\r;&|^~()!\"'\x00", rune(c))
}

// boolWords are the bare words the scanner turns into "1" or "" (it matches
// them case-insensitively).
var boolWords = map[string]string{
	"true": "1", "on": "1", "yes": "1",
	"false": "", "off": "", "no": "", "none": "", "null": "",
}

func (sc *scanner) next() token {
	if sc.err != "" || sc.eof() || sc.s[sc.i] == ';' {
		return token{kind: tokEnd}
	}
	c := sc.s[sc.i]
	switch {
	case c == ' ' || c == '\t':
		start := sc.i
		sc.skipBlanks()
		if sc.eof() || sc.s[sc.i] == ';' {
			return token{kind: tokEnd}
		}
		return token{kind: tokBlank, text: sc.s[start:sc.i]}
	case c == '"':
		v := sc.doubleQuoted()
		sc.skipBlanks()
		return token{kind: tokPart, text: v, dq: true}
	case c == '\'':
		if strings.IndexByte(sc.s[sc.i+1:], '\'') < 0 && strings.TrimLeft(sc.s[sc.valueStart:sc.i], " \t") != "" {
			// PHP's scanner drops an unmatched quote and the rest of the
			// line, unless nothing came before it.
			sc.truncated = true
			sc.i = len(sc.s)
			return token{kind: tokEnd}
		}
		return token{kind: tokPart, text: sc.singleQuoted()}
	case c == '$' && sc.i+1 < len(sc.s) && sc.s[sc.i+1] == '{':
		return token{kind: tokPart, text: sc.variable()}
	case strings.IndexByte("|&^~!()", c) >= 0:
		sc.i++
		return token{kind: tokOp, text: string(c)}
	case c == '=':
		sc.fail("unexpected '=' in a value (quote the value)")
		return token{kind: tokEnd}
	}
	start := sc.i
	for sc.i < len(sc.s) {
		c := sc.s[sc.i]
		if c == '$' {
			if sc.i+1 < len(sc.s) && sc.s[sc.i+1] == '{' {
				break
			}
			// A '$' not starting ${ takes the next character with it,
			// whatever it is: "$'" and "$;" are text, and "$${A}" is
			// "$${A}".
			sc.i += 2
			if sc.i <= len(sc.s) && sc.s[sc.i-1] == '\\' {
				sc.i++
			}
			if sc.i > len(sc.s) {
				sc.i = len(sc.s)
			}
			continue
		}
		if !isValueChar(c) {
			break
		}
		sc.i++
	}
	word := sc.s[start:sc.i]
	if v, ok := boolWords[strings.ToLower(word)]; ok {
		return token{kind: tokBool, text: v}
	}
	if n, ok := phpConstants[word]; ok {
		return token{kind: tokPart, text: strconv.Itoa(int(n))}
	}
	return token{kind: tokPart, text: word}
}

// value reads the value part of an entry: a lone boolean word, or an
// expression of text pieces and the bitwise operators PHP's INI parser
// evaluates.
func (sc *scanner) value() string {
	p := &valueParser{sc: sc}
	p.advance()
	switch p.tok.kind {
	case tokEnd:
		return ""
	case tokBool:
		v := p.tok.text
		p.advance()
		if p.tok.kind != tokEnd {
			sc.fail("a boolean word (yes, on, true, no, off, false, none, null) must be the whole value; quote the value")
		}
		return v
	}
	v := p.expr()
	if p.tok.kind != tokEnd {
		sc.fail("unexpected " + p.describe() + " in a value (quote the value)")
	}
	return v
}

type valueParser struct {
	sc    *scanner
	tok   token
	depth int
}

// maxDepth bounds the nesting of ( ~ and !. PHP's bison parser gives up at
// 10000 levels too ("memory exhausted").
const maxDepth = 10000

func (p *valueParser) advance() { p.tok = p.sc.next() }

func (p *valueParser) describe() string {
	switch p.tok.kind {
	case tokBool:
		return "boolean word"
	case tokEnd:
		return "end of line"
	}
	return "'" + p.tok.text + "'"
}

func (p *valueParser) isOp(ops string) bool {
	return p.tok.kind == tokOp && strings.Contains(ops, p.tok.text)
}

// expr parses operands joined by | & ^, which PHP gives equal precedence,
// left to right.
func (p *valueParser) expr() string {
	v := p.unary()
	for p.sc.err == "" && p.isOp("|&^") {
		op := p.tok.text
		p.advance()
		p.skipBlank()
		r := p.unary()
		a, b := atoi32(v), atoi32(r)
		switch op {
		case "|":
			v = strconv.Itoa(int(a | b))
		case "&":
			v = strconv.Itoa(int(a & b))
		case "^":
			v = strconv.Itoa(int(a ^ b))
		}
	}
	return v
}

func (p *valueParser) skipBlank() {
	if p.tok.kind == tokBlank {
		p.advance()
	}
}

func (p *valueParser) unary() string {
	p.skipBlank()
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		p.sc.fail("a value nested too deeply")
		return ""
	}
	switch {
	case p.isOp("~"):
		p.advance()
		return strconv.Itoa(int(^atoi32(p.unary())))
	case p.isOp("!"):
		p.advance()
		if atoi32(p.unary()) == 0 {
			return "1"
		}
		return "0"
	case p.isOp("("):
		p.advance()
		p.skipBlank()
		v := p.expr()
		if !p.isOp(")") {
			p.sc.fail("unexpected " + p.describe() + ", expecting ')'")
			return v
		}
		p.advance()
		p.skipBlank()
		return v
	case p.tok.kind == tokPart:
		return p.list()
	}
	p.sc.fail("unexpected " + p.describe() + " in a value")
	return ""
}

// list joins consecutive text pieces. Blanks between pieces are kept,
// except next to a double-quoted piece, where the scanner swallows them.
func (p *valueParser) list() string {
	var b strings.Builder
	pendingBlank := ""
	lastDQ := false
	for p.sc.err == "" {
		switch p.tok.kind {
		case tokPart:
			if !p.tok.dq && !lastDQ {
				b.WriteString(pendingBlank)
			}
			pendingBlank = ""
			b.WriteString(p.tok.text)
			lastDQ = p.tok.dq
			p.advance()
			continue
		case tokBlank:
			pendingBlank = p.tok.text
			p.advance()
			continue
		}
		break
	}
	// Blanks before an operator or ')' stay part of the operand, as in
	// PHP ("( 1 )" is "1 ").
	if !lastDQ {
		b.WriteString(pendingBlank)
	}
	return b.String()
}

// atoi32 converts like C's atoi, which PHP's INI parser uses for operands:
// leading blanks, a sign, then digits up to the first other character.
func atoi32(s string) int32 {
	n := atoi(s)
	return int32(n)
}

// atoi is C's atoi on a 64-bit long, saturating instead of overflowing.
func atoi(s string) int64 {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\v' || s[i] == '\f') {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	var n int64
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		if n > (1<<62)/10 {
			n = 1 << 62
			continue
		}
		n = n*10 + int64(s[i]-'0')
	}
	if neg {
		return -n
	}
	return n
}
