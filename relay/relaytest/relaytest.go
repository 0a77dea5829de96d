// Package relaytest runs real relays on loopback for other packages' tests.
// A relay is created in two steps because the directory must list the
// relay's addresses before anything can trust it: Listen opens the sockets
// and issues the relay's certificate, the test builds and signs a directory
// that includes Member(), then Serve starts the relay.
package relaytest

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/relay"
)

// Relay is one relay on 127.0.0.1.
type Relay struct {
	Name      string
	Cert      *tls.Certificate
	Endpoints pki.RelayEndpoints
	// Server is set by Serve.
	Server *relay.Server
	// Registry holds the relay's metrics.
	Registry *prometheus.Registry

	lns  [3]net.Listener // public, pairing, control-tcp
	pc   net.PacketConn
	wg   sync.WaitGroup
	once sync.Once
}

// Listen opens the relay's sockets on ephemeral loopback ports and issues
// its certificate. The sockets are closed at the end of the test.
func Listen(t testing.TB, ca *pkitest.CA, name string) *Relay {
	t.Helper()
	r := &Relay{Name: name, Cert: ca.Issue(t, pki.RoleRelay, name), Registry: prometheus.NewRegistry()}
	for i := range r.lns {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.lns[i] = ln
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.pc = pc
	r.Endpoints = pki.RelayEndpoints{
		Public: r.lns[0].Addr().String(), Pairing: r.lns[1].Addr().String(),
		ControlTCP: r.lns[2].Addr().String(), Control: pc.LocalAddr().String(),
	}
	t.Cleanup(r.Stop)
	return r
}

// Member returns the relay's directory entry, with its real endpoints.
func (r *Relay) Member() pki.Member {
	m := pkitest.Member(r.Cert, "Relay "+r.Name)
	ends := r.Endpoints
	m.Relay = &ends
	return m
}

// Serve starts the relay with trust (its verifier must hold a directory
// listing Member()). mod, if not nil, adjusts the configuration.
func (r *Relay) Serve(t testing.TB, trust pki.Trust, mod func(*relay.Config)) {
	t.Helper()
	id, err := pki.NewIdentity(r.Cert)
	if err != nil {
		t.Fatal(err)
	}
	cfg := relay.Config{
		Identity:   id,
		Trust:      trust,
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("relay", r.Name),
		Registerer: r.Registry,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Server = srv
	ls := relay.Listeners{Public: r.lns[0], Pairing: r.lns[1], ControlTCP: r.lns[2], ControlQUIC: r.pc}
	r.wg.Go(func() {
		if err := srv.Serve(ls); err != nil {
			t.Errorf("relay %s: %v", r.Name, err)
		}
	})
}

// Stop closes the relay (if serving) and its sockets, and waits for it. It
// is idempotent.
func (r *Relay) Stop() {
	r.once.Do(func() {
		if r.Server != nil {
			r.Server.Close()
		}
		for _, ln := range r.lns {
			ln.Close()
		}
		r.pc.Close()
		r.wg.Wait()
	})
}
