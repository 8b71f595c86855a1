package fpm

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// The tolerant scanner, for the php-fpm versions that wrote their status
// page without escaping its strings (see ParseStatus).

// scanStatus reads the document with the tolerant scanner: a string value
// that is not valid JSON, or that contains a bare '/' (which an escaping
// php-fpm always writes as "\/"), is taken literally up to the quote that
// is followed by the next php-fpm key or by the end of the object.
func scanStatus(b []byte) (jsonValue, error) {
	sc := &statusScanner{b: b}
	sc.skipSpace()
	if sc.pos >= len(b) {
		return jsonValue{}, errors.New("fpm status: empty document")
	}
	if b[sc.pos] != '{' {
		return jsonValue{}, fmt.Errorf("fpm status: not a JSON object (starts with %q)", jsonSnippet(b[sc.pos:]))
	}
	root, err := sc.object(0)
	if err != nil {
		return jsonValue{}, err
	}
	sc.skipSpace()
	if sc.pos < len(b) {
		return jsonValue{}, fmt.Errorf("fpm status: unexpected %q after the document", jsonSnippet(b[sc.pos:]))
	}
	return root, nil
}

// statusKeys are the keys php-fpm writes, in the status object and in each
// process object.
var statusKeys = map[string]bool{
	"pool": true, "process manager": true, "start time": true, "start since": true,
	"accepted conn": true, "listen queue": true, "max listen queue": true,
	"listen queue len": true, "idle processes": true, "active processes": true,
	"total processes": true, "max active processes": true, "max children reached": true,
	"slow requests": true, "processes": true,
	"pid": true, "state": true, "requests": true, "request duration": true,
	"request method": true, "request uri": true, "content length": true, "user": true,
	"script": true, "last request cpu": true, "last request memory": true,
	// php-fpm 8.3 and later.
	"memory peak": true,
}

const (
	// maxJSONDepth bounds nesting; php-fpm's document has three levels.
	maxJSONDepth = 8
	// maxRawJSONString bounds how far an unescaped string is searched for
	// its end. php-fpm's scoreboard holds at most 128+512 bytes of URI.
	maxRawJSONString = 4096
)

type statusScanner struct {
	b   []byte
	pos int
}

func (sc *statusScanner) skipSpace() {
	for sc.pos < len(sc.b) {
		switch sc.b[sc.pos] {
		case ' ', '\t', '\r', '\n':
			sc.pos++
		default:
			return
		}
	}
}

func (sc *statusScanner) errorf(format string, args ...any) error {
	return fmt.Errorf("fpm status: offset %d: %s", sc.pos, fmt.Sprintf(format, args...))
}

func (sc *statusScanner) value(depth int, seen map[string]bool) (jsonValue, error) {
	sc.skipSpace()
	if sc.pos >= len(sc.b) {
		return jsonValue{}, sc.errorf("unexpected end of document")
	}
	switch c := sc.b[sc.pos]; {
	case c == '{':
		return sc.object(depth + 1)
	case c == '[':
		return sc.array(depth + 1)
	case c == '"':
		if seen != nil {
			return sc.tolerantString(seen)
		}
		s, err := sc.strictString()
		return jsonValue{kind: jsString, s: s}, err
	case c == '-' || c == '+' || c == '.' || ('0' <= c && c <= '9'):
		start := sc.pos
		for sc.pos < len(sc.b) && strings.IndexByte("+-.0123456789eE", sc.b[sc.pos]) >= 0 {
			sc.pos++
		}
		return jsonValue{kind: jsNumber, s: string(sc.b[start:sc.pos])}, nil
	case 'a' <= c && c <= 'z':
		start := sc.pos
		for sc.pos < len(sc.b) && 'a' <= sc.b[sc.pos] && sc.b[sc.pos] <= 'z' {
			sc.pos++
		}
		switch w := string(sc.b[start:sc.pos]); w {
		case "true", "false", "null":
			return jsonValue{kind: jsLiteral, s: w}, nil
		}
		sc.pos = start
	}
	return jsonValue{}, sc.errorf("unexpected %q", jsonSnippet(sc.b[sc.pos:]))
}

func (sc *statusScanner) object(depth int) (jsonValue, error) {
	if depth > maxJSONDepth {
		return jsonValue{}, sc.errorf("nested too deep")
	}
	sc.pos++ // '{'
	v := jsonValue{kind: jsObject}
	seen := make(map[string]bool)
	for {
		sc.skipSpace()
		if sc.pos >= len(sc.b) {
			return v, sc.errorf("unexpected end of document in an object")
		}
		if sc.b[sc.pos] == '}' && len(v.obj) == 0 {
			sc.pos++
			return v, nil
		}
		if sc.b[sc.pos] != '"' {
			return v, sc.errorf("want a key, have %q", jsonSnippet(sc.b[sc.pos:]))
		}
		key, err := sc.strictString()
		if err != nil {
			return v, err
		}
		sc.skipSpace()
		if sc.pos >= len(sc.b) || sc.b[sc.pos] != ':' {
			return v, sc.errorf("want ':' after key %q", key)
		}
		sc.pos++
		seen[key] = true
		val, err := sc.value(depth, seen)
		if err != nil {
			return v, err
		}
		v.obj = append(v.obj, jsonField{key: key, val: val})
		sc.skipSpace()
		if sc.pos >= len(sc.b) {
			return v, sc.errorf("unexpected end of document in an object")
		}
		switch sc.b[sc.pos] {
		case ',':
			sc.pos++
		case '}':
			sc.pos++
			return v, nil
		default:
			return v, sc.errorf("want ',' or '}' after the value of %q, have %q", key, jsonSnippet(sc.b[sc.pos:]))
		}
	}
}

func (sc *statusScanner) array(depth int) (jsonValue, error) {
	if depth > maxJSONDepth {
		return jsonValue{}, sc.errorf("nested too deep")
	}
	sc.pos++ // '['
	v := jsonValue{kind: jsArray}
	for {
		sc.skipSpace()
		if sc.pos >= len(sc.b) {
			return v, sc.errorf("unexpected end of document in an array")
		}
		if sc.b[sc.pos] == ']' && len(v.arr) == 0 {
			sc.pos++
			return v, nil
		}
		e, err := sc.value(depth, nil)
		if err != nil {
			return v, err
		}
		v.arr = append(v.arr, e)
		sc.skipSpace()
		if sc.pos >= len(sc.b) {
			return v, sc.errorf("unexpected end of document in an array")
		}
		switch sc.b[sc.pos] {
		case ',':
			sc.pos++
		case ']':
			sc.pos++
			return v, nil
		default:
			return v, sc.errorf("want ',' or ']' in an array, have %q", jsonSnippet(sc.b[sc.pos:]))
		}
	}
}

// strictString reads a JSON string at sc.pos, which is '"'.
func (sc *statusScanner) strictString() (string, error) {
	end, clean, _ := scanJSONString(sc.b, sc.pos+1)
	if end < 0 {
		return "", sc.errorf("unexpected end of document in a string")
	}
	if !clean {
		return "", sc.errorf("bad string")
	}
	s, ok := unescapeJSON(sc.b[sc.pos+1 : end])
	if !ok {
		return "", sc.errorf("bad string")
	}
	sc.pos = end + 1
	return s, nil
}

// tolerantString reads a string value at sc.pos, which is '"', of an
// object whose keys so far are seen.
func (sc *statusScanner) tolerantString(seen map[string]bool) (jsonValue, error) {
	start := sc.pos + 1
	end, clean, slash := scanJSONString(sc.b, start)
	if end >= 0 && clean && !slash && sc.continues(end, seen) != jsonNoEnd {
		if s, ok := unescapeJSON(sc.b[start:end]); ok {
			sc.pos = end + 1
			return jsonValue{kind: jsString, s: s}, nil
		}
	}
	// Written unescaped: the value ends at the first quote after which
	// the object goes on with a php-fpm key it does not have yet, or
	// ends; failing that, with any key it does not have yet.
	weak := -1
	limit := min(len(sc.b), start+maxRawJSONString)
	for q := start; q < limit; q++ {
		if sc.b[q] != '"' {
			continue
		}
		switch sc.continues(q, seen) {
		case jsonStrongEnd:
			sc.pos = q + 1
			return jsonValue{kind: jsString, s: rawJSONString(sc.b[start:q])}, nil
		case jsonWeakEnd:
			if weak < 0 {
				weak = q
			}
		}
	}
	if weak >= 0 {
		sc.pos = weak + 1
		return jsonValue{kind: jsString, s: rawJSONString(sc.b[start:weak])}, nil
	}
	return jsonValue{}, sc.errorf("unterminated string")
}

type jsonStringEnd uint8

const (
	jsonNoEnd jsonStringEnd = iota
	jsonWeakEnd
	jsonStrongEnd
)

// continues reports whether a string value may end at the quote at q: the
// object then goes on with a key it does not have yet, or ends.
func (sc *statusScanner) continues(q int, seen map[string]bool) jsonStringEnd {
	b := sc.b
	i := jsonSpaceAt(b, q+1)
	if i >= len(b) {
		return jsonNoEnd
	}
	switch b[i] {
	case '}':
		j := jsonSpaceAt(b, i+1)
		if j >= len(b) || b[j] == ',' || b[j] == ']' || b[j] == '}' {
			return jsonStrongEnd
		}
		return jsonWeakEnd
	case ',':
	default:
		return jsonNoEnd
	}
	i = jsonSpaceAt(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return jsonNoEnd
	}
	k := i + 1
	for k < len(b) && k-i <= 64 && b[k] != '"' {
		c := b[k]
		if !('a' <= c && c <= 'z' || c == ' ' || c == '_' || '0' <= c && c <= '9') {
			return jsonNoEnd
		}
		k++
	}
	if k >= len(b) || b[k] != '"' || k == i+1 {
		return jsonNoEnd
	}
	j := jsonSpaceAt(b, k+1)
	if j >= len(b) || b[j] != ':' {
		return jsonNoEnd
	}
	key := b[i+1 : k]
	if seen[string(key)] {
		return jsonNoEnd
	}
	if statusKeys[string(key)] {
		return jsonStrongEnd
	}
	return jsonWeakEnd
}

func jsonSpaceAt(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// scanJSONString finds the closing quote of a JSON string whose content
// starts at i. clean is false when the content has a control character or
// a bad escape; slash reports a bare '/', which php-fpm versions that
// escape their strings never write.
func scanJSONString(b []byte, i int) (end int, clean, slash bool) {
	clean = true
	for ; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i, clean, slash
		case c == '\\':
			if i+1 >= len(b) {
				return -1, false, slash
			}
			i++
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) || !isJSONHex4(b[i+1:i+5]) {
					clean = false
				} else {
					i += 4
				}
			default:
				clean = false
			}
		case c < 0x20:
			clean = false
		case c == '/':
			slash = true
		}
	}
	return -1, false, slash
}

func isJSONHex4(b []byte) bool {
	for _, c := range b[:4] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// unescapeJSON decodes the content of a JSON string.
func unescapeJSON(b []byte) (string, bool) {
	if bytes.IndexByte(b, '\\') < 0 {
		return rawJSONString(b), true
	}
	s, ok := unescapeJSONBytes(b)
	return rawJSONString(s), ok
}

func unescapeJSONBytes(b []byte) ([]byte, bool) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case '"', '\\', '/':
			out = append(out, b[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+4 >= len(b) || !isJSONHex4(b[i+1:i+5]) {
				return nil, false
			}
			r, _ := strconv.ParseUint(string(b[i+1:i+5]), 16, 16)
			i += 4
			ru := rune(r)
			if utf16.IsSurrogate(ru) && i+6 < len(b) && b[i+1] == '\\' && b[i+2] == 'u' && isJSONHex4(b[i+3:i+7]) {
				r2, _ := strconv.ParseUint(string(b[i+3:i+7]), 16, 16)
				if d := utf16.DecodeRune(ru, rune(r2)); d != utf8.RuneError {
					ru = d
					i += 6
				}
			}
			out = utf8.AppendRune(out, ru)
		default:
			return nil, false
		}
	}
	return out, true
}

// rawJSONString keeps the bytes of an unescaped value, replacing invalid UTF-8
// so that the value can be logged and encoded again.
func rawJSONString[T string | []byte](b T) string {
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
