package pki_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

// TestVerifierFollowsKeyRotation walks the three-step directory key
// rotation: announce the new key with the old one, sign with the new one,
// drop the old one.
func TestVerifierFollowsKeyRotation(t *testing.T) {
	ca := pkitest.NewCA(t, "kurier.test", time.Now())
	hd := ca.Issue(t, pki.RoleHealthOffice, "hd-1")
	oldKey := ca.DirKey
	_, newKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub := func(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }
	doc := func(keys ...ed25519.PrivateKey) *pki.Directory {
		d := ca.Directory(pkitest.Member(hd, "Office"))
		var pubs []ed25519.PublicKey
		for _, k := range keys {
			pubs = append(pubs, pub(k))
		}
		d.Trust = pki.NewTrustAnchors(pubs, []*x509.Certificate{ca.Root})
		return d
	}
	sign := func(d *pki.Directory, k ed25519.PrivateKey) []byte {
		b, err := pki.SignDirectory(d, k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v := ca.Verifier(t, nil) // trusts the old key only

	if _, err := v.Update(sign(doc(newKey), newKey)); !errors.Is(err, pki.ErrDirectoryUnknownKey) {
		t.Fatalf("a document signed by a key not yet announced: %v, want ErrDirectoryUnknownKey", err)
	}
	// Step 1: the old key announces the new one.
	if _, err := v.Update(sign(doc(oldKey, newKey), oldKey)); err != nil {
		t.Fatal(err)
	}
	if got := len(v.Keys()); got != 2 {
		t.Fatalf("trusts %d keys after the announcement, want 2", got)
	}
	// Step 2 and 3: the new key signs and drops the old one.
	if _, err := v.Update(sign(doc(newKey), newKey)); err != nil {
		t.Fatal(err)
	}
	if ks := v.Keys(); len(ks) != 1 || !ks[0].Equal(pub(newKey)) {
		t.Fatalf("trusts %d keys after the retirement, want only the new one", len(ks))
	}
	if _, err := v.Update(sign(doc(oldKey), oldKey)); !errors.Is(err, pki.ErrDirectoryUnknownKey) {
		t.Errorf("a document signed by the retired key: %v, want ErrDirectoryUnknownKey", err)
	}
	// A document that does not list its own signer is refused, and the key
	// set stays as it was.
	if _, err := v.Update(sign(doc(oldKey), newKey)); !errors.Is(err, pki.ErrDirectoryFormat) {
		t.Errorf("a document leaving out its signer: %v, want ErrDirectoryFormat", err)
	}
	if ks := v.Keys(); len(ks) != 1 || !ks[0].Equal(pub(newKey)) {
		t.Error("a refused document changed the trusted keys")
	}
}

// TestAdoptRoots: a member adds a root the directory lists from the CA's
// trust bundle, and never one the directory does not list.
func TestAdoptRoots(t *testing.T) {
	ca := pkitest.NewCA(t, "kurier.test", time.Now())
	next := pkitest.NewCA(t, "kurier.test", time.Now()) // the rotated-in root
	rogue := pkitest.NewCA(t, "kurier.test", time.Now())
	srvCert := ca.IssueWith(t, pki.RoleRelay, "ca", pkitest.Options{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	bundle := map[string]any{
		"network": "kurier.test",
		"roots": []string{
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})),
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: next.Root.Raw})),
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rogue.Root.Raw})),
		},
		"directory_keys": []string{base64.StdEncoding.EncodeToString(ca.DirKey.Public().(ed25519.PublicKey))},
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/kurier/v1/trust" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(bundle)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*srvCert}}
	srv.StartTLS()
	defer srv.Close()

	dir := t.TempDir()
	st := &pki.State{Dir: dir, Roots: []*x509.Certificate{ca.Root}}
	cl, err := pki.NewCAClient(pki.CAClientConfig{URL: srv.URL, Roots: ca.Roots})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{pki.Fingerprint(ca.Root), pki.Fingerprint(next.Root)}
	if got := st.MissingRoots(want); len(got) != 1 || got[0] != pki.Fingerprint(next.Root) {
		t.Fatalf("MissingRoots = %v", got)
	}
	added, err := st.AdoptRoots(t.Context(), cl, want)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 1 || added[0] != pki.Fingerprint(next.Root) || len(st.Roots) != 2 {
		t.Fatalf("adopted %v, holds %d roots; want only the listed new root", added, len(st.Roots))
	}
	b, err := os.ReadFile(filepath.Join(dir, "roots.pem"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rest := b; ; n++ {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if c, _ := x509.ParseCertificate(blk.Bytes); c != nil && c.Equal(rogue.Root) {
			t.Error("a root the directory does not list was written")
		}
	}
	if n != 2 {
		t.Errorf("roots.pem holds %d roots, want 2", n)
	}
	// A listed root the CA does not offer is an error, not a silent skip.
	if _, err := st.AdoptRoots(t.Context(), cl, []string{"00" + pki.Fingerprint(ca.Root)[2:]}); err == nil {
		t.Error("a listed root missing from the trust bundle was not reported")
	}
}
