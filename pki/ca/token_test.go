package ca

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/kurier-net/kurier/pki"
)

func TestTokenClaims(t *testing.T) {
	c := newBareTestCA(t, "kurier.test")
	c.now = func() time.Time { return now0 }
	m, err := c.Store().Add(NewMember{Name: "app-a", Role: pki.RoleProvider, DisplayName: "A"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.TokenSigner(nil)
	if err != nil {
		t.Fatal(err)
	}
	ti, err := s.Token(m, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jose.ParseSigned(string(ti.Token))
	if err != nil {
		t.Fatal(err)
	}
	var claims tokenClaims
	if err := tok.Claims(c.cfg.Provisioner.Key, &claims); err != nil {
		t.Fatalf("token does not verify with the provisioner's public key: %v", err)
	}
	want := pki.ID{Network: "kurier.test", Role: pki.RoleProvider, Name: "app-a"}
	if claims.Issuer != "kurier-enrolment" || len(claims.Audience) != 1 || claims.Audience[0] != "https://localhost/1.0/sign" ||
		claims.Subject != want.DNSName() || len(claims.SANs) != 2 || claims.SANs[0] != want.URI().String() || claims.SANs[1] != want.DNSName() ||
		len(claims.ID) != 32 || !claims.IssuedAt.Time().Equal(now0) || !claims.NotBefore.Time().Equal(now0) || !claims.Expiry.Time().Equal(now0.Add(30*time.Minute)) {
		t.Errorf("claims = %+v", claims)
	}
	if tok.Headers[0].KeyID != c.cfg.Provisioner.Key.KeyID {
		t.Errorf("kid = %q, want the provisioner's", tok.Headers[0].KeyID)
	}
	ti2, _ := s.Token(m, 0)
	if ti2.TokenID == ti.TokenID || !ti2.ExpiresAt.Equal(now0.Add(DefaultTokenTTL)) {
		t.Errorf("second token: id %s (first %s), expires %s", ti2.TokenID, ti.TokenID, ti2.ExpiresAt)
	}
	if _, err := s.Token(m, 8*24*time.Hour); err == nil {
		t.Errorf("a token TTL of 8 days was accepted")
	}
}

func TestSecretsRedact(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	log.Info("x", "pass", Passphrase("hunter2-secret"), "token", Token("eyJsecret"), "signer", &TokenSigner{})
	slog.New(slog.NewTextHandler(&buf, nil)).Info("y", "pass", Passphrase("hunter2-secret"), "token", Token("eyJsecret"))
	if s := buf.String(); strings.Contains(s, "secret") || !strings.Contains(s, "REDACTED") {
		t.Errorf("logs leak secrets: %s", s)
	}
}

func TestInitErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		cfg  InitConfig
	}{
		{"no passphrase", InitConfig{Dir: filepath.Join(dir, "a"), Network: "kurier.test"}},
		{"passphrase and insecure", InitConfig{Dir: filepath.Join(dir, "b"), Network: "kurier.test", Passphrase: Passphrase("x"), InsecureUnencryptedKeys: true}},
		{"bad network", InitConfig{Dir: filepath.Join(dir, "c"), Network: "Kurier", InsecureUnencryptedKeys: true}},
		{"bad DNS name", InitConfig{Dir: filepath.Join(dir, "d"), Network: "kurier.test", DNSNames: []string{"a b"}, InsecureUnencryptedKeys: true}},
		{"lifetime too short", InitConfig{Dir: filepath.Join(dir, "e"), Network: "kurier.test", CertLifetime: time.Minute, InsecureUnencryptedKeys: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Init(tt.cfg); err == nil {
				t.Errorf("Init succeeded")
			}
			if _, err := os.Stat(tt.cfg.Dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a failed Init left %s behind", tt.cfg.Dir)
			}
		})
	}
	// An empty directory may be used; a non-empty one is refused.
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	if _, err := Init(InitConfig{Dir: empty, Network: "kurier.test", InsecureUnencryptedKeys: true}); err != nil {
		t.Errorf("Init into an empty directory: %v", err)
	}
	if fi, _ := os.Stat(empty); fi.Mode().Perm() != 0o700 {
		t.Errorf("CA directory mode %v, want 0700", fi.Mode().Perm())
	}
	if _, err := Init(InitConfig{Dir: empty, Network: "kurier.test", InsecureUnencryptedKeys: true}); !errors.Is(err, ErrExists) {
		t.Errorf("Init over a CA = %v, want ErrExists", err)
	}
	if _, err := Open(OpenConfig{Dir: dir}); !errors.Is(err, ErrNotCA) {
		t.Errorf("Open(not a CA) = %v, want ErrNotCA", err)
	}
	// Leftover temporary directories are removed.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".init-") {
			t.Errorf("temporary directory %s left behind", e.Name())
		}
	}
	// A bare key in an encrypted CA is refused.
	c := newTestCA(t, "kurier.test", nil)
	bare, _ := encodeKey(mustKey(t, c), nil)
	os.WriteFile(c.path(c.cfg.DirectoryKey), bare, 0o600)
	if _, err := c.DirectoryKey(Passphrase(testPass)); err == nil || !strings.Contains(err.Error(), "not encrypted") {
		t.Errorf("DirectoryKey with a swapped bare key = %v", err)
	}
	if _, err := c.DirectoryKey(nil); err == nil {
		t.Errorf("DirectoryKey without a passphrase succeeded")
	}
}

func mustKey(t *testing.T, c *CA) any {
	t.Helper()
	k, err := c.DirectoryKey(Passphrase(testPass))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
