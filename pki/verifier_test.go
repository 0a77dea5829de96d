package pki_test

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

// clock is a settable clock for a Verifier.
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

func newTestVerifier(t testing.TB, clk *clock, keys ...ed25519.PrivateKey) *pki.Verifier {
	t.Helper()
	var pubs []ed25519.PublicKey
	for _, k := range keys {
		pubs = append(pubs, pubKey(k))
	}
	v, err := pki.NewVerifier(pki.VerifierConfig{Network: "kurier.example", Keys: pubs, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// versioned returns validDirectory at version v, issued at issued and valid
// for a day.
func versioned(v uint64, issued time.Time) *pki.Directory {
	d := validDirectory()
	d.Version = v
	d.IssuedAt = issued
	d.ExpiresAt = issued.Add(24 * time.Hour)
	return d
}

func mustSign(t testing.TB, d *pki.Directory, key ed25519.PrivateKey) []byte {
	t.Helper()
	b, err := pki.SignDirectory(d, key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestNewVerifier(t *testing.T) {
	k := pubKey(fixedKey("v"))
	for _, tt := range []struct {
		name string
		cfg  pki.VerifierConfig
	}{
		{"no network", pki.VerifierConfig{Keys: []ed25519.PublicKey{k}}},
		{"bad network", pki.VerifierConfig{Network: "Kurier", Keys: []ed25519.PublicKey{k}}},
		{"no keys", pki.VerifierConfig{Network: "kurier.example"}},
		{"short key", pki.VerifierConfig{Network: "kurier.example", Keys: []ed25519.PublicKey{k[:16]}}},
		{"one good one bad key", pki.VerifierConfig{Network: "kurier.example", Keys: []ed25519.PublicKey{k, nil}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := pki.NewVerifier(tt.cfg); err == nil {
				t.Errorf("NewVerifier = %v, nil; want an error", v)
			}
		})
	}
	// Now defaults to time.Now.
	v, err := pki.NewVerifier(pki.VerifierConfig{Network: "kurier.example", Keys: []ed25519.PublicKey{k}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Network() != "kurier.example" {
		t.Errorf("Network() = %q", v.Network())
	}
	if _, err := v.Update(mustSign(t, versioned(1, time.Now().Add(-time.Minute)), fixedKey("v"))); err != nil {
		t.Errorf("Update with the default clock: %v", err)
	}
}

func TestVerifierUpdate(t *testing.T) {
	key := fixedKey("verifier")
	t0 := goldenIssued
	clk := &clock{t: t0.Add(time.Hour)}
	v := newTestVerifier(t, clk, key)

	if v.Current() != nil {
		t.Fatal("new verifier has a current directory")
	}
	if _, ok := v.Age(); ok {
		t.Error("Age() ok with no directory")
	}

	v1 := mustSign(t, versioned(1, t0), key)
	if changed, err := v.Update(v1); !changed || err != nil {
		t.Fatalf("Update(v1) = %v, %v; want true, nil", changed, err)
	}
	s1 := v.Current()
	if s1.Dir.Version != 1 || string(s1.Signed) != string(v1) || s1.KeyID != pki.DirectoryKeyID(pubKey(key)) {
		t.Fatalf("Current() = version %d, key %q", s1.Dir.Version, s1.KeyID)
	}
	// The snapshot keeps its own copy of the bytes.
	v1[len(v1)-3] ^= 1
	if string(s1.Signed) == string(v1) {
		t.Error("snapshot aliases the caller's buffer")
	}
	v1[len(v1)-3] ^= 1

	// The same document again: accepted, no change.
	if changed, err := v.Update(v1); changed || err != nil {
		t.Errorf("Update(v1 again) = %v, %v; want false, nil", changed, err)
	}
	if v.Current() != s1 {
		t.Error("Update(v1 again) replaced the snapshot")
	}

	// Same version, other contents: refused.
	conflict := versioned(1, t0)
	conflict.Members[0].DisplayName = "Someone else"
	if changed, err := v.Update(mustSign(t, conflict, key)); changed || !errors.Is(err, pki.ErrDirectoryConflict) {
		t.Errorf("Update(v1 other bytes) = %v, %v; want false, %v", changed, err, pki.ErrDirectoryConflict)
	}

	v3 := mustSign(t, versioned(3, t0), key)
	if changed, err := v.Update(v3); !changed || err != nil {
		t.Fatalf("Update(v3) = %v, %v; want true, nil", changed, err)
	}
	s3 := v.Current()

	later := func(version uint64, mutate func(d *pki.Directory)) []byte {
		d := versioned(version, t0)
		mutate(d)
		return mustSign(t, d, key)
	}
	for _, tt := range []struct {
		name    string
		signed  []byte
		wantErr error
	}{
		{"rollback to v2", mustSign(t, versioned(2, t0), key), pki.ErrDirectoryRollback},
		{"rollback to v1 (once accepted)", v1, pki.ErrDirectoryRollback},
		{"expired", later(4, func(d *pki.Directory) { d.ExpiresAt = clk.Now().Add(-time.Second) }), pki.ErrDirectoryExpired},
		{"expires now", later(4, func(d *pki.Directory) { d.ExpiresAt = clk.Now() }), pki.ErrDirectoryExpired},
		{"not yet valid", later(4, func(d *pki.Directory) {
			d.IssuedAt = clk.Now().Add(5*time.Minute + time.Second)
			d.ExpiresAt = d.IssuedAt.Add(time.Hour)
		}), pki.ErrDirectoryNotYetValid},
		{"other network", later(4, func(d *pki.Directory) { d.Network = "other.example" }), pki.ErrDirectoryNetwork},
		{"unknown key", mustSign(t, versioned(4, t0), fixedKey("mallory")), pki.ErrDirectoryUnknownKey},
		{"signature over other bytes", envelope(pki.DirectoryKeyID(pubKey(key)), ed25519.Sign(key, []byte("x")), bodyOf(mustSign(t, versioned(4, t0), key))), pki.ErrDirectorySignature},
		{"tampered", func() []byte {
			b := mustSign(t, versioned(4, t0), key)
			b[len(b)-5] ^= 1
			return b
		}(), pki.ErrDirectorySignature},
		{"non-canonical, validly signed", signBody(key, append(bodyOf(mustSign(t, versioned(4, t0), key)), '\n')), pki.ErrDirectoryFormat},
		{"garbage", []byte("hello"), pki.ErrDirectoryFormat},
	} {
		t.Run(tt.name, func(t *testing.T) {
			changed, err := v.Update(tt.signed)
			if changed || !errors.Is(err, tt.wantErr) {
				t.Errorf("Update = %v, %v; want false, %v", changed, err, tt.wantErr)
			}
			if v.Current() != s3 {
				t.Errorf("a refused document replaced the current one (now version %d)", v.Current().Dir.Version)
			}
		})
	}

	// Within the allowed clock skew a document from the near future is
	// taken.
	near := versioned(5, clk.Now().Add(4*time.Minute))
	if changed, err := v.Update(mustSign(t, near, key)); !changed || err != nil {
		t.Errorf("Update(issued 4m ahead) = %v, %v; want true, nil", changed, err)
	}

	// Once the clock passes its expiry, the same bytes are still a no-op
	// (nothing new) but the directory authorizes no one; see TestAuthorize.
	clk.Set(near.ExpiresAt.Add(time.Second))
	if changed, err := v.Update(v.Current().Signed); changed || err != nil {
		t.Errorf("Update(current bytes after expiry) = %v, %v; want false, nil", changed, err)
	}
}

func TestVerifierKeyRotation(t *testing.T) {
	oldKey, newKey := fixedKey("old"), fixedKey("new")
	clk := &clock{t: goldenIssued}
	v := newTestVerifier(t, clk, oldKey, newKey)
	if _, err := v.Update(mustSign(t, versioned(1, goldenIssued), oldKey)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Update(mustSign(t, versioned(2, goldenIssued), newKey)); err != nil {
		t.Fatal(err)
	}
	if got := v.Current().KeyID; got != pki.DirectoryKeyID(pubKey(newKey)) {
		t.Errorf("KeyID = %q, want the new key's", got)
	}
}

func TestVerifierChanged(t *testing.T) {
	key := fixedKey("changed")
	clk := &clock{t: goldenIssued}
	v := newTestVerifier(t, clk, key)
	closed := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		default:
			return false
		}
	}

	c0 := v.Changed()
	if closed(c0) {
		t.Fatal("Changed() closed before any update")
	}
	v1 := mustSign(t, versioned(1, goldenIssued), key)
	if _, err := v.Update(v1); err != nil {
		t.Fatal(err)
	}
	if !closed(c0) {
		t.Fatal("Changed() not closed by the first version")
	}
	c1 := v.Changed()
	if closed(c1) {
		t.Fatal("Changed() after an update is already closed")
	}
	// Nothing new: no-op, refusals.
	v.Update(v1)
	v.Update(mustSign(t, versioned(1, goldenIssued.Add(time.Second)), key))
	v.Update([]byte("junk"))
	if closed(c1) {
		t.Fatal("Changed() closed without a new version")
	}
	if _, err := v.Update(mustSign(t, versioned(2, goldenIssued), key)); err != nil {
		t.Fatal(err)
	}
	if !closed(c1) {
		t.Fatal("Changed() not closed by a new version")
	}

	// A waiter sees the change.
	c2 := v.Changed()
	done := make(chan uint64)
	go func() {
		<-c2
		done <- v.Current().Dir.Version
	}()
	if _, err := v.Update(mustSign(t, versioned(3, goldenIssued), key)); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if got != 3 {
			t.Errorf("waiter saw version %d, want 3", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken")
	}
}

func TestVerifierAge(t *testing.T) {
	key := fixedKey("age")
	clk := &clock{t: goldenIssued.Add(90 * time.Minute)}
	v := newTestVerifier(t, clk, key)
	if _, err := v.Update(mustSign(t, versioned(1, goldenIssued), key)); err != nil {
		t.Fatal(err)
	}
	if age, ok := v.Age(); !ok || age != 90*time.Minute {
		t.Errorf("Age() = %v, %v; want 90m, true", age, ok)
	}
	clk.Set(goldenIssued.Add(3 * time.Hour))
	if age, _ := v.Age(); age != 3*time.Hour {
		t.Errorf("Age() = %v after the clock moved, want 3h", age)
	}
}

// TestVerifierConcurrent runs updates against lookups; run it with -race.
func TestVerifierConcurrent(t *testing.T) {
	key := fixedKey("concurrent")
	clk := &clock{t: goldenIssued}
	v := newTestVerifier(t, clk, key)
	docs := make([][]byte, 20)
	for i := range docs {
		docs[i] = mustSign(t, versioned(uint64(i+1), goldenIssued), key)
	}
	if _, err := v.Update(docs[0]); err != nil {
		t.Fatal(err)
	}
	caller := pki.ID{Network: "kurier.example", Role: pki.RoleProvider, Name: "app"}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < len(docs); i += 2 {
				v.Update(docs[i]) // rollbacks expected; only the highest wins
			}
		})
		wg.Go(func() {
			for range 200 {
				s := v.Current()
				s.Allowed(caller, "hd-1", "submit")
				v.Age()
				v.Changed()
			}
		})
	}
	wg.Wait()
	if got := v.Current().Dir.Version; got != uint64(len(docs)) {
		t.Errorf("after concurrent updates version = %d, want %d", got, len(docs))
	}
}

// authNet is a network with one member of each kind Authorize tells apart.
type authNet struct {
	ca    *pkitest.CA
	certs map[string]*tls.Certificate
	dir   *pki.Directory
	snap  *pki.Snapshot
}

func newAuthNet(t testing.TB) *authNet {
	t.Helper()
	now := time.Now()
	ca := pkitest.NewCA(t, "kurier.example", now)
	n := &authNet{ca: ca, certs: map[string]*tls.Certificate{}}
	issue := func(label string, role pki.Role, name string) *tls.Certificate {
		c := ca.Issue(t, role, name)
		n.certs[label] = c
		return c
	}
	hd := pkitest.Member(issue("hd", pki.RoleHealthOffice, "hd-1"), "HD 1", "submit", "contacts")
	app := pkitest.Member(issue("app", pki.RoleProvider, "app"), "App")
	relay := pkitest.Member(issue("relay", pki.RoleRelay, "relay-1"), "Relay")
	revoked := pkitest.Member(issue("revoked", pki.RoleProvider, "bad"), "Bad")
	suspended := pkitest.Member(issue("suspended", pki.RoleProvider, "sus"), "Sus")
	suspended.Suspended = true
	// rot has two keys; the old one is revoked by pin.
	rot := pkitest.Member(issue("rot-new", pki.RoleProvider, "rot"), "Rot")
	rotOld := issue("rot-old", pki.RoleProvider, "rot")
	rot.Pins = append(rot.Pins, pki.Pin(rotOld.Leaf))
	// Correctly chained, but not pinned / not listed / wrong role.
	issue("app-unpinned", pki.RoleProvider, "app")
	issue("app-as-hd", pki.RoleHealthOffice, "app")
	issue("stranger", pki.RoleProvider, "stranger")
	n.certs["other-net"] = pkitest.NewCA(t, "other.example", now).Issue(t, pki.RoleProvider, "app")
	n.certs["no-uri"] = ca.IssueWith(t, pki.RoleProvider, "app", pkitest.Options{NoURI: true})

	n.dir = ca.Directory(hd, app, relay, revoked, suspended, rot)
	n.dir.Revoked = []pki.Revocation{
		{Member: "bad", RevokedAt: now.Add(-time.Minute), Reason: "compromised"},
		{Member: "rot", Pins: []string{pki.Pin(rotOld.Leaf)}, RevokedAt: now.Add(-time.Minute)},
	}
	n.snap = ca.Verifier(t, n.dir).Current()
	return n
}

func TestAuthorize(t *testing.T) {
	n := newAuthNet(t)
	now := n.ca.Now
	for _, tt := range []struct {
		cert    string
		now     time.Time
		wantID  string
		wantErr error
	}{
		{"hd", now, "spiffe://kurier.example/health-office/hd-1", nil},
		{"app", now, "spiffe://kurier.example/provider/app", nil},
		{"relay", now, "spiffe://kurier.example/relay/relay-1", nil},
		{"rot-new", now, "spiffe://kurier.example/provider/rot", nil},
		{"stranger", now, "", pki.ErrNotMember},
		{"app-as-hd", now, "", pki.ErrNotMember},
		{"revoked", now, "", pki.ErrRevoked},
		{"rot-old", now, "", pki.ErrRevoked},
		{"suspended", now, "", pki.ErrSuspended},
		{"app-unpinned", now, "", pki.ErrUnpinned},
		{"other-net", now, "", pki.ErrWrongNetwork},
		{"no-uri", now, "", pki.ErrBadIdentity},
		{"app", n.dir.ExpiresAt, "", pki.ErrDirectoryExpired},
		{"app", n.dir.ExpiresAt.Add(time.Hour), "", pki.ErrDirectoryExpired},
	} {
		t.Run(fmt.Sprintf("%s at %s", tt.cert, tt.now.Sub(now)), func(t *testing.T) {
			id, m, err := n.snap.Authorize(n.certs[tt.cert].Leaf, tt.now)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !id.IsZero() || m != nil {
					t.Errorf("Authorize = %v, %v, %v; want zero, nil, %v", id, m, err, tt.wantErr)
				}
				return
			}
			if err != nil || id.String() != tt.wantID || m == nil || m.Name != id.Name || m.Role != id.Role {
				t.Errorf("Authorize = %v, %v, %v; want %s", id, m, err, tt.wantID)
			}
		})
	}
}

func TestVerifierAuthorize(t *testing.T) {
	now := time.Now()
	ca := pkitest.NewCA(t, "kurier.example", now)
	app := ca.Issue(t, pki.RoleProvider, "app")
	v := ca.Verifier(t, nil)
	if _, _, err := v.Authorize(app.Leaf); !errors.Is(err, pki.ErrNoDirectory) {
		t.Errorf("Authorize with no directory = %v, want %v", err, pki.ErrNoDirectory)
	}
	if _, err := v.Update(ca.Sign(t, ca.Directory(pkitest.Member(app, "App")))); err != nil {
		t.Fatal(err)
	}
	if id, _, err := v.Authorize(app.Leaf); err != nil || id.Name != "app" {
		t.Errorf("Authorize = %v, %v", id, err)
	}
	// The verifier's clock decides expiry.
	ca.Now = now.Add(48 * time.Hour)
	if _, _, err := v.Authorize(app.Leaf); !errors.Is(err, pki.ErrDirectoryExpired) {
		t.Errorf("Authorize after expiry = %v, want %v", err, pki.ErrDirectoryExpired)
	}
}

func TestIsRevoked(t *testing.T) {
	n := newAuthNet(t)
	oldPin := pki.Pin(n.certs["rot-old"].Leaf)
	for _, tt := range []struct {
		name, pin string
		want      bool
	}{
		{"bad", "", true},
		{"bad", testPin("any"), true},
		{"rot", "", false},
		{"rot", oldPin, true},
		{"rot", pki.Pin(n.certs["rot-new"].Leaf), false},
		{"app", oldPin, true}, // a revoked key is revoked whoever presents it
		{"app", "", false},
		{"nobody", "", false},
	} {
		if got := n.snap.IsRevoked(tt.name, tt.pin); got != tt.want {
			t.Errorf("IsRevoked(%q, %q) = %v, want %v", tt.name, tt.pin, got, tt.want)
		}
	}
}

// allowedSnapshot is a directory with a permission of every selector kind.
func allowedSnapshot(t testing.TB) *pki.Snapshot {
	t.Helper()
	key := fixedKey("allowed")
	m := func(name string, role pki.Role, services ...string) pki.Member {
		mm := pki.Member{Name: name, Role: role, DisplayName: name, Pins: []string{testPin(name)}, Services: services}
		if role == pki.RoleRelay {
			mm.Relay = &pki.RelayEndpoints{Public: "r:1", Pairing: "r:2", Control: "r:3", ControlTCP: "r:4"}
		}
		return mm
	}
	sus, hdSus := m("sus", pki.RoleProvider), m("hd-sus", pki.RoleHealthOffice, "submit")
	sus.Suspended, hdSus.Suspended = true, true
	d := &pki.Directory{
		Network: "kurier.example", Version: 1, IssuedAt: goldenIssued, ExpiresAt: goldenExpires,
		Members: []pki.Member{
			m("hd-1", pki.RoleHealthOffice, "submit", "contacts"),
			m("hd-2", pki.RoleHealthOffice, "submit"),
			m("app", pki.RoleProvider, "checkins"),
			m("app-2", pki.RoleProvider, "checkins"),
			m("relay-1", pki.RoleRelay),
			m("rev", pki.RoleProvider),
			m("pinrev", pki.RoleProvider),
			m("hd-rev", pki.RoleHealthOffice, "submit"),
			sus, hdSus,
		},
		Permissions: []pki.Permission{
			{Caller: "role:provider", Callee: "role:health-office", Services: []string{"submit"}},
			{Caller: "member:app", Callee: "member:hd-1", Services: []string{"contacts"}},
			{Caller: "*", Callee: "member:hd-2", Services: []string{"*"}},
			{Caller: "member:hd-1", Callee: "*", Services: []string{"checkins"}},
		},
		Revoked: []pki.Revocation{
			{Member: "rev", RevokedAt: goldenIssued},
			{Member: "hd-rev", RevokedAt: goldenIssued},
			{Member: "pinrev", Pins: []string{testPin("pinrev")}, RevokedAt: goldenIssued},
		},
	}
	v := newTestVerifier(t, &clock{t: goldenIssued}, key)
	if _, err := v.Update(mustSign(t, d, key)); err != nil {
		t.Fatal(err)
	}
	return v.Current()
}

func TestAllowed(t *testing.T) {
	s := allowedSnapshot(t)
	id := func(role pki.Role, name string) pki.ID {
		return pki.ID{Network: "kurier.example", Role: role, Name: name}
	}
	app, app2 := id(pki.RoleProvider, "app"), id(pki.RoleProvider, "app-2")
	hd1, hd2 := id(pki.RoleHealthOffice, "hd-1"), id(pki.RoleHealthOffice, "hd-2")
	for _, tt := range []struct {
		name    string
		caller  pki.ID
		callee  string
		service string
		want    bool
	}{
		{"role selector", app, "hd-1", "submit", true},
		{"role selector, other member of role", app2, "hd-2", "submit", true},
		{"member selector", app, "hd-1", "contacts", true},
		{"member selector, other caller", app2, "hd-1", "contacts", false},
		{"wildcard caller, wildcard service", id(pki.RoleRelay, "relay-1"), "hd-2", "submit", true},
		{"wildcard caller, not granted callee", id(pki.RoleRelay, "relay-1"), "hd-1", "submit", false},
		{"wildcard callee", hd1, "app", "checkins", true},
		{"wildcard callee, other caller", hd2, "app", "checkins", false},
		{"role selector does not match other role", hd2, "hd-1", "submit", false},
		{"service not offered", app, "hd-1", "delete", false},
		{"service granted by * but not offered", app, "hd-2", "contacts", false},
		{"empty service", app, "hd-1", "", false},
		{"suspended caller", id(pki.RoleProvider, "sus"), "hd-1", "submit", false},
		{"suspended callee", app, "hd-sus", "submit", false},
		{"revoked caller", id(pki.RoleProvider, "rev"), "hd-1", "submit", false},
		{"revoked callee", app, "hd-rev", "submit", false},
		{"caller with only a key revoked", id(pki.RoleProvider, "pinrev"), "hd-1", "submit", true},
		{"caller role mismatch", id(pki.RoleHealthOffice, "app"), "hd-2", "submit", false},
		{"unknown caller", id(pki.RoleProvider, "nobody"), "hd-2", "submit", false},
		{"zero caller", pki.ID{}, "hd-2", "submit", false},
		{"caller of another network", pki.ID{Network: "other.example", Role: pki.RoleProvider, Name: "app"}, "hd-1", "submit", false},
		{"unknown callee", app, "nobody", "submit", false},
		{"empty callee", app, "", "submit", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.Allowed(tt.caller, tt.callee, tt.service); got != tt.want {
				t.Errorf("Allowed(%s, %q, %q) = %v, want %v", tt.caller, tt.callee, tt.service, got, tt.want)
			}
		})
	}
}

func TestAllowedAllocs(t *testing.T) {
	s := allowedSnapshot(t)
	caller := pki.ID{Network: "kurier.example", Role: pki.RoleProvider, Name: "app"}
	for _, tt := range []struct{ callee, service string }{{"hd-1", "contacts"}, {"hd-2", "submit"}, {"hd-1", "nope"}, {"nobody", "x"}} {
		if n := testing.AllocsPerRun(100, func() { s.Allowed(caller, tt.callee, tt.service) }); n != 0 {
			t.Errorf("Allowed(%q, %q) allocates %v times per call, want 0", tt.callee, tt.service, n)
		}
	}
}

func BenchmarkSnapshotAuthorize(b *testing.B) {
	n := newAuthNet(b)
	leaf := n.certs["app"].Leaf
	now := n.ca.Now
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := n.snap.Authorize(leaf, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSnapshotAllowed(b *testing.B) {
	s := allowedSnapshot(b)
	caller := pki.ID{Network: "kurier.example", Role: pki.RoleProvider, Name: "app"}
	b.ReportAllocs()
	for b.Loop() {
		if !s.Allowed(caller, "hd-1", "contacts") {
			b.Fatal("not allowed")
		}
	}
}
