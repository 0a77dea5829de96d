package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

func TestParseID(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want pki.ID // zero: must be refused
	}{
		{"spiffe://kurier.example/provider/app-vendor", pki.ID{Network: "kurier.example", Role: pki.RoleProvider, Name: "app-vendor"}},
		{"spiffe://kurier.example/health-office/hd-1", pki.ID{Network: "kurier.example", Role: pki.RoleHealthOffice, Name: "hd-1"}},
		{"spiffe://net/relay/r0", pki.ID{Network: "net", Role: pki.RoleRelay, Name: "r0"}},
		{"spiffe://a-b.c9.example/provider/9", pki.ID{Network: "a-b.c9.example", Role: pki.RoleProvider, Name: "9"}},
		{"spiffe://n/provider/" + strings.Repeat("x", 63), pki.ID{Network: "n", Role: pki.RoleProvider, Name: strings.Repeat("x", 63)}},

		// Wrong scheme or not a hierarchical URI.
		{"https://kurier.example/provider/app", pki.ID{}},
		{"spiffe:kurier.example/provider/app", pki.ID{}},
		{"spiffe:/provider/app", pki.ID{}},
		{"spiffe:///provider/app", pki.ID{}},
		{"//kurier.example/provider/app", pki.ID{}},
		{"kurier.example/provider/app", pki.ID{}},
		{"", pki.ID{}},
		// Path shape.
		{"spiffe://kurier.example/provider/app/extra", pki.ID{}},
		{"spiffe://kurier.example/provider", pki.ID{}},
		{"spiffe://kurier.example/", pki.ID{}},
		{"spiffe://kurier.example", pki.ID{}},
		{"spiffe://kurier.example/provider/app/", pki.ID{}},
		{"spiffe://kurier.example//provider/app", pki.ID{}},
		{"spiffe://kurier.example/provider//app", pki.ID{}},
		{"spiffe://kurier.example/provider/../relay/app", pki.ID{}},
		{"spiffe://kurier.example/provider/./app", pki.ID{}},
		// Ports, userinfo, query, fragment.
		{"spiffe://kurier.example:443/provider/app", pki.ID{}},
		{"spiffe://kurier.example:/provider/app", pki.ID{}},
		{"spiffe://user@kurier.example/provider/app", pki.ID{}},
		{"spiffe://user:pw@kurier.example/provider/app", pki.ID{}},
		{"spiffe://@kurier.example/provider/app", pki.ID{}},
		{"spiffe://kurier.example/provider/app?x=1", pki.ID{}},
		{"spiffe://kurier.example/provider/app?", pki.ID{}},
		{"spiffe://kurier.example/provider/app#frag", pki.ID{}},
		{"spiffe://kurier.example/provider/app#", pki.ID{}},
		// Case: everything is lowercase, the scheme included.
		{"SPIFFE://kurier.example/provider/app", pki.ID{}},
		{"Spiffe://kurier.example/provider/app", pki.ID{}},
		{"spiffe://Kurier.example/provider/app", pki.ID{}},
		{"spiffe://kurier.example/Provider/app", pki.ID{}},
		{"spiffe://kurier.example/provider/App", pki.ID{}},
		// Encodings that decode to a valid name are still refused.
		{"spiffe://kurier.example/provider/ap%70", pki.ID{}},
		{"spiffe://kurier.example/provider%2Fapp", pki.ID{}},
		{"spiffe://kurier.example/%70rovider/app", pki.ID{}},
		{"spiffe://kurier.%65xample/provider/app", pki.ID{}},
		// Roles and names.
		{"spiffe://kurier.example/admin/app", pki.ID{}},
		{"spiffe://kurier.example//app", pki.ID{}},
		{"spiffe://kurier.example/provider/-app", pki.ID{}},
		{"spiffe://kurier.example/provider/app-", pki.ID{}},
		{"spiffe://kurier.example/provider/a_b", pki.ID{}},
		{"spiffe://kurier.example/provider/a.b", pki.ID{}},
		{"spiffe://kurier.example/provider/" + strings.Repeat("x", 64), pki.ID{}},
		{"spiffe://kurier.example/provider/app ", pki.ID{}},
		{" spiffe://kurier.example/provider/app", pki.ID{}},
		// Networks.
		{"spiffe://kurier.example./provider/app", pki.ID{}},
		{"spiffe://.kurier.example/provider/app", pki.ID{}},
		{"spiffe://kurier..example/provider/app", pki.ID{}},
		{"spiffe://kurier_net/provider/app", pki.ID{}},
		{"spiffe://[::1]/provider/app", pki.ID{}},
		{"spiffe://xn--kurier-ä.example/provider/app", pki.ID{}},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := pki.ParseID(tt.in)
			if tt.want.IsZero() {
				if !errors.Is(err, pki.ErrBadIdentity) || !got.IsZero() {
					t.Errorf("ParseID(%q) = %v, %v; want refusal with ErrBadIdentity", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseID(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in || got.URI().String() != tt.in {
				t.Errorf("ParseID(%q).String() = %q", tt.in, got.String())
			}
			if got.DNSName() != got.Name+"."+got.Network {
				t.Errorf("DNSName() = %q", got.DNSName())
			}
		})
	}
}

func TestNewID(t *testing.T) {
	for _, tt := range []struct {
		network string
		role    pki.Role
		name    string
		ok      bool
	}{
		{"kurier.example", pki.RoleProvider, "app", true},
		{"kurier.example", pki.RoleHealthOffice, "hd-1", true},
		{"kurier.example", pki.RoleRelay, "relay-1", true},
		{"", pki.RoleProvider, "app", false},
		{"Kurier.example", pki.RoleProvider, "app", false},
		{"kurier.example", "", "app", false},
		{"kurier.example", "Provider", "app", false},
		{"kurier.example", "admin", "app", false},
		{"kurier.example", pki.RoleProvider, "", false},
		{"kurier.example", pki.RoleProvider, "a/b", false},
	} {
		id, err := pki.NewID(tt.network, tt.role, tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("NewID(%q, %q, %q) = %v, %v; want ok=%v", tt.network, tt.role, tt.name, id, err, tt.ok)
		}
		if err == nil {
			if back, err := pki.ParseID(id.String()); err != nil || back != id {
				t.Errorf("ParseID(NewID(...).String()) = %v, %v; want %v", back, err, id)
			}
		} else if !id.IsZero() {
			t.Errorf("NewID returned %v with an error", id)
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range pki.Roles {
		if got, err := pki.ParseRole(string(r)); err != nil || got != r || !r.Valid() {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "admin", "Relay", "relay "} {
		if _, err := pki.ParseRole(s); err == nil || pki.Role(s).Valid() {
			t.Errorf("ParseRole(%q) accepted", s)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"a", true}, {"0", true}, {"hd-1", true}, {"a--b", true}, {strings.Repeat("a", 63), true},
		{"", false}, {strings.Repeat("a", 64), false}, {"-a", false}, {"a-", false}, {"-", false},
		{"A", false}, {"hD", false}, {"a_b", false}, {"a.b", false}, {"a b", false}, {"ä", false},
		{"a\x00", false}, {"a/b", false}, {"*", false},
	} {
		if err := pki.ValidName(tt.name); (err == nil) != tt.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestValidNetwork(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	// The longest valid network: 189 characters.
	longest := label63 + "." + label63 + "." + strings.Repeat("b", 61)
	if len(longest) != 189 {
		t.Fatalf("test setup: len = %d", len(longest))
	}
	for _, tt := range []struct {
		network string
		ok      bool
	}{
		{"net", true}, {"kurier.example", true}, {"a-b.c-d.e", true}, {"1.2.3", true},
		{label63 + ".example", true}, {longest, true},
		{"", false}, {longest + "b", false}, {strings.Repeat("a.", 100) + "a", false},
		{label63 + "a.example", false}, {".", false}, {"a.", false}, {".a", false}, {"a..b", false},
		{"A.example", false}, {"a_b.example", false}, {"-a.example", false}, {"a-.example", false},
		{"a.example:443", false}, {"a b", false}, {"*.example", false},
	} {
		if err := pki.ValidNetwork(tt.network); (err == nil) != tt.ok {
			t.Errorf("ValidNetwork(%q) = %v, want ok=%v", tt.network, err, tt.ok)
		}
	}
	// Every valid name in every valid network makes a valid DNS name.
	id, err := pki.NewID(longest, pki.RoleProvider, label63)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(id.DNSName()); n > 253 {
		t.Errorf("longest DNS name is %d characters, more than 253", n)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// certWith makes a real (self-signed) certificate with the given SANs and
// parses it back, so the test sees what crypto/x509 makes of them.
func certWith(t *testing.T, uris []string, dns []string, ips []net.IP, emails []string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(1),
		Subject:        pkix.Name{CommonName: "test"},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		DNSNames:       dns,
		IPAddresses:    ips,
		EmailAddresses: emails,
	}
	for _, u := range uris {
		tmpl.URIs = append(tmpl.URIs, mustURL(u))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIDFromCert(t *testing.T) {
	const (
		uri = "spiffe://kurier.example/provider/app"
		dns = "app.kurier.example"
	)
	for _, tt := range []struct {
		name   string
		uris   []string
		dns    []string
		ips    []net.IP
		emails []string
		ok     bool
	}{
		{"good", []string{uri}, []string{dns}, nil, nil, true},
		{"no URI", nil, []string{dns}, nil, nil, false},
		{"two URIs", []string{uri, "spiffe://kurier.example/provider/other"}, []string{dns}, nil, nil, false},
		{"same URI twice", []string{uri, uri}, []string{dns}, nil, nil, false},
		{"wrong scheme", []string{"https://kurier.example/provider/app"}, []string{dns}, nil, nil, false},
		{"extra segment", []string{uri + "/x"}, []string{dns}, nil, nil, false},
		{"port", []string{"spiffe://kurier.example:1/provider/app"}, []string{dns}, nil, nil, false},
		{"userinfo", []string{"spiffe://u@kurier.example/provider/app"}, []string{dns}, nil, nil, false},
		{"query", []string{uri + "?a"}, []string{dns}, nil, nil, false},
		{"empty query", []string{uri + "?"}, []string{dns}, nil, nil, false},
		{"fragment", []string{uri + "#a"}, []string{dns}, nil, nil, false},
		{"percent-encoded name", []string{"spiffe://kurier.example/provider/ap%70"}, []string{dns}, nil, nil, false},
		{"bad role", []string{"spiffe://kurier.example/admin/app"}, []string{dns}, nil, nil, false},
		{"no DNS SAN", []string{uri}, nil, nil, nil, false},
		{"DNS SAN of another name", []string{uri}, []string{"other.kurier.example"}, nil, nil, false},
		{"DNS SAN of another network", []string{uri}, []string{"app.other.example"}, nil, nil, false},
		{"DNS SAN uppercase", []string{uri}, []string{"APP.kurier.example"}, nil, nil, false},
		{"DNS SAN trailing dot", []string{uri}, []string{dns + "."}, nil, nil, false},
		{"two DNS SANs", []string{uri}, []string{dns, "www.kurier.example"}, nil, nil, false},
		{"DNS SAN twice", []string{uri}, []string{dns, dns}, nil, nil, false},
		{"IP SAN", []string{uri}, []string{dns}, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, false},
		{"IPv6 SAN", []string{uri}, []string{dns}, []net.IP{net.IPv6loopback}, nil, false},
		{"email SAN", []string{uri}, []string{dns}, nil, []string{"a@kurier.example"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := certWith(t, tt.uris, tt.dns, tt.ips, tt.emails)
			id, err := pki.IDFromCert(c)
			if !tt.ok {
				if !errors.Is(err, pki.ErrBadIdentity) || !id.IsZero() {
					t.Errorf("IDFromCert = %v, %v; want refusal with ErrBadIdentity", id, err)
				}
				return
			}
			if err != nil || id.String() != uri || id.DNSName() != dns {
				t.Errorf("IDFromCert = %v, %v; want %s", id, err, uri)
			}
		})
	}

	// And what pkitest issues.
	ca := pkitest.NewCA(t, "kurier.example", time.Now())
	if id, err := pki.IDFromCert(ca.Issue(t, pki.RoleRelay, "relay-1").Leaf); err != nil || id.String() != "spiffe://kurier.example/relay/relay-1" {
		t.Errorf("IDFromCert(pkitest relay cert) = %v, %v", id, err)
	}
	if _, err := pki.IDFromCert(ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{IPs: []net.IP{net.IPv4(10, 0, 0, 1)}}).Leaf); !errors.Is(err, pki.ErrBadIdentity) {
		t.Errorf("IDFromCert(cert with IP SAN) = %v, want ErrBadIdentity", err)
	}
}

func TestIdentityStore(t *testing.T) {
	ca := pkitest.NewCA(t, "kurier.example", time.Now())
	good := ca.Issue(t, pki.RoleProvider, "app")
	id, err := pki.NewIdentity(good)
	if err != nil {
		t.Fatal(err)
	}
	if id.Certificate() != good || id.ID().String() != "spiffe://kurier.example/provider/app" {
		t.Fatalf("Identity holds %v", id.ID())
	}

	other := ca.Issue(t, pki.RoleProvider, "app")
	noLeaf := func(c *tls.Certificate) *tls.Certificate {
		cc := *c
		cc.Leaf = nil
		return &cc
	}
	for _, tt := range []struct {
		name    string
		cert    *tls.Certificate
		wantErr error // nil: any error
	}{
		{"nil", nil, nil},
		{"no chain", &tls.Certificate{PrivateKey: good.PrivateKey}, nil},
		{"no key", &tls.Certificate{Certificate: good.Certificate, Leaf: good.Leaf}, nil},
		{"unparseable leaf", &tls.Certificate{Certificate: [][]byte{[]byte("junk")}, PrivateKey: good.PrivateKey}, nil},
		{"not a member cert (no URI)", ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{NoURI: true}), pki.ErrBadIdentity},
		{"not a member cert (no URI, leaf parsed)", noLeaf(ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{NoURI: true})), pki.ErrBadIdentity},
		{"DNS SAN mismatch", ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{DNSNames: []string{"x.kurier.example"}}), pki.ErrBadIdentity},
		{"IP SAN", ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}), pki.ErrBadIdentity},
		{"bad name", ca.Issue(t, pki.RoleProvider, "App"), pki.ErrBadIdentity},
		{"key of another certificate", &tls.Certificate{Certificate: other.Certificate, Leaf: other.Leaf, PrivateKey: good.PrivateKey}, nil},
		{"Leaf of another certificate", &tls.Certificate{Certificate: other.Certificate, Leaf: good.Leaf, PrivateKey: other.PrivateKey}, nil},
		// Leaf and key agree, but peers would be sent another certificate.
		{"chain of another certificate", &tls.Certificate{Certificate: other.Certificate, Leaf: good.Leaf, PrivateKey: good.PrivateKey}, nil},
		{"key that cannot sign", &tls.Certificate{Certificate: good.Certificate, Leaf: good.Leaf, PrivateKey: "not a key"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := id.Store(tt.cert)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) {
				t.Errorf("Store = %v, want an error (%v)", err, tt.wantErr)
			}
			if id.Certificate() != good {
				t.Errorf("a refused Store replaced the certificate")
			}
			if _, err := pki.NewIdentity(tt.cert); err == nil {
				t.Errorf("NewIdentity accepted it")
			}
		})
	}

	// A chain without Leaf is parsed.
	fresh := noLeaf(other)
	if err := id.Store(fresh); err != nil {
		t.Fatalf("Store(no Leaf) = %v", err)
	}
	if id.Certificate() != fresh || fresh.Leaf == nil || id.ID().Name != "app" {
		t.Errorf("Store(no Leaf) did not take the certificate")
	}

	// A renewal may change the identity's key but the Identity reports
	// whatever the current certificate says.
	relay := ca.Issue(t, pki.RoleRelay, "relay-9")
	if err := id.Store(relay); err != nil {
		t.Fatal(err)
	}
	if got := id.ID(); got.Role != pki.RoleRelay || got.Name != "relay-9" {
		t.Errorf("ID() = %v after Store", got)
	}
	var zero pki.Identity
	if !zero.ID().IsZero() || zero.Certificate() != nil {
		t.Errorf("zero Identity is not empty")
	}
}

// TestIdentityHotSwap swaps the certificates of both ends while handshakes
// run (run with -race), then checks that new handshakes use the new
// certificate without any restart.
func TestIdentityHotSwap(t *testing.T) {
	now := time.Now()
	ca := pkitest.NewCA(t, "kurier.example", now)
	const n = 4
	var srvCerts, cliCerts []*tls.Certificate
	for range n {
		srvCerts = append(srvCerts, ca.Issue(t, pki.RoleHealthOffice, "hd-1"))
		cliCerts = append(cliCerts, ca.Issue(t, pki.RoleProvider, "app"))
	}
	hd, app := pkitest.Member(srvCerts[0], "HD 1"), pkitest.Member(cliCerts[0], "App")
	for i := 1; i < n; i++ {
		hd.Pins = append(hd.Pins, pki.Pin(srvCerts[i].Leaf))
		app.Pins = append(app.Pins, pki.Pin(cliCerts[i].Leaf))
	}
	dir := ca.Directory(hd, app)
	srvID, err := pki.NewIdentity(srvCerts[0])
	if err != nil {
		t.Fatal(err)
	}
	cliID, err := pki.NewIdentity(cliCerts[0])
	if err != nil {
		t.Fatal(err)
	}
	srvCfg, err := pki.ServerConfig(srvID, ca.Trust(t, dir), []string{pki.ALPNPeer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := pki.ID{Network: "kurier.example", Role: pki.RoleHealthOffice, Name: "hd-1"}
	cliCfg, err := pki.ClientConfig(cliID, ca.Trust(t, dir), want, []string{pki.ALPNPeer}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cliCfg.ClientSessionCache = nil // every handshake a full one, so each sees the current certificates
	srv := serveTLS(t, srvCfg)

	pinned := map[string]bool{}
	for _, c := range srvCerts {
		pinned[string(c.Leaf.Raw)] = true
	}
	bad := ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{NoURI: true})
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; !stop.Load(); i++ {
			if err := srvID.Store(srvCerts[i%n]); err != nil {
				t.Error(err)
				return
			}
			if err := cliID.Store(cliCerts[(i+1)%n]); err != nil {
				t.Error(err)
				return
			}
			// A bad certificate in between is refused and changes nothing.
			if srvID.Store(bad) == nil {
				t.Error("Store accepted a non-member certificate")
			}
		}
	})
	var dials sync.WaitGroup
	for range 3 {
		dials.Go(func() {
			for range 8 {
				cs, greeting, err := dialTLS(t, srv.addr, cliCfg)
				if err != nil {
					t.Errorf("handshake during swap: %v", err)
					return
				}
				if !pinned[string(cs.PeerCertificates[0].Raw)] {
					t.Errorf("server presented an unexpected certificate")
				}
				if greeting != "spiffe://kurier.example/provider/app" {
					t.Errorf("server saw %q", greeting)
				}
			}
		})
	}
	dials.Wait()
	stop.Store(true)
	wg.Wait()
	drainServer(t, srv, 24)

	// The last Store is what the next handshake uses.
	last := srvCerts[n-1]
	if err := srvID.Store(last); err != nil {
		t.Fatal(err)
	}
	cs, _, err := dialTLS(t, srv.addr, cliCfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.PeerCertificates[0]; !got.Equal(last.Leaf) {
		t.Errorf("handshake after Store used serial %v, want %v", got.SerialNumber, last.Leaf.SerialNumber)
	}
	if err := <-srv.errs; err != nil {
		t.Errorf("server: %v", err)
	}
}
