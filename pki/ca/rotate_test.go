package ca

import (
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// TestRotateRootAndIntermediate enrols a member, rotates the root (which
// brings a new intermediate), restarts the server, and renews: the old
// certificate is accepted because the old root is still trusted, and the
// renewed one chains to the new root.
func TestRotateRootAndIntermediate(t *testing.T) {
	c := newTestCA(t, "kurier.test", nil)
	m, tok := addMember(t, c, pki.RoleHealthOffice, "hd-1")
	id := m.ID(c.Network())
	oldRoot := c.Roots()[0]

	ts := startServer(t, c)
	_, cert, body := ts.enrol(t, tok, id, nil)
	if cert == nil {
		t.Fatalf("enrol: %s", body)
	}
	ts.srv.Close()

	if _, err := c.RotateIntermediate(Passphrase("wrong")); err == nil {
		t.Fatal("RotateIntermediate with a wrong passphrase succeeded")
	}
	newRoot, newInter, err := c.RotateRoot(Passphrase(testPass))
	if err != nil {
		t.Fatal(err)
	}
	// What is on disk agrees with what the CA holds.
	reopened, err := Open(OpenConfig{Dir: c.Dir()})
	if err != nil {
		t.Fatal(err)
	}
	if got := reopened.Roots(); len(got) != 2 || !got[0].Equal(newRoot) || !got[1].Equal(oldRoot) || !reopened.Intermediate().Equal(newInter) {
		t.Fatalf("reopened CA: roots %d, intermediate %s", len(got), reopened.Intermediate().Subject)
	}

	ts2 := startServer(t, reopened)
	ts2.pool.AddCert(oldRoot) // the client trusts both during the overlap
	code, renewed, body := ts2.renew(t, cert)
	if code != http.StatusCreated {
		t.Fatalf("renew across a root rotation = %d %s", code, body)
	}
	if err := renewed.Leaf.CheckSignatureFrom(newInter); err != nil {
		t.Errorf("renewed certificate is not issued by the new intermediate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(newRoot)
	inters := x509.NewCertPool()
	inters.AddCert(newInter)
	if _, err := renewed.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("renewed certificate does not chain to the new root: %v", err)
	}

	// Retiring: never the current root; the old one once done.
	if err := reopened.RetireRoot(Fingerprint(newRoot)); err == nil {
		t.Error("retiring the current root succeeded")
	}
	if err := reopened.RetireRoot(Fingerprint(oldRoot)); err != nil {
		t.Fatal(err)
	}
	again, err := Open(OpenConfig{Dir: c.Dir()})
	if err != nil || len(again.Roots()) != 1 {
		t.Fatalf("after retire: %v, %d roots", err, len(again.Roots()))
	}

	// A plain intermediate rotation keeps the root.
	time.Sleep(2 * time.Millisecond) // file names carry milliseconds
	inter3, err := again.RotateIntermediate(Passphrase(testPass))
	if err != nil {
		t.Fatal(err)
	}
	if err := inter3.CheckSignatureFrom(newRoot); err != nil || inter3.Equal(newInter) {
		t.Errorf("rotated intermediate: %v", err)
	}
	if _, err := again.IntermediateSigner(Passphrase(testPass)); err != nil {
		t.Errorf("new intermediate key: %v", err)
	}
}

func TestRotateDirectoryKey(t *testing.T) {
	c := newTestCA(t, "kurier.test", nil)
	pass := Passphrase(testPass)
	oldKey, err := c.DirectoryKey(pass)
	if err != nil {
		t.Fatal(err)
	}
	oldID := c.Config().DirectoryKeyID
	if _, err := c.ActivateDirectoryKey(pass); err == nil {
		t.Error("activating without a staged key succeeded")
	}
	newID, err := c.AddDirectoryKey(pass)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddDirectoryKey(pass); err == nil {
		t.Error("staging a second key succeeded")
	}
	if len(c.DirectoryKeys()) != 2 {
		t.Fatalf("%d trusted keys after add, want 2", len(c.DirectoryKeys()))
	}
	// Still signing with the old key.
	p1, err := c.PublishDirectory(oldKey, SignOptions{})
	if err != nil || p1.KeyID != oldID {
		t.Fatalf("publish before activation: %v, key %s", err, p1.KeyID)
	}
	if err := c.RetireDirectoryKey(newID); err == nil {
		t.Error("retiring the staged key succeeded")
	}
	if got, err := c.ActivateDirectoryKey(pass); err != nil || got != newID {
		t.Fatalf("ActivateDirectoryKey = %s, %v; want %s", got, err, newID)
	}
	c2, err := Open(OpenConfig{Dir: c.Dir()})
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := c2.DirectoryKey(pass)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c2.PublishDirectory(newKey, SignOptions{})
	if err != nil || p2.KeyID != newID || p2.Directory.Version != 2 {
		t.Fatalf("publish after activation: %v, key %s", err, p2.KeyID)
	}
	// A verifier trusting both keys takes version 1 then version 2.
	v, _ := pki.NewVerifier(pki.VerifierConfig{Network: "kurier.test", Keys: c2.DirectoryKeys()})
	for _, p := range []*Published{p1, p2} {
		if _, err := v.Update(p.Signed); err != nil {
			t.Errorf("verifier refused version %d: %v", p.Directory.Version, err)
		}
	}
	if err := c2.RetireDirectoryKey(newID); err == nil {
		t.Error("retiring the signing key succeeded")
	}
	if err := c2.RetireDirectoryKey(oldID); err != nil {
		t.Fatal(err)
	}
	c3, err := Open(OpenConfig{Dir: c.Dir()})
	if err != nil || len(c3.DirectoryKeys()) != 1 || pki.DirectoryKeyID(c3.DirectoryKeys()[0]) != newID {
		t.Fatalf("after retire: %v", err)
	}
	if _, _, err := VerifyDirectory(p1.Signed, VerifyOptions{Keys: c3.DirectoryKeys(), Now: p1.Directory.IssuedAt}); err == nil {
		t.Error("a document signed by the retired key still verifies")
	}
}
