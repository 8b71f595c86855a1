package hostprobe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Responder is a socket that answered the FastCGI probe.
type Responder struct {
	Addr fcgi.Addr
	// Latency is the round trip of the probe that got the answer, from the
	// start of the connection to the answer.
	Latency time.Duration
	// Values is the GET_VALUES_RESULT; it may be empty: php-fpm 8.2 sends
	// only FCGI_MPXS_CONNS=0, and a server that was recognised by a
	// fall-back probe sent none.
	Values map[string]string
	// Owner and Group name the owner of a unix socket file (numeric ids
	// when the names are unknown), and Mode holds its permission bits.
	// They are empty for tcp.
	Owner, Group string
	Mode         fs.FileMode
}

// Defaults of Options.
const (
	DefaultTimeout     = 300 * time.Millisecond
	DefaultConcurrency = 16
)

// Options tunes FindFastCGI and Probe. The zero value uses the defaults.
type Options struct {
	// Timeout bounds each probe, connecting included; 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// Concurrency is the number of probes in flight; 0 means
	// DefaultConcurrency.
	Concurrency int
}

// ErrNoAnswer is wrapped by the error of a probe that got no answer in time.
var ErrNoAnswer = errors.New("no answer")

// NotFastCGIError reports a peer that answered with something other than
// the FastCGI records asked for. When the bytes were not FastCGI at all,
// errors.As finds the *fcgi.VersionError inside, whose LooksLikeHTTP tells an
// HTTP server.
type NotFastCGIError struct {
	Err error
}

func (e *NotFastCGIError) Error() string { return "not a FastCGI responder: " + e.Err.Error() }
func (e *NotFastCGIError) Unwrap() error { return e.Err }

// FindFastCGI probes the candidates with the default Options; see
// Options.FindFastCGI.
func FindFastCGI(ctx context.Context, candidates []fcgi.Addr, exclude ...fcgi.Addr) []Responder {
	return Options{}.FindFastCGI(ctx, candidates, exclude...)
}

// FindFastCGI probes each candidate concurrently (at most o.Concurrency at a
// time; see the package documentation for the probe) and returns those that
// answered with a well-formed FastCGI record, in the order of candidates.
// Duplicates are probed once. Candidates that match an address of exclude are
// skipped: the same address, the same unix socket file under another path,
// or the same port on a loopback address when the excluded host is a wildcard
// (0.0.0.0 matches 127/8; ::, an empty host and localhost match any
// loopback). fcgiscope excludes its own listener, which answers GET_VALUES
// too.
//
// Every connection is closed and every goroutine has ended when it returns.
// When ctx ends it returns at once with the responders found so far.
func (o Options) FindFastCGI(ctx context.Context, candidates []fcgi.Addr, exclude ...fcgi.Addr) []Responder {
	todo := make([]fcgi.Addr, 0, len(candidates))
	seen := make(map[fcgi.Addr]bool, len(candidates))
	for _, a := range candidates {
		if seen[a] || excluded(a, exclude) {
			continue
		}
		seen[a] = true
		todo = append(todo, a)
	}

	found := make([]*Responder, len(todo))
	sem := make(chan struct{}, o.concurrency())
	var wg sync.WaitGroup
launch:
	for i, a := range todo {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if r, err := o.Probe(ctx, a); err == nil {
				found[i] = &r
			}
		})
	}
	wg.Wait()

	var out []Responder
	for _, r := range found {
		if r != nil {
			out = append(out, *r)
		}
	}
	return out
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return DefaultTimeout
}

func (o Options) concurrency() int {
	if o.Concurrency > 0 {
		return o.Concurrency
	}
	return DefaultConcurrency
}

// Probe asks the one address a whether a FastCGI responder listens there,
// within o.Timeout. The error tells why not: an *outcome.DialError
// (ECONNREFUSED, ENOENT, EACCES), ErrNoAnswer, or a *NotFastCGIError;
// Trace turns it into the words of a request that failed the same way.
func (o Options) Probe(ctx context.Context, a fcgi.Addr) (Responder, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout())
	defer cancel()
	values, latency, err := ask(ctx, a, true)
	if errors.Is(err, errClosedSilently) {
		values, latency, err = ask(ctx, a, false)
	}
	if err != nil {
		return Responder{}, fmt.Errorf("hostprobe: probing %s: %w", a, err)
	}
	r := Responder{Addr: a, Latency: latency, Values: values}
	if a.Network == "unix" {
		r.Owner, r.Group, r.Mode = socketOwner(a.Address)
	}
	return r, nil
}

// probeID is the request id of the fall-back request. It is 10, a newline
// byte, so that the request holds a line end: a server that reads lines, as
// most HTTP servers do, then answers it ("HTTP/1.1 400 Bad Request") instead
// of waiting, and the probe can tell that it speaks HTTP.
const probeID = '\n'

// probeNames are the variables GET_VALUES asks for: FCGI_MPXS_CONNS only,
// the one variable php-fpm knows (its fcgi_init registers no other).
// FCGI_MAX_CONNS and FCGI_MAX_REQS would be unknown names to php-fpm of every
// version, and some versions loop on GET_VALUES: bug #66479 (fixed in PHP
// 5.5.21 and 5.6.5) and a PHP 7-era main/fastcgi.c whose loop skips an
// unknown name with a bare continue, spinning the worker forever. A known
// name ends those loops. php-fpm 8.2 answers FCGI_MPXS_CONNS alone anyway.
var probeNames = []string{fcgi.ValueMPXSConns}

// probeParams is the fall-back RESPONDER request. Its SCRIPT_FILENAME cannot
// exist, so php-fpm runs nothing and answers 404 "File not found." with
// "Primary script unknown" on STDERR; the .php suffix passes php-fpm's
// security.limit_extensions, which would otherwise log a warning.
var probeParams = []fcgi.Pair{
	{Name: "GATEWAY_INTERFACE", Value: "CGI/1.1"},
	{Name: "SERVER_SOFTWARE", Value: "fcgiscope-scan"},
	{Name: "SERVER_PROTOCOL", Value: "HTTP/1.1"},
	{Name: "REQUEST_METHOD", Value: "GET"},
	{Name: "REQUEST_URI", Value: "/fcgiscope-probe.php"},
	{Name: "SCRIPT_NAME", Value: "/fcgiscope-probe.php"},
	{Name: "SCRIPT_FILENAME", Value: "/nonexistent/fcgiscope-probe/fcgiscope-probe.php"},
	{Name: "QUERY_STRING", Value: ""},
	{Name: "CONTENT_LENGTH", Value: "0"},
}

// errClosedSilently means the peer ended the connection without sending a
// byte, which asks for the fall-back request on a new connection.
var errClosedSilently = errors.New("connection closed without an answer")

// ask connects to a and sends GET_VALUES (getValues) or the fall-back
// request, and checks the first record of the answer. After GET_VALUES, half
// the time left with no answer sends the fall-back request on the same
// connection. The connection is closed before it returns.
func ask(ctx context.Context, a fcgi.Addr, getValues bool) (map[string]string, time.Duration, error) {
	start := time.Now()
	deadline, _ := ctx.Deadline() // Probe always sets one.
	var d net.Dialer
	conn, err := d.DialContext(ctx, a.Network, a.Address)
	if err != nil {
		return nil, 0, &outcome.DialError{Addr: a, Err: withContext(ctx, err)}
	}
	defer conn.Close()
	// The deadline covers the timeout; closing covers a cancelled ctx.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetDeadline(deadline)

	w := fcgi.NewWriter(conn)
	if getValues {
		var body []byte
		for _, n := range probeNames {
			body = fcgi.AppendPair(body, n, "")
		}
		w.WriteRecord(fcgi.TypeGetValues, 0, body)
	} else {
		writeProbeRequest(w)
	}
	if err := w.Flush(); err != nil {
		if peerClosed(err) && ctx.Err() == nil {
			return nil, 0, errClosedSilently
		}
		return nil, 0, withContext(ctx, err)
	}

	// Wait for the first byte, so that a silent peer can be sent the
	// request on the same connection without losing part of a record.
	var first [1]byte
	if getValues {
		conn.SetReadDeadline(time.Now().Add(time.Until(deadline) / 2))
	}
	_, err = io.ReadFull(conn, first[:])
	if getValues && isTimeout(err) && ctx.Err() == nil {
		writeProbeRequest(w)
		if err := w.Flush(); err != nil {
			return nil, 0, withContext(ctx, err)
		}
		conn.SetReadDeadline(deadline)
		_, err = io.ReadFull(conn, first[:])
	}
	if err != nil {
		if peerClosed(err) && ctx.Err() == nil {
			if getValues {
				return nil, 0, errClosedSilently
			}
			return nil, 0, fmt.Errorf("%w: %w", ErrNoAnswer, outcome.ErrNoEndRequest)
		}
		return nil, 0, withContext(ctx, err)
	}
	conn.SetReadDeadline(deadline) // for the rest of the record

	r := fcgi.NewReader(io.MultiReader(bytes.NewReader(first[:]), conn))
	h, err := r.Next()
	if err != nil {
		var ve *fcgi.VersionError
		if errors.As(err, &ve) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, 0, &NotFastCGIError{Err: err}
		}
		return nil, 0, withContext(ctx, err)
	}
	latency := time.Since(start)
	values, err := checkAnswer(h, r.Content())
	if err != nil {
		return nil, 0, &NotFastCGIError{Err: err}
	}
	return values, latency, nil
}

func writeProbeRequest(w *fcgi.Writer) {
	var params []byte
	for _, p := range probeParams {
		params = fcgi.AppendPair(params, p.Name, p.Value)
	}
	w.WriteBeginRequest(probeID, fcgi.BeginRequest{Role: fcgi.RoleResponder})
	w.WriteStream(fcgi.TypeParams, probeID, params)
	w.EndStream(fcgi.TypeParams, probeID)
	w.EndStream(fcgi.TypeStdin, probeID)
}

// checkAnswer accepts the first record of an answer when it is what a
// FastCGI application sends to the probe, and returns the values it holds.
func checkAnswer(h fcgi.Header, content []byte) (map[string]string, error) {
	values := make(map[string]string)
	switch {
	case h.RequestID == 0 && h.Type == fcgi.TypeGetValuesResult:
		err := fcgi.ForEachPair(content, func(name, value []byte) bool {
			values[string(name)] = string(value)
			return true
		})
		if err != nil {
			return nil, err
		}
		return values, nil
	case h.RequestID == 0 && h.Type == fcgi.TypeUnknownType:
		if len(content) != 8 || fcgi.RecordType(content[0]) != fcgi.TypeGetValues {
			return nil, fmt.Errorf("UNKNOWN_TYPE record with body %q", content)
		}
		return values, nil
	case h.RequestID == probeID && (h.Type == fcgi.TypeStdout || h.Type == fcgi.TypeStderr):
		return values, nil
	case h.RequestID == probeID && h.Type == fcgi.TypeEndRequest:
		if _, err := fcgi.ParseEndRequest(content); err != nil {
			return nil, err
		}
		return values, nil
	}
	return nil, fmt.Errorf("unexpected %s record for request %d", h.Type, h.RequestID)
}

// peerClosed reports whether err means that the peer ended the connection.
func peerClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// withContext explains an error that the end of ctx caused: the timeout is
// ErrNoAnswer, a cancellation is ctx's error.
func withContext(ctx context.Context, err error) error {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || (ctx.Err() == nil && isTimeout(err)):
		return fmt.Errorf("%w in time: %w", ErrNoAnswer, err)
	case ctx.Err() != nil:
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

// Trace describes a failed probe of a, begun at start, as the Trace of a
// request that failed the same way, so that the classifier names the cause a
// request sent there would get: a dial failure stays one, a peer that closed
// without an answer is a worker gone, silence is a read timeout, and an
// answer in something else than FastCGI is what the answer was.
func Trace(a fcgi.Addr, err error, start time.Time, timeout time.Duration) *outcome.Trace {
	t := &outcome.Trace{Upstream: a, Method: "GET", Accepted: start, ParamsDone: start, DialStart: start, End: time.Now()}
	var de *outcome.DialError
	var nf *NotFastCGIError
	var ve *fcgi.VersionError
	switch {
	case errors.As(err, &de):
		t.Err = de
		return t
	case errors.Is(err, outcome.ErrNoEndRequest):
		t.Err = err
	case errors.Is(err, ErrNoAnswer):
		t.Err = &outcome.ReadTimeoutError{Timeout: timeout}
	case errors.As(err, &ve):
		t.Err = ve
	case errors.As(err, &nf):
		t.Err = &outcome.ProtocolError{Upstream: true, Reason: nf.Err.Error()}
	default:
		t.Err = err
	}
	t.DialEnd, t.StdinDone = t.End, t.End
	return t
}

// socketOwner returns the owner, group and permission bits of the file at
// path, following symbolic links; names fall back to numeric ids.
func socketOwner(path string) (owner, group string, mode fs.FileMode) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", 0
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", "", fi.Mode().Perm()
	}
	owner = strconv.FormatUint(uint64(st.Uid), 10)
	if u, err := user.LookupId(owner); err == nil {
		owner = u.Username
	}
	group = strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return owner, group, fi.Mode().Perm()
}

// excluded reports whether candidate a is one of the excluded endpoints.
func excluded(a fcgi.Addr, exclude []fcgi.Addr) bool {
	for _, ex := range exclude {
		if sameEndpoint(a, ex) {
			return true
		}
	}
	return false
}

// sameEndpoint reports whether dialling candidate a reaches the listener
// ex names; see Options.FindFastCGI.
func sameEndpoint(a, ex fcgi.Addr) bool {
	if a == ex {
		return true
	}
	if a.Network != ex.Network {
		return false
	}
	if a.Network == "unix" {
		if filepath.Clean(a.Address) == filepath.Clean(ex.Address) {
			return true
		}
		afi, err1 := os.Stat(a.Address)
		efi, err2 := os.Stat(ex.Address)
		return err1 == nil && err2 == nil && os.SameFile(afi, efi)
	}
	ahost, aport, ok1 := splitTCP(a)
	ehost, eport, ok2 := splitTCP(ex)
	if !ok1 || !ok2 || aport != eport {
		return false
	}
	aip, err := netip.ParseAddr(ahost)
	if err != nil {
		return ahost == ehost
	}
	aip = aip.Unmap()
	if ehost == "" || ehost == "localhost" {
		return aip.IsLoopback()
	}
	eip, err := netip.ParseAddr(ehost)
	if err != nil {
		return false
	}
	eip = eip.Unmap()
	switch {
	case eip == netip.IPv4Unspecified():
		return aip.Is4() && aip.IsLoopback()
	case eip == netip.IPv6Unspecified():
		return aip.IsLoopback()
	}
	return aip == eip
}
