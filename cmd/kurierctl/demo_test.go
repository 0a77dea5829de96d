package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestDemo runs the README's first command: a whole network on loopback.
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"kurierctl", "demo"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("kurierctl demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"the same token again: refused (HTTP 401",
		"kurier eps: endpoint server with one-time links",
		"dialled out to both relays, registered vendor-a.demo.kurier",
		"the secret is only in the URL fragment",
		`index.locations put "Café Rot": created true, owner vendor-a (the verified caller; the forged "provider" field is ignored)`,
		`index.location-search "cafe rot berlin": Café Rot at vendor-a`,
		"index.location-search as a provider: refused",
		"DATA_REQUESTED, window",
		"DATA_RECEIVED: 2 guests (Erika Mustermann, Max Mustermann)",
		"office holds vendor-a's signed receipt for the request",
		"vendor holds hd-1's for the guest list",
		": CLOSED by hd-1",
		`: ABORTED by hd-1 ("case closed`,
		"over TLS 1.3 through the relay; 1 contact sealed to key w1 (X25519, HPKE)",
		"from anonymous on index-cases: 1 contact(s)",
		"the link again: the relay closed the connection: the route is withdrawn",
		"closed vendor-a's control sessions and routes",
		"TLS to vendor-a.demo.kurier now: the relay closed the connection: no route",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
