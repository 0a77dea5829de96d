package eps_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/proxy"
)

// TestEndpointPartFails: when one part of an endpoint fails (here the
// local API, on a listener that is already closed), Serve stops the
// others and returns the failure instead of running half a server.
func TestEndpointPartFails(t *testing.T) {
	n := newNetwork(t)
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "eps.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cert := n.ca.Issue(t, pki.RoleProvider, "vendor-b")
	ep, err := eps.NewEndpoint(eps.Config{
		Identity: mustID(t, cert), Trust: pki.Trust{Roots: n.ca.Roots, Directory: n.verifier(t)}, Store: st, PassSealed: true,
	}, proxy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	done := make(chan error, 1)
	go func() { done <- ep.Serve(t.Context(), ln) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "local API") {
			t.Fatalf("Serve = %v, want the local API's failure", err)
		}
	case <-time.After(10 * time.Second):
		ep.Close()
		t.Fatal("Serve still runs after its local API failed")
	}
	if got := ep.Registered(); got != 0 {
		t.Errorf("route held at %d relays after Serve returned", got)
	}
}
