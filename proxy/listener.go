package proxy

import (
	"net"
	"sync"
	"time"
)

var _ net.Listener = (*Listener)(nil)

// Listener is an in-process Target: relayed connections for its routes come
// out of Accept, so a server (such as tls.Server over each conn, or
// http.Server.Serve) can run on them directly. One Listener may serve
// several routes. It is safe for concurrent use.
//
// The backlog is bounded: a connection announced while the backlog is full is
// refused before its pairing token is spent, and counted as
// proxy_incoming_total{outcome="backlog_full"}.
type Listener struct {
	queue chan *Conn    // paired connections waiting for Accept; cap backlog
	room  chan struct{} // one token per queued or reserved place; cap backlog
	done  chan struct{} // closed by Close

	mu     sync.Mutex // guards closed; held across the non-blocking send in deliver so Close cannot strand a conn in queue
	closed bool
}

// NewListener returns a Listener holding at most backlog connections that
// were not accepted yet. If backlog is not positive, 128 is used.
func NewListener(backlog int) *Listener {
	if backlog <= 0 {
		backlog = 128
	}
	return &Listener{
		queue: make(chan *Conn, backlog),
		room:  make(chan struct{}, backlog),
		done:  make(chan struct{}),
	}
}

func (*Listener) target() {}

// Accept blocks until a relayed connection arrives and returns it (a *Conn),
// or returns net.ErrClosed once the Listener is closed. The caller owns and
// closes the connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case <-l.done:
		return nil, net.ErrClosed
	default:
	}
	select {
	case c := <-l.queue:
		<-l.room
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close makes Accept return net.ErrClosed and closes the connections that
// were not accepted. It is idempotent and returns nil. Routes that still
// point at the Listener refuse new connections (outcome "target_error").
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	for {
		select {
		case c := <-l.queue:
			<-l.room
			c.Close()
		default:
			return nil
		}
	}
}

// Addr returns a placeholder address: relayed connections arrive through
// the relays, not on a local port.
func (l *Listener) Addr() net.Addr { return listenerAddr{} }

type listenerAddr struct{}

func (listenerAddr) Network() string { return "kurier" }
func (listenerAddr) String() string  { return "kurier-relay" }

// reserve takes a backlog place for a connection about to be paired.
func (l *Listener) reserve() bool {
	select {
	case <-l.done:
		return false
	default:
	}
	select {
	case l.room <- struct{}{}:
		return true
	default:
		return false
	}
}

func (l *Listener) unreserve() { <-l.room }

func (l *Listener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// deliver queues c in the place reserved for it. If the Listener was closed
// meanwhile it returns net.ErrClosed and releases the place; the caller
// closes c.
func (l *Listener) deliver(c *Conn) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		<-l.room
		return net.ErrClosed
	}
	l.queue <- c // never blocks: a place in room was reserved for c
	return nil
}

var _ net.Conn = (*Conn)(nil)

// Conn is a relayed connection handed out by a Listener: a TCP connection
// to the relay carrying the client's bytes unmodified (starting with its TLS
// ClientHello). It is closed by the proxy after the idle timeout or at the
// maximum age, and by Proxy.Close.
type Conn struct {
	c  *net.TCPConn
	rc *relayed
}

// Route returns the name of the route the client connected to.
func (c *Conn) Route() string { return c.rc.route }

// Relay returns the name of the relay the connection came through.
func (c *Conn) Relay() string { return c.rc.relay }

func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.c.Read(b)
	if n > 0 {
		c.rc.p.m.bytesIn.Add(float64(n))
	}
	return n, err
}

func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.c.Write(b)
	if n > 0 {
		c.rc.p.m.bytesOut.Add(float64(n))
	}
	return n, err
}

// Close closes the connection and frees its place among Config.MaxConns. It
// is idempotent.
func (c *Conn) Close() error {
	c.rc.close(relayedDone)
	return nil
}

// CloseWrite shuts down the writing side: the client sees EOF.
func (c *Conn) CloseWrite() error { return c.c.CloseWrite() }

// CloseRead shuts down the reading side.
func (c *Conn) CloseRead() error { return c.c.CloseRead() }

func (c *Conn) LocalAddr() net.Addr                { return c.c.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr               { return c.c.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error      { return c.c.SetDeadline(t) }
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.c.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }
