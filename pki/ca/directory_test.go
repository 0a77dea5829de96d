package ca

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
)

func TestBuildDirectory(t *testing.T) {
	id := func(r pki.Role, n string) pki.ID { return pki.ID{Network: "kurier.test", Role: r, Name: n} }
	live := testCert(t, id(pki.RoleHealthOffice, "hd-1"), 1, now0.Add(time.Hour))
	expired := testCert(t, id(pki.RoleHealthOffice, "hd-1"), 2, now0.Add(-time.Minute))
	old := testCert(t, id(pki.RoleProvider, "app-b"), 3, now0.Add(time.Hour))
	members := []Member{
		{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA", Status: StatusActive,
			Pins:     []PinRecord{{Pin: pki.Pin(live), NotAfter: live.NotAfter}, {Pin: pki.Pin(expired), NotAfter: expired.NotAfter}},
			SealKeys: []pki.SealKey{{ID: "k1", KEM: 0x647a, Public: []byte{1}}}, Services: []string{"contacts"}},
		{Name: "app-a", Role: pki.RoleProvider, DisplayName: "A", Status: StatusSuspended, StatusChangedAt: now0},
		{Name: "app-b", Role: pki.RoleProvider, DisplayName: "B", Status: StatusActive,
			RevokedKeys: []KeyRevocation{{Pins: []string{pki.Pin(old)}, RevokedAt: now0.Add(-time.Hour), Reason: "lost laptop"}}},
		{Name: "app-c", Role: pki.RoleProvider, DisplayName: "C", Status: StatusRevoked, StatusChangedAt: now0.Add(-2 * time.Hour), StatusReason: "left"},
	}
	d, err := BuildDirectory("kurier.test", members, nil, 7, now0, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != 7 || !d.IssuedAt.Equal(now0) || !d.ExpiresAt.Equal(now0.Add(24*time.Hour)) || len(d.Permissions) != len(DefaultPolicy().Permissions) {
		t.Errorf("header: %+v", d)
	}
	if len(d.Members) != 3 {
		t.Fatalf("members = %+v, want hd-1, app-a, app-b", d.Members)
	}
	hd, _ := d.Member("hd-1")
	if len(hd.Pins) != 1 || hd.Pins[0] != pki.Pin(live) || len(hd.SealKeys) != 1 {
		t.Errorf("hd-1 = %+v; want only the unexpired pin and the seal key", hd)
	}
	if a, _ := d.Member("app-a"); !a.Suspended {
		t.Errorf("app-a not marked suspended")
	}
	if _, ok := d.Member("app-c"); ok {
		t.Errorf("revoked app-c is listed as a member")
	}
	if len(d.Revoked) != 2 || d.Revoked[0].Member != "app-b" || len(d.Revoked[0].Pins) != 1 || d.Revoked[1].Member != "app-c" || len(d.Revoked[1].Pins) != 0 || d.Revoked[1].Reason != "left" {
		t.Errorf("revoked = %+v", d.Revoked)
	}
}

func TestPublishDirectoryVersions(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	key, err := c.DirectoryKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Store().Add(NewMember{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA"}); err != nil {
		t.Fatal(err)
	}
	p1, err := c.PublishDirectory(key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	backup, _ := os.ReadFile(c.store.cfg.Path)
	for range 2 {
		if _, err := c.PublishDirectory(key, SignOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A store restored from a backup must not make the CA publish below
	// what is current.
	if err := os.WriteFile(c.store.cfg.Path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	p4, err := c.PublishDirectory(key, SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p1.Directory.Version != 1 || p4.Directory.Version != 4 {
		t.Errorf("versions %d ... %d, want 1 ... 4", p1.Directory.Version, p4.Directory.Version)
	}
	for v := 1; v <= 4; v++ {
		if _, err := os.Stat(filepath.Join(c.Dir(), "directory", "v"+string(rune('0'+v)))); err != nil {
			t.Errorf("copy of version %d: %v", v, err)
		}
	}
	cur, _ := os.ReadFile(c.CurrentDirectoryPath())
	if !bytes.Equal(cur, p4.Signed) {
		t.Errorf("current is not the last version")
	}
	fi, _ := os.Stat(c.CurrentDirectoryPath())
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("current has mode %v, want 0644", fi.Mode().Perm())
	}

	// The daemon's verifier accepts what the CA publishes.
	v, _ := pki.NewVerifier(pki.VerifierConfig{Network: "kurier.test", Keys: c.DirectoryKeys()})
	if _, err := v.Update(cur); err != nil {
		t.Errorf("pki.Verifier refuses the published directory: %v", err)
	}
	// A key that is not trusted cannot sign.
	other := newBareTestCA(t, "kurier.test")
	okey, _ := other.DirectoryKey(nil)
	if _, err := c.PublishDirectory(okey, SignOptions{}); err == nil {
		t.Errorf("PublishDirectory with an untrusted key succeeded")
	}
}

func TestVerifyDirectory(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	key, _ := c.DirectoryKey(nil)
	c.Store().Add(NewMember{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "GA"})
	p1, _ := c.PublishDirectory(key, SignOptions{Validity: time.Hour})
	p2, _ := c.PublishDirectory(key, SignOptions{Validity: time.Hour})
	keys := c.DirectoryKeys()
	now := p2.Directory.IssuedAt
	other := newBareTestCA(t, "kurier.test")

	for _, tt := range []struct {
		name   string
		signed []byte
		o      VerifyOptions
		want   error
	}{
		{"good", p2.Signed, VerifyOptions{Keys: keys, Network: "kurier.test", MinVersion: 2, Now: now}, nil},
		{"tampered", bytes.Replace(p2.Signed, []byte(`"GA"`), []byte(`"GB"`), 1), VerifyOptions{Keys: keys, Now: now}, pki.ErrDirectorySignature},
		{"rolled back", p1.Signed, VerifyOptions{Keys: keys, MinVersion: 2, Now: now}, pki.ErrDirectoryRollback},
		{"expired", p2.Signed, VerifyOptions{Keys: keys, Now: now.Add(time.Hour)}, pki.ErrDirectoryExpired},
		{"from the future", p2.Signed, VerifyOptions{Keys: keys, Now: now.Add(-time.Hour)}, pki.ErrDirectoryNotYetValid},
		{"other network", p2.Signed, VerifyOptions{Keys: keys, Network: "other.test", Now: now}, pki.ErrDirectoryNetwork},
		{"unknown key", p2.Signed, VerifyOptions{Keys: other.DirectoryKeys(), Now: now}, pki.ErrDirectoryUnknownKey},
		{"not a directory", []byte("{}"), VerifyOptions{Keys: keys, Now: now}, pki.ErrDirectoryFormat},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := VerifyDirectory(tt.signed, tt.o)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Errorf("VerifyDirectory = %v, want %v", err, tt.want)
			}
		})
	}
	d, kid, err := ParseDirectoryUnverified(p2.Signed)
	if err != nil || d.Version != 2 || kid != pki.DirectoryKeyID(keys[0]) {
		t.Errorf("ParseDirectoryUnverified = %v, %s, %v", d, kid, err)
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{`{"permissions":[{"caller":"role:health-office","callee":"member:app-a","services":["contacts","*"]}]}`, true},
		{`{"permissions":[]}`, true},
		{`{}`, false},
		{`{"permissions":[],"x":1}`, false},
		{`{"permissions":[{"caller":"role:boss","callee":"*","services":["*"]}]}`, false},
		{`{"permissions":[{"caller":"*","callee":"*","services":[]}]}`, false},
		{`{"permissions":[{"caller":"*","callee":"*","services":["*"],"extra":true}]}`, false},
		{`{"permissions":[]} {}`, false},
	} {
		_, err := ParsePolicy([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("ParsePolicy(%s) = %v, want ok %v", tt.in, err, tt.ok)
		}
	}
}
