package seal

import (
	"crypto"
	"crypto/hpke"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

// craft seals like Seal but without its checks: the info names ctx.Sender,
// while cert and key may belong to anyone.
func craft(t *testing.T, to pki.SealKey, ctx Context, pt []byte, cert *tls.Certificate, key crypto.Signer) *Envelope {
	t.Helper()
	info, err := ctx.Info()
	if err != nil {
		t.Fatal(err)
	}
	pk, err := kemFor(to.KEM).NewPublicKey(to.Public)
	if err != nil {
		t.Fatal(err)
	}
	enc, s, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := s.Seal(nil, pt)
	if err != nil {
		t.Fatal(err)
	}
	e := &Envelope{V: 1, KEM: to.KEM, KDF: KDFHKDFSHA256, AEAD: AEADChaCha20Poly1305, KeyID: to.ID, Enc: enc, CT: ct,
		Cert: cert.Certificate[0], Chain: cert.Certificate[1:]}
	if e.Sig, err = sign(key, digest(info, e)); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestWrongSender(t *testing.T) {
	n := newNet(t)
	v := n.verifier(t, false)
	ctx := ctxFor("vendor-a", "hd-1")
	to := n.key(t, "hd-1", "s1")
	b := n.certs["vendor-b"]
	bKey := b.PrivateKey.(crypto.Signer)

	// vendor-b seals in vendor-a's name, with its own certificate.
	e := craft(t, to, ctx, []byte("forged"), b, bKey)
	if _, err := v.Verify(e, ctx); !errors.Is(err, ErrUntrusted) || !errors.Is(err, pki.ErrUnexpectedPeer) {
		t.Errorf("Verify(vendor-b's cert for vendor-a) = %v, want ErrUntrusted and pki.ErrUnexpectedPeer", err)
	}
	if _, _, err := v.OpenVerified(e, ctx, n.keys["hd-1"]); !errors.Is(err, ErrUntrusted) {
		t.Errorf("OpenVerified = %v, want ErrUntrusted", err)
	}
	// Open alone does not look at the sender: that is what Verify is for.
	if _, err := Open(e, ctx, n.keys["hd-1"]); err != nil {
		t.Errorf("Open = %v", err)
	}

	// vendor-b signs, but presents vendor-a's certificate.
	e = craft(t, to, ctx, []byte("forged"), n.certs["vendor-a"], bKey)
	if _, err := v.Verify(e, ctx); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify(vendor-a's cert, vendor-b's signature) = %v, want ErrBadSignature", err)
	}

	// The sealer refuses to sign in another member's name.
	if _, err := Seal(to, ctx, []byte("x"), b); err == nil {
		t.Error("Seal with vendor-b's certificate for sender vendor-a succeeded")
	}
	// And a certificate whose key does not match.
	mixed := &tls.Certificate{Certificate: n.certs["vendor-a"].Certificate, PrivateKey: bKey}
	if _, err := Seal(to, ctx, []byte("x"), mixed); err == nil {
		t.Error("Seal with a mismatched key succeeded")
	}
}

func TestDirectory(t *testing.T) {
	ctx := ctxFor("vendor-a", "hd-1")
	for _, tt := range []struct {
		name string
		edit func(n *testNet, d *pki.Directory)
		want error
	}{
		{"not a member", func(n *testNet, d *pki.Directory) { d.Members = without(d.Members, "vendor-a") }, pki.ErrNotMember},
		{"key not pinned", func(n *testNet, d *pki.Directory) {
			m, _ := d.Member("vendor-a")
			m.Pins = []string{pki.Pin(n.certs["vendor-b"].Leaf)}
		}, pki.ErrUnpinned},
		{"member revoked", func(n *testNet, d *pki.Directory) {
			d.Revoked = []pki.Revocation{{Member: "vendor-a", RevokedAt: t0}}
		}, pki.ErrRevoked},
		{"key revoked", func(n *testNet, d *pki.Directory) {
			d.Revoked = []pki.Revocation{{Member: "vendor-a", Pins: []string{pki.Pin(n.certs["vendor-a"].Leaf)}, RevokedAt: t0}}
		}, pki.ErrRevoked},
		{"suspended", func(n *testNet, d *pki.Directory) {
			m, _ := d.Member("vendor-a")
			m.Suspended = true
		}, pki.ErrSuspended},
		{"wrong role", func(n *testNet, d *pki.Directory) {
			m, _ := d.Member("vendor-a")
			m.Role = pki.RoleHealthOffice
		}, pki.ErrNotMember},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := newNet(t)
			v := n.verifier(t, false)
			env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("x"), n.certs["vendor-a"])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Verify(env, ctx); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			// The chain is cached now; the directory is still checked.
			n.publish(t, func(d *pki.Directory) { tt.edit(n, d) })
			if _, err := v.Verify(env, ctx); !errors.Is(err, ErrUntrusted) || !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want ErrUntrusted and %v", err, tt.want)
			}
		})
	}

	t.Run("no directory", func(t *testing.T) {
		n := newNet(t)
		env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("x"), n.certs["vendor-a"])
		if err != nil {
			t.Fatal(err)
		}
		empty := n.ca.Verifier(t, nil)
		_, err = Verify(env, ctx, VerifyOptions{Trust: pki.Trust{Roots: n.roots, Directory: empty}, Now: n.clk.Now})
		if !errors.Is(err, pki.ErrNoDirectory) {
			t.Errorf("Verify = %v, want pki.ErrNoDirectory", err)
		}
	})
	t.Run("directory expired", func(t *testing.T) {
		n := newNet(t)
		v := n.verifier(t, false)
		env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("x"), n.certs["vendor-a"])
		if err != nil {
			t.Fatal(err)
		}
		n.publish(t, func(d *pki.Directory) { d.ExpiresAt = t0.Add(12 * time.Hour) })
		n.clk.Set(t0.Add(12*time.Hour - time.Second))
		if _, err := v.Verify(env, ctx); err != nil {
			t.Fatalf("before expiry: %v", err)
		}
		n.clk.Set(t0.Add(12 * time.Hour)) // the certificate is still valid
		if _, err := v.Verify(env, ctx); !errors.Is(err, ErrUntrusted) || !errors.Is(err, pki.ErrDirectoryExpired) {
			t.Errorf("Verify after the directory expired = %v, want ErrUntrusted and pki.ErrDirectoryExpired", err)
		}
	})
	t.Run("untrusted root", func(t *testing.T) {
		n := newNet(t)
		other := pkitest.NewCA(t, network, t0)
		c := other.Issue(t, pki.RoleProvider, "vendor-a")
		// Even pinned in the directory, a certificate from another CA is
		// refused.
		n.certs["vendor-a"] = c
		n.publish(t, nil)
		env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("x"), c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.verifier(t, false).Verify(env, ctx); !errors.Is(err, ErrUntrusted) {
			t.Errorf("Verify = %v, want ErrUntrusted", err)
		}
	})
}

func without(ms []pki.Member, name string) []pki.Member {
	var out []pki.Member
	for _, m := range ms {
		if m.Name != name {
			out = append(out, m)
		}
	}
	return out
}

func TestIntermediatesOption(t *testing.T) {
	n := newNet(t)
	ctx := ctxFor("vendor-a", "hd-1")
	leafOnly := &tls.Certificate{Certificate: n.certs["vendor-a"].Certificate[:1], PrivateKey: n.certs["vendor-a"].PrivateKey, Leaf: n.certs["vendor-a"].Leaf}
	env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("x"), leafOnly)
	if err != nil {
		t.Fatal(err)
	}
	if env.Chain != nil {
		t.Fatalf("chain = %d certificates, want none", len(env.Chain))
	}
	if _, err := Verify(env, ctx, VerifyOptions{Trust: n.trust(), Now: n.clk.Now}); !errors.Is(err, ErrUntrusted) {
		t.Errorf("Verify without intermediates = %v, want ErrUntrusted", err)
	}
	inter := x509.NewCertPool()
	inter.AddCert(n.ca.Inter)
	if _, err := Verify(env, ctx, VerifyOptions{Trust: n.trust(), Intermediates: inter, Now: n.clk.Now}); err != nil {
		t.Errorf("Verify with VerifyOptions.Intermediates = %v", err)
	}
}

func TestAnonymous(t *testing.T) {
	n := newNet(t)
	anon := ctxFor(Anonymous, "hd-1")
	named := ctxFor("vendor-a", "hd-1")
	to := n.key(t, "hd-1", "x1")
	env, err := Seal(to, anon, []byte("from a browser"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if env.Cert != nil || env.Sig != nil || env.Chain != nil {
		t.Fatal("anonymous envelope carries cert, chain or sig")
	}
	if _, err := n.verifier(t, false).Verify(env, anon); !errors.Is(err, ErrAnonymous) {
		t.Errorf("Verify (anonymous not allowed) = %v, want ErrAnonymous", err)
	}
	if _, _, err := n.verifier(t, false).OpenVerified(env, anon, n.keys["hd-1"]); !errors.Is(err, ErrAnonymous) {
		t.Errorf("OpenVerified (anonymous not allowed) = %v, want ErrAnonymous", err)
	}
	pt, id, err := n.verifier(t, true).OpenVerified(env, anon, n.keys["hd-1"])
	if err != nil || !id.IsZero() || string(pt) != "from a browser" {
		t.Errorf("OpenVerified (anonymous allowed) = %q, %v, %v", pt, id, err)
	}
	// An unsigned envelope never passes for a member, even where anonymous
	// senders are allowed.
	if _, err := n.verifier(t, true).Verify(env, named); !errors.Is(err, ErrAnonymous) {
		t.Errorf("Verify under a named sender = %v, want ErrAnonymous", err)
	}
	if _, err := Open(env, named, n.keys["hd-1"]); !errors.Is(err, ErrAnonymous) {
		t.Errorf("Open under a named sender = %v, want ErrAnonymous", err)
	}
	// A signed envelope is never anonymous.
	signed, err := Seal(to, named, []byte("x"), n.certs["vendor-a"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.verifier(t, true).Verify(signed, anon); !errors.Is(err, ErrMalformed) {
		t.Errorf("Verify(signed, anonymous context) = %v, want ErrMalformed", err)
	}
	if _, err := Open(signed, anon, n.keys["hd-1"]); !errors.Is(err, ErrMalformed) {
		t.Errorf("Open(signed, anonymous context) = %v, want ErrMalformed", err)
	}
	// Sealing: no signer means anonymous, and anonymous means no signer.
	if _, err := Seal(to, named, []byte("x"), nil); err == nil {
		t.Error("Seal without signer for a named sender succeeded")
	}
	if _, err := Seal(to, anon, []byte("x"), n.certs["vendor-a"]); err == nil {
		t.Error("Seal with a signer for the anonymous sender succeeded")
	}
}

func TestKeyRotation(t *testing.T) {
	n := newNet(t)
	ctx := ctxFor("vendor-a", "hd-1")
	v := n.verifier(t, false)
	for _, id := range []string{"s1", "s2", "x1"} {
		env, err := Seal(n.key(t, "hd-1", id), ctx, []byte("to "+id), n.certs["vendor-a"])
		if err != nil {
			t.Fatal(err)
		}
		if env.KeyID != id {
			t.Errorf("key_id = %q, want %q", env.KeyID, id)
		}
		pt, _, err := v.OpenVerified(env, ctx, n.keys["hd-1"])
		if err != nil || string(pt) != "to "+id {
			t.Errorf("OpenVerified(%s) = %q, %v", id, pt, err)
		}
	}
	// After s1 is retired, envelopes to it no longer open.
	env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("late"), n.certs["vendor-a"])
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.OpenVerified(env, ctx, n.keys["hd-1"][1:]); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("OpenVerified with s1 retired = %v, want ErrUnknownKey", err)
	}
}

func TestSealerChecks(t *testing.T) {
	n := newNet(t)
	ctx := ctxFor(Anonymous, "hd-1")
	good := n.key(t, "hd-1", "s1")
	for _, tt := range []struct {
		name string
		to   pki.SealKey
	}{
		{"unknown KEM", pki.SealKey{ID: "s1", KEM: 0x0010, Public: good.Public}},
		{"KEM does not fit the key", pki.SealKey{ID: "s1", KEM: KEMX25519, Public: good.Public}},
		{"bad key id", pki.SealKey{ID: "S1", KEM: good.KEM, Public: good.Public}},
		{"short key", pki.SealKey{ID: "s1", KEM: good.KEM, Public: good.Public[:100]}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSealer(SealerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Seal(good, ctx, nil, nil); err != nil { // fills the cache
				t.Fatal(err)
			}
			if env, err := s.Seal(tt.to, ctx, nil, nil); err == nil {
				t.Errorf("Seal = %+v, want an error", env)
			}
		})
	}
	if _, err := NewSealer(SealerConfig{AEAD: 0xffff}); err == nil {
		t.Error("NewSealer with an export-only AEAD succeeded")
	}
	if _, err := Seal(good, Context{}, nil, nil); !errors.Is(err, ErrMalformed) {
		t.Errorf("Seal with an empty context = %v, want ErrMalformed", err)
	}
	noKey := &tls.Certificate{Certificate: n.certs["vendor-a"].Certificate}
	if _, err := Seal(good, ctxFor("vendor-a", "hd-1"), nil, noKey); err == nil {
		t.Error("Seal with a certificate without key succeeded")
	}
	noLeaf := &tls.Certificate{Certificate: n.certs["vendor-a"].Certificate, PrivateKey: n.certs["vendor-a"].PrivateKey}
	if _, err := Seal(good, ctxFor("vendor-a", "hd-1"), nil, noLeaf); err != nil {
		t.Errorf("Seal with Leaf unset = %v", err)
	}
}

func TestSealerKeyCache(t *testing.T) {
	n := newNet(t)
	s, err := NewSealer(SealerConfig{KeyCacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor(Anonymous, "hd-1")
	for range 3 {
		for _, id := range []string{"s1", "s2", "x1"} {
			env, err := s.Seal(n.key(t, "hd-1", id), ctx, []byte(id), nil)
			if err != nil {
				t.Fatal(err)
			}
			if pt, err := Open(env, ctx, n.keys["hd-1"]); err != nil || string(pt) != id {
				t.Fatalf("Open = %q, %v", pt, err)
			}
		}
		if got := s.keys.len(); got > 2 {
			t.Errorf("key cache holds %d keys, bound is 2", got)
		}
	}
}

// TestVerifierCache checks that a chain is verified once, re-verified after
// CacheTTL, and never trusted past its certificates' expiry.
func TestVerifierCache(t *testing.T) {
	n := newNet(t)
	v, err := NewVerifier(VerifyOptions{Trust: n.trust(), Now: n.clk.Now, CacheTTL: time.Minute, CacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	seal := func(sender string) (*Envelope, Context) {
		ctx := ctxFor(sender, "hd-1")
		env, err := Seal(n.key(t, "hd-1", "s1"), ctx, []byte("x"), n.certs[sender])
		if err != nil {
			t.Fatal(err)
		}
		return env, ctx
	}
	env, ctx := seal("vendor-a")
	verify := func(wantFresh int64) {
		t.Helper()
		if _, err := v.Verify(env, ctx); err != nil {
			t.Fatal(err)
		}
		if got := v.fresh.Load(); got != wantFresh {
			t.Errorf("chains verified = %d, want %d", got, wantFresh)
		}
	}
	verify(1)
	verify(1)
	n.clk.Set(t0.Add(59 * time.Second))
	verify(1)
	n.clk.Set(t0.Add(time.Minute))
	verify(2)
	// A cached chain is not used before the time it was valid from.
	n.clk.Set(t0.Add(-2 * time.Hour))
	if _, err := v.Verify(env, ctx); !errors.Is(err, ErrUntrusted) {
		t.Errorf("Verify before NotBefore = %v, want ErrUntrusted", err)
	}
	// The certificate expires a day after t0; the entry is not used then,
	// even within the TTL.
	n.clk.Set(t0.Add(24*time.Hour - 30*time.Second))
	verify(3)
	n.clk.Set(t0.Add(24*time.Hour + time.Second))
	if _, err := v.Verify(env, ctx); !errors.Is(err, ErrUntrusted) {
		t.Errorf("Verify after expiry = %v, want ErrUntrusted", err)
	}
	n.clk.Set(t0)
	for _, m := range []string{"vendor-a", "vendor-b", "vendor-ed"} {
		e, c := seal(m)
		if _, err := v.Verify(e, c); err != nil {
			t.Fatal(err)
		}
	}
	if got := v.certs.len(); got > 2 {
		t.Errorf("cache holds %d chains, bound is 2", got)
	}

	off, err := NewVerifier(VerifyOptions{Trust: n.trust(), Now: n.clk.Now, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := off.Verify(env, ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := off.fresh.Load(); got != 2 || off.certs != nil {
		t.Errorf("uncached verifier: %d chains verified, cache %v", got, off.certs)
	}
}

// TestConcurrent shares one Sealer and one Verifier between goroutines
// (run with -race).
func TestConcurrent(t *testing.T) {
	n := newNet(t)
	s, err := NewSealer(SealerConfig{KeyCacheSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(VerifyOptions{Trust: n.trust(), Now: n.clk.Now, CacheSize: 1, AllowAnonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	keys := []pki.SealKey{n.key(t, "hd-1", "s1"), n.key(t, "hd-1", "s2"), n.key(t, "hd-1", "x1")}
	var wg sync.WaitGroup
	for i, sender := range []string{"vendor-a", "vendor-b", "vendor-ed", Anonymous} {
		wg.Go(func() {
			ctx := ctxFor(sender, "hd-1")
			for j := range 10 {
				env, err := s.Seal(keys[(i+j)%len(keys)], ctx, []byte(sender), n.certs[sender])
				if err != nil {
					t.Error(err)
					return
				}
				pt, _, err := v.OpenVerified(env, ctx, n.keys["hd-1"])
				if err != nil || string(pt) != sender {
					t.Errorf("OpenVerified = %q, %v", pt, err)
					return
				}
			}
		})
	}
	wg.Wait()
}
