package seal

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
)

// plainEnvelope is Envelope without its JSON methods: what encoding/json
// alone makes of an envelope.
type plainEnvelope struct {
	V     int      `json:"v"`
	KEM   uint16   `json:"kem"`
	KDF   uint16   `json:"kdf"`
	AEAD  uint16   `json:"aead"`
	KeyID string   `json:"key_id"`
	Enc   []byte   `json:"enc"`
	Salt  []byte   `json:"salt"`
	CT    []byte   `json:"ct"`
	Cert  []byte   `json:"cert"`
	Chain [][]byte `json:"chain"`
	Sig   []byte   `json:"sig"`
}

// FuzzParse checks that Parse never panics, that everything it refuses is
// ErrMalformed, that everything it accepts re-encodes to a canonical form
// no longer than the input which parses to the same envelope, and that
// encoding/json reads the same values from every input Parse accepts.
func FuzzParse(f *testing.F) {
	f.Add([]byte(anonJSON))
	f.Add([]byte(signedJSON))
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":2,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64(32) + `","salt":"` + b64(16) + `","ct":"` + b64(16) + `","cert":"AAAA","sig":"AAAA"}`))
	f.Add([]byte(`{"v":1,"v":1}`))
	f.Add([]byte(`{"chain":[],"cert":"","sig":null}`))
	if raw, err := os.ReadFile(vectorsFile); err == nil {
		var vf vectorFile
		if err := json.Unmarshal(raw, &vf); err == nil {
			for _, v := range vf.Vectors {
				f.Add([]byte(v.Envelope))
			}
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := Parse(in)
		if err != nil {
			if e != nil || !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, %v; want nil, ErrMalformed", e, err)
			}
			return
		}
		out, err := e.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed envelope: %v", err)
		}
		if len(out) != e.encodedLen() || len(out) > len(in) {
			t.Fatalf("Marshal gave %d bytes; encodedLen %d, input %d", len(out), e.encodedLen(), len(in))
		}
		e2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(e)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(e, e2) {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", e, e2)
		}
		if out2, _ := e2.Marshal(); !bytes.Equal(out, out2) {
			t.Fatalf("Marshal is not stable:\n%s\n%s", out, out2)
		}
		var p plainEnvelope
		if err := json.Unmarshal(in, &p); err != nil {
			t.Fatalf("Parse accepted what encoding/json refuses: %v", err)
		}
		if !reflect.DeepEqual(Envelope(p), *e) {
			t.Fatalf("encoding/json reads\n%+v\nParse reads\n%+v", p, *e)
		}
	})
}
