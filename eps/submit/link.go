package submit

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
)

// Kind is the message kind of a submission: the citizen's browser sends it
// once and nothing answers it through Kurier.
const Kind = seal.KindNotification

// Bounds on a Link.
const (
	secretBytes    = 32  // what NewLink makes: 256 bits
	minSecretBytes = 16  // what a Link must have: 128 bits
	maxSecretLen   = 128 // characters of base64url
	labelLen       = 6   // what NewLink makes: base32, 32^6 ≈ 1.1e9 labels
	maxLabelLen    = 32
	maxDisplayName = 200 // as pki's member display names
)

// Secret authorizes the one submission of a link: at least 128 random bits
// in base64url without padding. It travels only in the URL fragment (which
// browsers never send) and in the Authorization header of the page's
// requests. It redacts itself in logs and in fmt's %v and %s; string(s) is
// the value.
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String returns a redacted placeholder, never the secret.
func (Secret) String() string { return "REDACTED" }

// GoString returns a redacted placeholder, never the secret.
func (Secret) GoString() string { return `submit.Secret("REDACTED")` }

var (
	_ slog.LogValuer = Secret("")
	_ fmt.Stringer   = Secret("")
)

// Link is a one-time submission link of a health office:
//
//	https://<Label>.<office host>/#<Secret>
//
// The host name (with Label) is public: it is in DNS and in the TLS SNI.
// Only the fragment is secret. A Link is a plain value; the office keeps it
// (with the secret) until it is used or expires.
type Link struct {
	// Label is the routing label, the first DNS label of the link's host:
	// 1-32 of a-z and 0-9. Not secret. The page shows it as the reference
	// the citizen can quote to the office.
	Label string
	// Secret authorizes the submission (see Secret).
	Secret Secret
	// MessageID is the id of the message the submission becomes: 32
	// lowercase hex digits. The envelope is bound to it.
	MessageID string
	// Recipient is the office's seal key the browser seals to. Its KEM
	// must be seal.KEMX25519: browsers have X25519 in WebCrypto but no
	// ML-KEM.
	Recipient pki.SealKey
	// RecipientName is the office's member name (pki.ValidName), bound
	// into the envelope.
	RecipientName string
	// DisplayName is the office's name as the citizen reads it, e.g.
	// "Gesundheitsamt Musterstadt": 1-200 characters, no control
	// characters.
	DisplayName string
	// Service is the service the submission is for (pki.ValidServiceName),
	// bound into the envelope.
	Service string
	// Expires is when the link stops working. Required.
	Expires time.Time
}

// LogValue implements slog.LogValuer: the link without its secret. (Its
// JSON encoding, for storing links, does hold the secret.)
func (l Link) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("label", l.Label),
		slog.String("secret", "REDACTED"),
		slog.String("message_id", l.MessageID),
		slog.String("recipient", l.RecipientName),
		slog.String("key_id", l.Recipient.ID),
		slog.String("service", l.Service),
		slog.Time("expires", l.Expires),
	)
}

var _ slog.LogValuer = Link{}

// NewLink returns a copy of l with a fresh Secret (256 bits) and MessageID,
// and a fresh Label if l.Label is empty, after checking it with Check.
// l.Secret and l.MessageID must be empty: NewLink makes them.
func NewLink(l Link) (*Link, error) {
	if l.Secret != "" || l.MessageID != "" {
		return nil, errors.New("submit: NewLink makes the secret and message id; leave them empty")
	}
	var b [secretBytes]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	l.Secret = Secret(base64.RawURLEncoding.EncodeToString(b[:]))
	var id [16]byte
	rand.Read(id[:])
	l.MessageID = hex.EncodeToString(id[:])
	if l.Label == "" {
		l.Label = lowerAlnum(rand.Text()[:labelLen]) // base32: A-Z, 2-7
	}
	if err := l.Check(); err != nil {
		return nil, err
	}
	return &l, nil
}

// lowerAlnum maps rand.Text's base32 alphabet (A-Z, 2-7) to a DNS label.
func lowerAlnum(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Check reports whether l is a usable link.
func (l *Link) Check() error {
	if !validLabel(l.Label) {
		return fmt.Errorf("submit: invalid link label %q: want 1-%d of a-z and 0-9", l.Label, maxLabelLen)
	}
	if n := len(l.Secret); n > maxSecretLen {
		return fmt.Errorf("submit: link secret is %d characters, at most %d", n, maxSecretLen)
	}
	sec, err := base64.RawURLEncoding.Strict().DecodeString(string(l.Secret))
	if err != nil || len(sec) < minSecretBytes {
		return fmt.Errorf("submit: link secret must be at least %d bytes in base64url without padding", minSecretBytes)
	}
	if _, err := l.Context().Info(); err != nil {
		return fmt.Errorf("submit: link: %w", err)
	}
	if l.Recipient.KEM != seal.KEMX25519 {
		return fmt.Errorf("submit: recipient key %q has KEM 0x%04x; browsers seal only to X25519 (0x%04x)", l.Recipient.ID, l.Recipient.KEM, seal.KEMX25519)
	}
	if !pki.ValidKeyID(l.Recipient.ID) || len(l.Recipient.Public) != 32 {
		return fmt.Errorf("submit: recipient key %q: want an id of 1-64 of a-z, 0-9, '-' and a 32-byte X25519 public key", l.Recipient.ID)
	}
	if n := utf8.RuneCountInString(l.DisplayName); n == 0 || n > maxDisplayName || !utf8.ValidString(l.DisplayName) {
		return fmt.Errorf("submit: display name must be 1-%d characters of UTF-8", maxDisplayName)
	}
	for _, r := range l.DisplayName {
		if unicode.IsControl(r) {
			return errors.New("submit: display name has a control character")
		}
	}
	if l.Expires.IsZero() {
		return errors.New("submit: link has no expiry")
	}
	return nil
}

// Context is the seal context a submission through l is bound to; the
// office opens the envelope with it (seal.Open).
func (l *Link) Context() seal.Context {
	return seal.Context{Sender: seal.Anonymous, Recipient: l.RecipientName, Service: l.Service, Kind: Kind, MessageID: l.MessageID}
}

// URL returns the link to hand to the citizen: https://<Label>.<host>/#<Secret>,
// where host is the office's public name under which the relays route
// <label>.<host> to it (e.g. "hd-1.kurier.example").
func (l *Link) URL(host string) string {
	return "https://" + l.Label + "." + host + "/#" + string(l.Secret)
}

func validLabel(s string) bool {
	if len(s) == 0 || len(s) > maxLabelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
