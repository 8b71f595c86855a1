// Package proxy is the relay between a FastCGI client such as nginx and a
// FastCGI application such as php-fpm. It forwards every record, times each
// request, holds back the start of each response so that a failure can still
// be replaced by an explanation, and never lets a broken response look
// complete. It produces a Trace per request and leaves explaining failures to
// a Responder and recording them to an Observer.
package proxy

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/sync/semaphore"

	"github.com/fcgiscope/fcgiscope/internal/cgi"
	"github.com/fcgiscope/fcgiscope/internal/fcgi"
	"github.com/fcgiscope/fcgiscope/internal/outcome"
)

// Defaults applied to zero fields of Server.
const (
	DefaultConnectTimeout = 3 * time.Second
	DefaultMaxParamsBytes = 1 << 20
	DefaultStderrExcerpt  = 4 << 10
	// DefaultMaxHeaderBytes bounds the CGI headers of a response when
	// Server.MaxHeaderBytes is 0.
	DefaultMaxHeaderBytes = cgi.DefaultLimit
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// A Responder explains a failed request with the response sent to the web
// server in place of the upstream's. It is called when a request fails
// before any of the response was forwarded, on the request's response side:
// it may take its time (to gather evidence) without holding up the
// connection.
type Responder interface {
	Respond(t *outcome.Trace) cgi.Reply
}

// An Observer receives every finished request. Observe is called once per
// request, never on the goroutine that reads the web server's connection,
// may take its time, and must not keep t after it returns. Shutdown waits
// for the calls in progress.
type Observer interface {
	Observe(t *outcome.Trace)
}

// Server relays FastCGI connections to one upstream. Upstream must be set;
// every other field has a usable zero value. Fields must not change after
// Serve is called.
type Server struct {
	// Upstream is the FastCGI application, such as php-fpm.
	Upstream fcgi.Addr
	// ConnectTimeout bounds each connection attempt to the upstream;
	// 0 means DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// ReadTimeout, when positive, fails a request whose upstream sends
	// nothing for that long.
	ReadTimeout time.Duration
	// HoldBytes is how many response bytes are held back, after the CGI
	// headers are complete, before anything is forwarded, so that a worker
	// that dies early can still be answered for. 0 forwards at once.
	HoldBytes int
	// Tracer, when set, starts each request's span in a distributed
	// trace and passes it on to php-fpm as the parent of PHP's spans.
	Tracer Tracer
	// ReplayBodyBytes, when positive, keeps the body of a request that
	// goes wrong for replay (Trace.Body) when the whole body is at most
	// that many bytes. 0 keeps no body; the params of such a request are
	// always kept, up to maxReplayParams bytes.
	ReplayBodyBytes int
	// MaxConns, when positive, limits the requests in flight to the
	// upstream; the rest wait their turn, first come first served. Set it
	// to php-fpm's pm.max_children so that a burst waits here instead of
	// overflowing php-fpm's listen queue.
	MaxConns int
	// QueueTimeout bounds how long a request may wait, for a MaxConns slot
	// and for an upstream that refuses connections while it restarts:
	// connection attempts that fail before any byte was sent are retried
	// within it. 0 means no waiting and no retries. Patience, when set,
	// takes its place.
	QueueTimeout time.Duration
	// Patience, when set, says how long the web server waits for a
	// response (nginx's fastcgi_read_timeout), and the relay never fails
	// a request sooner: a request waits for a slot until the web server
	// has given up on it (then QueueTimeoutError.WebServerGaveUp is set),
	// while connection attempts to a restarting upstream stop early
	// enough that the explanation reaches the web server before its own
	// timeout does.
	Patience func() time.Duration
	// RetryClosed, when set, is asked whether a request whose upstream
	// connection closed before any response byte may be sent again. It is
	// only asked for requests without a body whose method is GET, HEAD or
	// OPTIONS, and should say yes only when the upstream is known to have
	// been reloading or stopping: a worker that was killed may have run
	// the script already.
	RetryClosed func(t *outcome.Trace) bool
	// UpstreamKeepAlive, when positive, is how many idle upstream
	// connections are kept open for later requests, as nginx's keepalive
	// directive does: a request then skips the connect and php-fpm the
	// accept and close. php-fpm holds a worker on every kept connection,
	// so keep it below pm.max_children, leaving a worker for the status
	// page and other clients. Only bodyless GET, HEAD and OPTIONS requests
	// use kept connections, because php-fpm may close one just as a
	// request arrives (a worker reaching pm.max_requests), and only those
	// can be sent again on a new connection without doubt.
	UpstreamKeepAlive int
	// UpstreamKeepAliveTimeout closes a kept connection idle for that
	// long; 0 means DefaultUpstreamKeepAliveTimeout. It must stay below
	// php-fpm's request_terminate_timeout and request_slowlog_timeout,
	// which count a worker waiting on a kept connection as busy.
	UpstreamKeepAliveTimeout time.Duration
	// WebServerHeadLimits, when set, says which response heads the web
	// server refuses, in bytes of FastCGI records as they arrive (nginx's
	// fastcgi_buffer_size): every one larger than refuse (0: none for
	// sure), and maybe one larger than suspect. A head over refuse fails
	// while nothing of it was sent, so that an explanation stands in for
	// the web server's bare 502. A head over suspect only is passed on,
	// and if the web server then resets the connection the request ends
	// with an outcome.HeadTooBigError.
	WebServerHeadLimits func() (suspect, refuse int)
	// ServerTiming adds a Server-Timing header to every response, with the
	// time spent connecting to the upstream and waiting for its first byte,
	// so that browser developer tools show where the time went.
	ServerTiming bool
	// MaxParamsBytes bounds the PARAMS stream of a request;
	// 0 means DefaultMaxParamsBytes.
	MaxParamsBytes int
	// MaxHeaderBytes bounds the CGI headers of a response; a response
	// whose headers run longer fails while nothing of it has been sent.
	// 0 means DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// IdleTimeout closes a downstream connection that starts no request,
	// or sends nothing of a request body, for that long: a kept-alive
	// connection nginx forgot, or a client holding a connection open.
	// 0 means no limit.
	IdleTimeout time.Duration
	// ParamsTimeout bounds the time from BEGIN_REQUEST to the end of the
	// PARAMS stream, so that a client sending its request head a byte at
	// a time cannot hold a connection. 0 means no limit.
	ParamsTimeout time.Duration
	// MaxClientConns, when positive, limits the open downstream
	// connections; further ones wait in the listen queue.
	MaxClientConns int
	// StderrExcerpt bounds the FCGI_STDERR bytes kept in a Trace;
	// 0 means DefaultStderrExcerpt.
	StderrExcerpt int
	// Dial, when set, replaces the standard dialer.
	Dial func(ctx context.Context, addr fcgi.Addr) (net.Conn, error)
	// Responder builds replacement responses; nil gives a plain one.
	Responder Responder
	// Observer receives every finished request; nil means none.
	Observer Observer
	// Log receives connection-level events; the zero Logger discards them.
	Log zerolog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	aborted   bool // Close was called; guarded by mu
	connSeq   atomic.Uint64
	ctx       context.Context
	cancel    context.CancelFunc
	reqIDs    requestIDs
	slots     *semaphore.Weighted
	clients   chan struct{}
	inFlight  atomic.Int64
	queued    atomic.Int64
	idle      idlePool
	observing sync.WaitGroup // Observer calls running on goroutines of their own
	// linger replaces lingerAfterEnd in tests that cannot wait for it.
	linger time.Duration
}

func (s *Server) lingerAfterEnd() time.Duration {
	if s.linger > 0 {
		return s.linger
	}
	return lingerAfterEnd
}

// InFlight returns the number of requests begun and not yet finished:
// queued, connecting, waiting for php-fpm or streaming its response.
func (s *Server) InFlight() int { return int(s.inFlight.Load()) }

// Queued returns the number of requests waiting for a MaxConns slot.
func (s *Server) Queued() int { return int(s.queued.Load()) }

// IdleUpstream returns the number of idle upstream connections kept for
// later requests (UpstreamKeepAlive). php-fpm shows the worker on each as
// active, "Reading headers", although it runs nothing.
func (s *Server) IdleUpstream() int { return s.idle.len() }

func (s *Server) init() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.listeners = make(map[net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
		s.reqIDs.init()
		if s.MaxConns > 0 {
			s.slots = semaphore.NewWeighted(int64(s.MaxConns))
		}
		if s.MaxClientConns > 0 {
			s.clients = make(chan struct{}, s.MaxClientConns)
		}
		s.idle.max = s.UpstreamKeepAlive
		s.idle.timeout = s.UpstreamKeepAliveTimeout
		if s.idle.timeout <= 0 {
			s.idle.timeout = DefaultUpstreamKeepAliveTimeout
		}
	}
}

// Serve accepts connections on ln and relays each until Shutdown or Close.
// It always returns a non-nil error; after Shutdown or Close, ErrServerClosed.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		if s.clients != nil {
			select {
			case s.clients <- struct{}{}:
			default:
				s.Log.Warn().Int("max_client_conns", s.MaxClientConns).Msg("downstream connection limit reached: new connections wait in the listen queue (FCGISCOPE_MAX_CLIENT_CONNS)")
				s.clients <- struct{}{}
			}
		}
		nc, err := ln.Accept()
		if err != nil {
			s.releaseClient()
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAcceptError(err) {
				// Out of file descriptors and the like: wait rather
				// than spin, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.Log.Error().Err(err).Stringer("retry_in", backoff).Msg("accepting a connection failed")
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			nc.Close()
			s.releaseClient()
			return ErrServerClosed
		}
		go c.serve()
	}
}

func (s *Server) newConn(nc net.Conn) *conn {
	c := &conn{srv: s, id: s.connSeq.Add(1), nc: nc, accepted: time.Now()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted {
		return nil
	}
	// A connection accepted as Shutdown begins is served all the same:
	// the web server has sent its request on it, or is about to, and
	// closing it unread would reset that request. closeIdle gives it
	// newConnGrace to begin.
	s.conns[c] = struct{}{}
	return c
}

func (s *Server) forget(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.releaseClient()
}

func (s *Server) releaseClient() {
	if s.clients != nil {
		<-s.clients
	}
}

// Shutdown stops accepting connections, closes idle ones, and waits for the
// requests in flight to finish, closing each connection after its request.
// When ctx ends first, it closes everything and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.closing.Store(true)
	s.closeListeners()
	s.idle.close()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.closeIdle() {
			return s.waitObserving(ctx)
		}
		select {
		case <-ctx.Done():
			s.Close()
			s.waitCutOff(cutOffWait)
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// cutOffWait bounds how long Shutdown, once its time is up, waits for the
// requests it cut off to be recorded.
const cutOffWait = 2 * time.Second

// waitCutOff waits, up to limit, until the requests that Close cut off
// have ended and been handed to the Observer, so that each is logged as
// cut off before the process exits rather than vanishing.
func (s *Server) waitCutOff(limit time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for s.inFlight.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	s.waitObserving(ctx)
}

// waitObserving waits for the Observer calls still running, so that every
// request is recorded before Shutdown returns.
func (s *Server) waitObserving(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.observing.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, failing the
// requests in flight.
func (s *Server) Close() error {
	s.init()
	s.closing.Store(true)
	s.closeListeners()
	s.idle.close()
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aborted = true
	for c := range s.conns {
		c.abort()
	}
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
}

// closeIdle closes connections without a request in flight and reports
// whether none is left, and no Serve loop either, which could still hand
// on a connection it accepted.
func (s *Server) closeIdle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.inflight.Load() == 0 && (c.begun.Load() || time.Since(c.accepted) > newConnGrace) {
			c.nc.Close()
		}
	}
	return len(s.conns) == 0 && len(s.listeners) == 0
}

// newConnGrace is how long a connection accepted just before a shutdown may
// take to send its first request. The web server sent that request already,
// or is about to: closing the connection under it would fail the request,
// and nginx does not retry on a new connection as it does on a kept-alive
// one.
const newConnGrace = time.Second

// ActiveConns returns the number of open downstream connections.
func (s *Server) ActiveConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// queueDeadline is when a request that began at start stops waiting for a
// slot, and whether that is the web server's patience running out.
func (s *Server) queueDeadline(start time.Time) (time.Time, bool) {
	if s.Patience == nil {
		return start.Add(s.QueueTimeout), false
	}
	// A moment past the web server's own timeout, so that a worker freed
	// at the last moment still serves the request, as it would without
	// the relay, and the web server's timeout is what ends the wait.
	return start.Add(s.Patience() + patienceMargin), true
}

// retryDeadline is when connection attempts for a request that began at
// start stop, so that its explanation reaches the web server in time.
func (s *Server) retryDeadline(start time.Time) time.Time {
	if s.Patience == nil {
		return start.Add(s.QueueTimeout)
	}
	p := s.Patience()
	return start.Add(p - min(patienceMargin, p/5))
}

// patienceMargin is how much the relay's waits differ from the web
// server's: an explanation must arrive that long before the web server
// gives up, a wait for a slot may outlast it by as much.
const patienceMargin = time.Second

// dialRetrying connects to the upstream, retrying with backoff until deadline
// while the failure is one that happens before anything is sent: nothing
// listens (a restart), no socket file (a graceful stop), a full listen queue
// (a burst). It returns the number of attempts made.
//
// When the relay knows how long the web server waits (Patience), a connect
// that times out is tried again too, as long as the web server would have
// waited for it (nginx waits fastcgi_connect_timeout, 60 s by default, where
// ConnectTimeout would give up sooner), and no attempt outlasts deadline.
func (s *Server) dialRetrying(deadline time.Time) (net.Conn, int, error) {
	backoff := 10 * time.Millisecond
	ctx := s.ctx
	if s.Patience != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(s.ctx, deadline)
		defer cancel()
	}
	for attempt := 1; ; attempt++ {
		conn, err := s.dial(ctx)
		retry := retryableDial(err) || (s.Patience != nil && isTimeout(err))
		if err == nil || !retry || time.Now().Add(backoff).After(deadline) || s.ctx.Err() != nil {
			return conn, attempt, err
		}
		time.Sleep(backoff)
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

func retryableDial(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EAGAIN)
}

// isTimeout reports whether a connection attempt ran out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, syscall.ETIMEDOUT) || (errors.As(err, &ne) && ne.Timeout())
}

func (s *Server) dial(ctx context.Context) (net.Conn, error) {
	timeout := s.ConnectTimeout
	if timeout == 0 {
		timeout = DefaultConnectTimeout
	}
	var conn net.Conn
	var err error
	switch {
	case s.Dial != nil:
		ctx, cancel := context.WithTimeout(ctx, timeout)
		conn, err = s.Dial(ctx, s.Upstream)
		cancel()
	case s.Upstream.Network == "unix":
		// A unix connect never waits: it succeeds, or fails at once
		// with EAGAIN when the listen queue is full. DialUnix skips the
		// dialer's context and address machinery, a noticeable part of
		// a small request's cost.
		conn, err = net.DialUnix("unix", nil, &net.UnixAddr{Name: s.Upstream.Address, Net: "unix"})
	default:
		d := net.Dialer{Timeout: timeout}
		conn, err = d.DialContext(ctx, s.Upstream.Network, s.Upstream.Address)
	}
	if err != nil {
		return nil, &outcome.DialError{Addr: s.Upstream, Err: err}
	}
	return conn, nil
}

// appendRelayValues appends the variables by which a probe knows fcgiscope
// (see fcgi.ValueRelayUpstream) to a GET_VALUES_RESULT body.
func (s *Server) appendRelayValues(body []byte) []byte {
	queue := s.QueueTimeout.String()
	if s.Patience != nil {
		queue = "auto"
	}
	body = fcgi.AppendPair(body, fcgi.ValueRelayUpstream, s.Upstream.String())
	body = fcgi.AppendPair(body, fcgi.ValueRelayReadTimeout, s.ReadTimeout.String())
	body = fcgi.AppendPair(body, fcgi.ValueRelayQueueTimeout, queue)
	return fcgi.AppendPair(body, fcgi.ValueRelayMaxHeaderBytes, strconv.Itoa(s.maxHeaderBytes()))
}

func (s *Server) maxHeaderBytes() int {
	if s.MaxHeaderBytes > 0 {
		return s.MaxHeaderBytes
	}
	return DefaultMaxHeaderBytes
}

func (s *Server) maxParams() int {
	if s.MaxParamsBytes > 0 {
		return s.MaxParamsBytes
	}
	return DefaultMaxParamsBytes
}

func (s *Server) stderrExcerpt() int {
	if s.StderrExcerpt > 0 {
		return s.StderrExcerpt
	}
	return DefaultStderrExcerpt
}
