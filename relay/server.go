// Package relay is Kurier's public relay. It accepts client TCP connections,
// reads the TLS ClientHello without terminating TLS, and routes by SNI to a
// member whose private proxy holds a control session with the relay: it
// announces the client with a fresh single-use token, pairs the proxy's
// dial-back connection with the client, forwards the ClientHello bytes it
// read and splices the two raw TCP connections in the kernel.
//
// The relay holds nothing durable. Routes live only as long as the control
// sessions that registered them; a restarted relay is back in service as soon
// as the private proxies reconnect. Several relays share which relay holds
// which member through a Cluster (see relay/cluster).
//
// The control protocol and the pairing preamble are in relay/wire; the
// ClientHello parser is relay/sni. docs/relay.md has the byte layouts and the
// threat model.
package relay

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/quic-go/quic-go"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/wire"
)

// ErrServerClosed is returned by the Serve methods after Shutdown or Close.
var ErrServerClosed = errors.New("relay: server closed")

// ErrNoRoute is returned when no relay holds a route for a name.
var ErrNoRoute = errors.New("relay: no route for server name")

// Cluster shares route holdings between relays. The relay tells it which
// names it holds locally, asks it to forward an announcement for a name
// held by another relay, and tells a relay that forwarded an announcement
// here when it will not be answered. A nil Cluster means a single relay.
type Cluster interface {
	// Announce reports that this relay now holds (held) or no longer holds
	// a route for name. It must not block.
	Announce(name string, held bool)
	// Forward delivers in to the relay that holds a session for in.Name, which
	// passes it to the member's private proxy. It returns ErrNoRoute if no
	// relay holds the name.
	Forward(ctx context.Context, in wire.Incoming) error
	// Refuse tells the relay named to that the announcements with tokens,
	// which it forwarded here (Server.Deliver), will not be answered: the
	// member withdrew their route before its proxy dialled back. That
	// relay refuses their clients (Server.Refused). It must not block; a
	// notice it cannot send is dropped, and those clients wait out their
	// PairTimeout.
	Refuse(to string, tokens []wire.Token)
}

// Config configures a relay Server.
type Config struct {
	// Identity is the relay's own certificate (role relay). Required.
	Identity *pki.Identity
	// Trust holds the network roots and the directory verifier. Required.
	Trust pki.Trust
	// PairAddr is the pairing address this relay advertises when another
	// relay forwards an announcement on its behalf. If empty, the Pairing
	// endpoint of this relay's directory entry is used.
	PairAddr string
	// HelloTimeout bounds reading the ClientHello. If zero, 5s is used.
	HelloTimeout time.Duration
	// PairTimeout bounds how long a client waits for the member's proxy
	// to dial back, and how long a token stays valid. If zero, 5s is used.
	PairTimeout time.Duration
	// HandshakeTimeout bounds the control session's TLS handshake. If zero,
	// 10s is used.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a relayed connection after no byte moved in either
	// direction for this long. If zero, 5m is used.
	IdleTimeout time.Duration
	// MaxAge closes a relayed connection this long after it was paired. If
	// zero, 24h is used.
	MaxAge time.Duration
	// SessionTimeout closes a control session from which no frame arrived
	// for this long. Private proxies ping every 15s. If zero, 60s is used.
	SessionTimeout time.Duration
	// MaxConns bounds client connections (waiting and relayed). If zero,
	// 20000 is used.
	MaxConns int
	// MaxConnRate bounds new client connections per source IP per second.
	// If zero, 100 is used; negative disables the limit.
	MaxConnRate int
	// MaxPending bounds pairings in progress in total; MaxPendingPerMember
	// per member. If zero, 8192 and 2048 are used. A pairing lasts one
	// round trip to the member's proxy, so these bound bursts of new
	// connections, not open ones. MaxPending also bounds the announcements
	// other relays forwarded here that this relay remembers for
	// PairTimeout, to refuse their clients if the member withdraws the
	// route.
	MaxPending, MaxPendingPerMember int
	// MaxRoutesPerMember bounds registered routes per member. If zero,
	// 4096 is used.
	MaxRoutesPerMember int
	// MaxSessionsPerMember bounds control sessions per member. If zero, 4
	// is used.
	MaxSessionsPerMember int
	// MaxRouteTTL bounds the lifetime of one-time routes. If zero, 30 days
	// is used.
	MaxRouteTTL time.Duration
	// QUIC configures the control listener's QUIC transport. If nil,
	// defaults suited to long-lived control sessions are used.
	QUIC *quic.Config
	// Cluster shares routes with other relays. Optional.
	Cluster Cluster
	// Logger receives structured logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

// Server is a relay. Create it with New, then run any of ServePublic,
// ServePairing, ServeControlQUIC and ServeControlTCP on listeners the caller
// opened; stop it with Shutdown or Close.
type Server struct {
	cfg     Config // immutable after New
	self    pki.ID
	log     *slog.Logger
	m       *metrics
	quicCfg *quic.Config

	slots   chan struct{} // client connection slots
	limiter *rateLimiter
	routes  *routeTable

	ctx    context.Context // cancelled by Close; ends every connection
	cancel context.CancelFunc

	draining atomic.Bool
	conns    sync.WaitGroup // connection and session goroutines

	mu        sync.Mutex // guards the fields below
	closed    bool
	listeners map[any]func() error // close funcs of serving listeners
	sessions  map[*session]struct{}
	pending   map[[16]byte]*pending
	forwarded *forwardLog // announcements delivered for other relays; nil without a Cluster
	pairs     map[*pair]struct{}

	closeOnce sync.Once
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Identity == nil || cfg.Identity.Certificate() == nil {
		return nil, errors.New("relay: Config.Identity is required")
	}
	if cfg.Trust.Roots == nil || cfg.Trust.Directory == nil {
		return nil, errors.New("relay: Config.Trust needs roots and a directory verifier")
	}
	self := cfg.Identity.ID()
	if self.Role != pki.RoleRelay {
		return nil, errors.New("relay: Config.Identity must be a certificate with role relay")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	def(&cfg.HelloTimeout, 5*time.Second)
	def(&cfg.PairTimeout, 5*time.Second)
	def(&cfg.HandshakeTimeout, 10*time.Second)
	def(&cfg.IdleTimeout, 5*time.Minute)
	def(&cfg.MaxAge, 24*time.Hour)
	def(&cfg.SessionTimeout, 60*time.Second)
	def(&cfg.MaxRouteTTL, 30*24*time.Hour)
	defInt(&cfg.MaxConns, 20000)
	defInt(&cfg.MaxConnRate, 100)
	defInt(&cfg.MaxPending, 8192)
	defInt(&cfg.MaxPendingPerMember, 2048)
	defInt(&cfg.MaxRoutesPerMember, 4096)
	defInt(&cfg.MaxSessionsPerMember, 4)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	qc := cfg.QUIC
	if qc == nil {
		qc = &quic.Config{
			MaxIdleTimeout:        cfg.SessionTimeout,
			KeepAlivePeriod:       15 * time.Second,
			MaxIncomingStreams:    1,
			MaxIncomingUniStreams: -1,
			HandshakeIdleTimeout:  cfg.HandshakeTimeout,
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		self:      self,
		log:       log.With("component", "relay"),
		quicCfg:   qc,
		slots:     make(chan struct{}, cfg.MaxConns),
		routes:    newRouteTable(),
		ctx:       ctx,
		cancel:    cancel,
		listeners: map[any]func() error{},
		sessions:  map[*session]struct{}{},
		pending:   map[[16]byte]*pending{},
		pairs:     map[*pair]struct{}{},
	}
	if cfg.MaxConnRate > 0 {
		s.limiter = newRateLimiter(cfg.MaxConnRate)
	}
	if cfg.Cluster != nil {
		s.forwarded = newForwardLog(cfg.MaxPending)
	}
	s.m = newMetrics(promauto.With(cfg.Registerer), s)
	s.conns.Go(s.watchDirectory)
	s.conns.Go(s.sweepRoutes)
	s.conns.Go(s.reapPairs)
	return s, nil
}

// trackListener registers a listener's close function; it returns false if
// the server is already closed.
func (s *Server) trackListener(key any, closeFn func() error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining.Load() {
		return false
	}
	s.listeners[key] = closeFn
	return true
}

func (s *Server) untrackListener(key any) {
	s.mu.Lock()
	delete(s.listeners, key)
	s.mu.Unlock()
}

// acceptLoop runs accept until it fails, backing off on temporary errors.
func (s *Server) acceptLoop(ln net.Listener, handle func(net.Conn)) error {
	if !s.trackListener(ln, ln.Close) {
		ln.Close()
		return ErrServerClosed
	}
	defer s.untrackListener(ln)
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.isClosing() {
				return ErrServerClosed
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed; backing off", "err", err, "retry_in", delay)
				select {
				case <-time.After(delay):
				case <-s.ctx.Done():
					return ErrServerClosed
				}
				continue
			}
			return err
		}
		delay = 0
		if !s.goConn(func() { handle(c) }) {
			c.Close()
			return ErrServerClosed
		}
	}
}

// goConn runs f in a goroutine Close waits for. It refuses once Close has
// begun, so no Add can race with Close's Wait.
func (s *Server) goConn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns.Go(f)
	return true
}

func isTemporary(err error) bool {
	t, ok := errors.AsType[interface {
		error
		Temporary() bool
	}](err)
	return ok && t.Temporary()
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.draining.Load()
}

// Ready reports whether the relay can route: it holds a directory that has
// not expired and it is not draining.
func (s *Server) Ready() error {
	if s.draining.Load() {
		return errors.New("relay: draining")
	}
	snap := s.cfg.Trust.Directory.Current()
	if snap == nil {
		return pki.ErrNoDirectory
	}
	if !time.Now().Before(snap.Dir.ExpiresAt) {
		return pki.ErrDirectoryExpired
	}
	return nil
}

// AdminHandler serves /healthz (the process runs) and /readyz (the relay
// can route). Metrics are served by main from the Registerer it passed in.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}

// Shutdown stops accepting, tells every control session to go away, stops
// announcing new connections, and waits for relayed connections to end. If
// ctx ends first, it closes everything and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining.Store(true)
	closers := make([]func() error, 0, len(s.listeners))
	for _, c := range s.listeners {
		closers = append(closers, c)
	}
	sessions := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, c := range closers {
		c()
	}
	for _, ss := range sessions {
		ss.send(wire.GoAway{Message: "relay shutting down"})
	}
	s.log.Info("draining", "sessions", len(sessions))
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.pairs) + len(s.pending)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-t.C:
		}
	}
	s.Close()
	return nil
}

// Close stops at once: listeners, sessions and relayed connections are
// closed. It waits for the server's goroutines and is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		closers := make([]func() error, 0, len(s.listeners))
		for _, c := range s.listeners {
			closers = append(closers, c)
		}
		s.mu.Unlock()
		s.cancel()
		for _, c := range closers {
			c()
		}
		s.conns.Wait()
	})
	return nil
}

type metrics struct {
	connections   *prometheus.CounterVec
	pairings      *prometheus.CounterVec
	registrations *prometheus.CounterVec
	sessionsEnded *prometheus.CounterVec
	sessions      *prometheus.GaugeVec
	bytes         *prometheus.CounterVec
	pairLatency   prometheus.Histogram
	frames        *prometheus.CounterVec
	forgotten     prometheus.Counter
}

func newMetrics(f promauto.Factory, s *Server) *metrics {
	m := &metrics{
		connections: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_connections_total",
			Help: "Client connections by outcome: routed, no_route, bad_hello, hello_timeout, over_limit, rate_limited, pair_timeout, pair_refused, pending_limit, draining, error.",
		}, []string{"result"}),
		pairings: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_pairings_total",
			Help: "Dial-backs on the pairing port by outcome: ok, unknown_token, wrong_route, bad_preamble, timeout, over_limit.",
		}, []string{"result"}),
		registrations: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_registrations_total",
			Help: "Route registrations and withdrawals by result code.",
		}, []string{"op", "result"}),
		sessionsEnded: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_control_sessions_ended_total",
			Help: "Control sessions ended, by reason: closed, timeout, revoked, protocol_error, queue_full, over_limit, shutdown, refused.",
		}, []string{"reason"}),
		sessions: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_control_sessions",
			Help: "Open control sessions by transport.",
		}, []string{"transport"}),
		bytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_relayed_bytes_total",
			Help: "Bytes relayed, by direction (to_member, to_client).",
		}, []string{"direction"}),
		pairLatency: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_pairing_duration_seconds",
			Help:    "Time from the end of the ClientHello to a paired connection.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		frames: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_control_frames_dropped_total",
			Help: "Control frames not sent, by reason.",
		}, []string{"reason"}),
		forgotten: f.NewCounter(prometheus.CounterOpts{
			Name: "relay_forwarded_forgotten_total",
			Help: "Announcements forwarded here by other relays that were forgotten before PairTimeout because MaxPending were remembered (oldest first); if the member withdraws their route, their clients wait out PairTimeout.",
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_active_connections",
		Help: "Relayed (paired) connections open now.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.pairs))
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_pending_pairings",
		Help: "Clients waiting for their member to dial back.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.pending))
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_routes",
		Help: "Routes registered at this relay.",
	}, func() float64 { return float64(s.routes.len()) })
	return m
}
