package seal

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestSession: signed envelopes from one Sealer to one key share a session
// (one enc), each with its own salt; each opens on its own, and a Verifier
// decapsulates once per session.
func TestSession(t *testing.T) {
	n := newNet(t)
	v := n.verifier(t, false)
	s, err := NewSealer(SealerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var envs []*Envelope
	for i := range 3 {
		ctx := ctxFor("vendor-a", "hd-1")
		ctx.MessageID = fmt.Sprintf("%032x", i)
		env, err := s.Seal(n.key(t, "hd-1", "s1"), ctx, []byte(fmt.Sprintf(`{"n":%d}`, i)), n.certs["vendor-a"])
		if err != nil {
			t.Fatal(err)
		}
		if env.V != 2 || len(env.Salt) != saltSize {
			t.Fatalf("envelope %d: version %d, salt %d bytes; want a version 2 envelope", i, env.V, len(env.Salt))
		}
		envs = append(envs, env)
	}
	if !bytes.Equal(envs[0].Enc, envs[1].Enc) || !bytes.Equal(envs[1].Enc, envs[2].Enc) {
		t.Error("one session, but the envelopes differ in enc")
	}
	if bytes.Equal(envs[0].Salt, envs[1].Salt) {
		t.Error("two messages with one salt")
	}
	// In any order, through the wire form.
	for _, i := range []int{2, 0, 1} {
		wire, err := envs[i].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(wire) != envs[i].encodedLen() {
			t.Errorf("Marshal gave %d bytes, encodedLen says %d", len(wire), envs[i].encodedLen())
		}
		env, err := Parse(wire)
		if err != nil {
			t.Fatal(err)
		}
		ctx := ctxFor("vendor-a", "hd-1")
		ctx.MessageID = fmt.Sprintf("%032x", i)
		pt, _, err := v.OpenVerified(env, ctx, n.keys["hd-1"])
		if err != nil || string(pt) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Fatalf("envelope %d: %q, %v", i, pt, err)
		}
		// So do the Verifier's Open (after a Verify of its own) and the
		// uncached package function.
		if pt, err := v.Open(env, ctx, n.keys["hd-1"]); err != nil || string(pt) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Errorf("Verifier.Open envelope %d: %q, %v", i, pt, err)
		}
		if pt, err := Open(env, ctx, n.keys["hd-1"]); err != nil || string(pt) != fmt.Sprintf(`{"n":%d}`, i) {
			t.Errorf("Open envelope %d: %q, %v", i, pt, err)
		}
	}
	if got := v.sessions.len(); got != 1 {
		t.Errorf("the Verifier holds %d receiving sessions, want 1", got)
	}

	// Bound to the message: another message id, service or kind does not
	// open it, nor does another sender's name.
	for name, change := range map[string]func(*Context){
		"message id": func(c *Context) { c.MessageID = fmt.Sprintf("%032x", 9) },
		"service":    func(c *Context) { c.Service = "other" },
		"kind":       func(c *Context) { c.Kind = KindNotification },
		"sender":     func(c *Context) { c.Sender = "vendor-b" },
	} {
		ctx := ctxFor("vendor-a", "hd-1")
		ctx.MessageID = fmt.Sprintf("%032x", 0)
		change(&ctx)
		if _, err := Open(envs[0], ctx, n.keys["hd-1"]); !errors.Is(err, ErrOpen) {
			t.Errorf("opened with another %s: %v", name, err)
		}
		if _, _, err := v.OpenVerified(envs[0], ctx, n.keys["hd-1"]); err == nil {
			t.Errorf("verified and opened with another %s", name)
		}
	}
}

// TestSessionTamper: salt and version are signed; a version 2 envelope
// cannot pass as version 1, and needs its salt and signature.
func TestSessionTamper(t *testing.T) {
	n := newNet(t)
	v := n.verifier(t, false)
	s, err := NewSealer(SealerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxFor("vendor-a", "hd-1")
	env, err := s.Seal(n.key(t, "hd-1", "s1"), ctx, []byte(`{"a":1}`), n.certs["vendor-a"])
	if err != nil {
		t.Fatal(err)
	}
	salt := *env
	salt.Salt = flip(env.Salt, 3)
	if _, _, err := v.OpenVerified(&salt, ctx, n.keys["hd-1"]); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed salt: %v, want ErrBadSignature", err)
	}
	v1 := *env
	v1.V, v1.Salt = 1, nil
	if _, _, err := v.OpenVerified(&v1, ctx, n.keys["hd-1"]); !errors.Is(err, ErrBadSignature) {
		t.Errorf("as version 1: %v, want ErrBadSignature", err)
	}
	for name, b := range map[string]string{
		"version 2 without salt": `{"v":2,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64(32) + `","ct":"` + b64(16) + `","cert":"AAAA","sig":"AAAA"}`,
		"version 1 with salt":    `{"v":1,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64(32) + `","salt":"` + b64(16) + `","ct":"` + b64(16) + `"}`,
		"version 2 unsigned":     `{"v":2,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64(32) + `","salt":"` + b64(16) + `","ct":"` + b64(16) + `"}`,
		"version 2, short salt":  `{"v":2,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64(32) + `","salt":"` + b64(8) + `","ct":"` + b64(16) + `","cert":"AAAA","sig":"AAAA"}`,
		"version 3":              `{"v":3,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64(32) + `","ct":"` + b64(16) + `"}`,
	} {
		if _, err := Parse([]byte(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse = %v, want ErrMalformed", name, err)
		}
	}
	ok := `{"v":2,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64(32) + `","salt":"` + b64(16) + `","ct":"` + b64(16) + `","cert":"AAAA","sig":"AAAA"}`
	if _, err := Parse([]byte(ok)); err != nil {
		t.Errorf("a well-formed version 2 envelope: %v", err)
	}
}

// TestSessionRenewal: a session ends after SessionTTL and SessionMaxUses;
// turned off, envelopes are version 1.
func TestSessionRenewal(t *testing.T) {
	n := newNet(t)
	v := n.verifier(t, false)
	s, err := NewSealer(SealerConfig{SessionTTL: time.Minute, SessionMaxUses: 2, Now: n.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	to := n.key(t, "hd-1", "s1")
	ctx := ctxFor("vendor-a", "hd-1")
	seal := func() *Envelope {
		t.Helper()
		env, err := s.Seal(to, ctx, []byte(`{}`), n.certs["vendor-a"])
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := v.OpenVerified(env, ctx, n.keys["hd-1"]); err != nil {
			t.Fatal(err)
		}
		return env
	}
	a, b, c := seal(), seal(), seal()
	if !bytes.Equal(a.Enc, b.Enc) || bytes.Equal(b.Enc, c.Enc) {
		t.Error("SessionMaxUses 2: want the first two in one session, the third in a new one")
	}
	n.clk.Set(n.clk.Now().Add(time.Minute))
	if d := seal(); bytes.Equal(c.Enc, d.Enc) {
		t.Error("a session outlived SessionTTL")
	}
	// Another recipient key, another sender: other sessions.
	if e, err := s.Seal(n.key(t, "hd-1", "s2"), ctx, []byte(`{}`), n.certs["vendor-a"]); err != nil || bytes.Equal(e.Enc, c.Enc) {
		t.Errorf("another key shares a session: %v", err)
	}

	off, err := NewSealer(SealerConfig{SessionTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	env, err := off.Seal(to, ctx, []byte(`{}`), n.certs["vendor-a"])
	if err != nil || env.V != 1 || env.Salt != nil {
		t.Fatalf("sessions off: version %d, %v", env.V, err)
	}
	if _, _, err := v.OpenVerified(env, ctx, n.keys["hd-1"]); err != nil {
		t.Error(err)
	}
	// Anonymous envelopes are always version 1 (browsers seal them).
	anon, err := s.Seal(n.key(t, "hd-1", "x1"), ctxFor(Anonymous, "hd-1"), []byte(`{}`), nil)
	if err != nil || anon.V != 1 {
		t.Fatalf("anonymous: version %d, %v", anon.V, err)
	}
}

func b64(n int) string {
	return string(appendB64(nil, make([]byte, n))[1 : len(appendB64(nil, make([]byte, n)))-1])
}
