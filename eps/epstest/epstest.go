// Package epstest runs a small Kurier network on loopback for tests: one
// real relay, and members that each run an endpoint server (eps.Server)
// with a store in t.TempDir() and a private proxy that registers the member
// at the relay. Everything goes over real sockets and the real protocols;
// nothing is mocked.
//
//	n := epstest.New(t, epstest.Options{})
//	office := n.Member("hd-1")
//	c := &jsonrpc.Client{URL: office.API()}
//
// By default the network has a health office "hd-1" offering "submit" and a
// provider "vendor-a" offering "guest-lists"; health offices may call every
// service providers offer and the other way round. Local software takes
// incoming messages by polling unless a member is given a callback.
//
// Everything New starts is stopped in t.Cleanup, each endpoint server with
// a Shutdown that must return nil, and the number of goroutines must come
// back to where it was before New (see Options.NoLeakCheck). Tests that use
// epstest therefore should not call t.Parallel.
package epstest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay"
	"github.com/kurier-net/kurier/relay/relaytest"
)

// DefaultNetwork is the network name used when Options.Network is empty.
const DefaultNetwork = "kurier.test"

// readyTimeout bounds every wait for a route to be registered at the relay.
const readyTimeout = 15 * time.Second

// Options configure a test network. The zero value gives the default
// network.
type Options struct {
	// Network is the network name. If empty, DefaultNetwork.
	Network string
	// Members are the network's members. If nil, DefaultMembers().
	Members []MemberConfig
	// Permissions replace the directory's permissions. If nil, every
	// health office may call every service offered by a provider and every
	// provider every service offered by a health office (role-based, both
	// ways); members of the same role may not call each other.
	Permissions []pki.Permission
	// Tap puts a TCP forwarder in front of the relay's public port that
	// records every byte the endpoint servers exchange through the relay
	// (see Network.Tap).
	Tap bool
	// Configure, if not nil, adjusts each endpoint server's configuration
	// before it starts (also on a restart).
	Configure func(name string, cfg *eps.Config)
	// ConfigureStore, if not nil, adjusts each member's store
	// configuration before it is opened (also on a restart).
	ConfigureStore func(name string, cfg *store.Config)
	// LogLevel is the level from which the network's components log into
	// the test output. If nil, slog.LevelWarn.
	LogLevel slog.Leveler
	// NoLeakCheck turns off the check that every goroutine started during
	// the test has ended once the network is stopped. Set it for tests
	// that run in parallel with others.
	NoLeakCheck bool
}

// MemberConfig describes one member.
type MemberConfig struct {
	// Name is the member name (pki.ValidName). Required.
	Name string
	// Role is pki.RoleHealthOffice, pki.RoleProvider or pki.RoleService.
	// Required. Services of a service member are callable only with
	// explicit Permissions.
	Role pki.Role
	// Services are the services the member offers.
	Services []string
	// Callback, if not nil, is the member's local software: epstest serves
	// it on a loopback HTTP server and the endpoint server POSTs incoming
	// messages to it. If nil (and CallbackURL is empty), software polls.
	Callback http.Handler
	// CallbackURL is a callback served elsewhere; don't set both.
	CallbackURL string
	// CallbackToken is the bearer token sent with callbacks. If empty,
	// none is sent.
	CallbackToken string
	// Token, if not empty, is required as a bearer token on the local API.
	Token string
	// PassSealed hands incoming payloads to local software still sealed.
	PassSealed bool
	// Offline lists the member in the directory without starting its
	// endpoint server; Network.Start starts it later.
	Offline bool
	// Links turns on one-time submission links (eps.LinkConfig) for a
	// health office: an X25519 seal key in the directory and a TLS
	// certificate for *.<name>.<network> from the test CA.
	Links bool
}

// DefaultMembers returns the default members, for tests that change one:
// hd-1, a health office offering "submit", and vendor-a, a provider
// offering "guest-lists", both polling.
func DefaultMembers() []MemberConfig {
	return []MemberConfig{
		{Name: "hd-1", Role: pki.RoleHealthOffice, Services: []string{"submit"}},
		{Name: "vendor-a", Role: pki.RoleProvider, Services: []string{"guest-lists"}},
	}
}

// Network is a running test network. Its methods must be called from the
// test's goroutine, except the accessors of Member and Tap, which are safe
// for concurrent use.
type Network struct {
	t       testing.TB
	opts    Options
	ca      *pkitest.CA
	dir     []byte // the signed directory
	tap     *Tap
	members map[string]*Member
	order   []*Member
	cbs     []*httptest.Server

	relayName string
	relayCert *tls.Certificate
	relayEnds pki.RelayEndpoints
	first     *relaytest.Relay // the relay as first started
	relay     *relayRun        // the relay after RestartRelay; nil before
}

// RelayPublic returns the relay's public address (clients connect there).
func (n *Network) RelayPublic() string { return n.relayEnds.Public }

// Member is one member of a test network.
type Member struct {
	n        *Network
	cfg      MemberConfig
	id       pki.ID
	cert     *tls.Certificate
	seal     pki.SealPrivateKey
	web      *pki.SealPrivateKey // X25519 key for links; nil without Links
	webCert  *tls.Certificate    // the links' page certificate
	store    string              // store file
	callback string              // URL, empty for polling

	mu   sync.Mutex // guards the fields below
	api  string     // local API address, kept across restarts
	proc *process   // nil while stopped
}

// process is one run of a member's endpoint server and private proxy.
type process struct {
	ep     *eps.Endpoint
	store  *store.Store
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New starts a test network. It fails t if anything cannot be started.
func New(t testing.TB, opts Options) *Network {
	t.Helper()
	if !opts.NoLeakCheck {
		checkGoroutines(t) // first, so that its cleanup runs last
	}
	if opts.Network == "" {
		opts.Network = DefaultNetwork
	}
	if opts.Members == nil {
		opts.Members = DefaultMembers()
	}
	n := &Network{t: t, opts: opts, members: map[string]*Member{}}
	n.ca = pkitest.NewCA(t, opts.Network, time.Now())
	n.first = relaytest.Listen(t, n.ca, "r1")
	n.relayName, n.relayCert, n.relayEnds = n.first.Name, n.first.Cert, n.first.Endpoints
	t.Cleanup(n.close)
	if opts.Tap {
		n.tap = newTap(n.relayEnds.Public)
	}

	entries := []pki.Member{n.first.Member()}
	for _, mc := range opts.Members {
		if err := pki.ValidName(mc.Name); err != nil {
			t.Fatalf("epstest: member %q: %v", mc.Name, err)
		}
		if _, dup := n.members[mc.Name]; dup {
			t.Fatalf("epstest: member %q given twice", mc.Name)
		}
		if !mc.Role.Valid() || mc.Role == pki.RoleRelay {
			t.Fatalf("epstest: member %q: role %q, want health-office, provider or service", mc.Name, mc.Role)
		}
		if mc.Callback != nil && mc.CallbackURL != "" {
			t.Fatalf("epstest: member %q: both Callback and CallbackURL set", mc.Name)
		}
		m := &Member{n: n, cfg: mc, cert: n.ca.Issue(t, mc.Role, mc.Name), callback: mc.CallbackURL}
		m.id = pki.ID{Network: opts.Network, Role: mc.Role, Name: mc.Name}
		var err error
		if m.seal, err = pki.NewSealKey("s1"); err != nil {
			t.Fatal(err)
		}
		m.store = filepath.Join(t.TempDir(), mc.Name+".db")
		if mc.Callback != nil {
			srv := httptest.NewServer(mc.Callback)
			n.cbs = append(n.cbs, srv)
			m.callback = srv.URL
		}
		e := pkitest.Member(m.cert, mc.Name, mc.Services...)
		e.SealKeys = []pki.SealKey{m.seal.Public()}
		if mc.Links {
			k, err := pki.NewWebSealKey("w1")
			if err != nil {
				t.Fatal(err)
			}
			m.web = &k
			e.SealKeys = append(e.SealKeys, k.Public())
			m.webCert = n.ca.IssueWith(t, mc.Role, mc.Name, pkitest.Options{DNSNames: []string{"*." + m.id.DNSName()}, KeyType: pkitest.P256}) // browsers: no Ed25519
		}
		entries = append(entries, e)
		n.members[mc.Name] = m
		n.order = append(n.order, m)
	}
	d := n.ca.Directory(entries...)
	d.Permissions = opts.Permissions
	if d.Permissions == nil {
		d.Permissions = defaultPermissions(opts.Members)
	}
	n.dir = n.ca.Sign(t, d)
	n.first.Serve(t, n.Trust(), func(c *relay.Config) { c.Logger = n.logger("relay", n.relayName) })

	for _, m := range n.order {
		if !m.cfg.Offline {
			n.Start(m.cfg.Name)
		}
	}
	return n
}

// defaultPermissions lets each role call every service the other role
// offers.
func defaultPermissions(members []MemberConfig) []pki.Permission {
	offered := map[pki.Role][]string{}
	for _, m := range members {
		offered[m.Role] = append(offered[m.Role], m.Services...)
	}
	var perms []pki.Permission
	for _, p := range [][2]pki.Role{{pki.RoleHealthOffice, pki.RoleProvider}, {pki.RoleProvider, pki.RoleHealthOffice}} {
		if svcs := offered[p[1]]; len(svcs) > 0 {
			perms = append(perms, pki.Permission{Caller: "role:" + string(p[0]), Callee: "role:" + string(p[1]), Services: svcs})
		}
	}
	if perms == nil {
		perms = []pki.Permission{} // an empty list, not pkitest's allow-all
	}
	return perms
}

func (n *Network) logger(key, value string) *slog.Logger {
	level := n.opts.LogLevel
	if level == nil {
		level = slog.LevelWarn
	}
	return slog.New(slog.NewTextHandler(n.t.Output(), &slog.HandlerOptions{Level: level})).With(key, value)
}

// CA returns the network's test PKI.
func (n *Network) CA() *pkitest.CA { return n.ca }

// Directory returns the signed directory document.
func (n *Network) Directory() []byte { return n.dir }

// Trust returns the network roots and a new verifier loaded with the
// directory.
func (n *Network) Trust() pki.Trust {
	v := n.ca.Verifier(n.t, nil)
	if _, err := v.Update(n.dir); err != nil {
		n.t.Fatal(err)
	}
	return pki.Trust{Roots: n.ca.Roots, Directory: v}
}

// Tap returns the recorder in front of the relay, or nil without
// Options.Tap.
func (n *Network) Tap() *Tap { return n.tap }

// Members returns the members in the order they were configured.
func (n *Network) Members() []*Member { return append([]*Member(nil), n.order...) }

// Member returns the member called name; it fails the test if there is
// none.
func (n *Network) Member(name string) *Member {
	m, ok := n.members[name]
	if !ok {
		n.t.Fatalf("epstest: no member %q", name)
	}
	return m
}

// Start starts the member's endpoint server and private proxy on its store
// and waits until the relay routes to it. Its local API keeps the address
// of an earlier run. It fails the test if the member is running.
func (n *Network) Start(name string) {
	n.t.Helper()
	m := n.Member(name)
	if err := m.start(); err != nil {
		n.t.Fatalf("epstest: start %s: %v", name, err)
	}
}

// Stop stops the member's endpoint server and private proxy at once, as a
// crash would (eps.Server.Close: calls in progress fail, nothing is
// drained), and closes its store. Stopping a stopped member does nothing.
func (n *Network) Stop(name string) {
	n.t.Helper()
	m := n.Member(name)
	if err := m.stop(false); err != nil {
		n.t.Errorf("epstest: stop %s: %v", name, err)
	}
}

// Restart stops the member (see Stop) and starts it again on the same
// store and local API address, for durability tests.
func (n *Network) Restart(name string) {
	n.t.Helper()
	n.Stop(name)
	n.Start(name)
}

// RestartRelay stops the relay at once and starts a new one on the same
// addresses with the same certificate, then waits until every running
// member's private proxy has registered at it again.
func (n *Network) RestartRelay() {
	n.t.Helper()
	if n.relay != nil {
		n.relay.stop()
	} else {
		n.first.Stop()
	}
	r, err := startRelay(n.relayCert, n.relayEnds, n.Trust(), n.logger("relay", n.relayName))
	if err != nil {
		n.t.Fatalf("epstest: restart relay: %v", err)
	}
	n.relay = r
	for _, m := range n.order {
		if m.running() {
			if err := waitFor(func() bool { return r.srv.Holds(m.id.DNSName()) }); err != nil {
				n.t.Fatalf("epstest: %s did not register at the restarted relay: %v", m.cfg.Name, err)
			}
		}
	}
}

// close stops everything New started: members (gracefully; Shutdown must
// return nil), their software's callback servers, the relay and the tap.
func (n *Network) close() {
	var wg sync.WaitGroup
	for _, m := range n.order {
		wg.Go(func() {
			if err := m.stop(true); err != nil {
				n.t.Errorf("epstest: shut down %s: %v", m.cfg.Name, err)
			}
		})
	}
	wg.Wait()
	for _, s := range n.cbs {
		s.Close()
	}
	if n.relay != nil {
		n.relay.stop()
	}
	n.first.Stop()
	if n.tap != nil {
		n.tap.close()
	}
}

// Name returns the member's name.
func (m *Member) Name() string { return m.cfg.Name }

// ID returns the member's identity.
func (m *Member) ID() pki.ID { return m.id }

// Config returns the member's configuration.
func (m *Member) Config() MemberConfig { return m.cfg }

// API returns the URL of the member's local JSON-RPC API. It stays the
// same across restarts.
func (m *Member) API() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.api == "" {
		return ""
	}
	return "http://" + m.api
}

// Token returns the bearer token of the local API ("" if none).
func (m *Member) Token() string { return m.cfg.Token }

// Client returns a new JSON-RPC client of the member's local API, with the
// member's token.
func (m *Member) Client() *jsonrpc.Client {
	return &jsonrpc.Client{URL: m.API(), Token: jsonrpc.Token(m.cfg.Token)}
}

// StorePath returns the member's store file.
func (m *Member) StorePath() string { return m.store }

// CallbackURL returns the URL incoming messages are POSTed to, or "" if
// the member's software polls.
func (m *Member) CallbackURL() string { return m.callback }

// Cert returns the member's certificate and key.
func (m *Member) Cert() *tls.Certificate { return m.cert }

// WebCert returns the certificate of the member's one-time link pages
// (Links), nil without Links.
func (m *Member) WebCert() *tls.Certificate { return m.webCert }

// SealKey returns the member's seal private key (its public half is in the
// directory).
func (m *Member) SealKey() pki.SealPrivateKey { return m.seal }

// Server returns the running endpoint server, or nil while stopped.
func (m *Member) Server() *eps.Server {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return nil
	}
	return m.proc.ep.Server
}

func (m *Member) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil
}

// start runs the member's endpoint server and proxy. Only the test's
// goroutine starts and stops members; m.mu is held only to publish.
func (m *Member) start() (err error) {
	m.mu.Lock()
	running, addr := m.proc != nil, m.api
	m.mu.Unlock()
	if running {
		return errors.New("already running")
	}
	n := m.n
	log := n.logger("member", m.cfg.Name)
	scfg := store.Config{Path: m.store, Logger: log}
	if n.opts.ConfigureStore != nil {
		n.opts.ConfigureStore(m.cfg.Name, &scfg)
	}
	st, err := store.Open(scfg)
	if err != nil {
		return err
	}
	p := &process{store: st}
	defer func() {
		if err != nil {
			m.mu.Lock()
			m.proc = nil
			m.mu.Unlock()
			p.close()
		}
	}()
	id, err := pki.NewIdentity(m.cert)
	if err != nil {
		return err
	}
	keys := []pki.SealPrivateKey{m.seal}
	if m.web != nil {
		keys = append(keys, *m.web)
	}
	cfg := eps.Config{
		Identity: id, Trust: n.Trust(), SealKeys: keys, Store: st,
		Callback: m.callback, CallbackToken: m.cfg.CallbackToken, Token: m.cfg.Token, PassSealed: m.cfg.PassSealed,
		RetryMin: 50 * time.Millisecond, RetryMax: time.Second, Logger: log,
	}
	if n.tap != nil {
		tapAddr := n.tap.Addr()
		cfg.Relays = func() []string { return []string{tapAddr} }
	}
	pcfg := proxy.Config{BackoffMin: 20 * time.Millisecond, BackoffMax: 500 * time.Millisecond}
	if m.web != nil {
		_, port, _ := net.SplitHostPort(n.relayEnds.Public)
		pn, _ := strconv.Atoi(port)
		cfg.Links = &eps.LinkConfig{Certificate: m.webCert, Key: *m.web, Port: pn} // routes at the endpoint's proxy
	}
	if n.opts.Configure != nil {
		n.opts.Configure(m.cfg.Name, &cfg)
	}
	if p.ep, err = eps.NewEndpoint(cfg, pcfg); err != nil {
		return err
	}
	lln, err := listenAt(addr)
	if err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Go(func() {
		if err := p.ep.Serve(ctx, lln); err != nil {
			n.t.Errorf("epstest: %s: %v", m.cfg.Name, err)
		}
	})
	m.mu.Lock()
	m.api, m.proc = lln.Addr().String(), p
	m.mu.Unlock()
	return waitFor(func() bool { return p.ep.Registered() > 0 })
}

// stop stops the member's process: gracefully (Shutdown must return nil)
// or at once.
func (m *Member) stop(graceful bool) error {
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	var err error
	if graceful {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = p.ep.Server.Shutdown(ctx) // the proxy closes below: peers' idle connections would hold its drain
		cancel()
	}
	return errors.Join(err, p.close())
}

// close stops whatever of the process runs, and closes its store.
func (p *process) close() error {
	if p.ep != nil {
		p.ep.Close()
	}
	if p.cancel != nil {
		p.cancel()
	}
	p.wg.Wait()
	return p.store.Close()
}

// listenAt listens on addr, or on a new loopback port if addr is empty.
// The address of a stopped member's local API is normally free at once;
// if not, listenAt retries for a while.
func listenAt(addr string) (net.Listener, error) {
	if addr == "" {
		return net.Listen("tcp", "127.0.0.1:0")
	}
	var ln net.Listener
	err := waitFor(func() bool {
		var err error
		ln, err = net.Listen("tcp", addr)
		return err == nil
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s again: %w", addr, err)
	}
	return ln, nil
}

// waitFor polls cond until it holds or readyTimeout passes. It polls a
// condition over real sockets; it does not synchronise by sleeping.
func waitFor(cond func() bool) error {
	deadline := time.Now().Add(readyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", readyTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// relayRun is a relay this package started itself on fixed addresses (a
// restart; relaytest only listens on new ports).
type relayRun struct {
	srv  *relay.Server
	lns  []net.Listener
	pc   net.PacketConn
	wg   sync.WaitGroup
	once sync.Once
}

func startRelay(cert *tls.Certificate, ends pki.RelayEndpoints, trust pki.Trust, log *slog.Logger) (*relayRun, error) {
	id, err := pki.NewIdentity(cert)
	if err != nil {
		return nil, err
	}
	srv, err := relay.New(relay.Config{Identity: id, Trust: trust, Logger: log})
	if err != nil {
		return nil, err
	}
	r := &relayRun{srv: srv}
	for _, addr := range []string{ends.Public, ends.Pairing, ends.ControlTCP} {
		ln, err := listenAt(addr)
		if err != nil {
			r.stop()
			return nil, err
		}
		r.lns = append(r.lns, ln)
	}
	if err := waitFor(func() bool {
		r.pc, err = net.ListenPacket("udp", ends.Control)
		return err == nil
	}); err != nil {
		r.stop()
		return nil, fmt.Errorf("listen on %s again: %w", ends.Control, err)
	}
	ls := relay.Listeners{Public: r.lns[0], Pairing: r.lns[1], ControlTCP: r.lns[2], ControlQUIC: r.pc}
	r.wg.Go(func() { srv.Serve(ls) })
	return r, nil
}

func (r *relayRun) stop() {
	r.once.Do(func() {
		r.srv.Close()
		for _, ln := range r.lns {
			ln.Close()
		}
		if r.pc != nil {
			r.pc.Close()
		}
		r.wg.Wait()
	})
}

// checkGoroutines fails t if, once t's cleanups have run, the number of
// goroutines does not come back to where it was when checkGoroutines was
// called.
func checkGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("epstest: %d goroutines left running, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond) // polling a condition, not synchronising
		}
	})
}
