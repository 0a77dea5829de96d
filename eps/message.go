package eps

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kurier-net/kurier/eps/internal/strictjson"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
)

// peerPath is the one endpoint of the peer protocol.
const peerPath = "/kurier/peer/v1/messages"

// wireMessage is a message as it travels between endpoint servers (see
// docs/eps-design.md). The sender is never in it: it is the TLS peer.
// appendWire encodes it and decodeWire decodes it, by hand; the json tags
// name the same fields, so that tests can hold them against encoding/json.
type wireMessage struct {
	ID            store.ID       `json:"id"`
	Kind          string         `json:"kind"`
	Service       string         `json:"service"`
	CorrelationID *store.ID      `json:"correlation_id,omitempty"`
	Deadline      time.Time      `json:"deadline"`
	Sync          bool           `json:"sync,omitempty"`
	Sealed        *seal.Envelope `json:"sealed"`
}

// wireNames are the wire message's fields; the first five are required.
var wireNames = []string{"id", "kind", "service", "deadline", "sealed", "correlation_id", "sync"}

// decodeWire decodes and checks a message strictly: one JSON object with
// exactly the field names above, each at most once, no null, the envelope
// as strict as seal.Parse.
func decodeWire(b []byte) (*wireMessage, store.Kind, error) {
	m, kind, err := parseWire(b)
	if err != nil {
		return nil, 0, fmt.Errorf("decode message: %w", err)
	}
	return m, kind, nil
}

func parseWire(b []byte) (*wireMessage, store.Kind, error) {
	var (
		m    wireMessage
		kind store.Kind
	)
	p := strictjson.New(b)
	seen, err := p.Object("message", wireNames, func(f int) error {
		if wireNames[f] == "sealed" {
			env, err := seal.ParseNext(p)
			m.Sealed = env
			return err
		}
		if wireNames[f] == "sync" {
			v, err := p.Bool("sync")
			m.Sync = v
			return err
		}
		s, err := p.String(wireNames[f])
		if err != nil {
			return err
		}
		switch wireNames[f] {
		case "id":
			m.ID, err = store.ParseID(string(s))
		case "kind":
			kind, err = store.ParseKind(string(s))
			m.Kind = kind.String()
		case "service":
			m.Service = string(s)
			err = pki.ValidServiceName(m.Service)
		case "deadline":
			err = m.Deadline.UnmarshalText(s)
		case "correlation_id":
			var id store.ID
			id, err = store.ParseID(string(s))
			m.CorrelationID = &id
		}
		return err
	})
	if err == nil {
		err = strictjson.Missing(seen, wireNames, 5)
	}
	if err == nil && !p.End() {
		err = errors.New("data after the message")
	}
	if err != nil {
		return nil, 0, err
	}
	if err := m.check(kind); err != nil {
		return nil, 0, err
	}
	return &m, kind, nil
}

// check applies the rules between fields of a message of kind.
func (m *wireMessage) check(kind store.Kind) error {
	switch {
	case m.ID.IsZero():
		return errors.New("message without id")
	case m.Sealed == nil:
		return errors.New("message without sealed payload")
	case m.Deadline.IsZero():
		return errors.New("message without deadline")
	case (kind == store.Response) != (m.CorrelationID != nil):
		return errors.New("a response, and only a response, carries a correlation id")
	case m.CorrelationID != nil && m.CorrelationID.IsZero():
		return errors.New("correlation id of zeros")
	case m.Sync && kind != store.Request:
		return errors.New("only a request can be sync")
	}
	return nil
}

// appendWire appends m's wire encoding to b: canonical JSON, fields in the
// order of wireMessage, which decodeWire accepts. It refuses a message
// decodeWire would refuse, so a bad one fails here rather than at the
// peer.
func appendWire(b []byte, m *wireMessage) ([]byte, error) {
	kind, err := store.ParseKind(m.Kind)
	if err != nil {
		return nil, err
	}
	if err := m.check(kind); err != nil {
		return nil, fmt.Errorf("eps: %w", err)
	}
	if err := pki.ValidServiceName(m.Service); err != nil {
		return nil, err // its alphabet needs no escaping below
	}
	b = append(b, `{"id":"`...)
	b = hex.AppendEncode(b, m.ID[:])
	b = append(b, `","kind":"`...)
	b = append(b, m.Kind...)
	b = append(b, `","service":"`...)
	b = append(b, m.Service...)
	b = append(b, '"')
	if m.CorrelationID != nil {
		b = append(b, `,"correlation_id":"`...)
		b = hex.AppendEncode(b, m.CorrelationID[:])
		b = append(b, '"')
	}
	b = append(b, `,"deadline":"`...)
	if b, err = m.Deadline.AppendText(b); err != nil {
		return nil, fmt.Errorf("eps: deadline: %w", err)
	}
	b = append(b, '"')
	if m.Sync {
		b = append(b, `,"sync":true`...)
	}
	b = append(b, `,"sealed":`...)
	if b, err = m.Sealed.AppendJSON(b); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// marshal returns m's wire encoding (appendWire).
func (m *wireMessage) marshal() ([]byte, error) {
	return appendWire(make([]byte, 0, 512), m) // the envelope grows it once
}

// sealContext is the seal context of a message from sender to recipient.
func sealContext(sender, recipient string, m *wireMessage) seal.Context {
	return seal.Context{Sender: sender, Recipient: recipient, Service: m.Service, Kind: m.Kind, MessageID: m.ID.String()}
}

// Receipt is a receiver's signed statement that it stored a message. The
// sender keeps it as proof of delivery. On the wire it is a SignedReceipt:
// the receipt's JSON bytes, signed as they are, so that anyone can verify
// the exact bytes before reading them.
type Receipt struct {
	MessageID  store.ID  `json:"message_id"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	ReceivedAt time.Time `json:"received_at"`
	// Digest is the SHA-256 of the sealed envelope's canonical JSON
	// (seal.Envelope.Marshal), which sender and receiver compute alike.
	Digest []byte `json:"digest"`
}

// SignedReceipt is a receipt as sent: Body holds the receipt's JSON, Sig
// the receiver's signature over SHA-256("kurier-receipt/v1\x00" || Body) by
// the key of Cert (DER).
type SignedReceipt struct {
	Body []byte `json:"receipt"`
	Cert []byte `json:"cert"`
	Sig  []byte `json:"sig"`
}

const receiptContext = "kurier-receipt/v1\x00"

func receiptDigest(body []byte) []byte {
	sum := sha256.Sum256(append([]byte(receiptContext), body...))
	return sum[:]
}

// signReceipt encodes and signs r with the member's key.
func signReceipt(r *Receipt, cert *tls.Certificate) ([]byte, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("eps: certificate key cannot sign")
	}
	var opts crypto.SignerOpts = crypto.SHA256
	if _, ok := signer.Public().(ed25519.PublicKey); ok {
		opts = crypto.Hash(0)
	}
	sig, err := signer.Sign(rand.Reader, receiptDigest(body), opts)
	if err != nil {
		return nil, err
	}
	return json.Marshal(SignedReceipt{Body: body, Cert: cert.Certificate[0], Sig: sig})
}

// ErrBadReceipt is returned for a receipt that does not prove delivery.
var ErrBadReceipt = errors.New("eps: receipt does not verify")

// VerifyReceipt checks that b is a receipt for the message id with the
// envelope digest, signed by the member want with a key the directory
// pins, and returns it. The signature is checked over the exact body bytes
// before they are parsed.
func VerifyReceipt(b []byte, want pki.ID, id store.ID, digest []byte, trust pki.Trust, now time.Time) (*Receipt, error) {
	var sr SignedReceipt
	if err := strictJSON(b, &sr); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReceipt, err)
	}
	leaf, err := x509.ParseCertificate(sr.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReceipt, err)
	}
	snap := trust.Directory.Current()
	if snap == nil {
		return nil, pki.ErrNoDirectory
	}
	// The directory's pin names this exact key for the member, so the
	// certificate needs no chain: only that member's key can sign.
	got, _, err := snap.Authorize(leaf, now)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	if got != want {
		return nil, fmt.Errorf("%w: signed by %s, want %s", ErrBadReceipt, got, want)
	}
	d := receiptDigest(sr.Body)
	ok := false
	switch pub := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		ok = ecdsa.VerifyASN1(pub, d, sr.Sig)
	case ed25519.PublicKey:
		ok = ed25519.Verify(pub, d, sr.Sig)
	}
	if !ok {
		return nil, fmt.Errorf("%w: bad signature", ErrBadReceipt)
	}
	var r Receipt
	if err := strictJSON(sr.Body, &r); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadReceipt, err)
	}
	if r.MessageID != id || r.To != want.Name || !bytes.Equal(r.Digest, digest) {
		return nil, fmt.Errorf("%w: it is for another message", ErrBadReceipt)
	}
	return &r, nil
}

func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func envelopeDigest(env *seal.Envelope) ([]byte, error) {
	b, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	return sum[:], nil
}
