package fpm

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"time"
)

// ParseStatus parses php-fpm's JSON status page, with or without "full".
// b is the body; a whole CGI response (headers, blank line, body) is
// accepted too.
//
// php-fpm 8.2.36 escapes its strings, writing every '/' as "\/", and such a
// document is read with encoding/json. Versions before the fix of PHP bug
// #64539 (php-src #11050, 2023) wrote the request URI, and some also the
// script and user, into the JSON unescaped, so that a URI with a '"' or a
// '\' broke the document or, worse, read as an escape that is not there. A
// document with a bare '/' comes from such a version, and is read by the
// tolerant scanner of status_tolerant.go instead; so is one that
// encoding/json refuses.
func ParseStatus(b []byte) (*Status, error) {
	b = statusBody(b)
	root, err := decodeStatus(b)
	if err != nil {
		return nil, err
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

// decodeStatus reads the document into a tree of values: with
// encoding/json when php-fpm escaped it, else with the tolerant scanner.
func decodeStatus(b []byte) (jsonValue, error) {
	if slashesEscaped(b) {
		var doc any
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		if err := d.Decode(&doc); err == nil && !d.More() {
			if v, ok := fromJSON(doc, 0); ok && v.kind == jsObject {
				return v, nil
			}
		}
	}
	return scanStatus(b)
}

// slashesEscaped reports whether every '/' in b is escaped, as an escaping
// php-fpm writes them; a document without any passes too, and then holds
// no path that the two readers could read differently.
func slashesEscaped(b []byte) bool {
	for i := bytes.IndexByte(b, '/'); i >= 0; {
		if i == 0 || b[i-1] != '\\' {
			return false
		}
		j := bytes.IndexByte(b[i+1:], '/')
		if j < 0 {
			break
		}
		i += 1 + j
	}
	return true
}

// fromJSON turns what encoding/json decoded into the tree the fields are
// read from, refusing nesting deeper than php-fpm's document has.
func fromJSON(x any, depth int) (jsonValue, bool) {
	if depth > maxJSONDepth {
		return jsonValue{}, false
	}
	switch x := x.(type) {
	case string:
		return jsonValue{kind: jsString, s: x}, true
	case json.Number:
		return jsonValue{kind: jsNumber, s: string(x)}, true
	case bool:
		return jsonValue{kind: jsLiteral, s: strconv.FormatBool(x)}, true
	case nil:
		return jsonValue{kind: jsLiteral, s: "null"}, true
	case []any:
		v := jsonValue{kind: jsArray}
		for _, e := range x {
			ev, ok := fromJSON(e, depth+1)
			if !ok {
				return jsonValue{}, false
			}
			v.arr = append(v.arr, ev)
		}
		return v, true
	case map[string]any:
		v := jsonValue{kind: jsObject}
		for _, k := range slices.Sorted(maps.Keys(x)) {
			ev, ok := fromJSON(x[k], depth+1)
			if !ok {
				return jsonValue{}, false
			}
			v.obj = append(v.obj, jsonField{key: k, val: ev})
		}
		return v, true
	}
	return jsonValue{}, false
}

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
