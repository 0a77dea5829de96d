package proxy

import (
	"net"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/relay/wire"
)

func TestTCPFallback(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", false) // UDP: nobody listens
	echo := newTLSEcho(t, e.member)
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.QUICTimeout = 300 * time.Millisecond })
	p.waitConnected(t, 0, "r1")
	if got := p.relayStatus("r1").Transport; got != transportTCP {
		t.Fatalf("transport = %q, want tcp", got)
	}
	if got := value(t, p.m.connects.WithLabelValues(transportQUIC, "error")); got != 1 {
		t.Errorf("quic connect errors = %v, want 1", got)
	}
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo.addr()}}); err != nil {
		t.Fatal(err)
	}
	tc := clientTLS(t, e, r1.dial(ownName), ownName, e.member)
	echoRoundTrip(t, tc, 64<<10)
	tc.Close()

	// After a reconnect the relay is dialled over TCP first: no new QUIC
	// attempt while QUICRetry lasts.
	r1.restart()
	waitUntil(t, "reconnected", func() bool { return r1.hasRoute(ownName) })
	if got := value(t, p.m.connects.WithLabelValues(transportQUIC, "error")); got != 1 {
		t.Errorf("quic connect errors after reconnect = %v, want still 1", got)
	}
	if got := value(t, p.m.connects.WithLabelValues(transportTCP, "ok")); got != 2 {
		t.Errorf("tcp connects = %v, want 2", got)
	}
}

func TestDisableQUIC(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.DisableQUIC = true })
	waitUntil(t, "relay sees a tcp session", func() bool {
		return slices.Equal(r1.sessionTransports(), []string{transportTCP})
	})
	waitUntil(t, "tcp session gauge", func() bool { return value(t, p.m.sessions.WithLabelValues(transportTCP)) == 1 })
	if got := value(t, p.m.connects.WithLabelValues(transportQUIC, "error")) + value(t, p.m.connects.WithLabelValues(transportQUIC, "ok")); got != 0 {
		t.Errorf("quic attempts = %v, want 0", got)
	}
}

func TestReconnectReregisters(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	echo := newTLSEcho(t, e.member)
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")
	once := "abc." + ownName
	for _, r := range []Route{
		{Name: ownName, Target: DialTarget{Addr: echo.addr()}},
		{Name: once, TTL: time.Hour, Target: DialTarget{Addr: echo.addr()}},
	} {
		if err := p.AddRoute(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}

	r1.restart() // forgets every session and route
	waitUntil(t, "routes registered again", func() bool { return r1.hasRoute(ownName) && r1.hasRoute(once) })
	if reg, _ := r1.route(once); reg.TTL == 0 || reg.TTL > 3600 {
		t.Errorf("re-registered TTL = %d, want the remaining lifetime", reg.TTL)
	}
	if got := r1.acceptedCount(); got != 1 { // counts since the restart
		t.Errorf("sessions accepted after restart = %d, want 1", got)
	}
	tc := clientTLS(t, e, r1.dial(ownName), ownName, e.member)
	echoRoundTrip(t, tc, 1024)
	tc.Close()
	p.waitConnected(t, 2, "r1")
}

func TestPingTimeout(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	r1.set(func(r *fakeRelay) { r.mute = true }) // reads, never answers
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.PingInterval = 50 * time.Millisecond })
	waitUntil(t, "dead session detected", func() bool {
		return value(t, p.m.sessionCloses.WithLabelValues(closePingTimeout)) >= 1
	})
	var n0 int
	r1.set(func(r *fakeRelay) { r.mute, n0 = false, r.accepted })
	// A session accepted from now on is answered; the proxy holds one
	// session per relay, so the muted one has ended by then.
	waitUntil(t, "new session", func() bool { return r1.acceptedCount() > n0 })
	p.waitConnected(t, 0, "r1")
	// The relay answers now: the session stays up over many intervals.
	closes := value(t, p.m.sessionCloses.WithLabelValues(closePingTimeout))
	deadline := time.Now().Add(10 * 50 * time.Millisecond)
	for time.Now().Before(deadline) {
		if !p.relayStatus("r1").Connected {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := value(t, p.m.sessionCloses.WithLabelValues(closePingTimeout)); got != closes {
		t.Errorf("live session closed for ping timeout")
	}
}

func TestGoAwayReconnects(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	echo := tcpEcho(t)
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo}}); err != nil {
		t.Fatal(err)
	}
	r1.sendAll(wire.GoAway{Message: "draining"})
	waitUntil(t, "reconnected after goaway", func() bool { return r1.acceptedCount() == 2 && r1.hasRoute(ownName) })
	if got := value(t, p.m.sessionCloses.WithLabelValues(closeGoAway)); got != 1 {
		t.Errorf("goaway closes = %v, want 1", got)
	}
}

func TestDirectoryRelaySet(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	r2 := e.relay(t, "r2", true)
	publish := func(relays ...*fakeRelay) {
		t.Helper()
		members := []pki.Member{e.members[0]}
		for _, r := range relays {
			m := pkitest.Member(e.relays[r.name].Certificate(), "Relay "+r.name)
			ep := r.addr.Endpoints
			m.Relay = &ep
			members = append(members, m)
		}
		if _, err := e.trust.Directory.Update(e.ca.Sign(t, e.ca.Directory(members...))); err != nil {
			t.Fatal(err)
		}
	}
	publish(r1)
	p := startProxy(t, e, nil, nil) // no static relays: follow the directory
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: tcpEcho(t)}}); err != nil {
		t.Fatal(err)
	}

	publish(r1, r2)
	p.waitConnected(t, 1, "r1", "r2")
	if !r2.hasRoute(ownName) {
		t.Error("new relay does not hold the route")
	}

	publish(r2)
	waitUntil(t, "session to r1 closed", func() bool { return len(p.Status().Relays) == 1 && r1.sessionCount() == 0 })
	if got := value(t, p.m.sessionCloses.WithLabelValues(closeRelayRemoved)); got != 1 {
		t.Errorf("relay_removed closes = %v, want 1", got)
	}
}

// pipeCtrl is one end of a net.Pipe as a control connection.
type pipeCtrl struct{ net.Conn }

func TestWriteQueueBound(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	p, err := New(Config{Identity: e.id, Trust: e.trust, WriteQueue: 2, PingInterval: time.Hour, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	proxyEnd, relayEnd := net.Pipe()
	defer relayEnd.Close()
	s := p.newSession(RelayAddr{Name: "r1"}, transportTCP, pipeCtrl{proxyEnd}, p.log)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(t.Context())
	}()
	// The relay end never reads: the writer blocks on the first Ping, and
	// the Pongs for the relay's Pings fill the queue. The session must
	// close rather than block its reader.
	for i := uint64(0); ; i++ {
		if err := wire.WriteFrame(relayEnd, wire.Ping{Nonce: i}); err != nil {
			break // the proxy closed the session
		}
		if i > 100 {
			t.Fatal("session still reading after 100 unanswered pings")
		}
	}
	<-done
	if s.reason != closeQueueFull {
		t.Errorf("session closed for %q, want %q", s.reason, closeQueueFull)
	}
	if got := value(t, p.m.sessionCloses.WithLabelValues(closeQueueFull)); got != 1 {
		t.Errorf("queue_full closes = %v, want 1", got)
	}
}
