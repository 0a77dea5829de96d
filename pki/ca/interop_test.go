package ca

import (
	"errors"
	"os"
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
	if !got.HasPin(pki.Pin(st.Cert.Leaf), time.Now()) || len(got.SealKeys) != 2 || got.SealKeys[0].KEM != 0x647a || got.SealKeys[1].KEM != 0x0020 || st.WebSeal == nil {
		t.Fatalf("store after enrolment: pins %+v, seal keys %+v", got.Pins, got.SealKeys)
	}

	// A health office has its seal key and the X25519 key for browsers,
	// and both survive loading the state again.
	again, err := pki.LoadState(st.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.SealKeys()) != 2 || again.WebSeal.Public().ID != "w1" || again.Seal.Public().KEM != 0x647a {
		t.Fatalf("loaded state: %+v", again.SealKeys())
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
	if _, entry, err := v.Authorize(st.Cert.Leaf); err != nil || len(entry.SealKeys) != 2 {
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

// TestEnrolRefusals: a wrong root fingerprint and a token for another CA fail
// with clear errors and leave no state behind.
func TestEnrolRefusals(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	ts := startServer(t, c)
	_, tok := addMember(t, c, pki.RoleProvider, "vendor-a")
	other := newBareTestCA(t, "kurier.test")
	_, foreign := addMember(t, other, pki.RoleProvider, "vendor-a")

	for _, tt := range []struct {
		name        string
		fingerprint string
		token       Token
		want        error
	}{
		{"wrong fingerprint", other.RootFingerprint(), tok, pki.ErrFingerprint},
		{"token of another CA", c.RootFingerprint(), foreign, pki.ErrCARefused},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			_, err := pki.Enroll(t.Context(), pki.EnrollConfig{CAURL: ts.url, Fingerprint: tt.fingerprint, Token: pki.Token(tt.token), Dir: dir})
			if !errors.Is(err, tt.want) {
				t.Fatalf("Enroll = %v, want %v", err, tt.want)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused enrolment left %s behind", dir)
			}
		})
	}
	if _, err := pki.Enroll(t.Context(), pki.EnrollConfig{CAURL: ts.url, Fingerprint: "not-hex", Token: pki.Token(tok), Dir: t.TempDir()}); err == nil {
		t.Error("a malformed fingerprint was accepted")
	}
}

// TestStateAndRenewer: the state directory has private permissions and
// reloads; the renewer renews against the real CA, swaps the certificate in
// and saves it, so a restart loads the renewed one.
func TestStateAndRenewer(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	ts := startServer(t, c)
	_, tok := addMember(t, c, pki.RoleHealthOffice, "hd-1")
	dir := filepath.Join(t.TempDir(), "state")
	st, err := pki.Enroll(t.Context(), pki.EnrollConfig{CAURL: ts.url, Fingerprint: c.RootFingerprint(), Token: pki.Token(tok), Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{".": 0o700, "key.pem": 0o600, "seal.key": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, %v; want %v", name, fi.Mode().Perm(), err, want)
		}
	}
	if _, err := pki.Enroll(t.Context(), pki.EnrollConfig{CAURL: ts.url, Fingerprint: c.RootFingerprint(), Token: pki.Token(tok), Dir: dir}); !errors.Is(err, pki.ErrAlreadyEnrolled) {
		t.Errorf("second enrolment into the same dir: %v, want ErrAlreadyEnrolled", err)
	}

	id, err := pki.NewIdentity(st.Cert)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := pki.NewCAClient(pki.CAClientConfig{URL: ts.url, Roots: st.RootPool()})
	if err != nil {
		t.Fatal(err)
	}
	r, err := pki.NewRenewer(pki.RenewerConfig{Identity: id, Renew: cl.RenewCert, Save: st.SaveCert})
	if err != nil {
		t.Fatal(err)
	}
	old := id.Certificate().Leaf
	if err := r.RenewNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	renewed := id.Certificate().Leaf
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || pki.Pin(renewed) != pki.Pin(old) {
		t.Errorf("renewal: serial %v→%v, pin kept %v", old.SerialNumber, renewed.SerialNumber, pki.Pin(renewed) == pki.Pin(old))
	}
	reloaded, err := pki.LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reloaded.Cert.Leaf.Equal(renewed) {
		t.Error("a restart would load the old certificate")
	}
	// A key file others can read is refused at load.
	if err := os.Chmod(filepath.Join(dir, "key.pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadState(dir); err == nil {
		t.Error("LoadState accepted a world-readable key")
	}
}
