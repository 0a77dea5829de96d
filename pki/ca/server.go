package ca

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/smallstep/certificates/api"
	"github.com/smallstep/certificates/authority"
	"github.com/smallstep/certificates/authority/config"
	"github.com/smallstep/certificates/authority/provisioner"
	"github.com/smallstep/certificates/db"
	"github.com/smallstep/certificates/errs"

	"github.com/kurier-net/kurier/pki"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("ca: server closed")

// Config configures a Server.
type Config struct {
	// CA is the CA directory to serve. Required.
	CA *CA
	// Passphrase decrypts the intermediate key. Required unless the CA was
	// initialised with unencrypted keys.
	Passphrase Passphrase
	// Logger receives structured logs. If nil, logs are discarded.
	Logger *slog.Logger
	// ReadTimeout bounds reading a whole request, WriteTimeout writing a
	// response. If zero, 30s each.
	ReadTimeout, WriteTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections. If zero, 2m.
	IdleTimeout time.Duration
	// MaxRequestBody bounds request bodies of the smallstep API. If zero,
	// 1 MiB. (The seal-keys endpoint has its own 64 KiB limit.)
	MaxRequestBody int64
	// Registerer receives the server's metrics (kurier_ca_*). If nil,
	// they are kept but not exported.
	Registerer prometheus.Registerer
}

// Server is the network CA's HTTPS server: smallstep's CA API (/health,
// /roots, /root/{sha}, /1.0/sign, /1.0/renew, /1.0/rekey, /1.0/revoke, ...)
// under / and /1.0, and Kurier's own endpoints under /kurier/v1/. It behaves
// like http.Server: the caller owns the listener.
//
// TLS is 1.3 only (all Kurier clients and the step CLI speak it). A client
// certificate is verified if given, against the network roots only, which is
// how /1.0/renew, /1.0/rekey and /kurier/v1/seal-keys authenticate members.
type Server struct {
	cfg   Config // immutable after New
	ca    *CA
	log   *slog.Logger
	auth  *authority.Authority
	http  *http.Server
	cert  atomic.Pointer[tls.Certificate] // the server's own TLS certificate, renewed in the background
	trust trustResponse
	dir   dirCache
	m     *caMetrics

	stop     chan struct{} // closed by teardown; stops the renewer
	bg       sync.WaitGroup
	shutOnce sync.Once

	mu       sync.Mutex // guards the fields below
	closing  bool
	inflight int
	idle     chan struct{} // closed when inflight drops to 0 while closing
}

// New decrypts the intermediate key, builds the smallstep authority with its
// bbolt database and Kurier's member checks, and issues the server's TLS
// certificate. It does not listen. The authority's database stays open until
// Shutdown or Close.
func New(cfg Config) (*Server, error) {
	if cfg.CA == nil {
		return nil, errors.New("ca: Config.CA is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.MaxRequestBody == 0 {
		cfg.MaxRequestBody = 1 << 20
	}
	c := cfg.CA
	s := &Server{
		cfg:  cfg,
		ca:   c,
		log:  cfg.Logger.With("component", "ca"),
		stop: make(chan struct{}),
		idle: make(chan struct{}),
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	s.m = newCAMetrics(cfg.Registerer, c)
	s.dir.path = c.CurrentDirectoryPath()
	s.dir.keys = c.keyMap()
	s.trust = trustResponse{Network: c.Network(), Roots: []string{}, DirectoryKeys: []string{}}
	for _, r := range c.roots {
		s.trust.Roots = append(s.trust.Roots, string(pemCert(r)))
	}
	for _, k := range c.dirKeys {
		s.trust.DirectoryKeys = append(s.trust.DirectoryKeys, base64.StdEncoding.EncodeToString(k))
	}

	signer, err := c.IntermediateSigner(cfg.Passphrase)
	if err != nil {
		return nil, err
	}
	auth, err := authority.New(s.authorityConfig(),
		authority.WithX509Signer(c.inter, signer),
		authority.WithX509RootCerts(c.roots...),
		authority.WithAuthorizeRenewFunc(s.authorizeRenew),
		authority.WithX509Enforcers(provisioner.CertificateEnforcerFunc(s.enforce)),
		authority.WithQuietInit(),
	)
	if err != nil {
		return nil, fmt.Errorf("ca: start authority: %w", err)
	}
	s.auth = auth
	crt, err := auth.GetTLSCertificate()
	if err != nil {
		auth.Shutdown()
		return nil, fmt.Errorf("ca: issue server certificate: %w", err)
	}
	s.setCert(crt)

	mux := chi.NewRouter()
	api.Route(mux)
	mux.Route("/1.0", func(r chi.Router) { api.Route(r) })
	mux.Get("/kurier/v1/trust", s.handleTrust)
	mux.Get("/kurier/v1/directory", s.handleDirectory)
	mux.Head("/kurier/v1/directory", s.handleDirectory)
	mux.Post("/kurier/v1/seal-keys", s.handleSealKeys)

	ctx := authority.NewContext(context.Background(), auth)
	ctx = db.NewContext(ctx, auth.GetDatabase())
	roots := c.rootPool()
	s.http = &http.Server{
		Handler: s.track(s.recordIssued(http.MaxBytesHandler(mux, cfg.MaxRequestBody))),
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS13,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cert.Load(), nil },
			ClientAuth:     tls.VerifyClientCertIfGiven,
			ClientCAs:      roots, // roots only: a chain must end at a network root
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		// Handshake failures are caused by peers: keep them at debug.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.bg.Go(s.renewLoop)
	return s, nil
}

// authorityConfig is the smallstep configuration of the embedded authority:
// one JWK provisioner whose certificates live CertLifetime, renewable until
// they expire, and a bbolt database.
func (s *Server) authorityConfig() *config.Config {
	fc := s.ca.cfg
	life := time.Duration(fc.CertLifetime)
	no := false
	roots := make([]string, len(fc.Roots))
	for i, r := range fc.Roots {
		roots[i] = s.ca.path(r)
	}
	return &config.Config{
		Root:             roots,
		IntermediateCert: s.ca.path(fc.Intermediate),
		IntermediateKey:  s.ca.path(fc.IntermediateKey), // not read: WithX509Signer supplies the decrypted key
		// Address is required by smallstep's validation but unused: the
		// caller owns the listener.
		Address:    ":443",
		DNSNames:   append([]string(nil), fc.DNSNames...),
		CommonName: fc.Network + " CA",
		DB:         &db.Config{Type: "bbolt", DataSource: s.ca.path(fc.AuthorityDB)},
		AuthorityConfig: &config.AuthConfig{
			// Tokens are minted by `kurierctl member add` before the server
			// (re)starts; reuse protection is the DB's used-token table.
			DisableIssuedAtCheck: true,
			Provisioners: provisioner.List{&provisioner.JWK{
				Type: "JWK",
				Name: fc.Provisioner.Name,
				Key:  fc.Provisioner.Key,
				Claims: &provisioner.Claims{
					MinTLSDur:               &provisioner.Duration{Duration: min(5*time.Minute, life)},
					MaxTLSDur:               &provisioner.Duration{Duration: life},
					DefaultTLSDur:           &provisioner.Duration{Duration: life},
					EnableSSHCA:             &no,
					DisableRenewal:          &no,
					AllowRenewalAfterExpiry: &no,
				},
			}},
		},
	}
}

// enforce runs on every certificate the authority is about to sign from a
// token: the identity must be an active member with that role, and the
// certificate must not be post-dated (a client may ask for a NotBefore; a
// certificate valid only in the future would keep its pin listed until then).
func (s *Server) enforce(cert *x509.Certificate) error {
	id, err := pki.IDFromCert(cert)
	if err != nil {
		return err
	}
	if cert.NotBefore.After(time.Now().Add(maxClockSkew)) {
		return fmt.Errorf("certificate would not be valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if err := s.checkMember(id); err != nil {
		s.log.Debug("signing refused", "peer", id.String(), "err", err)
		return err
	}
	// A key revoked with `member revoke-key` (or of an earlier member of a
	// reused name) is not certified again.
	der, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	pin := base64.StdEncoding.EncodeToString(sum[:])
	m, err := s.ca.store.Get(id.Name)
	if err != nil {
		return err
	}
	for _, r := range m.RevokedKeys {
		if slices.Contains(r.Pins, pin) {
			s.log.Debug("signing refused", "peer", id.String(), "err", "revoked key")
			return fmt.Errorf("%w: key %s", pki.ErrRevoked, pin)
		}
	}
	return nil
}

// authorizeRenew runs on every renewal and rekey: smallstep's default checks
// (renewal enabled, certificate within its validity), then the member must
// be active, and the certificate's key must be one the CA recorded for this
// member (so keys of an earlier, revoked member of a reused name are not
// renewed).
func (s *Server) authorizeRenew(ctx context.Context, p *provisioner.Controller, cert *x509.Certificate) error {
	if err := provisioner.DefaultAuthorizeRenew(ctx, p, cert); err != nil {
		return err
	}
	id, err := pki.IDFromCert(cert)
	if err != nil {
		return errs.Unauthorized("renewal refused: %s", err)
	}
	if err := s.checkMember(id); err != nil {
		s.log.Debug("renewal refused", "peer", id.String(), "err", err)
		return errs.Unauthorized("renewal refused: %s", err)
	}
	m, err := s.ca.store.Get(id.Name)
	if err != nil {
		return errs.Unauthorized("renewal refused: %s", err)
	}
	if !m.HasPin(pki.Pin(cert), time.Now()) {
		s.log.Debug("renewal refused", "peer", id.String(), "err", ErrUnknownPin)
		return errs.Unauthorized("renewal refused: %s", ErrUnknownPin)
	}
	return nil
}

// checkMember returns nil if id is an active member of the network.
func (s *Server) checkMember(id pki.ID) error {
	if id.Network != s.ca.Network() {
		return fmt.Errorf("%w: %s", pki.ErrWrongNetwork, id)
	}
	m, err := s.ca.store.Get(id.Name)
	if err != nil {
		return err
	}
	if m.Role != id.Role {
		return fmt.Errorf("%w: %s has role %s", pki.ErrNotMember, id, m.Role)
	}
	if m.Status != StatusActive {
		return fmt.Errorf("%w: %s is %s", ErrNotActive, id, m.Status)
	}
	return nil
}

// Serve accepts TLS connections on ln and serves the CA until Shutdown or
// Close, then returns ErrServerClosed. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	s.log.Info("serving", "addr", ln.Addr().String(), "network", s.ca.Network(), "root_fingerprint", s.ca.RootFingerprint())
	err := s.http.ServeTLS(ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections and waits for active requests to
// finish, then closes the authority's database. If ctx expires first it
// closes every connection and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.log.Info("shutting down")
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	s.teardown()
	return err
}

// Close closes the listener and every connection at once, and closes the
// authority's database once running handlers have returned. It is
// idempotent.
func (s *Server) Close() error {
	err := s.http.Close()
	s.teardown()
	return err
}

func (s *Server) teardown() {
	s.shutOnce.Do(func() {
		close(s.stop)
		s.bg.Wait()
		s.mu.Lock()
		s.closing = true
		wait := s.inflight > 0
		s.mu.Unlock()
		if wait {
			<-s.idle
		}
		if err := s.auth.Shutdown(); err != nil {
			s.log.Warn("close authority database", "err", err)
		}
		s.log.Info("stopped")
	})
}

// track counts running handlers so teardown can wait for them before it
// closes the database; requests arriving during teardown are refused.
func (s *Server) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			writeError(w, http.StatusServiceUnavailable, "server is shutting down")
			s.m.count(r, http.StatusServiceUnavailable)
			return
		}
		s.inflight++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.inflight--
			if s.inflight == 0 && s.closing {
				close(s.idle)
			}
			s.mu.Unlock()
		}()
		sw := &statusWriter{ResponseWriter: w}
		defer func() { s.m.count(r, sw.status) }()
		next.ServeHTTP(sw, r)
	})
}

// renewLoop renews the server's own certificate when two thirds of its
// lifetime have passed. A failed renewal is logged and retried every minute;
// the old certificate stays in use meanwhile.
func (s *Server) renewLoop() {
	t := time.NewTimer(renewIn(s.cert.Load().Leaf, time.Now()))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		crt, err := s.auth.GetTLSCertificate()
		if err != nil {
			s.log.Warn("renew server certificate", "err", err)
			t.Reset(time.Minute)
			continue
		}
		s.setCert(crt)
		s.log.Info("server certificate renewed", "not_after", crt.Leaf.NotAfter)
		t.Reset(renewIn(crt.Leaf, time.Now()))
	}
}

// setCert puts crt in use as the server's TLS certificate.
func (s *Server) setCert(crt *tls.Certificate) {
	s.cert.Store(crt)
	s.m.notAfter.WithLabelValues("server").Set(float64(crt.Leaf.NotAfter.Unix()))
}

func renewIn(c *x509.Certificate, now time.Time) time.Duration {
	at := c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
	return max(at.Sub(now), time.Second)
}
