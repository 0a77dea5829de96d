package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/relay/wire"
)

const testNet = "kurier.test"

// testNetwork is a CA, a directory and the certificates of one relay and two
// members. It is a mixed network: the relay and the office have Ed25519
// keys, as kurier enroll makes them, the vendor a P-256 key from before.
type testNetwork struct {
	ca       *pkitest.CA
	relay    *tls.Certificate
	office   *tls.Certificate // health-office hd-1
	vendor   *tls.Certificate // provider vendor-a
	verifier *pki.Verifier
}

func newTestNetwork(t *testing.T) *testNetwork {
	t.Helper()
	ca := pkitest.NewCA(t, testNet, time.Now())
	n := &testNetwork{ca: ca}
	n.relay = ca.IssueWith(t, pki.RoleRelay, "r1", pkitest.Options{KeyType: pkitest.Ed25519})
	n.office = ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{KeyType: pkitest.Ed25519})
	n.vendor = ca.IssueWith(t, pki.RoleProvider, "vendor-a", pkitest.Options{KeyType: pkitest.P256})
	n.verifier = ca.Verifier(t, n.directory())
	return n
}

func (n *testNetwork) directory(mod ...func(*pki.Directory)) *pki.Directory {
	d := n.ca.Directory(
		pkitest.Member(n.relay, "Relay 1"),
		pkitest.Member(n.office, "Gesundheitsamt 1"),
		pkitest.Member(n.vendor, "Vendor A"),
	)
	for _, f := range mod {
		f(d)
	}
	return d
}

// publish signs d and loads it into the verifier.
func (n *testNetwork) publish(t *testing.T, d *pki.Directory) {
	t.Helper()
	if _, err := n.verifier.Update(n.ca.Sign(t, d)); err != nil {
		t.Fatal(err)
	}
}

func (n *testNetwork) trust() pki.Trust { return pki.Trust{Roots: n.ca.Roots, Directory: n.verifier} }

func identity(t *testing.T, c *tls.Certificate) *pki.Identity {
	t.Helper()
	id, err := pki.NewIdentity(c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testRelay is a running relay with all four listeners on loopback.
type testRelay struct {
	srv                         *Server
	reg                         *prometheus.Registry
	public, pairing, controlTCP string
	controlUDP                  string
	errs                        chan error
	pc                          net.PacketConn
}

func startRelay(t *testing.T, n *testNetwork, mod func(*Config)) *testRelay {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Identity:   identity(t, n.relay),
		Trust:      n.trust(),
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: reg,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
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
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &testRelay{srv: srv, reg: reg, public: pub.Addr().String(), pairing: pair.Addr().String(),
		controlTCP: ctl.Addr().String(), controlUDP: pc.LocalAddr().String(), errs: make(chan error, 4), pc: pc}
	for _, f := range []func() error{
		func() error { return srv.ServePublic(pub) },
		func() error { return srv.ServePairing(pair) },
		func() error { return srv.ServeControlTCP(ctl) },
		func() error { return srv.ServeControlQUIC(pc) },
	} {
		go func() { tr.errs <- f() }()
	}
	t.Cleanup(func() {
		srv.Close()
		pc.Close()
		for range 4 {
			if err := <-tr.errs; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		}
	})
	return tr
}

func (r *testRelay) count(name string, labels ...string) float64 {
	mfs, err := r.reg.Gather()
	if err != nil {
		panic(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.Metric {
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.Label {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				match = match && found
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
		return sum
	}
	return 0
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// member is a minimal private proxy for relay tests: one control session,
// dial-back on Incoming, and a splice to a local target address.
type member struct {
	t      *testing.T
	relay  *testRelay
	stream io.ReadWriter
	closer func()
	target string // local TCP address for relayed connections

	mu      sync.Mutex // guards results, gone, reqID
	results map[uint32]chan wire.Result
	gone    []wire.RouteGone
	reqID   uint32
	// preamble, if set, rewrites the preamble before dialling back.
	preamble func(wire.Preamble) wire.Preamble
	incoming chan wire.Incoming
	wg       sync.WaitGroup
}

func dialMember(t *testing.T, n *testNetwork, r *testRelay, cert *tls.Certificate, useQUIC bool, target string) (*member, error) {
	t.Helper()
	relayID, _ := pki.IDFromCert(n.relay.Leaf)
	tc, err := pki.ClientConfig(identity(t, cert), n.trust(), relayID, []string{pki.ALPNControl}, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &member{t: t, relay: r, target: target, results: map[uint32]chan wire.Result{}, incoming: make(chan wire.Incoming, 16)}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if useQUIC {
		qc, err := quic.DialAddr(ctx, r.controlUDP, tc, &quic.Config{KeepAlivePeriod: time.Second})
		if err != nil {
			return nil, err
		}
		st, err := qc.OpenStreamSync(ctx)
		if err != nil {
			return nil, err
		}
		m.stream, m.closer = st, func() { st.Close(); qc.CloseWithError(0, "") }
	} else {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.controlTCP, tc)
		if err != nil {
			return nil, err
		}
		m.stream, m.closer = c, func() { c.Close() }
	}
	m.wg.Go(m.readLoop)
	t.Cleanup(m.close)
	return m, nil
}

func (m *member) close() {
	m.closer()
	m.wg.Wait()
}

func (m *member) readLoop() {
	for {
		f, _, err := wire.ReadFrame(m.stream, nil)
		if err != nil {
			m.mu.Lock()
			for _, ch := range m.results {
				close(ch)
			}
			m.results = map[uint32]chan wire.Result{}
			m.mu.Unlock()
			return
		}
		switch f := f.(type) {
		case wire.Result:
			m.mu.Lock()
			ch := m.results[f.ReqID]
			delete(m.results, f.ReqID)
			m.mu.Unlock()
			if ch != nil {
				ch <- f
			}
		case wire.Incoming:
			select {
			case m.incoming <- f:
			default:
			}
			if m.target != "" {
				m.wg.Go(func() { m.dialBack(f) })
			}
		case wire.RouteGone:
			m.mu.Lock()
			m.gone = append(m.gone, f)
			m.mu.Unlock()
		case wire.Ping:
			wire.WriteFrame(m.stream, wire.Pong(f))
		}
	}
}

func (m *member) request(f func(id uint32) wire.Frame) (wire.Result, error) {
	m.mu.Lock()
	m.reqID++
	id := m.reqID
	ch := make(chan wire.Result, 1)
	m.results[id] = ch
	m.mu.Unlock()
	if err := wire.WriteFrame(m.stream, f(id)); err != nil {
		return wire.Result{}, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return wire.Result{}, io.EOF
		}
		return r, nil
	case <-time.After(5 * time.Second):
		return wire.Result{}, errors.New("no result")
	}
}

func (m *member) register(name string, ttl uint32, singleUse bool) (wire.Result, error) {
	return m.request(func(id uint32) wire.Frame {
		return wire.Register{ReqID: id, Name: name, TTL: ttl, SingleUse: singleUse}
	})
}

func (m *member) mustRegister(name string, ttl uint32, singleUse bool) {
	m.t.Helper()
	res, err := m.register(name, ttl, singleUse)
	if err != nil || res.Code != wire.CodeOK {
		m.t.Fatalf("register %s = %+v, %v", name, res, err)
	}
}

// dialBack pairs with the relay and splices to the target.
func (m *member) dialBack(in wire.Incoming) {
	addr := in.PairAddr
	if addr == "" {
		addr = m.relay.pairing
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	pre := wire.Preamble{Token: in.Token, Name: in.Name}
	if m.preamble != nil {
		pre = m.preamble(pre)
	}
	b, _ := wire.AppendPreamble(nil, pre)
	c.Write(b)
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

// backend is a local HTTPS server with its own certificate, standing in for
// the service behind a private proxy.
type backend struct {
	addr string
	cert *tls.Certificate
	srv  *http.Server
}

func startBackend(t *testing.T, cert *tls.Certificate, h http.Handler) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s\n", r.TLS.ServerName)
		})
	}
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return &backend{addr: ln.Addr().String(), cert: cert, srv: srv}
}

// checkGoroutines fails the test if the goroutine count does not return to
// base within a few seconds.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutines: %d, want <= %d\n%s", n, base, trimStacks(string(buf)))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func trimStacks(s string) string {
	if len(s) > 8000 {
		return s[:8000] + "\n…"
	}
	return strings.TrimSpace(s)
}
