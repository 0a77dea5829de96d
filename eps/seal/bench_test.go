package seal

import (
	"bytes"
	"testing"

	"github.com/kurier-net/kurier/pki"
)

// payload is a typical request: a check-in list of about 1 KiB.
var payload = bytes.Repeat([]byte(`{"name":"Erika Mustermann","phone":"+49 30 1234567"},`), 20)

func benchSealer(b *testing.B, aead uint16) *Sealer {
	s, err := NewSealer(SealerConfig{AEAD: aead})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkSeal(b *testing.B) {
	n := newNet(b)
	for _, bb := range []struct {
		name, key, sender string
		cached            bool
	}{
		{"mlkem768x25519/ecdsa", "s1", "vendor-a", true},
		{"mlkem768x25519/ed25519", "s1", "vendor-ed", true},
		{"mlkem768x25519/anonymous", "s1", Anonymous, true},
		{"mlkem768x25519/ecdsa/no-key-cache", "s1", "vendor-a", false},
		{"x25519/anonymous", "x1", Anonymous, true},
	} {
		b.Run(bb.name, func(b *testing.B) {
			s := benchSealer(b, 0)
			if !bb.cached {
				s = &Sealer{}
			}
			to := n.key(b, "hd-1", bb.key)
			ctx := ctxFor(bb.sender, "hd-1")
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, err := s.Seal(to, ctx, payload, n.certs[bb.sender]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	n := newNet(b)
	for _, bb := range []struct{ name, key string }{{"mlkem768x25519", "s1"}, {"x25519", "x1"}} {
		b.Run(bb.name, func(b *testing.B) {
			ctx := ctxFor(Anonymous, "hd-1")
			env, err := Seal(n.key(b, "hd-1", bb.key), ctx, payload, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload)))
			for b.Loop() {
				if _, err := Open(env, ctx, n.keys["hd-1"]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	n := newNet(b)
	for _, bb := range []struct {
		name, sender string
		cache        int
	}{{"ecdsa", "vendor-a", 0}, {"ed25519", "vendor-ed", 0}, {"ecdsa/no-cache", "vendor-a", -1}} {
		b.Run(bb.name, func(b *testing.B) {
			ctx := ctxFor(bb.sender, "hd-1")
			env, err := Seal(n.key(b, "hd-1", "s1"), ctx, payload, n.certs[bb.sender])
			if err != nil {
				b.Fatal(err)
			}
			v, err := NewVerifier(VerifyOptions{Trust: n.trust(), Now: n.clk.Now, CacheSize: bb.cache})
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := v.Verify(env, ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	n := newNet(b)
	env, err := Seal(n.key(b, "hd-1", "s1"), ctxFor("vendor-a", "hd-1"), payload, n.certs["vendor-a"])
	if err != nil {
		b.Fatal(err)
	}
	wire, err := env.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("parse", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		for b.Loop() {
			if _, err := Parse(wire); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("marshal", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		for b.Loop() {
			if _, err := env.Marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRoundTrip is one sealed call, both ways, on the wire format:
// vendor-a seals and signs a request to hd-1, which parses, verifies and
// opens it, then seals and signs the response, which vendor-a parses,
// verifies and opens. "parallel" runs calls on every core (GOMAXPROCS);
// its calls/s is the throughput of the machine.
func BenchmarkRoundTrip(b *testing.B) {
	n := newNet(b)
	s := benchSealer(b, 0)
	v := n.verifier(b, false)
	req := ctxFor("vendor-a", "hd-1")
	resp := Context{Sender: "hd-1", Recipient: "vendor-a", Service: "contacts", Kind: KindResponse, MessageID: "ffeeddccbbaa99887766554433221100"}
	hop := func(ctx Context, to pki.SealKey, keys []pki.SealPrivateKey, pt []byte) {
		env, err := s.Seal(to, ctx, pt, n.certs[ctx.Sender])
		if err != nil {
			b.Fatal(err)
		}
		wire, err := env.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		got, err := Parse(wire)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := v.OpenVerified(got, ctx, keys); err != nil {
			b.Fatal(err)
		}
	}
	toOffice, toVendor := n.key(b, "hd-1", "s1"), n.key(b, "vendor-a", "s1")
	call := func() {
		hop(req, toOffice, n.keys["hd-1"], payload)
		hop(resp, toVendor, n.keys["vendor-a"], []byte(`{"accepted":true}`))
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			call()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				call()
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
	})
}
