package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/wire"
)

// fakeRelay is a small relay for tests. It speaks relay/wire on a QUIC and a
// TCP+TLS control listener, keeps the routes sessions register, announces
// clients with Incoming, and pairs the proxy's dial-back on its pairing port
// with a test client's connection.
type fakeRelay struct {
	t     testing.TB
	name  string
	tls   *tls.Config
	addr  RelayAddr // the real endpoints once started
	quic  bool      // serve the QUIC control endpoint
	ctx   context.Context
	stopC context.CancelFunc

	ql *quic.Listener
	qt *quic.Transport
	qu *net.UDPConn
	tl net.Listener
	pl net.Listener
	wg sync.WaitGroup // every goroutine of the fake

	mu        sync.Mutex // guards the fields below
	sessions  map[*fakeSession]struct{}
	routes    map[string]fakeRoute
	tokens    map[wire.Token]*fakePending
	conns     map[io.Closer]struct{} // every conn to close on stop
	registers []wire.Register
	withdraws []string
	accepted  int                           // control sessions accepted
	answer    func(wire.Register) wire.Code // nil: OK
	mute      bool                          // read frames but answer nothing
	status    byte                          // if not PairOK, every pairing gets this status
	paired    int
}

type fakeRoute struct {
	s   *fakeSession
	reg wire.Register
}

type fakeSession struct {
	r         *fakeRelay
	transport string
	rw        io.ReadWriter
	closer    io.Closer

	wmu sync.Mutex // serializes writes
}

type fakePending struct {
	name   string
	client net.Conn // the relay's side of the test client's connection; nil if none
}

// newFakeRelay starts a fake relay with the given identity. If withQUIC is
// false, its Control endpoint is a UDP port nobody listens on.
func newFakeRelay(t testing.TB, id *pki.Identity, trust pki.Trust, withQUIC bool) *fakeRelay {
	t.Helper()
	conf, err := pki.ServerConfig(id, trust, []string{pki.ALPNControl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &fakeRelay{t: t, name: id.ID().Name, tls: conf, quic: withQUIC, status: wire.PairOK}
	r.addr = RelayAddr{Name: r.name, Endpoints: pki.RelayEndpoints{
		Public: "127.0.0.1:1", Pairing: "127.0.0.1:0", Control: "127.0.0.1:0", ControlTCP: "127.0.0.1:0",
	}}
	if !withQUIC {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		r.addr.Endpoints.Control = u.LocalAddr().String()
		u.Close()
	}
	r.start()
	t.Cleanup(r.stop)
	return r
}

// start listens on the relay's endpoints (port 0 the first time, the same
// ports after a stop) and serves them.
func (r *fakeRelay) start() {
	t := r.t
	t.Helper()
	r.mu.Lock()
	r.sessions = map[*fakeSession]struct{}{}
	r.routes = map[string]fakeRoute{}
	r.tokens = map[wire.Token]*fakePending{}
	r.conns = map[io.Closer]struct{}{}
	r.accepted = 0
	r.mu.Unlock()
	r.ctx, r.stopC = context.WithCancel(context.Background())
	var err error
	if r.tl, err = net.Listen("tcp", r.addr.Endpoints.ControlTCP); err != nil {
		t.Fatal(err)
	}
	r.addr.Endpoints.ControlTCP = r.tl.Addr().String()
	if r.pl, err = net.Listen("tcp", r.addr.Endpoints.Pairing); err != nil {
		t.Fatal(err)
	}
	r.addr.Endpoints.Pairing = r.pl.Addr().String()
	if r.quic {
		ua, err := net.ResolveUDPAddr("udp", r.addr.Endpoints.Control)
		if err != nil {
			t.Fatal(err)
		}
		if r.qu, err = net.ListenUDP("udp", ua); err != nil {
			t.Fatal(err)
		}
		r.qt = &quic.Transport{Conn: r.qu}
		if r.ql, err = r.qt.Listen(r.tls, &quic.Config{MaxIdleTimeout: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		r.addr.Endpoints.Control = r.qu.LocalAddr().String()
		r.wg.Go(r.acceptQUIC)
	}
	r.wg.Go(r.acceptTCP)
	r.wg.Go(r.acceptPairing)
}

// stop closes every listener, session and connection and waits for the
// fake's goroutines. The routes are forgotten, as by a restarted relay.
func (r *fakeRelay) stop() {
	if r.stopC == nil {
		return
	}
	r.stopC()
	if r.ql != nil {
		r.ql.Close()
	}
	r.tl.Close()
	r.pl.Close()
	r.mu.Lock()
	for c := range r.conns {
		c.Close()
	}
	for _, p := range r.tokens {
		if p.client != nil {
			p.client.Close()
		}
	}
	r.mu.Unlock()
	if r.qt != nil {
		// The transport keeps closed connections around for late packets;
		// close it and the socket so that a restart can bind the port.
		r.qt.Close()
		r.qu.Close()
	}
	r.wg.Wait()
	r.stopC = nil
}

func (r *fakeRelay) restart() {
	r.stop()
	r.start()
}

// track remembers c so that stop closes it; false if the relay is stopping.
func (r *fakeRelay) track(c io.Closer) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ctx.Err() != nil {
		c.Close()
		return false
	}
	r.conns[c] = struct{}{}
	return true
}

func (r *fakeRelay) untrack(c io.Closer) {
	r.mu.Lock()
	delete(r.conns, c)
	r.mu.Unlock()
	c.Close()
}

func (r *fakeRelay) acceptQUIC() {
	for {
		qc, err := r.ql.Accept(r.ctx)
		if err != nil {
			return
		}
		closer := &quicCloser{qc}
		if !r.track(closer) {
			return
		}
		r.wg.Go(func() {
			defer r.untrack(closer)
			st, err := qc.AcceptStream(r.ctx)
			if err != nil {
				return
			}
			r.serve(&fakeSession{r: r, transport: transportQUIC, rw: st, closer: closer})
		})
	}
}

func (r *fakeRelay) acceptTCP() {
	for {
		c, err := r.tl.Accept()
		if err != nil {
			return
		}
		if !r.track(c) {
			return
		}
		r.wg.Go(func() {
			defer r.untrack(c)
			tc := tls.Server(c, r.tls)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				return
			}
			c.SetDeadline(time.Time{})
			r.serve(&fakeSession{r: r, transport: transportTCP, rw: tc, closer: c})
		})
	}
}

type quicCloser struct{ c *quic.Conn }

func (q *quicCloser) Close() error { return q.c.CloseWithError(0, "") }

func (s *fakeSession) write(f wire.Frame) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return wire.WriteFrame(s.rw, f)
}

// serve runs one control session until it fails.
func (r *fakeRelay) serve(s *fakeSession) {
	r.mu.Lock()
	r.sessions[s] = struct{}{}
	r.accepted++
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.sessions, s)
		for name, rt := range r.routes {
			if rt.s == s {
				delete(r.routes, name)
			}
		}
		r.mu.Unlock()
	}()
	var buf []byte
	for {
		f, b, err := wire.ReadFrame(s.rw, buf)
		buf = b[:0]
		if err != nil {
			return
		}
		r.mu.Lock()
		mute := r.mute
		r.mu.Unlock()
		if mute {
			continue
		}
		switch m := f.(type) {
		case wire.Register:
			code := wire.CodeOK
			r.mu.Lock()
			if r.answer != nil {
				code = r.answer(m)
			}
			r.registers = append(r.registers, m)
			if code == wire.CodeOK {
				r.routes[m.Name] = fakeRoute{s: s, reg: m}
			}
			r.mu.Unlock()
			s.write(wire.Result{ReqID: m.ReqID, Code: code})
		case wire.Withdraw:
			code := wire.CodeNotFound
			r.mu.Lock()
			r.withdraws = append(r.withdraws, m.Name)
			if rt, ok := r.routes[m.Name]; ok && rt.s == s {
				delete(r.routes, m.Name)
				code = wire.CodeOK
			}
			r.mu.Unlock()
			s.write(wire.Result{ReqID: m.ReqID, Code: code})
		case wire.Ping:
			s.write(wire.Pong(m))
		}
	}
}

// acceptPairing serves the pairing port.
func (r *fakeRelay) acceptPairing() {
	for {
		c, err := r.pl.Accept()
		if err != nil {
			return
		}
		if !r.track(c) {
			return
		}
		r.wg.Go(func() { r.pair(c) })
	}
}

func (r *fakeRelay) pair(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	pre, err := wire.ReadPreamble(c)
	if err != nil {
		r.untrack(c)
		return
	}
	r.mu.Lock()
	p, ok := r.tokens[pre.Token]
	delete(r.tokens, pre.Token)
	st := r.status
	switch {
	case !ok:
		st = wire.PairUnknown
	case p.name != pre.Name:
		st = wire.PairWrongName
	}
	var gone *fakeSession
	if st == wire.PairOK {
		r.paired++
		if rt, ok := r.routes[pre.Name]; ok && rt.reg.SingleUse {
			delete(r.routes, pre.Name)
			gone = rt.s
		}
	}
	r.mu.Unlock()
	c.Write([]byte{st})
	if st != wire.PairOK || p.client == nil {
		if p != nil && p.client != nil {
			p.client.Close()
		}
		r.untrack(c)
		return
	}
	c.SetDeadline(time.Time{})
	if gone != nil {
		gone.write(wire.RouteGone{Name: pre.Name, Reason: wire.GoneUsed})
	}
	client := p.client
	if !r.track(client) {
		r.untrack(c)
		return
	}
	// Splice the client with the proxy's connection, passing half-closes.
	done := make(chan struct{})
	r.wg.Go(func() {
		defer close(done)
		io.Copy(c, client)
		c.(*net.TCPConn).CloseWrite()
	})
	io.Copy(client, c)
	client.(*net.TCPConn).CloseWrite()
	<-done
	r.untrack(client)
	r.untrack(c)
}

// dial connects a test client to name through the relay: it makes a TCP
// connection standing for the client's, announces it to the session holding
// the route and returns the client's end. The client's bytes reach the proxy
// once it has paired.
func (r *fakeRelay) dial(name string) net.Conn {
	t := r.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	tok := wire.NewToken()
	r.mu.Lock()
	rt, ok := r.routes[name]
	if ok {
		r.tokens[tok] = &fakePending{name: name, client: server}
	}
	r.mu.Unlock()
	if !ok {
		server.Close()
		t.Fatalf("fake relay %s holds no route %s", r.name, name)
	}
	if err := rt.s.write(wire.Incoming{Token: tok, Name: name}); err != nil {
		t.Fatalf("send Incoming: %v", err)
	}
	return client
}

// announce sends a raw Incoming for name on some session, remembering tok
// as issued for issuedFor unless that is empty.
func (r *fakeRelay) announce(tok wire.Token, name, issuedFor, pairAddr string) {
	t := r.t
	t.Helper()
	r.mu.Lock()
	var s *fakeSession
	for fs := range r.sessions {
		s = fs
	}
	if issuedFor != "" {
		r.tokens[tok] = &fakePending{name: issuedFor}
	}
	r.mu.Unlock()
	if s == nil {
		t.Fatalf("fake relay %s has no session", r.name)
	}
	if err := s.write(wire.Incoming{Token: tok, Name: name, PairAddr: pairAddr}); err != nil {
		t.Fatalf("send Incoming: %v", err)
	}
}

// sendAll writes f on every session.
func (r *fakeRelay) sendAll(f wire.Frame) {
	r.mu.Lock()
	ss := make([]*fakeSession, 0, len(r.sessions))
	for s := range r.sessions {
		ss = append(ss, s)
	}
	r.mu.Unlock()
	for _, s := range ss {
		s.write(f)
	}
}

func (r *fakeRelay) hasRoute(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.routes[name]
	return ok
}

func (r *fakeRelay) route(name string) (wire.Register, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rt, ok := r.routes[name]
	return rt.reg, ok
}

func (r *fakeRelay) sessionCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

func (r *fakeRelay) acceptedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

func (r *fakeRelay) sessionTransports() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for s := range r.sessions {
		out = append(out, s.transport)
	}
	return out
}

func (r *fakeRelay) withdrawn(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.withdraws {
		if n == name {
			return true
		}
	}
	return false
}

func (r *fakeRelay) set(f func(r *fakeRelay)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}
