package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/relay"
	"github.com/kurier-net/kurier/relay/wire"
)

// TestRelaysActAsOne runs two real relays, each with its own cluster node.
// A member's private proxy holds a control session with relay A only; a
// client connects to relay B. B forwards the announcement through the
// cluster, the member dials back to B's pairing port (carried in the
// forwarded Incoming), and the client reaches the member's backend through
// B, seeing the backend's own certificate.
func TestRelaysActAsOne(t *testing.T) {
	checkGoroutines(t)
	ca := pkitest.NewCA(t, testNet, time.Now())
	// A mixed network: r1 and the office enrolled with Ed25519 keys, r2
	// with a P-256 key from before.
	r1 := ca.IssueWith(t, pki.RoleRelay, "r1", pkitest.Options{KeyType: pkitest.Ed25519})
	r2 := ca.IssueWith(t, pki.RoleRelay, "r2", pkitest.Options{KeyType: pkitest.P256})
	office := ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{KeyType: pkitest.Ed25519})
	signed := ca.Sign(t, ca.Directory(
		pkitest.Member(r1, "Relay 1"),
		pkitest.Member(r2, "Relay 2"),
		pkitest.Member(office, "Gesundheitsamt 1"),
	))
	key := newKey(t)
	a := startClusterRelay(t, ca, signed, r1, key, nil)
	b := startClusterRelay(t, ca, signed, r2, key, a)
	waitFor(t, "both relays to see each other", func() bool {
		return len(a.cl.Members()) == 2 && len(b.cl.Members()) == 2
	})

	be := startBackend(t, office)
	m := dialMember(t, ca, a, office, be.addr)
	const name = "hd-1." + testNet
	if res, err := m.register(name); err != nil || res.Code != wire.CodeOK {
		t.Fatalf("register %s = %+v, %v", name, res, err)
	}
	waitFor(t, "relay B to learn that A holds "+name, func() bool {
		return slices.Equal(b.cl.Holders(name), []string{"r1"})
	})

	for i := range 3 {
		body, cs, err := get(t, ca, b.public, name)
		if err != nil {
			t.Fatalf("request %d through relay B: %v", i, err)
		}
		if want := "hello from " + name + "\n"; body != want {
			t.Errorf("body = %q, want %q", body, want)
		}
		if !cs.PeerCertificates[0].Equal(office.Leaf) {
			t.Errorf("client saw certificate %q, want the backend's own", cs.PeerCertificates[0].Subject)
		}
	}
	for _, in := range m.seen() {
		if in.PairAddr != b.pairing {
			t.Errorf("forwarded Incoming has PairAddr %q, want relay B's pairing address %s", in.PairAddr, b.pairing)
		}
	}
	if got := gather(b.reg, "relay_cluster_forwards_total", "result", "ok"); got != 3 {
		t.Errorf("B: relay_cluster_forwards_total{ok} = %v, want 3", got)
	}
	if got := gather(b.reg, "relay_connections_total", "result", "routed"); got != 3 {
		t.Errorf("B: relay_connections_total{routed} = %v, want 3", got)
	}

	// The member hangs up: A withdraws the route, B stops forwarding.
	m.close()
	waitFor(t, "relay B to learn that nobody holds "+name, func() bool { return len(b.cl.Holders(name)) == 0 })
	if _, _, err := get(t, ca, b.public, name); err == nil {
		t.Error("request through relay B succeeded after the member left")
	}
}

// TestWithdrawRefusesForwardedClients: a member's private proxy holds a
// control session with relay A only, and a client reaches relay B for a
// one-time route of the member. When the member withdraws the route (a link
// used a moment earlier), B refuses the client at once, not after
// PairTimeout: whether the route was withdrawn before the client arrived,
// or while B waited for a dial-back that will not come (the proxy no longer
// knows the route and ignores the forwarded Incoming).
func TestWithdrawRefusesForwardedClients(t *testing.T) {
	checkGoroutines(t)
	ca := pkitest.NewCA(t, testNet, time.Now())
	r1 := ca.Issue(t, pki.RoleRelay, "r1")
	r2 := ca.Issue(t, pki.RoleRelay, "r2")
	office := ca.Issue(t, pki.RoleHealthOffice, "hd-1")
	signed := ca.Sign(t, ca.Directory(
		pkitest.Member(r1, "Relay 1"),
		pkitest.Member(r2, "Relay 2"),
		pkitest.Member(office, "Gesundheitsamt 1"),
	))
	// A client that is not refused waits this long; the test fails long
	// before it.
	const pairTimeout = 30 * time.Second
	long := func(c *relay.Config) { c.PairTimeout = pairTimeout }
	key := newKey(t)
	a := startClusterRelay(t, ca, signed, r1, key, nil, long)
	b := startClusterRelay(t, ca, signed, r2, key, a, long)
	waitFor(t, "both relays to see each other", func() bool {
		return len(a.cl.Members()) == 2 && len(b.cl.Members()) == 2
	})
	m := dialMember(t, ca, a, office, "") // records Incoming, never dials back

	register := func(t *testing.T, name string) {
		t.Helper()
		res, err := m.request(func(id uint32) wire.Frame { return wire.Register{ReqID: id, TTL: 600, Name: name} })
		if err != nil || res.Code != wire.CodeOK {
			t.Fatalf("register %s = %+v, %v", name, res, err)
		}
		waitFor(t, "relay B to learn that A holds "+name, func() bool {
			return slices.Equal(b.cl.Holders(name), []string{"r1"})
		})
	}
	withdraw := func(t *testing.T, name string) {
		t.Helper()
		if res, err := m.withdraw(name); err != nil || res.Code != wire.CodeOK {
			t.Fatalf("withdraw %s = %+v, %v", name, res, err)
		}
	}
	// connect runs a client's TLS handshake through relay B. It returns the
	// handshake's error, which must come from the relay closing the
	// connection, not from the client's own deadline.
	connect := func(name string) error {
		c, err := net.DialTimeout("tcp", b.public, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second)) // < pairTimeout
		tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: ca.Roots, MinVersion: tls.VersionTLS13})
		return tc.Handshake()
	}
	// refusedWithin checks that the client's handshake failed because relay
	// B closed the connection, within a few seconds of start.
	refusedWithin := func(t *testing.T, err error, start time.Time) {
		t.Helper()
		d := time.Since(start)
		switch {
		case err == nil:
			t.Fatal("the client completed a handshake on a withdrawn route")
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("the client was still waiting %v after the withdraw (PairTimeout %v): %v", d, pairTimeout, err)
		case d > 5*time.Second:
			t.Errorf("the client was refused %v after the withdraw, want a few seconds at most", d)
		}
		t.Logf("client refused %v after the withdraw: %v", d, err)
	}

	t.Run("withdrawn before the client arrives", func(t *testing.T) {
		name := "used1.hd-1." + testNet
		register(t, name)
		noRoute := gather(b.reg, "relay_connections_total", "result", "no_route")
		withdraw(t, name)
		start := time.Now()
		refusedWithin(t, connect(name), start)
		if got := gather(b.reg, "relay_connections_total", "result", "no_route") - noRoute; got != 1 {
			t.Errorf("B: relay_connections_total{no_route} rose by %v, want 1", got)
		}
	})

	t.Run("withdrawn while the client waits", func(t *testing.T) {
		name := "used2.hd-1." + testNet
		register(t, name)
		refused := gather(b.reg, "relay_connections_total", "result", "pair_refused")
		errc := make(chan error, 1)
		go func() { errc <- connect(name) }()
		waitFor(t, "the member to see the forwarded Incoming", func() bool {
			return slices.ContainsFunc(m.seen(), func(in wire.Incoming) bool { return in.Name == name })
		})
		start := time.Now()
		withdraw(t, name)
		refusedWithin(t, <-errc, start)
		if got := gather(b.reg, "relay_connections_total", "result", "pair_refused") - refused; got != 1 {
			t.Errorf("B: relay_connections_total{pair_refused} rose by %v, want 1", got)
		}
		if got := gather(b.reg, "relay_pending_pairings"); got != 0 {
			t.Errorf("B: relay_pending_pairings = %v, want 0", got)
		}
	})
}

// clusterRelay is a relay.Server with its cluster node, serving on loopback.
type clusterRelay struct {
	srv                         *relay.Server
	cl                          *Cluster
	reg                         *prometheus.Registry
	public, pairing, controlTCP string
	cert                        *tls.Certificate
	trust                       pki.Trust
}

// startClusterRelay starts a relay and its cluster node, joined to join if
// not nil. mod, if any, adjusts the relay's configuration.
func startClusterRelay(t *testing.T, ca *pkitest.CA, signed []byte, cert *tls.Certificate, key []byte, join *clusterRelay, mod ...func(*relay.Config)) *clusterRelay {
	t.Helper()
	v := ca.Verifier(t, nil)
	if _, err := v.Update(signed); err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(cert)
	if err != nil {
		t.Fatal(err)
	}
	name := id.ID().Name
	log := testLogger(t).With("node", name)
	reg := prometheus.NewRegistry()
	ccfg := Config{Name: name, BindAddr: "127.0.0.1", SecretKey: key, Verifier: v, Logger: log, Registerer: reg}
	if join != nil {
		ccfg.Join = []string{join.cl.Addr()}
	}
	cl, err := New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	pub, pair, ctl := listen(), listen(), listen()
	trust := pki.Trust{Roots: ca.Roots, Directory: v}
	rcfg := relay.Config{
		Identity: id, Trust: trust, PairAddr: pair.Addr().String(),
		Cluster: cl, Logger: log, Registerer: reg,
	}
	for _, f := range mod {
		f(&rcfg)
	}
	srv, err := relay.New(rcfg)
	if err != nil {
		t.Fatal(err)
	}
	cl.SetLocal(srv)
	errs := make(chan error, 3)
	for _, f := range []func() error{
		func() error { return srv.ServePublic(pub) },
		func() error { return srv.ServePairing(pair) },
		func() error { return srv.ServeControlTCP(ctl) },
	} {
		go func() { errs <- f() }()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("%s: relay Shutdown: %v", name, err)
		}
		for range 3 {
			if err := <-errs; !errors.Is(err, relay.ErrServerClosed) {
				t.Errorf("%s: Serve returned %v, want ErrServerClosed", name, err)
			}
		}
		shutdown(t, cl)
	})
	if err := cl.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &clusterRelay{srv: srv, cl: cl, reg: reg, public: pub.Addr().String(), pairing: pair.Addr().String(),
		controlTCP: ctl.Addr().String(), cert: cert, trust: trust}
}

// member is a minimal private proxy: one TCP control session, dial-back on
// Incoming, and a splice to a local target. Adapted from relay's test
// harness.
type member struct {
	t       *testing.T
	stream  *tls.Conn
	target  string // if empty, Incoming is only recorded, as a proxy that no longer knows the route does
	results chan wire.Result
	reqID   uint32 // last request id; requests are made one at a time

	wmu sync.Mutex // serializes writes to stream

	mu       sync.Mutex // guards incoming
	incoming []wire.Incoming

	closeOnce sync.Once
	wg        sync.WaitGroup
}

func dialMember(t *testing.T, ca *pkitest.CA, r *clusterRelay, cert *tls.Certificate, target string) *member {
	t.Helper()
	relayID, err := pki.IDFromCert(r.cert.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity(cert)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.ClientConfig(id, r.trust, relayID, []string{pki.ALPNControl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.controlTCP, tc)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{t: t, stream: c, target: target, results: make(chan wire.Result, 1)}
	m.wg.Go(m.readLoop)
	t.Cleanup(m.close)
	return m
}

func (m *member) close() {
	m.closeOnce.Do(func() { m.stream.Close() })
	m.wg.Wait()
}

func (m *member) write(f wire.Frame) error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	return wire.WriteFrame(m.stream, f)
}

func (m *member) seen() []wire.Incoming {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.incoming)
}

func (m *member) readLoop() {
	defer close(m.results)
	for {
		f, _, err := wire.ReadFrame(m.stream, nil)
		if err != nil {
			return
		}
		switch f := f.(type) {
		case wire.Result:
			select {
			case m.results <- f:
			default:
			}
		case wire.Incoming:
			m.mu.Lock()
			m.incoming = append(m.incoming, f)
			m.mu.Unlock()
			if m.target != "" {
				m.wg.Go(func() { m.dialBack(f) })
			}
		case wire.Ping:
			m.write(wire.Pong(f))
		}
	}
}

func (m *member) register(name string) (wire.Result, error) {
	return m.request(func(id uint32) wire.Frame { return wire.Register{ReqID: id, Name: name} })
}

func (m *member) withdraw(name string) (wire.Result, error) {
	return m.request(func(id uint32) wire.Frame { return wire.Withdraw{ReqID: id, Name: name} })
}

// request sends the frame f builds and waits for its Result. Requests are
// made one at a time.
func (m *member) request(f func(id uint32) wire.Frame) (wire.Result, error) {
	m.reqID++
	if err := m.write(f(m.reqID)); err != nil {
		return wire.Result{}, err
	}
	select {
	case r, ok := <-m.results:
		if !ok {
			return wire.Result{}, io.EOF
		}
		if r.ReqID != m.reqID {
			return r, fmt.Errorf("result for request %d, want %d", r.ReqID, m.reqID)
		}
		return r, nil
	case <-time.After(5 * time.Second):
		return wire.Result{}, errors.New("no result")
	}
}

// dialBack pairs with the relay named in the Incoming and splices to the
// target.
func (m *member) dialBack(in wire.Incoming) {
	c, err := net.DialTimeout("tcp", in.PairAddr, 5*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	pre, _ := wire.AppendPreamble(nil, wire.Preamble{Token: in.Token, Name: in.Name})
	c.Write(pre)
	var st [1]byte
	if _, err := io.ReadFull(c, st[:]); err != nil || st[0] != wire.PairOK {
		return
	}
	tc, err := net.DialTimeout("tcp", m.target, 5*time.Second)
	if err != nil {
		return
	}
	defer tc.Close()
	done := make(chan struct{})
	go func() {
		io.Copy(tc, c)
		tc.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(c, tc)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

// backend is a local HTTPS server with the member's own certificate.
type backend struct{ addr string }

func startBackend(t *testing.T, cert *tls.Certificate) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", r.TLS.ServerName)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13},
	}
	done := make(chan struct{})
	go func() {
		srv.ServeTLS(ln, "", "")
		close(done)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return &backend{addr: ln.Addr().String()}
}

// get makes one HTTPS request through a relay with SNI name and returns the
// body and the TLS state the client saw.
func get(t *testing.T, ca *pkitest.CA, relayAddr, name string) (string, *tls.ConnectionState, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", relayAddr, &tls.Config{
		ServerName: name,
		RootCAs:    ca.Roots,
		MinVersion: tls.VersionTLS13,
	})
	if err != nil {
		return "", nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest("GET", "https://"+name+"/", nil)
	req.Close = true
	if err := req.Write(c); err != nil {
		return "", nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	cs := c.ConnectionState()
	return string(b), &cs, err
}
