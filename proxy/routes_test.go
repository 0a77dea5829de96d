package proxy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/wire"
)

func TestRouteNamespace(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	p, err := New(Config{Identity: e.id, Trust: e.trust, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	target := DialTarget{Addr: "127.0.0.1:443"}
	for _, tt := range []struct {
		name    string
		route   Route
		wantErr error
	}{
		{"own name", Route{Name: ownName, Target: target}, nil},
		{"one-time route", Route{Name: "abc." + ownName, TTL: time.Minute, SingleUse: true, Target: target}, nil},
		{"listener target", Route{Name: "l." + ownName, TTL: time.Minute, Target: NewListener(1)}, nil},
		{"own name with TTL", Route{Name: ownName, TTL: time.Minute, Target: target}, ErrInvalidRoute},
		{"own name single use", Route{Name: ownName, SingleUse: true, Target: target}, ErrInvalidRoute},
		{"one-time route without TTL", Route{Name: "abc." + ownName, Target: target}, ErrInvalidRoute},
		{"two labels below", Route{Name: "a.b." + ownName, TTL: time.Minute, Target: target}, ErrNamespace},
		{"other member", Route{Name: "hd-2." + testNetwork, Target: target}, ErrNamespace},
		{"suffix without dot", Route{Name: "x" + ownName, Target: target}, ErrNamespace},
		{"network only", Route{Name: testNetwork, Target: target}, ErrNamespace},
		{"upper case label", Route{Name: "ABC." + ownName, TTL: time.Minute, Target: target}, ErrNamespace},
		{"bad label", Route{Name: "-a." + ownName, TTL: time.Minute, Target: target}, ErrNamespace},
		{"empty label", Route{Name: "." + ownName, TTL: time.Minute, Target: target}, ErrNamespace},
		{"long label", Route{Name: strings.Repeat("a", 64) + "." + ownName, TTL: time.Minute, Target: target}, ErrNamespace},
		{"no target", Route{Name: ownName}, ErrInvalidRoute},
		{"bad target address", Route{Name: ownName, Target: DialTarget{Addr: "nohost"}}, ErrInvalidRoute},
		{"nil listener", Route{Name: ownName, Target: (*Listener)(nil)}, ErrInvalidRoute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := p.AddRoute(t.Context(), tt.route)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("AddRoute(%q) = %v, want %v", tt.route.Name, err, tt.wantErr)
			}
		})
	}
	if got := p.Status().Routes; got != 3 {
		t.Errorf("routes held = %d, want 3", got)
	}
	if err := p.RemoveRoute(t.Context(), "abc."+ownName); err != nil {
		t.Errorf("RemoveRoute: %v", err)
	}
	if err := p.RemoveRoute(t.Context(), "abc."+ownName); !errors.Is(err, ErrNoRoute) {
		t.Errorf("second RemoveRoute = %v, want ErrNoRoute", err)
	}
}

func TestRelayRefusesRoute(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	forbidden, limited := "nope."+ownName, "full."+ownName
	r1.set(func(r *fakeRelay) {
		r.answer = func(m wire.Register) wire.Code {
			switch m.Name {
			case forbidden:
				return wire.CodeForbidden
			case limited:
				return wire.CodeLimit
			}
			return wire.CodeOK
		}
	})
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.PingInterval = 100 * time.Millisecond })
	p.waitConnected(t, 0, "r1")
	target := DialTarget{Addr: "127.0.0.1:443"}

	// A refusal for good is returned, and the route is not kept.
	err := p.AddRoute(t.Context(), Route{Name: forbidden, TTL: time.Minute, Target: target})
	re, ok := errors.AsType[*RefusedError](err)
	if !ok || re.Code != wire.CodeForbidden || re.Relay != "r1" {
		t.Fatalf("AddRoute = %v, want a RefusedError from r1 with code forbidden", err)
	}
	if got := p.Status().Routes; got != 0 {
		t.Errorf("routes held after refusal = %d, want 0", got)
	}

	// A relay at a limit: the route is kept and registered once it has room.
	if err := p.AddRoute(t.Context(), Route{Name: limited, TTL: time.Minute, Target: target}); err != nil {
		t.Fatalf("AddRoute at a limited relay = %v, want nil", err)
	}
	if got := p.Registered(limited); got != 0 {
		t.Errorf("Registered = %d, want 0", got)
	}
	if p.Status().Ready() {
		t.Error("Status is ready although a route is not registered anywhere")
	}
	r1.set(func(r *fakeRelay) { r.answer = nil })
	waitUntil(t, "route registered after retry", func() bool { return p.Registered(limited) == 1 })
	if !p.Status().Ready() {
		t.Error("Status not ready")
	}
	if got := value(t, p.m.registrations.WithLabelValues("register", "limit")); got < 1 {
		t.Errorf("registrations{limit} = %v, want at least 1", got)
	}
}

func TestSingleUseRoute(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	r2 := e.relay(t, "r2", true)
	echo := newTLSEcho(t, e.member)
	p := startProxy(t, e, []*fakeRelay{r1, r2}, nil)
	p.waitConnected(t, 0, "r1", "r2")

	once := "once." + ownName
	if err := p.AddRoute(t.Context(), Route{Name: once, TTL: time.Minute, SingleUse: true, Target: DialTarget{Addr: echo.addr()}}); err != nil {
		t.Fatal(err)
	}
	if got := p.Registered(once); got != 2 {
		t.Fatalf("Registered = %d, want 2", got)
	}
	// The local server has only the member's own certificate; the client
	// checks that name, whatever route it came through.
	tc := clientTLS(t, e, r1.dial(once), ownName, e.member)
	echoRoundTrip(t, tc, 100)
	// Used once: dropped locally and withdrawn at the other relay.
	waitUntil(t, "single-use route withdrawn everywhere", func() bool {
		return p.Status().Routes == 0 && r2.withdrawn(once) && !r2.hasRoute(once) && !r1.hasRoute(once)
	})
	// A late announcement for it (a second client elsewhere) is refused.
	r2.announce(wire.NewToken(), once, once, "")
	waitUntil(t, "second use refused", func() bool { return p.incoming(t, outNoRoute) == 1 })
	tc.Close()

	// A relay reporting the use (RouteGone) has the same effect.
	twice := "twice." + ownName
	if err := p.AddRoute(t.Context(), Route{Name: twice, TTL: time.Minute, SingleUse: true, Target: DialTarget{Addr: echo.addr()}}); err != nil {
		t.Fatal(err)
	}
	r1.sendAll(wire.RouteGone{Name: twice, Reason: wire.GoneUsed})
	waitUntil(t, "route gone everywhere", func() bool {
		return p.Status().Routes == 0 && r2.withdrawn(twice) && !r2.hasRoute(twice)
	})

	// RouteGone for a route that is not single-use: registered again.
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo.addr()}}); err != nil {
		t.Fatal(err)
	}
	r1.set(func(r *fakeRelay) { delete(r.routes, ownName) })
	r1.sendAll(wire.RouteGone{Name: ownName, Reason: wire.GoneUsed})
	waitUntil(t, "own route registered again", func() bool { return r1.hasRoute(ownName) })
	if got := p.Status().Routes; got != 1 {
		t.Errorf("routes = %d, want 1", got)
	}
}

func TestRouteExpiry(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")
	name := "brief." + ownName
	if err := p.AddRoute(t.Context(), Route{Name: name, TTL: 300 * time.Millisecond, Target: DialTarget{Addr: "127.0.0.1:443"}}); err != nil {
		t.Fatal(err)
	}
	if reg, ok := r1.route(name); !ok || reg.TTL != 1 {
		t.Errorf("registered %+v, want TTL rounded up to 1s", reg)
	}
	waitUntil(t, "expired route dropped and withdrawn", func() bool {
		return p.Status().Routes == 0 && r1.withdrawn(name)
	})
}

func TestRemoveRoute(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	r2 := e.relay(t, "r2", false)
	p := startProxy(t, e, []*fakeRelay{r1, r2}, func(c *Config) { c.QUICTimeout = 200 * time.Millisecond })
	p.waitConnected(t, 0, "r1", "r2")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: "127.0.0.1:443"}}); err != nil {
		t.Fatal(err)
	}
	if !r1.hasRoute(ownName) || !r2.hasRoute(ownName) {
		t.Fatal("route not registered at both relays")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := p.RemoveRoute(ctx, ownName); err != nil {
		t.Fatal(err)
	}
	if r1.hasRoute(ownName) || r2.hasRoute(ownName) {
		t.Error("route still registered after RemoveRoute returned")
	}
	if got := p.Registered(ownName); got != 0 {
		t.Errorf("Registered = %d, want 0", got)
	}
}

func TestAddRouteContext(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.RequestTimeout = 300 * time.Millisecond })
	p.waitConnected(t, 0, "r1")
	r1.set(func(r *fakeRelay) { r.mute = true }) // answers nothing
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	err := p.AddRoute(ctx, Route{Name: ownName, Target: DialTarget{Addr: "127.0.0.1:443"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("AddRoute = %v, want DeadlineExceeded", err)
	}
	if got := p.Status().Routes; got != 0 {
		t.Errorf("routes = %d, want 0 after a failed AddRoute", got)
	}
	// The relay never answered the Register: the session is given up.
	waitUntil(t, "request timeout", func() bool {
		return value(t, p.m.sessionCloses.WithLabelValues(closeRequestTimeout)) == 1
	})
	r1.set(func(r *fakeRelay) { r.mute = false })
}

func TestRunAndClose(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	p, err := New(Config{Identity: e.id, Trust: e.trust})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitUntil(t, "running", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.running
	})
	if err := p.Run(ctx); err == nil {
		t.Error("second Run returned nil")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if err := p.Shutdown(t.Context()); err != nil {
		t.Errorf("Shutdown after Close = %v", err)
	}
}

func TestNewConfig(t *testing.T) {
	e := newEnv(t)
	other := newEnv(t) // another network's PKI, same network name
	relayID := e.relays["r1"]
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"minimal", Config{Identity: e.id, Trust: e.trust}, true},
		{"no identity", Config{Trust: e.trust}, false},
		{"no trust", Config{Identity: e.id}, false},
		{"relay identity", Config{Identity: relayID, Trust: e.trust}, false},
		{"other PKI, same network", Config{Identity: other.id, Trust: e.trust}, true}, // refused at the handshake, not here
		{"negative duration", Config{Identity: e.id, Trust: e.trust, IdleTimeout: -1}, false},
		{"negative limit", Config{Identity: e.id, Trust: e.trust, MaxConns: -1}, false},
		{"duplicate relay", Config{Identity: e.id, Trust: e.trust, Relays: []RelayAddr{
			{Name: "r1", Endpoints: pki.RelayEndpoints{Pairing: "a:1", Control: "a:2", ControlTCP: "a:3"}},
			{Name: "r1", Endpoints: pki.RelayEndpoints{Pairing: "a:1", Control: "a:2", ControlTCP: "a:3"}},
		}}, false},
		{"bad relay address", Config{Identity: e.id, Trust: e.trust, Relays: []RelayAddr{
			{Name: "r1", Endpoints: pki.RelayEndpoints{Pairing: "a", Control: "a:2", ControlTCP: "a:3"}},
		}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Fatalf("New: %v, want ok=%v", err, tt.ok)
			}
			if p != nil {
				p.Close()
			}
		})
	}
	// Two proxies on one registry: an error, not a panic.
	reg := prometheus.NewRegistry()
	if _, err := New(Config{Identity: e.id, Trust: e.trust, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Identity: e.id, Trust: e.trust, Registerer: reg}); err == nil {
		t.Error("second proxy on the same registry: no error")
	}
}

func TestLookupAllocs(t *testing.T) {
	e := newEnv(t)
	p, err := New(Config{Identity: e.id, Trust: e.trust})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: "127.0.0.1:443"}}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() { p.lookup(ownName, now) }); n != 0 {
		t.Errorf("lookup allocates %v times per call, want 0", n)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 250 * time.Millisecond, max: 30 * time.Second}
	want := 250 * time.Millisecond
	for range 12 {
		got := b.next()
		if got < want*8/10 || got > want*12/10 {
			t.Fatalf("next() = %v, want %v ±20%%", got, want)
		}
		want = min(2*want, 30*time.Second)
	}
	b.reset()
	if got := b.next(); got > 300*time.Millisecond {
		t.Errorf("after reset next() = %v, want about 250ms", got)
	}
}
