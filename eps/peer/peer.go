// Package peer is the transport between endpoint servers: HTTP/2 spoken
// directly inside mutual TLS 1.3 (ALPN kurier-peer/1), dialled through the
// public relays and received through the member's private proxy.
//
// The client keeps one connection per peer member and reuses it while it can
// take requests; a connection is closed after IdleTimeout without requests
// and replaced once it is MaxAge old. Both ends check each other against the
// network roots and the signed directory on every handshake (pki), so the
// caller of a request is the verified peer certificate: handlers read it
// with Caller.
package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"golang.org/x/net/http2"

	"github.com/kurier-net/kurier/pki"
)

// Errors.
var (
	ErrServerClosed = errors.New("peer: server closed")
	ErrClientClosed = errors.New("peer: client closed")
	// ErrUnreachable is returned when no relay could connect to the peer.
	ErrUnreachable = errors.New("peer: member unreachable through any relay")
)

// Caller returns the verified identity of the member that sent r.
func Caller(r *http.Request) (pki.ID, error) {
	if r.TLS == nil {
		return pki.ID{}, errors.New("peer: request did not arrive over TLS")
	}
	return pki.PeerID(*r.TLS)
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Identity is this member's certificate. Required.
	Identity *pki.Identity
	// Trust checks callers against the roots and the directory. Required.
	Trust pki.Trust
	// Handler serves the requests. Required.
	Handler http.Handler
	// HandshakeTimeout bounds the TLS handshake. If zero, 10s is used.
	HandshakeTimeout time.Duration
	// IdleTimeout closes a connection without open streams after this long.
	// If zero, 2m is used (longer than the client's, so the client closes
	// first).
	IdleTimeout time.Duration
	// MaxConcurrentStreams bounds requests in flight per connection. If
	// zero, 250 is used.
	MaxConcurrentStreams uint32
	// MaxConns bounds open peer connections. If zero, 4096 is used.
	MaxConns int
	// Logger receives logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

// Server serves peer connections. It behaves like http.Server: Serve blocks,
// Shutdown drains, Close stops at once.
type Server struct {
	cfg   ServerConfig
	tls   *tls.Config
	h2    *http2.Server
	base  *http.Server // carries the shutdown hook that sends GOAWAY
	log   *slog.Logger
	slots chan struct{}

	conns      *prometheus.CounterVec
	handshakes prometheus.Histogram

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	closed bool
	lns    map[net.Listener]struct{}
	open   map[*tls.Conn]struct{}
}

// NewServer checks cfg and returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Handler == nil {
		return nil, errors.New("peer: ServerConfig.Handler is required")
	}
	tc, err := pki.ServerConfig(cfg.Identity, cfg.Trust, []string{pki.ALPNPeer}, nil)
	if err != nil {
		return nil, err
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.MaxConcurrentStreams == 0 {
		cfg.MaxConcurrentStreams = 250
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 4096
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(cfg.Registerer)
	ctx, cancel := context.WithCancel(context.Background())
	h2 := &http2.Server{MaxConcurrentStreams: cfg.MaxConcurrentStreams, IdleTimeout: cfg.IdleTimeout, MaxReadFrameSize: 1 << 20}
	base := &http.Server{Handler: cfg.Handler, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	if err := http2.ConfigureServer(base, h2); err != nil {
		cancel()
		return nil, err
	}
	return &Server{
		cfg:   cfg,
		tls:   tc,
		h2:    h2,
		base:  base,
		log:   log.With("component", "peer_server"),
		slots: make(chan struct{}, cfg.MaxConns),
		conns: f.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_peer_connections_total",
			Help: "Incoming peer connections by outcome: ok, handshake_error, over_limit.",
		}, []string{"result"}),
		handshakes: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "eps_tls_handshake_duration_seconds",
			Help:    "Server-side TLS handshake time of peer connections.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		ctx: ctx, cancel: cancel,
		lns:  map[net.Listener]struct{}{},
		open: map[*tls.Conn]struct{}{},
	}, nil
}

// Serve accepts peer connections on ln until Shutdown or Close. It closes ln
// on return.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.lns, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || s.isClosed() {
				return ErrServerClosed
			}
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		select {
		case s.slots <- struct{}{}:
		default:
			s.conns.WithLabelValues("over_limit").Inc()
			c.Close()
			continue
		}
		if !s.goConn(func() { defer func() { <-s.slots }(); s.serveConn(c) }) {
			<-s.slots
			c.Close()
			return ErrServerClosed
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) goConn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Go(f)
	return true
}

func (s *Server) serveConn(c net.Conn) {
	tc := tls.Server(c, s.tls)
	start := time.Now()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.conns.WithLabelValues("handshake_error").Inc()
		s.log.Debug("peer handshake failed", "remote_addr", c.RemoteAddr().String(), "err", err)
		c.Close()
		return
	}
	s.handshakes.Observe(time.Since(start).Seconds())
	s.conns.WithLabelValues("ok").Inc()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		tc.Close()
		return
	}
	s.open[tc] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.open, tc)
		s.mu.Unlock()
		tc.Close()
	}()
	s.h2.ServeConn(tc, &http2.ServeConnOpts{Context: s.ctx, BaseConfig: s.base, Handler: s.cfg.Handler})
}

// Shutdown stops accepting and waits for open connections to finish their
// requests; HTTP/2 connections are told to go away. If ctx ends first it
// closes everything and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	// The base server's shutdown hook makes every HTTP/2 connection send
	// GOAWAY: clients stop starting requests on it, finished ones end.
	s.base.Shutdown(ctx)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes listeners and connections at once and waits for the
// connection goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Identity is this member's certificate. Required.
	Identity *pki.Identity
	// Trust checks peers against the roots and the directory. Required.
	Trust pki.Trust
	// Relays returns the public addresses of the relays to reach peers
	// through, in any order; the client tries them in a random rotation.
	// If nil, the relays of the current directory are used.
	Relays func() []string
	// DialTimeout bounds connecting and the TLS handshake through one
	// relay. If zero, 10s is used.
	DialTimeout time.Duration
	// IdleTimeout closes a connection with no request for this long. If
	// zero, 90s is used.
	IdleTimeout time.Duration
	// MaxAge replaces a connection this old with a fresh one (new
	// handshake, fresh revocation check). If zero, 1h is used.
	MaxAge time.Duration
	// Logger receives logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

// Client sends requests to other members, reusing one connection per peer.
// It is safe for concurrent use.
type Client struct {
	cfg   ClientConfig
	t     *http2.Transport
	log   *slog.Logger
	dials *prometheus.CounterVec

	closed atomic.Bool

	mu    sync.Mutex // guards conns
	conns map[pki.ID]*peerConn
}

// peerConn is the connection to one peer, or a dial in progress.
type peerConn struct {
	ready   chan struct{} // closed when the dial finished
	cc      *http2.ClientConn
	err     error
	created time.Time
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Identity == nil || cfg.Trust.Roots == nil || cfg.Trust.Directory == nil {
		return nil, errors.New("peer: ClientConfig needs an identity and trust")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = time.Hour
	}
	if cfg.Relays == nil {
		v := cfg.Trust.Directory
		cfg.Relays = func() []string { return DirectoryRelays(v) }
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(cfg.Registerer)
	return &Client{
		cfg: cfg,
		t: &http2.Transport{
			IdleConnTimeout:  cfg.IdleTimeout,
			ReadIdleTimeout:  30 * time.Second, // ping a silent connection
			PingTimeout:      10 * time.Second,
			WriteByteTimeout: 30 * time.Second,
		},
		log: log.With("component", "peer_client"),
		dials: f.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_peer_dials_total",
			Help: "Outgoing peer connection attempts by result: ok, error.",
		}, []string{"result"}),
		conns: map[pki.ID]*peerConn{},
	}, nil
}

// DirectoryRelays returns the public addresses of the relays in the current
// directory that are not suspended or revoked.
func DirectoryRelays(v *pki.Verifier) []string {
	snap := v.Current()
	if snap == nil {
		return nil
	}
	var out []string
	for _, m := range snap.Dir.Members {
		if m.Role == pki.RoleRelay && m.Relay != nil && !m.Suspended && !snap.IsRevoked(m.Name, "") {
			out = append(out, m.Relay.Public)
		}
	}
	return out
}

// Do sends req to the member to and returns its response. req's URL host
// is ignored; the connection decides where it goes. The caller closes the
// response body.
func (c *Client) Do(ctx context.Context, to pki.ID, req *http.Request) (*http.Response, error) {
	if c.closed.Load() {
		return nil, ErrClientClosed
	}
	req = req.WithContext(ctx)
	req.URL.Scheme, req.URL.Host, req.Host = "https", to.DNSName(), to.DNSName()
	for attempt := 0; ; attempt++ {
		cc, err := c.conn(ctx, to)
		if err != nil {
			return nil, err
		}
		resp, err := cc.RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		// Only a request the connection could not take at all is retried
		// on a fresh one: anything that may have reached the peer is the
		// caller's to decide (a sync call is at most once).
		c.drop(to, cc)
		if attempt > 0 || !errors.Is(err, http2.ErrNoCachedConn) || (req.Body != nil && req.GetBody == nil) {
			return nil, err
		}
		if req.GetBody != nil {
			if req.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
	}
}

// conn returns a usable connection to the peer, dialling at most once at a
// time per peer.
func (c *Client) conn(ctx context.Context, to pki.ID) (*http2.ClientConn, error) {
	for {
		c.mu.Lock()
		pc := c.conns[to]
		if pc == nil {
			pc = &peerConn{ready: make(chan struct{})}
			c.conns[to] = pc
			c.mu.Unlock()
			pc.cc, pc.err = c.dial(ctx, to)
			pc.created = time.Now()
			close(pc.ready)
			if pc.err != nil {
				c.mu.Lock()
				if c.conns[to] == pc {
					delete(c.conns, to)
				}
				c.mu.Unlock()
				return nil, pc.err
			}
			return pc.cc, nil
		}
		c.mu.Unlock()
		select {
		case <-pc.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if pc.err == nil && pc.cc.CanTakeNewRequest() && time.Since(pc.created) < c.cfg.MaxAge {
			return pc.cc, nil
		}
		c.drop(to, pc.cc) // stale, failed or too old: dial again
	}
}

// drop forgets cc as the connection to the peer; it finishes its streams in
// the background.
func (c *Client) drop(to pki.ID, cc *http2.ClientConn) {
	c.mu.Lock()
	if pc := c.conns[to]; pc != nil {
		select {
		case <-pc.ready:
			if pc.cc == cc {
				delete(c.conns, to)
			}
		default:
		}
	}
	c.mu.Unlock()
	if cc != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if cc.Shutdown(ctx) != nil {
				cc.Close()
			}
		}()
	}
}

// dial connects to the peer through the relays, trying each once in a
// random rotation.
func (c *Client) dial(ctx context.Context, to pki.ID) (*http2.ClientConn, error) {
	relays := c.cfg.Relays()
	if len(relays) == 0 {
		return nil, fmt.Errorf("%w: no relay in the directory", ErrUnreachable)
	}
	tc, err := pki.ClientConfig(c.cfg.Identity, c.cfg.Trust, to, []string{pki.ALPNPeer}, nil)
	if err != nil {
		return nil, err
	}
	start := rand.IntN(len(relays))
	var errs []error
	for i := range relays {
		addr := relays[(start+i)%len(relays)]
		dctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		d := tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 30 * time.Second}, Config: tc}
		conn, err := d.DialContext(dctx, "tcp", addr)
		cancel()
		if err != nil {
			c.dials.WithLabelValues("error").Inc()
			errs = append(errs, fmt.Errorf("via %s: %w", addr, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		cc, err := c.t.NewClientConn(conn)
		if err != nil {
			conn.Close()
			c.dials.WithLabelValues("error").Inc()
			errs = append(errs, err)
			continue
		}
		c.dials.WithLabelValues("ok").Inc()
		return cc, nil
	}
	return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, to, errors.Join(errs...))
}

// Close closes every connection. Requests in flight fail.
func (c *Client) Close() error {
	c.closed.Store(true)
	c.mu.Lock()
	conns := c.conns
	c.conns = map[pki.ID]*peerConn{}
	c.mu.Unlock()
	for _, pc := range conns {
		<-pc.ready
		if pc.cc != nil {
			pc.cc.Close()
		}
	}
	return nil
}

// Conns returns the number of peer connections held (for status and tests).
func (c *Client) Conns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}
