package ca

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/kurier-net/kurier/pki"
)

// TokenSigner mints one-time enrolment tokens with the decrypted JWK
// provisioner key. It is safe for concurrent use and redacts itself in logs.
type TokenSigner struct {
	ca  *CA
	jwk *jose.JSONWebKey
}

// LogValue implements slog.LogValuer.
func (*TokenSigner) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// TokenSigner decrypts the provisioner key with pass.
func (c *CA) TokenSigner(pass Passphrase) (*TokenSigner, error) {
	k, err := c.provisionerKey(pass)
	if err != nil {
		return nil, err
	}
	return &TokenSigner{ca: c, jwk: k}, nil
}

// TokenInfo describes an issued enrolment token.
type TokenInfo struct {
	// Token is the JWT. It is single use: the CA stores its id when it is
	// redeemed.
	Token Token
	// ID is the identity the token lets its holder enrol as.
	ID pki.ID
	// ID of the token (jti).
	TokenID   string
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// tokenClaims are the claims the smallstep JWK provisioner checks.
type tokenClaims struct {
	jose.Claims
	SANs []string `json:"sans"`
}

// Token mints an enrolment token for the active member m: iss is the
// provisioner name, aud the CA's sign audience, sub the member's DNS name,
// sans its URI and DNS SANs (the CSR must request exactly these), a random
// jti, and nbf/iat now and exp now+ttl. If ttl is zero, the CA's token TTL is
// used.
func (s *TokenSigner) Token(m *Member, ttl time.Duration) (*TokenInfo, error) {
	if m.Status != StatusActive {
		return nil, fmt.Errorf("%w: %q is %s", ErrNotActive, m.Name, m.Status)
	}
	if ttl == 0 {
		ttl = time.Duration(s.ca.cfg.TokenTTL)
	}
	if err := validTokenTTL(ttl); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	id, err := pki.NewID(s.ca.cfg.Network, m.Role, m.Name)
	if err != nil {
		return nil, err
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return nil, err
	}
	now := s.ca.now().UTC().Truncate(time.Second)
	claims := tokenClaims{
		Claims: jose.Claims{
			ID:        hex.EncodeToString(jti[:]),
			Issuer:    s.ca.cfg.Provisioner.Name,
			Subject:   id.DNSName(),
			Audience:  jose.Audience{s.ca.SignAudience()},
			NotBefore: jose.NewNumericDate(now),
			IssuedAt:  jose.NewNumericDate(now),
			Expiry:    jose.NewNumericDate(now.Add(ttl)),
		},
		SANs: []string{id.URI().String(), id.DNSName()},
	}
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.SignatureAlgorithm(s.jwk.Algorithm), Key: s.jwk.Key},
		new(jose.SignerOptions).WithType("JWT").WithHeader("kid", s.jwk.KeyID),
	)
	if err != nil {
		return nil, fmt.Errorf("ca: token signer: %w", err)
	}
	tok, err := jose.Signed(signer).Claims(claims).CompactSerialize()
	if err != nil {
		return nil, fmt.Errorf("ca: sign token: %w", err)
	}
	return &TokenInfo{Token: Token(tok), ID: id, TokenID: claims.ID, IssuedAt: now, ExpiresAt: now.Add(ttl)}, nil
}
