package proxy

import (
	"net"
	"sync"
	"syscall"
	"time"
)

// DefaultUpstreamKeepAliveTimeout is how long an idle kept-alive upstream
// connection stays open when Server.UpstreamKeepAliveTimeout is 0.
const DefaultUpstreamKeepAliveTimeout = time.Second

// idlePool keeps idle upstream connections for reuse, newest first: the
// newest is the likeliest to be alive, and the oldest ones then time out,
// releasing the php-fpm workers they hold. Its zero value keeps nothing.
type idlePool struct {
	max     int
	timeout time.Duration

	mu     sync.Mutex
	conns  []idleConn // oldest first
	timer  *time.Timer
	closed bool
}

type idleConn struct {
	nc    net.Conn
	since time.Time
}

// len returns the number of idle connections kept.
func (p *idlePool) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// get returns the newest idle connection that has not timed out, or nil.
//
// It does not look whether php-fpm closed the connection meanwhile (a
// worker reaching pm.max_requests closes it right after its last answer, a
// reload closes them all): asking the socket costs every request a system
// call, about 4% of the relay's CPU time, to spare one request in
// pm.max_requests a new connection. A kept connection carries only requests
// that can be sent again without doubt, and one that php-fpm closed under a
// request is sent again on a new connection (request.mayResend).
func (p *idlePool) get() net.Conn {
	for {
		p.mu.Lock()
		n := len(p.conns)
		if n == 0 {
			p.mu.Unlock()
			return nil
		}
		ic := p.conns[n-1]
		p.conns[n-1] = idleConn{}
		p.conns = p.conns[:n-1]
		p.mu.Unlock()
		if time.Since(ic.since) < p.timeout {
			return ic.nc
		}
		ic.nc.Close()
	}
}

// shed closes the connection idle longest, if any. Each idle connection
// holds a php-fpm worker, so a request that needs a new connection first
// frees one: with MaxConns at pm.max_children, the connections open never
// outnumber the workers.
func (p *idlePool) shed() {
	p.mu.Lock()
	if len(p.conns) == 0 {
		p.mu.Unlock()
		return
	}
	nc := p.conns[0].nc
	p.conns[0] = idleConn{}
	p.conns = p.conns[1:]
	p.mu.Unlock()
	nc.Close()
}

// put keeps nc for a later request and reports whether it did; when the
// pool is closed the caller closes nc. The pool keeps at most max
// connections, closing the oldest, except while requests wait for a
// MaxConns slot (waiting): each of those is about to take one, and closing
// a connection one of them needs would only make it connect again.
func (p *idlePool) put(nc net.Conn, waiting bool) bool {
	p.mu.Lock()
	if p.closed || p.max <= 0 {
		p.mu.Unlock()
		return false
	}
	p.conns = append(p.conns, idleConn{nc: nc, since: time.Now()})
	var over []net.Conn
	for !waiting && len(p.conns) > p.max {
		over = append(over, p.conns[0].nc)
		p.conns[0] = idleConn{}
		p.conns = p.conns[1:]
	}
	if p.timer == nil {
		p.timer = time.AfterFunc(p.timeout, p.expire)
	} else if len(p.conns) == 1 {
		p.timer.Reset(p.timeout)
	}
	p.mu.Unlock()
	for _, nc := range over {
		nc.Close()
	}
	return true
}

// expire closes the connections idle for the timeout and sets the timer for
// the next one to come due.
func (p *idlePool) expire() {
	p.mu.Lock()
	now := time.Now()
	var stale []net.Conn
	for len(p.conns) > 0 && now.Sub(p.conns[0].since) >= p.timeout {
		stale = append(stale, p.conns[0].nc)
		p.conns[0] = idleConn{}
		p.conns = p.conns[1:]
	}
	if len(p.conns) > 0 && !p.closed {
		p.timer.Reset(p.conns[0].since.Add(p.timeout).Sub(now))
	}
	p.mu.Unlock()
	for _, nc := range stale {
		nc.Close()
	}
}

// close closes every idle connection and keeps no more.
func (p *idlePool) close() {
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = nil
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	for _, ic := range conns {
		ic.nc.Close()
	}
}

// keptConn is an upstream connection asked to stay open, with its
// descriptor at hand for the quick acknowledgement before each read.
type keptConn struct {
	net.Conn
	rc  syscall.RawConn // nil when the connection has no descriptor, as with a custom Dial
	tcp bool
}

func newKeptConn(nc net.Conn) *keptConn {
	_, tcp := nc.(*net.TCPConn)
	kc := &keptConn{Conn: nc, tcp: tcp}
	if sc, ok := nc.(syscall.Conn); ok {
		kc.rc, _ = sc.SyscallConn()
	}
	return kc
}

func quickAck(fd uintptr) {
	syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
}

// ackAtOnce makes the kernel acknowledge what php-fpm sends at once instead
// of delaying the acknowledgement. php-fpm never turns Nagle's algorithm off
// outside Windows (php-src sets req->tcp only there) and writes a response
// in two parts, STDOUT and then END_REQUEST; on a kept TCP connection the
// second part waits for the acknowledgement of the first, which Linux delays
// by up to 40 ms in a request-response exchange. make bench showed it: a p99
// of 20 to 40 ms on kept TCP connections, 2 ms with this. A connection that
// is not kept does not wait, because php-fpm's close pushes the data out.
// Linux leaves quick-ACK mode by itself, so it is asked again before each
// read that may wait.
func ackAtOnce(nc net.Conn) {
	if kc, ok := nc.(*keptConn); ok && kc.tcp && kc.rc != nil {
		kc.rc.Control(quickAck)
	}
}
