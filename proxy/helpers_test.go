package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

const testNetwork = "kurier.test"

// env is a test network: a CA, the member hd-1 the proxy runs for, and the
// relays r1 and r2, all listed in one directory. hd-1 and r1 have Ed25519
// keys, as kurier enroll makes them; r2 has a P-256 key from before.
type env struct {
	ca      *pkitest.CA
	member  *tls.Certificate
	id      *pki.Identity
	relays  map[string]*pki.Identity
	members []pki.Member
	trust   pki.Trust
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ca := pkitest.NewCA(t, testNetwork, time.Now())
	e := &env{ca: ca, relays: map[string]*pki.Identity{}}
	e.member = ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{KeyType: pkitest.Ed25519})
	var err error
	if e.id, err = pki.NewIdentity(e.member); err != nil {
		t.Fatal(err)
	}
	e.members = append(e.members, pkitest.Member(e.member, "Health office 1"))
	for _, r := range []struct {
		name string
		kt   pkitest.KeyType
	}{{"r1", pkitest.Ed25519}, {"r2", pkitest.P256}} {
		c := ca.IssueWith(t, pki.RoleRelay, r.name, pkitest.Options{KeyType: r.kt})
		if e.relays[r.name], err = pki.NewIdentity(c); err != nil {
			t.Fatal(err)
		}
		e.members = append(e.members, pkitest.Member(c, "Relay "+r.name))
	}
	e.trust = ca.Trust(t, ca.Directory(e.members...))
	return e
}

// relay starts a fake relay for one of the env's relay identities.
func (e *env) relay(t testing.TB, name string, withQUIC bool) *fakeRelay {
	t.Helper()
	return newFakeRelay(t, e.relays[name], e.trust, withQUIC)
}

// testProxy is a running proxy with its registry.
type testProxy struct {
	*Proxy
	reg     *prometheus.Registry
	runDone chan error
}

// startProxy makes and runs a proxy for hd-1. Its cleanup shuts it down and
// checks that Shutdown and Run return as they should.
func startProxy(t testing.TB, e *env, relays []*fakeRelay, edit func(*Config)) *testProxy {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := Config{
		Identity:     e.id,
		Trust:        e.trust,
		PingInterval: time.Second,
		BackoffMin:   20 * time.Millisecond,
		BackoffMax:   200 * time.Millisecond,
		QUICTimeout:  time.Second,
		Logger:       slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:   reg,
	}
	for _, r := range relays {
		cfg.Relays = append(cfg.Relays, r.addr)
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tp := &testProxy{Proxy: p, reg: reg, runDone: make(chan error, 1)}
	go func() { tp.runDone <- p.Run(context.Background()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		select {
		case err := <-tp.runDone:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("Run = %v, want ErrClosed", err)
			}
		case <-ctx.Done():
			t.Errorf("Run did not return after Shutdown")
		}
		p.Close()
	})
	return tp
}

// checkGoroutines fails the test if the number of goroutines does not come
// back to where it was when it was called. Call it first, so that its
// cleanup runs last.
func checkGoroutines(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("%d goroutines left, want at most %d:\n%s", n, base, buf)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// value reads a counter or gauge.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	case d.Histogram != nil:
		return float64(d.Histogram.GetSampleCount())
	}
	t.Fatalf("metric %v has no value", m.Desc())
	return 0
}

func (tp *testProxy) incoming(t testing.TB, outcome string) float64 {
	return value(t, tp.m.incoming.WithLabelValues(outcome))
}

// waitConnected waits until the proxy has a session with each of the named
// relays holding n routes.
func (tp *testProxy) waitConnected(t testing.TB, n int, relays ...string) {
	t.Helper()
	waitUntil(t, "relays "+strings.Join(relays, ",")+" connected", func() bool {
		st := tp.Status()
		for _, name := range relays {
			ok := false
			for _, r := range st.Relays {
				if r.Name == name && r.Connected && r.Routes == n {
					ok = true
				}
			}
			if !ok {
				return false
			}
		}
		return true
	})
}

func (tp *testProxy) relayStatus(name string) RelayStatus {
	for _, r := range tp.Status().Relays {
		if r.Name == name {
			return r
		}
	}
	return RelayStatus{}
}

// tlsEcho is a local HTTPS-like server: it presents cert and echoes what it
// reads.
type tlsEcho struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]struct{}
}

func newTLSEcho(t testing.TB, cert *tls.Certificate) *tlsEcho {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	s := &tlsEcho{ln: ln, conn: map[net.Conn]struct{}{}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conn[c] = struct{}{}
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.conn {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

func (s *tlsEcho) addr() string { return s.ln.Addr().String() }

// tcpServer runs handle for each connection on a loopback port.
func tcpServer(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}
