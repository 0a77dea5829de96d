package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/splice"
	"github.com/kurier-net/kurier/relay/wire"
)

// incoming handles a relay's announcement of a waiting client. It never
// blocks the session's reader: the pairing runs in its own goroutine.
func (p *Proxy) incoming(s *session, m wire.Incoming) {
	start := time.Now()
	log := s.log.With("sni", m.Name, "conn_id", m.Token)
	e, ok := p.lookup(m.Name, start)
	if !ok {
		p.m.incoming.WithLabelValues(outNoRoute).Inc()
		log.Debug("incoming for unknown route")
		return
	}
	addr := m.PairAddr
	if addr == "" {
		addr = s.relay.Endpoints.Pairing
	} else if !p.knownPairing(addr) {
		// A relay may send us to another relay's pairing port, never to
		// an arbitrary address inside the member's network.
		p.m.incoming.WithLabelValues(outBadPairAddr).Inc()
		log.Warn("relay sent a pairing address of no known relay", "remote_addr", addr)
		return
	}
	if e.SingleUse && !e.claimed.CompareAndSwap(false, true) {
		p.m.incoming.WithLabelValues(outNoRoute).Inc()
		log.Debug("single-use route already taken")
		return
	}
	var lst *Listener
	if l, ok := e.Target.(*Listener); ok {
		// Reserve room in the backlog before the token is spent.
		if !l.reserve() {
			e.claimed.Store(false)
			outcome := outBacklogFull
			if l.isClosed() {
				outcome = outTargetError
			}
			p.m.incoming.WithLabelValues(outcome).Inc()
			log.Debug("listener takes no connection", "outcome", outcome)
			return
		}
		lst = l
	}
	rc := &relayed{p: p, route: e.Name, relay: s.relay.Name}
	if outcome := p.track(rc); outcome != "" {
		if lst != nil {
			lst.unreserve()
		}
		e.claimed.Store(false)
		p.m.incoming.WithLabelValues(outcome).Inc()
		log.Debug("incoming refused", "outcome", outcome)
		return
	}
	go func() { // counted in p.conns by track
		defer p.conns.Done()
		p.pair(rc, e, lst, m.Token, addr, start, log)
	}()
}

// track takes a connection slot for rc and counts its goroutine in p.conns.
// It returns the outcome if rc is refused.
func (p *Proxy) track(rc *relayed) string {
	select {
	case p.slots <- struct{}{}:
	default:
		return outOverLimit
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.draining {
		<-p.slots
		return outShutdown
	}
	p.tracked[rc] = struct{}{}
	p.conns.Add(1) // before Shutdown can Wait: it sets draining under p.mu first
	return ""
}

func (p *Proxy) untrack(rc *relayed) {
	p.mu.Lock()
	delete(p.tracked, rc)
	p.mu.Unlock()
	<-p.slots
	p.changed.notify()
}

// knownPairing reports whether addr is the pairing endpoint of a relay the
// proxy keeps a session with, or of a relay listed in the directory (a relay
// of the cluster that forwarded the announcement, also when Config.Relays
// points the proxy at only some of them).
func (p *Proxy) knownPairing(addr string) bool {
	p.mu.Lock()
	for _, r := range p.relays {
		if r.addr.Endpoints.Pairing == addr {
			p.mu.Unlock()
			return true
		}
	}
	p.mu.Unlock()
	snap := p.cfg.Trust.Directory.Current()
	if snap == nil {
		return false
	}
	for i := range snap.Dir.Members {
		m := &snap.Dir.Members[i]
		if m.Role == pki.RoleRelay && m.Relay != nil && m.Relay.Pairing == addr && !m.Suspended && !snap.IsRevoked(m.Name, "") {
			return true
		}
	}
	return false
}

// pair connects the target, dials the relay's pairing port, presents the
// token and hands the paired connection to the target. lst is the route's
// Listener, with a backlog place reserved, or nil.
func (p *Proxy) pair(rc *relayed, e *routeEntry, lst *Listener, tok wire.Token, addr string, start time.Time, log *slog.Logger) {
	fail := func(outcome string, err error) {
		if lst != nil {
			lst.unreserve()
		}
		if e.SingleUse {
			e.claimed.Store(false)
		}
		p.m.incoming.WithLabelValues(outcome).Inc()
		log.Debug("incoming connection not relayed", "outcome", outcome, "err", err)
		rc.close(relayedError)
	}
	// The local target first: if it is down, the relay's token (and a
	// single-use route) stay unspent.
	var target *net.TCPConn
	if t, ok := e.Target.(DialTarget); ok {
		var err error
		if target, err = p.dial(t.Addr); err != nil {
			fail(outTargetError, fmt.Errorf("dial target %s: %w", t.Addr, err))
			return
		}
		if !rc.addConn(target) {
			fail(outShutdown, net.ErrClosed)
			return
		}
	}

	relay, err := p.dial(addr)
	if err != nil {
		fail(outDialError, fmt.Errorf("dial pairing %s: %w", addr, err))
		return
	}
	if !rc.addConn(relay) {
		fail(outShutdown, net.ErrClosed)
		return
	}
	pre, err := wire.AppendPreamble(make([]byte, 0, wire.MaxPreamble), wire.Preamble{Token: tok, Name: e.Name})
	if err != nil { // names are checked in AddRoute
		fail(outPairError, err)
		return
	}
	relay.SetDeadline(time.Now().Add(p.cfg.PairTimeout))
	if _, err := relay.Write(pre); err != nil {
		fail(outPairError, fmt.Errorf("write preamble: %w", err))
		return
	}
	var st [1]byte
	if _, err := io.ReadFull(relay, st[:]); err != nil {
		fail(outPairError, fmt.Errorf("read pairing status: %w", err))
		return
	}
	relay.SetDeadline(time.Time{})
	switch st[0] {
	case wire.PairOK:
	case wire.PairUnknown:
		fail(outRefusedUnknown, nil)
		return
	case wire.PairWrongName:
		fail(outRefusedWrongName, nil)
		return
	case wire.PairBusy:
		fail(outBusy, nil)
		return
	default:
		fail(outBadStatus, fmt.Errorf("status byte %#x", st[0]))
		return
	}
	p.m.pairing.Observe(time.Since(start).Seconds())
	if e.SingleUse {
		p.dropEntry(e) // used: withdrawn at every relay
	}
	if !rc.begin() {
		fail(outShutdown, net.ErrClosed)
		return
	}
	if lst != nil {
		if err := lst.deliver(&Conn{c: relay, rc: rc}); err != nil {
			p.m.incoming.WithLabelValues(outTargetError).Inc()
			log.Debug("incoming connection not relayed", "outcome", outTargetError, "err", err)
			rc.close(relayedError)
			return
		}
		p.m.incoming.WithLabelValues(outPaired).Inc()
		log.Debug("relayed connection handed to listener", "duration", time.Since(start))
		return
	}
	p.m.incoming.WithLabelValues(outPaired).Inc()
	log.Debug("relayed connection paired", "duration", time.Since(start))
	rc.splice(relay, target)
}

// dial dials a TCP address for a relayed connection, bounded by DialTimeout
// and aborted by Close.
func (p *Proxy) dial(addr string) (*net.TCPConn, error) {
	ctx, cancel := context.WithTimeout(p.forceCtx, p.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// relayed is one relayed connection, from the Incoming announcement until
// it is closed. It holds one of Proxy.slots while tracked.
type relayed struct {
	p     *Proxy
	route string
	relay string

	mu      sync.Mutex // guards the fields below
	closed  bool
	conns   []*net.TCPConn // relay side first once paired; the target for a DialTarget
	started time.Time      // when it was paired and handed to the target; zero before
	half    bool           // one direction of a splice has finished
	timer   *time.Timer    // idle and age watchdog
}

// addConn adds c to the conns closed with rc. If rc is already closed it
// closes c and returns false.
func (rc *relayed) addConn(c *net.TCPConn) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.closed {
		c.Close()
		return false
	}
	rc.conns = append(rc.conns, c)
	return true
}

// begin marks rc paired and starts its watchdog. It returns false if rc was
// closed meanwhile.
func (rc *relayed) begin() bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.closed {
		return false
	}
	rc.started = time.Now()
	rc.p.m.active.Inc()
	cfg := &rc.p.cfg
	rc.timer = time.AfterFunc(min(cfg.IdleTimeout, cfg.MaxAge), rc.check)
	return true
}

// check is the watchdog: it closes rc at MaxAge, or when the kernel saw no
// data either way for IdleTimeout (Linger after a half-close), and re-arms
// itself for the earliest time either can be reached.
func (rc *relayed) check() {
	now := time.Now()
	rc.mu.Lock()
	if rc.closed {
		rc.mu.Unlock()
		return
	}
	conn, half, started := rc.conns[len(rc.conns)-1], rc.half, rc.started
	rc.mu.Unlock()

	cfg := &rc.p.cfg
	age := now.Sub(started)
	if age >= cfg.MaxAge {
		rc.close(relayedMaxAge)
		return
	}
	limit := cfg.IdleTimeout
	if half {
		limit = min(limit, cfg.Linger)
	}
	next := cfg.MaxAge - age
	if idle, ok := idleFor(conn); ok {
		if idle >= limit {
			rc.close(relayedIdle)
			return
		}
		next = min(next, limit-idle)
	}
	rc.mu.Lock()
	if !rc.closed {
		rc.timer.Reset(max(next, time.Millisecond))
	}
	rc.mu.Unlock()
}

// close ends rc once: it closes its connections, releases its slot and
// counts it.
func (rc *relayed) close(reason string) {
	rc.mu.Lock()
	if rc.closed {
		rc.mu.Unlock()
		return
	}
	rc.closed = true
	conns, started, timer := rc.conns, rc.started, rc.timer
	rc.mu.Unlock()
	if timer != nil {
		timer.Stop()
	}
	for _, c := range conns {
		c.Close()
	}
	if !started.IsZero() {
		rc.p.m.active.Dec()
		rc.p.m.relayedCloses.WithLabelValues(reason).Inc()
	}
	rc.p.untrack(rc)
}

// splice copies both directions between the relay and the target until both
// are finished, then closes rc.
func (rc *relayed) splice(relay, target *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Go(func() { rc.copyHalf(relay, target, rc.p.m.bytesOut) })
	rc.copyHalf(target, relay, rc.p.m.bytesIn)
	wg.Wait()
	rc.close(relayedDone)
}

// copyHalf copies src to dst and passes the FIN on. A failed copy closes
// both directions.
func (rc *relayed) copyHalf(dst, src *net.TCPConn, bytes counter) {
	var err error
	if tcpInfoSupported {
		// Kernel splice that gives its pipe back while the connection idles;
		// idleness is read from TCP_INFO, not from deadlines.
		err = splice.Copy(dst, src, time.Second, func(n int64) { bytes.Add(float64(n)) })
	} else {
		// Here halfDone bounds the rest with deadlines that a burst loop
		// would clear, so copy in one go.
		var n int64
		n, err = io.Copy(dst, src)
		bytes.Add(float64(n))
	}
	if err != nil {
		rc.close(relayedError)
		return
	}
	dst.CloseWrite() // the other direction may still be sending
	rc.halfDone(dst, src)
}

// halfDone notes that one direction finished: from now on the other
// direction is closed after Linger without data.
func (rc *relayed) halfDone(a, b *net.TCPConn) {
	rc.mu.Lock()
	first := !rc.half && !rc.closed
	rc.half = true
	rc.mu.Unlock()
	if !first {
		return
	}
	if tcpInfoSupported {
		rc.check() // re-arms the watchdog with the shorter limit
		return
	}
	// Without TCP_INFO there is no idle clock: bound the rest by a deadline.
	deadline := time.Now().Add(rc.p.cfg.Linger)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
}

// counter is the part of a prometheus.Counter the data path uses.
type counter interface{ Add(float64) }
