// Package proxy is Kurier's private proxy. It runs at a member (a health
// office or a vendor) that accepts no inbound connections: it dials out to
// every relay, keeps one control session per relay, registers the member's
// routes there, and when a relay announces a waiting client it dials back to
// the relay's pairing port with the one-time token and hands the paired TCP
// connection to a local target. It never terminates the client's TLS: the
// bytes it relays are exactly the bytes the client sent.
//
// # Control sessions
//
// A session is one bidirectional QUIC stream (ALPN pki.ALPNControl, mTLS with
// the relay's member identity pinned) carrying relay/wire control frames both
// ways. The first frame the proxy sends is a Ping, so the relay's AcceptStream
// returns at once. If QUIC does not come up within Config.QUICTimeout the
// proxy dials the relay's ControlTCP endpoint with the same TLS configuration
// and the same framing; a relay that only answered over TCP is dialled over
// TCP first for Config.QUICRetry, then QUIC is tried again on the next
// reconnect. The proxy pings every Config.PingInterval and declares the
// session dead when no frame arrived for three intervals. Lost sessions are
// redialled with jittered exponential backoff; a GoAway from a draining relay
// closes the session and redials after a short delay.
//
// Routes are level-triggered: each session compares the routes the proxy
// holds with the routes it has registered at its relay and sends Register and
// Withdraw frames until they agree, at most one request per name and a
// bounded number in flight. After every (re)connect the set registered at
// that relay is empty, so every route is registered again.
//
// Frames are written by one writer goroutine per session from a bounded
// queue. Nothing waits for room in it: a full queue means the relay stopped
// reading, and the session is closed (proxy_session_closes_total{reason=
// "queue_full"}) and redialled.
//
// # Relayed connections
//
// On Incoming the proxy looks up the route (an expired route, or a single-use
// route already claimed by another pairing, counts as no route), takes one of
// Config.MaxConns slots, connects the local target, dials the pairing address
// (which must be the Pairing endpoint of a known relay), writes the preamble
// in one write and reads one status byte. On PairOK the connection goes to
// the target: a DialTarget is spliced with io.Copy between the two raw
// *net.TCPConns, so Linux moves the bytes with splice(2); a *Listener hands
// out a *Conn from Accept. Half-closes are passed on. A relayed connection
// lives while it is used: it is closed after Config.IdleTimeout without a
// byte either way (Config.Linger once one direction has finished) or at
// Config.MaxAge. Idleness is read from the kernel (TCP_INFO) without touching
// the data path; on systems without TCP_INFO only MaxAge applies.
//
// # Lifecycle
//
// New validates the Config. Run maintains the sessions until its context
// ends or the proxy is shut down; routes can be added before and while it
// runs. Shutdown withdraws every route, closes the sessions and waits for the
// relayed connections; Close stops everything at once.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/pki"
)

// Errors.
var (
	// ErrClosed is returned by Run after Shutdown or Close, and by AddRoute
	// once the proxy is shutting down.
	ErrClosed = errors.New("proxy: closed")
	// ErrNamespace is returned by AddRoute for a name the member may not
	// register: neither its own DNS name nor one label below it.
	ErrNamespace = errors.New("proxy: route name outside the member's namespace")
	// ErrInvalidRoute is returned by AddRoute for a malformed route.
	ErrInvalidRoute = errors.New("proxy: invalid route")
	// ErrTooManyRoutes is returned by AddRoute when Config.MaxRoutes routes
	// are held.
	ErrTooManyRoutes = errors.New("proxy: too many routes")
	// ErrNoRoute is returned by RemoveRoute for a name the proxy does not hold.
	ErrNoRoute = errors.New("proxy: no such route")
)

// RelayAddr names one relay and where it serves.
type RelayAddr struct {
	// Name is the relay's member name; its certificate must carry
	// spiffe://<network>/relay/<Name> and the directory must list it.
	Name string
	// Endpoints are the relay's addresses. Control (UDP), ControlTCP and
	// Pairing are used; Public and Gossip are not.
	Endpoints pki.RelayEndpoints
}

// Config configures a Proxy.
type Config struct {
	// Identity is the member's certificate and key. Required. Its identity
	// decides the namespace the proxy may register routes in.
	Identity *pki.Identity
	// Trust holds the network roots and the directory verifier. Required.
	// Relays are authenticated against it, and if Relays is empty the set
	// of relays follows the directory (members with role relay, not
	// suspended or revoked).
	Trust pki.Trust
	// Relays, if not empty, is the fixed set of relays to keep sessions
	// with; the directory is then only used to authenticate them.
	Relays []RelayAddr

	// DialTimeout bounds TCP dials (control fallback, pairing, dial targets)
	// and the control TLS handshake. If zero, 5s is used.
	DialTimeout time.Duration
	// QUICTimeout bounds a QUIC connection attempt before the proxy falls
	// back to TCP. If zero, 3s is used.
	QUICTimeout time.Duration
	// DisableQUIC makes the proxy use only the TCP+TLS control endpoint.
	DisableQUIC bool
	// QUICRetry is how long a relay that was reached only over TCP is dialled
	// over TCP first before QUIC is tried again. If zero, 10m is used.
	QUICRetry time.Duration
	// PingInterval is how often a Ping is sent on each control session. A
	// session with no frame from the relay for three intervals is closed and
	// redialled. If zero, 15s is used.
	PingInterval time.Duration
	// RequestTimeout bounds the wait for a relay's answer to a Register or
	// Withdraw; a session whose relay does not answer in time is closed. If
	// zero, 10s is used.
	RequestTimeout time.Duration
	// PairTimeout bounds writing the pairing preamble and reading the
	// relay's status byte. If zero, 5s is used.
	PairTimeout time.Duration
	// IdleTimeout closes a relayed connection that moved no byte in either
	// direction for this long. If zero, 5m is used.
	IdleTimeout time.Duration
	// Linger replaces IdleTimeout (if shorter) once one direction of a
	// spliced connection has finished. If zero, 30s is used.
	Linger time.Duration
	// MaxAge closes a relayed connection this long after it was paired, used
	// or not. If zero, 24h is used.
	MaxAge time.Duration
	// MaxConns bounds the relayed connections open at once, pairings in
	// progress included. If zero, 10000 is used.
	MaxConns int
	// MaxRoutes bounds the routes the proxy holds. If zero, 4096 is used.
	MaxRoutes int
	// WriteQueue is the number of frames that may wait for a session's
	// writer; a session whose queue is full is closed. If zero, 256 is used.
	WriteQueue int
	// BackoffMin and BackoffMax bound the jittered exponential delay between
	// connection attempts to one relay. If zero, 250ms and 30s are used.
	BackoffMin, BackoffMax time.Duration

	// Logger receives structured logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the proxy's metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

// maxInflight bounds the Register and Withdraw requests one session has
// waiting for a Result.
const maxInflight = 32

// Proxy is a private proxy. Its methods are safe for concurrent use.
type Proxy struct {
	cfg  Config // immutable after New
	log  *slog.Logger
	m    *metrics
	self pki.ID
	// selfName is the member's DNS name, <name>.<network>: its own route,
	// and the suffix of its one-time routes.
	selfName string

	routes   atomic.Pointer[routeTable] // current routes; replaced whole under routesMu
	routesMu sync.Mutex                 // serializes writers of routes

	changed notifier      // registration state, sessions or relayed conns changed
	wake    chan struct{} // cap 1: routes changed, Run recomputes the expiry timer
	slots   chan struct{} // cap MaxConns: one per tracked relayed connection

	// forceCtx is cancelled by Close or when Shutdown's budget runs out; it
	// aborts dials made for relayed connections.
	forceCtx context.Context
	force    context.CancelFunc

	quit      chan struct{} // closed when the sessions must stop
	quitOnce  sync.Once
	closeOnce sync.Once

	runners sync.WaitGroup // one goroutine per relay, started by Run
	conns   sync.WaitGroup // pairing and splicing goroutines

	mu       sync.Mutex // guards the fields below
	running  bool       // Run was called
	draining bool       // Shutdown or Close began: no new routes or relayed conns
	stopped  bool       // no new relay runners
	relays   map[string]*relayRunner
	tracked  map[*relayed]struct{}
}

// New checks cfg, fills in defaults and returns a Proxy. Nothing runs until
// Run is called.
func New(cfg Config) (*Proxy, error) {
	if cfg.Identity == nil {
		return nil, errors.New("proxy: Config.Identity is required")
	}
	if cfg.Trust.Roots == nil || cfg.Trust.Directory == nil {
		return nil, errors.New("proxy: Config.Trust needs roots and a directory verifier")
	}
	self := cfg.Identity.ID()
	if self.IsZero() {
		return nil, errors.New("proxy: Config.Identity holds no member certificate")
	}
	if self.Network != cfg.Trust.Directory.Network() {
		return nil, fmt.Errorf("proxy: identity %s is not in network %q", self, cfg.Trust.Directory.Network())
	}
	if self.Role == pki.RoleRelay {
		return nil, fmt.Errorf("proxy: identity %s is a relay", self)
	}
	seen := map[string]bool{}
	for _, r := range cfg.Relays {
		if err := pki.ValidName(r.Name); err != nil {
			return nil, fmt.Errorf("proxy: Config.Relays: %w", err)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("proxy: Config.Relays lists %q twice", r.Name)
		}
		seen[r.Name] = true
		for _, a := range []string{r.Endpoints.Pairing, r.Endpoints.ControlTCP} {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("proxy: Config.Relays %q: address %q: %w", r.Name, a, err)
			}
		}
		if !cfg.DisableQUIC {
			if _, _, err := net.SplitHostPort(r.Endpoints.Control); err != nil {
				return nil, fmt.Errorf("proxy: Config.Relays %q: address %q: %w", r.Name, r.Endpoints.Control, err)
			}
		}
	}
	for _, d := range []*time.Duration{&cfg.DialTimeout, &cfg.QUICTimeout, &cfg.QUICRetry, &cfg.PingInterval,
		&cfg.RequestTimeout, &cfg.PairTimeout, &cfg.IdleTimeout, &cfg.Linger, &cfg.MaxAge, &cfg.BackoffMin, &cfg.BackoffMax} {
		if *d < 0 {
			return nil, errors.New("proxy: Config durations must not be negative")
		}
	}
	if cfg.MaxConns < 0 || cfg.MaxRoutes < 0 || cfg.WriteQueue < 0 {
		return nil, errors.New("proxy: Config limits must not be negative")
	}
	setDefault(&cfg.DialTimeout, 5*time.Second)
	setDefault(&cfg.QUICTimeout, 3*time.Second)
	setDefault(&cfg.QUICRetry, 10*time.Minute)
	setDefault(&cfg.PingInterval, 15*time.Second)
	setDefault(&cfg.RequestTimeout, 10*time.Second)
	setDefault(&cfg.PairTimeout, 5*time.Second)
	setDefault(&cfg.IdleTimeout, 5*time.Minute)
	setDefault(&cfg.Linger, 30*time.Second)
	setDefault(&cfg.MaxAge, 24*time.Hour)
	setDefault(&cfg.MaxConns, 10000)
	setDefault(&cfg.MaxRoutes, 4096)
	setDefault(&cfg.WriteQueue, 256)
	setDefault(&cfg.BackoffMin, 250*time.Millisecond)
	setDefault(&cfg.BackoffMax, 30*time.Second)
	if cfg.BackoffMax < cfg.BackoffMin {
		cfg.BackoffMax = cfg.BackoffMin
	}
	cfg.Relays = slices.Clone(cfg.Relays)

	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		cfg:      cfg,
		log:      log.With("component", "proxy"),
		m:        m,
		self:     self,
		selfName: self.DNSName(),
		wake:     make(chan struct{}, 1),
		slots:    make(chan struct{}, cfg.MaxConns),
		quit:     make(chan struct{}),
		relays:   map[string]*relayRunner{},
		tracked:  map[*relayed]struct{}{},
	}
	p.forceCtx, p.force = context.WithCancel(context.Background())
	p.routes.Store(&routeTable{byName: map[string]*routeEntry{}})
	return p, nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// Run keeps a control session with every relay until ctx ends or the proxy
// is shut down, following the directory when Config.Relays is empty. It
// blocks. It returns ErrClosed after Shutdown or Close, and ctx.Err() when
// ctx ends; in both cases the sessions are closed when it returns. Relayed
// connections are not affected by ctx: pass a context that outlives the
// drain and call Shutdown for a graceful stop. Run may be called once.
func (p *Proxy) Run(ctx context.Context) error {
	p.mu.Lock()
	switch {
	case p.draining || p.stopped:
		p.mu.Unlock()
		return ErrClosed
	case p.running:
		p.mu.Unlock()
		return errors.New("proxy: Run called twice")
	}
	p.running = true
	p.mu.Unlock()
	p.log.Info("proxy running", "peer", p.self.String())
	defer p.stopRunners()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var changed <-chan struct{}
		if len(p.cfg.Relays) == 0 {
			// Take the channel before reading the directory so that no
			// version can slip in between.
			changed = p.cfg.Trust.Directory.Changed()
		}
		p.syncRelays(ctx, p.relaySet())
		if next := p.expireRoutes(time.Now()); next > 0 {
			timer.Reset(next)
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.quit:
			return ErrClosed
		case <-changed:
		case <-p.wake:
		case <-timer.C:
		}
	}
}

// relaySet returns the relays the proxy should hold sessions with.
func (p *Proxy) relaySet() map[string]RelayAddr {
	out := map[string]RelayAddr{}
	if len(p.cfg.Relays) > 0 {
		for _, r := range p.cfg.Relays {
			out[r.Name] = r
		}
		return out
	}
	snap := p.cfg.Trust.Directory.Current()
	if snap == nil {
		return out
	}
	for i := range snap.Dir.Members {
		m := &snap.Dir.Members[i]
		if m.Role != pki.RoleRelay || m.Relay == nil || m.Suspended || snap.IsRevoked(m.Name, "") {
			continue
		}
		out[m.Name] = RelayAddr{Name: m.Name, Endpoints: *m.Relay}
	}
	return out
}

// syncRelays starts runners for new relays and stops those for relays that
// left or changed their endpoints.
func (p *Proxy) syncRelays(ctx context.Context, want map[string]RelayAddr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	for name, r := range p.relays {
		if a, ok := want[name]; !ok || a != r.addr {
			r.cancel(errRelayRemoved)
			delete(p.relays, name)
			p.log.Info("relay left", "peer", r.id.String())
		}
	}
	for name, a := range want {
		if _, ok := p.relays[name]; ok {
			continue
		}
		r, err := p.newRunner(a)
		if err != nil { // only a broken Config gets here
			p.log.Error("relay not usable", "peer", name, "err", err)
			continue
		}
		rctx, cancel := context.WithCancelCause(ctx)
		r.cancel = cancel
		p.relays[name] = r
		p.runners.Go(func() { p.runRelay(rctx, r) })
	}
	p.changed.notify()
}

// stopRunners stops every relay runner and waits for them.
func (p *Proxy) stopRunners() {
	p.mu.Lock()
	p.stopped = true
	for name, r := range p.relays {
		r.cancel(errStopping)
		delete(p.relays, name)
	}
	p.mu.Unlock()
	p.runners.Wait()
	p.changed.notify()
}

// stop ends Run and the sessions, and waits for them.
func (p *Proxy) stop() {
	p.quitOnce.Do(func() { close(p.quit) })
	p.stopRunners()
}

// Shutdown stops the proxy gracefully: it refuses new routes and relayed
// connections, withdraws every route at every relay (so relays stop
// announcing clients), closes the control sessions and waits for the relayed
// connections to end. If ctx ends first it force-closes them and returns
// ctx.Err(). Connections handed out by a Listener count until their user
// closes them.
func (p *Proxy) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
	p.log.Info("proxy shutting down")

	p.clearRoutes()
	wctx, cancel := context.WithTimeout(ctx, p.cfg.RequestTimeout)
	_ = p.waitFor(wctx, p.nothingRegistered) // best effort: closing the sessions drops the routes too
	cancel()
	p.stop()

	err := p.waitFor(ctx, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.tracked) == 0
	})
	if err != nil {
		p.forceClose()
	}
	p.conns.Wait()
	return err
}

// Close stops the proxy at once: it closes the control sessions and every
// relayed connection, and waits for its goroutines. It is idempotent and
// returns nil.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.draining = true
		p.mu.Unlock()
		p.stop()
		p.forceClose()
		p.conns.Wait()
	})
	return nil
}

// forceClose aborts pending dials and closes every tracked relayed
// connection.
func (p *Proxy) forceClose() {
	p.force()
	p.mu.Lock()
	rcs := make([]*relayed, 0, len(p.tracked))
	for rc := range p.tracked {
		rcs = append(rcs, rc)
	}
	p.mu.Unlock()
	for _, rc := range rcs {
		rc.close(relayedShutdown)
	}
}

// waitFor waits until cond holds or ctx ends. cond is re-checked whenever
// p.changed is notified.
func (p *Proxy) waitFor(ctx context.Context, cond func() bool) error {
	for {
		ch := p.changed.wait()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sessions returns the established control sessions.
func (p *Proxy) sessions() []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*session, 0, len(p.relays))
	for _, r := range p.relays {
		if s := r.session(); s != nil {
			out = append(out, s)
		}
	}
	return out
}

// Status is a snapshot of the proxy's state.
type Status struct {
	// Routes is the number of routes the proxy holds.
	Routes int
	// Relays lists every relay the proxy keeps a session with, by name.
	Relays []RelayStatus
	// Conns is the number of relayed connections open or being paired.
	Conns int
}

// RelayStatus is the state of one relay's control session.
type RelayStatus struct {
	Name string
	// Connected reports whether a control session is established.
	Connected bool
	// Transport is "quic" or "tcp" while connected.
	Transport string
	// Since is when the current session was established.
	Since time.Time
	// Routes is the number of routes registered at this relay.
	Routes int
	// LastError is the last reason a connection attempt or session failed.
	LastError string
}

// Ready reports whether some relay is connected and holds every route the
// proxy holds: the member is reachable. It is meant for /readyz.
func (s Status) Ready() bool {
	for _, r := range s.Relays {
		if r.Connected && r.Routes >= s.Routes {
			return true
		}
	}
	return false
}

// Status returns a snapshot of the proxy's sessions and routes.
func (p *Proxy) Status() Status {
	st := Status{Routes: len(p.routes.Load().byName)}
	p.mu.Lock()
	st.Conns = len(p.tracked)
	runners := make([]*relayRunner, 0, len(p.relays))
	for _, r := range p.relays {
		runners = append(runners, r)
	}
	p.mu.Unlock()
	for _, r := range runners {
		st.Relays = append(st.Relays, r.status())
	}
	slices.SortFunc(st.Relays, func(a, b RelayStatus) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// Registered returns the number of relays at which the route name is
// currently registered.
func (p *Proxy) Registered(name string) int {
	n := 0
	for _, s := range p.sessions() {
		if s.holds(name) {
			n++
		}
	}
	return n
}

// notifier wakes every waiter when something changed. The zero value is
// ready to use.
type notifier struct {
	mu sync.Mutex    // guards ch
	ch chan struct{} // closed and replaced by notify
}

// wait returns a channel that is closed by the next notify.
func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
