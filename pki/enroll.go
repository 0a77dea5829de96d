package pki

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/x509util"
)

// EnrollConfig is what a new member needs to join the network.
type EnrollConfig struct {
	// CAURL is the CA's base URL (https://host:port). Required.
	CAURL string
	// Fingerprint is the SHA-256 fingerprint of the network root in hex, as
	// printed by kurierctl ca init. Required.
	Fingerprint string
	// Token is the one-time enrolment token from kurierctl member add.
	// Required.
	Token Token
	// Dir is the state directory to create. Required; it must not already
	// hold an enrolment unless Force is set.
	Dir string
	// Force allows replacing an existing enrolment in Dir.
	Force bool
}

// ErrAlreadyEnrolled is returned when the state directory already holds an
// enrolment and EnrollConfig.Force is not set.
var ErrAlreadyEnrolled = errors.New("pki: state directory already holds an enrolment")

// TokenIdentity reads the member identity a token is bound to, without
// verifying the token (only the CA can). It is used to build a certificate
// request with exactly the names the token allows.
func TokenIdentity(tok Token) (ID, error) {
	jwt, err := jose.ParseSigned(string(tok))
	if err != nil {
		return ID{}, errors.New("pki: enrolment token is not a JWT")
	}
	var claims struct {
		Subject string   `json:"sub"`
		SANs    []string `json:"sans"`
	}
	if err := jwt.UnsafeClaimsWithoutVerification(&claims); err != nil {
		return ID{}, errors.New("pki: enrolment token has unreadable claims")
	}
	var id ID
	for _, s := range claims.SANs {
		if len(s) > len("spiffe://") && s[:len("spiffe://")] == "spiffe://" {
			if !id.IsZero() {
				return ID{}, errors.New("pki: enrolment token names two identities")
			}
			if id, err = ParseID(s); err != nil {
				return ID{}, fmt.Errorf("pki: enrolment token: %w", err)
			}
		}
	}
	if id.IsZero() {
		return ID{}, errors.New("pki: enrolment token names no member identity")
	}
	want := []string{id.String(), id.DNSName()}
	got := slices.Clone(claims.SANs)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) || claims.Subject != id.DNSName() {
		return ID{}, fmt.Errorf("pki: enrolment token names %q, not a Kurier member identity", claims.SANs)
	}
	return id, nil
}

// Enroll joins the network: it authenticates the CA by its root fingerprint,
// creates the member's Ed25519 private key and seal key locally, obtains a
// certificate with the one-time token, fetches the trust bundle, publishes
// the seal key and writes the state directory. The private keys never leave
// this machine.
func Enroll(ctx context.Context, cfg EnrollConfig) (*State, error) {
	if cfg.CAURL == "" || cfg.Fingerprint == "" || cfg.Token == "" || cfg.Dir == "" {
		return nil, errors.New("pki: enrol needs a CA URL, a root fingerprint, a token and a state directory")
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, stateFile)); err == nil && !cfg.Force {
		return nil, fmt.Errorf("%w: %s", ErrAlreadyEnrolled, cfg.Dir)
	}
	id, err := TokenIdentity(cfg.Token)
	if err != nil {
		return nil, err
	}
	root, err := BootstrapRoot(ctx, cfg.CAURL, cfg.Fingerprint)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	cl, err := NewCAClient(CAClientConfig{URL: cfg.CAURL, Roots: roots})
	if err != nil {
		return nil, err
	}
	tb, err := cl.Trust(ctx)
	if err != nil {
		return nil, err
	}
	if tb.Network != id.Network {
		return nil, fmt.Errorf("pki: token is for network %q but the CA serves %q", id.Network, tb.Network)
	}

	// Ed25519: the member's TLS key also signs every sealed envelope and
	// receipt, and Ed25519 signs and verifies them for less CPU than P-256
	// (docs/pki.md). Members enrolled earlier keep their P-256 keys; every
	// part of the network accepts both.
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csr, err := x509util.CreateCertificateRequest(id.DNSName(), []string{id.DNSName(), id.String()}, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate request: %w", err)
	}
	chain, err := cl.Sign(ctx, csr.Raw, cfg.Token)
	if err != nil {
		return nil, err
	}
	got, err := IDFromCert(chain[0])
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	if got != id {
		return nil, fmt.Errorf("pki: CA issued a certificate for %s, want %s", got, id)
	}
	cert := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		if c.Equal(root) {
			continue // the root is not sent in handshakes
		}
		cert.Certificate = append(cert.Certificate, c.Raw)
	}

	seal, err := NewSealKey("s1")
	if err != nil {
		return nil, err
	}
	published := []SealKey{seal.Public()}
	var web *SealPrivateKey
	if id.Role == RoleHealthOffice {
		k, err := NewWebSealKey("w1")
		if err != nil {
			return nil, err
		}
		web = &k
		published = append(published, k.Public())
	}
	if err := cl.PublishSealKeys(ctx, cert, published); err != nil {
		return nil, err
	}
	fp, _ := normalizeFingerprint(cfg.Fingerprint)
	s := &State{
		Dir:           cfg.Dir,
		CAURL:         cfg.CAURL,
		Fingerprint:   fp,
		ID:            id,
		Roots:         tb.Roots,
		DirectoryKeys: tb.DirectoryKeys,
		Cert:          cert,
		Seal:          seal,
		WebSeal:       web,
	}
	if !slices.ContainsFunc(tb.Roots, root.Equal) {
		s.Roots = append([]*x509.Certificate{root}, tb.Roots...)
	}
	if err := writeState(s); err != nil {
		return nil, fmt.Errorf("write state %s: %w", cfg.Dir, err)
	}
	return s, nil
}
