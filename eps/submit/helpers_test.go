package submit

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
)

// x25519Key makes an office seal key of the kind browsers seal to.
func x25519Key(t *testing.T, id string) pki.SealPrivateKey {
	t.Helper()
	k, err := hpke.DHKEM(ecdh.X25519()).GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return pki.SealPrivateKey{ID: id, Key: k}
}

// testLink makes a link of office hd-1 to key, valid for a day from now.
func testLink(t *testing.T, key pki.SealPrivateKey, now time.Time) *Link {
	t.Helper()
	l, err := NewLink(Link{
		Label:         "k7x2mq",
		Recipient:     key.Public(),
		RecipientName: "hd-1",
		DisplayName:   "Gesundheitsamt Musterstadt",
		Service:       "contacts",
		Expires:       now.Add(24 * time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// vector is an entry of eps/seal's testdata/vectors.json, the vectors the
// envelope format publishes for other implementations.
type vector struct {
	Name      string `json:"name"`
	KEM       uint16 `json:"kem"`
	KDF       uint16 `json:"kdf"`
	AEAD      uint16 `json:"aead"`
	Recipient struct {
		KeyID   string `json:"key_id"`
		Private string `json:"private"`
		Public  []byte `json:"public"`
	} `json:"recipient"`
	Context struct {
		Sender    string `json:"sender"`
		Recipient string `json:"recipient"`
		Service   string `json:"service"`
		Kind      string `json:"kind"`
		MessageID string `json:"message_id"`
	} `json:"context"`
	Info      string          `json:"info"`
	Plaintext string          `json:"plaintext"`
	Envelope  json.RawMessage `json:"envelope"`
}

func (v *vector) context() seal.Context {
	c := v.Context
	return seal.Context{Sender: c.Sender, Recipient: c.Recipient, Service: c.Service, Kind: c.Kind, MessageID: c.MessageID}
}

func (v *vector) key(t *testing.T) pki.SealPrivateKey {
	t.Helper()
	b, err := hex.DecodeString(v.Recipient.Private)
	if err != nil {
		t.Fatal(err)
	}
	k, err := hpke.DHKEM(ecdh.X25519()).NewPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k.PublicKey().Bytes(), v.Recipient.Public) {
		t.Fatalf("vector %s: private and public key do not match", v.Name)
	}
	return pki.SealPrivateKey{ID: v.Recipient.KeyID, Key: k}
}

// browserVectors returns the anonymous X25519 AES-GCM vectors: the ones a
// browser with WebCrypto can make.
func browserVectors(t *testing.T) []vector {
	t.Helper()
	raw, err := os.ReadFile("../seal/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Vectors []vector `json:"vectors"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var out []vector
	for _, v := range f.Vectors {
		if v.KEM == seal.KEMX25519 && v.Context.Sender == seal.Anonymous && (v.AEAD == seal.AEADAES128GCM || v.AEAD == seal.AEADAES256GCM) {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		t.Fatal("no anonymous X25519 AES-GCM vectors in ../seal/testdata/vectors.json")
	}
	return out
}

// mustJSON encodes v as indented JSON.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// lookPath finds a program the test needs, or fails the test saying how to
// get it. Tests of the page must run in CI, so a missing tool is a failure,
// not a skip.
func lookPath(t *testing.T, name, install string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found on PATH (%v): %s", name, err, install)
	}
	return p
}
