package epstest

import (
	"bytes"
	"net"
	"sync"
)

// Tap is a TCP forwarder in front of the relay's public port that keeps a
// copy of every byte in both directions: what the endpoint servers send to
// other members and what comes back. Tests use it to show that a payload
// never crosses the relay in the clear. Its methods are safe for
// concurrent use.
type Tap struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	seen   bytes.Buffer
	conns  map[net.Conn]struct{}
	closed bool
}

func newTap(target string) *Tap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("epstest: tap: " + err.Error()) // loopback listen: only fails if the machine is broken
	}
	tp := &Tap{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	tp.wg.Go(tp.accept)
	return tp
}

// Addr returns the address the endpoint servers dial instead of the
// relay's public port.
func (tp *Tap) Addr() string { return tp.ln.Addr().String() }

// Contains reports whether b occurred in the bytes seen so far. A marker
// split between two TCP segments of different connections is not found,
// but one connection's bytes are recorded in order.
func (tp *Tap) Contains(b []byte) bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return bytes.Contains(tp.seen.Bytes(), b)
}

// Len returns the number of bytes seen so far.
func (tp *Tap) Len() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.seen.Len()
}

func (tp *Tap) accept() {
	for {
		c, err := tp.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", tp.target)
		if err != nil {
			c.Close()
			continue
		}
		if !tp.track(c, up) {
			return
		}
		tp.wg.Go(func() {
			var wg sync.WaitGroup
			wg.Go(func() { tp.pipe(up, c) })
			tp.pipe(c, up)
			wg.Wait()
			c.Close()
			up.Close()
			tp.untrack(c, up)
		})
	}
}

// pipe copies src to dst, recording every chunk, and passes the FIN on.
func (tp *Tap) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			tp.mu.Lock()
			tp.seen.Write(buf[:n])
			tp.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func (tp *Tap) track(cs ...net.Conn) bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	if tp.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		tp.conns[c] = struct{}{}
	}
	return true
}

func (tp *Tap) untrack(cs ...net.Conn) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	for _, c := range cs {
		delete(tp.conns, c)
	}
}

// close stops the tap: its listener and every forwarded connection.
func (tp *Tap) close() {
	tp.ln.Close()
	tp.mu.Lock()
	tp.closed = true
	for c := range tp.conns {
		c.Close()
	}
	tp.mu.Unlock()
	tp.wg.Wait()
}
