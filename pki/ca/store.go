package ca

import (
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kurier-net/kurier/pki"
)

// Status is the standing of a member.
type Status string

// The statuses of a member. Revoked is final.
const (
	StatusActive    Status = "active"
	StatusSuspended Status = "suspended"
	StatusRevoked   Status = "revoked"
)

// Member is a member record in the store. Its JSON encoding is the stable
// output of `kurierctl member show --json` (see docs/pki.md).
type Member struct {
	Name        string   `json:"name"`
	Role        pki.Role `json:"role"`
	DisplayName string   `json:"display_name"`
	// Services the member offers, sorted.
	Services []string `json:"services"`
	// Relay holds the endpoints of a member with role relay.
	Relay *pki.RelayEndpoints `json:"relay,omitempty"`
	// Status, with the time and reason of its last change.
	Status          Status    `json:"status"`
	StatusChangedAt time.Time `json:"status_changed_at,omitzero"`
	StatusReason    string    `json:"status_reason,omitempty"`
	// Pins are the SPKI pins of certificates the CA issued to this member,
	// with the latest expiry seen for each key, sorted by pin.
	Pins []PinRecord `json:"pins"`
	// SealKeys are the member's current HPKE public keys, as it published
	// them to the CA.
	SealKeys          []pki.SealKey `json:"seal_keys"`
	SealKeysUpdatedAt time.Time     `json:"seal_keys_updated_at,omitzero"`
	// RevokedKeys are keys of earlier members of the same name that were
	// revoked before the name was reused. They stay revoked in the directory.
	RevokedKeys []KeyRevocation `json:"revoked_keys,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
}

// PinRecord is one key the CA certified for a member.
type PinRecord struct {
	// Pin is pki.Pin of the certificate.
	Pin string `json:"pin"`
	// NotAfter is the expiry of the newest certificate with this key.
	NotAfter time.Time `json:"not_after"`
}

// KeyRevocation revokes keys of an earlier member of the same name.
type KeyRevocation struct {
	Pins      []string  `json:"pins"`
	RevokedAt time.Time `json:"revoked_at"`
	Reason    string    `json:"reason,omitempty"`
}

// ID returns the member's identity in network.
func (m *Member) ID(network string) pki.ID {
	return pki.ID{Network: network, Role: m.Role, Name: m.Name}
}

// HasPin reports whether pin is one of the member's unexpired pins at now.
func (m *Member) HasPin(pin string, now time.Time) bool {
	for _, p := range m.Pins {
		if p.Pin == pin && now.Before(p.NotAfter) {
			return true
		}
	}
	return false
}

// Errors returned by the store.
var (
	ErrMemberExists = errors.New("ca: member already exists")
	ErrRevokedName  = errors.New("ca: member name belongs to a revoked member")
	ErrNoMember     = errors.New("ca: no such member")
	ErrNotActive    = errors.New("ca: member is not active")
	ErrFinal        = errors.New("ca: member is revoked; revocation is final")
	ErrStoreBusy    = errors.New("ca: member store is locked by another process")
	ErrUnknownPin   = errors.New("ca: certificate key is not pinned for the member")
)

// Limits of member records.
const (
	MaxSealKeys  = 4
	maxServices  = 64
	maxReason    = 200 // bytes; as pki limits revocation reasons
	pinRetention = 7 * 24 * time.Hour
)

var (
	bucketMembers = []byte("members")
	bucketMeta    = []byte("meta")
	keyNetwork    = []byte("network")
	keyDirVersion = []byte("directory_version")
)

// StoreConfig configures a Store.
type StoreConfig struct {
	// Path is the bbolt file. Required.
	Path string
	// Network is the network the store belongs to. Required.
	Network string
	// LockTimeout bounds the wait for the file lock when another process
	// holds it. If zero, 5s is used.
	LockTimeout time.Duration
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

// Store is the member store: a bbolt file shared by the CA server and
// kurierctl. Every operation opens the file, runs one transaction and closes
// it again, so no process holds the lock for long. It is safe for concurrent
// use.
type Store struct {
	cfg StoreConfig
	mu  sync.Mutex // serializes this process's operations, so its goroutines don't poll the file lock against each other
}

// NewStore returns a store for the file at cfg.Path. It does not open the
// file.
func NewStore(cfg StoreConfig) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("ca: StoreConfig.Path is required")
	}
	if err := pki.ValidNetwork(cfg.Network); err != nil {
		return nil, err
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Store{cfg: cfg}, nil
}

func (s *Store) open(readOnly bool) (*bolt.DB, error) {
	if _, err := os.Stat(s.cfg.Path); err != nil {
		return nil, fmt.Errorf("ca: member store: %w", err)
	}
	db, err := bolt.Open(s.cfg.Path, 0o600, &bolt.Options{Timeout: s.cfg.LockTimeout, ReadOnly: readOnly})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%w (waited %s for %s)", ErrStoreBusy, s.cfg.LockTimeout, s.cfg.Path)
		}
		return nil, fmt.Errorf("ca: open member store: %w", err)
	}
	return db, nil
}

// create makes a new store file with its buckets.
func (s *Store) create() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(s.cfg.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("ca: create member store: %w", err)
	}
	f.Close()
	db, err := s.open(false)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket(bucketMembers); err != nil {
			return err
		}
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return meta.Put(keyNetwork, []byte(s.cfg.Network))
	})
}

func (s *Store) checkNetwork(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil || tx.Bucket(bucketMembers) == nil {
		return errors.New("ca: member store has no buckets (not initialised)")
	}
	if n := string(meta.Get(keyNetwork)); n != s.cfg.Network {
		return fmt.Errorf("ca: member store belongs to network %q, not %q", n, s.cfg.Network)
	}
	return nil
}

func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	db, err := s.open(true)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		if err := s.checkNetwork(tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

func (s *Store) update(fn func(tx *bolt.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	db, err := s.open(false)
	if err != nil {
		return err
	}
	defer db.Close()
	return db.Update(func(tx *bolt.Tx) error {
		if err := s.checkNetwork(tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

func getMember(tx *bolt.Tx, name string) (*Member, error) {
	b := tx.Bucket(bucketMembers).Get([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoMember, name)
	}
	var m Member
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("ca: member store record %q: %w", name, err)
	}
	return &m, nil
}

func putMember(tx *bolt.Tx, m *Member) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMembers).Put([]byte(m.Name), b)
}

func (s *Store) now() time.Time { return s.cfg.Now().UTC().Truncate(time.Second) }

// normalize sorts and de-duplicates the lists of m and makes them non-nil.
func (m *Member) normalize() {
	m.Services = nonNil(m.Services)
	slices.Sort(m.Services)
	m.Services = slices.Compact(m.Services)
	m.Pins = nonNil(m.Pins)
	slices.SortFunc(m.Pins, func(a, b PinRecord) int { return strings.Compare(a.Pin, b.Pin) })
	m.SealKeys = nonNil(m.SealKeys)
	slices.SortFunc(m.SealKeys, func(a, b pki.SealKey) int { return strings.Compare(a.ID, b.ID) })
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// validate checks m with the same rules the directory applies to its
// entries, by validating a throwaway directory holding only m.
func (m *Member) validate(network string) error {
	if len(m.Services) > maxServices {
		return fmt.Errorf("more than %d services", maxServices)
	}
	if len(m.SealKeys) > MaxSealKeys {
		return fmt.Errorf("more than %d seal keys", MaxSealKeys)
	}
	if len(m.StatusReason) > maxReason || strings.ContainsAny(m.StatusReason, "\x00\r\n") {
		return fmt.Errorf("reason must be at most %d bytes on one line", maxReason)
	}
	switch m.Status {
	case StatusActive, StatusSuspended, StatusRevoked:
	default:
		return fmt.Errorf("unknown status %q", m.Status)
	}
	d := pki.Directory{
		Network:   network,
		Version:   1,
		IssuedAt:  time.Unix(1, 0),
		ExpiresAt: time.Unix(2, 0),
		Members:   []pki.Member{m.entry(time.Time{})},
	}
	if err := d.Validate(); err != nil {
		return err
	}
	return nil
}

// entry returns m as a directory entry, with the pins unexpired at now (all
// pins if now is zero).
func (m *Member) entry(now time.Time) pki.Member {
	e := pki.Member{
		Name:        m.Name,
		Role:        m.Role,
		DisplayName: m.DisplayName,
		Suspended:   m.Status == StatusSuspended,
		Pins:        []string{},
		SealKeys:    slices.Clone(m.SealKeys),
		Services:    slices.Clone(m.Services),
	}
	if m.Relay != nil {
		r := *m.Relay
		e.Relay = &r
	}
	for _, p := range m.Pins {
		if now.IsZero() || now.Before(p.NotAfter) {
			e.Pins = append(e.Pins, p.Pin)
		}
	}
	return e
}

// NewMember describes a member to add.
type NewMember struct {
	Name        string
	Role        pki.Role
	DisplayName string
	Services    []string
	// Relay endpoints; required for, and only for, role relay.
	Relay *pki.RelayEndpoints
	// ReuseRevokedName allows adding a member under the name of a revoked
	// one. The revoked member's keys stay revoked.
	ReuseRevokedName bool
}

// Add records a new, active member. A name in use is an error that changes
// nothing (ErrMemberExists), as is the name of a revoked member unless
// ReuseRevokedName is set (ErrRevokedName).
func (s *Store) Add(nm NewMember) (*Member, error) {
	m := &Member{
		Name:        nm.Name,
		Role:        nm.Role,
		DisplayName: nm.DisplayName,
		Services:    slices.Clone(nm.Services),
		Relay:       nm.Relay,
		Status:      StatusActive,
		CreatedAt:   s.now(),
	}
	m.normalize()
	if err := m.validate(s.cfg.Network); err != nil {
		return nil, fmt.Errorf("ca: member %q: %w", nm.Name, err)
	}
	err := s.update(func(tx *bolt.Tx) error {
		old, err := getMember(tx, m.Name)
		switch {
		case errors.Is(err, ErrNoMember):
		case err != nil:
			return err
		case old.Status != StatusRevoked:
			return fmt.Errorf("%w: %q", ErrMemberExists, m.Name)
		case !nm.ReuseRevokedName:
			return fmt.Errorf("%w: %q (revoked %s)", ErrRevokedName, m.Name, old.StatusChangedAt.Format(time.RFC3339))
		default:
			m.RevokedKeys = append(m.RevokedKeys, old.RevokedKeys...)
			var pins []string
			for _, p := range old.Pins {
				pins = append(pins, p.Pin)
			}
			if len(pins) > 0 {
				m.RevokedKeys = append(m.RevokedKeys, KeyRevocation{Pins: pins, RevokedAt: old.StatusChangedAt, Reason: old.StatusReason})
			}
		}
		return putMember(tx, m)
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Check validates nm and checks that its name is free (or, with
// ReuseRevokedName, belongs to a revoked member), without changing anything.
// Add checks again.
func (s *Store) Check(nm NewMember) error {
	m := &Member{Name: nm.Name, Role: nm.Role, DisplayName: nm.DisplayName, Services: slices.Clone(nm.Services), Relay: nm.Relay, Status: StatusActive}
	m.normalize()
	if err := m.validate(s.cfg.Network); err != nil {
		return fmt.Errorf("ca: member %q: %w", nm.Name, err)
	}
	old, err := s.Get(nm.Name)
	switch {
	case errors.Is(err, ErrNoMember):
		return nil
	case err != nil:
		return err
	case old.Status != StatusRevoked:
		return fmt.Errorf("%w: %q", ErrMemberExists, nm.Name)
	case !nm.ReuseRevokedName:
		return fmt.Errorf("%w: %q (revoked %s)", ErrRevokedName, nm.Name, old.StatusChangedAt.Format(time.RFC3339))
	}
	return nil
}

// Get returns the member named name, or ErrNoMember.
func (s *Store) Get(name string) (*Member, error) {
	var m *Member
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		m, err = getMember(tx, name)
		return err
	})
	return m, err
}

// List returns every member, sorted by name.
func (s *Store) List() ([]Member, error) {
	var ms []Member
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		ms, err = listMembers(tx)
		return err
	})
	return ms, err
}

func listMembers(tx *bolt.Tx) ([]Member, error) {
	ms := []Member{}
	err := tx.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
		var m Member
		if err := json.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("ca: member store record %q: %w", k, err)
		}
		ms = append(ms, m)
		return nil
	})
	return ms, err // bbolt iterates in key order: sorted by name
}

// modify runs fn on the stored member and writes it back if fn succeeds and
// the result is valid. Revoked members cannot be modified.
func (s *Store) modify(name string, fn func(m *Member) error) (*Member, error) {
	var out *Member
	err := s.update(func(tx *bolt.Tx) error {
		m, err := getMember(tx, name)
		if err != nil {
			return err
		}
		if m.Status == StatusRevoked {
			return fmt.Errorf("%w: %q", ErrFinal, name)
		}
		if err := fn(m); err != nil {
			return err
		}
		m.normalize()
		if err := m.validate(s.cfg.Network); err != nil {
			return fmt.Errorf("ca: member %q: %w", name, err)
		}
		out = m
		return putMember(tx, m)
	})
	return out, err
}

// MemberUpdate changes the descriptive fields of a member. Nil fields stay.
type MemberUpdate struct {
	DisplayName *string
	Services    *[]string
	Relay       *pki.RelayEndpoints
}

// Update changes a member's display name, services or relay endpoints.
func (s *Store) Update(name string, u MemberUpdate) (*Member, error) {
	return s.modify(name, func(m *Member) error {
		if u.DisplayName != nil {
			m.DisplayName = *u.DisplayName
		}
		if u.Services != nil {
			m.Services = slices.Clone(*u.Services)
		}
		if u.Relay != nil {
			r := *u.Relay
			m.Relay = &r
		}
		return nil
	})
}

// SetStatus suspends (StatusSuspended), resumes (StatusActive) or revokes
// (StatusRevoked) a member. Setting the status a member already has is an
// error, as is any change to a revoked member.
func (s *Store) SetStatus(name string, st Status, reason string) (*Member, error) {
	switch st {
	case StatusActive, StatusSuspended, StatusRevoked:
	default:
		return nil, fmt.Errorf("ca: unknown status %q", st)
	}
	now := s.now()
	return s.modify(name, func(m *Member) error {
		if m.Status == st {
			return fmt.Errorf("ca: member %q is already %s", name, st)
		}
		m.Status = st
		m.StatusChangedAt = now
		m.StatusReason = reason
		return nil
	})
}

// RevokeKey revokes one key of a member that stays a member (a lost or
// compromised machine): the pin leaves the member's pins, is listed as a key
// revocation in the directory, and certificates with it are not renewed.
func (s *Store) RevokeKey(name, pin, reason string) (*Member, error) {
	now := s.now()
	return s.modify(name, func(m *Member) error {
		i := slices.IndexFunc(m.Pins, func(p PinRecord) bool { return p.Pin == pin })
		if i < 0 {
			return fmt.Errorf("%w: %s of %q", ErrUnknownPin, pin, name)
		}
		m.Pins = slices.Delete(m.Pins, i, i+1)
		m.RevokedKeys = append(m.RevokedKeys, KeyRevocation{Pins: []string{pin}, RevokedAt: now, Reason: reason})
		if len(reason) > maxReason || strings.ContainsAny(reason, "\x00\r\n") {
			return fmt.Errorf("reason must be at most %d bytes on one line", maxReason)
		}
		return nil
	})
}

// RecordCert records the pin and expiry of a certificate the CA issued
// against the member it names. Pins that expired more than a week ago are
// pruned. It records for suspended and revoked members too, so their keys
// are known if the name is later reused.
func (s *Store) RecordCert(c *x509.Certificate) error {
	id, err := pki.IDFromCert(c)
	if err != nil {
		return err
	}
	if id.Network != s.cfg.Network {
		return fmt.Errorf("ca: certificate for network %q, not %q", id.Network, s.cfg.Network)
	}
	pin := pki.Pin(c)
	now := s.now()
	return s.update(func(tx *bolt.Tx) error {
		m, err := getMember(tx, id.Name)
		if err != nil {
			return err
		}
		if m.Role != id.Role {
			return fmt.Errorf("ca: certificate names role %s, member %q has role %s", id.Role, id.Name, m.Role)
		}
		for _, r := range m.RevokedKeys {
			if slices.Contains(r.Pins, pin) {
				return fmt.Errorf("ca: key %s of %q was revoked", pin, id.Name)
			}
		}
		found := false
		pins := m.Pins[:0]
		for _, p := range m.Pins {
			if p.Pin == pin {
				found = true
				if c.NotAfter.After(p.NotAfter) {
					p.NotAfter = c.NotAfter.UTC()
				}
			}
			if p.Pin == pin || now.Sub(p.NotAfter) < pinRetention {
				pins = append(pins, p)
			}
		}
		if !found {
			pins = append(pins, PinRecord{Pin: pin, NotAfter: c.NotAfter.UTC()})
		}
		m.Pins = pins
		m.normalize()
		return putMember(tx, m)
	})
}

// SetSealKeys replaces the HPKE seal keys of an active member. pin is the
// pin of the certificate the request was authenticated with; it must be one
// of the member's unexpired pins.
func (s *Store) SetSealKeys(name, pin string, keys []pki.SealKey) (*Member, error) {
	if len(keys) > MaxSealKeys {
		return nil, fmt.Errorf("ca: more than %d seal keys", MaxSealKeys)
	}
	now := s.now()
	return s.modify(name, func(m *Member) error {
		if m.Status != StatusActive {
			return fmt.Errorf("%w: %q is %s", ErrNotActive, name, m.Status)
		}
		if !m.HasPin(pin, now) {
			return fmt.Errorf("%w: %q", ErrUnknownPin, name)
		}
		m.SealKeys = slices.Clone(keys)
		m.SealKeysUpdatedAt = now
		return nil
	})
}

// LastDirectoryVersion returns the version of the last directory signed, 0
// if none.
func (s *Store) LastDirectoryVersion() (uint64, error) {
	var v uint64
	err := s.view(func(tx *bolt.Tx) error {
		v = dirVersion(tx)
		return nil
	})
	return v, err
}

func dirVersion(tx *bolt.Tx) uint64 {
	if b := tx.Bucket(bucketMeta).Get(keyDirVersion); len(b) == 8 {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// nextDirectory calls fn with every member and the next directory version,
// holding the store's lock for the duration, and records the version fn
// returns (at least the one it was given) as used if fn succeeds. Concurrent
// signers therefore never reuse a version, and write their documents in
// version order.
func (s *Store) nextDirectory(fn func(members []Member, version uint64) (uint64, error)) error {
	return s.update(func(tx *bolt.Tx) error {
		ms, err := listMembers(tx)
		if err != nil {
			return err
		}
		v, err := fn(ms, dirVersion(tx)+1)
		if err != nil {
			return err
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], v)
		return tx.Bucket(bucketMeta).Put(keyDirVersion, b[:])
	})
}
