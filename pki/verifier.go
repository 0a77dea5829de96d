package pki

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Errors returned when a peer is refused by the directory.
var (
	ErrNoDirectory    = errors.New("pki: no verified directory loaded")
	ErrNotMember      = errors.New("pki: peer is not a member of the network")
	ErrRevoked        = errors.New("pki: peer has been revoked")
	ErrSuspended      = errors.New("pki: peer is suspended")
	ErrUnpinned       = errors.New("pki: peer key is not pinned in the directory")
	ErrWrongNetwork   = errors.New("pki: peer belongs to another network")
	ErrUnexpectedPeer = errors.New("pki: peer is not the member that was dialled")
)

// maxClockSkew is how far in the future a directory's issued_at may lie.
const maxClockSkew = 5 * time.Minute

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// Network is the network name documents must carry. Required.
	Network string
	// Keys are the trusted directory signing keys. Several keys at once
	// allow a rotation of the directory key. Required.
	Keys []ed25519.PublicKey
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

// Verifier holds the newest good directory. It checks every new document's
// signature over the exact bytes received before parsing it, refuses
// rollbacks, expired documents and documents for another network, and keeps
// the last good document when a new one is refused. It is safe for concurrent
// use; lookups take no lock.
type Verifier struct {
	network string
	keys    atomic.Pointer[map[string]ed25519.PublicKey] // replaced as a whole
	now     func() time.Time

	cur atomic.Pointer[Snapshot]

	mu      sync.Mutex    // serializes Update and guards changed
	changed chan struct{} // closed and replaced on each new version
}

// NewVerifier returns a Verifier with no directory loaded.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if err := ValidNetwork(cfg.Network); err != nil {
		return nil, err
	}
	if len(cfg.Keys) == 0 {
		return nil, errors.New("pki: verifier needs at least one directory key")
	}
	v := &Verifier{network: cfg.Network, now: cfg.Now, changed: make(chan struct{})}
	keys, err := keyMap(cfg.Keys)
	if err != nil {
		return nil, err
	}
	v.keys.Store(&keys)
	if v.now == nil {
		v.now = time.Now
	}
	return v, nil
}

func keyMap(keys []ed25519.PublicKey) (map[string]ed25519.PublicKey, error) {
	m := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return nil, errors.New("pki: directory key is not an Ed25519 public key")
		}
		m[DirectoryKeyID(k)] = k
	}
	return m, nil
}

// Keys returns the directory keys trusted now, sorted by key id.
func (v *Verifier) Keys() []ed25519.PublicKey {
	m := *v.keys.Load()
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]ed25519.PublicKey, 0, len(ids))
	for _, id := range ids {
		out = append(out, m[id])
	}
	return out
}

// Network returns the network this verifier accepts documents for.
func (v *Verifier) Network() string { return v.network }

// Update verifies signed and, if it is good and newer than the current
// document, makes it current. It reports whether the current document
// changed. A document with the same version and the same bytes is accepted
// without change; the same version with other bytes is refused. On error the
// current document stays in service.
//
// If the accepted document lists trust anchors, the verifier trusts exactly
// its directory keys from then on (a document whose list leaves out the key
// that signed it is refused).
func (v *Verifier) Update(signed []byte) (bool, error) {
	body, kid, err := VerifyDirectorySignature(signed, *v.keys.Load())
	if err != nil {
		return false, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := v.cur.Load()
	if cur != nil && bytes.Equal(cur.Signed, signed) {
		return false, nil
	}
	d, err := ParseDirectoryBody(body)
	if err != nil {
		return false, err
	}
	if d.Network != v.network {
		return false, fmt.Errorf("%w: %q, want %q", ErrDirectoryNetwork, d.Network, v.network)
	}
	if cur != nil {
		switch {
		case d.Version < cur.Dir.Version:
			return false, fmt.Errorf("%w: got version %d, hold %d", ErrDirectoryRollback, d.Version, cur.Dir.Version)
		case d.Version == cur.Dir.Version:
			return false, fmt.Errorf("%w: version %d", ErrDirectoryConflict, d.Version)
		}
	}
	now := v.now()
	if !now.Before(d.ExpiresAt) {
		return false, fmt.Errorf("%w: version %d expired at %s", ErrDirectoryExpired, d.Version, d.ExpiresAt.Format(time.RFC3339))
	}
	if d.IssuedAt.After(now.Add(maxClockSkew)) {
		return false, fmt.Errorf("%w: version %d is issued at %s", ErrDirectoryNotYetValid, d.Version, d.IssuedAt.Format(time.RFC3339))
	}
	var next map[string]ed25519.PublicKey
	if d.Trust != nil {
		keys, err := d.Trust.Keys()
		if err == nil {
			next, err = keyMap(keys)
		}
		if err != nil {
			return false, fmt.Errorf("%w: %v", ErrDirectoryFormat, err)
		}
		if _, ok := next[kid]; !ok {
			return false, fmt.Errorf("%w: version %d does not list the key %s that signed it", ErrDirectoryFormat, d.Version, kid)
		}
	}
	s := newSnapshot(d, bytes.Clone(signed), kid)
	if next != nil {
		v.keys.Store(&next)
	}
	v.cur.Store(s)
	close(v.changed)
	v.changed = make(chan struct{})
	return true, nil
}

// Current returns the current snapshot, or nil if none was loaded.
func (v *Verifier) Current() *Snapshot { return v.cur.Load() }

// Changed returns a channel that is closed when the next new version becomes
// current.
func (v *Verifier) Changed() <-chan struct{} {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.changed
}

// Age returns how long ago the current document was issued, and false if no
// document is loaded.
func (v *Verifier) Age() (time.Duration, bool) {
	s := v.cur.Load()
	if s == nil {
		return 0, false
	}
	return v.now().Sub(s.Dir.IssuedAt), true
}

// Authorize checks a peer's leaf certificate (from a verified chain) against
// the current directory at the current time.
func (v *Verifier) Authorize(leaf *x509.Certificate) (ID, *Member, error) {
	s := v.cur.Load()
	if s == nil {
		return ID{}, nil, ErrNoDirectory
	}
	return s.Authorize(leaf, v.now())
}

// Snapshot is one verified directory with lookup indexes. It is immutable.
type Snapshot struct {
	// Dir is the parsed document.
	Dir *Directory
	// Signed is the signed document exactly as received.
	Signed []byte
	// KeyID is the id of the key that signed it.
	KeyID string

	revokedMembers map[string]bool
	revokedPins    map[string]bool
}

func newSnapshot(d *Directory, signed []byte, kid string) *Snapshot {
	s := &Snapshot{Dir: d, Signed: signed, KeyID: kid, revokedMembers: map[string]bool{}, revokedPins: map[string]bool{}}
	for _, r := range d.Revoked {
		if len(r.Pins) == 0 {
			s.revokedMembers[r.Member] = true
		}
		for _, p := range r.Pins {
			s.revokedPins[p] = true
		}
	}
	return s
}

// IsRevoked reports whether the member, or the key with the given pin, is
// revoked. pin may be empty.
func (s *Snapshot) IsRevoked(name, pin string) bool {
	return s.revokedMembers[name] || (pin != "" && s.revokedPins[pin])
}

// Authorize checks a peer's leaf certificate against this directory: the
// identity must name a listed, active, unrevoked member of this network with
// the role the directory gives it, and the certificate's key must be pinned.
// The chain itself must already have been verified against the network roots.
func (s *Snapshot) Authorize(leaf *x509.Certificate, now time.Time) (ID, *Member, error) {
	id, err := IDFromCert(leaf)
	if err != nil {
		return ID{}, nil, err
	}
	d := s.Dir
	if id.Network != d.Network {
		return ID{}, nil, fmt.Errorf("%w: %s", ErrWrongNetwork, id)
	}
	if !now.Before(d.ExpiresAt) {
		return ID{}, nil, fmt.Errorf("%w: version %d expired at %s", ErrDirectoryExpired, d.Version, d.ExpiresAt.Format(time.RFC3339))
	}
	m, ok := d.Member(id.Name)
	if !ok || m.Role != id.Role {
		return ID{}, nil, fmt.Errorf("%w: %s", ErrNotMember, id)
	}
	pin := Pin(leaf)
	if s.IsRevoked(id.Name, pin) {
		return ID{}, nil, fmt.Errorf("%w: %s", ErrRevoked, id)
	}
	if m.Suspended {
		return ID{}, nil, fmt.Errorf("%w: %s", ErrSuspended, id)
	}
	for _, p := range m.Pins {
		if p == pin {
			return id, m, nil
		}
	}
	return ID{}, nil, fmt.Errorf("%w: %s key %s", ErrUnpinned, id, pin)
}

// Allowed reports whether caller may call service on the member named callee.
// The caller must be a member of this directory's network with the role the
// directory gives it. Suspended or revoked callers and callees are never
// allowed, and the callee must offer the service.
func (s *Snapshot) Allowed(caller ID, callee, service string) bool {
	if caller.Network != s.Dir.Network {
		return false
	}
	cm, ok := s.Dir.Member(caller.Name)
	if !ok || cm.Role != caller.Role || cm.Suspended || s.IsRevoked(cm.Name, "") {
		return false
	}
	tm, ok := s.Dir.Member(callee)
	if !ok || tm.Suspended || s.IsRevoked(tm.Name, "") {
		return false
	}
	offered := false
	for _, sv := range tm.Services {
		if sv == service {
			offered = true
			break
		}
	}
	if !offered {
		return false
	}
	for _, p := range s.Dir.Permissions {
		if selects(p.Caller, cm) && selects(p.Callee, tm) && grants(p.Services, service) {
			return true
		}
	}
	return false
}

func selects(sel string, m *Member) bool {
	switch {
	case sel == "*":
		return true
	case strings.HasPrefix(sel, "role:"):
		return Role(sel[len("role:"):]) == m.Role
	case strings.HasPrefix(sel, "member:"):
		return sel[len("member:"):] == m.Name
	}
	return false
}

func grants(services []string, service string) bool {
	for _, s := range services {
		if s == "*" || s == service {
			return true
		}
	}
	return false
}
