package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/relay/wire"
)

const ownName = "hd-1." + testNetwork

// clientTLS runs a client TLS handshake to name over c, as a vendor's EPS
// would through the relay, and checks that it sees want's certificate.
func clientTLS(t *testing.T, e *env, c net.Conn, name string, want *tls.Certificate) *tls.Conn {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: e.ca.Roots, MinVersion: tls.VersionTLS13})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake through the relay: %v", err)
	}
	if got := tc.ConnectionState().PeerCertificates[0]; !got.Equal(want.Leaf) {
		t.Fatalf("client saw certificate %v, want the local server's %v", got.Subject, want.Leaf.Subject)
	}
	return tc
}

// echoRoundTrip sends n random bytes and checks that they come back.
func echoRoundTrip(t *testing.T, c io.ReadWriter, n int) {
	t.Helper()
	want := make([]byte, n)
	rand.Read(want)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(want)
		errc <- err
	}()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("echoed bytes differ")
	}
}

func TestDialTargetEndToEnd(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	echo := newTLSEcho(t, e.member)
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")
	if got := p.relayStatus("r1").Transport; got != transportQUIC {
		t.Errorf("transport = %q, want quic", got)
	}

	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo.addr()}}); err != nil {
		t.Fatalf("AddRoute: %v", err)
	}
	if !r1.hasRoute(ownName) {
		t.Fatal("relay does not hold the route after AddRoute returned")
	}
	if got := p.Registered(ownName); got != 1 {
		t.Errorf("Registered = %d, want 1", got)
	}
	if st := p.Status(); !st.Ready() || st.Routes != 1 {
		t.Errorf("Status = %+v, want ready with 1 route", st)
	}

	tc := clientTLS(t, e, r1.dial(ownName), ownName, e.member)
	echoRoundTrip(t, tc, 1<<20)
	echoRoundTrip(t, tc, 10)
	tc.Close()

	if got := p.incoming(t, outPaired); got != 1 {
		t.Errorf("incoming paired = %v, want 1", got)
	}
	waitUntil(t, "relayed connection closed", func() bool { return p.Status().Conns == 0 })
	if got := value(t, p.m.bytesIn); got < 1<<20 {
		t.Errorf("bytes in = %v, want at least 1 MiB", got)
	}
	if got := value(t, p.m.pairing); got != 1 {
		t.Errorf("pairing observations = %v, want 1", got)
	}
}

// listenerServer runs a TLS echo server with cert on ln's connections and
// reports the route of each connection it accepts.
func listenerServer(t *testing.T, ln *Listener, cert *tls.Certificate) <-chan string {
	t.Helper()
	routes := make(chan string, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Accept: %v", err)
				}
				return
			}
			routes <- c.(*Conn).Route()
			wg.Go(func() {
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13})
				defer tc.Close()
				io.Copy(tc, tc)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return routes
}

func TestListenerTarget(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	ln := NewListener(4)
	routes := listenerServer(t, ln, e.member)
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")

	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: ln}); err != nil {
		t.Fatalf("AddRoute: %v", err)
	}
	tc := clientTLS(t, e, r1.dial(ownName), ownName, e.member)
	if got := <-routes; got != ownName {
		t.Errorf("Conn.Route() = %q, want %q", got, ownName)
	}
	echoRoundTrip(t, tc, 256<<10)
	if got := p.Status().Conns; got != 1 {
		t.Errorf("Status().Conns = %d, want 1", got)
	}
	tc.Close()
	waitUntil(t, "listener conn closed", func() bool { return p.Status().Conns == 0 })
	if got := value(t, p.m.bytesIn); got < 256<<10 {
		t.Errorf("bytes in = %v, want at least 256 KiB", got)
	}
	if got := p.incoming(t, outPaired); got != 1 {
		t.Errorf("paired = %v, want 1", got)
	}

	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
	}
	// A route pointing at a closed Listener refuses.
	tok := wire.NewToken()
	r1.announce(tok, ownName, ownName, "")
	waitUntil(t, "closed listener refused", func() bool { return p.incoming(t, outTargetError) == 1 })
}

func TestListenerBacklog(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	ln := NewListener(1) // nobody accepts
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: ln}); err != nil {
		t.Fatalf("AddRoute: %v", err)
	}
	r1.dial(ownName)
	waitUntil(t, "first conn queued", func() bool { return p.incoming(t, outPaired) == 1 })
	r1.dial(ownName)
	waitUntil(t, "second conn refused", func() bool { return p.incoming(t, outBacklogFull) == 1 })
	if got := p.Status().Conns; got != 1 {
		t.Errorf("Conns = %d, want 1", got)
	}
	ln.Close() // closes the queued conn
	waitUntil(t, "queued conn closed", func() bool { return p.Status().Conns == 0 })
}
