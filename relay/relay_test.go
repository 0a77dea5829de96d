package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/wire"
)

// get makes one HTTPS request through the relay with SNI name and returns
// the body and the certificate the server presented.
func get(t *testing.T, n *testNetwork, relayAddr, name string) (string, *tls.ConnectionState, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", relayAddr, &tls.Config{
		ServerName: name,
		RootCAs:    n.ca.Roots,
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

func TestRelayEndToEnd(t *testing.T) {
	for _, useQUIC := range []bool{false, true} {
		name := "tcp"
		if useQUIC {
			name = "quic"
		}
		t.Run(name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			n := newTestNetwork(t)
			r := startRelay(t, n, nil)
			be := startBackend(t, n.office, nil)
			m, err := dialMember(t, n, r, n.office, useQUIC, be.addr)
			if err != nil {
				t.Fatal(err)
			}
			m.mustRegister("hd-1."+testNet, 0, false)
			for i := range 3 {
				body, cs, err := get(t, n, r.public, "hd-1."+testNet)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if want := "hello from hd-1." + testNet + "\n"; body != want {
					t.Errorf("body = %q, want %q", body, want)
				}
				// The client saw the backend's own certificate: nothing in
				// between terminated TLS.
				if !cs.PeerCertificates[0].Equal(n.office.Leaf) {
					t.Errorf("client saw certificate %q, want the backend's", cs.PeerCertificates[0].Subject)
				}
			}
			if got := r.count("relay_connections_total", "result", "routed"); got != 3 {
				t.Errorf("routed = %v, want 3", got)
			}
			if got := r.count("relay_pairing_duration_seconds"); got != 3 {
				t.Errorf("pairing latency samples = %v, want 3", got)
			}
			waitFor(t, "relayed connections to end", func() bool { return r.count("relay_active_connections") == 0 })
			m.close()
			r.srv.Close()
			r.pc.Close()
			checkGoroutines(t, base+4) // the relay's Serve goroutines end in Cleanup
		})
	}
}

func TestRelayRefusesUnroutable(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, func(c *Config) { c.HelloTimeout = 200 * time.Millisecond })
	for _, tt := range []struct {
		name   string
		dial   func() error
		result string
	}{
		{"unknown member", func() error { _, _, err := get(t, n, r.public, "nobody."+testNet); return err }, "no_route"},
		{"other network", func() error { _, _, err := get(t, n, r.public, "hd-1.example.org"); return err }, "no_route"},
		{"registered nowhere", func() error { _, _, err := get(t, n, r.public, "hd-1."+testNet); return err }, "no_route"},
		{"no SNI", func() error { _, _, err := get(t, n, r.public, "127.0.0.1"); return err }, "no_route"},
		{"not TLS", func() error { return rawSend(r.public, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") }, "bad_hello"},
		{"silent client", func() error { return rawSend(r.public, "") }, "hello_timeout"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := r.count("relay_connections_total", "result", tt.result)
			if err := tt.dial(); err == nil {
				t.Fatal("connection succeeded, want it closed")
			}
			waitFor(t, "the refusal to be counted", func() bool {
				return r.count("relay_connections_total", "result", tt.result) == before+1
			})
		})
	}
}

// rawSend writes s and waits for the relay to close the connection.
func rawSend(addr, s string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.Write([]byte(s))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != nil {
		return err
	}
	return nil
}

func TestRegisterNamespace(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, nil)
	m, err := dialMember(t, n, r, n.office, false, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		ttl       uint32
		singleUse bool
		want      wire.Code
	}{
		{"hd-1." + testNet, 0, false, wire.CodeOK},
		{"link1.hd-1." + testNet, 60, true, wire.CodeOK},
		{"vendor-a." + testNet, 0, false, wire.CodeForbidden},
		{"x.vendor-a." + testNet, 60, false, wire.CodeForbidden},
		{"a.b.hd-1." + testNet, 60, false, wire.CodeForbidden},
		{"hd-1.other.test", 0, false, wire.CodeForbidden},
		{"HD-1." + testNet, 0, false, wire.CodeBad},
		{"link2.hd-1." + testNet, 0, false, wire.CodeBad},          // one-time route without TTL
		{"link3.hd-1." + testNet, 31 * 86400, false, wire.CodeBad}, // TTL over the maximum
		{"hd-1." + testNet, 0, true, wire.CodeBad},                 // own name single-use
	} {
		res, err := m.register(tt.name, tt.ttl, tt.singleUse)
		if err != nil || res.Code != tt.want {
			t.Errorf("register(%q, ttl %d, single %v) = %v %q, %v; want %v", tt.name, tt.ttl, tt.singleUse, res.Code, res.Message, err, tt.want)
		}
	}
	if got := r.count("relay_registrations_total", "result", "forbidden"); got != 4 {
		t.Errorf("forbidden registrations counted = %v, want 4", got)
	}
	res, err := m.request(func(id uint32) wire.Frame { return wire.Withdraw{ReqID: id, Name: "nope.hd-1." + testNet} })
	if err != nil || res.Code != wire.CodeNotFound {
		t.Errorf("withdraw of unknown route = %v, %v; want not_found", res.Code, err)
	}
}

func TestRelaysCannotOpenSessions(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, nil)
	m, err := dialMember(t, n, r, n.relay, false, "")
	if err == nil {
		_, err = m.register("r1."+testNet, 0, false)
	}
	if err == nil {
		t.Fatal("a relay certificate opened a control session")
	}
}

func TestPairingTokens(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, func(c *Config) { c.PairTimeout = 300 * time.Millisecond })
	m, err := dialMember(t, n, r, n.office, false, "") // no auto dial-back
	if err != nil {
		t.Fatal(err)
	}
	m.mustRegister("hd-1."+testNet, 0, false)
	m.mustRegister("other.hd-1."+testNet, 60, false)

	// next starts a client and returns the Incoming it caused.
	next := func() (wire.Incoming, net.Conn) {
		t.Helper()
		c, err := net.Dial("tcp", r.public)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		go tls.Client(c, &tls.Config{ServerName: "hd-1." + testNet, InsecureSkipVerify: true}).Handshake()
		select {
		case in := <-m.incoming:
			return in, c
		case <-time.After(5 * time.Second):
			t.Fatal("no Incoming")
		}
		return wire.Incoming{}, nil
	}
	pairWith := func(pre wire.Preamble) byte {
		t.Helper()
		c, err := net.Dial("tcp", r.pairing)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		b, _ := wire.AppendPreamble(nil, pre)
		c.Write(b)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var st [1]byte
		if _, err := io.ReadFull(c, st[:]); err != nil {
			t.Fatalf("reading status: %v", err)
		}
		return st[0]
	}

	in, _ := next()
	if got := pairWith(wire.Preamble{Token: in.Token, Name: in.Name}); got != wire.PairOK {
		t.Errorf("first use: status %d, want ok", got)
	}
	if got := pairWith(wire.Preamble{Token: in.Token, Name: in.Name}); got != wire.PairUnknown {
		t.Errorf("replayed token: status %d, want unknown", got)
	}

	in, _ = next()
	if got := pairWith(wire.Preamble{Token: in.Token, Name: "other.hd-1." + testNet}); got != wire.PairWrongName {
		t.Errorf("token for another route: status %d, want wrong name", got)
	}
	if got := pairWith(wire.Preamble{Token: in.Token, Name: in.Name}); got != wire.PairUnknown {
		t.Errorf("token after a wrong-route attempt: status %d, want unknown (burned)", got)
	}

	in, _ = next()
	forged := in.Token
	forged[31] ^= 1 // right id, wrong secret
	if got := pairWith(wire.Preamble{Token: forged, Name: in.Name}); got != wire.PairUnknown {
		t.Errorf("forged secret: status %d, want unknown", got)
	}
	if got := pairWith(wire.Preamble{Token: in.Token, Name: in.Name}); got != wire.PairOK {
		t.Errorf("the real token after a forgery attempt: status %d, want ok", got)
	}

	if got := r.count("relay_connections_total", "result", "pair_refused"); got != 1 {
		t.Errorf("pair_refused = %v, want 1 (the wrong-route attempt)", got)
	}
	in, client := next()
	waitFor(t, "the pairing to time out", func() bool { return r.count("relay_connections_total", "result", "pair_timeout") == 1 })
	if got := pairWith(wire.Preamble{Token: in.Token, Name: in.Name}); got != wire.PairUnknown {
		t.Errorf("late token: status %d, want unknown", got)
	}
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client); err != nil {
		t.Errorf("client of a timed-out pairing: %v, want a clean close", err)
	}
	if got := r.count("relay_pairings_total", "result", "unknown_token"); got != 4 {
		t.Errorf("unknown_token = %v, want 4", got)
	}
}

func TestSingleUseAndExpiringRoutes(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, nil)
	be := startBackend(t, n.office, nil)
	m, err := dialMember(t, n, r, n.office, false, be.addr)
	if err != nil {
		t.Fatal(err)
	}
	once := "abc123.hd-1." + testNet
	m.mustRegister(once, 60, true)
	if _, _, err := get(t, n, r.public, once); err != nil {
		// The backend's certificate is for hd-1, not the one-time label:
		// verification fails but only after the bytes went through.
		if !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("first use: %v", err)
		}
	}
	if _, _, err := get(t, n, r.public, once); err == nil || strings.Contains(err.Error(), "certificate") {
		t.Errorf("second use of a single-use route: %v, want the relay to close", err)
	}
	short := "short.hd-1." + testNet
	m.mustRegister(short, 1, false)
	waitFor(t, "RouteGone for both routes", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.gone) == 2
	})
	m.mu.Lock()
	gone := append([]wire.RouteGone(nil), m.gone...)
	m.mu.Unlock()
	if gone[0] != (wire.RouteGone{Name: once, Reason: wire.GoneUsed}) || gone[1] != (wire.RouteGone{Name: short, Reason: wire.GoneExpired}) {
		t.Errorf("RouteGone = %+v", gone)
	}
	if r.srv.Holds(short) || r.srv.Holds(once) {
		t.Error("relay still holds an ended route")
	}
}

func TestRevocationClosesSessionsAndConnections(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, nil)
	be := startBackend(t, n.office, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done() // hold the connection open
	}))
	m, err := dialMember(t, n, r, n.office, true, be.addr)
	if err != nil {
		t.Fatal(err)
	}
	m.mustRegister("hd-1."+testNet, 0, false)
	c, err := tls.Dial("tcp", r.public, &tls.Config{ServerName: "hd-1." + testNet, RootCAs: n.ca.Roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: hd-1\r\n\r\n")
	br := bufio.NewReader(c)
	if _, err := http.ReadResponse(br, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "one relayed connection", func() bool { return r.count("relay_active_connections") == 1 })

	n.publish(t, n.directory(func(d *pki.Directory) {
		d.Revoked = append(d.Revoked, pki.Revocation{Member: "hd-1", RevokedAt: time.Now(), Reason: "key compromise"})
	}))
	waitFor(t, "the session to close", func() bool { return r.count("relay_control_sessions_ended_total", "reason", "revoked") == 1 })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadByte(); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("relayed connection of a revoked member still open: %v", err)
	}
	if r.srv.Holds("hd-1." + testNet) {
		t.Error("route of a revoked member still held")
	}
	if _, err := dialMember(t, n, r, n.office, false, ""); err == nil {
		// TLS 1.3: the refusal shows on first read.
		t.Log("handshake completed; refusal expected on first frame")
	}
}

func TestIdleTimeoutAndActivity(t *testing.T) {
	n := newTestNetwork(t)
	idle := 300 * time.Millisecond
	r := startRelay(t, n, func(c *Config) { c.IdleTimeout = idle })
	echo := startEcho(t)
	m, err := dialMember(t, n, r, n.office, false, echo)
	if err != nil {
		t.Fatal(err)
	}
	m.mustRegister("hd-1."+testNet, 0, false)

	// An active connection outlives the idle timeout many times over.
	active := dialRaw(t, r.public, "hd-1."+testNet)
	start := time.Now()
	buf := make([]byte, 1)
	for time.Since(start) < 4*idle {
		active.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := active.Write([]byte{'x'}); err != nil {
			t.Fatalf("active connection cut after %v: %v", time.Since(start), err)
		}
		if _, err := io.ReadFull(active, buf); err != nil {
			t.Fatalf("active connection cut after %v: %v", time.Since(start), err)
		}
		time.Sleep(idle / 5)
	}
	// An idle one is closed after about the idle timeout.
	quiet := dialRaw(t, r.public, "hd-1."+testNet)
	start = time.Now()
	quiet.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.ReadAll(quiet)
	// Never before the idle timeout; the upper bound is only "eventually"
	// (the reaper samples every idle/4, later on a loaded machine).
	if d := time.Since(start); d < idle || d >= 10*time.Second {
		t.Errorf("idle connection closed after %v, want after %v", d, idle)
	}
}

// dialRaw opens a relayed connection to an echo target by sending a real
// ClientHello for name and reading the echo of it back.
func dialRaw(t *testing.T, addr, name string) net.Conn {
	t.Helper()
	hello := clientHello(t, name)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, len(hello))); err != nil {
		t.Fatalf("reading the echoed hello: %v", err)
	}
	return c
}

// clientHello returns the bytes crypto/tls sends first for name.
func clientHello(t testing.TB, name string) []byte {
	t.Helper()
	rec := &helloRecorder{}
	tls.Client(rec, &tls.Config{ServerName: name, InsecureSkipVerify: true}).Handshake()
	return rec.written
}

// helloRecorder is a net.Conn that records writes and fails reads, so a
// tls.Client writes its ClientHello and stops.
type helloRecorder struct {
	net.Conn
	written []byte
}

func (r *helloRecorder) Write(b []byte) (int, error) {
	r.written = append(r.written, b...)
	return len(b), nil
}
func (r *helloRecorder) Read([]byte) (int, error)         { return 0, io.EOF }
func (r *helloRecorder) Close() error                     { return nil }
func (r *helloRecorder) SetDeadline(time.Time) error      { return nil }
func (r *helloRecorder) SetReadDeadline(time.Time) error  { return nil }
func (r *helloRecorder) SetWriteDeadline(time.Time) error { return nil }
func (r *helloRecorder) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (r *helloRecorder) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

// startEcho runs a TCP echo server.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestShutdownDrains(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, nil)
	echo := startEcho(t)
	m, err := dialMember(t, n, r, n.office, false, echo)
	if err != nil {
		t.Fatal(err)
	}
	m.mustRegister("hd-1."+testNet, 0, false)
	c := dialRaw(t, r.public, "hd-1."+testNet)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.srv.Shutdown(ctx) }()
	// New clients are refused while draining; the open one keeps working.
	waitFor(t, "draining", func() bool { return r.srv.Ready() != nil })
	if _, err := net.DialTimeout("tcp", r.public, time.Second); err == nil {
		t.Log("listener still accepting (closed asynchronously)")
	}
	c.Write([]byte("still here"))
	got := make([]byte, 10)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "still here" {
		t.Fatalf("open connection during drain: %q, %v", got, err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v before the relayed connection ended", err)
	case <-time.After(100 * time.Millisecond):
	}
	c.Close()
	if err := <-done; err != nil {
		t.Errorf("Shutdown = %v, want nil", err)
	}
}

func TestShutdownDeadlineForcesClose(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, nil)
	echo := startEcho(t)
	m, err := dialMember(t, n, r, n.office, false, echo)
	if err != nil {
		t.Fatal(err)
	}
	m.mustRegister("hd-1."+testNet, 0, false)
	c := dialRaw(t, r.public, "hd-1."+testNet)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := r.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("relayed connection survived a forced shutdown")
	}
}

// TestLongLivedConnection: a relayed connection keeps carrying data long
// after the pairing, whose time limit must not linger on either side.
func TestLongLivedConnection(t *testing.T) {
	n := newTestNetwork(t)
	pair := 200 * time.Millisecond
	r := startRelay(t, n, func(c *Config) { c.PairTimeout = pair; c.IdleTimeout = time.Minute })
	echo := startEcho(t)
	m, err := dialMember(t, n, r, n.office, false, echo)
	if err != nil {
		t.Fatal(err)
	}
	m.mustRegister("hd-1."+testNet, 0, false)
	c := dialRaw(t, r.public, "hd-1."+testNet)
	time.Sleep(3 * pair)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := bytes.Repeat([]byte("after the pairing "), 1000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("relayed connection stopped carrying data %v after pairing: %v", 3*pair, err)
	}
	if !bytes.Equal(got, msg) {
		t.Error("echo differs from what was sent")
	}
}

// TestWithdrawFailsWaitingClients: a client announced to a route just
// before the member withdraws it (a one-time link used a moment earlier)
// is closed when the Withdraw arrives, not after PairTimeout.
func TestWithdrawFailsWaitingClients(t *testing.T) {
	n := newTestNetwork(t)
	r := startRelay(t, n, func(c *Config) { c.PairTimeout = time.Minute })
	m, err := dialMember(t, n, r, n.office, false, "") // takes no connection
	if err != nil {
		t.Fatal(err)
	}
	name := "k7x2mq.hd-1." + testNet
	m.mustRegister(name, 600, false)
	c, err := net.Dial("tcp", r.public)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(clientHello(t, name)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.incoming:
	case <-time.After(5 * time.Second):
		t.Fatal("no Incoming for the client")
	}
	start := time.Now()
	res, err := m.request(func(id uint32) wire.Frame { return wire.Withdraw{ReqID: id, Name: name} })
	if err != nil || res.Code != wire.CodeOK {
		t.Fatalf("withdraw: %+v, %v", res, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("the client got data from a withdrawn route")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the client waited %v after the withdraw", d)
	}
	if got := r.count("relay_connections_total", "result", "pair_refused"); got != 1 {
		t.Errorf("pair_refused = %v, want 1", got)
	}
}
