package pki_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// testSigningContext is the context string the directory format (not this
// test) fixes; a test that signs by hand must use it to get a valid document.
const testSigningContext = "kurier-directory/v1\x00"

// fixedKey is a directory signing key derived from a fixed seed, so that
// signed documents are byte-for-byte reproducible (Ed25519 is deterministic).
// It signs nothing but test documents.
func fixedKey(seed string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte("kurier pki test directory key: " + seed))
	return ed25519.NewKeyFromSeed(s[:])
}

func pubKey(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

func keyMap(keys ...ed25519.PrivateKey) map[string]ed25519.PublicKey {
	m := make(map[string]ed25519.PublicKey)
	for _, k := range keys {
		m[pki.DirectoryKeyID(pubKey(k))] = pubKey(k)
	}
	return m
}

// testPin returns a well-formed pin of a made-up key.
func testPin(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.StdEncoding.EncodeToString(sum[:])
}

var (
	goldenIssued  = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	goldenExpires = goldenIssued.Add(7 * 24 * time.Hour)
)

// goldenDirectory is a fixed document that exercises every field. Its lists
// are deliberately unsorted and its times are not in UTC and carry
// nanoseconds, so Canonical has work to do.
func goldenDirectory() *pki.Directory {
	cet := time.FixedZone("CET", 3600)
	return &pki.Directory{
		Network:   "kurier.example",
		Version:   42,
		IssuedAt:  goldenIssued.In(cet).Add(999 * time.Millisecond),
		ExpiresAt: goldenExpires.In(cet),
		Members: []pki.Member{
			{
				Name: "relay-1", Role: pki.RoleRelay, DisplayName: "Relay One",
				Pins: []string{testPin("relay-1")},
				Relay: &pki.RelayEndpoints{
					Public: "relay-1.example:443", Pairing: "relay-1.example:8443",
					Control: "relay-1.example:443", ControlTCP: "relay-1.example:8444",
					Gossip: "10.0.0.1:7946",
				},
			},
			{
				Name: "hd-berlin", Role: pki.RoleHealthOffice, DisplayName: "Gesundheitsamt Berlin <Mitte> & Co",
				Pins:     []string{testPin("hd-berlin-2"), testPin("hd-berlin-1"), testPin("hd-berlin-2")},
				SealKeys: []pki.SealKey{{ID: "k2", KEM: 0x647a, Public: []byte("second key")}, {ID: "k1", KEM: 0x0020, Public: []byte{0, 1, 2, 0xff}}},
				Services: []string{"submit", "contacts", "submit"},
			},
			{
				Name: "app-vendor", Role: pki.RoleProvider, DisplayName: "App Vendor GmbH",
				Pins:      []string{testPin("app-vendor")},
				Suspended: true,
				Services:  []string{"checkins"},
			},
		},
		Permissions: []pki.Permission{
			{Caller: "role:provider", Callee: "role:health-office", Services: []string{"submit", "contacts", "submit"}},
			{Caller: "member:hd-berlin", Callee: "*", Services: []string{"*"}},
		},
		Revoked: []pki.Revocation{
			{Member: "old-vendor", RevokedAt: goldenIssued.Add(-time.Hour).In(cet), Reason: "left the network"},
			{Member: "hd-berlin", Pins: []string{testPin("hd-berlin-0"), testPin("hd-berlin-0")}, RevokedAt: goldenIssued.Add(-2 * time.Hour)},
		},
		Trust: &pki.TrustAnchors{
			// Unsorted and duplicated on purpose: the encoding sorts them.
			DirectoryKeys: []string{
				base64.StdEncoding.EncodeToString(fixedKey("golden").Public().(ed25519.PublicKey)),
				base64.StdEncoding.EncodeToString(fixedKey("next").Public().(ed25519.PublicKey)),
				base64.StdEncoding.EncodeToString(fixedKey("golden").Public().(ed25519.PublicKey)),
			},
			Roots: []string{strings.Repeat("ab", 32), strings.Repeat("0f", 32)},
		},
	}
}

func TestDirectoryGolden(t *testing.T) {
	key := fixedKey("golden")
	got, err := pki.SignDirectory(goldenDirectory(), key)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "directory.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("SignDirectory output differs from %s (run with -update and review the diff):\ngot:\n%s\nwant:\n%s", golden, got, want)
	}

	// The golden document is accepted as it stands, and parses back to
	// what was signed.
	d, kid, err := pki.ParseSignedDirectory(want, keyMap(key))
	if err != nil {
		t.Fatalf("ParseSignedDirectory(golden) = %v", err)
	}
	if kid != pki.DirectoryKeyID(pubKey(key)) {
		t.Errorf("key id = %q, want %q", kid, pki.DirectoryKeyID(pubKey(key)))
	}
	again, err := pki.SignDirectory(d, key)
	if err != nil || !bytes.Equal(again, want) {
		t.Errorf("re-signing the parsed golden document gives different bytes (err %v)", err)
	}
}

func TestCanonical(t *testing.T) {
	d := goldenDirectory()
	b, err := d.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(b, []byte("}\n")) {
		t.Errorf("canonical body does not end in a newline")
	}

	// Times: UTC, whole seconds.
	for name, tm := range map[string]time.Time{"issued_at": d.IssuedAt, "expires_at": d.ExpiresAt, "revoked_at": d.Revoked[0].RevokedAt} {
		if tm.Location() != time.UTC || tm.Nanosecond() != 0 {
			t.Errorf("%s = %v, want UTC whole seconds", name, tm)
		}
	}
	if !d.IssuedAt.Equal(goldenIssued) || !d.ExpiresAt.Equal(goldenExpires) {
		t.Errorf("times = %v, %v; want %v, %v", d.IssuedAt, d.ExpiresAt, goldenIssued, goldenExpires)
	}
	if !bytes.Contains(b, []byte(`"issued_at": "2026-03-01T12:00:00Z"`)) {
		t.Errorf("issued_at not encoded as UTC seconds:\n%s", b)
	}

	// Lists: sorted, duplicates removed.
	names := make([]string, len(d.Members))
	for i, m := range d.Members {
		names[i] = m.Name
	}
	if want := []string{"app-vendor", "hd-berlin", "relay-1"}; !slices.Equal(names, want) {
		t.Errorf("members = %q, want %q", names, want)
	}
	hd, ok := d.Member("hd-berlin")
	if !ok {
		t.Fatal("Member(hd-berlin) not found")
	}
	if want := slices.Sorted(slices.Values([]string{testPin("hd-berlin-2"), testPin("hd-berlin-1")})); !slices.Equal(hd.Pins, want) {
		t.Errorf("pins = %q, want %q", hd.Pins, want)
	}
	if want := []string{"contacts", "submit"}; !slices.Equal(hd.Services, want) {
		t.Errorf("services = %q, want %q", hd.Services, want)
	}
	if hd.SealKeys[0].ID != "k1" || hd.SealKeys[1].ID != "k2" {
		t.Errorf("seal keys not sorted by id: %+v", hd.SealKeys)
	}
	if want := []string{"contacts", "submit"}; !slices.Equal(d.Permissions[0].Services, want) {
		t.Errorf("permission services = %q, want %q", d.Permissions[0].Services, want)
	}
	if d.Revoked[0].Member != "hd-berlin" || d.Revoked[1].Member != "old-vendor" {
		t.Errorf("revocations not sorted by member: %+v", d.Revoked)
	}
	if len(d.Revoked[0].Pins) != 1 {
		t.Errorf("duplicate revoked pins kept: %q", d.Revoked[0].Pins)
	}

	// Canonical is idempotent, and the encoding parses back to itself.
	b2, err := d.Canonical()
	if err != nil || !bytes.Equal(b, b2) {
		t.Errorf("second Canonical differs (err %v)", err)
	}
	p, err := pki.ParseDirectoryBody(b)
	if err != nil {
		t.Fatalf("ParseDirectoryBody(Canonical()) = %v", err)
	}
	b3, err := p.Canonical()
	if err != nil || !bytes.Equal(b, b3) {
		t.Errorf("parsed document re-encodes differently (err %v)", err)
	}

	// Nil lists are encoded as [], never null.
	empty := &pki.Directory{Network: "n", Version: 1, IssuedAt: goldenIssued, ExpiresAt: goldenExpires,
		Members: []pki.Member{{Name: "a", Role: pki.RoleProvider, DisplayName: "A"}}}
	eb, err := empty.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(eb, []byte("null")) {
		t.Errorf("canonical encoding contains null:\n%s", eb)
	}
	if _, err := pki.ParseDirectoryBody(eb); err != nil {
		t.Errorf("ParseDirectoryBody(empty lists) = %v", err)
	}
}

// validDirectory is a small document that passes Validate; tests break it one
// rule at a time.
func validDirectory() *pki.Directory {
	return &pki.Directory{
		Network:   "kurier.example",
		Version:   1,
		IssuedAt:  goldenIssued,
		ExpiresAt: goldenExpires,
		Members: []pki.Member{
			{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "HD 1", Pins: []string{testPin("hd-1")},
				SealKeys: []pki.SealKey{{ID: "k1", KEM: 0x647a, Public: []byte("pub")}}, Services: []string{"submit"}},
			{Name: "app", Role: pki.RoleProvider, DisplayName: "App", Pins: []string{testPin("app")}},
			{Name: "relay-1", Role: pki.RoleRelay, DisplayName: "Relay", Pins: []string{testPin("relay-1")},
				Relay: &pki.RelayEndpoints{Public: "r:443", Pairing: "r:1", Control: "r:2", ControlTCP: "r:3"}},
		},
		Permissions: []pki.Permission{{Caller: "role:provider", Callee: "member:hd-1", Services: []string{"submit"}}},
		Revoked:     []pki.Revocation{{Member: "gone", RevokedAt: goldenIssued}},
	}
}

func TestValidate(t *testing.T) {
	if err := validDirectory().Validate(); err != nil {
		t.Fatalf("valid directory: %v", err)
	}
	member := func(d *pki.Directory, name string) *pki.Member {
		for i := range d.Members {
			if d.Members[i].Name == name {
				return &d.Members[i]
			}
		}
		panic("no member " + name)
	}
	for _, tt := range []struct {
		name   string
		mutate func(d *pki.Directory)
	}{
		{"empty network", func(d *pki.Directory) { d.Network = "" }},
		{"uppercase network", func(d *pki.Directory) { d.Network = "Kurier.example" }},
		{"network with port", func(d *pki.Directory) { d.Network = "kurier.example:443" }},
		{"version 0", func(d *pki.Directory) { d.Version = 0 }},
		{"no issued_at", func(d *pki.Directory) { d.IssuedAt = time.Time{} }},
		{"expires before issued", func(d *pki.Directory) { d.ExpiresAt = d.IssuedAt.Add(-time.Second) }},
		{"expires at issued", func(d *pki.Directory) { d.ExpiresAt = d.IssuedAt }},
		{"duplicate member", func(d *pki.Directory) { d.Members = append(d.Members, d.Members[1]) }},
		{"bad member name", func(d *pki.Directory) { member(d, "app").Name = "App" }},
		{"bad role", func(d *pki.Directory) { member(d, "app").Role = "admin" }},
		{"empty role", func(d *pki.Directory) { member(d, "app").Role = "" }},
		{"empty display name", func(d *pki.Directory) { member(d, "app").DisplayName = "" }},
		{"multi-line display name", func(d *pki.Directory) { member(d, "app").DisplayName = "a\nb" }},
		{"long display name", func(d *pki.Directory) { member(d, "app").DisplayName = strings.Repeat("x", 201) }},
		{"display name not UTF-8", func(d *pki.Directory) { member(d, "app").DisplayName = "M\xfcnchen" }},
		{"reason not UTF-8", func(d *pki.Directory) { d.Revoked[0].Reason = "\xff" }},
		{"relay endpoint not UTF-8", func(d *pki.Directory) { member(d, "relay-1").Relay.Public = "r\xff:443" }},
		{"pin not base64", func(d *pki.Directory) { member(d, "app").Pins = []string{"not a pin!"} }},
		{"pin wrong length", func(d *pki.Directory) {
			member(d, "app").Pins = []string{base64.StdEncoding.EncodeToString(make([]byte, 20))}
		}},
		{"pin url-safe base64", func(d *pki.Directory) {
			member(d, "app").Pins = []string{base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb}, 32))}
		}},
		{"pin unpadded", func(d *pki.Directory) { member(d, "app").Pins = []string{strings.TrimRight(testPin("x"), "=")} }},
		{"relay without endpoints", func(d *pki.Directory) { member(d, "relay-1").Relay = nil }},
		{"endpoints on a provider", func(d *pki.Directory) {
			member(d, "app").Relay = &pki.RelayEndpoints{Public: "a:1", Pairing: "a:2", Control: "a:3", ControlTCP: "a:4"}
		}},
		{"relay endpoint without port", func(d *pki.Directory) { member(d, "relay-1").Relay.Pairing = "r" }},
		{"relay endpoint empty", func(d *pki.Directory) { member(d, "relay-1").Relay.ControlTCP = "" }},
		{"relay gossip without host", func(d *pki.Directory) { member(d, "relay-1").Relay.Gossip = ":7946" }},
		{"bad member service", func(d *pki.Directory) { member(d, "hd-1").Services = []string{"Submit"} }},
		{"reserved member service", func(d *pki.Directory) { member(d, "hd-1").Services = []string{"_ping"} }},
		{"long member service", func(d *pki.Directory) { member(d, "hd-1").Services = []string{strings.Repeat("s", 65)} }},
		{"bad caller selector", func(d *pki.Directory) { d.Permissions[0].Caller = "provider" }},
		{"caller selector unknown role", func(d *pki.Directory) { d.Permissions[0].Caller = "role:admin" }},
		{"callee selector bad member", func(d *pki.Directory) { d.Permissions[0].Callee = "member:HD" }},
		{"callee selector empty", func(d *pki.Directory) { d.Permissions[0].Callee = "" }},
		{"permission bad service", func(d *pki.Directory) { d.Permissions[0].Services = []string{"sub mit"} }},
		{"permission empty services", func(d *pki.Directory) { d.Permissions[0].Services = nil }},
		{"seal key empty id", func(d *pki.Directory) { member(d, "hd-1").SealKeys[0].ID = "" }},
		{"seal key bad id", func(d *pki.Directory) { member(d, "hd-1").SealKeys[0].ID = "K1" }},
		{"seal key long id", func(d *pki.Directory) { member(d, "hd-1").SealKeys[0].ID = strings.Repeat("k", 65) }},
		{"seal key duplicate id", func(d *pki.Directory) {
			m := member(d, "hd-1")
			m.SealKeys = append(m.SealKeys, pki.SealKey{ID: "k1", KEM: 1, Public: []byte("other")})
		}},
		{"seal key empty", func(d *pki.Directory) { member(d, "hd-1").SealKeys[0].Public = nil }},
		{"seal key oversize", func(d *pki.Directory) { member(d, "hd-1").SealKeys[0].Public = make([]byte, 4097) }},
		{"revocation bad member", func(d *pki.Directory) { d.Revoked[0].Member = "Gone" }},
		{"revocation bad pin", func(d *pki.Directory) { d.Revoked[0].Pins = []string{"x"} }},
		{"revocation long reason", func(d *pki.Directory) { d.Revoked[0].Reason = strings.Repeat("r", 201) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := validDirectory()
			tt.mutate(d)
			if err := d.Validate(); err == nil {
				t.Errorf("Validate() = nil, want an error")
			}
			// Canonical and SignDirectory validate too: nothing invalid is
			// ever signed.
			if _, err := d.Canonical(); err == nil {
				t.Errorf("Canonical() = nil error for an invalid document")
			}
			if _, err := pki.SignDirectory(d, fixedKey("validate")); err == nil {
				t.Errorf("SignDirectory() = nil error for an invalid document")
			}
		})
	}

	// Boundaries that are allowed.
	d := validDirectory()
	member(d, "hd-1").SealKeys[0].Public = make([]byte, 4096)
	member(d, "hd-1").SealKeys[0].ID = strings.Repeat("k", 64)
	member(d, "hd-1").Services = []string{"a", "s" + strings.Repeat("-_.9", 15) + "abc"}
	member(d, "app").DisplayName = strings.Repeat("ü", 100)
	member(d, "relay-1").Relay.Gossip = "[::1]:7946"
	d.Permissions[0].Services = []string{"*", "submit"}
	d.Permissions = append(d.Permissions, pki.Permission{Caller: "*", Callee: "role:relay", Services: []string{"x"}})
	if err := d.Validate(); err != nil {
		t.Errorf("boundary values refused: %v", err)
	}
}

// signBody wraps body in a signed envelope exactly as the format says,
// without any check of body: the way an attacker holding the key (or a buggy
// signer) could produce a document.
func signBody(key ed25519.PrivateKey, body []byte) []byte {
	sig := ed25519.Sign(key, append([]byte(testSigningContext), body...))
	return envelope(pki.DirectoryKeyID(pubKey(key)), sig, body)
}

func envelope(kid string, sig, body []byte) []byte {
	return fmt.Appendf(nil, "kurier-directory/v1\ned25519 %s %s\n%s", kid, base64.StdEncoding.EncodeToString(sig), body)
}

func TestSignedDirectory(t *testing.T) {
	key := fixedKey("signed")
	keys := keyMap(key)
	good, err := pki.SignDirectory(validDirectory(), key)
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := bytes.Cut(good, []byte("\n"))
	_, body, _ := bytes.Cut(rest, []byte("\n"))
	kid := pki.DirectoryKeyID(pubKey(key))

	replace := func(old, new string) []byte {
		if !bytes.Contains(good, []byte(old)) {
			t.Fatalf("%q not in signed document", old)
		}
		return bytes.Replace(good, []byte(old), []byte(new), 1)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	sigStart := len("kurier-directory/v1\ned25519 ") + len(kid) + 1

	// A body that is valid JSON for a valid directory but not canonical:
	// compact instead of indented, keys reordered, or with an extra field.
	var compact bytes.Buffer
	compact.Write(bytes.Join(bytes.Fields(body), nil))
	compact.WriteByte('\n')
	unknownField := bytes.Replace(body, []byte(`"version": 1,`), []byte(`"version": 1,
  "admin": true,`), 1)
	upperKey := bytes.Replace(body, []byte(`"version"`), []byte(`"Version"`), 1)
	dupKey := bytes.Replace(body, []byte(`"version": 1,`), []byte(`"version": 1,
  "version": 1,`), 1)
	offsetTime := bytes.Replace(body, []byte(`"2026-03-01T12:00:00Z"`), []byte(`"2026-03-01T13:00:00+01:00"`), 1)
	fracTime := bytes.Replace(body, []byte(`"2026-03-01T12:00:00Z"`), []byte(`"2026-03-01T12:00:00.000Z"`), 1)
	nullPins := bytes.Replace(body, []byte(`"services": [],`), []byte(`"services": null,`), 1)
	trailing := append(bytes.Clone(body), []byte("{}\n")...)
	noNewline := bytes.TrimSuffix(body, []byte("\n"))
	invalid := bytes.Replace(body, []byte(`"version": 1,`), []byte(`"version": 0,`), 1)
	for _, b := range [][]byte{unknownField, upperKey, dupKey, offsetTime, fracTime, nullPins, invalid} {
		if bytes.Equal(b, body) {
			t.Fatalf("test setup: replacement did not apply")
		}
	}

	other := fixedKey("other")
	for _, tt := range []struct {
		name    string
		signed  []byte
		keys    map[string]ed25519.PublicKey
		wantErr error
	}{
		{"good", good, keys, nil},
		{"good among several keys", good, keyMap(other, key), nil},
		{"tampered body byte", flip(len(good) - 10), keys, pki.ErrDirectorySignature},
		{"tampered body first byte", flip(len(good) - len(body)), keys, pki.ErrDirectorySignature},
		{"appended body byte", append(bytes.Clone(good), ' '), keys, pki.ErrDirectorySignature},
		{"truncated body", good[:len(good)-1], keys, pki.ErrDirectorySignature},
		{"tampered signature", flip(sigStart + 5), keys, pki.ErrDirectorySignature},
		{"signature of another body", envelope(kid, ed25519.Sign(key, append([]byte(testSigningContext), "{}\n"...)), body), keys, pki.ErrDirectorySignature},
		{"signature by another key under our key id", envelope(kid, ed25519.Sign(other, append([]byte(testSigningContext), body...)), body), keys, pki.ErrDirectorySignature},
		{"unknown key", good, keyMap(other), pki.ErrDirectoryUnknownKey},
		{"no keys", good, nil, pki.ErrDirectoryUnknownKey},
		{"short trusted key", good, map[string]ed25519.PublicKey{kid: pubKey(key)[:31]}, pki.ErrDirectoryUnknownKey},
		{"wrong magic", replace("kurier-directory/v1\n", "kurier-directory/v2\n"), keys, pki.ErrDirectoryFormat},
		{"magic with CR", replace("kurier-directory/v1\n", "kurier-directory/v1\r\n"), keys, pki.ErrDirectoryFormat},
		{"empty", nil, keys, pki.ErrDirectoryFormat},
		{"magic only", []byte("kurier-directory/v1"), keys, pki.ErrDirectoryFormat},
		{"magic line only", []byte("kurier-directory/v1\n"), keys, pki.ErrDirectoryFormat},
		{"no body line", good[:bytes.LastIndexByte(good[:len(good)-len(body)], '\n')], keys, pki.ErrDirectoryFormat},
		{"body only", body, keys, pki.ErrDirectoryFormat},
		{"wrong algorithm", replace("ed25519 ", "ed448 "), keys, pki.ErrDirectoryFormat},
		{"extra field in signature line", replace(kid+" ", kid+"  "), keys, pki.ErrDirectoryFormat},
		{"signature not base64", replace("ed25519 "+kid+" ", "ed25519 "+kid+" !"), keys, pki.ErrDirectoryFormat},
		{"signature unpadded", replace("==\n", "\n"), keys, pki.ErrDirectoryFormat},
		{"signature too short", envelope(kid, make([]byte, 63), body), keys, pki.ErrDirectoryFormat},
		{"signature without context", envelope(kid, ed25519.Sign(key, body), body), keys, pki.ErrDirectorySignature},
		{"signature with another context", envelope(kid, ed25519.Sign(key, append([]byte("service-directory/v1\x00"), body...)), body), keys, pki.ErrDirectorySignature},
		{"signature with context without NUL", envelope(kid, ed25519.Sign(key, append([]byte("kurier-directory/v1"), body...)), body), keys, pki.ErrDirectorySignature},
		{"non-canonical body, validly signed", signBody(key, compact.Bytes()), keys, pki.ErrDirectoryFormat},
		{"unknown field, validly signed", signBody(key, unknownField), keys, pki.ErrDirectoryFormat},
		{"field name case, validly signed", signBody(key, upperKey), keys, pki.ErrDirectoryFormat},
		{"duplicate field, validly signed", signBody(key, dupKey), keys, pki.ErrDirectoryFormat},
		{"time with offset, validly signed", signBody(key, offsetTime), keys, pki.ErrDirectoryFormat},
		{"time with fraction, validly signed", signBody(key, fracTime), keys, pki.ErrDirectoryFormat},
		{"null list, validly signed", signBody(key, nullPins), keys, pki.ErrDirectoryFormat},
		{"trailing document, validly signed", signBody(key, trailing), keys, pki.ErrDirectoryFormat},
		{"no final newline, validly signed", signBody(key, noNewline), keys, pki.ErrDirectoryFormat},
		{"invalid document, validly signed", signBody(key, invalid), keys, pki.ErrDirectoryFormat},
		{"empty body, validly signed", signBody(key, nil), keys, pki.ErrDirectoryFormat},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, gotKid, err := pki.ParseSignedDirectory(tt.signed, tt.keys)
			if tt.wantErr == nil {
				if err != nil || d == nil || gotKid != kid {
					t.Fatalf("ParseSignedDirectory = %v, %q, %v; want a directory, %q, nil", d, gotKid, err, kid)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || d != nil {
				t.Errorf("ParseSignedDirectory = %v, %v; want nil, %v", d, err, tt.wantErr)
			}
		})
	}

	// The signature covers the body exactly as received: VerifyDirectorySignature
	// hands back those bytes, not a re-encoding.
	gotBody, gotKid, err := pki.VerifyDirectorySignature(good, keys)
	if err != nil || !bytes.Equal(gotBody, body) || gotKid != kid {
		t.Errorf("VerifyDirectorySignature = %q, %q, %v; want the body, %q, nil", gotBody, gotKid, err, kid)
	}
	// A signature check alone does not look at the body.
	if _, _, err := pki.VerifyDirectorySignature(signBody(key, []byte("not json")), keys); err != nil {
		t.Errorf("VerifyDirectorySignature(validly signed non-JSON) = %v, want nil", err)
	}
}

func TestSignedDirectoryOversize(t *testing.T) {
	key := fixedKey("big")
	header := len(signBody(key, nil)) // magic and signature line
	// VerifyDirectorySignature parses nothing of the body, so any bytes do:
	// exactly at the limit a validly signed document passes it...
	atLimit := signBody(key, bytes.Repeat([]byte{' '}, pki.MaxDirectorySize-header))
	if len(atLimit) != pki.MaxDirectorySize {
		t.Fatalf("test setup: %d bytes", len(atLimit))
	}
	if _, _, err := pki.VerifyDirectorySignature(atLimit, keyMap(key)); err != nil {
		t.Errorf("validly signed document of exactly %d bytes: %v", pki.MaxDirectorySize, err)
	}
	// ...and one byte more is refused although the signature is good.
	over := signBody(key, bytes.Repeat([]byte{' '}, pki.MaxDirectorySize-header+1))
	if _, _, err := pki.VerifyDirectorySignature(over, keyMap(key)); !errors.Is(err, pki.ErrDirectoryFormat) {
		t.Errorf("oversize, validly signed: err = %v, want %v", err, pki.ErrDirectoryFormat)
	}
	if d, _, err := pki.ParseSignedDirectory(over, keyMap(key)); !errors.Is(err, pki.ErrDirectoryFormat) || d != nil {
		t.Errorf("ParseSignedDirectory(oversize) = %v, %v; want %v", d, err, pki.ErrDirectoryFormat)
	}
	// Refused before the key is even looked up: a huge document signed by
	// nobody we know costs no signature check.
	if _, _, err := pki.VerifyDirectorySignature(over, keyMap(fixedKey("other"))); !errors.Is(err, pki.ErrDirectoryFormat) {
		t.Errorf("oversize, unknown key: err = %v, want %v (size must be checked first)", err, pki.ErrDirectoryFormat)
	}
	if _, _, err := pki.VerifyDirectorySignature(make([]byte, pki.MaxDirectorySize+1), keyMap(key)); !errors.Is(err, pki.ErrDirectoryFormat) {
		t.Errorf("oversize garbage: err = %v, want %v", err, pki.ErrDirectoryFormat)
	}
}

func TestSignDirectoryBadKey(t *testing.T) {
	for _, k := range []ed25519.PrivateKey{nil, make(ed25519.PrivateKey, 32), fixedKey("x")[:63]} {
		if _, err := pki.SignDirectory(validDirectory(), k); err == nil {
			t.Errorf("SignDirectory with a %d byte key = nil error", len(k))
		}
	}
}

func TestDirectoryKeyID(t *testing.T) {
	a, b := pki.DirectoryKeyID(pubKey(fixedKey("a"))), pki.DirectoryKeyID(pubKey(fixedKey("b")))
	if len(a) != 16 || a == b || strings.ContainsAny(a, " \n") {
		t.Errorf("DirectoryKeyID = %q, %q; want two different 16-digit hex ids", a, b)
	}
}

func TestDirectoryMember(t *testing.T) {
	d := validDirectory()
	if _, err := d.Canonical(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"app", "hd-1", "relay-1"} {
		if m, ok := d.Member(name); !ok || m.Name != name {
			t.Errorf("Member(%q) = %v, %v", name, m, ok)
		}
	}
	for _, name := range []string{"", "a", "gone", "zzz"} {
		if m, ok := d.Member(name); ok {
			t.Errorf("Member(%q) = %v, want not found", name, m)
		}
	}
}

func TestValidServiceName(t *testing.T) {
	for _, tt := range []struct {
		s  string
		ok bool
	}{
		{"submit", true}, {"a", true}, {"contacts.v2", true}, {"a-b_c.d9", true}, {strings.Repeat("a", 64), true},
		{"", false}, {strings.Repeat("a", 65), false}, {"_ping", false}, {"9lives", false}, {"-x", false},
		{"Submit", false}, {"sub mit", false}, {"sub/mit", false}, {"*", false}, {"ä", false},
	} {
		if err := pki.ValidServiceName(tt.s); (err == nil) != tt.ok {
			t.Errorf("ValidServiceName(%q) = %v, want ok=%v", tt.s, err, tt.ok)
		}
	}
}

// fuzzSeeds are real signed documents for the fuzzers to start from.
func fuzzSeeds(t testing.TB) [][]byte {
	key := fixedKey("fuzz")
	var out [][]byte
	for _, d := range []*pki.Directory{goldenDirectory(), validDirectory(),
		{Network: "n", Version: 1, IssuedAt: goldenIssued, ExpiresAt: goldenExpires}} {
		b, err := pki.SignDirectory(d, key)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	if b, err := os.ReadFile(filepath.Join("testdata", "directory.golden")); err == nil {
		out = append(out, b)
	}
	return out
}

func bodyOf(signed []byte) []byte {
	_, rest, _ := bytes.Cut(signed, []byte("\n"))
	_, body, _ := bytes.Cut(rest, []byte("\n"))
	return body
}

// checkAccepted asserts what must hold of every body ParseDirectoryBody
// accepts: it is the canonical encoding of what was parsed, the parse is
// valid, it signs to an envelope that parses to the same thing, and a
// Verifier can load and use it.
func checkAccepted(t *testing.T, body []byte, d *pki.Directory) {
	t.Helper()
	if err := d.Validate(); err != nil {
		t.Fatalf("accepted body does not re-validate: %v\n%q", err, body)
	}
	canon, err := d.Canonical()
	if err != nil {
		t.Fatalf("accepted body does not re-encode: %v\n%q", err, body)
	}
	if !bytes.Equal(canon, body) {
		t.Fatalf("accepted body is not canonical:\nbody:  %q\ncanon: %q", body, canon)
	}
	key := fixedKey("fuzz")
	signed, err := pki.SignDirectory(d, key)
	if err != nil {
		t.Fatalf("accepted body cannot be signed: %v", err)
	}
	if !bytes.Equal(bodyOf(signed), body) {
		t.Fatalf("SignDirectory changed an accepted body")
	}
	now := d.IssuedAt
	v, err := pki.NewVerifier(pki.VerifierConfig{Network: d.Network, Keys: []ed25519.PublicKey{pubKey(key)}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if d.Trust != nil && !slices.Contains(d.Trust.DirectoryKeys, base64.StdEncoding.EncodeToString(pubKey(key))) {
		// A document whose trust anchors leave out the key that signed it
		// is refused: it would lock its own signer out.
		if _, err := v.Update(signed); !errors.Is(err, pki.ErrDirectoryFormat) {
			t.Fatalf("Verifier.Update(body not listing its signer) = %v, want ErrDirectoryFormat", err)
		}
		return
	}
	if _, err := v.Update(signed); err != nil {
		t.Fatalf("Verifier.Update(accepted body) = %v", err)
	}
	s := v.Current()
	for _, m := range d.Members {
		id := pki.ID{Network: d.Network, Role: m.Role, Name: m.Name}
		for _, c := range d.Members {
			for _, sv := range c.Services {
				s.Allowed(id, c.Name, sv)
			}
		}
		s.IsRevoked(m.Name, "")
	}
}

func FuzzParseDirectoryBody(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(bodyOf(s))
	}
	f.Add([]byte("{}\n"))
	f.Add([]byte("null\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := pki.ParseDirectoryBody(body)
		if err != nil {
			if d != nil || !errors.Is(err, pki.ErrDirectoryFormat) {
				t.Fatalf("ParseDirectoryBody = %v, %v; want nil and ErrDirectoryFormat", d, err)
			}
			return
		}
		checkAccepted(t, body, d)
	})
}

func FuzzParseSignedDirectory(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	key := fixedKey("fuzz")
	keys := keyMap(key)
	f.Fuzz(func(t *testing.T, signed []byte) {
		d, kid, err := pki.ParseSignedDirectory(signed, keys)
		if err == nil {
			// Only the seeds can get here: the fuzzer cannot forge a signature.
			if kid != pki.DirectoryKeyID(pubKey(key)) {
				t.Fatalf("key id %q", kid)
			}
			checkAccepted(t, bodyOf(signed), d)
			resigned, err := pki.SignDirectory(d, key)
			if err != nil || !bytes.Equal(resigned, signed) {
				t.Fatalf("accepted document does not re-sign to the same bytes (err %v)", err)
			}
		} else if d != nil {
			t.Fatalf("ParseSignedDirectory returned a directory with error %v", err)
		}

		// Sign whatever body the fuzzer made, so that the body parser is
		// reached through the envelope too, and check the two agree.
		body := bodyOf(signed)
		d2, _, err2 := pki.ParseSignedDirectory(signBody(key, body), keys)
		d3, err3 := pki.ParseDirectoryBody(body)
		if (err2 == nil) != (err3 == nil) {
			t.Fatalf("ParseSignedDirectory(signed body) = %v but ParseDirectoryBody = %v", err2, err3)
		}
		if err2 == nil {
			checkAccepted(t, body, d2)
			_ = d3
		}
	})
}

// FuzzDirectoryRoundTrip checks the other direction: whatever SignDirectory
// is willing to sign, ParseSignedDirectory accepts and reads back the same,
// so an operator can never publish a document the network refuses.
func FuzzDirectoryRoundTrip(f *testing.F) {
	f.Add("kurier.example", uint64(1), int64(1772366400), int64(3600), "hd-1", "Gesundheitsamt <Mitte> & Co", "submit", "role:provider", "k1", []byte("pub"), uint16(0x647a), "left", true, "r.example:443")
	f.Add("n", uint64(1<<63), int64(-62135596800), int64(1), "a", "\xff\u2028", "a.b", "*", "x", []byte{0}, uint16(0), "\x00\n", false, "[::1]:1")
	key := fixedKey("roundtrip")
	keys := keyMap(key)
	f.Fuzz(func(t *testing.T, network string, version uint64, issued, validity int64, name, display, service, selector, keyID string, pub []byte, kem uint16, reason string, relay bool, addr string) {
		d := &pki.Directory{
			Network:   network,
			Version:   version,
			IssuedAt:  time.Unix(issued, 0).Add(time.Duration(validity % 1e9)),
			ExpiresAt: time.Unix(issued, 0).Add(time.Duration(validity) * time.Second),
			Members: []pki.Member{{
				Name: name, Role: pki.RoleProvider, DisplayName: display, Pins: []string{testPin(name)},
				SealKeys: []pki.SealKey{{ID: keyID, KEM: kem, Public: pub}}, Services: []string{service, service},
			}},
			Permissions: []pki.Permission{{Caller: selector, Callee: "member:" + name, Services: []string{service}}},
			Revoked:     []pki.Revocation{{Member: name, Pins: []string{testPin(reason)}, RevokedAt: time.Unix(issued, 0), Reason: reason}},
		}
		if relay {
			d.Members[0].Role = pki.RoleRelay
			d.Members[0].Relay = &pki.RelayEndpoints{Public: addr, Pairing: addr, Control: addr, ControlTCP: addr, Gossip: addr}
		}
		signed, err := pki.SignDirectory(d, key)
		if err != nil {
			return // refused to sign: fine
		}
		got, _, err := pki.ParseSignedDirectory(signed, keys)
		if err != nil {
			t.Fatalf("SignDirectory output refused: %v\n%s", err, signed)
		}
		checkAccepted(t, bodyOf(signed), got)
	})
}
