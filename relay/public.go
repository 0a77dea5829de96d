package relay

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kurier-net/kurier/relay/sni"
	"github.com/kurier-net/kurier/relay/splice"
	"github.com/kurier-net/kurier/relay/wire"
)

// pending is a client waiting for its member's proxy to dial back.
type pending struct {
	token   wire.Token
	name    string
	member  string
	created time.Time
	paired  chan net.Conn // receives exactly one value (nil on failure) once taken
}

// ServePublic serves client connections on ln until Shutdown or Close. It
// closes ln on return.
func (s *Server) ServePublic(ln net.Listener) error {
	return s.acceptLoop(ln, s.handleClient)
}

// ServePairing serves private proxies dialling back with a token on ln until
// Shutdown or Close. It closes ln on return.
func (s *Server) ServePairing(ln net.Listener) error {
	return s.acceptLoop(ln, s.handlePairing)
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func (s *Server) handleClient(c net.Conn) {
	select {
	case s.slots <- struct{}{}:
	default:
		s.m.connections.WithLabelValues("over_limit").Inc()
		c.Close()
		return
	}
	defer func() { <-s.slots }()
	if s.limiter != nil {
		if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil && !s.limiter.allow(ap.Addr().Unmap(), time.Now()) {
			s.m.connections.WithLabelValues("rate_limited").Inc()
			c.Close()
			return
		}
	}
	if s.draining.Load() {
		s.m.connections.WithLabelValues("draining").Inc()
		c.Close()
		return
	}
	c.SetReadDeadline(time.Now().Add(s.cfg.HelloTimeout))
	stop := context.AfterFunc(s.ctx, func() { c.SetDeadline(time.Now()) })
	raw, hello, err := sni.ReadHello(c, sni.MaxHelloLen)
	stop()
	if err != nil {
		result := "bad_hello"
		if isTimeout(err) {
			result = "hello_timeout"
		}
		s.m.connections.WithLabelValues(result).Inc()
		s.log.Debug("unusable ClientHello", "remote_addr", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	name := normalizeName(hello.ServerName)
	helloDone := time.Now()
	p, result := s.announce(name)
	if p == nil {
		s.m.connections.WithLabelValues(result).Inc()
		c.Close()
		return
	}
	backend, result := s.awaitPairing(p)
	if backend == nil {
		s.m.connections.WithLabelValues(result).Inc()
		c.Close()
		return
	}
	s.m.pairLatency.Observe(time.Since(helloDone).Seconds())
	s.m.connections.WithLabelValues("routed").Inc()
	backend.SetWriteDeadline(time.Now().Add(s.cfg.PairTimeout))
	if _, err := backend.Write(raw); err != nil {
		backend.Close()
		c.Close()
		return
	}
	// The pairing's time limit must not outlive it: from here on only the
	// reaper (idle timeout, maximum age) ends the connection.
	backend.SetWriteDeadline(time.Time{})
	s.m.bytes.WithLabelValues("to_member").Add(float64(len(raw)))
	s.splice(p.member, c, backend)
}

// memberOf returns the member a route name belongs to: the label right
// before the network name.
func (s *Server) memberOf(name string) string {
	rest, ok := strings.CutSuffix(name, "."+s.self.Network)
	if !ok {
		return ""
	}
	if i := strings.LastIndexByte(rest, '.'); i >= 0 {
		return rest[i+1:]
	}
	return rest
}

// announce creates a pending pairing for name and tells the member's proxy,
// directly or through the cluster. It returns nil and a metric label if the
// client cannot be served.
func (s *Server) announce(name string) (*pending, string) {
	if name == "" {
		return nil, "no_route"
	}
	member := s.memberOf(name)
	if member == "" {
		return nil, "no_route"
	}
	p := &pending{token: wire.NewToken(), name: name, member: member, created: time.Now(), paired: make(chan net.Conn, 1)}
	r, local := s.routes.lookup(name)
	if local && r.expired(p.created) {
		local = false
	}
	if !local && s.cfg.Cluster == nil {
		return nil, "no_route"
	}
	if !s.addPending(p) {
		return nil, "pending_limit"
	}
	if local {
		ok := r.sess.send(wire.Incoming{Token: p.token, Name: name})
		if r.singleUse {
			// Used by this attempt, whatever its outcome. Announced after
			// the Incoming so the proxy still knows the route when it
			// reads it.
			s.endRoute(r, wire.GoneUsed)
		}
		if !ok {
			s.takePending(p.token)
			return nil, "no_route"
		}
		if r.withdrawn.Load() && s.takePending(p.token) != nil {
			// The Withdraw came between the lookup and addPending, so
			// failPending did not see this client; the proxy ignores
			// the Incoming.
			return nil, "pair_refused"
		}
		return p, ""
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.PairTimeout)
	defer cancel()
	if err := s.cfg.Cluster.Forward(ctx, wire.Incoming{Token: p.token, Name: name, PairAddr: s.pairAddr()}); err != nil {
		s.takePending(p.token)
		if !errors.Is(err, ErrNoRoute) {
			s.log.Debug("cluster forward failed", "err", err)
		}
		return nil, "no_route"
	}
	return p, ""
}

// pairAddr is the pairing address other relays advertise for this one.
func (s *Server) pairAddr() string {
	if s.cfg.PairAddr != "" {
		return s.cfg.PairAddr
	}
	if snap := s.cfg.Trust.Directory.Current(); snap != nil {
		if m, ok := snap.Dir.Member(s.self.Name); ok && m.Relay != nil {
			return m.Relay.Pairing
		}
	}
	return ""
}

// Deliver passes an announcement that the relay named from forwarded to the
// local control session holding in.Name. The cluster calls it; it does not
// block. It returns ErrNoRoute if no session holds the name (any more).
//
// The relay remembers the token for PairTimeout (at most MaxPending
// tokens, the oldest forgotten first): if the member withdraws the route
// meanwhile, its proxy ignores the Incoming, and the relay tells from
// through Cluster.Refuse so that the client is refused at once.
func (s *Server) Deliver(from string, in wire.Incoming) error {
	now := time.Now()
	r, ok := s.routes.lookup(in.Name)
	if !ok || r.expired(now) {
		return ErrNoRoute
	}
	f := &forwarded{from: from, token: in.Token, route: r, until: now.Add(s.cfg.PairTimeout)}
	s.mu.Lock()
	forgot := s.forwarded != nil && s.forwarded.add(f, now)
	s.mu.Unlock()
	if forgot {
		s.m.forgotten.Inc()
	}
	ok = r.sess.send(in)
	if r.singleUse {
		s.endRoute(r, wire.GoneUsed)
	}
	if !ok || r.withdrawn.Load() {
		// A Withdraw that came before the record was made did not see it.
		s.mu.Lock()
		if s.forwarded != nil {
			s.forwarded.remove(f)
		}
		s.mu.Unlock()
		return ErrNoRoute
	}
	return nil
}

// Holds reports whether a local control session holds a route for name.
func (s *Server) Holds(name string) bool {
	r, ok := s.routes.lookup(name)
	return ok && !r.expired(time.Now())
}

func (s *Server) addPending(p *pending) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || len(s.pending) >= s.cfg.MaxPending {
		return false
	}
	n := 0
	for _, o := range s.pending { // bounded by MaxPending
		if o.member == p.member {
			n++
		}
	}
	if n >= s.cfg.MaxPendingPerMember {
		return false
	}
	s.pending[p.token.ID()] = p
	return true
}

// failPending ends every pending pairing for name: their clients are
// refused at once.
func (s *Server) failPending(name string) {
	s.mu.Lock()
	var failed []*pending
	for id, p := range s.pending { // bounded by MaxPending
		if p.name == name {
			delete(s.pending, id)
			failed = append(failed, p)
		}
	}
	s.mu.Unlock()
	for _, p := range failed {
		p.paired <- nil // buffered; the only value: the entry was taken here
	}
}

// takePending removes and returns the pending pairing for tok, if its secret
// matches. Whoever takes it must send exactly one value on its paired chan.
func (s *Server) takePending(tok wire.Token) *pending {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pending[tok.ID()]
	if !ok || !p.token.Matches(tok) {
		return nil
	}
	delete(s.pending, tok.ID())
	return p
}

// awaitPairing waits for the dial-back. It returns nil and a metric label
// on timeout, refusal or shutdown.
func (s *Server) awaitPairing(p *pending) (net.Conn, string) {
	t := time.NewTimer(s.cfg.PairTimeout)
	defer t.Stop()
	select {
	case c := <-p.paired:
		if c == nil {
			return nil, "pair_refused"
		}
		return c, ""
	case <-t.C:
	case <-s.ctx.Done():
	}
	if s.takePending(p.token) != nil {
		return nil, "pair_timeout" // nobody else will answer
	}
	if c := <-p.paired; c != nil { // the pairing side took it and answers at once
		return c, ""
	}
	return nil, "pair_refused"
}

func (s *Server) handlePairing(c net.Conn) {
	c.SetDeadline(time.Now().Add(s.cfg.PairTimeout))
	stop := context.AfterFunc(s.ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	pre, err := wire.ReadPreamble(c)
	if err != nil {
		result := "bad_preamble"
		if isTimeout(err) {
			result = "timeout"
		}
		s.m.pairings.WithLabelValues(result).Inc()
		c.Close()
		return
	}
	p := s.takePending(pre.Token)
	if p == nil {
		s.m.pairings.WithLabelValues("unknown_token").Inc()
		c.Write([]byte{wire.PairUnknown})
		c.Close()
		return
	}
	if pre.Name != p.name {
		// The token is burned: a proxy that presents it for another route
		// is broken or not the one it was sent to.
		s.m.pairings.WithLabelValues("wrong_route").Inc()
		p.paired <- nil
		c.Write([]byte{wire.PairWrongName})
		c.Close()
		return
	}
	if _, err := c.Write([]byte{wire.PairOK}); err != nil {
		s.m.pairings.WithLabelValues("timeout").Inc()
		p.paired <- nil
		c.Close()
		return
	}
	c.SetDeadline(time.Time{})
	s.m.pairings.WithLabelValues("ok").Inc()
	p.paired <- c
}

// pair is one relayed connection: a client spliced to a member's proxy.
type pair struct {
	member          string
	client, backend net.Conn
	created         time.Time
	lastActive      atomic.Int64 // unix nanoseconds
	closed          atomic.Bool
	closeOnce       sync.Once
}

// abort closes both connections with a reset rather than a FIN, so neither
// end can mistake a forced stop (relay shutdown, revocation) for the end of
// the stream.
func (p *pair) abort() {
	for _, c := range []net.Conn{p.client, p.backend} {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	p.close()
}

func (p *pair) close() {
	p.closeOnce.Do(func() {
		p.closed.Store(true)
		p.client.Close()
		p.backend.Close()
	})
}

// splice copies both directions until both end, the connection idles out or
// reaches its maximum age. Between two *net.TCPConn, io.Copy uses splice(2):
// the bytes never enter user space.
func (s *Server) splice(member string, client, backend net.Conn) {
	p := &pair{member: member, client: client, backend: backend, created: time.Now()}
	p.lastActive.Store(p.created.UnixNano())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		p.close()
		return
	}
	s.pairs[p] = struct{}{}
	s.mu.Unlock()
	stop := context.AfterFunc(s.ctx, p.abort)
	var wg sync.WaitGroup
	wg.Go(func() { s.pipe(p, backend, client, "to_member") })
	s.pipe(p, client, backend, "to_client")
	wg.Wait()
	stop()
	p.close()
	s.mu.Lock()
	delete(s.pairs, p)
	s.mu.Unlock()
}

// pipe copies src to dst. Between two TCP connections it splices in the
// kernel and holds no pipe while the connection idles (relay/splice); every
// burst records activity. Idle and too old pairs are closed by reapPairs,
// which also unblocks a write to a receiver that stopped reading.
func (s *Server) pipe(p *pair, dst, src net.Conn, direction string) {
	ctr := s.m.bytes.WithLabelValues(direction)
	progress := func(n int64) {
		ctr.Add(float64(n))
		p.lastActive.Store(time.Now().UnixNano())
	}
	var err error
	dt, dok := dst.(*net.TCPConn)
	st, sok := src.(*net.TCPConn)
	if dok && sok {
		err = splice.Copy(dt, st, s.reapInterval(), progress)
	} else {
		err = copyWindows(dst, src, s.reapInterval(), progress)
	}
	if err != nil || p.closed.Load() {
		p.close()
		return
	}
	// EOF: pass the half-close on; the other direction may still be sending.
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		p.close()
	}
}

// copyWindows is the copy loop for connections that are not TCP: read
// deadlines in windows only sample activity.
func copyWindows(dst, src net.Conn, window time.Duration, progress func(int64)) error {
	for {
		src.SetReadDeadline(time.Now().Add(window))
		n, err := io.Copy(dst, src)
		if n > 0 {
			progress(n)
		}
		if err == nil || !isTimeout(err) {
			return err
		}
	}
}

// reapInterval is how often activity is sampled and idle pairs are reaped:
// a quarter of the idle timeout, between 10ms and 1s.
func (s *Server) reapInterval() time.Duration {
	return min(max(s.cfg.IdleTimeout/4, 10*time.Millisecond), time.Second)
}

// reapPairs closes relayed connections that moved no byte in either
// direction for IdleTimeout, or that are older than MaxAge.
func (s *Server) reapPairs() {
	t := time.NewTicker(s.reapInterval())
	defer t.Stop()
	var dead []*pair
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			for p := range s.pairs {
				idle := now.Sub(time.Unix(0, p.lastActive.Load()))
				if idle >= s.cfg.IdleTimeout || now.Sub(p.created) >= s.cfg.MaxAge {
					dead = append(dead, p)
				}
			}
			s.mu.Unlock()
			for _, p := range dead {
				p.close()
			}
			clear(dead)
			dead = dead[:0]
		}
	}
}
