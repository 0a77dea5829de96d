package ca

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// Policy is the permission policy a directory is signed with. Its file form
// is {"permissions":[{"caller":"role:health-office","callee":"role:provider","services":["*"]}]}.
type Policy struct {
	Permissions []pki.Permission `json:"permissions"`
}

// DefaultPolicy lets health offices and providers call each other's services
// in both directions, and health offices call each other. Members of role
// service (the location index of docs/contact-data.md) get only what the
// contact-data flows need: providers may call "locations", health offices
// "location-search".
func DefaultPolicy() *Policy {
	all := []string{"*"}
	return &Policy{Permissions: []pki.Permission{
		{Caller: "role:health-office", Callee: "role:provider", Services: all},
		{Caller: "role:provider", Callee: "role:health-office", Services: all},
		{Caller: "role:health-office", Callee: "role:health-office", Services: all},
		{Caller: "role:provider", Callee: "role:service", Services: []string{"locations"}},
		{Caller: "role:health-office", Callee: "role:service", Services: []string{"location-search"}},
	}}
}

// maxPolicySize bounds a policy file.
const maxPolicySize = 1 << 20

// ParsePolicy decodes a policy strictly (unknown fields are an error) and
// checks it with the directory's rules.
func ParsePolicy(b []byte) (*Policy, error) {
	if len(b) > maxPolicySize {
		return nil, fmt.Errorf("ca: policy larger than %d bytes", maxPolicySize)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("ca: policy: %w", err)
	}
	if dec.More() {
		return nil, errors.New("ca: policy: trailing data")
	}
	if p.Permissions == nil {
		return nil, errors.New("ca: policy: missing \"permissions\"")
	}
	d := pki.Directory{Network: "policy.check", Version: 1, IssuedAt: time.Unix(1, 0), ExpiresAt: time.Unix(2, 0), Permissions: p.Permissions}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("ca: policy: %w", err)
	}
	return &p, nil
}

// BuildDirectory returns the directory of members at now: active and
// suspended members (Suspended set) with their unexpired pins, seal keys,
// services and relay endpoints; revoked members as whole-member revocations;
// revoked keys of earlier members of a reused name as key revocations. The
// document is valid from now for validity.
func BuildDirectory(network string, members []Member, p *Policy, version uint64, now time.Time, validity time.Duration) (*pki.Directory, error) {
	if p == nil {
		p = DefaultPolicy()
	}
	now = now.UTC().Truncate(time.Second)
	d := &pki.Directory{
		Network:     network,
		Version:     version,
		IssuedAt:    now,
		ExpiresAt:   now.Add(validity),
		Members:     []pki.Member{},
		Permissions: slices.Clone(p.Permissions),
		Revoked:     []pki.Revocation{},
	}
	for i := range members {
		m := &members[i]
		if m.Status == StatusRevoked {
			d.Revoked = append(d.Revoked, pki.Revocation{Member: m.Name, RevokedAt: m.StatusChangedAt, Reason: m.StatusReason})
			continue
		}
		d.Members = append(d.Members, m.entry(now))
		for _, r := range m.RevokedKeys {
			d.Revoked = append(d.Revoked, pki.Revocation{Member: m.Name, Pins: slices.Clone(r.Pins), RevokedAt: r.RevokedAt, Reason: r.Reason})
		}
	}
	if _, err := d.Canonical(); err != nil {
		return nil, fmt.Errorf("ca: build directory: %w", err)
	}
	return d, nil
}

// SignOptions configure PublishDirectory.
type SignOptions struct {
	// Policy grants permissions. If nil, DefaultPolicy is used.
	Policy *Policy
	// Validity is how long the document is valid. If zero, 7 days.
	Validity time.Duration
}

// Published is a directory that was signed and written.
type Published struct {
	Directory *pki.Directory
	Signed    []byte
	KeyID     string
	// Path is <ca-dir>/directory/current; VersionPath the copy kept for
	// this version.
	Path        string
	VersionPath string
}

// PublishDirectory builds the directory from the member store, signs it
// with key as the next version (one more than both the last version signed
// and the version of the current file), and writes it to
// <ca-dir>/directory/current (atomically, 0644) and <ca-dir>/directory/v<N>.
// The store stays locked while it does, so concurrent signers neither reuse
// a version nor publish out of order.
func (c *CA) PublishDirectory(key ed25519.PrivateKey, opts SignOptions) (*Published, error) {
	if opts.Validity == 0 {
		opts.Validity = DefaultDirectoryValidity
	}
	if opts.Validity < time.Minute || opts.Validity > 366*24*time.Hour {
		return nil, fmt.Errorf("ca: directory validity %s out of range [1m, 366d]", opts.Validity)
	}
	pub := key.Public().(ed25519.PublicKey)
	if !slices.ContainsFunc(c.dirKeys, func(k ed25519.PublicKey) bool { return k.Equal(pub) }) {
		return nil, errors.New("ca: signing key is not among the trusted directory keys")
	}
	dir := c.path(c.cfg.Directory)
	cur := filepath.Join(dir, currentDirFile)
	var out *Published
	err := c.store.nextDirectory(func(members []Member, version uint64) (uint64, error) {
		// Never publish below what is already current, even if the store
		// was restored from an older backup.
		if b, err := os.ReadFile(cur); err == nil {
			if d, _, err := pki.ParseSignedDirectory(b, c.keyMap()); err == nil && d.Version >= version {
				version = d.Version + 1
			}
		}
		d, err := BuildDirectory(c.cfg.Network, members, opts.Policy, version, c.now(), opts.Validity)
		if err != nil {
			return 0, err
		}
		// The directory key vouches for the trust anchors, so members follow
		// key and root rotations without trusting the online CA for them.
		d.Trust = pki.NewTrustAnchors(c.DirectoryKeys(), c.Roots())
		signed, err := pki.SignDirectory(d, key)
		if err != nil {
			return 0, fmt.Errorf("ca: sign directory: %w", err)
		}
		vp := filepath.Join(dir, "v"+strconv.FormatUint(version, 10))
		if err := writeAtomic(vp, signed, 0o644); err != nil {
			return 0, fmt.Errorf("ca: write directory: %w", err)
		}
		if err := writeAtomic(cur, signed, 0o644); err != nil {
			return 0, fmt.Errorf("ca: write directory: %w", err)
		}
		out = &Published{Directory: d, Signed: signed, KeyID: pki.DirectoryKeyID(pub), Path: cur, VersionPath: vp}
		return version, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CurrentPolicy returns the permissions of the current signed directory, so
// that a re-publication (after a suspension or revocation) keeps the policy
// the operator last signed with. If nothing was published yet it returns
// DefaultPolicy.
func (c *CA) CurrentPolicy() (*Policy, error) {
	b, err := os.ReadFile(c.CurrentDirectoryPath())
	if errors.Is(err, os.ErrNotExist) {
		return DefaultPolicy(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: read current directory: %w", err)
	}
	d, _, err := pki.ParseSignedDirectory(b, c.keyMap())
	if err != nil {
		return nil, fmt.Errorf("ca: current directory: %w", err)
	}
	return &Policy{Permissions: d.Permissions}, nil
}

// CurrentDirectoryPath returns the path of the current signed directory.
func (c *CA) CurrentDirectoryPath() string {
	return filepath.Join(c.path(c.cfg.Directory), currentDirFile)
}

func (c *CA) keyMap() map[string]ed25519.PublicKey { return keyMap(c.dirKeys) }

func keyMap(keys []ed25519.PublicKey) map[string]ed25519.PublicKey {
	m := make(map[string]ed25519.PublicKey, len(keys))
	for _, k := range keys {
		m[pki.DirectoryKeyID(k)] = k
	}
	return m
}

// maxClockSkew is how far in the future a directory's issued_at may lie; the
// same bound as pki.Verifier's.
const maxClockSkew = 5 * time.Minute

// VerifyOptions configure VerifyDirectory.
type VerifyOptions struct {
	// Keys are the trusted directory keys. Required.
	Keys []ed25519.PublicKey
	// Network, if set, is the network the document must be for.
	Network string
	// MinVersion, if set, refuses documents with an older version (a
	// rollback), with pki.ErrDirectoryRollback.
	MinVersion uint64
	// Now is the time validity is checked at. If zero, time.Now is used.
	Now time.Time
}

// VerifyDirectory checks a signed directory the way a daemon's pki.Verifier
// does: the signature over the exact bytes, then the canonical body, the
// network, the version against MinVersion, and the validity period. Errors
// wrap the pki.ErrDirectory* sentinels.
func VerifyDirectory(signed []byte, o VerifyOptions) (*pki.Directory, string, error) {
	if len(o.Keys) == 0 {
		return nil, "", errors.New("ca: no directory keys to verify with")
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	d, kid, err := pki.ParseSignedDirectory(signed, keyMap(o.Keys))
	if err != nil {
		return nil, "", err
	}
	switch {
	case o.Network != "" && d.Network != o.Network:
		return nil, "", fmt.Errorf("%w: %q, want %q", pki.ErrDirectoryNetwork, d.Network, o.Network)
	case d.Version < o.MinVersion:
		return nil, "", fmt.Errorf("%w: got version %d, want at least %d", pki.ErrDirectoryRollback, d.Version, o.MinVersion)
	case !o.Now.Before(d.ExpiresAt):
		return nil, "", fmt.Errorf("%w: version %d expired at %s", pki.ErrDirectoryExpired, d.Version, d.ExpiresAt.Format(time.RFC3339))
	case d.IssuedAt.After(o.Now.Add(maxClockSkew)):
		return nil, "", fmt.Errorf("%w: version %d is issued at %s", pki.ErrDirectoryNotYetValid, d.Version, d.IssuedAt.Format(time.RFC3339))
	}
	return d, kid, nil
}

// ParseDirectoryUnverified parses a signed directory without checking its
// signature, for display. It returns the id of the key that claims to have
// signed it. Never trust what it returns.
func ParseDirectoryUnverified(signed []byte) (*pki.Directory, string, error) {
	if len(signed) > pki.MaxDirectorySize {
		return nil, "", fmt.Errorf("%w: larger than %d bytes", pki.ErrDirectoryFormat, pki.MaxDirectorySize)
	}
	magic, rest, ok := bytes.Cut(signed, []byte{'\n'})
	if !ok || string(magic) != "kurier-directory/v1" {
		return nil, "", fmt.Errorf("%w: missing kurier-directory/v1 header", pki.ErrDirectoryFormat)
	}
	sig, body, ok := bytes.Cut(rest, []byte{'\n'})
	f := strings.Split(string(sig), " ")
	if !ok || len(f) != 3 || f[0] != "ed25519" {
		return nil, "", fmt.Errorf("%w: malformed signature line", pki.ErrDirectoryFormat)
	}
	d, err := pki.ParseDirectoryBody(body)
	if err != nil {
		return nil, "", err
	}
	return d, f[1], nil
}

// Change is an old and a new value.
type Change struct {
	Old string `json:"old"`
	New string `json:"new"`
}

// MemberDiff lists what changed in one member's entry. Empty fields did not
// change.
type MemberDiff struct {
	Name            string   `json:"name"`
	Role            *Change  `json:"role,omitempty"`
	DisplayName     *Change  `json:"display_name,omitempty"`
	Status          *Change  `json:"status,omitempty"`
	PinsAdded       []string `json:"pins_added,omitempty"`
	PinsRemoved     []string `json:"pins_removed,omitempty"`
	SealKeysAdded   []string `json:"seal_keys_added,omitempty"`
	SealKeysRemoved []string `json:"seal_keys_removed,omitempty"`
	SealKeysChanged []string `json:"seal_keys_changed,omitempty"`
	ServicesAdded   []string `json:"services_added,omitempty"`
	ServicesRemoved []string `json:"services_removed,omitempty"`
	Relay           *Change  `json:"relay,omitempty"`
}

// DirectoryDiff is what changed between two directories. Its JSON encoding is
// the stable output of `kurierctl directory diff --json`.
type DirectoryDiff struct {
	Network            string           `json:"network"`
	OldVersion         uint64           `json:"old_version"`
	NewVersion         uint64           `json:"new_version"`
	OldExpiresAt       time.Time        `json:"old_expires_at"`
	NewExpiresAt       time.Time        `json:"new_expires_at"`
	MembersAdded       []string         `json:"members_added"`
	MembersRemoved     []string         `json:"members_removed"`
	MembersChanged     []MemberDiff     `json:"members_changed"`
	PermissionsAdded   []pki.Permission `json:"permissions_added"`
	PermissionsRemoved []pki.Permission `json:"permissions_removed"`
	RevocationsAdded   []pki.Revocation `json:"revocations_added"`
	RevocationsRemoved []pki.Revocation `json:"revocations_removed"`
	NetworkChanged     *Change          `json:"network_changed,omitempty"`
}

// Empty reports whether nothing but version and validity changed.
func (d *DirectoryDiff) Empty() bool {
	return len(d.MembersAdded)+len(d.MembersRemoved)+len(d.MembersChanged)+
		len(d.PermissionsAdded)+len(d.PermissionsRemoved)+
		len(d.RevocationsAdded)+len(d.RevocationsRemoved) == 0 && d.NetworkChanged == nil
}

// Diff compares two directories.
func Diff(oldD, newD *pki.Directory) *DirectoryDiff {
	df := &DirectoryDiff{
		Network:            newD.Network,
		OldVersion:         oldD.Version,
		NewVersion:         newD.Version,
		OldExpiresAt:       oldD.ExpiresAt,
		NewExpiresAt:       newD.ExpiresAt,
		MembersAdded:       []string{},
		MembersRemoved:     []string{},
		MembersChanged:     []MemberDiff{},
		PermissionsAdded:   []pki.Permission{},
		PermissionsRemoved: []pki.Permission{},
		RevocationsAdded:   []pki.Revocation{},
		RevocationsRemoved: []pki.Revocation{},
	}
	if oldD.Network != newD.Network {
		df.NetworkChanged = &Change{Old: oldD.Network, New: newD.Network}
	}
	oldM := map[string]*pki.Member{}
	for i := range oldD.Members {
		oldM[oldD.Members[i].Name] = &oldD.Members[i]
	}
	newM := map[string]*pki.Member{}
	for i := range newD.Members {
		m := &newD.Members[i]
		newM[m.Name] = m
		o, ok := oldM[m.Name]
		if !ok {
			df.MembersAdded = append(df.MembersAdded, m.Name)
			continue
		}
		if md, changed := diffMember(o, m); changed {
			df.MembersChanged = append(df.MembersChanged, md)
		}
	}
	for _, m := range oldD.Members {
		if _, ok := newM[m.Name]; !ok {
			df.MembersRemoved = append(df.MembersRemoved, m.Name)
		}
	}
	df.PermissionsAdded, df.PermissionsRemoved = diffBy(oldD.Permissions, newD.Permissions, permKey)
	df.RevocationsAdded, df.RevocationsRemoved = diffBy(oldD.Revoked, newD.Revoked, revKey)
	return df
}

func permKey(p pki.Permission) string {
	return p.Caller + "\x00" + p.Callee + "\x00" + strings.Join(p.Services, ",")
}

func revKey(r pki.Revocation) string {
	return r.Member + "\x00" + strings.Join(r.Pins, ",") + "\x00" + r.RevokedAt.UTC().Format(time.RFC3339) + "\x00" + r.Reason
}

// diffBy returns the elements of b not in a (added) and of a not in b
// (removed), compared by key.
func diffBy[T any](a, b []T, key func(T) string) (added, removed []T) {
	added, removed = []T{}, []T{}
	ka := map[string]bool{}
	for _, x := range a {
		ka[key(x)] = true
	}
	kb := map[string]bool{}
	for _, x := range b {
		kb[key(x)] = true
		if !ka[key(x)] {
			added = append(added, x)
		}
	}
	for _, x := range a {
		if !kb[key(x)] {
			removed = append(removed, x)
		}
	}
	return added, removed
}

func strSetDiff(a, b []string) (added, removed []string) {
	added, removed = diffBy(a, b, func(s string) string { return s })
	if len(added) == 0 {
		added = nil
	}
	if len(removed) == 0 {
		removed = nil
	}
	return added, removed
}

func memberStatus(m *pki.Member) string {
	if m.Suspended {
		return string(StatusSuspended)
	}
	return string(StatusActive)
}

func relayString(r *pki.RelayEndpoints) string {
	if r == nil {
		return ""
	}
	return fmt.Sprintf("public=%s pairing=%s control=%s control_tcp=%s gossip=%s", r.Public, r.Pairing, r.Control, r.ControlTCP, r.Gossip)
}

func diffMember(o, n *pki.Member) (MemberDiff, bool) {
	md := MemberDiff{Name: n.Name}
	changed := false
	set := func(dst **Change, a, b string) {
		if a != b {
			*dst = &Change{Old: a, New: b}
			changed = true
		}
	}
	set(&md.Role, string(o.Role), string(n.Role))
	set(&md.DisplayName, o.DisplayName, n.DisplayName)
	set(&md.Status, memberStatus(o), memberStatus(n))
	set(&md.Relay, relayString(o.Relay), relayString(n.Relay))
	md.PinsAdded, md.PinsRemoved = strSetDiff(o.Pins, n.Pins)
	md.ServicesAdded, md.ServicesRemoved = strSetDiff(o.Services, n.Services)
	ok := map[string]pki.SealKey{}
	for _, k := range o.SealKeys {
		ok[k.ID] = k
	}
	nk := map[string]bool{}
	for _, k := range n.SealKeys {
		nk[k.ID] = true
		switch prev, found := ok[k.ID]; {
		case !found:
			md.SealKeysAdded = append(md.SealKeysAdded, k.ID)
		case prev.KEM != k.KEM || !bytes.Equal(prev.Public, k.Public):
			md.SealKeysChanged = append(md.SealKeysChanged, k.ID)
		}
	}
	for _, k := range o.SealKeys {
		if !nk[k.ID] {
			md.SealKeysRemoved = append(md.SealKeysRemoved, k.ID)
		}
	}
	changed = changed || len(md.PinsAdded)+len(md.PinsRemoved)+len(md.ServicesAdded)+len(md.ServicesRemoved)+
		len(md.SealKeysAdded)+len(md.SealKeysRemoved)+len(md.SealKeysChanged) > 0
	return md, changed
}
