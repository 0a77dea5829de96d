package relay

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/wire"
)

const (
	sendQueueLen      = 256 // control frames waiting to be written, per session
	controlWriteLimit = 10 * time.Second
)

// controlStream is the byte stream of a control session: a QUIC stream or a
// TLS connection.
type controlStream interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// session is one control session from a member's private proxy.
type session struct {
	s         *Server
	id        pki.ID
	leaf      *x509.Certificate
	transport string
	stream    controlStream
	closeConn func()

	ctx    context.Context
	cancel context.CancelCauseFunc
	sendq  chan wire.Frame

	mu     sync.Mutex // guards routes
	routes map[string]*route
}

// errSession* are the causes a session ends with; they map to metric labels.
var (
	errSessionRevoked   = errors.New("relay: member revoked or suspended")
	errSessionQueueFull = errors.New("relay: control send queue full")
	errSessionShutdown  = errors.New("relay: shutting down")
)

// checkSessionPeer admits members that may hold routes: health offices and
// providers. Relays do not register routes.
func checkSessionPeer(id pki.ID, _ *pki.Member) error {
	if id.Role == pki.RoleRelay {
		return errors.New("relay: relays cannot open control sessions")
	}
	return nil
}

func (s *Server) controlTLS() (*tls.Config, error) {
	return pki.ServerConfig(s.cfg.Identity, s.cfg.Trust, []string{pki.ALPNControl}, checkSessionPeer)
}

// ServeControlQUIC serves control sessions over QUIC on pc until Shutdown or
// Close. The caller owns pc and closes it after Serve returns.
func (s *Server) ServeControlQUIC(pc net.PacketConn) error {
	tc, err := s.controlTLS()
	if err != nil {
		return err
	}
	tr := &quic.Transport{Conn: pc}
	ln, err := tr.Listen(tc, s.quicCfg)
	if err != nil {
		return fmt.Errorf("relay: listen quic: %w", err)
	}
	if !s.trackListener(ln, ln.Close) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.untrackListener(ln)
	// The transport must outlive its sessions: closing it first would drop
	// their CONNECTION_CLOSE, and proxies would notice only at their ping
	// timeout.
	var sessions sync.WaitGroup
	defer tr.Close()
	defer sessions.Wait()
	for {
		qc, err := ln.Accept(s.ctx)
		if err != nil {
			if s.isClosing() || errors.Is(err, quic.ErrServerClosed) {
				return ErrServerClosed
			}
			return err
		}
		sessions.Add(1)
		if !s.goConn(func() {
			defer sessions.Done()
			s.serveQUIC(qc)
		}) {
			sessions.Done()
			qc.CloseWithError(0, "relay closed")
			return ErrServerClosed
		}
	}
}

func (s *Server) serveQUIC(qc *quic.Conn) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	st, err := qc.AcceptStream(ctx)
	cancel()
	if err != nil {
		s.m.sessionsEnded.WithLabelValues("refused").Inc()
		qc.CloseWithError(1, "no control stream")
		return
	}
	cs := qc.ConnectionState().TLS
	s.runSession(cs, "quic", st, func() { st.Close(); qc.CloseWithError(0, "") })
}

// ServeControlTCP serves control sessions over TCP+TLS on ln, for private
// proxies that cannot use UDP. It closes ln on return.
func (s *Server) ServeControlTCP(ln net.Listener) error {
	tc, err := s.controlTLS()
	if err != nil {
		return err
	}
	return s.acceptLoop(ln, func(c net.Conn) {
		tlc := tls.Server(c, tc)
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
		err := tlc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			s.m.sessionsEnded.WithLabelValues("refused").Inc()
			s.log.Debug("control handshake failed", "remote_addr", c.RemoteAddr().String(), "err", err)
			c.Close()
			return
		}
		s.runSession(tlc.ConnectionState(), "tcp", tlc, func() { tlc.Close() })
	})
}

// runSession serves one authenticated control session until it ends.
func (s *Server) runSession(cs tls.ConnectionState, transport string, st controlStream, closeConn func()) {
	id, err := pki.PeerID(cs)
	if err != nil { // cannot happen after VerifyConnection; refuse anyway
		closeConn()
		return
	}
	ctx, cancel := context.WithCancelCause(s.ctx)
	ss := &session{
		s: s, id: id, leaf: cs.VerifiedChains[0][0], transport: transport, stream: st, closeConn: closeConn,
		ctx: ctx, cancel: cancel, sendq: make(chan wire.Frame, sendQueueLen), routes: map[string]*route{},
	}
	if err := s.addSession(ss); err != nil {
		s.m.sessionsEnded.WithLabelValues("over_limit").Inc()
		wire.WriteFrame(st, wire.GoAway{Message: err.Error()})
		cancel(err)
		closeConn()
		return
	}
	log := s.log.With("peer", id.String(), "transport", transport)
	log.Info("control session opened")
	s.m.sessions.WithLabelValues(transport).Inc()

	var writer sync.WaitGroup
	writer.Go(ss.writeLoop)
	stop := context.AfterFunc(ctx, func() { st.SetReadDeadline(time.Now()) })
	err = ss.readLoop()
	stop()
	cancel(err)
	writer.Wait()
	closeConn()
	s.removeSession(ss)
	s.m.sessions.WithLabelValues(transport).Dec()

	cause := context.Cause(ctx)
	reason := "closed"
	switch {
	case errors.Is(cause, errSessionRevoked):
		reason = "revoked"
	case errors.Is(cause, errSessionQueueFull):
		reason = "queue_full"
	case errors.Is(cause, errSessionShutdown), s.ctx.Err() != nil:
		reason = "shutdown"
	case errors.Is(cause, os.ErrDeadlineExceeded):
		reason = "timeout"
	case errors.Is(cause, wire.ErrMalformed), errors.Is(cause, wire.ErrTooLarge), errors.Is(cause, wire.ErrUnknown), errors.Is(cause, errProtocol):
		reason = "protocol_error"
	}
	s.m.sessionsEnded.WithLabelValues(reason).Inc()
	log.Info("control session closed", "reason", reason)
}

var errProtocol = errors.New("relay: control protocol violation")

func (ss *session) readLoop() error {
	var buf []byte
	for {
		ss.stream.SetReadDeadline(time.Now().Add(ss.s.cfg.SessionTimeout))
		var f wire.Frame
		var err error
		f, buf, err = wire.ReadFrame(ss.stream, buf)
		if err != nil {
			if c := context.Cause(ss.ctx); c != nil {
				return c
			}
			return err
		}
		switch m := f.(type) {
		case wire.Register:
			res := ss.register(m)
			ss.s.m.registrations.WithLabelValues("register", res.Code.String()).Inc()
			ss.send(res)
		case wire.Withdraw:
			res := ss.withdraw(m)
			ss.s.m.registrations.WithLabelValues("withdraw", res.Code.String()).Inc()
			ss.send(res)
		case wire.Ping:
			ss.send(wire.Pong(m))
		case wire.Pong:
		default:
			return fmt.Errorf("%w: unexpected %v frame from proxy", errProtocol, wire.TypeOf(f))
		}
	}
}

func (ss *session) writeLoop() {
	for {
		select {
		case <-ss.ctx.Done():
			return
		case f := <-ss.sendq:
			ss.stream.SetWriteDeadline(time.Now().Add(controlWriteLimit))
			if err := wire.WriteFrame(ss.stream, f); err != nil {
				ss.cancel(err)
				return
			}
		}
	}
}

// send queues f without blocking. A session whose queue is full is closed:
// a proxy that does not read its control stream cannot be served.
func (ss *session) send(f wire.Frame) bool {
	select {
	case ss.sendq <- f:
		return true
	case <-ss.ctx.Done():
		return false
	default:
		ss.s.m.frames.WithLabelValues("queue_full").Inc()
		ss.cancel(errSessionQueueFull)
		return false
	}
}

func (ss *session) register(m wire.Register) wire.Result {
	res := wire.Result{ReqID: m.ReqID}
	s := ss.s
	name := normalizeName(m.Name)
	if name == "" || name != m.Name {
		res.Code, res.Message = wire.CodeBad, "route name must be a lowercase DNS name"
		return res
	}
	var expires time.Time
	switch classify(ss.id, name) {
	case routeOwn:
		if m.SingleUse {
			res.Code, res.Message = wire.CodeBad, "a member's own name cannot be single-use"
			return res
		}
		if m.TTL > 0 {
			expires = time.Now().Add(time.Duration(m.TTL) * time.Second)
		}
	case routeOneTime:
		ttl := time.Duration(m.TTL) * time.Second
		if m.TTL == 0 || ttl > s.cfg.MaxRouteTTL {
			res.Code, res.Message = wire.CodeBad, fmt.Sprintf("one-time routes need a TTL of 1s to %s", s.cfg.MaxRouteTTL)
			return res
		}
		expires = time.Now().Add(ttl)
	default:
		res.Code, res.Message = wire.CodeForbidden, fmt.Sprintf("%s may only register %s and names one label below it", ss.id, ss.id.DNSName())
		return res
	}
	if s.draining.Load() {
		res.Code, res.Message = wire.CodeDraining, "relay is draining"
		return res
	}
	r := &route{name: name, sess: ss, expires: expires, singleUse: m.SingleUse}
	ss.mu.Lock()
	if ss.ctx.Err() != nil {
		ss.mu.Unlock()
		res.Code = wire.CodeDraining
		return res
	}
	if _, ok := ss.routes[name]; !ok && len(ss.routes) >= s.cfg.MaxRoutesPerMember {
		ss.mu.Unlock()
		res.Code, res.Message = wire.CodeLimit, fmt.Sprintf("at most %d routes per session", s.cfg.MaxRoutesPerMember)
		return res
	}
	ss.routes[name] = r
	ss.mu.Unlock()
	if old := s.routes.put(r); old != nil && old.sess != ss {
		old.sess.forget(old)
	}
	if s.cfg.Cluster != nil {
		s.cfg.Cluster.Announce(name, true)
	}
	return res
}

func (ss *session) withdraw(m wire.Withdraw) wire.Result {
	res := wire.Result{ReqID: m.ReqID}
	ss.mu.Lock()
	r, ok := ss.routes[m.Name]
	delete(ss.routes, m.Name)
	ss.mu.Unlock()
	if !ok {
		res.Code = wire.CodeNotFound
		return res
	}
	r.withdrawn.Store(true) // before the waiting clients are collected
	ss.s.dropRoute(r)
	// Clients announced before the Withdraw arrived would wait out
	// PairTimeout: the proxy no longer knows the route and ignores their
	// Incoming. End them now, here and at the relays that forwarded them.
	ss.s.failPending(r.name)
	ss.s.refuseForwarded(r)
	return res
}

// forget removes r from the session's own list (after another session took
// the name over, or it expired or was used).
func (ss *session) forget(r *route) {
	ss.mu.Lock()
	if ss.routes[r.name] == r {
		delete(ss.routes, r.name)
	}
	ss.mu.Unlock()
}

// dropRoute removes r from the table and tells the cluster if the name is no
// longer held here.
func (s *Server) dropRoute(r *route) {
	if s.routes.remove(r) && s.cfg.Cluster != nil {
		s.cfg.Cluster.Announce(r.name, false)
	}
}

// endRoute removes a route that was used or expired and tells its session.
func (s *Server) endRoute(r *route, reason uint8) {
	r.sess.forget(r)
	s.dropRoute(r)
	r.sess.send(wire.RouteGone{Name: r.name, Reason: reason})
}

func (s *Server) addSession(ss *session) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining.Load() {
		return errors.New("relay: draining")
	}
	n := 0
	for o := range s.sessions {
		if o.id == ss.id {
			n++
		}
	}
	if n >= s.cfg.MaxSessionsPerMember {
		return fmt.Errorf("relay: at most %d control sessions per member", s.cfg.MaxSessionsPerMember)
	}
	s.sessions[ss] = struct{}{}
	return nil
}

func (s *Server) removeSession(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
	ss.mu.Lock()
	routes := make([]*route, 0, len(ss.routes))
	for _, r := range ss.routes {
		routes = append(routes, r)
	}
	clear(ss.routes)
	ss.mu.Unlock()
	for _, r := range routes {
		s.dropRoute(r)
	}
}

// watchDirectory re-checks every control session and relayed connection
// against each new directory version: revoked or suspended members are cut
// off at once.
func (s *Server) watchDirectory() {
	v := s.cfg.Trust.Directory
	for {
		ch := v.Changed()
		select {
		case <-s.ctx.Done():
			return
		case <-ch:
		}
		snap := v.Current()
		now := time.Now()
		s.mu.Lock()
		var cut []*session
		for ss := range s.sessions {
			if _, _, err := snap.Authorize(ss.leaf, now); err != nil {
				cut = append(cut, ss)
			}
		}
		var pairs []*pair
		for p := range s.pairs {
			if snap.IsRevoked(p.member, "") {
				pairs = append(pairs, p)
			} else if m, ok := snap.Dir.Member(p.member); !ok || m.Suspended {
				pairs = append(pairs, p)
			}
		}
		s.mu.Unlock()
		for _, ss := range cut {
			s.log.Info("closing control session of a member the directory no longer admits", "peer", ss.id.String())
			ss.cancel(errSessionRevoked)
		}
		for _, p := range pairs {
			p.abort()
		}
	}
}

// sweepRoutes removes expired one-time routes, and forgets forwarded
// announcements whose clients no longer wait, every second.
func (s *Server) sweepRoutes() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case now := <-t.C:
			if s.forwarded != nil {
				s.mu.Lock()
				s.forwarded.prune(now)
				s.mu.Unlock()
			}
			for _, r := range s.routes.expired(now) {
				r.sess.forget(r)
				if s.cfg.Cluster != nil {
					s.cfg.Cluster.Announce(r.name, false)
				}
				r.sess.send(wire.RouteGone{Name: r.name, Reason: wire.GoneExpired})
			}
		}
	}
}
