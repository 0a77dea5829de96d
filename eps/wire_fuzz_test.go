package eps

import (
	"bytes"
	"encoding/json"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"testing"
	"time"
)

// FuzzDecodeWire: a peer's message body is the first thing the endpoint
// server parses from another member. Whatever decodeWire accepts is a
// message the rest of the server can rely on, and re-encodes to something
// it accepts again.
//
//	go test -run '^$' -fuzz FuzzDecodeWire -fuzztime 60s ./eps
func FuzzDecodeWire(f *testing.F) {
	env := `{"v":2,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","salt":"AAAAAAAAAAAAAAAAAAAAAA==","ct":"AAAAAAAAAAAAAAAAAAAAAA==","cert":"AAAA","sig":"AAAA"}`
	id := store.NewID().String()
	f.Add([]byte(`{"id":"` + id + `","kind":"request","service":"guest-lists","deadline":"2030-01-01T00:00:00Z","sync":true,"sealed":` + env + `}`))
	f.Add([]byte(`{"id":"` + id + `","kind":"response","service":"guest-lists","correlation_id":"` + id + `","deadline":"2030-01-01T00:00:00Z","sealed":` + env + `}`))
	f.Add([]byte(`{"id":"` + id + `","kind":"notification","service":"x","deadline":"2030-01-01T00:00:00Z","sealed":null}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, kind, err := decodeWire(b)
		if err != nil {
			if m != nil {
				t.Fatal("a message and an error")
			}
			return
		}
		switch {
		case m.ID.IsZero(), m.Sealed == nil, m.Deadline.IsZero():
			t.Fatalf("accepted an incomplete message: %+v", m)
		case (kind == store.Response) != (m.CorrelationID != nil):
			t.Fatalf("kind %v with correlation id %v", kind, m.CorrelationID)
		case m.Sync && kind != store.Request:
			t.Fatalf("sync %v", kind)
		}
		again, err := m.marshal()
		if err != nil {
			t.Fatalf("re-encoding an accepted message: %v", err)
		}
		m2, kind2, err := decodeWire(again)
		if err != nil || kind2 != kind || m2.ID != m.ID || !m2.Deadline.Equal(m.Deadline) {
			t.Fatalf("round trip: %v\n%s", err, again)
		}
		if third, err := m2.marshal(); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("the encoding is not canonical: %v\n%s\n%s", err, again, third)
		}
		// The wire format is JSON: what decodeWire accepts, encoding/json
		// reads to the same message.
		var std wireMessage
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("encoding/json refuses an accepted message: %v\n%q", err, b)
		}
		if std.ID != m.ID || std.Kind != m.Kind || std.Service != m.Service || std.Sync != m.Sync ||
			!std.Deadline.Equal(m.Deadline) || (std.CorrelationID == nil) != (m.CorrelationID == nil) ||
			std.CorrelationID != nil && *std.CorrelationID != *m.CorrelationID {
			t.Fatalf("encoding/json reads another message:\n%+v\n%+v", std, m)
		}
		e1, _ := std.Sealed.Marshal()
		e2, _ := m.Sealed.Marshal()
		if !bytes.Equal(e1, e2) {
			t.Fatalf("encoding/json reads another envelope")
		}
	})
}

// FuzzVerifyReceipt: receipts come from the peer a message was delivered
// to. Only the signed receipt for this message, by the pinned key of the
// member it was sent to, may pass.
//
//	go test -run '^$' -fuzz FuzzVerifyReceipt -fuzztime 60s ./eps
func FuzzVerifyReceipt(f *testing.F) {
	now := time.Now()
	ca := pkitest.NewCA(f, "kurier.fuzz", now)
	cert := ca.Issue(f, pki.RoleProvider, "vendor-a")
	trust := ca.Trust(f, ca.Directory(pkitest.Member(cert, "vendor-a")))
	want, err := pki.IDFromCert(cert.Leaf)
	if err != nil {
		f.Fatal(err)
	}
	id := store.NewID()
	digest := make([]byte, 32)
	good, err := signReceipt(&Receipt{MessageID: id, From: "hd-1", To: "vendor-a", ReceivedAt: now.UTC(), Digest: digest}, cert)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := VerifyReceipt(good, want, id, digest, trust, now); err != nil {
		f.Fatalf("the seed does not verify: %v", err)
	}
	f.Add(good)
	f.Add([]byte(`{"body":"e30=","cert":"AAAA","sig":"AAAA"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := VerifyReceipt(b, want, id, digest, trust, now)
		if err != nil {
			return
		}
		if r.MessageID != id || r.To != "vendor-a" || !bytes.Equal(r.Digest, digest) {
			t.Fatalf("accepted a receipt for something else: %+v", r)
		}
	})
}

// BenchmarkWire: encoding and decoding a typical peer message (a 1 KiB
// payload sealed in a version 2 envelope to an ML-KEM-768+X25519 key),
// by hand and, for comparison, with encoding/json.
//
//	go test -run '^$' -bench Wire -benchmem ./eps
func BenchmarkWire(b *testing.B) {
	ca := pkitest.NewCA(b, "kurier.bench", time.Now())
	cert := ca.Issue(b, pki.RoleHealthOffice, "hd-1")
	key, err := pki.NewSealKey("s1")
	if err != nil {
		b.Fatal(err)
	}
	corr := store.NewID()
	m := &wireMessage{ID: store.NewID(), Kind: "response", Service: "guest-lists", CorrelationID: &corr, Deadline: time.Now().UTC()}
	var sealer seal.Sealer
	m.Sealed, err = sealer.Seal(key.Public(), sealContext("hd-1", "vendor-a", m), benchPayloadInternal, cert)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := m.marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			if _, _, err := decodeWire(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			if _, err := m.marshal(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json/decode", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			dec := json.NewDecoder(bytes.NewReader(enc))
			dec.DisallowUnknownFields()
			var w wireMessage
			if err := dec.Decode(&w); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json/encode", func(b *testing.B) {
		b.SetBytes(int64(len(enc)))
		for b.Loop() {
			if _, err := json.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// benchPayloadInternal is a check-in list of about 1 KiB, as in
// bench_test.go.
var benchPayloadInternal = func() []byte {
	guests := bytes.Repeat([]byte(`{"name":"Erika Mustermann","phone":"+49 30 1234567"},`), 20)
	return []byte(`{"location":"Café Rot","guests":[` + string(guests[:len(guests)-1]) + `]}`)
}()
