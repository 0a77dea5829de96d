// Package pkitest issues throwaway network PKIs for tests: a root, an
// intermediate, a directory signing key, member certificates valid around the
// clock a test uses, and signed directories. Nothing it makes is written to
// disk unless a test asks for it, and nothing can expire in testdata/.
//
// Members get Ed25519 keys from kurier enroll, and members enrolled before
// that keep P-256 keys; Options.KeyType picks either, so tests can cover
// mixed networks. Without it a member gets a DefaultKey, still P-256 (see
// DefaultKey). The root and intermediate are P-256, as kurierctl ca init
// makes them.
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// CA is a test network PKI. It is safe for concurrent use.
type CA struct {
	Network string
	Root    *x509.Certificate
	Inter   *x509.Certificate
	Roots   *x509.CertPool
	// DirKey signs directories.
	DirKey ed25519.PrivateKey
	// Now is the clock certificates are issued around.
	Now time.Time

	rootKey  *ecdsa.PrivateKey
	interKey *ecdsa.PrivateKey

	mu      sync.Mutex // guards version
	version uint64
}

// NewCA makes a root and an intermediate valid a year either side of now, and
// a directory key.
func NewCA(t testing.TB, network string, now time.Time) *CA {
	t.Helper()
	ca := &CA{Network: network, Now: now, Roots: x509.NewCertPool()}
	ca.rootKey = newKey(t)
	ca.Root = sign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: network + " test root"},
		NotBefore:             now.Add(-365 * 24 * time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &ca.rootKey.PublicKey, ca.rootKey)
	ca.interKey = newKey(t)
	ca.Inter = sign(t, &x509.Certificate{
		Subject:               pkix.Name{CommonName: network + " test intermediate"},
		NotBefore:             now.Add(-365 * 24 * time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, ca.Root, &ca.interKey.PublicKey, ca.rootKey)
	ca.Roots.AddCert(ca.Root)
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca.DirKey = dk
	return ca
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// KeyType is the type of a new member key.
type KeyType int

const (
	// DefaultKey, the zero value, is Ed25519, what kurier enroll makes.
	// Certificates a browser must accept need P256.
	DefaultKey KeyType = iota
	// Ed25519 is the key kurier enroll makes.
	Ed25519
	// P256 is ECDSA P-256: the key of members enrolled before Ed25519,
	// and the key for a certificate a browser must accept (browsers do
	// not support Ed25519 in TLS).
	P256
)

func (k KeyType) String() string {
	switch k {
	case DefaultKey:
		return "default"
	case Ed25519:
		return "Ed25519"
	case P256:
		return "P-256"
	}
	return fmt.Sprintf("KeyType(%d)", int(k))
}

// NewKey returns a new member key of type k: an ed25519.PrivateKey or an
// *ecdsa.PrivateKey.
func NewKey(t testing.TB, k KeyType) crypto.Signer {
	t.Helper()
	switch k {
	case DefaultKey, Ed25519:
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return key
	case P256:
		return newKey(t)
	}
	t.Fatalf("pkitest: unknown key type %v", k)
	return nil
}

// Options change what Issue makes. Zero values give a normal member
// certificate with a new key of the DefaultKey type, valid from an hour
// before Now to a day after.
type Options struct {
	NotBefore, NotAfter time.Time
	// Key is the leaf key (ed25519.PrivateKey or *ecdsa.PrivateKey). If
	// nil, a new key of KeyType is made.
	Key crypto.Signer
	// KeyType is the type of the new key when Key is nil; DefaultKey if
	// zero.
	KeyType KeyType
	// DNSNames overrides the DNS SANs; IPs adds IP SANs.
	DNSNames []string
	IPs      []net.IP
	// NoURI leaves out the identity URI SAN.
	NoURI bool
}

// Issue returns a member certificate for role/name with a new key of the
// DefaultKey type and the intermediate in its chain.
func (ca *CA) Issue(t testing.TB, role pki.Role, name string) *tls.Certificate {
	t.Helper()
	return ca.IssueWith(t, role, name, Options{})
}

// IssueWith is Issue with options.
func (ca *CA) IssueWith(t testing.TB, role pki.Role, name string, o Options) *tls.Certificate {
	t.Helper()
	id := pki.ID{Network: ca.Network, Role: role, Name: name}
	if o.Key == nil {
		o.Key = NewKey(t, o.KeyType)
	}
	if o.NotBefore.IsZero() {
		o.NotBefore = ca.Now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = ca.Now.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: id.DNSName()},
		NotBefore:   o.NotBefore,
		NotAfter:    o.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{id.DNSName()},
		IPAddresses: o.IPs,
	}
	if o.DNSNames != nil {
		tmpl.DNSNames = o.DNSNames
	}
	if !o.NoURI {
		tmpl.URIs = append(tmpl.URIs, id.URI())
	}
	leaf := sign(t, tmpl, ca.Inter, o.Key.Public(), ca.interKey)
	return &tls.Certificate{
		Certificate: [][]byte{leaf.Raw, ca.Inter.Raw},
		PrivateKey:  o.Key,
		Leaf:        leaf,
	}
}

// Identity issues a certificate and wraps it in a pki.Identity.
func (ca *CA) Identity(t testing.TB, role pki.Role, name string) *pki.Identity {
	t.Helper()
	id, err := pki.NewIdentity(ca.Issue(t, role, name))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Member returns a directory entry for the holder of c, pinning c's key.
func Member(c *tls.Certificate, displayName string, services ...string) pki.Member {
	id, err := pki.IDFromCert(c.Leaf)
	if err != nil {
		panic("pkitest: Member needs a member certificate: " + err.Error())
	}
	m := pki.Member{Name: id.Name, Role: id.Role, DisplayName: displayName, Pins: []string{pki.Pin(c.Leaf)}, Services: services}
	if id.Role == pki.RoleRelay {
		m.Relay = &pki.RelayEndpoints{Public: "127.0.0.1:1", Pairing: "127.0.0.1:2", Control: "127.0.0.1:3", ControlTCP: "127.0.0.1:4"}
	}
	return m
}

// Directory returns an unsigned directory of members with the next version,
// valid from an hour before Now to a day after, allowing everyone to call
// every service.
func (ca *CA) Directory(members ...pki.Member) *pki.Directory {
	ca.mu.Lock()
	ca.version++
	v := ca.version
	ca.mu.Unlock()
	return &pki.Directory{
		Network:     ca.Network,
		Version:     v,
		IssuedAt:    ca.Now.Add(-time.Hour),
		ExpiresAt:   ca.Now.Add(24 * time.Hour),
		Members:     members,
		Permissions: []pki.Permission{{Caller: "*", Callee: "*", Services: []string{"*"}}},
	}
}

// Sign signs d with the directory key.
func (ca *CA) Sign(t testing.TB, d *pki.Directory) []byte {
	t.Helper()
	b, err := pki.SignDirectory(d, ca.DirKey)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Verifier returns a verifier trusting the directory key, with its clock at
// Now, loaded with d (if not nil).
func (ca *CA) Verifier(t testing.TB, d *pki.Directory) *pki.Verifier {
	t.Helper()
	v, err := pki.NewVerifier(pki.VerifierConfig{
		Network: ca.Network,
		Keys:    []ed25519.PublicKey{ca.DirKey.Public().(ed25519.PublicKey)},
		Now:     func() time.Time { return ca.Now },
	})
	if err != nil {
		t.Fatal(err)
	}
	if d != nil {
		if _, err := v.Update(ca.Sign(t, d)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

// Trust returns the roots and a verifier loaded with d.
func (ca *CA) Trust(t testing.TB, d *pki.Directory) pki.Trust {
	t.Helper()
	return pki.Trust{Roots: ca.Roots, Directory: ca.Verifier(t, d)}
}
