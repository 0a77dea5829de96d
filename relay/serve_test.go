package relay

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestServeOnePartFails: when one of the four sockets cannot be served
// (here the public listener, closed before Serve), Serve closes the
// relay, so the other three stop, and returns that failure.
func TestServeOnePartFails(t *testing.T) {
	n := newTestNetwork(t)
	srv, err := New(Config{Identity: identity(t, n.relay), Trust: n.trust()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
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
	defer pc.Close()
	pub.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(Listeners{Public: pub, Pairing: pair, ControlTCP: ctl, ControlQUIC: pc}) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "public") {
			t.Fatalf("Serve = %v, want the public listener's failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still runs after its public listener failed")
	}
	if c, err := net.DialTimeout("tcp", pair.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("the pairing listener still accepts after Serve returned")
	}
}
