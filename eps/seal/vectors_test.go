package seal

import (
	"bytes"
	"crypto/hpke"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// The vector file is shared with other implementations of the envelope
// (the browser's JavaScript). HPKE encapsulation is randomized, so a vector
// is something to open: a recipient key derived from a fixed seed, a
// context, an envelope made once with -update, and the plaintext it holds.
// The seeds are test-vector material, published like RFC 9180's; they are
// the only private keys in testdata and protect nothing.
type vectorFile struct {
	Comment []string `json:"comment"`
	Vectors []vector `json:"vectors"`
}

type vector struct {
	Name string `json:"name"`
	KEM  uint16 `json:"kem"`
	KDF  uint16 `json:"kdf"`
	AEAD uint16 `json:"aead"`
	// Recipient is the key the envelope is sealed to.
	Recipient struct {
		KeyID string `json:"key_id"`
		// IKM is the input of the KEM's DeriveKeyPair (hex), as Go's
		// crypto/hpke implements it.
		IKM string `json:"ikm"`
		// Private is SerializePrivateKey of the derived key (hex).
		Private string `json:"private"`
		// Public is SerializePublicKey, base64 as in the directory.
		Public string `json:"public"`
	} `json:"recipient"`
	Context struct {
		Sender    string `json:"sender"`
		Recipient string `json:"recipient"`
		Service   string `json:"service"`
		Kind      string `json:"kind"`
		MessageID string `json:"message_id"`
	} `json:"context"`
	// Info is the HPKE info of the context (hex).
	Info string `json:"info"`
	// Plaintext is what the envelope opens to (UTF-8).
	Plaintext string          `json:"plaintext"`
	Envelope  json.RawMessage `json:"envelope"`
	// Signature is set for signed envelopes.
	Signature *vectorSig `json:"signature,omitempty"`
}

type vectorSig struct {
	// Digest is SHA-256("kurier-seal-sig/v1\0" || info || enc || ct), hex.
	Digest string `json:"digest"`
	// Signer is the identity in the envelope's cert.
	Signer string `json:"signer"`
	// Roots are the root certificates (base64 DER) cert chains to at
	// VerifyTime, with the envelope's chain.
	Roots      []string  `json:"roots"`
	VerifyTime time.Time `json:"verify_time"`
}

func (v *vector) context() Context {
	c := v.Context
	return Context{Sender: c.Sender, Recipient: c.Recipient, Service: c.Service, Kind: c.Kind, MessageID: c.MessageID}
}

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	raw, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) { checkVector(t, &v) })
	}
}

func checkVector(t *testing.T, v *vector) {
	ikm, err := hex.DecodeString(v.Recipient.IKM)
	if err != nil {
		t.Fatal(err)
	}
	kem := kemFor(v.KEM)
	if kem == nil {
		t.Fatalf("unknown KEM %#x", v.KEM)
	}
	priv, err := kem.DeriveKeyPair(ikm)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := priv.Bytes(); hex.EncodeToString(b) != v.Recipient.Private {
		t.Errorf("derived private key %x, vector has %s", b, v.Recipient.Private)
	}
	if got := base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes()); got != v.Recipient.Public {
		t.Errorf("derived public key %s, vector has %s", got, v.Recipient.Public)
	}
	ctx := v.context()
	info, err := ctx.Info()
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(info) != v.Info {
		t.Errorf("info = %x, vector has %s", info, v.Info)
	}
	env, err := Parse(v.Envelope)
	if err != nil {
		t.Fatal(err)
	}
	if env.KEM != v.KEM || env.KDF != v.KDF || env.AEAD != v.AEAD || env.KeyID != v.Recipient.KeyID {
		t.Errorf("envelope suite %#x/%d/%d key %s does not match the vector", env.KEM, env.KDF, env.AEAD, env.KeyID)
	}
	// The stored envelope is in canonical form.
	var compact bytes.Buffer
	if err := json.Compact(&compact, v.Envelope); err != nil {
		t.Fatal(err)
	}
	if b, err := env.Marshal(); err != nil || !bytes.Equal(b, compact.Bytes()) {
		t.Errorf("Marshal = %s, %v; want the stored envelope", b, err)
	}
	keys := []pki.SealPrivateKey{{ID: v.Recipient.KeyID, Key: priv}}
	pt, err := Open(env, ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if string(pt) != v.Plaintext {
		t.Errorf("opened %q, want %q", pt, v.Plaintext)
	}
	// hpke.Open over enc || ct, as a single-shot implementation would.
	pt, err = hpke.Open(priv, hpke.HKDFSHA256(), aeadFor(v.AEAD), info, append(bytes.Clone(env.Enc), env.CT...))
	if err != nil || string(pt) != v.Plaintext {
		t.Errorf("hpke.Open = %q, %v", pt, err)
	}

	if (v.Signature != nil) != env.Signed() {
		t.Fatalf("vector signature %v, envelope signed %v", v.Signature != nil, env.Signed())
	}
	if v.Signature == nil {
		return
	}
	s := v.Signature
	if got := hex.EncodeToString(digest(info, env)); got != s.Digest {
		t.Errorf("digest = %s, vector has %s", got, s.Digest)
	}
	roots := x509.NewCertPool()
	for _, r := range s.Roots {
		der, err := base64.StdEncoding.DecodeString(r)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		roots.AddCert(c)
	}
	leaf, err := x509.ParseCertificate(env.Cert)
	if err != nil {
		t.Fatal(err)
	}
	// A directory of the vector's time that pins the signer.
	dirCA := pkitest.NewCA(t, network, s.VerifyTime)
	id, err := pki.IDFromCert(leaf)
	if err != nil {
		t.Fatal(err)
	}
	dir := dirCA.Verifier(t, dirCA.Directory(pki.Member{Name: id.Name, Role: id.Role, DisplayName: id.Name, Pins: []string{pki.Pin(leaf)}}))
	ver, err := NewVerifier(VerifyOptions{Trust: pki.Trust{Roots: roots, Directory: dir}, Now: func() time.Time { return s.VerifyTime }})
	if err != nil {
		t.Fatal(err)
	}
	pt, got, err := ver.OpenVerified(env, ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != s.Signer || string(pt) != v.Plaintext {
		t.Errorf("OpenVerified = %q, %s; want %q, %s", pt, got, v.Plaintext, s.Signer)
	}
	bad := *env
	bad.Sig = flip(bad.Sig, len(bad.Sig)/2)
	if _, err := ver.Verify(&bad, ctx); err == nil {
		t.Error("a flipped signature verifies")
	}
}

// writeVectors makes new vectors; run with -update, then review the diff:
// every envelope changes (encapsulation is randomized), nothing else should.
func writeVectors(t *testing.T) {
	vt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca := pkitest.NewCA(t, network, vt)
	ecdsaSigner := ca.IssueWith(t, pki.RoleProvider, "vendor-a", pkitest.Options{KeyType: pkitest.P256})
	edSigner, edRoot := issueEd25519(t, pki.RoleHealthOffice, "hd-1", vt)
	seed := func(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }
	const guests = `{"guests":[{"name":"Erika Mustermann","phone":"+49 30 1234567","check_in":"2026-01-01T19:00:00Z"}]}`
	specs := []struct {
		name      string
		kem, aead uint16
		keyID     string
		ikm       []byte
		sender    string
		recipient string
		kind      string
		id        string
		plaintext string
		signer    *tls.Certificate
		root      *x509.Certificate
	}{
		{"x25519-aes128gcm-anonymous", KEMX25519, AEADAES128GCM, "browser-1", seed(0x01), Anonymous, "hd-1", KindRequest, "0123456789abcdef0123456789abcdef", `{"index_case":{"name":"Max Mustermann","contacts":3}}`, nil, nil},
		{"x25519-aes256gcm-anonymous-empty", KEMX25519, AEADAES256GCM, "browser-1", seed(0x01), Anonymous, "hd-1", KindNotification, "00000000000000000000000000000000", "", nil, nil},
		{"x25519-chacha20poly1305-anonymous", KEMX25519, AEADChaCha20Poly1305, "browser-2", seed(0x02), Anonymous, "hd-1", KindRequest, "fedcba9876543210fedcba9876543210", "Grüße aus dem Browser ✓", nil, nil},
		{"mlkem768x25519-chacha20poly1305-signed-ecdsa", KEMMLKEM768X25519, AEADChaCha20Poly1305, "s1", seed(0x03), "vendor-a", "hd-1", KindRequest, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf", guests, ecdsaSigner, ca.Root},
		{"mlkem768x25519-aes128gcm-anonymous", KEMMLKEM768X25519, AEADAES128GCM, "s1", seed(0x03), Anonymous, "hd-1", KindRequest, "b0b1b2b3b4b5b6b7b8b9babbbcbdbebf", `{"index_case":{"name":"Max Mustermann","contacts":3}}`, nil, nil},
		{"mlkem768x25519-aes256gcm-signed-ed25519", KEMMLKEM768X25519, AEADAES256GCM, "s2", seed(0x04), "hd-1", "vendor-a", KindResponse, "c0c1c2c3c4c5c6c7c8c9cacbcccdcecf", `{"received":1}`, edSigner, edRoot},
	}
	f := vectorFile{Comment: []string{
		"Test vectors for the Kurier sealed envelope (docs/eps-design.md, eps/seal).",
		"Each vector: derive the recipient key with the KEM's DeriveKeyPair(ikm), check info, parse the envelope, open it to plaintext.",
		"Signed vectors: check digest, verify sig with the key of cert (ECDSA P-256 ASN.1 over the digest, or Ed25519 with the digest as message), and that cert chains to roots (with chain) at verify_time.",
		"Recipient keys: private is SerializePrivateKey (X25519: the scalar; ML-KEM-768+X25519: the 32-byte seed). For 0x647a, DeriveKeyPair follows draft-ietf-hpke-pq (labeled SHAKE256); @hpke/hybridkem-x-wing 0.7.0 derives with plain SHAKE256(ikm), so import private there instead.",
		"The keys here are published test material. Regenerate with: go test ./eps/seal -run TestVectors -update",
	}}
	for _, sp := range specs {
		priv, err := kemFor(sp.kem).DeriveKeyPair(sp.ikm)
		if err != nil {
			t.Fatal(err)
		}
		sk := pki.SealPrivateKey{ID: sp.keyID, Key: priv}
		s, err := NewSealer(SealerConfig{AEAD: sp.aead})
		if err != nil {
			t.Fatal(err)
		}
		ctx := Context{Sender: sp.sender, Recipient: sp.recipient, Service: "contacts", Kind: sp.kind, MessageID: sp.id}
		env, err := s.Seal(sk.Public(), ctx, []byte(sp.plaintext), sp.signer)
		if err != nil {
			t.Fatal(err)
		}
		wire, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		info, _ := ctx.Info()
		privBytes, err := priv.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		v := vector{Name: sp.name, KEM: sp.kem, KDF: KDFHKDFSHA256, AEAD: sp.aead, Info: hex.EncodeToString(info), Plaintext: sp.plaintext, Envelope: wire}
		v.Recipient.KeyID = sp.keyID
		v.Recipient.IKM = hex.EncodeToString(sp.ikm)
		v.Recipient.Private = hex.EncodeToString(privBytes)
		v.Recipient.Public = base64.StdEncoding.EncodeToString(priv.PublicKey().Bytes())
		v.Context.Sender, v.Context.Recipient, v.Context.Service, v.Context.Kind, v.Context.MessageID = ctx.Sender, ctx.Recipient, ctx.Service, ctx.Kind, ctx.MessageID
		if sp.signer != nil {
			id, err := pki.IDFromCert(sp.signer.Leaf)
			if err != nil {
				t.Fatal(err)
			}
			v.Signature = &vectorSig{
				Digest:     hex.EncodeToString(digest(info, env)),
				Signer:     id.String(),
				Roots:      []string{base64.StdEncoding.EncodeToString(sp.root.Raw)},
				VerifyTime: vt,
			}
		}
		f.Vectors = append(f.Vectors, v)
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
