// Package pki holds what every Kurier process needs to know who it talks to:
// member identities, the signed member directory and its verifier, the
// tls.Config builders for servers and clients (TCP and QUIC), and the client
// side of the network CA (enrolment and renewal over the CA's HTTP API).
//
// A member's identity is carried by its certificate: exactly one URI SAN
// spiffe://<network>/<role>/<name> and the DNS SAN <name>.<network>. Identity
// is only ever taken from a verified TLS handshake, never from a payload.
//
// The package reads no flags, environment variables or files it was not
// handed. It imports none of relay, proxy or eps. The smallstep authority is
// wrapped in pki/ca, which only kurierctl links.
package pki

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
)

// Role is what a member does in the network. It decides default permissions
// and which names a member may register at the relays.
type Role string

// The roles a member can have.
const (
	RoleHealthOffice Role = "health-office"
	RoleProvider     Role = "provider"
	RoleRelay        Role = "relay"
	// RoleService is a network service run by one member's software for
	// the others, such as the location index (eps/locations). It is
	// neither an office nor a provider: permissions name it explicitly.
	RoleService Role = "service"
)

// Roles lists every valid role, in a stable order.
var Roles = []Role{RoleHealthOffice, RoleProvider, RoleRelay, RoleService}

// Valid reports whether r is one of the known roles.
func (r Role) Valid() bool {
	switch r {
	case RoleHealthOffice, RoleProvider, RoleRelay, RoleService:
		return true
	}
	return false
}

// ParseRole parses s as a role.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("pki: unknown role %q (want health-office, provider, relay or service)", s)
	}
	return r, nil
}

// ErrBadIdentity is returned when a certificate or URI does not carry a
// well-formed member identity.
var ErrBadIdentity = errors.New("pki: malformed member identity")

// ID names one member of one network.
type ID struct {
	Network string
	Role    Role
	Name    string
}

// NewID checks the parts and returns the identity they name.
func NewID(network string, role Role, name string) (ID, error) {
	if err := ValidNetwork(network); err != nil {
		return ID{}, err
	}
	if !role.Valid() {
		return ID{}, fmt.Errorf("pki: unknown role %q", role)
	}
	if err := ValidName(name); err != nil {
		return ID{}, err
	}
	return ID{Network: network, Role: role, Name: name}, nil
}

// URI returns the SPIFFE-style URI SAN of the identity.
func (id ID) URI() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.Network, Path: "/" + string(id.Role) + "/" + id.Name}
}

// DNSName returns the DNS SAN of the identity, <name>.<network>. It is also the
// TLS server name other members use to reach this member through a relay.
func (id ID) DNSName() string { return id.Name + "." + id.Network }

// String returns the URI form.
func (id ID) String() string { return id.URI().String() }

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses a spiffe://<network>/<role>/<name> URI.
func ParseID(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	id, err := idFromURI(u)
	if err != nil {
		return ID{}, err
	}
	// url.Parse lowercases the scheme and drops an empty fragment, so
	// "SPIFFE://n/r/x" and "spiffe://n/r/x#" would otherwise name the same
	// member as "spiffe://n/r/x". Accept only the one canonical spelling.
	if s != id.String() {
		return ID{}, fmt.Errorf("%w: %q is not in canonical form %q", ErrBadIdentity, s, id.String())
	}
	return id, nil
}

func idFromURI(u *url.URL) (ID, error) {
	// RawPath is set when the path was percent-encoded ("/provider/ab%63"
	// decodes to member "abc"), ForceQuery when the URI ends in an empty "?".
	if u.Scheme != "spiffe" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Port() != "" || u.Opaque != "" || u.RawPath != "" {
		return ID{}, fmt.Errorf("%w: %q is not a spiffe://<network>/<role>/<name> URI", ErrBadIdentity, u.String())
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if !strings.HasPrefix(u.Path, "/") || len(parts) != 2 {
		return ID{}, fmt.Errorf("%w: %q is not a spiffe://<network>/<role>/<name> URI", ErrBadIdentity, u.String())
	}
	id, err := NewID(u.Host, Role(parts[0]), parts[1])
	if err != nil {
		return ID{}, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	return id, nil
}

// IDFromCert returns the member identity of a certificate. The certificate
// must carry exactly one URI SAN, and its DNS SANs must be exactly the
// identity's DNS name. It does not verify the certificate: call it on the leaf
// of a verified chain.
func IDFromCert(c *x509.Certificate) (ID, error) {
	if len(c.URIs) != 1 {
		return ID{}, fmt.Errorf("%w: certificate has %d URI SANs, want 1", ErrBadIdentity, len(c.URIs))
	}
	id, err := idFromURI(c.URIs[0])
	if err != nil {
		return ID{}, err
	}
	if len(c.DNSNames) != 1 || c.DNSNames[0] != id.DNSName() {
		return ID{}, fmt.Errorf("%w: DNS SANs %q do not match %s", ErrBadIdentity, c.DNSNames, id.DNSName())
	}
	if len(c.IPAddresses) != 0 || len(c.EmailAddresses) != 0 {
		return ID{}, fmt.Errorf("%w: certificate carries IP or e-mail SANs", ErrBadIdentity)
	}
	return id, nil
}

// ReservedName is the sender name of unsigned (anonymous) sealed payloads,
// such as a citizen's browser submission. No member may carry it.
const ReservedName = "anonymous"

// ValidName checks a member name: one DNS label of lowercase letters, digits
// and hyphens, 1 to 63 characters, not starting or ending with a hyphen, and
// not ReservedName.
func ValidName(name string) error {
	if name == ReservedName {
		return fmt.Errorf("pki: member name %q is reserved", name)
	}
	if !validLabel(name) {
		return fmt.Errorf("pki: invalid member name %q: want 1-63 of a-z, 0-9 and '-', not starting or ending with '-'", name)
	}
	return nil
}

// maxNetwork is the longest network name: a DNS name is at most 253
// characters, and <name>.<network> adds up to 63+1 to it.
const maxNetwork = 253 - 63 - 1

// ValidNetwork checks a network name: a lowercase DNS name of at least one
// label, at most 189 characters, so that <name>.<network> stays a valid DNS
// name (at most 253 characters) for every valid member name.
func ValidNetwork(network string) error {
	if len(network) == 0 || len(network) > maxNetwork {
		return fmt.Errorf("pki: invalid network name %q: want 1-%d characters", network, maxNetwork)
	}
	for _, l := range strings.Split(network, ".") {
		if !validLabel(l) {
			return fmt.Errorf("pki: invalid network name %q: each dot-separated label must be 1-63 of a-z, 0-9 and '-'", network)
		}
	}
	return nil
}

func validLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
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

// Identity is this process's own certificate and key. It is swapped at
// runtime when the certificate is renewed; every tls.Config built by this
// package reads it on each handshake. It is safe for concurrent use.
type Identity struct {
	cert atomic.Pointer[tls.Certificate]
}

// NewIdentity returns an Identity holding c. c.Leaf must be set, or
// c.Certificate[0] must parse.
func NewIdentity(c *tls.Certificate) (*Identity, error) {
	id := new(Identity)
	if err := id.Store(c); err != nil {
		return nil, err
	}
	return id, nil
}

// Store replaces the certificate. Handshakes that already started keep the
// old one. It refuses a certificate without a member identity.
func (id *Identity) Store(c *tls.Certificate) error {
	if c == nil || len(c.Certificate) == 0 || c.PrivateKey == nil {
		return errors.New("pki: identity needs a certificate chain and a private key")
	}
	if c.Leaf == nil {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return fmt.Errorf("pki: parse leaf certificate: %w", err)
		}
		c.Leaf = leaf
	}
	// The identity is read from Leaf but Certificate[0] is what peers see,
	// and a key that does not match would fail every handshake after the
	// swap. Refuse both here, so a bad renewal keeps the old certificate.
	if !bytes.Equal(c.Leaf.Raw, c.Certificate[0]) {
		return errors.New("pki: identity Leaf is not the first certificate of the chain")
	}
	priv, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return errors.New("pki: identity private key cannot sign")
	}
	if pub, ok := priv.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(c.Leaf.PublicKey) {
		return errors.New("pki: identity private key does not match the certificate")
	}
	if _, err := IDFromCert(c.Leaf); err != nil {
		return err
	}
	id.cert.Store(c)
	return nil
}

// Certificate returns the current certificate, or nil.
func (id *Identity) Certificate() *tls.Certificate { return id.cert.Load() }

// ID returns the identity in the current certificate.
func (id *Identity) ID() ID {
	c := id.cert.Load()
	if c == nil {
		return ID{}
	}
	mid, _ := IDFromCert(c.Leaf) // checked in Store
	return mid
}

func (id *Identity) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := id.cert.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("pki: no certificate loaded")
}

func (id *Identity) getClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return id.getCertificate(nil)
}
