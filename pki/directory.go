package pki

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Directory is the network's member directory: who is a member, which keys
// they hold, which services they offer, who may call what, and who has been
// revoked. It is published as a signed document (see SignDirectory and
// ParseSignedDirectory) and verified by every daemon before use.
//
// A Directory that came out of ParseSignedDirectory or Canonical has sorted
// slices and is never mutated afterwards.
type Directory struct {
	// Network is the network name; every member ID lives under it.
	Network string `json:"network"`
	// Version increases with every published document. Verifiers refuse a
	// version older than the one they hold.
	Version uint64 `json:"version"`
	// IssuedAt and ExpiresAt bound the document's validity (UTC, seconds).
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Members are sorted by name; names are unique.
	Members []Member `json:"members"`
	// Permissions grant callers the right to call services. Nothing is
	// allowed that no permission grants.
	Permissions []Permission `json:"permissions"`
	// Revoked lists revoked members and revoked keys, sorted by member.
	Revoked []Revocation `json:"revoked"`
	// Trust, if present, names the trust anchors members should hold, so
	// they follow rotations of the directory key and of the root on the
	// directory key's word rather than the online CA's.
	Trust *TrustAnchors `json:"trust,omitempty"`
}

// TrustAnchors are the network's trust anchors as the directory key vouches
// for them.
type TrustAnchors struct {
	// DirectoryKeys are the Ed25519 directory signing keys to trust (raw
	// public keys, standard base64), sorted. They include the key that
	// signed the document. A verifier that accepts the document trusts
	// exactly these keys from then on: a new key is announced here before
	// it signs, and an old one is dropped by leaving it out.
	DirectoryKeys []string `json:"directory_keys"`
	// Roots are the SHA-256 fingerprints (lowercase hex) of the network
	// root certificates to trust, sorted. A member fetches a listed root it
	// lacks from the CA's trust bundle and accepts it only if its
	// fingerprint is listed here.
	Roots []string `json:"roots"`
}

// Keys decodes DirectoryKeys.
func (t *TrustAnchors) Keys() ([]ed25519.PublicKey, error) {
	out := make([]ed25519.PublicKey, 0, len(t.DirectoryKeys))
	for _, k := range t.DirectoryKeys {
		b, err := base64.StdEncoding.Strict().DecodeString(k)
		if err != nil || len(b) != ed25519.PublicKeySize || base64.StdEncoding.EncodeToString(b) != k {
			return nil, fmt.Errorf("trusted directory key %q is not a base64 Ed25519 public key", k)
		}
		out = append(out, ed25519.PublicKey(b))
	}
	return out, nil
}

// NewTrustAnchors lists keys and roots in canonical form.
func NewTrustAnchors(keys []ed25519.PublicKey, roots []*x509.Certificate) *TrustAnchors {
	t := &TrustAnchors{DirectoryKeys: []string{}, Roots: []string{}}
	for _, k := range keys {
		t.DirectoryKeys = append(t.DirectoryKeys, base64.StdEncoding.EncodeToString(k))
	}
	for _, r := range roots {
		sum := sha256.Sum256(r.Raw)
		t.Roots = append(t.Roots, hex.EncodeToString(sum[:]))
	}
	return t
}

func (t *TrustAnchors) validate() error {
	if len(t.DirectoryKeys) == 0 || len(t.Roots) == 0 {
		return errors.New("trust anchors need at least one directory key and one root")
	}
	if _, err := t.Keys(); err != nil {
		return err
	}
	for _, r := range t.Roots {
		b, err := hex.DecodeString(r)
		if err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != r {
			return fmt.Errorf("root fingerprint %q is not a lowercase hex SHA-256 digest", r)
		}
	}
	return nil
}

// Member is one entry of the directory.
type Member struct {
	Name        string `json:"name"`
	Role        Role   `json:"role"`
	DisplayName string `json:"display_name"`
	// Suspended members stay listed but are refused everywhere until the
	// operator resumes them.
	Suspended bool `json:"suspended,omitempty"`
	// Pins are the SHA-256 digests of the SubjectPublicKeyInfo of the keys
	// this member may present (standard base64). Several at once allow an
	// overlapping key rotation. Sorted.
	Pins []string `json:"pins"`
	// SealKeys are the member's HPKE public keys for payload sealing.
	SealKeys []SealKey `json:"seal_keys"`
	// Services this member offers to others, sorted.
	Services []string `json:"services"`
	// Relay holds the public endpoints of a member with role relay.
	Relay *RelayEndpoints `json:"relay,omitempty"`
}

// SealKey is an HPKE public key of a member.
type SealKey struct {
	// ID names the key within the member (for rotation); 1-64 of [a-z0-9-].
	ID string `json:"id"`
	// KEM is the HPKE KEM identifier, e.g. 0x647a for ML-KEM-768+X25519.
	KEM uint16 `json:"kem"`
	// Public is the serialized public key.
	Public []byte `json:"public"`
}

// RelayEndpoints are the addresses a relay serves (host:port).
type RelayEndpoints struct {
	// Public is the TCP address clients connect to (TLS passthrough).
	Public string `json:"public"`
	// Pairing is the TCP address private proxies dial back to with a token.
	Pairing string `json:"pairing"`
	// Control is the UDP address of the QUIC control endpoint.
	Control string `json:"control"`
	// ControlTCP is the TCP+TLS fallback of the control endpoint.
	ControlTCP string `json:"control_tcp"`
	// Gossip is the relay-to-relay cluster address; empty if not clustered.
	Gossip string `json:"gossip,omitempty"`
}

// Permission lets callers call services of callees. Caller and Callee are
// selectors: "*" (anyone), "role:<role>" or "member:<name>". Services are
// service names or "*".
type Permission struct {
	Caller   string   `json:"caller"`
	Callee   string   `json:"callee"`
	Services []string `json:"services"`
}

// Revocation revokes a whole member (Pins empty) or only some of its keys.
type Revocation struct {
	Member    string    `json:"member"`
	Pins      []string  `json:"pins,omitempty"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// Limits on directory documents. A document over MaxDirectorySize is refused
// before its signature is checked.
const (
	MaxDirectorySize = 16 << 20 // bytes
	maxServiceName   = 64
	maxDisplayName   = 200
	maxSealKeyLen    = 4096 // bytes; ML-KEM-768+X25519 public keys are 1216
)

// Pin returns the SPKI SHA-256 pin of a certificate, in the form the
// directory uses.
func Pin(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// ValidServiceName checks a service name: 1-64 characters of a-z, 0-9, '-',
// '_' and '.', starting with a letter. Names starting with '_' are reserved
// for services every endpoint answers itself.
func ValidServiceName(s string) error {
	if len(s) == 0 || len(s) > maxServiceName || !('a' <= s[0] && s[0] <= 'z') {
		return fmt.Errorf("pki: invalid service name %q: want 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("pki: invalid service name %q: want 1-64 of a-z, 0-9, '-', '_', '.', starting with a letter", s)
		}
	}
	return nil
}

func validSelector(s string) error {
	switch {
	case s == "*":
		return nil
	case strings.HasPrefix(s, "role:"):
		if !Role(s[len("role:"):]).Valid() {
			return fmt.Errorf("unknown role in selector %q", s)
		}
		return nil
	case strings.HasPrefix(s, "member:"):
		return ValidName(s[len("member:"):])
	}
	return fmt.Errorf("selector %q: want *, role:<role> or member:<name>", s)
}

func validPin(p string) error {
	b, err := base64.StdEncoding.DecodeString(p)
	if err != nil || len(b) != sha256.Size || base64.StdEncoding.EncodeToString(b) != p {
		return fmt.Errorf("pin %q is not a canonical base64 SHA-256 digest", p)
	}
	return nil
}

func validHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" || port == "" || !utf8.ValidString(s) {
		return fmt.Errorf("address %q: want host:port", s)
	}
	return nil
}

// Validate checks the document's contents. It does not check validity times
// against a clock; the Verifier does.
func (d *Directory) Validate() error {
	if err := ValidNetwork(d.Network); err != nil {
		return err
	}
	if d.Version == 0 {
		return errors.New("pki: directory version must be at least 1")
	}
	if d.IssuedAt.IsZero() || !d.ExpiresAt.After(d.IssuedAt) {
		return errors.New("pki: directory expires_at must be after issued_at")
	}
	seen := make(map[string]bool, len(d.Members))
	for i := range d.Members {
		m := &d.Members[i]
		if err := m.validate(); err != nil {
			return fmt.Errorf("pki: directory member %q: %w", m.Name, err)
		}
		if seen[m.Name] {
			return fmt.Errorf("pki: directory lists member %q twice", m.Name)
		}
		seen[m.Name] = true
	}
	for i, p := range d.Permissions {
		if err := validSelector(p.Caller); err != nil {
			return fmt.Errorf("pki: directory permission %d: caller: %w", i, err)
		}
		if err := validSelector(p.Callee); err != nil {
			return fmt.Errorf("pki: directory permission %d: callee: %w", i, err)
		}
		if len(p.Services) == 0 {
			return fmt.Errorf("pki: directory permission %d: no services", i)
		}
		for _, s := range p.Services {
			if s == "*" {
				continue
			}
			if err := ValidServiceName(s); err != nil {
				return fmt.Errorf("pki: directory permission %d: %w", i, err)
			}
		}
	}
	if d.Trust != nil {
		if err := d.Trust.validate(); err != nil {
			return fmt.Errorf("pki: directory trust: %w", err)
		}
	}
	for _, r := range d.Revoked {
		if err := ValidName(r.Member); err != nil {
			return fmt.Errorf("pki: directory revocation: %w", err)
		}
		for _, p := range r.Pins {
			if err := validPin(p); err != nil {
				return fmt.Errorf("pki: directory revocation of %q: %w", r.Member, err)
			}
		}
		if len(r.Reason) > maxDisplayName || !utf8.ValidString(r.Reason) {
			return fmt.Errorf("pki: directory revocation of %q: reason must be at most %d bytes of UTF-8", r.Member, maxDisplayName)
		}
	}
	return nil
}

func (m *Member) validate() error {
	if err := ValidName(m.Name); err != nil {
		return err
	}
	if !m.Role.Valid() {
		return fmt.Errorf("unknown role %q", m.Role)
	}
	// Invalid UTF-8 would be encoded as "\ufffd" and decoded to U+FFFD, which
	// re-encodes differently: verifiers would refuse what was signed.
	if m.DisplayName == "" || len(m.DisplayName) > maxDisplayName || strings.ContainsAny(m.DisplayName, "\x00\n\r") || !utf8.ValidString(m.DisplayName) {
		return fmt.Errorf("display name must be 1-%d bytes of UTF-8 on one line", maxDisplayName)
	}
	for _, p := range m.Pins {
		if err := validPin(p); err != nil {
			return err
		}
	}
	keyIDs := map[string]bool{}
	for _, k := range m.SealKeys {
		if !ValidKeyID(k.ID) || keyIDs[k.ID] {
			return fmt.Errorf("seal key id %q: want a unique 1-64 of a-z, 0-9, '-'", k.ID)
		}
		keyIDs[k.ID] = true
		if len(k.Public) == 0 || len(k.Public) > maxSealKeyLen {
			return fmt.Errorf("seal key %q: public key must be 1-%d bytes", k.ID, maxSealKeyLen)
		}
	}
	for _, s := range m.Services {
		if err := ValidServiceName(s); err != nil {
			return err
		}
	}
	if (m.Role == RoleRelay) != (m.Relay != nil) {
		return errors.New("relay endpoints are required for, and only for, role relay")
	}
	if r := m.Relay; r != nil {
		for _, a := range []string{r.Public, r.Pairing, r.Control, r.ControlTCP} {
			if err := validHostPort(a); err != nil {
				return err
			}
		}
		if r.Gossip != "" {
			if err := validHostPort(r.Gossip); err != nil {
				return err
			}
		}
	}
	return nil
}

// ValidKeyID reports whether s is a valid seal key id: 1-64 of a-z, 0-9
// and '-'. Envelopes, states and link pages use the same rule.
func ValidKeyID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Canonical returns the canonical encoding of d: times in UTC truncated to
// seconds, every list sorted, no nil slices, indented JSON with a final
// newline. It validates d first. It modifies d in place to its canonical form.
func (d *Directory) Canonical() ([]byte, error) {
	d.normalize()
	if err := d.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("pki: encode directory: %w", err)
	}
	return append(b, '\n'), nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (d *Directory) normalize() {
	d.IssuedAt = d.IssuedAt.UTC().Truncate(time.Second)
	d.ExpiresAt = d.ExpiresAt.UTC().Truncate(time.Second)
	d.Members = nonNil(d.Members)
	d.Permissions = nonNil(d.Permissions)
	d.Revoked = nonNil(d.Revoked)
	for i := range d.Members {
		m := &d.Members[i]
		m.Pins = nonNil(m.Pins)
		m.SealKeys = nonNil(m.SealKeys)
		m.Services = nonNil(m.Services)
		slices.Sort(m.Pins)
		m.Pins = slices.Compact(m.Pins)
		slices.Sort(m.Services)
		m.Services = slices.Compact(m.Services)
		slices.SortFunc(m.SealKeys, func(a, b SealKey) int { return strings.Compare(a.ID, b.ID) })
	}
	slices.SortFunc(d.Members, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for i := range d.Permissions {
		p := &d.Permissions[i]
		p.Services = nonNil(p.Services)
		slices.Sort(p.Services)
		p.Services = slices.Compact(p.Services)
	}
	for i := range d.Revoked {
		r := &d.Revoked[i]
		r.RevokedAt = r.RevokedAt.UTC().Truncate(time.Second)
		slices.Sort(r.Pins)
		r.Pins = slices.Compact(r.Pins)
	}
	slices.SortStableFunc(d.Revoked, func(a, b Revocation) int { return strings.Compare(a.Member, b.Member) })
	if t := d.Trust; t != nil {
		t.DirectoryKeys = nonNil(t.DirectoryKeys)
		t.Roots = nonNil(t.Roots)
		slices.Sort(t.DirectoryKeys)
		t.DirectoryKeys = slices.Compact(t.DirectoryKeys)
		slices.Sort(t.Roots)
		t.Roots = slices.Compact(t.Roots)
	}
}

// The signed envelope. A signed directory is three parts, separated by the
// first two newlines:
//
//	kurier-directory/v1\n
//	ed25519 <key id> <base64 signature>\n
//	<canonical JSON body>
//
// The signature is Ed25519 over directorySigningContext || body, where body is
// every byte after the second newline, exactly as received.
const (
	directoryMagic          = "kurier-directory/v1"
	directorySigningContext = "kurier-directory/v1\x00"
)

// Errors returned when a signed directory is refused.
var (
	ErrDirectoryFormat      = errors.New("pki: not a signed kurier directory")
	ErrDirectoryUnknownKey  = errors.New("pki: directory signed by an unknown key")
	ErrDirectorySignature   = errors.New("pki: directory signature does not verify")
	ErrDirectoryRollback    = errors.New("pki: directory version is older than the one held")
	ErrDirectoryExpired     = errors.New("pki: directory has expired")
	ErrDirectoryNotYetValid = errors.New("pki: directory is not valid yet")
	ErrDirectoryNetwork     = errors.New("pki: directory is for another network")
	ErrDirectoryConflict    = errors.New("pki: directory has the same version as the one held but different contents")
)

// DirectoryKeyID returns the key id of a directory signing key: the first 8
// bytes of the SHA-256 of the raw public key, in hex.
func DirectoryKeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// SignDirectory encodes d canonically and signs it with key. It updates d to
// its canonical form.
func SignDirectory(d *Directory, key ed25519.PrivateKey) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize { // ed25519.Sign would panic
		return nil, errors.New("pki: directory signing key is not an Ed25519 private key")
	}
	body, err := d.Canonical()
	if err != nil {
		return nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	sig := ed25519.Sign(key, append([]byte(directorySigningContext), body...))
	var out bytes.Buffer
	out.Grow(len(body) + 128)
	fmt.Fprintf(&out, "%s\ned25519 %s %s\n", directoryMagic, DirectoryKeyID(pub), base64.StdEncoding.EncodeToString(sig))
	out.Write(body)
	return out.Bytes(), nil
}

// VerifyDirectorySignature checks the signature over the exact body bytes of a
// signed directory and returns the body and the id of the key that signed it.
// It parses nothing of the body. keys maps key ids to trusted public keys.
func VerifyDirectorySignature(signed []byte, keys map[string]ed25519.PublicKey) (body []byte, keyID string, err error) {
	if len(signed) > MaxDirectorySize {
		return nil, "", fmt.Errorf("%w: %d bytes exceeds the %d byte limit", ErrDirectoryFormat, len(signed), MaxDirectorySize)
	}
	magic, rest, ok := bytes.Cut(signed, []byte{'\n'})
	if !ok || string(magic) != directoryMagic {
		return nil, "", fmt.Errorf("%w: missing %q header", ErrDirectoryFormat, directoryMagic)
	}
	sigLine, body, ok := bytes.Cut(rest, []byte{'\n'})
	if !ok {
		return nil, "", fmt.Errorf("%w: missing signature line", ErrDirectoryFormat)
	}
	f := strings.Split(string(sigLine), " ")
	if len(f) != 3 || f[0] != "ed25519" {
		return nil, "", fmt.Errorf("%w: signature line must be \"ed25519 <key id> <signature>\"", ErrDirectoryFormat)
	}
	pub, ok := keys[f[1]]
	if !ok || len(pub) != ed25519.PublicKeySize { // ed25519.Verify panics on a short key
		return nil, "", fmt.Errorf("%w: %q", ErrDirectoryUnknownKey, f[1])
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(f[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, "", fmt.Errorf("%w: malformed signature", ErrDirectoryFormat)
	}
	msg := make([]byte, 0, len(directorySigningContext)+len(body))
	msg = append(append(msg, directorySigningContext...), body...)
	if !ed25519.Verify(pub, msg, sig) {
		return nil, "", ErrDirectorySignature
	}
	return body, f[1], nil
}

// ParseDirectoryBody decodes and validates a directory body. Call it only on
// bytes whose signature has been verified. Unknown fields are an error, and
// the body must be in canonical form, so that what was signed is exactly what
// is understood.
func ParseDirectoryBody(body []byte) (*Directory, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var d Directory
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: decode body: %v", ErrDirectoryFormat, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after body", ErrDirectoryFormat)
	}
	canon, err := (&d).Canonical()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDirectoryFormat, err)
	}
	if !bytes.Equal(canon, body) {
		return nil, fmt.Errorf("%w: body is not in canonical form", ErrDirectoryFormat)
	}
	return &d, nil
}

// ParseSignedDirectory verifies the signature of a signed directory and then
// parses its body. It does not check validity times or versions; use a
// Verifier for that.
func ParseSignedDirectory(signed []byte, keys map[string]ed25519.PublicKey) (*Directory, string, error) {
	body, kid, err := VerifyDirectorySignature(signed, keys)
	if err != nil {
		return nil, "", err
	}
	d, err := ParseDirectoryBody(body)
	if err != nil {
		return nil, "", err
	}
	return d, kid, nil
}

// Member returns the member named name.
func (d *Directory) Member(name string) (*Member, bool) {
	i, ok := slices.BinarySearchFunc(d.Members, name, func(m Member, n string) int { return strings.Compare(m.Name, n) })
	if !ok {
		return nil, false
	}
	return &d.Members[i], true
}
