package submit

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
)

// jsCase is a case of testdata/seal.test.mjs (see there).
type jsCase struct {
	Name      string       `json:"name"`
	To        jsTo         `json:"to"`
	Plaintext []byte       `json:"plaintext"`
	Ephemeral *jsEphemeral `json:"ephemeral"`
	Want      *jsonEnv     `json:"want"`

	key pki.SealPrivateKey // opens the envelope
	ctx seal.Context
}

// jsTo is the first argument of sealFor.
type jsTo struct {
	RecipientKey pki.SealKey `json:"recipientKey"`
	Recipient    string      `json:"recipient"`
	Service      string      `json:"service"`
	Kind         string      `json:"kind"`
	MessageID    string      `json:"messageId"`
	AEAD         uint16      `json:"aead"`
}

type jsEphemeral struct {
	Private string `json:"private"` // hex scalar
	Public  []byte `json:"public"`
}

// jsonEnv embeds an envelope as its canonical JSON.
type jsonEnv struct{ *seal.Envelope }

func (e jsonEnv) MarshalJSON() ([]byte, error) { return e.Marshal() }

func jsTarget(key pki.SealKey, ctx seal.Context, aead uint16) jsTo {
	return jsTo{RecipientKey: key, Recipient: ctx.Recipient, Service: ctx.Service, Kind: ctx.Kind, MessageID: ctx.MessageID, AEAD: aead}
}

// Known-answer envelopes: Go's crypto/hpke draws the ephemeral X25519 key
// first from the process's randomness, which testing/cryptotest makes
// repeatable, so Go can seal with an ephemeral key the test knows. But
// cryptotest swaps the randomness of the whole process, which must not
// happen while another test's TLS server uses it (the race detector sees
// it). So the test binary seals them in a child process of its own, where
// nothing else runs.

const fixedSealEnv = "KURIER_SUBMIT_FIXED_SEAL" // set in the child
const fixedSealMarker = "fixed-seals: "

// fixedSeal is an envelope Go sealed with a known ephemeral key.
type fixedSeal struct {
	Name      string          `json:"name"`
	Envelope  json.RawMessage `json:"envelope"`
	Ephemeral []byte          `json:"ephemeral"` // X25519 scalar
}

// TestFixedSealChild is not a test of its own: fixedSeals runs the test
// binary with fixedSealEnv set, and then it seals the browser vectors with
// fixed ephemeral keys and prints them.
func TestFixedSealChild(t *testing.T) {
	if os.Getenv(fixedSealEnv) != "1" {
		return
	}
	var out []fixedSeal
	for i, v := range browserVectors(t) {
		key := v.key(t)
		cryptotest.SetGlobalRandom(t, uint64(i+1))
		eph, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		cryptotest.SetGlobalRandom(t, uint64(i+1)) // the same stream again
		s, err := seal.NewSealer(seal.SealerConfig{AEAD: v.AEAD, KeyCacheSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		env, err := s.Seal(key.Public(), v.context(), []byte(v.Plaintext), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fixedSeal{Name: v.Name, Envelope: b, Ephemeral: eph.Bytes()})
	}
	b, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("\n%s%s\n", fixedSealMarker, b)
}

// knownSeal is a fixedSeal parsed: the envelope and its ephemeral key.
type knownSeal struct {
	env *seal.Envelope
	eph *ecdh.PrivateKey
}

// fixedSeals runs TestFixedSealChild in a child process and returns its
// envelopes by vector name, each checked to carry its ephemeral key.
func fixedSeals(t *testing.T) map[string]knownSeal {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestFixedSealChild$", "-test.count=1", "-test.v=false")
	cmd.Env = append(os.Environ(), fixedSealEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sealing the known-answer envelopes in a child process: %v\n%s", err, out)
	}
	_, js, ok := strings.Cut(string(out), fixedSealMarker)
	if !ok {
		t.Fatalf("the child printed no envelopes:\n%s", out)
	}
	js, _, _ = strings.Cut(js, "\n")
	var seals []fixedSeal
	if err := json.Unmarshal([]byte(js), &seals); err != nil {
		t.Fatal(err)
	}
	m := map[string]knownSeal{}
	for _, f := range seals {
		env, err := seal.Parse(f.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		eph, err := ecdh.X25519().NewPrivateKey(f.Ephemeral)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(env.Enc, eph.PublicKey().Bytes()) {
			t.Fatal("crypto/hpke no longer draws its ephemeral key first; cannot fix it for the known-answer test")
		}
		m[f.Name] = knownSeal{env: env, eph: eph}
	}
	return m
}

// TestSealJSNode runs static/kurier-seal.js under Node's WebCrypto
// (testdata/seal.test.mjs, node --test) and opens its envelopes with
// eps/seal: (1) with the ephemeral key fixed, it must reproduce byte for
// byte the envelopes Go's crypto/hpke makes for the anonymous X25519
// AES-GCM vectors of eps/seal/testdata/vectors.json (same recipient key,
// context and plaintext); (2) with a random ephemeral key, its envelopes
// to a key made here must open to the plaintext.
func TestSealJSNode(t *testing.T) {
	node := lookPath(t, "node", "install Node.js 20 or newer (Debian: apt-get install nodejs)")
	cases := sealCases(t)

	dir := t.TempDir()
	in, out := filepath.Join(dir, "cases.json"), filepath.Join(dir, "out.json")
	b, err := json.Marshal(map[string]any{"cases": cases})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, b, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap", filepath.Join("testdata", "seal.test.mjs"))
	cmd.Env = append(os.Environ(), "KURIER_SEAL_CASES="+in, "KURIER_SEAL_OUT="+out, "NODE_OPTIONS=")
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test testdata/seal.test.mjs: %v\n%s", err, output)
	}
	if !strings.Contains(string(output), "# fail 0") {
		t.Fatalf("node --test: no '# fail 0' in its report:\n%s", output)
	}
	t.Logf("node --test:\n%s", output)

	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("node wrote no envelopes: %v", err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			js, ok := got[c.Name]
			if !ok {
				t.Fatal("no envelope from node")
			}
			env, err := seal.Parse(js) // strict: canonical base64, known suite
			if err != nil {
				t.Fatalf("Parse: %v\n%s", err, js)
			}
			if c.Want != nil {
				want, _ := c.Want.Marshal()
				if !bytes.Equal(js, want) {
					t.Errorf("JavaScript sealed\n%s\nGo sealed, with the same ephemeral key,\n%s", js, want)
				}
			}
			if env.Signed() || env.KEM != seal.KEMX25519 || env.KDF != seal.KDFHKDFSHA256 || env.AEAD != c.To.AEAD || env.KeyID != c.key.ID {
				t.Errorf("envelope suite or key: %s", js)
			}
			pt, err := seal.Open(env, c.ctx, []pki.SealPrivateKey{c.key})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if !bytes.Equal(pt, c.Plaintext) {
				t.Errorf("opened %d bytes %.60q, want %d bytes %.60q", len(pt), pt, len(c.Plaintext), c.Plaintext)
			}
			// Bound to its context: another message id does not open it.
			other := c.ctx
			other.MessageID = strings.Repeat("f", 32)
			if _, err := seal.Open(env, other, []pki.SealPrivateKey{c.key}); err == nil {
				t.Error("opens under another message id")
			}
		})
	}
}

// sealCases are the cases for kurier-seal.js: the browser vectors with their
// ephemeral key fixed, and random seals to a key made here.
func sealCases(t *testing.T) []*jsCase {
	t.Helper()
	var cases []*jsCase

	fixed := fixedSeals(t)
	for _, v := range browserVectors(t) {
		key := v.key(t)
		ctx := v.context()
		info, err := ctx.Info()
		if err != nil || hex.EncodeToString(info) != v.Info {
			t.Fatalf("vector %s: info %x, %v; vector has %s", v.Name, info, err, v.Info)
		}
		// The stored envelope opens (sanity of the vector file).
		stored, err := seal.Parse(v.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := seal.Open(stored, ctx, []pki.SealPrivateKey{key}); err != nil || string(pt) != v.Plaintext {
			t.Fatalf("vector %s: stored envelope opens to %q, %v", v.Name, pt, err)
		}
		f, ok := fixed[v.Name]
		if !ok {
			t.Fatalf("no known-answer envelope for %s", v.Name)
		}
		cases = append(cases, &jsCase{
			Name:      "vector/" + v.Name,
			To:        jsTarget(key.Public(), ctx, v.AEAD),
			Plaintext: []byte(v.Plaintext),
			Ephemeral: &jsEphemeral{Private: hex.EncodeToString(f.eph.Bytes()), Public: f.eph.PublicKey().Bytes()},
			Want:      &jsonEnv{f.env},
			key:       key,
			ctx:       ctx,
		})
	}

	office := x25519Key(t, "browser-1")
	link := testLink(t, office, time.Now())
	sub := []byte(`{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-03-01T10:00:00Z","contacts":[{"first_name":"Jürgen","last_name":"Groß","phone":"+49 30 1234567","category":"household","last_contact":"2026-02-27"}],"events":[]}`)
	for _, c := range []struct {
		name string
		aead uint16
		pt   []byte
	}{
		{"random/aes128gcm-submission", seal.AEADAES128GCM, sub},
		{"random/aes256gcm-submission", seal.AEADAES256GCM, sub},
		{"random/aes128gcm-empty", seal.AEADAES128GCM, []byte{}},
		{"random/aes128gcm-300k", seal.AEADAES128GCM, bytes.Repeat([]byte("Grüße "), 300<<10/7)},
	} {
		cases = append(cases, &jsCase{
			Name: c.name, To: jsTarget(office.Public(), link.Context(), c.aead), Plaintext: c.pt,
			key: office, ctx: link.Context(),
		})
	}

	return cases
}
