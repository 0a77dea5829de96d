package pkitest_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

func TestNewCA(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ca := pkitest.NewCA(t, "kurier.example", now)
	if !ca.Root.IsCA || !ca.Inter.IsCA {
		t.Fatal("root or intermediate is not a CA")
	}
	if err := ca.Inter.CheckSignatureFrom(ca.Root); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}
	if err := ca.Root.CheckSignatureFrom(ca.Root); err != nil {
		t.Errorf("root not self-signed: %v", err)
	}
	for _, c := range []*x509.Certificate{ca.Root, ca.Inter} {
		if !c.NotBefore.Before(now) || !c.NotAfter.After(now.Add(30*24*time.Hour)) {
			t.Errorf("%s valid %v to %v, not around %v", c.Subject, c.NotBefore, c.NotAfter, now)
		}
	}
	if len(ca.DirKey) != 64 {
		t.Errorf("directory key is %d bytes", len(ca.DirKey))
	}
	if !ca.Inter.MaxPathLenZero {
		t.Errorf("intermediate may sign CAs")
	}
}

func TestIssue(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ca := pkitest.NewCA(t, "kurier.example", now)
	c := ca.Issue(t, pki.RoleHealthOffice, "hd-1")

	if len(c.Certificate) != 2 || string(c.Certificate[0]) != string(c.Leaf.Raw) || string(c.Certificate[1]) != string(ca.Inter.Raw) {
		t.Fatal("chain is not [leaf, intermediate]")
	}
	inter := x509.NewCertPool()
	inter.AddCert(ca.Inter)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}, DNSName: "hd-1.kurier.example"}); err != nil {
			t.Errorf("leaf does not verify for %v: %v", eku, err)
		}
	}
	for _, at := range []time.Time{now.Add(-2 * time.Hour), now.Add(25 * time.Hour)} {
		if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
			t.Errorf("leaf valid at %v; want valid only from an hour before to a day after %v", at, now)
		}
	}
	id, err := pki.IDFromCert(c.Leaf)
	if err != nil || id.String() != "spiffe://kurier.example/health-office/hd-1" {
		t.Errorf("IDFromCert = %v, %v", id, err)
	}
	if _, err := pki.NewIdentity(c); err != nil {
		t.Errorf("NewIdentity refuses an issued certificate: %v", err)
	}
	if c2 := ca.Issue(t, pki.RoleHealthOffice, "hd-1"); pki.Pin(c2.Leaf) == pki.Pin(c.Leaf) || c2.Leaf.SerialNumber.Cmp(c.Leaf.SerialNumber) == 0 {
		t.Errorf("two issues share a key or serial")
	}
	if id := ca.Identity(t, pki.RoleProvider, "app").ID(); id.Name != "app" || id.Role != pki.RoleProvider {
		t.Errorf("Identity().ID() = %v", id)
	}
}

func TestIssueWith(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ca := pkitest.NewCA(t, "kurier.example", now)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	nb, na := now.Add(-48*time.Hour), now.Add(-time.Hour)
	c := ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{NotBefore: nb, NotAfter: na, Key: key})
	if !c.Leaf.NotBefore.Equal(nb) || !c.Leaf.NotAfter.Equal(na) {
		t.Errorf("validity %v-%v, want %v-%v", c.Leaf.NotBefore, c.Leaf.NotAfter, nb, na)
	}
	if !key.PublicKey.Equal(c.Leaf.PublicKey) || c.PrivateKey != key {
		t.Errorf("Options.Key not used")
	}

	c = ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{DNSNames: []string{"x.example", "y.example"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, NoURI: true})
	if len(c.Leaf.DNSNames) != 2 || c.Leaf.DNSNames[0] != "x.example" || len(c.Leaf.IPAddresses) != 1 || len(c.Leaf.URIs) != 0 {
		t.Errorf("SANs: DNS %q, IP %v, URI %v", c.Leaf.DNSNames, c.Leaf.IPAddresses, c.Leaf.URIs)
	}
	if _, err := pki.IDFromCert(c.Leaf); err == nil {
		t.Errorf("a certificate without identity URI has an identity")
	}
}

func TestIssueKeyTypes(t *testing.T) {
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ca := pkitest.NewCA(t, "kurier.example", now)
	inter := x509.NewCertPool()
	inter.AddCert(ca.Inter)
	for _, tt := range []struct {
		kt      pkitest.KeyType
		wantAlg x509.PublicKeyAlgorithm
	}{
		{pkitest.DefaultKey, x509.Ed25519},
		{pkitest.Ed25519, x509.Ed25519},
		{pkitest.P256, x509.ECDSA},
	} {
		t.Run(tt.kt.String(), func(t *testing.T) {
			c := ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{KeyType: tt.kt})
			if c.Leaf.PublicKeyAlgorithm != tt.wantAlg {
				t.Fatalf("leaf key algorithm %v, want %v", c.Leaf.PublicKeyAlgorithm, tt.wantAlg)
			}
			switch k := c.PrivateKey.(type) {
			case ed25519.PrivateKey:
				if !k.Public().(ed25519.PublicKey).Equal(c.Leaf.PublicKey) {
					t.Error("Ed25519 private key does not match the leaf")
				}
			case *ecdsa.PrivateKey:
				if k.Curve != elliptic.P256() || !k.PublicKey.Equal(c.Leaf.PublicKey) {
					t.Errorf("ECDSA private key on %s does not match the leaf", k.Curve.Params().Name)
				}
			default:
				t.Fatalf("private key is %T", c.PrivateKey)
			}
			if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("leaf does not verify: %v", err)
			}
			if _, err := pki.NewIdentity(c); err != nil {
				t.Errorf("NewIdentity refuses the certificate: %v", err)
			}
		})
	}

	// A given Ed25519 key is used as is, as a renewal keeps the key.
	key := pkitest.NewKey(t, pkitest.Ed25519)
	c := ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{Key: key, KeyType: pkitest.P256})
	if !key.Public().(ed25519.PublicKey).Equal(c.Leaf.PublicKey) {
		t.Error("Options.Key not used; KeyType must not override it")
	}
}

func TestMemberAndDirectory(t *testing.T) {
	now := time.Now()
	ca := pkitest.NewCA(t, "kurier.example", now)
	hd := ca.Issue(t, pki.RoleHealthOffice, "hd-1")
	relay := ca.Issue(t, pki.RoleRelay, "relay-1")
	hm := pkitest.Member(hd, "HD 1", "submit")
	if hm.Name != "hd-1" || hm.Role != pki.RoleHealthOffice || len(hm.Pins) != 1 || hm.Pins[0] != pki.Pin(hd.Leaf) || hm.Relay != nil {
		t.Errorf("Member(hd) = %+v", hm)
	}
	rm := pkitest.Member(relay, "Relay")
	if rm.Relay == nil {
		t.Errorf("relay member has no endpoints")
	}

	d1 := ca.Directory(hm, rm)
	d2 := ca.Directory(hm, rm)
	if d2.Version <= d1.Version {
		t.Errorf("versions %d then %d, want increasing", d1.Version, d2.Version)
	}
	if err := d1.Validate(); err != nil {
		t.Fatalf("Directory() is invalid: %v", err)
	}
	v := ca.Verifier(t, d1)
	s := v.Current()
	if s == nil || s.Dir.Version != d1.Version {
		t.Fatal("Verifier not loaded with the directory")
	}
	if _, _, err := v.Authorize(hd.Leaf); err != nil {
		t.Errorf("member refused: %v", err)
	}
	if !s.Allowed(pki.ID{Network: "kurier.example", Role: pki.RoleRelay, Name: "relay-1"}, "hd-1", "submit") {
		t.Errorf("the default permission does not let everyone call everything")
	}
	if _, err := v.Update(ca.Sign(t, d2)); err != nil {
		t.Errorf("next version refused: %v", err)
	}
	if tr := ca.Trust(t, nil); tr.Roots != ca.Roots || tr.Directory == nil || tr.Directory.Current() != nil {
		t.Errorf("Trust(nil) = %+v", tr)
	}

	defer func() {
		if recover() == nil {
			t.Errorf("Member of a non-member certificate did not panic")
		}
	}()
	pkitest.Member(ca.IssueWith(t, pki.RoleProvider, "x", pkitest.Options{NoURI: true}), "X")
}

func TestDirectoryVersionsConcurrent(t *testing.T) {
	ca := pkitest.NewCA(t, "kurier.example", time.Now())
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				v := ca.Directory().Version
				mu.Lock()
				if seen[v] {
					t.Errorf("version %d handed out twice", v)
				}
				seen[v] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}
