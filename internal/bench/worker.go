package bench

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Error causes, the keys of Result.Errors. A dial error is CauseDialPrefix
// followed by the errno's name, as in "dial:ECONNREFUSED", or by "timeout".
const (
	CauseDialPrefix = "dial:"
	// CauseClosed: the connection ended (EOF, reset, broken pipe) before
	// END_REQUEST.
	CauseClosed = "closed_before_end_request"
	// CauseProtocol: malformed FastCGI, records of another request, no
	// STDOUT, or CGI headers that never end.
	CauseProtocol = "protocol_error"
	// CauseTimeout: no END_REQUEST within Config.Timeout.
	CauseTimeout = "timeout"
	// CauseRejected: END_REQUEST with a protocol status other than
	// REQUEST_COMPLETE (OVERLOADED, CANT_MPX_CONN, UNKNOWN_ROLE).
	CauseRejected = "rejected"
	// CauseBadStatus: a CGI status other than Config.ExpectStatus.
	CauseBadStatus = "bad_status"
	// CauseBadBody: a body that does not match Config.ExpectBodySHA256 or
	// Config.ExpectBodyPrefix.
	CauseBadBody = "bad_body"
)

// cause is the outcome of one request.
type cause uint8

const (
	causeOK cause = iota
	causeDial
	causeClosed
	causeProtocol
	causeTimeout
	causeRejected
	causeBadStatus
	causeBadBody
	// causeInterrupted: the run stopped while the request was in flight;
	// it is neither a success nor an error.
	causeInterrupted
	// causeNotSent: the run stopped before the request was sent.
	causeNotSent
)

var causeNames = [...]string{
	causeClosed:    CauseClosed,
	causeProtocol:  CauseProtocol,
	causeTimeout:   CauseTimeout,
	causeRejected:  CauseRejected,
	causeBadStatus: CauseBadStatus,
	causeBadBody:   CauseBadBody,
}

const (
	// maxCGIHeader is the longest CGI header block accepted.
	maxCGIHeader = 64 << 10
	// maxSyncWrite is the largest request written before the response is
	// read; the socket buffer takes it whole. Larger requests are written
	// by a helper goroutine while the response is read, so that an
	// application answering before it reads the body cannot deadlock.
	maxSyncWrite = 64 << 10
	// requestID is the id of every request.
	requestID = 1
	// maxStderrSample is how much FastCGI stderr is kept as an example.
	maxStderrSample = 300
)

// longAgo is a deadline in the past, to cut off blocked I/O.
var longAgo = time.Unix(1, 0)

// worker sends requests one at a time over its own connection. Everything a
// request needs is allocated once, in newWorker.
type worker struct {
	r        *runner
	cfg      *Config
	req      []byte // the encoded request
	network  string
	address  string
	dialer   net.Dialer
	keepConn bool
	timeout  time.Duration

	// mu orders interrupt against the worker's own deadline updates and
	// connection changes.
	mu      sync.Mutex
	conn    net.Conn // written under mu; read freely by the worker
	stopped atomic.Bool

	rd *fcgi.Reader

	// A helper goroutine writes requests larger than maxSyncWrite.
	sendConn chan net.Conn
	sendErr  chan error

	// Validation.
	expectStatus int
	hash         hash.Hash // nil without an expected SHA-256
	wantSum      [32]byte
	sum          [32]byte
	prefix       []byte

	// The response being read.
	dialed        bool
	head          cgi.Scanner
	stdoutBytes   int64
	status        int
	bodyLen       int64
	prefixMatched int
	prefixBad     bool
	stderr        bool
	bytesIn       int64
	bytesOut      int64

	stats workerStats
}

func newWorker(r *runner, req []byte) *worker {
	cfg := &r.cfg
	w := &worker{
		r:            r,
		cfg:          cfg,
		req:          bytes.Clone(req),
		network:      cfg.Upstream.Network,
		address:      cfg.Upstream.Address,
		dialer:       net.Dialer{Timeout: cfg.DialTimeout},
		keepConn:     cfg.KeepConn,
		timeout:      cfg.Timeout,
		rd:           fcgi.NewReader(nil),
		expectStatus: cfg.ExpectStatus,
		stats:        newWorkerStats(),
		head:         cgi.Scanner{Limit: maxCGIHeader},
	}
	if cfg.ExpectBodySHA256 != "" {
		w.wantSum, _ = parseSHA256(cfg.ExpectBodySHA256) // checked by withDefaults
		w.hash = sha256.New()
	}
	if cfg.ExpectBodyPrefix != "" {
		w.prefix = []byte(cfg.ExpectBodyPrefix)
	}
	return w
}

// loop sends requests until the run stops or its requests are all claimed.
func (w *worker) loop() {
	defer w.finish()
	for {
		phase := w.r.phase.Load()
		if phase == phaseDone {
			return
		}
		measured := phase == phaseMeasure
		if measured && w.r.limit > 0 && w.r.tickets.Add(1) > w.r.limit {
			return
		}
		start := time.Now()
		c, err := w.roundTrip(start)
		elapsed := time.Since(start)
		if w.dialed {
			if measured {
				w.stats.connections++
			} else {
				w.stats.warmupConnections++
			}
		}
		if c == causeNotSent {
			return
		}
		if c == causeInterrupted || w.stopped.Load() {
			// Warm-up requests too: one still in flight at the end
			// has waited the whole run, which is worth reporting.
			w.stats.unfinished++
			return
		}
		if measured {
			w.stats.record(w, c, err, elapsed)
		}
	}
}

// finish closes the connection and stops the helper goroutine.
func (w *worker) finish() {
	w.closeConn()
	if w.sendConn != nil {
		close(w.sendConn)
		w.sendConn = nil
	}
}

// interrupt cuts off the request in flight, if any, and stops the worker.
func (w *worker) interrupt() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped.Store(true)
	if w.conn != nil {
		w.conn.SetDeadline(longAgo)
	}
}

func (w *worker) closeConn() {
	if w.conn == nil {
		return
	}
	w.mu.Lock()
	c := w.conn
	w.conn = nil
	w.mu.Unlock()
	c.Close()
}

// roundTrip sends one request and reads and validates its response. Its error
// explains a failure, but may be nil for a failure whose explanation is
// already known (see workerStats.wantSample).
func (w *worker) roundTrip(start time.Time) (cause, error) {
	w.resetResponse()
	if w.conn == nil {
		conn, err := w.dialer.DialContext(w.r.ctx, w.network, w.address)
		if err != nil {
			if w.r.ctx.Err() != nil {
				return causeNotSent, err
			}
			return causeDial, err
		}
		w.dialed = true
		w.rd.Reset(conn)
		w.mu.Lock()
		w.conn = conn
		w.mu.Unlock()
	}
	w.mu.Lock()
	if w.stopped.Load() {
		w.mu.Unlock()
		return causeNotSent, nil
	}
	w.conn.SetDeadline(start.Add(w.timeout))
	w.mu.Unlock()

	var c cause
	var err, werr error
	if len(w.req) <= maxSyncWrite {
		var n int
		n, werr = w.conn.Write(w.req)
		w.bytesOut = int64(n)
		// Read even when the write failed: an application may answer and
		// close without reading the whole request.
		c, err = w.readResponse()
	} else {
		c, err, werr = w.asyncRoundTrip()
	}
	if c == causeClosed && werr != nil && err != nil {
		err = fmt.Errorf("%w (sending the request: %w)", err, werr)
	}
	if c != causeOK && c != causeBadStatus && c != causeBadBody || !w.keepConn {
		// After a failure the connection's state is unknown.
		w.closeConn()
	}
	return c, err
}

// asyncRoundTrip has the helper goroutine write the request while the
// response is read.
func (w *worker) asyncRoundTrip() (c cause, err, werr error) {
	if w.sendConn == nil {
		w.sendConn = make(chan net.Conn)
		w.sendErr = make(chan error, 1)
		go func(in <-chan net.Conn, out chan<- error, req []byte) {
			for conn := range in {
				_, err := conn.Write(req)
				out <- err
			}
		}(w.sendConn, w.sendErr, w.req)
	}
	w.sendConn <- w.conn
	c, err = w.readResponse()
	select {
	case werr = <-w.sendErr:
	default:
		// The response ended before the whole request was sent, or the
		// helper has yet to report. Give it a moment; a write that stays
		// blocked means the application is not reading the rest, which
		// would be read as the next request, so the connection goes.
		w.mu.Lock()
		if !w.stopped.Load() && c != causeTimeout {
			w.conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		}
		w.mu.Unlock()
		if werr = <-w.sendErr; werr != nil {
			w.closeConn()
		}
	}
	if werr == nil {
		w.bytesOut = int64(len(w.req))
	}
	return c, err, werr
}

func (w *worker) resetResponse() {
	w.dialed = false
	w.head.Reset()
	w.stdoutBytes = 0
	w.status = 0
	w.bodyLen = 0
	w.prefixMatched = 0
	w.prefixBad = false
	w.stderr = false
	w.bytesIn = 0
	w.bytesOut = 0
	if w.hash != nil {
		w.hash.Reset()
	}
}

// readResponse reads records until END_REQUEST and validates the response.
func (w *worker) readResponse() (cause, error) {
	for {
		h, err := w.rd.Next()
		if err != nil {
			return classifyReadError(err)
		}
		w.bytesIn += int64(fcgi.HeaderLen) + int64(h.ContentLength) + int64(h.PaddingLength)
		if h.RequestID != requestID {
			return causeProtocol, fmt.Errorf("fcgi: %s record for request id %d, want %d", h.Type, h.RequestID, requestID)
		}
		switch h.Type {
		case fcgi.TypeStdout:
			if err := w.stdout(w.rd.Content()); err != nil {
				return causeProtocol, err
			}
		case fcgi.TypeStderr:
			if content := w.rd.Content(); len(content) > 0 {
				w.stderr = true
				w.stats.stderrSample(content)
			}
		case fcgi.TypeEndRequest:
			end, err := fcgi.ParseEndRequest(w.rd.Content())
			if err != nil {
				return causeProtocol, err
			}
			if end.ProtocolStatus != fcgi.StatusRequestComplete {
				return causeRejected, fmt.Errorf("END_REQUEST with protocol status %s (app status %d)", end.ProtocolStatus, end.AppStatus)
			}
			return w.validate()
		default:
			return causeProtocol, fmt.Errorf("fcgi: unexpected %s record in a response", h.Type)
		}
	}
}

func classifyReadError(err error) (cause, error) {
	var ve *fcgi.VersionError
	switch {
	case errors.As(err, &ve):
		return causeProtocol, err
	case isTimeout(err):
		return causeTimeout, fmt.Errorf("no END_REQUEST in time: %w", err)
	case errors.Is(err, io.EOF):
		return causeClosed, fmt.Errorf("fcgi: %w", outcome.ErrNoEndRequest)
	default:
		return causeClosed, fmt.Errorf("fcgi: %w: %w", outcome.ErrNoEndRequest, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// stdout takes the content of one STDOUT record: CGI headers, then body.
func (w *worker) stdout(p []byte) error {
	w.stdoutBytes += int64(len(p))
	if !w.head.Ended() {
		p = w.head.Feed(p)
		if !w.head.Ended() {
			if w.head.Done() {
				return fmt.Errorf("CGI headers longer than %d bytes", maxCGIHeader)
			}
			return nil
		}
		if bad := w.head.Head().BadStatus; bad != "" {
			// nginx answers 502 to it: "upstream sent invalid status".
			return fmt.Errorf("malformed CGI header %q", "Status: "+bad)
		}
		w.status = w.head.Head().Status
	}
	w.body(p)
	return nil
}

func (w *worker) body(p []byte) {
	w.bodyLen += int64(len(p))
	if w.hash != nil {
		w.hash.Write(p)
	}
	if w.prefix != nil && !w.prefixBad && w.prefixMatched < len(w.prefix) {
		n := min(len(p), len(w.prefix)-w.prefixMatched)
		if bytes.Equal(p[:n], w.prefix[w.prefixMatched:w.prefixMatched+n]) {
			w.prefixMatched += n
		} else {
			w.prefixBad = true
		}
	}
}

// validate checks a complete response.
func (w *worker) validate() (cause, error) {
	if !w.head.Ended() {
		if w.stdoutBytes == 0 {
			return causeProtocol, errors.New("END_REQUEST without any STDOUT")
		}
		return causeProtocol, fmt.Errorf("the CGI headers never end (%d bytes of STDOUT)", w.stdoutBytes)
	}
	if w.expectStatus != AnyStatus && w.status != w.expectStatus {
		if w.stats.wantSample(CauseBadStatus) {
			return causeBadStatus, fmt.Errorf("status %d, want %d", w.status, w.expectStatus)
		}
		return causeBadStatus, nil
	}
	if w.hash != nil {
		if sum := w.hash.Sum(w.sum[:0]); !bytes.Equal(sum, w.wantSum[:]) {
			if w.stats.wantSample(CauseBadBody) {
				return causeBadBody, fmt.Errorf("body of %d bytes has SHA-256 %x, want %x", w.bodyLen, sum, w.wantSum)
			}
			return causeBadBody, nil
		}
	}
	if w.prefix != nil && w.prefixMatched < len(w.prefix) {
		if w.stats.wantSample(CauseBadBody) {
			return causeBadBody, w.prefixError()
		}
		return causeBadBody, nil
	}
	return causeOK, nil
}

func (w *worker) prefixError() error {
	if w.prefixBad {
		return fmt.Errorf("body of %d bytes does not start with %q", w.bodyLen, w.prefix)
	}
	return fmt.Errorf("body of %d bytes is shorter than the expected prefix %q", w.bodyLen, w.prefix)
}

// workerStats is what one worker measured. Merged into a Result at the end.
type workerStats struct {
	hist              Histogram
	requests          int64
	successes         int64
	unfinished        int64
	connections       int64
	warmupConnections int64
	bytesIn           int64
	bytesOut          int64
	stderrResponses   int64
	errors            map[string]int64
	samples           map[string]string
	statuses          map[int]int64
	stderr            string
}

func newWorkerStats() workerStats {
	return workerStats{
		errors:   make(map[string]int64),
		samples:  make(map[string]string),
		statuses: make(map[int]int64),
	}
}

// record counts one measured request.
func (s *workerStats) record(w *worker, c cause, err error, d time.Duration) {
	s.requests++
	s.bytesIn += w.bytesIn
	s.bytesOut += w.bytesOut
	if w.head.Ended() {
		s.statuses[w.status]++
	}
	if w.stderr {
		s.stderrResponses++
	}
	if c == causeOK {
		s.successes++
		s.hist.Record(d)
		return
	}
	name := causeName(c, err)
	s.errors[name]++
	if err != nil && s.wantSample(name) {
		s.samples[name] = err.Error()
	}
}

// wantSample reports whether no example message is kept for cause yet.
func (s *workerStats) wantSample(cause string) bool {
	_, ok := s.samples[cause]
	return !ok
}

func (s *workerStats) stderrSample(p []byte) {
	if s.stderr == "" {
		s.stderr = string(p[:min(len(p), maxStderrSample)])
	}
}

func causeName(c cause, err error) string {
	if c == causeDial {
		return dialCause(err)
	}
	if int(c) < len(causeNames) && causeNames[c] != "" {
		return causeNames[c]
	}
	return fmt.Sprintf("cause(%d)", c)
}

// dialCauses names the errnos a connection attempt may fail with.
var dialCauses = map[syscall.Errno]string{
	syscall.ECONNREFUSED:  "dial:ECONNREFUSED",
	syscall.ENOENT:        "dial:ENOENT",
	syscall.EAGAIN:        "dial:EAGAIN",
	syscall.EACCES:        "dial:EACCES",
	syscall.EPERM:         "dial:EPERM",
	syscall.ECONNRESET:    "dial:ECONNRESET",
	syscall.ETIMEDOUT:     "dial:ETIMEDOUT",
	syscall.EADDRNOTAVAIL: "dial:EADDRNOTAVAIL",
	syscall.EADDRINUSE:    "dial:EADDRINUSE",
	syscall.EHOSTUNREACH:  "dial:EHOSTUNREACH",
	syscall.ENETUNREACH:   "dial:ENETUNREACH",
	syscall.ENOTSOCK:      "dial:ENOTSOCK",
	syscall.ENOTDIR:       "dial:ENOTDIR",
	syscall.EMFILE:        "dial:EMFILE",
	syscall.ENFILE:        "dial:ENFILE",
	syscall.ENOBUFS:       "dial:ENOBUFS",
	syscall.ENOMEM:        "dial:ENOMEM",
	syscall.EPROTOTYPE:    "dial:EPROTOTYPE",
}

// dialCause names a failed connection attempt by its errno.
func dialCause(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name, ok := dialCauses[errno]; ok {
			return name
		}
		return fmt.Sprintf("%serrno%d", CauseDialPrefix, int(errno))
	}
	if isTimeout(err) {
		return CauseDialPrefix + "timeout"
	}
	return CauseDialPrefix + "error"
}
