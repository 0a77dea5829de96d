package ca

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// TestEnrolWithMemberClient runs the member side as the runtime binary does
// (pki.Enroll, pki.CAClient) against the CA server: enrolment with seal-key
// publication, directory publication and verification, and renewal.
func TestEnrolWithMemberClient(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	ts := startServer(t, c)
	m, tok := addMember(t, c, pki.RoleHealthOffice, "hd-1")

	st, err := pki.Enroll(t.Context(), pki.EnrollConfig{
		CAURL:       ts.url,
		Fingerprint: c.RootFingerprint(),
		Token:       pki.Token(tok),
		Dir:         filepath.Join(t.TempDir(), "state"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != m.ID(c.Network()) {
		t.Fatalf("enrolled as %s, want %s", st.ID, m.ID(c.Network()))
	}
	got, err := c.Store().Get("hd-1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.HasPin(pki.Pin(st.Cert.Leaf), time.Now()) || len(got.SealKeys) != 1 || got.SealKeys[0].KEM != 0x647a {
		t.Fatalf("store after enrolment: pins %+v, seal keys %+v", got.Pins, got.SealKeys)
	}

	// The operator publishes; the member fetches, verifies and is accepted.
	key, err := c.DirectoryKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PublishDirectory(key, SignOptions{}); err != nil {
		t.Fatal(err)
	}
	cl, err := pki.NewCAClient(pki.CAClientConfig{URL: ts.url, Roots: st.RootPool()})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := cl.Directory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	v, err := st.NewVerifier(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Update(signed); err != nil {
		t.Fatalf("member refuses the published directory: %v", err)
	}
	if _, entry, err := v.Authorize(st.Cert.Leaf); err != nil || len(entry.SealKeys) != 1 {
		t.Errorf("directory Authorize(member) = %+v, %v", entry, err)
	}

	chain, err := cl.Renew(t.Context(), st.Cert)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if pki.Pin(chain[0]) != pki.Pin(st.Cert.Leaf) {
		t.Errorf("renewal changed the key")
	}

	// Suspended: the client's renewal is refused with the CA's answer.
	if _, err := c.Store().SetStatus("hd-1", StatusSuspended, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Renew(t.Context(), st.Cert); err == nil {
		t.Error("renewal of a suspended member succeeded")
	}
}
