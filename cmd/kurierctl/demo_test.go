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
		"kurier proxy: dialled out to r1",
		`request 3: "Gesundheitsamt Musterstadt: hello over HTTP/1.1, TLS 1.3"`,
		"key exchange X25519MLKEM768, office key pinned in the directory",
		"closed hd-1's control session and routes",
		"the relay closed the connection: no route",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
