package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/relay/wire"
)

// tcpEcho echoes until the client half-closes, then closes.
func tcpEcho(t *testing.T) string {
	return tcpServer(t, func(c *net.TCPConn) { io.Copy(c, c) })
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

// expectEOF waits for the proxy to close the relayed connection.
func expectEOF(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("Read = %d, %v; want 0, EOF (closed by the proxy)", n, err)
	}
}

func TestIdleTimeout(t *testing.T) {
	if !tcpInfoSupported {
		t.Skip("idle detection needs TCP_INFO")
	}
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	echo := tcpEcho(t)
	const idle = 300 * time.Millisecond
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.IdleTimeout = idle })
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo}}); err != nil {
		t.Fatal(err)
	}
	c := r1.dial(ownName)
	// A connection in use lives past the idle timeout: traffic for 3×idle.
	start := time.Now()
	var last time.Time
	for time.Since(start) < 3*idle {
		roundTrip(t, c, "ping")
		last = time.Now()
		time.Sleep(idle / 6) // pacing the traffic, not synchronizing
	}
	if got := value(t, p.m.relayedCloses.WithLabelValues(relayedIdle)); got != 0 {
		t.Fatalf("active connection closed as idle")
	}
	// Then silence: the proxy closes it.
	expectEOF(t, c)
	// The kernel's clock for last_data_* ticks in jiffies: allow a little.
	if quiet := time.Since(last); quiet < idle-20*time.Millisecond {
		t.Errorf("closed %v after the last byte, want at least %v", quiet, idle)
	}
	waitUntil(t, "idle close counted", func() bool {
		return value(t, p.m.relayedCloses.WithLabelValues(relayedIdle)) == 1 && p.Status().Conns == 0
	})
}

func TestMaxAge(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	echo := tcpEcho(t)
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.MaxAge = 300 * time.Millisecond })
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo}}); err != nil {
		t.Fatal(err)
	}
	c := r1.dial(ownName)
	roundTrip(t, c, "hello")
	expectEOF(t, c)
	waitUntil(t, "max age close counted", func() bool {
		return value(t, p.m.relayedCloses.WithLabelValues(relayedMaxAge)) == 1
	})
}

func TestHalfClose(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	// The server reads the request to EOF (the client's FIN must come
	// through), then answers and closes.
	srv := tcpServer(t, func(c *net.TCPConn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		c.Write(append([]byte("got:"), req...))
	})
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: srv}}); err != nil {
		t.Fatal(err)
	}
	c := r1.dial(ownName)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c) // the answer comes back after our half-close, then EOF
	if err != nil || string(got) != "got:hello" {
		t.Fatalf("ReadAll = %q, %v; want \"got:hello\", nil", got, err)
	}
	waitUntil(t, "connection done", func() bool {
		return value(t, p.m.relayedCloses.WithLabelValues(relayedDone)) == 1
	})
}

func TestLingerAfterHalfClose(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	// The server reads to EOF and then neither writes nor closes.
	hold := make(chan struct{})
	srv := tcpServer(t, func(c *net.TCPConn) {
		io.ReadAll(c)
		<-hold
	})
	t.Cleanup(func() { close(hold) }) // runs before tcpServer's cleanup waits for the handler
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.Linger = 200 * time.Millisecond })
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: srv}}); err != nil {
		t.Fatal(err)
	}
	c := r1.dial(ownName)
	c.Write([]byte("hello"))
	c.(*net.TCPConn).CloseWrite()
	expectEOF(t, c) // after Linger, not after IdleTimeout (5m)
	waitUntil(t, "conn closed", func() bool { return p.Status().Conns == 0 })
}

func TestIncomingRefusals(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	echo := tcpEcho(t)
	p := startProxy(t, e, []*fakeRelay{r1}, func(c *Config) { c.MaxConns = 1 })
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo}}); err != nil {
		t.Fatal(err)
	}
	down := "down." + ownName
	if err := p.AddRoute(t.Context(), Route{Name: down, TTL: time.Minute, Target: DialTarget{Addr: closedPort(t)}}); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name    string
		setup   func()
		outcome string
	}{
		{"unknown token", func() { r1.announce(wire.NewToken(), ownName, "", "") }, outRefusedUnknown},
		{"wrong name", func() { r1.announce(wire.NewToken(), ownName, "other."+ownName, "") }, outRefusedWrongName},
		{"busy", func() {
			r1.set(func(r *fakeRelay) { r.status = wire.PairBusy })
			r1.announce(wire.NewToken(), ownName, ownName, "")
		}, outBusy},
		{"bad status", func() {
			r1.set(func(r *fakeRelay) { r.status = 0x7f })
			r1.announce(wire.NewToken(), ownName, ownName, "")
		}, outBadStatus},
		{"no route", func() { r1.announce(wire.NewToken(), "nope."+ownName, "nope."+ownName, "") }, outNoRoute},
		{"pairing address of no relay", func() { r1.announce(wire.NewToken(), ownName, ownName, "127.0.0.1:9") }, outBadPairAddr},
		{"target down", func() { r1.announce(wire.NewToken(), down, down, "") }, outTargetError},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := p.incoming(t, tt.outcome)
			tt.setup()
			waitUntil(t, tt.outcome+" counted", func() bool { return p.incoming(t, tt.outcome) == before+1 })
			r1.set(func(r *fakeRelay) { r.status = wire.PairOK })
			waitUntil(t, "slot released", func() bool { return p.Status().Conns == 0 })
		})
	}
	if got := p.incoming(t, outPaired); got != 0 {
		t.Errorf("paired = %v, want 0", got)
	}

	// At MaxConns, a further announcement is refused.
	c := r1.dial(ownName)
	roundTrip(t, c, "one")
	r1.dial(ownName)
	waitUntil(t, "over_limit counted", func() bool { return p.incoming(t, outOverLimit) == 1 })
	roundTrip(t, c, "still alive")
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestShutdownDrains(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	echo := tcpEcho(t)
	p := startProxy(t, e, []*fakeRelay{r1}, nil)
	p.waitConnected(t, 0, "r1")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo}}); err != nil {
		t.Fatal(err)
	}
	c := r1.dial(ownName)
	roundTrip(t, c, "hello")

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := p.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown with a busy connection = %v, want DeadlineExceeded", err)
	}
	if !r1.withdrawn(ownName) {
		t.Error("route was not withdrawn at the relay")
	}
	expectEOF(t, c)
	if got := value(t, p.m.relayedCloses.WithLabelValues(relayedShutdown)); got != 1 {
		t.Errorf("shutdown closes = %v, want 1", got)
	}
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo}}); !errors.Is(err, ErrClosed) {
		t.Errorf("AddRoute after Shutdown = %v, want ErrClosed", err)
	}
}

func TestPairAddr(t *testing.T) {
	checkGoroutines(t)
	e := newEnv(t)
	r1 := e.relay(t, "r1", true)
	r2 := e.relay(t, "r2", true)
	echo := tcpEcho(t)
	p := startProxy(t, e, []*fakeRelay{r1, r2}, nil)
	p.waitConnected(t, 0, "r1", "r2")
	if err := p.AddRoute(t.Context(), Route{Name: ownName, Target: DialTarget{Addr: echo}}); err != nil {
		t.Fatal(err)
	}
	// r1 sends the proxy to r2's pairing port (the client arrived at r2).
	tok := wire.NewToken()
	r2.set(func(r *fakeRelay) { r.tokens[tok] = &fakePending{name: ownName} })
	r1.announce(tok, ownName, "", r2.addr.Endpoints.Pairing)
	waitUntil(t, "paired at r2", func() bool {
		var n int
		r2.set(func(r *fakeRelay) { n = r.paired })
		return n == 1 && p.incoming(t, outPaired) == 1
	})
	// A pairing port that does not answer.
	pairing := r2.addr.Endpoints.Pairing
	r2.stop()
	r1.announce(wire.NewToken(), ownName, "", pairing)
	waitUntil(t, "dial_error counted", func() bool { return p.incoming(t, outDialError) == 1 })
	// The pairing endpoint of a relay listed only in the directory is
	// accepted too (nothing listens on the placeholder port).
	dirPairing := pkitest.Member(e.relays["r1"].Certificate(), "x").Relay.Pairing
	r1.announce(wire.NewToken(), ownName, "", dirPairing)
	waitUntil(t, "directory relay's pairing port dialled", func() bool { return p.incoming(t, outDialError) == 2 })
	if got := p.incoming(t, outBadPairAddr); got != 0 {
		t.Errorf("bad_pair_addr = %v, want 0", got)
	}
	waitUntil(t, "slots released", func() bool { return p.Status().Conns == 0 })
}
