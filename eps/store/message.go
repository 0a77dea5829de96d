package store

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/kurier-net/kurier/pki"
)

// ID is a message id: 16 random bytes, written as 32 lowercase hex
// characters. It is unique per sender only; the inbox therefore keys
// messages by (sender, id).
type ID [16]byte

// NewID returns a random id.
func NewID() ID {
	var id ID
	rand.Read(id[:]) // never fails (crypto/rand, Go 1.24+)
	return id
}

// ParseID parses the 32-character lowercase hex form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return ID{}, fmt.Errorf("%w: id %q: want 32 hex characters", ErrInvalid, s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ID{}, fmt.Errorf("%w: id %q: want lowercase hex", ErrInvalid, s)
		}
	}
	hex.Decode(id[:], []byte(s))
	return id, nil
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is all zeros, which no message has.
func (id ID) IsZero() bool { return id == ID{} }

// MarshalText implements encoding.TextMarshaler.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Kind is a message's kind.
type Kind uint8

// The kinds of the peer protocol.
const (
	Request Kind = iota + 1
	Response
	Notification
)

var kindNames = [...]string{Request: "request", Response: "response", Notification: "notification"}

func (k Kind) String() string {
	if k >= Request && k <= Notification {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MarshalText implements encoding.TextMarshaler.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// ParseKind parses "request", "response" or "notification".
func ParseKind(s string) (Kind, error) {
	for k := Request; k <= Notification; k++ {
		if kindNames[k] == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("%w: kind %q", ErrInvalid, s)
}

// State is an outbox message's delivery state.
type State uint8

// Outbox states. Queued and Delivering are pending; the other three are
// final.
const (
	Queued     State = iota + 1 // accepted, no delivery attempt recorded yet
	Delivering                  // at least one attempt failed; retrying
	Delivered                   // the recipient returned a receipt
	Expired                     // the deadline passed before delivery
	Failed                      // the recipient refused it for good
)

var stateNames = [...]string{Queued: "queued", Delivering: "delivering", Delivered: "delivered", Expired: "expired", Failed: "failed"}

func (s State) String() string {
	if s >= Queued && s <= Failed {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Pending reports whether the message still waits for delivery.
func (s State) Pending() bool { return s == Queued || s == Delivering }

// Anonymous is the Peer of an inbox message that came from no member: a
// citizen's submission through a one-time link (eps/submit). Only
// notifications may have it; pki reserves the name, so no member has it.
const Anonymous = "anonymous"

// Message is one message between two endpoint servers, as the outbox and
// the inbox keep it.
type Message struct {
	ID   ID
	Kind Kind
	// Peer is the other member: the recipient of an outbox message, the
	// sender (the verified TLS peer) of an inbox message.
	Peer    string
	Service string
	// CorrelationID is, for a Response, the id of the request it answers;
	// zero otherwise.
	CorrelationID ID
	// Deadline is when delivery stops. Required.
	Deadline time.Time
	// Sync is set on a request whose caller waited on the connection.
	Sync bool
	// Sealed is the envelope, opaque to the store. Required.
	Sealed []byte
	// CreatedAt is when the message was accepted; Enqueue sets it to now
	// if zero.
	CreatedAt time.Time
}

// check validates m's fields against the format, not against time.
func (s *Store) check(m *Message) error {
	switch {
	case m.ID.IsZero():
		return fmt.Errorf("%w: zero id", ErrInvalid)
	case m.Kind < Request || m.Kind > Notification:
		return fmt.Errorf("%w: %v", ErrInvalid, m.Kind)
	case m.Kind == Response && m.CorrelationID.IsZero():
		return fmt.Errorf("%w: response without correlation id", ErrInvalid)
	case m.Kind != Response && !m.CorrelationID.IsZero():
		return fmt.Errorf("%w: correlation id on a %v", ErrInvalid, m.Kind)
	case m.Sync && m.Kind != Request:
		return fmt.Errorf("%w: sync %v", ErrInvalid, m.Kind)
	case m.Deadline.IsZero():
		return fmt.Errorf("%w: no deadline", ErrInvalid)
	case len(m.Sealed) == 0:
		return fmt.Errorf("%w: empty envelope", ErrInvalid)
	case len(m.Sealed) > s.cfg.MaxSealed:
		return fmt.Errorf("%w: envelope of %d bytes, limit %d", ErrTooLarge, len(m.Sealed), s.cfg.MaxSealed)
	}
	if m.Peer == Anonymous {
		// Only a citizen's submission through a one-time link comes
		// from no member: a notification the link's page sealed.
		if m.Kind != Notification {
			return fmt.Errorf("%w: anonymous %v", ErrInvalid, m.Kind)
		}
	} else if err := pki.ValidName(m.Peer); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := pki.ValidServiceName(m.Service); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// checkDeadline refuses a deadline that has passed or lies more than the
// horizon plus slack ahead. It runs inside the write transaction, on the
// clock that also runs the sweep.
func (s *Store) checkDeadline(now, deadline time.Time, slack time.Duration) error {
	if !now.Before(deadline) {
		return fmt.Errorf("%w: deadline %v", ErrExpired, deadline.UTC().Format(time.RFC3339))
	}
	if deadline.Sub(now) > s.cfg.MaxHorizon+slack {
		return fmt.Errorf("%w: deadline %v is more than %v ahead", ErrInvalid, deadline.UTC().Format(time.RFC3339), s.cfg.MaxHorizon+slack)
	}
	return nil
}

// truncateText cuts s to at most n bytes on a UTF-8 boundary.
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}
