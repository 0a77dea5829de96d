package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// TestServeEnrolRenewEndToEnd: enrolment, renewal and revocation for a
// member with an Ed25519 key, as kurier enroll makes, and for one with a
// P-256 key, as members enrolled before have and a stock step client makes.
func TestServeEnrolRenewEndToEnd(t *testing.T) {
	c := newTestCA(t, "kurier.test", nil)
	ts := startServer(t, c)
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		key  crypto.Signer
	}{{"hd-ed25519", edKey}, {"hd-p256", ecKey}} {
		t.Run(tt.name, func(t *testing.T) { serveEnrolRenew(t, c, ts, tt.name, tt.key) })
	}
}

func serveEnrolRenew(t *testing.T, c *CA, ts *testServer, name string, key crypto.Signer) {
	m, tok := addMember(t, c, pki.RoleHealthOffice, name)
	id := m.ID(c.Network())

	code, cert, body := ts.enrolWith(t, key, tok, id, nil)
	if code != http.StatusCreated {
		t.Fatalf("sign = %d %s", code, body)
	}
	if got, err := pki.IDFromCert(cert.Leaf); err != nil || got != id {
		t.Fatalf("IDFromCert(issued) = %v, %v; want %v", got, err, id)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.Leaf.PublicKey) {
		t.Fatalf("issued certificate has a %v key, not the requested %T", cert.Leaf.PublicKeyAlgorithm, key)
	}
	if life := time.Until(cert.Leaf.NotAfter); life < 23*time.Hour || life > 25*time.Hour {
		t.Errorf("certificate lifetime %s, want about 24h", life)
	}
	if _, err := pki.NewIdentity(cert); err != nil {
		t.Errorf("issued certificate is not a valid pki.Identity: %v", err)
	}
	opensslVerify(t, c, cert)

	// The pin and expiry were recorded.
	got, err := c.Store().Get(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Pins) != 1 || got.Pins[0].Pin != pki.Pin(cert.Leaf) || !got.Pins[0].NotAfter.Equal(cert.Leaf.NotAfter) {
		t.Fatalf("pins = %+v, want the issued certificate's", got.Pins)
	}

	// Token reuse is refused.
	if code, _, body := ts.enrol(t, tok, id, nil); code/100 != 4 {
		t.Errorf("reused token: sign = %d %s, want 4xx", code, body)
	}

	// Renewal over mTLS keeps the key and extends the recorded expiry.
	time.Sleep(1100 * time.Millisecond) // certificate times have second resolution
	code, renewed, body := ts.renew(t, cert)
	if code != http.StatusCreated {
		t.Fatalf("renew = %d %s", code, body)
	}
	if pki.Pin(renewed.Leaf) != pki.Pin(cert.Leaf) || !renewed.Leaf.NotAfter.After(cert.Leaf.NotAfter) {
		t.Errorf("renewed certificate: pin %s not after %s; want same pin, later expiry than %s", pki.Pin(renewed.Leaf), renewed.Leaf.NotAfter, cert.Leaf.NotAfter)
	}
	opensslVerify(t, c, renewed)
	got, _ = c.Store().Get(name)
	if len(got.Pins) != 1 || !got.Pins[0].NotAfter.Equal(renewed.Leaf.NotAfter) {
		t.Errorf("pins after renew = %+v, want one pin expiring %s", got.Pins, renewed.Leaf.NotAfter)
	}

	// Renew without a client certificate is refused.
	if code, _ := post(t, ts.client(t, nil), ts.url+"/1.0/renew", nil, nil); code != http.StatusBadRequest {
		t.Errorf("renew without cert = %d, want 400", code)
	}

	// Passive revocation of the renewed certificate over mTLS blocks its renewal.
	revReq := map[string]any{"serial": renewed.Leaf.SerialNumber.String(), "passive": true, "reason": "test"}
	if code, body := post(t, ts.client(t, renewed), ts.url+"/1.0/revoke", revReq, nil); code != http.StatusOK {
		t.Fatalf("revoke = %d %s", code, body)
	}
	if code, _, _ := ts.renew(t, renewed); code/100 != 4 {
		t.Errorf("renew of revoked certificate = %d, want 4xx", code)
	}
}

func opensslVerify(t *testing.T, c *CA, cert *tls.Certificate) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Log("openssl not installed; skipping openssl verify")
		return
	}
	dir := t.TempDir()
	write := func(name string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := write("root.crt", c.Roots()[0].Raw)
	inter := write("intermediate.crt", c.Intermediate().Raw)
	leaf := write("leaf.crt", cert.Certificate[0])
	if len(cert.Certificate) < 2 || !bytes.Equal(cert.Certificate[1], c.Intermediate().Raw) {
		t.Errorf("issued chain does not carry the intermediate")
	}
	out, err := exec.Command(bin, "verify", "-CAfile", root, "-untrusted", inter, leaf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Errorf("openssl verify: %v: %s", err, out)
	}
}

func TestSignRefused(t *testing.T) {
	c := newBareTestCA(t, "kurier.test") // encryption is covered by the end-to-end and init tests
	ts := startServer(t, c)
	mA, tokA := addMember(t, c, pki.RoleProvider, "app-a")
	mB, _ := addMember(t, c, pki.RoleProvider, "app-b")
	idA, idB := mA.ID(c.Network()), mB.ID(c.Network())

	// A CA whose clock runs three hours behind mints already expired tokens.
	past := func() time.Time { return time.Now().Add(-3 * time.Hour) }
	cPast, err := Open(OpenConfig{Dir: c.Dir(), Now: past})
	if err != nil {
		t.Fatal(err)
	}
	ma, _ := c.Store().Get("app-a")
	expired := newToken(t, cPast, ma)

	// Another CA with a member of the same name.
	other := newBareTestCA(t, "kurier.test")
	_, foreign := addMember(t, other, pki.RoleProvider, "app-a")

	for _, tt := range []struct {
		name  string
		token Token
		id    pki.ID
		sans  []string
	}{
		{"expired token", expired, idA, nil},
		{"token of another CA", foreign, idA, nil},
		{"token for A, CSR for B", tokA, idB, nil},
		{"extra DNS SAN", newToken(t, c, ma), idA, []string{idA.URI().String(), idA.DNSName(), "evil.example"}},
		{"extra IP SAN", newToken(t, c, ma), idA, []string{idA.URI().String(), idA.DNSName(), "10.0.0.1"}},
		{"other role URI", newToken(t, c, ma), idA, []string{pki.ID{Network: idA.Network, Role: pki.RoleHealthOffice, Name: idA.Name}.URI().String(), idA.DNSName()}},
		{"garbage token", Token("not-a-jwt"), idA, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := ts.enrol(t, tt.token, tt.id, tt.sans)
			if code/100 != 4 {
				t.Errorf("sign = %d %s, want 4xx", code, body)
			}
		})
	}
	// A post-dated certificate is refused.
	_, csr := csrFor(t, idA, nil)
	req := map[string]string{"csr": csr, "ott": string(newToken(t, c, ma)), "notBefore": time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)}
	if code, body := post(t, ts.client(t, nil), ts.url+"/1.0/sign", req, nil); code/100 != 4 {
		t.Errorf("post-dated: sign = %d %s, want 4xx", code, body)
	}
	if m, _ := c.Store().Get("app-a"); len(m.Pins) != 0 {
		t.Errorf("refused requests recorded pins: %+v", m.Pins)
	}

	// The member store itself refuses a duplicate, and changes nothing.
	_, err = c.Store().Add(NewMember{Name: "app-a", Role: pki.RoleHealthOffice, DisplayName: "Imposter"})
	if !errors.Is(err, ErrMemberExists) {
		t.Errorf("Add(duplicate) = %v, want ErrMemberExists", err)
	}
	if m, _ := c.Store().Get("app-a"); m.DisplayName != "Member app-a" || m.Role != pki.RoleProvider {
		t.Errorf("duplicate Add changed the member: %+v", m)
	}

	// Enrolment with a good token still works after all that. A CSR that
	// leaves out a SAN gets exactly the token's identity anyway.
	code, cert, body := ts.enrol(t, newToken(t, c, ma), idA, []string{idA.DNSName()})
	if code != http.StatusCreated {
		t.Fatalf("good token: sign = %d %s", code, body)
	}
	if got, err := pki.IDFromCert(cert.Leaf); err != nil || got != idA {
		t.Errorf("issued identity = %v, %v; want %v", got, err, idA)
	}
}

func TestSuspendedAndRevokedBlocked(t *testing.T) {
	c := newBareTestCA(t, "kurier.test") // encryption is covered by the end-to-end and init tests
	ts := startServer(t, c)
	ma, _ := addMember(t, c, pki.RoleProvider, "app-a")
	id := ma.ID(c.Network())
	st := c.Store()

	_, cert, body := ts.enrol(t, newToken(t, c, ma), id, nil)
	if cert == nil {
		t.Fatalf("enrol: %s", body)
	}
	tok := newToken(t, c, ma) // minted while active

	if _, err := st.SetStatus("app-a", StatusSuspended, "audit"); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := ts.enrol(t, tok, id, nil); code/100 != 4 {
		t.Errorf("suspended: sign = %d, want 4xx", code)
	}
	if code, _, _ := ts.renew(t, cert); code/100 != 4 {
		t.Errorf("suspended: renew = %d, want 4xx", code)
	}
	m, _ := st.Get("app-a")
	if _, err := (&TokenSigner{ca: c}).Token(m, 0); !errors.Is(err, ErrNotActive) {
		t.Errorf("Token(suspended) = %v, want ErrNotActive", err)
	}

	if _, err := st.SetStatus("app-a", StatusActive, ""); err != nil {
		t.Fatal(err)
	}
	code, renewed, body := ts.renew(t, cert)
	if code != http.StatusCreated {
		t.Fatalf("resumed: renew = %d %s", code, body)
	}

	if _, err := st.SetStatus("app-a", StatusRevoked, "key compromise"); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := ts.renew(t, renewed); code/100 != 4 {
		t.Errorf("revoked: renew = %d, want 4xx", code)
	}
	if _, err := st.SetStatus("app-a", StatusActive, ""); !errors.Is(err, ErrFinal) {
		t.Errorf("resume revoked = %v, want ErrFinal", err)
	}

	// The name can be reused only on request; the old key stays revoked and
	// cannot be renewed into the new member.
	if _, err := st.Add(NewMember{Name: "app-a", Role: pki.RoleProvider, DisplayName: "App A again"}); !errors.Is(err, ErrRevokedName) {
		t.Fatalf("Add(revoked name) = %v, want ErrRevokedName", err)
	}
	m2, err := st.Add(NewMember{Name: "app-a", Role: pki.RoleProvider, DisplayName: "App A again", ReuseRevokedName: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(m2.RevokedKeys) != 1 || len(m2.RevokedKeys[0].Pins) != 1 || m2.RevokedKeys[0].Pins[0] != pki.Pin(cert.Leaf) {
		t.Errorf("reused name: revoked keys = %+v, want the old pin", m2.RevokedKeys)
	}
	if code, _, _ := ts.renew(t, renewed); code/100 != 4 {
		t.Errorf("old key renewing into reused name = %d, want 4xx", code)
	}
	d, err := BuildDirectory(c.Network(), []Member{*m2}, nil, 1, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	snap := pkiSnapshot(t, c, d)
	if _, _, err := snap.Authorize(renewed.Leaf, time.Now()); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("directory Authorize(old key) = %v, want ErrRevoked", err)
	}
}

// pkiSnapshot signs d with c's directory key and loads it into a verifier.
func pkiSnapshot(t *testing.T, c *CA, d *pki.Directory) *pki.Snapshot {
	t.Helper()
	key, err := c.DirectoryKey(Passphrase(testPass))
	if err != nil {
		t.Fatal(err)
	}
	signed, err := pki.SignDirectory(d, key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := pki.NewVerifier(pki.VerifierConfig{Network: c.Network(), Keys: c.DirectoryKeys()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Update(signed); err != nil {
		t.Fatal(err)
	}
	return v.Current()
}

func TestSealKeys(t *testing.T) {
	c := newBareTestCA(t, "kurier.test") // encryption is covered by the end-to-end and init tests
	ts := startServer(t, c)
	ma, tok := addMember(t, c, pki.RoleHealthOffice, "hd-1")
	_, cert, body := ts.enrol(t, tok, ma.ID(c.Network()), nil)
	if cert == nil {
		t.Fatalf("enrol: %s", body)
	}
	pub := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 1216))
	good := `{"seal_keys":[{"id":"k1","kem":25722,"public":"` + pub + `"}]}`

	// A certificate from another CA does not chain to the root: the
	// handshake (or the request) fails.
	foreign := foreignCert(t, newBareTestCA(t, "kurier.test"), "hd-1")

	for _, tt := range []struct {
		name     string
		cert     *tls.Certificate
		body     string
		wantCode int
	}{
		{"no client certificate", nil, good, http.StatusUnauthorized},
		{"unknown field", cert, `{"seal_keys":[],"member":"hd-2"}`, http.StatusBadRequest},
		{"trailing data", cert, good + `{}`, http.StatusBadRequest},
		{"bad key id", cert, `{"seal_keys":[{"id":"K!","kem":25722,"public":"` + pub + `"}]}`, http.StatusBadRequest},
		{"duplicate key id", cert, `{"seal_keys":[{"id":"k","kem":1,"public":"AA=="},{"id":"k","kem":1,"public":"AA=="}]}`, http.StatusBadRequest},
		{"too many keys", cert, `{"seal_keys":[` + strings.Repeat(`{"id":"a","kem":1,"public":"AA=="},`, 4) + `{"id":"e","kem":1,"public":"AA=="}]}`, http.StatusBadRequest},
		{"empty key", cert, `{"seal_keys":[{"id":"k","kem":1,"public":""}]}`, http.StatusBadRequest},
		{"too large", cert, `{"seal_keys":[{"id":"k","kem":1,"public":"` + strings.Repeat("A", 70<<10) + `"}]}`, http.StatusBadRequest},
		{"good", cert, good, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := ts.client(t, tt.cert).Post(ts.url+"/kurier/v1/seal-keys", "application/json", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode {
				t.Errorf("POST seal-keys = %d %s, want %d", resp.StatusCode, b, tt.wantCode)
			}
		})
	}
	m, _ := c.Store().Get("hd-1")
	if len(m.SealKeys) != 1 || m.SealKeys[0].ID != "k1" || m.SealKeys[0].KEM != 25722 || len(m.SealKeys[0].Public) != 1216 {
		t.Errorf("stored seal keys = %+v", m.SealKeys)
	}

	// A certificate that does not chain to the network root is refused.
	resp, err := ts.client(t, foreign).Post(ts.url+"/kurier/v1/seal-keys", "application/json", strings.NewReader(good))
	if err == nil {
		resp.Body.Close()
		t.Errorf("foreign certificate: POST seal-keys = %d, want a TLS failure", resp.StatusCode)
	}

	// A suspended member cannot publish keys.
	if _, err := c.Store().SetStatus("hd-1", StatusSuspended, ""); err != nil {
		t.Fatal(err)
	}
	if code, body := postRaw(t, ts.client(t, cert), ts.url+"/kurier/v1/seal-keys", good); code != http.StatusForbidden {
		t.Errorf("suspended: POST seal-keys = %d %s, want 403", code, body)
	}
}

func postRaw(t *testing.T, hc *http.Client, url, body string) (int, []byte) {
	t.Helper()
	resp, err := hc.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// foreignCert issues a member certificate from another CA's intermediate
// directly (no server), for name.
func foreignCert(t *testing.T, other *CA, name string) *tls.Certificate {
	t.Helper()
	ts := startServer(t, other)
	m, tok := addMember(t, other, pki.RoleHealthOffice, name)
	_, cert, body := ts.enrol(t, tok, m.ID(other.Network()), nil)
	if cert == nil {
		t.Fatalf("enrol at other CA: %s", body)
	}
	return cert
}

func TestTrustAndDirectoryEndpoints(t *testing.T) {
	c := newBareTestCA(t, "kurier.test") // encryption is covered by the end-to-end and init tests
	ts := startServer(t, c)
	hc := ts.client(t, nil)

	resp, err := hc.Get(ts.url + "/kurier/v1/trust")
	if err != nil {
		t.Fatal(err)
	}
	var trust trustResponse
	err = json.NewDecoder(resp.Body).Decode(&trust)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if trust.Network != "kurier.test" || len(trust.Roots) != 1 || len(trust.DirectoryKeys) != 1 {
		t.Fatalf("trust = %+v", trust)
	}
	blk, _ := pem.Decode([]byte(trust.Roots[0]))
	if blk == nil || !bytes.Equal(blk.Bytes, c.Roots()[0].Raw) {
		t.Errorf("trust root is not the CA root")
	}
	if trust.DirectoryKeys[0] != base64.StdEncoding.EncodeToString(c.DirectoryKeys()[0]) {
		t.Errorf("trust directory key = %s", trust.DirectoryKeys[0])
	}

	// /health and /root/{sha} from smallstep.
	for _, p := range []string{"/health", "/1.0/health", "/roots", "/root/" + c.RootFingerprint()} {
		resp, err := hc.Get(ts.url + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Errorf("GET %s = %d", p, resp.StatusCode)
		}
	}

	get := func() (int, string, []byte) {
		resp, err := hc.Get(ts.url + "/kurier/v1/directory")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}
	if code, ct, _ := get(); code != http.StatusNotFound || ct != "application/json" {
		t.Errorf("no directory yet: GET = %d %s, want 404 JSON", code, ct)
	}
	key, err := c.DirectoryKey(Passphrase(testPass))
	if err != nil {
		t.Fatal(err)
	}
	addMember(t, c, pki.RoleProvider, "app-a")
	p1, err := c.PublishDirectory(key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	code, ct, b := get()
	if code != http.StatusOK || ct != DirectoryContentType || !bytes.Equal(b, p1.Signed) {
		t.Fatalf("GET directory = %d %s %q", code, ct, b)
	}
	p2, err := c.PublishDirectory(key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p2.Directory.Version != p1.Directory.Version+1 {
		t.Errorf("versions %d then %d", p1.Directory.Version, p2.Directory.Version)
	}
	if _, _, b := get(); !bytes.Equal(b, p2.Signed) {
		t.Errorf("GET directory after republish served the old version")
	}

	// A tampered file is not served; the last good one is.
	if err := os.WriteFile(p2.Path, bytes.Replace(p2.Signed, []byte("Member app-a"), []byte("Member app-b"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, b := get(); code != http.StatusOK || !bytes.Equal(b, p2.Signed) {
		t.Errorf("tampered file: GET = %d, served tampered bytes: %v", code, !bytes.Equal(b, p2.Signed))
	}
}

func TestRevokeKey(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	ts := startServer(t, c)
	m, tok := addMember(t, c, pki.RoleProvider, "app-a")
	id := m.ID(c.Network())
	key, csr := csrFor(t, id, nil)
	var resp signResponse
	if code, body := post(t, ts.client(t, nil), ts.url+"/1.0/sign", map[string]string{"csr": csr, "ott": string(tok)}, &resp); code != http.StatusCreated {
		t.Fatalf("sign = %d %s", code, body)
	}
	cert := resp.tlsCert(t, key)
	pin := pki.Pin(cert.Leaf)

	if _, err := c.Store().RevokeKey("app-a", "AAAA", "x"); !errors.Is(err, ErrUnknownPin) {
		t.Errorf("RevokeKey(unknown pin) = %v", err)
	}
	m, err := c.Store().RevokeKey("app-a", pin, "laptop stolen")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Pins) != 0 || len(m.RevokedKeys) != 1 || m.RevokedKeys[0].Pins[0] != pin || m.Status != StatusActive {
		t.Errorf("after RevokeKey: %+v", m)
	}
	// The key is neither renewed nor certified again, even with a new token.
	if code, _, _ := ts.renew(t, cert); code/100 != 4 {
		t.Errorf("renew with a revoked key = %d, want 4xx", code)
	}
	if code, body := post(t, ts.client(t, nil), ts.url+"/1.0/sign", map[string]string{"csr": csr, "ott": string(newToken(t, c, m))}, nil); code/100 != 4 {
		t.Errorf("sign for a revoked key = %d %s, want 4xx", code, body)
	}
	// A new key enrols fine; the directory lists the old key as revoked.
	if code, _, body := ts.enrol(t, newToken(t, c, m), id, nil); code != http.StatusCreated {
		t.Errorf("sign with a new key = %d %s", code, body)
	}
	m, _ = c.Store().Get("app-a")
	d, err := BuildDirectory(c.Network(), []Member{*m}, nil, 1, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Members) != 1 || len(d.Members[0].Pins) != 1 || d.Members[0].Pins[0] == pin || len(d.Revoked) != 1 || d.Revoked[0].Pins[0] != pin {
		t.Errorf("directory: members %+v, revoked %+v", d.Members, d.Revoked)
	}
	if _, _, err := pkiSnapshot(t, c, d).Authorize(cert.Leaf, time.Now()); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("Authorize(revoked key) = %v, want ErrRevoked", err)
	}
}
