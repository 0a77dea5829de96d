package seal

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

const network = "kurier.test"

// t0 is the clock the tests' certificates and directories are made around.
var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// testNet is a small network: an office hd-1 with two seal keys (s1
// ML-KEM-768+X25519, s2 likewise, x1 DHKEM X25519 for browsers), vendors
// vendor-a and vendor-b with ECDSA certificates, vendor-ed with an Ed25519
// certificate from a second root, all in the directory with their keys
// pinned.
type testNet struct {
	ca    *pkitest.CA
	clk   *clock
	roots *x509.CertPool
	certs map[string]*tls.Certificate
	keys  map[string][]pki.SealPrivateKey // by member
	dir   *pki.Verifier
}

func newNet(t testing.TB) *testNet {
	t.Helper()
	n := &testNet{
		ca:    pkitest.NewCA(t, network, t0),
		clk:   &clock{t: t0},
		roots: x509.NewCertPool(),
		certs: map[string]*tls.Certificate{},
		keys:  map[string][]pki.SealPrivateKey{},
	}
	n.roots.AddCert(n.ca.Root)
	n.certs["hd-1"] = n.ca.Issue(t, pki.RoleHealthOffice, "hd-1")
	n.certs["vendor-a"] = n.ca.IssueWith(t, pki.RoleProvider, "vendor-a", pkitest.Options{KeyType: pkitest.P256})
	n.certs["vendor-b"] = n.ca.IssueWith(t, pki.RoleProvider, "vendor-b", pkitest.Options{KeyType: pkitest.P256})
	edCert, edRoot := issueEd25519(t, pki.RoleProvider, "vendor-ed", t0)
	n.certs["vendor-ed"] = edCert
	n.roots.AddCert(edRoot)
	n.keys["hd-1"] = []pki.SealPrivateKey{
		newSealKey(t, "s1", KEMMLKEM768X25519),
		newSealKey(t, "s2", KEMMLKEM768X25519),
		newSealKey(t, "x1", KEMX25519),
	}
	for _, m := range []string{"vendor-a", "vendor-b", "vendor-ed"} {
		n.keys[m] = []pki.SealPrivateKey{newSealKey(t, "s1", KEMMLKEM768X25519)}
	}
	v, err := pki.NewVerifier(pki.VerifierConfig{
		Network: network,
		Keys:    []ed25519.PublicKey{n.ca.DirKey.Public().(ed25519.PublicKey)},
		Now:     n.clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	n.dir = v
	n.publish(t, nil)
	return n
}

// publish signs and loads a new directory listing every member, after
// edit (if not nil) has changed it.
func (n *testNet) publish(t testing.TB, edit func(*pki.Directory)) {
	t.Helper()
	var members []pki.Member
	for name, c := range n.certs {
		m := pkitest.Member(c, name, "contacts")
		for _, k := range n.keys[name] {
			m.SealKeys = append(m.SealKeys, k.Public())
		}
		members = append(members, m)
	}
	slices.SortFunc(members, func(a, b pki.Member) int { return strings.Compare(a.Name, b.Name) })
	d := n.ca.Directory(members...)
	if edit != nil {
		edit(d)
	}
	if _, err := n.dir.Update(n.ca.Sign(t, d)); err != nil {
		t.Fatal(err)
	}
}

func (n *testNet) trust() pki.Trust { return pki.Trust{Roots: n.roots, Directory: n.dir} }

// verifier returns a Verifier on the net's clock.
func (n *testNet) verifier(t testing.TB, anon bool) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifyOptions{Trust: n.trust(), AllowAnonymous: anon, Now: n.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// key returns member's seal key id as its directory entry lists it.
func (n *testNet) key(t testing.TB, member, id string) pki.SealKey {
	t.Helper()
	m, ok := n.dir.Current().Dir.Member(member)
	if !ok {
		t.Fatalf("no member %s", member)
	}
	for _, k := range m.SealKeys {
		if k.ID == id {
			return k
		}
	}
	t.Fatalf("member %s has no seal key %s", member, id)
	return pki.SealKey{}
}

func newSealKey(t testing.TB, id string, kem uint16) pki.SealPrivateKey {
	t.Helper()
	k, err := kemFor(kem).GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return pki.SealPrivateKey{ID: id, Key: k}
}

// issueEd25519 makes a root of its own and an Ed25519 member certificate
// under it, valid around now: a signer from a second root.
func issueEd25519(t testing.TB, role pki.Role, name string, now time.Time) (*tls.Certificate, *x509.Certificate) {
	t.Helper()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: network + " ed25519 test root"},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := pki.ID{Network: network, Role: role, Name: name}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: id.DNSName()},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{id.DNSName()},
		URIs:         []*url.URL{id.URI()},
	}, root, pub, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: priv, Leaf: leaf}, root
}

// ctxFor is a request context from sender to recipient.
func ctxFor(sender, recipient string) Context {
	return Context{Sender: sender, Recipient: recipient, Service: "contacts", Kind: KindRequest, MessageID: "00112233445566778899aabbccddeeff"}
}
