package ca

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kurier-net/kurier/pki"
)

var now0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newTestStore returns an initialised store in a temporary directory.
func newTestStore(t *testing.T, now func() time.Time) *Store {
	t.Helper()
	s, err := NewStore(StoreConfig{Path: filepath.Join(t.TempDir(), "members.db"), Network: "kurier.test", LockTimeout: 200 * time.Millisecond, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.create(); err != nil {
		t.Fatal(err)
	}
	return s
}

// testCert is a member certificate whose key comes from seed.
func testCert(t *testing.T, id pki.ID, seed byte, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(seed)),
		Subject:      pkix.Name{CommonName: id.DNSName()},
		NotBefore:    notAfter.Add(-24 * time.Hour),
		NotAfter:     notAfter,
		DNSNames:     []string{id.DNSName()},
		URIs:         []*url.URL{id.URI()},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStoreAddValidates(t *testing.T) {
	s := newTestStore(t, func() time.Time { return now0 })
	relay := &pki.RelayEndpoints{Public: "r:1", Pairing: "r:2", Control: "r:3", ControlTCP: "r:4"}
	for _, tt := range []struct {
		name string
		nm   NewMember
		ok   bool
	}{
		{"health office", NewMember{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA 1", Services: []string{"b", "a", "a"}}, true},
		{"relay", NewMember{Name: "relay-1", Role: pki.RoleRelay, DisplayName: "R", Relay: relay}, true},
		{"relay without endpoints", NewMember{Name: "relay-2", Role: pki.RoleRelay, DisplayName: "R"}, false},
		{"endpoints without relay", NewMember{Name: "app-1", Role: pki.RoleProvider, DisplayName: "A", Relay: relay}, false},
		{"bad name", NewMember{Name: "App_1", Role: pki.RoleProvider, DisplayName: "A"}, false},
		{"bad role", NewMember{Name: "app-2", Role: "admin", DisplayName: "A"}, false},
		{"no display name", NewMember{Name: "app-3", Role: pki.RoleProvider}, false},
		{"two-line display name", NewMember{Name: "app-4", Role: pki.RoleProvider, DisplayName: "A\nB"}, false},
		{"bad service", NewMember{Name: "app-5", Role: pki.RoleProvider, DisplayName: "A", Services: []string{"Bad Service"}}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Add(tt.nm)
			if (err == nil) != tt.ok {
				t.Fatalf("Add = %v, want ok %v", err, tt.ok)
			}
			if _, err := s.Get(tt.nm.Name); (err == nil) != tt.ok {
				t.Errorf("Get after Add = %v", err)
			}
		})
	}
	m, _ := s.Get("hd-1")
	if len(m.Services) != 2 || m.Services[0] != "a" || m.Status != StatusActive || !m.CreatedAt.Equal(now0) {
		t.Errorf("stored member %+v: want sorted unique services, active, created now", m)
	}
}

func TestStorePinsAndSealKeys(t *testing.T) {
	now := now0
	s := newTestStore(t, func() time.Time { return now })
	if _, err := s.Add(NewMember{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA"}); err != nil {
		t.Fatal(err)
	}
	id := pki.ID{Network: "kurier.test", Role: pki.RoleHealthOffice, Name: "hd-1"}
	old := testCert(t, id, 1, now.Add(-8*24*time.Hour)) // expired long ago: pruned
	cur := testCert(t, id, 2, now.Add(time.Hour))
	for _, c := range []*x509.Certificate{old, cur, testCert(t, id, 2, now.Add(2*time.Hour)), testCert(t, id, 2, now.Add(30*time.Minute))} {
		if err := s.RecordCert(c); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := s.Get("hd-1")
	if len(m.Pins) != 1 || m.Pins[0].Pin != pki.Pin(cur) || !m.Pins[0].NotAfter.Equal(now.Add(2*time.Hour)) {
		t.Errorf("pins = %+v; want the current key with the latest expiry", m.Pins)
	}
	// Wrong role, wrong network, unknown member.
	for _, c := range []*x509.Certificate{
		testCert(t, pki.ID{Network: "kurier.test", Role: pki.RoleProvider, Name: "hd-1"}, 3, now.Add(time.Hour)),
		testCert(t, pki.ID{Network: "other.test", Role: pki.RoleHealthOffice, Name: "hd-1"}, 3, now.Add(time.Hour)),
		testCert(t, pki.ID{Network: "kurier.test", Role: pki.RoleHealthOffice, Name: "hd-2"}, 3, now.Add(time.Hour)),
	} {
		if err := s.RecordCert(c); err == nil {
			t.Errorf("RecordCert(%v) = nil, want an error", c.URIs)
		}
	}

	keys := []pki.SealKey{{ID: "k1", KEM: 0x647a, Public: []byte{1, 2, 3}}}
	if _, err := s.SetSealKeys("hd-1", pki.Pin(old), keys); !errors.Is(err, ErrUnknownPin) {
		t.Errorf("SetSealKeys with an expired pin = %v, want ErrUnknownPin", err)
	}
	if _, err := s.SetSealKeys("hd-1", pki.Pin(cur), keys); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetSealKeys("hd-1", pki.Pin(cur), make([]pki.SealKey, MaxSealKeys+1)); err == nil {
		t.Errorf("SetSealKeys with %d keys succeeded", MaxSealKeys+1)
	}
	if _, err := s.SetStatus("hd-1", StatusSuspended, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetSealKeys("hd-1", pki.Pin(cur), keys); !errors.Is(err, ErrNotActive) {
		t.Errorf("SetSealKeys while suspended = %v, want ErrNotActive", err)
	}
	if _, err := s.SetStatus("hd-1", StatusSuspended, ""); err == nil {
		t.Errorf("suspending a suspended member succeeded")
	}
	if _, err := s.SetStatus("hd-1", StatusRevoked, "line\nbreak"); err == nil {
		t.Errorf("a two-line reason was accepted")
	}
}

func TestStoreLockTimeout(t *testing.T) {
	s := newTestStore(t, nil)
	// Another process holding the file: a bbolt handle of our own.
	db, err := bolt.Open(s.cfg.Path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Add(NewMember{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA"})
	if !errors.Is(err, ErrStoreBusy) {
		t.Errorf("Add while locked = %v, want ErrStoreBusy", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Add waited %s; the lock timeout is %s", d, s.cfg.LockTimeout)
	}
	db.Close()
	if _, err := s.Add(NewMember{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA"}); err != nil {
		t.Errorf("Add after the lock was released = %v", err)
	}
}

func TestStoreConcurrentUse(t *testing.T) {
	s := newTestStore(t, nil)
	if _, err := s.Add(NewMember{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA"}); err != nil {
		t.Fatal(err)
	}
	// A second Store on the same file stands in for a second process.
	s2, _ := NewStore(StoreConfig{Path: s.cfg.Path, Network: "kurier.test"})
	id := pki.ID{Network: "kurier.test", Role: pki.RoleHealthOffice, Name: "hd-1"}
	var wg sync.WaitGroup
	for i := range 8 {
		st := s
		if i%2 == 1 {
			st = s2
		}
		wg.Go(func() {
			if err := st.RecordCert(testCert(t, id, byte(10+i), time.Now().Add(time.Hour))); err != nil {
				t.Error(err)
			}
			if _, err := st.List(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	m, _ := s.Get("hd-1")
	if len(m.Pins) != 8 {
		t.Errorf("%d pins recorded, want 8", len(m.Pins))
	}
	// A store of another network refuses the file.
	s3, _ := NewStore(StoreConfig{Path: s.cfg.Path, Network: "other.test"})
	if _, err := s3.List(); err == nil {
		t.Errorf("a store for another network read the file")
	}
}
