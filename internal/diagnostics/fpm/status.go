package fpm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Status is one poll of php-fpm's status page (pm.status_path) in its JSON
// form. The numbers are php-fpm's own: ActiveProcesses includes the worker
// that served the status request itself, and php-fpm measures the listen
// queue only on TCP sockets: on a unix socket the three listen queue
// fields are always 0.
type Status struct {
	Pool               string
	ProcessManager     string // static, dynamic or ondemand
	StartTime          time.Time
	AcceptedConn       int64
	ListenQueue        int
	MaxListenQueue     int
	ListenQueueLen     int
	IdleProcesses      int
	ActiveProcesses    int
	TotalProcesses     int
	MaxActiveProcesses int
	MaxChildrenReached int64
	SlowRequests       int64
	// Processes is the per-worker list, present when the page was asked
	// for with "full".
	Processes []Process
	// At is when the answer arrived; zero from ParseStatus.
	At time.Time
	// Latency is how long the answer took, from the start of the
	// connection; zero from ParseStatus.
	Latency time.Duration

	// path is the status path that was polled, so that the workers
	// serving the poll itself are not taken for busy ones.
	path string
}

// Process is one worker in the full status page.
type Process struct {
	PID int
	// State is php-fpm's request stage: "Idle", "Reading headers",
	// "Getting request information", "Running", "Ending" or "Finishing";
	// "(null)", with PID 0, for a slot whose worker is still starting.
	State     string
	StartTime time.Time
	// Requests is how many requests the worker has served.
	Requests int64
	// RequestDuration is how long the current request has run, or, for
	// an idle worker, how long its last request took.
	RequestDuration time.Duration
	// Method, RequestURI and Script describe the current (or, when idle,
	// the last) request; php-fpm writes "-" when it has none. RequestURI
	// is SCRIPT_NAME (with PATH_INFO) plus "?" and QUERY_STRING, not
	// REQUEST_URI, cut by php-fpm 8.2's scoreboard to 127 bytes of path
	// and 511 of query. Script is SCRIPT_FILENAME, "-" for the status
	// page itself.
	Method, RequestURI, Script string
	ContentLength              int64
	// User is the HTTP basic authentication user, "-" for none, cut to
	// 31 bytes.
	User string
	// LastCPU is the CPU use of the last request in percent and
	// LastMemory its peak memory in bytes; both are 0 while a request
	// runs.
	LastCPU    float64
	LastMemory int64
}

// Busy reports whether the worker is serving a request: it is in any
// state but "Idle" and "(null)", which php-fpm 8.2 shows, with pid 0 and a
// meaningless request duration, for a worker that is still starting.
func (p Process) Busy() bool {
	switch p.State {
	case "Idle", "(null)", "":
		return false
	}
	return true
}

// ParseStatus parses php-fpm's JSON status page, with or without "full".
// b is the body; a whole CGI response (headers, blank line, body) is
// accepted too.
//
// php-fpm 8.2.36 escapes its strings, but versions before the fix of PHP
// bug #64539 (php-src #11050, 2023) wrote the request URI, and some also
// the script and user, into the JSON unescaped, so that a URI with a '"'
// or a '\' broke the document. ParseStatus therefore reads the
// document with its own scanner: a string value that is not valid JSON, or
// that contains a bare '/' (which an escaping php-fpm always writes as
// "\/"), is taken literally up to the quote that is followed by the next
// php-fpm key or by the end of the object.
func ParseStatus(b []byte) (*Status, error) {
	b = statusBody(b)
	sc := &statusScanner{b: b}
	sc.skipSpace()
	if sc.pos >= len(b) {
		return nil, errors.New("fpm status: empty document")
	}
	if b[sc.pos] != '{' {
		return nil, fmt.Errorf("fpm status: not a JSON object (starts with %q)", jsonSnippet(b[sc.pos:]))
	}
	root, err := sc.object(0)
	if err != nil {
		return nil, err
	}
	sc.skipSpace()
	if sc.pos < len(b) {
		return nil, fmt.Errorf("fpm status: unexpected %q after the document", jsonSnippet(b[sc.pos:]))
	}
	st := &Status{}
	sawPool := false
	for _, f := range root.obj {
		v := f.val
		switch f.key {
		case "pool":
			st.Pool, sawPool = v.text(), true
		case "process manager":
			st.ProcessManager = v.text()
		case "start time":
			st.StartTime = v.unix()
		case "accepted conn":
			st.AcceptedConn = v.int64()
		case "listen queue":
			st.ListenQueue = int(v.int64())
		case "max listen queue":
			st.MaxListenQueue = int(v.int64())
		case "listen queue len":
			st.ListenQueueLen = int(v.int64())
		case "idle processes":
			st.IdleProcesses = int(v.int64())
		case "active processes":
			st.ActiveProcesses = int(v.int64())
		case "total processes":
			st.TotalProcesses = int(v.int64())
		case "max active processes":
			st.MaxActiveProcesses = int(v.int64())
		case "max children reached":
			st.MaxChildrenReached = v.int64()
		case "slow requests":
			st.SlowRequests = v.int64()
		case "processes":
			for _, e := range v.arr {
				if e.kind == jsObject {
					st.Processes = append(st.Processes, parseProcess(e))
				}
			}
		}
	}
	if !sawPool {
		return nil, errors.New(`fpm status: no "pool" field; not php-fpm's status page`)
	}
	return st, nil
}

func parseProcess(v jsonValue) Process {
	var p Process
	for _, f := range v.obj {
		v := f.val
		switch f.key {
		case "pid":
			p.PID = int(v.int64())
		case "state":
			p.State = v.text()
		case "start time":
			p.StartTime = v.unix()
		case "requests":
			p.Requests = v.int64()
		case "request duration":
			p.RequestDuration = time.Duration(v.int64()) * time.Microsecond
		case "request method":
			p.Method = v.text()
		case "request uri":
			p.RequestURI = v.text()
		case "content length":
			p.ContentLength = v.int64()
		case "user":
			p.User = v.text()
		case "script":
			p.Script = v.text()
		case "last request cpu":
			p.LastCPU = v.float64()
		case "last request memory":
			p.LastMemory = v.int64()
		}
	}
	return p
}

// statusBody strips CGI headers from a whole response.
func statusBody(b []byte) []byte {
	t := bytes.TrimLeft(b, " \t\r\n")
	if len(t) == 0 || t[0] == '{' {
		return b
	}
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return b[i+4:]
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return b[i+2:]
	}
	return b
}

func jsonSnippet(b []byte) string {
	if len(b) > 40 {
		b = b[:40]
	}
	return string(b)
}

// Busiest counts the busy workers and returns the one whose request has
// run longest. Workers serving the status page itself are not counted.
// Without a process list it counts ActiveProcesses, less the poll's own
// request when the Status comes from a poll.
func (s *Status) Busiest() (busy int, longest Process) {
	if s.Processes == nil {
		busy = s.ActiveProcesses
		if s.path != "" && busy > 0 {
			busy--
		}
		return busy, Process{}
	}
	for _, p := range s.Processes {
		if !p.Busy() || isStatusRequest(p, s.path) {
			continue
		}
		busy++
		if busy == 1 || p.RequestDuration > longest.RequestDuration {
			longest = p
		}
	}
	return busy, longest
}

// Summary describes the pool's load in one sentence for an explanation,
// such as "all 5 workers of pool www were busy; the longest-running request
// was GET /report.php for 41s (pid 123)". A worker serving the status page
// is not busy; when the poll had to wait for a free worker, the sentence
// says so, since that is the mark of a saturated pool.
func (s *Status) Summary() string {
	busy, longest := s.Busiest()
	total := s.TotalProcesses
	var b strings.Builder
	if total > 0 && busy >= total {
		fmt.Fprintf(&b, "all %d workers of pool %s were busy", total, s.Pool)
	} else {
		fmt.Fprintf(&b, "%d of %d workers of pool %s were busy", busy, total, s.Pool)
	}
	if busy > 0 && longest.PID != 0 {
		what := longest.RequestURI
		if what == "" || what == "-" {
			what = longest.Script
		}
		if longest.Method != "" && longest.Method != "-" {
			what = longest.Method + " " + what
		}
		fmt.Fprintf(&b, "; the longest-running request was %s for %s (pid %d)", what, roundForText(longest.RequestDuration), longest.PID)
	}
	if s.ListenQueue > 0 {
		fmt.Fprintf(&b, "; %d connections were waiting in the listen queue", s.ListenQueue)
	}
	if s.Latency >= slowStatus {
		fmt.Fprintf(&b, "; the status page itself waited %s for a free worker", roundForText(s.Latency))
	}
	return b.String()
}

// slowStatus is the status page latency taken for a wait for a free
// worker; an idle pool answers in well under a millisecond.
const slowStatus = 500 * time.Millisecond

func roundForText(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(time.Second)
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}

// isStatusRequest reports whether p is serving php-fpm's status page: its
// request is for path, or it runs no script and its query only names
// status page formats, as a monitoring poll does.
func isStatusRequest(p Process, path string) bool {
	uri, query, _ := strings.Cut(p.RequestURI, "?")
	if path != "" && uri == path {
		return true
	}
	if p.Script != "-" || query == "" {
		return false
	}
	for w := range strings.SplitSeq(query, "&") {
		switch w {
		case "json", "full", "html", "xml", "openmetrics":
		default:
			return false
		}
	}
	return true
}

// The tolerant JSON scanner.

type jsonKind uint8

const (
	jsString jsonKind = iota + 1
	jsNumber
	jsObject
	jsArray
	jsLiteral
)

type jsonValue struct {
	kind jsonKind
	s    string // string, number or literal text
	obj  []jsonField
	arr  []jsonValue
}

type jsonField struct {
	key string
	val jsonValue
}

func (v jsonValue) text() string {
	if v.kind == jsString || v.kind == jsNumber {
		return v.s
	}
	return ""
}

func (v jsonValue) int64() int64 {
	if v.kind != jsNumber && v.kind != jsString {
		return 0
	}
	if n, err := strconv.ParseInt(v.s, 10, 64); err == nil {
		return n
	}
	if f, err := strconv.ParseFloat(v.s, 64); err == nil && f >= -9e18 && f <= 9e18 {
		return int64(f)
	}
	return 0
}

func (v jsonValue) float64() float64 {
	if v.kind != jsNumber && v.kind != jsString {
		return 0
	}
	f, _ := strconv.ParseFloat(v.s, 64)
	return f
}

func (v jsonValue) unix() time.Time {
	n := v.int64()
	if n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0)
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

// The poller.

// FetchStatus asks the php-fpm pool at addr for its status page at path
// (pm.status_path) in JSON with the process list, and parses it. The
// context bounds the whole exchange.
//
// php-fpm serves the page only when SCRIPT_NAME is exactly the status path,
// REQUEST_METHOD is set (GET; HEAD gets no body) and SCRIPT_FILENAME is
// present (its value does not matter; without it php-fpm answers "Primary
// script unknown"). QUERY_STRING chooses the format: "json&full". php-fpm
// ignores REQUEST_URI here; it is sent for access logs.
func FetchStatus(ctx context.Context, addr fcgi.Addr, path string) (*Status, error) {
	return fetchStatus(ctx, addr, path, 0)
}

func fetchStatus(ctx context.Context, addr fcgi.Addr, path string, dialTimeout time.Duration) (*Status, error) {
	if path == "" || path[0] != '/' {
		return nil, fmt.Errorf("fpm status: path %q must start with /", path)
	}
	c := fcgi.Client{Addr: addr, DialTimeout: dialTimeout}
	req := &fcgi.Request{Params: StatusParams(path)}
	resp, err := c.Do(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("fpm status %s%s: %w", addr, path, err)
	}
	at := time.Now()
	head, body := splitCGI(resp.Stdout)
	code, ctype := 200, ""
	for line := range strings.SplitSeq(head, "\n") {
		name, value, ok := strings.Cut(strings.TrimRight(line, "\r"), ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "status":
			if n, err := strconv.Atoi(strings.Fields(value + " 0")[0]); err == nil {
				code = n
			}
		case "content-type":
			ctype = value
		}
	}
	if code != 200 || !strings.HasPrefix(ctype, "application/json") {
		why := strings.TrimSpace(string(resp.Stderr))
		if why == "" {
			why = strings.TrimSpace(jsonSnippet(body))
		}
		if code == 404 {
			return nil, fmt.Errorf("fpm status %s%s: php-fpm answered 404 (%s): the pool's pm.status_path is not %q, or it has none", addr, path, why, path)
		}
		return nil, fmt.Errorf("fpm status %s%s: php-fpm answered %d %q, not the JSON status page (%s)", addr, path, code, ctype, why)
	}
	st, err := ParseStatus(body)
	if err != nil {
		return nil, fmt.Errorf("fpm status %s%s: %w", addr, path, err)
	}
	st.At, st.Latency, st.path = at, resp.Total, path
	return st, nil
}

// StatusParams are the FastCGI parameters of a request for php-fpm's status
// page at path, in JSON with the process list.
func StatusParams(path string) []fcgi.Pair {
	const query = "json&full"
	return []fcgi.Pair{
		{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
		{Name: "SERVER_SOFTWARE", Value: "fcgiscope"},
		{Name: "REQUEST_METHOD", Value: "GET"},
		{Name: "SCRIPT_NAME", Value: path},
		{Name: "SCRIPT_FILENAME", Value: path},
		{Name: "REQUEST_URI", Value: path + "?" + query},
		{Name: "QUERY_STRING", Value: query},
		{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
	}
}

// splitCGI splits a CGI response into its header block and its body.
func splitCGI(b []byte) (head string, body []byte) {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return string(b[:i]), b[i+4:]
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return string(b[:i]), b[i+2:]
	}
	return string(b), nil
}

// Poller polls a pool's status page at an interval and keeps the latest
// answer.
//
// A php-fpm worker serves the status page, so a saturated pool answers only
// when a worker frees up, which may take as long as the longest request.
// The Poller keeps at most one poll in flight: a tick that finds the last
// poll still waiting is skipped (and counted) rather than adding another
// connection to the pool's listen queue. A poll that has no answer within
// Timeout counts as failed, but it keeps waiting, up to MaxWait, so that
// its late answer, taken when the pool got to it, is not lost and no
// abandoned request is left in the queue for every tick.
type Poller struct {
	Addr fcgi.Addr
	// Path is the pool's pm.status_path.
	Path string
	// Interval is the time between polls; 0 means 2s.
	Interval time.Duration
	// Timeout is how long a poll may take before it counts as failed,
	// and bounds connecting; 0 means 1s.
	Timeout time.Duration
	// MaxWait is how long a poll waits for a late answer before it gives
	// up and closes its connection; 0 means 30s. It is at least Timeout.
	MaxWait time.Duration

	mu       sync.Mutex
	latest   *Status
	inFlight bool
	stats    PollerStats
}

// PollerStats counts what a Poller did, for metrics.
type PollerStats struct {
	// Polls is the number of polls started.
	Polls int64
	// Answers is the number of status pages received, late ones
	// included.
	Answers int64
	// Failures is the number of polls that failed or got no answer
	// within Timeout; TimedOut counts the latter.
	Failures, TimedOut int64
	// Late is the number of answers that arrived after Timeout.
	Late int64
	// Skipped is the number of ticks skipped because the previous poll
	// was still waiting.
	Skipped int64
	// InFlight reports whether a poll is waiting now.
	InFlight bool
	// LastError is the error of the last failed poll, and LastErrorAt
	// when it happened.
	LastError   string
	LastErrorAt time.Time
	// LastLatency is how long the last answer took.
	LastLatency time.Duration
}

func (p *Poller) interval() time.Duration {
	if p.Interval > 0 {
		return p.Interval
	}
	return 2 * time.Second
}

func (p *Poller) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return time.Second
}

func (p *Poller) maxWait() time.Duration {
	w := p.MaxWait
	if w <= 0 {
		w = 30 * time.Second
	}
	return max(w, p.timeout())
}

// Run polls at once and then every Interval until ctx ends. It returns
// when ctx ends, after the poll in flight has been abandoned.
func (p *Poller) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(p.interval())
	defer tick.Stop()
	for {
		p.start(ctx, &wg)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// start starts a poll unless one is in flight.
func (p *Poller) start(ctx context.Context, wg *sync.WaitGroup) {
	p.mu.Lock()
	if p.inFlight {
		p.stats.Skipped++
		p.mu.Unlock()
		return
	}
	p.inFlight = true
	p.stats.Polls++
	p.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.poll(ctx)
	}()
}

func (p *Poller) poll(parent context.Context) {
	timeout := p.timeout()
	ctx, cancel := context.WithTimeout(parent, p.maxWait())
	defer cancel()
	// The timer marks the poll failed when the answer is slow; the poll
	// itself goes on waiting.
	var timedOut bool // guarded by p.mu
	fired := make(chan struct{})
	timer := time.AfterFunc(timeout, func() {
		defer close(fired)
		p.mu.Lock()
		defer p.mu.Unlock()
		timedOut = true
		p.stats.Failures++
		p.stats.TimedOut++
		p.stats.LastError = fmt.Sprintf("fpm status %s%s: no answer within %v; the pool may be saturated", p.Addr, p.Path, timeout)
		p.stats.LastErrorAt = time.Now()
	})
	st, err := fetchStatus(ctx, p.Addr, p.Path, timeout)
	if !timer.Stop() {
		<-fired
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inFlight = false
	switch {
	case err != nil && parent.Err() != nil:
		// Run is ending; an abandoned poll is no failure of the pool.
	case err != nil:
		if !timedOut {
			p.stats.Failures++
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("fpm status %s%s: no answer within %v, giving up", p.Addr, p.Path, p.maxWait())
		}
		p.stats.LastError = err.Error()
		p.stats.LastErrorAt = time.Now()
	default:
		p.stats.Answers++
		if timedOut {
			p.stats.Late++
		}
		p.stats.LastLatency = st.Latency
		p.latest = st
	}
}

// Latest returns the most recent status received and when it arrived; ok
// is false when none has arrived yet. The Status must not be modified.
func (p *Poller) Latest() (st *Status, at time.Time, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.latest == nil {
		return nil, time.Time{}, false
	}
	return p.latest, p.latest.At, true
}

// Stats returns the poller's counters.
func (p *Poller) Stats() PollerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.InFlight = p.inFlight
	return s
}

// Running returns the worker with the given pid in the latest status, and
// whether it is there.
func (p *Poller) Running(pid int) (Process, bool) {
	st, _, ok := p.Latest()
	if !ok || pid <= 0 {
		return Process{}, false
	}
	for _, pr := range st.Processes {
		if pr.PID == pid {
			return pr, true
		}
	}
	return Process{}, false
}
