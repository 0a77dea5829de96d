package peer_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/peer"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay/relaytest"
)

const testNet = "kurier.test"

// network is a relay, an office whose peer server is reachable only through
// its private proxy, and a vendor that calls it.
type network struct {
	ca             *pkitest.CA
	relay          *relaytest.Relay
	office, vendor *tls.Certificate
	officeV        *pki.Verifier
	vendorV        *pki.Verifier
	srv            *peer.Server
}

func mustID(t *testing.T, c *tls.Certificate) *pki.Identity {
	t.Helper()
	id, err := pki.NewIdentity(c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newNetwork(t *testing.T, h http.Handler) *network {
	t.Helper()
	ca := pkitest.NewCA(t, testNet, time.Now())
	n := &network{ca: ca, relay: relaytest.Listen(t, ca, "r1"),
		office: ca.Issue(t, pki.RoleHealthOffice, "hd-1"), vendor: ca.Issue(t, pki.RoleProvider, "vendor-a")}
	d := ca.Directory(n.relay.Member(), pkitest.Member(n.office, "Office", "echo"), pkitest.Member(n.vendor, "Vendor"))
	signed := ca.Sign(t, d)
	verifier := func() *pki.Verifier {
		v := ca.Verifier(t, nil)
		if _, err := v.Update(signed); err != nil {
			t.Fatal(err)
		}
		return v
	}
	n.officeV, n.vendorV = verifier(), verifier()
	n.relay.Serve(t, pki.Trust{Roots: ca.Roots, Directory: verifier()}, nil)

	// The office: peer server behind its private proxy.
	ln := proxy.NewListener(64)
	p, err := proxy.New(proxy.Config{Identity: mustID(t, n.office), Trust: pki.Trust{Roots: ca.Roots, Directory: n.officeV}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pdone := make(chan struct{})
	go func() { p.Run(ctx); close(pdone) }()
	n.srv, err = peer.NewServer(peer.ServerConfig{Identity: mustID(t, n.office), Trust: pki.Trust{Roots: ca.Roots, Directory: n.officeV}, Handler: h})
	if err != nil {
		t.Fatal(err)
	}
	sdone := make(chan error, 1)
	go func() { sdone <- n.srv.Serve(ln) }()
	t.Cleanup(func() {
		n.srv.Close()
		if err := <-sdone; !errors.Is(err, peer.ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
		p.Close()
		cancel()
		<-pdone
	})
	name := "hd-1." + testNet
	if err := p.AddRoute(t.Context(), proxy.Route{Name: name, Target: ln}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Registered(name) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("route not registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

func (n *network) client(t *testing.T, mod func(*peer.ClientConfig)) *peer.Client {
	t.Helper()
	cfg := peer.ClientConfig{Identity: mustID(t, n.vendor), Trust: pki.Trust{Roots: n.ca.Roots, Directory: n.vendorV}}
	if mod != nil {
		mod(&cfg)
	}
	c, err := peer.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var office = pki.ID{Network: testNet, Role: pki.RoleHealthOffice, Name: "hd-1"}

// whoami answers with the verified caller and the protocol.
var whoami = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	id, err := peer.Caller(r)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	fmt.Fprintf(w, "%s %s %s", id, r.Proto, r.TLS.NegotiatedProtocol)
})

func call(t *testing.T, c *peer.Client, to pki.ID) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "/kurier/peer/v1/messages", strings.NewReader("{}"))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("{}")), nil }
	resp, err := c.Do(t.Context(), to, req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestCallThroughRelayReusesConnection(t *testing.T) {
	n := newNetwork(t, whoami)
	c := n.client(t, nil)
	for range 5 {
		if got, want := call(t, c, office), "spiffe://kurier.test/provider/vendor-a HTTP/2.0 kurier-peer/1"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	// Five calls, one relayed connection.
	if got := relayCount(n, "relay_connections_total", "routed"); got != 1 {
		t.Errorf("relayed connections for 5 calls = %v, want 1 (reuse)", got)
	}
	// Many callers at once still share it.
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { call(t, c, office) })
	}
	wg.Wait()
	if got := relayCount(n, "relay_connections_total", "routed"); got != 1 {
		t.Errorf("relayed connections after 50 parallel calls = %v, want 1", got)
	}
}

func relayCount(n *network, name, result string) float64 {
	mfs, _ := n.relay.Registry.Gather()
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetValue() == result {
					return m.Counter.GetValue()
				}
			}
		}
	}
	return 0
}

func TestIdleAndMaxAge(t *testing.T) {
	n := newNetwork(t, whoami)
	c := n.client(t, func(cfg *peer.ClientConfig) { cfg.IdleTimeout = 100 * time.Millisecond })
	call(t, c, office)
	time.Sleep(400 * time.Millisecond) // let the idle connection close
	call(t, c, office)
	if got := relayCount(n, "relay_connections_total", "routed"); got != 2 {
		t.Errorf("after an idle period: %v relayed connections, want 2", got)
	}
	old := n.client(t, func(cfg *peer.ClientConfig) { cfg.MaxAge = 50 * time.Millisecond })
	call(t, old, office)
	time.Sleep(100 * time.Millisecond)
	call(t, old, office)
	if got := relayCount(n, "relay_connections_total", "routed"); got != 4 {
		t.Errorf("after max age: %v relayed connections, want 4", got)
	}
}

func TestRefusesUnknownAndWrongPeers(t *testing.T) {
	n := newNetwork(t, whoami)
	// A caller the directory does not list is refused by the office.
	stranger := n.ca.Issue(t, pki.RoleProvider, "stranger")
	c := n.client(t, func(cfg *peer.ClientConfig) { cfg.Identity = mustID(t, stranger) })
	req, _ := http.NewRequest("POST", "/x", nil)
	if _, err := c.Do(t.Context(), office, req); err == nil {
		t.Error("a non-member reached the office")
	}
	// A member that is not registered anywhere is unreachable.
	c2 := n.client(t, nil)
	req, _ = http.NewRequest("POST", "/x", nil)
	_, err := c2.Do(t.Context(), pki.ID{Network: testNet, Role: pki.RoleProvider, Name: "vendor-a"}, req)
	if !errors.Is(err, peer.ErrUnreachable) {
		t.Errorf("unregistered member: %v, want ErrUnreachable", err)
	}
}

func TestShutdownLetsRequestsFinish(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	n := newNetwork(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		<-release
		io.WriteString(w, "finished")
	}))
	c := n.client(t, nil)
	got := make(chan string, 1)
	go func() { got <- call(t, c, office) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.srv.Shutdown(ctx) }()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if s := <-got; s != "finished" {
		t.Errorf("request during shutdown got %q", s)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v", err)
	}
}
