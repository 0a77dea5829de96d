// Package eps is the endpoint server: what a health office or a vendor runs
// next to its own software.
//
// Local software talks JSON-RPC 2.0 to it on loopback (IRIS connect's
// calling convention: "<member>.<service>" calls another member's service;
// methods starting with '_' are answered by the endpoint server itself).
// Calls to other members leave through a relay as HTTP/2 inside mutual TLS
// pinned to the signed directory (eps/peer); their payloads are sealed with
// HPKE to the recipient's directory key and signed by the sender (eps/seal).
// Asynchronous messages are stored durably before they are acknowledged and
// delivered at least once; the receiver deduplicates, so its software sees
// each message once (eps/store). Incoming calls reach local software by a
// callback URL or by long-poll.
//
// docs/eps.md is the user guide and API reference; docs/eps-design.md the
// formats.
package eps

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/peer"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
)

// ErrServerClosed is returned by the Serve methods after Shutdown or Close.
var ErrServerClosed = errors.New("eps: server closed")

// Config configures a Server.
type Config struct {
	// Identity is this member's certificate. Required.
	Identity *pki.Identity
	// Trust holds the network roots and the directory verifier. Required.
	Trust pki.Trust
	// SealKeys open payloads sealed to this member. Required unless
	// PassSealed is set.
	SealKeys []pki.SealPrivateKey
	// Store is the durable outbox and inbox. Required; the caller opens and
	// closes it.
	Store *store.Store
	// Relays returns the relays' public addresses for outgoing calls. If
	// nil, the relays of the current directory are used.
	Relays func() []string

	// Callback is the URL incoming messages are POSTed to as JSON-RPC
	// requests. If empty, local software fetches them with _poll.
	Callback string
	// CallbackToken, if set, is sent as a bearer token with callbacks.
	CallbackToken string
	// CallbackTimeout bounds one callback request. If zero, 30s is used.
	CallbackTimeout time.Duration
	// PassSealed hands incoming payloads to local software still sealed
	// (software that keeps the seal key itself); the signature is checked
	// either way.
	PassSealed bool

	// Token, if set, is required as a bearer token on the local API.
	Token string
	// LocalHosts are host names the local API answers besides localhost
	// and loopback addresses (for an API deliberately reachable by another
	// name). Other Host headers are refused, against DNS rebinding.
	LocalHosts []string
	// Status, if set, adds the private proxy's state (relays, transports,
	// routes) to _status.
	Status func() any
	// SyncTimeout bounds a synchronous call end to end. If zero, 30s.
	SyncTimeout time.Duration
	// DefaultDeadline is the delivery deadline of an asynchronous message
	// that names none. If zero, 24h; MaxDeadline bounds named ones (30
	// days if zero).
	DefaultDeadline, MaxDeadline time.Duration
	// MaxBody bounds local requests and peer messages. If zero, 8 MiB.
	MaxBody int64
	// PeerConcurrency bounds requests from one peer member handled at once
	// (more wait up to 5s for a slot); PeerRate their rate per second, with
	// a burst of the same size, beyond which requests are refused (429). If
	// zero, 64 and 10000: the rate stops floods, not legitimate volume.
	PeerConcurrency int
	PeerRate        float64
	// RetryMin and RetryMax bound the delivery backoff. If zero, 1s and 5m.
	RetryMin, RetryMax time.Duration

	// Links, if set, turns on one-time submission links (_link) for a
	// health office.
	Links *LinkConfig

	// Logger receives logs. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

// Server is an endpoint server. Create it with New, run Run in a goroutine,
// serve the local API with ServeLocal and the peer protocol with ServePeer
// (on the private proxy's listener), and stop with Shutdown or Close.
type Server struct {
	cfg      Config
	self     pki.ID
	log      *slog.Logger
	m        *metrics
	sealer   *seal.Sealer
	verify   *seal.Verifier
	client   *peer.Client
	peerSrv  *peer.Server
	local    *http.Server
	limits   *peerLimits
	cbClient *http.Client // callbacks to local software
	links    *links       // nil unless Config.Links

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	kickOut chan struct{} // outbox has new work
	kickIn  chan struct{} // inbox has new work
	inbox   *localQueue   // what local software has not fetched yet (poll mode)

	mu     sync.Mutex // guards closed
	closed bool
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Identity == nil || cfg.Identity.Certificate() == nil {
		return nil, errors.New("eps: Config.Identity is required")
	}
	if cfg.Trust.Roots == nil || cfg.Trust.Directory == nil {
		return nil, errors.New("eps: Config.Trust needs roots and a directory")
	}
	if cfg.Store == nil {
		return nil, errors.New("eps: Config.Store is required")
	}
	if len(cfg.SealKeys) == 0 && !cfg.PassSealed {
		return nil, errors.New("eps: Config.SealKeys is required unless PassSealed is set")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.CallbackTimeout, 30*time.Second)
	def(&cfg.SyncTimeout, 30*time.Second)
	def(&cfg.DefaultDeadline, 24*time.Hour)
	def(&cfg.MaxDeadline, 30*24*time.Hour)
	def(&cfg.RetryMin, time.Second)
	def(&cfg.RetryMax, 5*time.Minute)
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 8 << 20
	}
	if cfg.PeerConcurrency <= 0 {
		cfg.PeerConcurrency = 64
	}
	if cfg.PeerRate <= 0 {
		cfg.PeerRate = 10000
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:     cfg,
		self:    cfg.Identity.ID(),
		log:     log.With("component", "eps"),
		kickOut: make(chan struct{}, 1),
		kickIn:  make(chan struct{}, 1),
		inbox:   newLocalQueue(),
		limits:  newPeerLimits(cfg.PeerConcurrency, cfg.PeerRate),
		cbClient: &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 16, IdleConnTimeout: time.Minute, ResponseHeaderTimeout: cfg.CallbackTimeout,
		}},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.m = newMetrics(promauto.With(cfg.Registerer))
	var err error
	if s.sealer, err = seal.NewSealer(seal.SealerConfig{}); err != nil {
		return nil, err
	}
	if s.verify, err = seal.NewVerifier(seal.VerifyOptions{Trust: cfg.Trust}); err != nil {
		return nil, err
	}
	if s.client, err = peer.NewClient(peer.ClientConfig{
		Identity: cfg.Identity, Trust: cfg.Trust, Relays: cfg.Relays,
		Logger: cfg.Logger, Registerer: cfg.Registerer,
	}); err != nil {
		return nil, err
	}
	if s.peerSrv, err = peer.NewServer(peer.ServerConfig{
		Identity: cfg.Identity, Trust: cfg.Trust, Handler: http.HandlerFunc(s.servePeer),
		Logger: cfg.Logger, Registerer: cfg.Registerer,
	}); err != nil {
		return nil, err
	}
	api, err := jsonrpc.NewHTTPHandler(s.handleLocal, jsonrpc.Options{
		MaxBodyBytes: cfg.MaxBody, Token: jsonrpc.Token(cfg.Token), Logger: s.log,
	})
	if err != nil {
		return nil, err
	}
	if cfg.Links != nil {
		if s.links, err = newLinks(s, *cfg.Links); err != nil {
			return nil, err
		}
	}
	s.local = &http.Server{
		Handler:           localGuard(api, cfg.LocalHosts),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// localGuard refuses requests whose Host header is not a loopback address,
// localhost or one of allowed, so a web page cannot reach the local API by
// DNS rebinding.
func localGuard(h http.Handler, allowed []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		if ip := net.ParseIP(host); !(host == "localhost" || ip != nil && ip.IsLoopback() || slices.Contains(allowed, host)) {
			http.Error(w, "eps: the local API answers only requests to a loopback address", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// ID returns this member's identity.
func (s *Server) ID() pki.ID { return s.self }

// Run runs the delivery workers until ctx ends or the server is closed. It
// blocks.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { s.runOutbox(ctx) })
	wg.Go(func() { s.runInbox(ctx) })
	if s.links != nil {
		wg.Go(func() { s.links.run(ctx) })
	}
	wg.Wait()
	return nil
}

// ServeLocal serves the local JSON-RPC API on ln until Shutdown or Close.
// Wrap ln with TLS to serve it over HTTPS.
func (s *Server) ServeLocal(ln net.Listener) error {
	if err := s.local.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return ErrServerClosed
}

// ServePeer serves other members on ln (the private proxy's listener)
// until Shutdown or Close.
func (s *Server) ServePeer(ln net.Listener) error {
	if err := s.peerSrv.Serve(ln); !errors.Is(err, peer.ErrServerClosed) {
		return err
	}
	return ErrServerClosed
}

// Shutdown stops accepting, lets calls in progress finish and stops the
// workers. If ctx ends first it closes everything and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	errs := []error{s.local.Shutdown(ctx), s.peerSrv.Shutdown(ctx)}
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	s.client.Close()
	s.cbClient.CloseIdleConnections()
	return errors.Join(errs...)
}

// Close stops at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.local.Close()
	s.peerSrv.Close()
	s.client.Close()
	s.wg.Wait()
	return nil
}

func (s *Server) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// cert returns the current certificate (it is renewed at runtime).
func (s *Server) cert() *tls.Certificate { return s.cfg.Identity.Certificate() }

// memberEntry returns the directory entry of a member of this network.
func (s *Server) memberEntry(name string) (*pki.Member, *pki.Snapshot, error) {
	snap := s.cfg.Trust.Directory.Current()
	if snap == nil {
		return nil, nil, pki.ErrNoDirectory
	}
	m, ok := snap.Dir.Member(name)
	if !ok {
		return nil, snap, fmt.Errorf("eps: %q is not a member of %s", name, snap.Dir.Network)
	}
	return m, snap, nil
}

// memberID is the identity of m, a member of this network.
func (s *Server) memberID(m *pki.Member) pki.ID {
	return pki.ID{Network: s.self.Network, Role: m.Role, Name: m.Name}
}

// sealKeyOf picks the recipient's seal key: the last listed ML-KEM hybrid
// key (keys are sorted by id; a rotation adds a later id).
func sealKeyOf(m *pki.Member) (pki.SealKey, error) {
	var best *pki.SealKey
	for i := range m.SealKeys {
		k := &m.SealKeys[i]
		if k.KEM == seal.KEMMLKEM768X25519 {
			best = k
		}
	}
	if best == nil {
		return pki.SealKey{}, fmt.Errorf("eps: %s has published no seal key", m.Name)
	}
	return *best, nil
}

type metrics struct {
	local     *prometheus.CounterVec
	peerIn    *prometheus.CounterVec
	delivery  *prometheus.CounterVec
	callbacks *prometheus.CounterVec
	callDur   prometheus.Histogram
}

func newMetrics(f promauto.Factory) *metrics {
	return &metrics{
		local: f.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_local_calls_total",
			Help: "Local API calls by kind (call, send, poll, ack, local) and result (ok or the JSON-RPC error class).",
		}, []string{"kind", "result"}),
		peerIn: f.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_peer_messages_total",
			Help: "Messages received from other members by result: ok, duplicate, forbidden, bad_request, bad_signature, unsolicited, rate_limited, inbox_full, too_large, timeout, error.",
		}, []string{"result"}),
		delivery: f.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_outbox_attempts_total",
			Help: "Delivery attempts of queued messages by result: delivered, retry, failed, expired.",
		}, []string{"result"}),
		callbacks: f.NewCounterVec(prometheus.CounterOpts{
			Name: "eps_callbacks_total",
			Help: "Callbacks to local software by result: ok, error.",
		}, []string{"result"}),
		callDur: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "eps_call_duration_seconds",
			Help:    "Synchronous calls to other members, end to end.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
		}),
	}
}
