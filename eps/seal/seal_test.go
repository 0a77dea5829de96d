package seal

import (
	"bytes"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

func TestContextInfo(t *testing.T) {
	got, err := ctxFor("vendor-a", "hd-1").Info()
	if err != nil {
		t.Fatal(err)
	}
	want := "kurier-seal/v1\x00vendor-a\x00hd-1\x00contacts\x00request\x0000112233445566778899aabbccddeeff"
	if string(got) != want {
		t.Errorf("Info = %q, want %q", got, want)
	}
	ok := ctxFor(Anonymous, "hd-1")
	long := strings.Repeat("a", 64)
	for _, tt := range []struct {
		name string
		edit func(*Context)
	}{
		{"empty sender", func(c *Context) { c.Sender = "" }},
		{"NUL in sender", func(c *Context) { c.Sender = "a\x00b" }},
		{"long sender", func(c *Context) { c.Sender = long }},
		{"upper-case recipient", func(c *Context) { c.Recipient = "HD-1" }},
		{"NUL in recipient", func(c *Context) { c.Recipient = "hd-1\x00x" }},
		{"empty service", func(c *Context) { c.Service = "" }},
		{"NUL in service", func(c *Context) { c.Service = "a\x00" }},
		{"long service", func(c *Context) { c.Service = "a" + long }},
		{"unknown kind", func(c *Context) { c.Kind = "receipt" }},
		{"NUL in kind", func(c *Context) { c.Kind = "request\x00" }},
		{"short id", func(c *Context) { c.MessageID = "0011" }},
		{"upper-case id", func(c *Context) { c.MessageID = strings.ToUpper(ok.MessageID) }},
		{"NUL in id", func(c *Context) { c.MessageID = ok.MessageID[:31] + "\x00" }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			if _, err := c.Info(); !errors.Is(err, ErrMalformed) {
				t.Errorf("Info(%+v) = %v, want ErrMalformed", c, err)
			}
		})
	}
	if _, err := ok.Info(); err != nil {
		t.Errorf("anonymous sender: %v", err)
	}
}

// TestRoundTrip seals and opens with both KEMs, every AEAD, ECDSA, Ed25519
// and anonymous senders, through the wire encoding.
func TestRoundTrip(t *testing.T) {
	n := newNet(t)
	v := n.verifier(t, true)
	for _, kt := range []struct {
		name, key string
		kem       uint16
	}{{"mlkem768x25519", "s1", KEMMLKEM768X25519}, {"x25519", "x1", KEMX25519}} {
		for _, aead := range []uint16{AEADChaCha20Poly1305, AEADAES128GCM, AEADAES256GCM} {
			for _, sender := range []string{"vendor-a", "vendor-ed", Anonymous} {
				t.Run(fmt.Sprintf("%s/aead%d/%s", kt.name, aead, sender), func(t *testing.T) {
					s, err := NewSealer(SealerConfig{AEAD: aead})
					if err != nil {
						t.Fatal(err)
					}
					ctx := ctxFor(sender, "hd-1")
					pt := []byte(`{"guests":[{"name":"Erika Mustermann"}]}`)
					env, err := s.Seal(n.key(t, "hd-1", kt.key), ctx, pt, n.certs[sender])
					if err != nil {
						t.Fatal(err)
					}
					if env.KEM != kt.kem || env.AEAD != aead || env.KDF != KDFHKDFSHA256 || env.KeyID != kt.key {
						t.Errorf("suite = %#x/%d/%d key %s", env.KEM, env.KDF, env.AEAD, env.KeyID)
					}
					wire, err := env.Marshal()
					if err != nil {
						t.Fatal(err)
					}
					if len(wire) != env.encodedLen() {
						t.Errorf("Marshal gave %d bytes, encodedLen says %d", len(wire), env.encodedLen())
					}
					got, err := Parse(wire)
					if err != nil {
						t.Fatal(err)
					}
					opened, id, err := v.OpenVerified(got, ctx, n.keys["hd-1"])
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(opened, pt) {
						t.Errorf("opened %q, want %q", opened, pt)
					}
					wantID := pki.ID{}
					if sender != Anonymous {
						wantID = pki.ID{Network: network, Role: pki.RoleProvider, Name: sender}
					}
					if id != wantID {
						t.Errorf("sender = %v, want %v", id, wantID)
					}
				})
			}
		}
	}
}

// TestPackageFuncs checks the uncached Seal, Open and Verify.
func TestPackageFuncs(t *testing.T) {
	n := newNet(t)
	ctx := ctxFor("vendor-a", "hd-1")
	env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("hello"), n.certs["vendor-a"])
	if err != nil {
		t.Fatal(err)
	}
	if env.AEAD != AEADChaCha20Poly1305 || env.KEM != KEMMLKEM768X25519 {
		t.Errorf("default suite = kem %#x aead %d", env.KEM, env.AEAD)
	}
	if len(env.Chain) != 1 || !bytes.Equal(env.Chain[0], n.ca.Inter.Raw) {
		t.Errorf("chain = %d certificates, want the intermediate", len(env.Chain))
	}
	id, err := Verify(env, ctx, VerifyOptions{Trust: n.trust(), Now: n.clk.Now})
	if err != nil || id.Name != "vendor-a" {
		t.Fatalf("Verify = %v, %v", id, err)
	}
	pt, err := Open(env, ctx, n.keys["hd-1"])
	if err != nil || string(pt) != "hello" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	if _, err := Verify(env, ctx, VerifyOptions{}); err == nil {
		t.Error("Verify without trust succeeded")
	}
}

func TestEmptyPlaintext(t *testing.T) {
	n := newNet(t)
	ctx := ctxFor(Anonymous, "hd-1")
	env, err := Seal(n.key(t, "hd-1", "x1"), ctx, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := Open(env, ctx, n.keys["hd-1"])
	if err != nil || len(pt) != 0 {
		t.Fatalf("Open = %q, %v", pt, err)
	}
}

func TestOpenWrongKey(t *testing.T) {
	n := newNet(t)
	ctx := ctxFor(Anonymous, "hd-1")
	env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other := newSealKey(t, "s1", KEMMLKEM768X25519) // same id, other key
	x := newSealKey(t, "s1", KEMX25519)             // same id, other KEM
	for _, tt := range []struct {
		name string
		keys []pki.SealPrivateKey
		want error
	}{
		{"other member's key", n.keys["vendor-a"], ErrOpen},
		{"same id, other key", []pki.SealPrivateKey{other}, ErrOpen},
		{"same id, other KEM", []pki.SealPrivateKey{x}, ErrUnknownKey},
		{"no such id", n.keys["hd-1"][1:], ErrUnknownKey},
		{"no keys", nil, ErrUnknownKey},
		{"nil key", []pki.SealPrivateKey{{ID: "s1"}}, ErrUnknownKey},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pt, err := Open(env, ctx, tt.keys)
			if !errors.Is(err, tt.want) || pt != nil {
				t.Errorf("Open = %q, %v; want %v", pt, err, tt.want)
			}
			if errors.Is(err, ErrOpen) && err.Error() != ErrOpen.Error() {
				t.Errorf("decryption error says more than ErrOpen: %v", err)
			}
		})
	}
}

// TestContextBinding changes each field of the context in turn: the
// envelope must neither open nor verify under any other context.
func TestContextBinding(t *testing.T) {
	n := newNet(t)
	v := n.verifier(t, true)
	for _, sender := range []string{"vendor-a", Anonymous} {
		ctx := ctxFor(sender, "hd-1")
		env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("payload"), n.certs[sender])
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name             string
			edit             func(*Context)
			wantOpen, wantVf error // wantVf for the signed envelope
		}{
			{"sender", func(c *Context) { c.Sender = "vendor-b" }, ErrOpen, ErrUntrusted},
			{"recipient", func(c *Context) { c.Recipient = "hd-2" }, ErrOpen, ErrBadSignature},
			{"service", func(c *Context) { c.Service = "contacts2" }, ErrOpen, ErrBadSignature},
			{"kind", func(c *Context) { c.Kind = KindNotification }, ErrOpen, ErrBadSignature},
			{"message id", func(c *Context) { c.MessageID = "ffeeddccbbaa99887766554433221100" }, ErrOpen, ErrBadSignature},
		} {
			t.Run(sender+"/"+tt.name, func(t *testing.T) {
				c := ctx
				tt.edit(&c)
				if sender == Anonymous && tt.name == "sender" {
					// An unsigned envelope under a named sender is refused
					// before decryption.
					tt.wantOpen, tt.wantVf = ErrAnonymous, ErrAnonymous
				}
				if pt, err := Open(env, c, n.keys["hd-1"]); !errors.Is(err, tt.wantOpen) {
					t.Errorf("Open = %q, %v; want %v", pt, err, tt.wantOpen)
				}
				if sender == Anonymous && tt.name != "sender" {
					return // nothing to verify: the info is only bound by decryption
				}
				if _, err := v.Verify(env, c); !errors.Is(err, tt.wantVf) {
					t.Errorf("Verify = %v; want %v", err, tt.wantVf)
				}
			})
		}
	}
}

func flip(b []byte, i int) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x01
	return b
}

func TestTamper(t *testing.T) {
	n := newNet(t)
	ctx := ctxFor("vendor-a", "hd-1")
	env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("payload"), n.certs["vendor-a"])
	if err != nil {
		t.Fatal(err)
	}
	// The same key in a renewed certificate: still vendor-a, still pinned.
	renewed := n.ca.IssueWith(t, pki.RoleProvider, "vendor-a", pkitest.Options{Key: n.certs["vendor-a"].PrivateKey.(*ecdsa.PrivateKey)})
	for _, tt := range []struct {
		name               string
		edit               func(*Envelope)
		wantOpen, wantVf   error
		orVf               error // Verify may also fail with this
		wantOpenOK, wantOK bool
	}{
		{name: "enc", edit: func(e *Envelope) { e.Enc = flip(e.Enc, 5) }, wantOpen: ErrOpen, wantVf: ErrBadSignature},
		{name: "enc X25519 part", edit: func(e *Envelope) { e.Enc = flip(e.Enc, len(e.Enc)-3) }, wantOpen: ErrOpen, wantVf: ErrBadSignature},
		{name: "ct", edit: func(e *Envelope) { e.CT = flip(e.CT, 0) }, wantOpen: ErrOpen, wantVf: ErrBadSignature},
		{name: "ct tag", edit: func(e *Envelope) { e.CT = flip(e.CT, len(e.CT)-1) }, wantOpen: ErrOpen, wantVf: ErrBadSignature},
		{name: "ct truncated", edit: func(e *Envelope) { e.CT = e.CT[:len(e.CT)-1] }, wantOpen: ErrOpen, wantVf: ErrBadSignature},
		{name: "sig", edit: func(e *Envelope) { e.Sig = flip(e.Sig, len(e.Sig)-1) }, wantOpenOK: true, wantVf: ErrBadSignature},
		{name: "cert signature", edit: func(e *Envelope) { e.Cert = flip(e.Cert, len(e.Cert)-1) }, wantOpenOK: true, wantVf: ErrUntrusted, orVf: ErrMalformed},
		{name: "cert garbage", edit: func(e *Envelope) { e.Cert = []byte("not a certificate") }, wantOpenOK: true, wantVf: ErrMalformed},
		{name: "cert renewed, same key", edit: func(e *Envelope) { e.Cert = renewed.Certificate[0] }, wantOpenOK: true, wantOK: true},
		{name: "cert of another member", edit: func(e *Envelope) { e.Cert = n.certs["vendor-b"].Certificate[0] }, wantOpenOK: true, wantVf: ErrUntrusted},
		{name: "chain garbage", edit: func(e *Envelope) { e.Chain = [][]byte{[]byte("junk")} }, wantOpenOK: true, wantVf: ErrMalformed},
		{name: "chain left out", edit: func(e *Envelope) { e.Chain = nil }, wantOpenOK: true, wantVf: ErrUntrusted},
		{name: "chain of the wrong CA", edit: func(e *Envelope) { e.Chain = [][]byte{pkitest.NewCA(t, network, t0).Inter.Raw} }, wantOpenOK: true, wantVf: ErrUntrusted},
		{name: "sig removed", edit: func(e *Envelope) { e.Sig = nil }, wantOpen: ErrMalformed, wantVf: ErrMalformed},
		{name: "cert and sig removed", edit: func(e *Envelope) { e.Cert, e.Sig, e.Chain = nil, nil, nil }, wantOpen: ErrAnonymous, wantVf: ErrAnonymous},
		// The signed digest binds the suite and the recipient key id.
		{name: "key id", edit: func(e *Envelope) { e.KeyID = "s2" }, wantOpen: ErrOpen, wantVf: ErrBadSignature},
		{name: "aead", edit: func(e *Envelope) { e.AEAD = AEADAES256GCM }, wantOpen: ErrOpen, wantVf: ErrBadSignature},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := *env
			tt.edit(&e)
			pt, err := Open(&e, ctx, n.keys["hd-1"])
			if tt.wantOpenOK {
				if err != nil || string(pt) != "payload" {
					t.Errorf("Open = %q, %v; want the payload (Open does not check the sender)", pt, err)
				}
			} else if !errors.Is(err, tt.wantOpen) {
				t.Errorf("Open = %q, %v; want %v", pt, err, tt.wantOpen)
			}
			_, err = Verify(&e, ctx, VerifyOptions{Trust: n.trust(), Now: n.clk.Now})
			switch {
			case tt.wantOK:
				// The signature binds the sender's key, not one certificate
				// of it.
				if err != nil {
					t.Errorf("Verify = %v, want nil", err)
				}
			case !errors.Is(err, tt.wantVf) && (tt.orVf == nil || !errors.Is(err, tt.orVf)):
				t.Errorf("Verify = %v; want %v", err, tt.wantVf)
			}
		})
	}
}

// TestSignSoftwareSealed: software seals without the member's key, the
// endpoint server signs the envelope unopened, and the recipient verifies
// and opens it.
func TestSignSoftwareSealed(t *testing.T) {
	n := newNet(t)
	ctx := Context{Sender: "vendor-a", Recipient: "hd-1", Service: "contacts", Kind: KindRequest, MessageID: strings.Repeat("ab", 16)}
	unsigned := func() *Envelope {
		e, err := SealUnsigned(n.key(t, "hd-1", "s1"), ctx, []byte("sealed by software"))
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	if _, err := Open(unsigned(), ctx, n.keys["hd-1"]); err == nil {
		t.Error("an unsigned envelope under a member's name opened before it was signed")
	}
	env := unsigned()
	if err := Sign(env, ctx, n.certs["vendor-a"]); err != nil {
		t.Fatal(err)
	}
	pt, id, err := n.verifier(t, false).OpenVerified(env, ctx, n.keys["hd-1"])
	if err != nil || string(pt) != "sealed by software" || id.Name != "vendor-a" {
		t.Fatalf("OpenVerified after Sign = %q, %v, %v", pt, id, err)
	}
	if err := Sign(env, ctx, n.certs["vendor-a"]); err == nil {
		t.Error("signing twice succeeded")
	}
	if err := Sign(unsigned(), ctx, n.certs["vendor-b"]); err == nil {
		t.Error("signing as another member succeeded")
	}
	anon := ctx
	anon.Sender = Anonymous
	if err := Sign(unsigned(), anon, n.certs["vendor-a"]); err == nil {
		t.Error("signing an anonymous envelope succeeded")
	}
}
