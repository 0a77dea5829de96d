package ca

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.step.sm/crypto/pemutil"

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

// TestEnrolledKeysHandshake: kurier enroll makes an Ed25519 key, the CA
// signs its request, the key is saved as PKCS#8 PEM and loads back, and
// reloaded members do TLS 1.3 mutual authentication through pki's config
// builders with each other and with a member whose state holds a P-256 key,
// as every state did before Ed25519.
func TestEnrolledKeysHandshake(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	ts := startServer(t, c)
	enrol := func(role pki.Role, name string) (*Member, string) {
		t.Helper()
		m, tok := addMember(t, c, role, name)
		dir := filepath.Join(t.TempDir(), name)
		if _, err := pki.Enroll(t.Context(), pki.EnrollConfig{CAURL: ts.url, Fingerprint: c.RootFingerprint(), Token: pki.Token(tok), Dir: dir}); err != nil {
			t.Fatalf("enrol %s: %v", name, err)
		}
		return m, dir
	}
	// reload checks that dir's key.pem is one PKCS#8 PEM block of the
	// wanted type and that the state loads with that key.
	reload := func(dir string, want x509.PublicKeyAlgorithm) *pki.State {
		t.Helper()
		blk, rest := pem.Decode(mustRead(t, filepath.Join(dir, "key.pem")))
		if blk == nil || blk.Type != "PRIVATE KEY" || len(rest) != 0 {
			t.Fatalf("%s: key.pem is not one PKCS#8 PEM block", dir)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatalf("%s: key.pem: %v", dir, err)
		}
		st, err := pki.LoadState(dir)
		if err != nil {
			t.Fatalf("reload %s: %v", dir, err)
		}
		if got := st.Cert.Leaf.PublicKeyAlgorithm; got != want {
			t.Fatalf("%s: certificate key %v, want %v", dir, got, want)
		}
		signer, ok := k.(crypto.Signer)
		if !ok {
			t.Fatalf("%s: key.pem holds a %T, not a signing key", dir, k)
		}
		if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(st.Cert.Leaf.PublicKey) {
			t.Fatalf("%s: key.pem (%T) does not match the certificate", dir, k)
		}
		return st
	}
	_, officeDir := enrol(pki.RoleHealthOffice, "hd-1")
	office := reload(officeDir, x509.Ed25519)
	_, vendorDir := enrol(pki.RoleProvider, "vendor-a")
	vendor := reload(vendorDir, x509.Ed25519)

	// vendor-b's state as kurier wrote it before Ed25519: a P-256 key,
	// PKCS#8 PEM as pemutil writes it, and a certificate for that key.
	mb, legacyDir := enrol(pki.RoleProvider, "vendor-b")
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	code, cert, body := ts.enrolWith(t, p256, newToken(t, c, mb), mb.ID(c.Network()), nil)
	if code/100 != 2 {
		t.Fatalf("enrol vendor-b with P-256: %d %s", code, body)
	}
	keyPEM, err := pemutil.Serialize(p256, pemutil.WithPKCS8(true))
	if err != nil {
		t.Fatal(err)
	}
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	if err := os.WriteFile(filepath.Join(legacyDir, "key.pem"), pem.EncodeToMemory(keyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(legacyDir, "cert.pem"), chain, 0o644); err != nil {
		t.Fatal(err)
	}
	legacy := reload(legacyDir, x509.ECDSA)

	key, err := c.DirectoryKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := c.PublishDirectory(key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	trust := func(st *pki.State) pki.Trust {
		t.Helper()
		v, err := st.NewVerifier(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := v.Update(pub.Signed); err != nil {
			t.Fatal(err)
		}
		return pki.Trust{Roots: st.RootPool(), Directory: v}
	}
	identity := func(st *pki.State) *pki.Identity {
		t.Helper()
		id, err := pki.NewIdentity(st.Cert)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}

	for _, tt := range []struct {
		name           string
		server, client *pki.State
	}{
		{"Ed25519 server, Ed25519 client", office, vendor},
		{"Ed25519 server, P-256 client", office, legacy},
		{"P-256 server, Ed25519 client", legacy, vendor},
	} {
		t.Run(tt.name, func(t *testing.T) {
			serverID, clientID := identity(tt.server), identity(tt.client)
			scfg, err := pki.ServerConfig(serverID, trust(tt.server), []string{pki.ALPNPeer}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ccfg, err := pki.ClientConfig(clientID, trust(tt.client), serverID.ID(), []string{pki.ALPNPeer}, nil)
			if err != nil {
				t.Fatal(err)
			}
			cs, greeting, err := handshakeOnce(t, scfg, ccfg)
			if err != nil {
				t.Fatal(err)
			}
			if cs.Version != tls.VersionTLS13 || !cs.PeerCertificates[0].Equal(tt.server.Cert.Leaf) {
				t.Errorf("version %x, server certificate as issued %v; want TLS 1.3 and the issued one", cs.Version, cs.PeerCertificates[0].Equal(tt.server.Cert.Leaf))
			}
			if greeting != clientID.ID().String() {
				t.Errorf("server saw %q, want %s", greeting, clientID.ID())
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handshakeOnce serves one TLS connection on loopback with scfg, dials it
// with ccfg and returns the client's view and the peer identity the server
// wrote back. The server is gone when it returns.
func handshakeOnce(t *testing.T, scfg, ccfg *tls.Config) (tls.ConnectionState, string, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, scfg)
		if err := tc.Handshake(); err != nil {
			return // the client sees the alert
		}
		id, err := pki.PeerID(tc.ConnectionState())
		if err != nil {
			return
		}
		io.WriteString(tc, id.String()+"\n")
		io.Copy(io.Discard, tc) // until the client hangs up
	})
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), ccfg)
	if err != nil {
		return tls.ConnectionState{}, "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return c.ConnectionState(), strings.TrimSuffix(line, "\n"), err
}
