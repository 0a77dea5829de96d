package pki_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

const ioTimeout = 10 * time.Second

// testServer is a TLS server on a real loopback socket. For every connection
// it completes the handshake, writes the client's identity and a newline,
// and waits for the client to hang up. The outcome of each connection's
// handshake goes to errs, in the order the handshakes end.
type testServer struct {
	addr string
	errs chan error
}

func serveTLS(t *testing.T, cfg *tls.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), errs: make(chan error, 1024)}
	before := runtime.NumGoroutine()
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return // listener closed
			}
			wg.Go(func() {
				err := serveConn(c, cfg)
				select {
				case s.errs <- err:
				default:
					t.Errorf("test server: result channel full; dropped %v", err)
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait() // every connection ends by its deadline at the latest
		// Nothing the test started may outlive it (runtime goroutines
		// can take a moment to go).
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines leaked", n-before)
		}
	})
	return s
}

func serveConn(c net.Conn, cfg *tls.Config) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(ioTimeout))
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	id, err := pki.PeerID(tc.ConnectionState())
	if err != nil {
		return err
	}
	if _, err := io.WriteString(tc, id.String()+"\n"); err != nil {
		return err
	}
	io.Copy(io.Discard, tc) // until the client hangs up
	return nil
}

// dialTLS connects, completes the handshake and reads the server's greeting.
// In TLS 1.3 a client finishes its handshake before the server has judged
// its certificate, so a refused client only learns it here, on Read.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), ioTimeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, "", err
	}
	defer c.Close()
	tc := c.(*tls.Conn)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	cs := tc.ConnectionState()
	line, err := bufio.NewReader(tc).ReadString('\n')
	return cs, strings.TrimSuffix(line, "\n"), err
}

// serverErr returns the outcome of the next connection the server finished.
func serverErr(t *testing.T, s *testServer) error {
	t.Helper()
	select {
	case err := <-s.errs:
		return err
	case <-time.After(2 * ioTimeout):
		t.Fatal("no result from the test server")
		return nil
	}
}

// drainServer takes n results and fails on any error.
func drainServer(t *testing.T, s *testServer, n int) {
	t.Helper()
	for range n {
		if err := serverErr(t, s); err != nil {
			t.Errorf("server: %v", err)
		}
	}
}

// isRemoteAlert reports whether err is a TLS alert sent by the peer.
func isRemoteAlert(err error) bool {
	oe, ok := errors.AsType[*net.OpError](err)
	return ok && oe.Op == "remote error"
}

// tlsNet is a small network: a health office hd-1 serving, a provider app
// calling, and spare certificates to misbehave with.
type tlsNet struct {
	ca      *pkitest.CA
	hd, app *tls.Certificate
	hdID    pki.ID
	dir     *pki.Directory
}

func newTLSNet(t *testing.T) *tlsNet {
	t.Helper()
	ca := pkitest.NewCA(t, "kurier.example", time.Now())
	n := &tlsNet{ca: ca, hd: ca.Issue(t, pki.RoleHealthOffice, "hd-1"), app: ca.Issue(t, pki.RoleProvider, "app")}
	n.hdID = pki.ID{Network: "kurier.example", Role: pki.RoleHealthOffice, Name: "hd-1"}
	n.dir = ca.Directory(pkitest.Member(n.hd, "HD 1", "submit"), pkitest.Member(n.app, "App"))
	return n
}

func mustIdentity(t *testing.T, c *tls.Certificate) *pki.Identity {
	t.Helper()
	id, err := pki.NewIdentity(c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (n *tlsNet) serverConfig(t *testing.T, trust pki.Trust, check pki.PeerCheck) *tls.Config {
	t.Helper()
	cfg, err := pki.ServerConfig(mustIdentity(t, n.hd), trust, []string{pki.ALPNPeer}, check)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (n *tlsNet) clientConfig(t *testing.T, c *tls.Certificate, trust pki.Trust, want pki.ID) *tls.Config {
	t.Helper()
	cfg, err := pki.ClientConfig(mustIdentity(t, c), trust, want, []string{pki.ALPNPeer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestTLSMutualAuth(t *testing.T) {
	n := newTLSNet(t)
	var checked atomic.Pointer[pki.Member]
	srv := serveTLS(t, n.serverConfig(t, n.ca.Trust(t, n.dir), func(id pki.ID, m *pki.Member) error {
		if id.Name != m.Name {
			return errors.New("check got mismatched id and member")
		}
		checked.Store(m)
		return nil
	}))
	cs, greeting, err := dialTLS(t, srv.addr, n.clientConfig(t, n.app, n.ca.Trust(t, n.dir), n.hdID))
	if err != nil {
		t.Fatal(err)
	}
	if err := serverErr(t, srv); err != nil {
		t.Fatalf("server: %v", err)
	}
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("version = %x, want TLS 1.3", cs.Version)
	}
	if cs.NegotiatedProtocol != pki.ALPNPeer {
		t.Errorf("ALPN = %q, want %q", cs.NegotiatedProtocol, pki.ALPNPeer)
	}
	if cs.ServerName != "hd-1.kurier.example" {
		t.Errorf("SNI = %q", cs.ServerName)
	}
	if id, err := pki.PeerID(cs); err != nil || id != n.hdID {
		t.Errorf("client: PeerID = %v, %v; want %v", id, err, n.hdID)
	}
	if greeting != "spiffe://kurier.example/provider/app" {
		t.Errorf("server: PeerID = %q", greeting)
	}
	if m := checked.Load(); m == nil || m.Name != "app" {
		t.Errorf("PeerCheck saw %v", m)
	}
}

// TestTLSKeyTypes: members enrolled with Ed25519 keys and members still on
// P-256 keys authenticate each other in every combination, through the
// same ServerConfig and ClientConfig, over TLS 1.3, on first handshakes and
// on resumed ones.
func TestTLSKeyTypes(t *testing.T) {
	for _, tt := range []struct{ server, client pkitest.KeyType }{
		{pkitest.Ed25519, pkitest.Ed25519},
		{pkitest.Ed25519, pkitest.P256},
		{pkitest.P256, pkitest.Ed25519},
		{pkitest.P256, pkitest.P256},
	} {
		t.Run(tt.server.String()+" server, "+tt.client.String()+" client", func(t *testing.T) {
			ca := pkitest.NewCA(t, "kurier.example", time.Now())
			hd := ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{KeyType: tt.server})
			app := ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{KeyType: tt.client})
			n := &tlsNet{ca: ca, hd: hd, app: app, hdID: pki.ID{Network: "kurier.example", Role: pki.RoleHealthOffice, Name: "hd-1"}}
			trust := ca.Trust(t, ca.Directory(pkitest.Member(hd, "HD 1", "submit"), pkitest.Member(app, "App")))
			srv := serveTLS(t, n.serverConfig(t, trust, nil))
			cli := n.clientConfig(t, app, trust, n.hdID)
			for i, wantResumed := range []bool{false, true} {
				cs, greeting, err := dialTLS(t, srv.addr, cli)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				if err := serverErr(t, srv); err != nil {
					t.Fatalf("connection %d: server: %v", i, err)
				}
				if cs.Version != tls.VersionTLS13 || cs.DidResume != wantResumed {
					t.Errorf("connection %d: version %x, resumed %v; want TLS 1.3, resumed %v", i, cs.Version, cs.DidResume, wantResumed)
				}
				if got := cs.PeerCertificates[0]; !got.Equal(hd.Leaf) {
					t.Errorf("connection %d: client saw another server certificate (%v key)", i, got.PublicKeyAlgorithm)
				}
				if id, err := pki.PeerID(cs); err != nil || id != n.hdID {
					t.Errorf("connection %d: client: PeerID = %v, %v; want %v", i, id, err, n.hdID)
				}
				if greeting != "spiffe://kurier.example/provider/app" {
					t.Errorf("connection %d: server: PeerID = %q", i, greeting)
				}
			}
		})
	}
}

func TestTLSServerRefusesClient(t *testing.T) {
	n := newTLSNet(t)
	ca := n.ca
	foreign := pkitest.NewCA(t, "kurier.example", ca.Now).Issue(t, pki.RoleProvider, "foreign")
	unpinned := ca.Issue(t, pki.RoleProvider, "app") // chains fine, key not in the directory
	revoked := ca.Issue(t, pki.RoleProvider, "revoked")
	suspended := ca.Issue(t, pki.RoleProvider, "sus")
	stranger := ca.Issue(t, pki.RoleProvider, "stranger")
	asOffice := ca.Issue(t, pki.RoleHealthOffice, "app") // right name, wrong role
	expired := ca.IssueWith(t, pki.RoleProvider, "expired", pkitest.Options{NotBefore: ca.Now.Add(-48 * time.Hour), NotAfter: ca.Now.Add(-time.Hour)})
	notYet := ca.IssueWith(t, pki.RoleProvider, "early", pkitest.Options{NotBefore: ca.Now.Add(time.Hour)})
	ca.Network = "other.example" // the same CA, but a name in another network
	otherNet := ca.Issue(t, pki.RoleProvider, "app")
	ca.Network = "kurier.example"

	sus := pkitest.Member(suspended, "Sus")
	sus.Suspended = true
	dir := ca.Directory(pkitest.Member(n.hd, "HD 1"), pkitest.Member(n.app, "App"),
		pkitest.Member(foreign, "Foreign"), pkitest.Member(revoked, "Revoked"), sus,
		pkitest.Member(expired, "Expired"), pkitest.Member(notYet, "Early"))
	dir.Revoked = []pki.Revocation{{Member: "revoked", RevokedAt: ca.Now}}
	srv := serveTLS(t, n.serverConfig(t, ca.Trust(t, dir), nil))
	cliTrust := ca.Trust(t, dir)

	for _, tt := range []struct {
		name  string
		cert  *tls.Certificate
		check func(error) bool // on the server's handshake error
	}{
		{"cert from another CA", foreign, func(err error) bool { _, ok := errors.AsType[x509.UnknownAuthorityError](err); return ok }},
		{"unpinned member key", unpinned, func(err error) bool { return errors.Is(err, pki.ErrUnpinned) }},
		{"revoked member", revoked, func(err error) bool { return errors.Is(err, pki.ErrRevoked) }},
		{"suspended member", suspended, func(err error) bool { return errors.Is(err, pki.ErrSuspended) }},
		{"not a member", stranger, func(err error) bool { return errors.Is(err, pki.ErrNotMember) }},
		{"member name with another role", asOffice, func(err error) bool { return errors.Is(err, pki.ErrNotMember) }},
		{"other network", otherNet, func(err error) bool { return errors.Is(err, pki.ErrWrongNetwork) }},
		{"expired cert", expired, func(err error) bool {
			e, ok := errors.AsType[x509.CertificateInvalidError](err)
			return ok && e.Reason == x509.Expired
		}},
		{"not yet valid cert", notYet, func(err error) bool {
			e, ok := errors.AsType[x509.CertificateInvalidError](err)
			return ok && e.Reason == x509.Expired
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := n.clientConfig(t, tt.cert, cliTrust, n.hdID)
			_, greeting, err := dialTLS(t, srv.addr, cfg)
			if err == nil {
				t.Fatalf("client was served (%q)", greeting)
			}
			if !isRemoteAlert(err) {
				t.Errorf("client error = %v, want a TLS alert from the server", err)
			}
			if serr := serverErr(t, srv); !tt.check(serr) {
				t.Errorf("server error = %v", serr)
			}
		})
	}

	// The refusals are not an artefact of the setup: the member itself is
	// served by the same server.
	if _, _, err := dialTLS(t, srv.addr, n.clientConfig(t, n.app, cliTrust, n.hdID)); err != nil {
		t.Errorf("member refused: %v", err)
	}
	if err := serverErr(t, srv); err != nil {
		t.Errorf("server: %v", err)
	}
}

func TestTLSProtocolRefusals(t *testing.T) {
	n := newTLSNet(t)
	srv := serveTLS(t, n.serverConfig(t, n.ca.Trust(t, n.dir), nil))
	good := n.clientConfig(t, n.app, n.ca.Trust(t, n.dir), n.hdID)

	// A plain crypto/tls client with the member's certificate and no
	// VerifyConnection of its own: only the server's checks apply.
	plain := func(mutate func(*tls.Config)) *tls.Config {
		cfg := &tls.Config{
			Certificates: []tls.Certificate{*n.app},
			RootCAs:      n.ca.Roots,
			ServerName:   n.hdID.DNSName(),
			NextProtos:   []string{pki.ALPNPeer},
		}
		mutate(cfg)
		return cfg
	}
	for _, tt := range []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"plain client (control)", plain(func(*tls.Config) {}), true},
		{"TLS 1.2 client", plain(func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), false},
		{"TLS 1.2 member client", func() *tls.Config {
			c := good.Clone()
			c.MinVersion, c.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			return c
		}(), false},
		{"no client certificate", plain(func(c *tls.Config) { c.Certificates = nil }), false},
		{"no ALPN", plain(func(c *tls.Config) { c.NextProtos = nil }), false},
		{"other ALPN", plain(func(c *tls.Config) { c.NextProtos = []string{"h2"} }), false},
		{"other Kurier ALPN", plain(func(c *tls.Config) { c.NextProtos = []string{pki.ALPNControl} }), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cs, _, err := dialTLS(t, srv.addr, tt.cfg)
			serr := serverErr(t, srv)
			if tt.ok {
				if err != nil || serr != nil {
					t.Fatalf("client %v, server %v; want both nil", err, serr)
				}
				if cs.NegotiatedProtocol != pki.ALPNPeer {
					t.Errorf("ALPN = %q", cs.NegotiatedProtocol)
				}
				return
			}
			if err == nil || serr == nil {
				t.Errorf("client %v, server %v; want both to fail", err, serr)
			}
		})
	}
}

// countingCache records how often a stored session was offered.
type countingCache struct {
	tls.ClientSessionCache
	hits atomic.Int32
}

func (c *countingCache) Get(key string) (*tls.ClientSessionState, bool) {
	s, ok := c.ClientSessionCache.Get(key)
	if ok {
		c.hits.Add(1)
	}
	return s, ok
}

// TestTLSResumedRevoked checks that revocation in the directory takes
// effect on resumed sessions: VerifyConnection runs on them, where
// VerifyPeerCertificate would not.
func TestTLSResumedRevoked(t *testing.T) {
	n := newTLSNet(t)
	srvTrust := n.ca.Trust(t, n.dir)
	srv := serveTLS(t, n.serverConfig(t, srvTrust, nil))
	cli := n.clientConfig(t, n.app, n.ca.Trust(t, n.dir), n.hdID)

	// A full handshake; reading the greeting also takes in the ticket.
	cs, _, err := dialTLS(t, srv.addr, cli)
	if err != nil || cs.DidResume {
		t.Fatalf("first dial: resumed %v, %v", cs.DidResume, err)
	}
	drainServer(t, srv, 1)
	// Resumption works in this setup...
	cs, _, err = dialTLS(t, srv.addr, cli)
	if err != nil || !cs.DidResume {
		t.Fatalf("second dial: resumed %v, %v; want a resumed session", cs.DidResume, err)
	}
	drainServer(t, srv, 1)

	// ...and after the directory revokes the client, the resumed session
	// is refused.
	d := n.ca.Directory(pkitest.Member(n.hd, "HD 1"), pkitest.Member(n.app, "App"))
	d.Revoked = []pki.Revocation{{Member: "app", RevokedAt: n.ca.Now, Reason: "test"}}
	if changed, err := srvTrust.Directory.Update(n.ca.Sign(t, d)); !changed || err != nil {
		t.Fatalf("Update = %v, %v", changed, err)
	}
	cs, greeting, err := dialTLS(t, srv.addr, cli)
	if !cs.DidResume {
		t.Fatalf("third dial did not resume (err %v); the test proves nothing", err)
	}
	if err == nil {
		t.Fatalf("revoked client was served on a resumed session (%q)", greeting)
	}
	if !isRemoteAlert(err) {
		t.Errorf("client error = %v, want a TLS alert", err)
	}
	if serr := serverErr(t, srv); !errors.Is(serr, pki.ErrRevoked) {
		t.Errorf("server error = %v, want %v", serr, pki.ErrRevoked)
	}
}

// TestTLSResumedServerRevoked is the other direction: the client re-checks
// a resumed server against its directory.
func TestTLSResumedServerRevoked(t *testing.T) {
	n := newTLSNet(t)
	srvCfg := n.serverConfig(t, n.ca.Trust(t, n.dir), nil)
	// Record whether the server saw each handshake as resumed.
	var srvResumed atomic.Bool
	verify := srvCfg.VerifyConnection
	srvCfg.VerifyConnection = func(cs tls.ConnectionState) error {
		srvResumed.Store(cs.DidResume)
		return verify(cs)
	}
	srv := serveTLS(t, srvCfg)
	cliTrust := n.ca.Trust(t, n.dir)
	cli := n.clientConfig(t, n.app, cliTrust, n.hdID)
	cache := &countingCache{ClientSessionCache: cli.ClientSessionCache}
	cli.ClientSessionCache = cache

	if _, _, err := dialTLS(t, srv.addr, cli); err != nil {
		t.Fatal(err)
	}
	drainServer(t, srv, 1)

	d := n.ca.Directory(pkitest.Member(n.hd, "HD 1"), pkitest.Member(n.app, "App"))
	d.Revoked = []pki.Revocation{{Member: "hd-1", RevokedAt: n.ca.Now}}
	if _, err := cliTrust.Directory.Update(n.ca.Sign(t, d)); err != nil {
		t.Fatal(err)
	}
	hits := cache.hits.Load()
	_, _, err := dialTLS(t, srv.addr, cli)
	if !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("client error = %v, want %v", err, pki.ErrRevoked)
	}
	if cache.hits.Load() == hits {
		t.Errorf("client did not offer its session")
	}
	serverErr(t, srv) // the server sees the client's alert
	if !srvResumed.Load() {
		t.Errorf("server did not resume the session; the test proves nothing")
	}
}

func TestTLSClientRefusesServer(t *testing.T) {
	n := newTLSNet(t)
	ca := n.ca
	hd2 := ca.Issue(t, pki.RoleHealthOffice, "hd-2")
	unpinned := ca.Issue(t, pki.RoleHealthOffice, "hd-1")
	expired := ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{NotBefore: ca.Now.Add(-48 * time.Hour), NotAfter: ca.Now.Add(-time.Hour)})
	expiredM := pkitest.Member(n.hd, "HD 1")
	expiredM.Pins = append(expiredM.Pins, pki.Pin(expired.Leaf))
	dir := ca.Directory(expiredM, pkitest.Member(hd2, "HD 2"), pkitest.Member(n.app, "App"))
	cliTrust := ca.Trust(t, dir)

	for _, tt := range []struct {
		name   string
		server *tls.Certificate
		want   pki.ID
		check  func(error) bool
	}{
		{"wanted a role the member does not have", n.hd, pki.ID{Network: "kurier.example", Role: pki.RoleProvider, Name: "hd-1"},
			func(err error) bool { return errors.Is(err, pki.ErrUnexpectedPeer) }},
		// Another valid member answering for the member dialled fails
		// already in crypto/tls: its DNS SAN is not the server name.
		{"another member", hd2, n.hdID, func(err error) bool { _, ok := errors.AsType[x509.HostnameError](err); return ok }},
		{"unpinned server key", unpinned, n.hdID, func(err error) bool { return errors.Is(err, pki.ErrUnpinned) }},
		{"expired server cert", expired, n.hdID, func(err error) bool {
			e, ok := errors.AsType[x509.CertificateInvalidError](err)
			return ok && e.Reason == x509.Expired
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := pki.ServerConfig(mustIdentity(t, tt.server), ca.Trust(t, dir), []string{pki.ALPNPeer}, nil)
			if err != nil {
				t.Fatal(err)
			}
			srv := serveTLS(t, cfg)
			cli := n.clientConfig(t, n.app, cliTrust, tt.want)
			if _, _, err := dialTLS(t, srv.addr, cli); !tt.check(err) {
				t.Errorf("client error = %v", err)
			}
			if serr := serverErr(t, srv); serr == nil {
				t.Errorf("server finished a handshake the client refused")
			}
		})
	}
}

func TestTLSPeerCheckRefuses(t *testing.T) {
	n := newTLSNet(t)
	errNo := errors.New("not today")
	srv := serveTLS(t, n.serverConfig(t, n.ca.Trust(t, n.dir), func(pki.ID, *pki.Member) error { return errNo }))
	if _, _, err := dialTLS(t, srv.addr, n.clientConfig(t, n.app, n.ca.Trust(t, n.dir), n.hdID)); err == nil {
		t.Error("client served despite PeerCheck")
	}
	if err := serverErr(t, srv); !errors.Is(err, errNo) {
		t.Errorf("server error = %v, want %v", err, errNo)
	}
}

func TestTLSNoDirectory(t *testing.T) {
	n := newTLSNet(t)
	srv := serveTLS(t, n.serverConfig(t, n.ca.Trust(t, nil), nil))
	if _, _, err := dialTLS(t, srv.addr, n.clientConfig(t, n.app, n.ca.Trust(t, n.dir), n.hdID)); err == nil {
		t.Error("served with no directory loaded")
	}
	if err := serverErr(t, srv); !errors.Is(err, pki.ErrNoDirectory) {
		t.Errorf("server error = %v, want %v", err, pki.ErrNoDirectory)
	}
}

func TestTLSConfigArgs(t *testing.T) {
	n := newTLSNet(t)
	id := mustIdentity(t, n.hd)
	trust := n.ca.Trust(t, n.dir)
	alpn := []string{pki.ALPNPeer}
	if _, err := pki.ServerConfig(nil, trust, alpn, nil); err == nil {
		t.Error("ServerConfig(nil identity)")
	}
	if _, err := pki.ServerConfig(id, trust, nil, nil); err == nil {
		t.Error("ServerConfig(no ALPN)")
	}
	if _, err := pki.ServerConfig(id, pki.Trust{Directory: trust.Directory}, alpn, nil); err == nil {
		t.Error("ServerConfig(no roots)")
	}
	if _, err := pki.ServerConfig(id, pki.Trust{Roots: trust.Roots}, alpn, nil); err == nil {
		t.Error("ServerConfig(no directory)")
	}
	if _, err := pki.ClientConfig(id, trust, pki.ID{}, alpn, nil); err == nil {
		t.Error("ClientConfig(no peer)")
	}
	if _, err := pki.ClientConfig(id, trust, n.hdID, nil, nil); err == nil {
		t.Error("ClientConfig(no ALPN)")
	}
	if _, err := pki.ClientConfig(nil, trust, n.hdID, alpn, nil); err == nil {
		t.Error("ClientConfig(nil identity)")
	}

	s, err := pki.ServerConfig(id, trust, alpn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.MinVersion != tls.VersionTLS13 || s.ClientAuth != tls.RequireAndVerifyClientCert || s.VerifyConnection == nil || s.VerifyPeerCertificate != nil {
		t.Errorf("server config: min %x, client auth %v", s.MinVersion, s.ClientAuth)
	}
	c, err := pki.ClientConfig(id, trust, n.hdID, alpn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS13 || c.InsecureSkipVerify || c.ServerName != "hd-1.kurier.example" || c.VerifyConnection == nil || c.ClientSessionCache == nil {
		t.Errorf("client config: min %x, server name %q", c.MinVersion, c.ServerName)
	}
}

func TestPeerID(t *testing.T) {
	if _, err := pki.PeerID(tls.ConnectionState{}); err == nil {
		t.Error("PeerID(no chain) = nil error")
	}
	if _, err := pki.PeerID(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}); err == nil {
		t.Error("PeerID(empty chain) = nil error")
	}
	n := newTLSNet(t)
	got, err := pki.PeerID(tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{n.app.Leaf, n.ca.Inter, n.ca.Root}}})
	if err != nil || got.String() != "spiffe://kurier.example/provider/app" {
		t.Errorf("PeerID = %v, %v", got, err)
	}
}
