// Package bench is a FastCGI load generator: it sends requests straight to
// a FastCGI application such as php-fpm from a number of concurrent workers,
// validates every response, and reports throughput, errors by cause and
// latency percentiles. `fcgiscope bench` is its command-line front end; Run
// is the same engine for programs and tests.
//
// The generator is meant to cost little next to what it measures: each
// worker encodes its request once and reuses it, reads responses through
// reused buffers and records latencies in its own Histogram, so that a
// request over a kept connection allocates nothing.
package bench

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
)

// Defaults of the Config fields left zero.
const (
	DefaultConcurrency = 16
	DefaultTimeout     = 10 * time.Second
	DefaultDialTimeout = 3 * time.Second
	DefaultMethod      = "GET"
	DefaultStatus      = 200
)

// AnyStatus as Config.ExpectStatus accepts every CGI status.
const AnyStatus = -1

// Config describes one load test. A run needs Upstream, Script and at least
// one of Requests and Duration; when both are set the run ends at whichever
// limit comes first.
type Config struct {
	// Upstream is the FastCGI application's address.
	Upstream fcgi.Addr
	// Script is sent as SCRIPT_FILENAME. A query string after "?" is sent
	// as QUERY_STRING: "/srv/big.php?mb=1".
	Script string

	// Concurrency is the number of workers, each with its own connection;
	// 0 means DefaultConcurrency.
	Concurrency int
	// Requests is the number of measured requests, shared by the workers:
	// exactly this many are sent after the warm-up. 0 means no limit.
	Requests int
	// Duration is the length of the measured period, after the warm-up.
	// Requests still in flight when it ends are cut off and counted as
	// Unfinished, not as errors. 0 means no limit.
	Duration time.Duration
	// Warmup is a period before the measured one whose requests are sent
	// but not counted.
	Warmup time.Duration

	// KeepConn sets FCGI_KEEP_CONN and sends every request of a worker
	// over one connection, reopened after an error. Otherwise each request
	// has its own connection, and the time to connect is part of its
	// latency.
	KeepConn bool
	// Method is REQUEST_METHOD; empty means DefaultMethod.
	Method string
	// BodySize is the size of the request body sent as STDIN, made of
	// Body's deterministic bytes.
	BodySize int
	// Params are added to the request's PARAMS after the defaults, replacing
	// a default of the same name (see RequestParams).
	Params []fcgi.Pair

	// ExpectStatus is the CGI status every response must have (a response
	// without a Status header has 200); 0 means DefaultStatus and AnyStatus
	// accepts all.
	ExpectStatus int
	// ExpectBodySHA256 is the hex SHA-256 every response body (after the
	// CGI headers) must have; empty means no check.
	ExpectBodySHA256 string
	// ExpectBodyPrefix is how every response body must start; empty means
	// no check.
	ExpectBodyPrefix string

	// Timeout bounds each request from sending it until END_REQUEST, and
	// any silence while connected; 0 means DefaultTimeout.
	Timeout time.Duration
	// DialTimeout bounds each connection attempt; 0 means
	// DefaultDialTimeout.
	DialTimeout time.Duration
}

// withDefaults returns cfg with zero fields set to their defaults and checks
// it.
func (cfg Config) withDefaults() (Config, error) {
	var problems []string
	if cfg.Upstream.IsZero() {
		problems = append(problems, "no upstream address")
	} else if cfg.Upstream.Network != "tcp" && cfg.Upstream.Network != "unix" {
		problems = append(problems, fmt.Sprintf("upstream network %q is neither tcp nor unix", cfg.Upstream.Network))
	}
	if cfg.Script == "" {
		problems = append(problems, "no script (SCRIPT_FILENAME)")
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Concurrency < 0 {
		problems = append(problems, fmt.Sprintf("concurrency %d is negative", cfg.Concurrency))
	}
	if cfg.Requests < 0 {
		problems = append(problems, fmt.Sprintf("request count %d is negative", cfg.Requests))
	}
	if cfg.Duration < 0 || cfg.Warmup < 0 || cfg.Timeout < 0 || cfg.DialTimeout < 0 {
		problems = append(problems, "durations must not be negative")
	}
	if cfg.Requests == 0 && cfg.Duration == 0 {
		problems = append(problems, "neither a request count nor a duration: the run would never end")
	}
	if cfg.BodySize < 0 {
		problems = append(problems, fmt.Sprintf("body size %d is negative", cfg.BodySize))
	}
	if cfg.Method == "" {
		cfg.Method = DefaultMethod
	}
	if cfg.ExpectStatus == 0 {
		cfg.ExpectStatus = DefaultStatus
	}
	if cfg.ExpectStatus != AnyStatus && (cfg.ExpectStatus < 100 || cfg.ExpectStatus > 999) {
		problems = append(problems, fmt.Sprintf("expected status %d is not a three-digit HTTP status", cfg.ExpectStatus))
	}
	if cfg.ExpectBodySHA256 != "" {
		if _, err := parseSHA256(cfg.ExpectBodySHA256); err != nil {
			problems = append(problems, err.Error())
		}
		if cfg.ExpectBodyPrefix != "" {
			problems = append(problems, "both an expected body SHA-256 and an expected body prefix; give one")
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	for _, p := range cfg.Params {
		if p.Name == "" {
			problems = append(problems, "a parameter has an empty name")
		}
	}
	if len(problems) > 0 {
		return cfg, errors.New("bench: " + strings.Join(problems, "; "))
	}
	return cfg, nil
}

func parseSHA256(s string) ([32]byte, error) {
	var sum [32]byte
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(sum) {
		return sum, fmt.Errorf("expected body SHA-256 %q is not 64 hex digits", s)
	}
	copy(sum[:], b)
	return sum, nil
}

// RequestParams returns the PARAMS every request of cfg carries, in order:
// what nginx's fastcgi.conf sends for a request of the script, then
// cfg.Params. A parameter of cfg.Params replaces the default of the same
// name; when QUERY_STRING is given but REQUEST_URI is not, REQUEST_URI
// follows it.
func (cfg Config) RequestParams() []fcgi.Pair {
	script, query, _ := strings.Cut(cfg.Script, "?")
	method := cfg.Method
	if method == "" {
		method = DefaultMethod
	}
	name := "/" + path.Base(script)
	contentType := ""
	if cfg.BodySize > 0 {
		contentType = "application/octet-stream"
	}
	uri := func(q string) string {
		if q == "" {
			return name
		}
		return name + "?" + q
	}
	defaults := [][2]string{
		{"SCRIPT_FILENAME", script},
		{"QUERY_STRING", query},
		{"REQUEST_METHOD", method},
		{"CONTENT_TYPE", contentType},
		{"CONTENT_LENGTH", strconv.Itoa(cfg.BodySize)},
		{"SCRIPT_NAME", name},
		{"REQUEST_URI", uri(query)},
		{"DOCUMENT_URI", name},
		{"DOCUMENT_ROOT", path.Dir(script)},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"REQUEST_SCHEME", "http"},
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "fcgiscope-bench"},
		{"REMOTE_ADDR", "127.0.0.1"},
		{"REMOTE_PORT", "40000"},
		{"SERVER_ADDR", "127.0.0.1"},
		{"SERVER_PORT", "80"},
		{"SERVER_NAME", "localhost"},
		{"REDIRECT_STATUS", "200"},
		{"HTTP_HOST", "localhost"},
		{"HTTP_USER_AGENT", "fcgiscope-bench"},
	}
	params := make([]fcgi.Pair, len(defaults), len(defaults)+len(cfg.Params))
	for i, d := range defaults {
		params[i] = fcgi.Pair{Name: d[0], Value: d[1]}
	}
	index := make(map[string]int, len(params))
	for i, p := range params {
		index[p.Name] = i
	}
	uriSet := false
	for _, p := range cfg.Params {
		if p.Name == "REQUEST_URI" {
			uriSet = true
		}
		if i, ok := index[p.Name]; ok {
			params[i].Value = p.Value
			continue
		}
		index[p.Name] = len(params)
		params = append(params, p)
	}
	if !uriSet {
		params[index["REQUEST_URI"]].Value = uri(params[index["QUERY_STRING"]].Value)
	}
	return params
}

// Body returns the request body of n bytes that a run with BodySize n sends:
// the 64 characters A-Z, a-z, 0-9, '-' and '_' over and over, so that its
// SHA-256 can be computed in advance.
func Body(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = bodyAlphabet[i%len(bodyAlphabet)]
	}
	return b
}

const bodyAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// encodeRequest returns the whole request of cfg as records: BEGIN_REQUEST,
// PARAMS, the empty PARAMS record, STDIN and the empty STDIN record, for
// request id 1.
func encodeRequest(cfg Config) []byte {
	const id = 1
	var flags uint8
	if cfg.KeepConn {
		flags = fcgi.FlagKeepConn
	}
	// BEGIN_REQUEST: role RESPONDER, flags, 5 reserved bytes.
	req := fcgi.AppendRecord(nil, fcgi.TypeBeginRequest, id, []byte{0, byte(fcgi.RoleResponder), flags, 0, 0, 0, 0, 0})
	var params []byte
	for _, p := range cfg.RequestParams() {
		params = fcgi.AppendPair(params, p.Name, p.Value)
	}
	req = appendStream(req, fcgi.TypeParams, id, params)
	req = appendStream(req, fcgi.TypeStdin, id, Body(cfg.BodySize))
	return req
}

// appendStream appends p as records of type t, then the empty record that
// ends the stream.
func appendStream(dst []byte, t fcgi.RecordType, id uint16, p []byte) []byte {
	for len(p) > 0 {
		n := min(len(p), fcgi.MaxWriteContent)
		dst = fcgi.AppendRecord(dst, t, id, p[:n])
		p = p[n:]
	}
	return fcgi.AppendRecord(dst, t, id, nil)
}
