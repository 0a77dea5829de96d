package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
)

// MessageID is a message id: 16 random bytes, written as 32 lowercase hex
// characters. It is unique per sender; a receiver tells messages apart by
// (sender, id).
type MessageID = store.ID

// NewMessageID returns a random message id.
func NewMessageID() MessageID { return store.NewID() }

// ParseMessageID parses the 32-character lowercase hex form.
func ParseMessageID(s string) (MessageID, error) { return store.ParseID(s) }

// Kind is what a message is.
type Kind string

// The kinds of message local software receives.
const (
	KindRequest      Kind = "request"      // a call of one of our services; answered
	KindResponse     Kind = "response"     // the answer to a request we sent asynchronously
	KindNotification Kind = "notification" // a call that expects no answer
	KindStatus       Kind = "status"       // our endpoint server's report on a message we sent
)

// Message is an incoming message as the endpoint server hands it to local
// software.
type Message struct {
	// ID is the message id, unique per sender.
	ID MessageID
	// From is the sending member, the verified peer of the endpoint
	// server's mutual TLS connection. It comes from the endpoint server
	// alone (the Kurier-From header or the polled message's from field);
	// nothing in Params can change it. For KindStatus it is this member.
	From string
	Kind Kind
	// Service is the service called; for a response, the service of the
	// request it answers.
	Service string
	// CorrelationID is, for a response, the id of the request it answers;
	// zero otherwise.
	CorrelationID MessageID
	// Sync is set on a request whose caller waits for the answer. Polled
	// messages carry it; callbacks only if the endpoint server sends the
	// Kurier-Sync header.
	Sync bool
	// Deadline is when the message stops being delivered.
	Deadline time.Time
	// Params is the payload: the params of a request or notification, the
	// {"result": …} or {"error": …} of a response (see Result), the report
	// of a status (see Report).
	Params json.RawMessage
	// Sealed is the verified but unopened payload when the endpoint server
	// passes payloads on sealed (eps.Config.PassSealed) and the message was
	// polled; by callback such a payload arrives as Params {"sealed": …}.
	Sealed *seal.Envelope
}

// Decode decodes Params into v. Its errors wrap ErrInvalidParams, so a
// handler can return them as they are and the caller gets Invalid params.
func (m *Message) Decode(v any) error {
	if len(m.Params) == 0 && m.Sealed != nil {
		return fmt.Errorf("%w: the payload of message %s is sealed (eps.Config.PassSealed)", ErrSealed, m.ID)
	}
	p := m.Params
	if len(p) == 0 {
		p = json.RawMessage("null")
	}
	if err := json.Unmarshal(p, v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}
	return nil
}

// DecodeStrict decodes params into v as Decode does, but refuses unknown
// members (at any depth) and data after the value: for services whose
// callers must not slip in fields a later version would read. Its errors
// wrap ErrInvalidParams.
func DecodeStrict(params []byte, v any) error {
	if len(params) == 0 {
		params = []byte("null")
	}
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the params", ErrInvalidParams)
	}
	return nil
}

// Open opens a payload the endpoint server handed on sealed
// (eps.Config.PassSealed), for software that keeps the member's seal keys
// itself: self is this member's name. It sets Params to the plaintext. The
// endpoint server has checked the sender's signature already; Open checks
// that the envelope belongs to this message from m.From.
func (m *Message) Open(self string, keys []pki.SealPrivateKey) error {
	if m.Sealed == nil {
		return fmt.Errorf("sdk: message %s is not sealed", m.ID)
	}
	ctx := seal.Context{Sender: m.From, Recipient: self, Service: m.Service, Kind: string(m.Kind), MessageID: m.ID.String()}
	pt, err := seal.Open(m.Sealed, ctx, keys)
	if err != nil {
		return fmt.Errorf("%w: message %s from %s: %w", ErrSealed, m.ID, m.From, err)
	}
	m.Params = pt
	return nil
}

// Result decodes a response's payload: the result into v (if v is not
// nil), or the error the other member's software answered with as an
// *Error.
func (m *Message) Result(v any) error {
	var a struct {
		Result json.RawMessage `json:"result"`
		Error  *jsonrpc.Error  `json:"error"`
	}
	if err := json.Unmarshal(m.Params, &a); err != nil {
		return fmt.Errorf("sdk: response %s from %s: %w", m.ID, m.From, err)
	}
	switch {
	case a.Error != nil:
		return &Error{Code: a.Error.Code, Message: a.Error.Message, Data: a.Error.Data}
	case a.Result == nil:
		return fmt.Errorf("sdk: response %s from %s holds neither result nor error", m.ID, m.From)
	case v != nil:
		if err := json.Unmarshal(a.Result, v); err != nil {
			return fmt.Errorf("sdk: response %s from %s: decode result: %w", m.ID, m.From, err)
		}
	}
	return nil
}

// Report decodes a status message's payload.
func (m *Message) Report() (*Report, error) {
	if m.Kind != KindStatus {
		return nil, fmt.Errorf("sdk: message %s is a %s, not a status report", m.ID, m.Kind)
	}
	var r Report
	if err := json.Unmarshal(m.Params, &r); err != nil {
		return nil, fmt.Errorf("sdk: status report %s: %w", m.ID, err)
	}
	return &r, nil
}

// Report is the endpoint server's report on a message this member sent
// asynchronously: delivered (with a receipt, see Client.Status), expired
// or failed. Reports are best effort; Client.Status has the durable state.
type Report struct {
	MessageID MessageID `json:"message_id"`
	To        string    `json:"to"`
	Service   string    `json:"service"`
	State     State     `json:"status"`
	Reason    string    `json:"reason,omitempty"`
}

// State is the delivery state of a message this member sent.
type State string

// The delivery states. Queued and Delivering are pending, the others final.
const (
	StateQueued     State = "queued"     // accepted, not tried yet
	StateDelivering State = "delivering" // tried, retrying
	StateDelivered  State = "delivered"  // the recipient's signed receipt is held
	StateExpired    State = "expired"    // the deadline passed before delivery
	StateFailed     State = "failed"     // the recipient refused it for good
)

// Final reports whether s will not change any more.
func (s State) Final() bool { return s == StateDelivered || s == StateExpired || s == StateFailed }

// Delivery is the state of a message this member sent (Client.Status).
type Delivery struct {
	ID        MessageID `json:"message_id"`
	To        string    `json:"to"`
	Service   string    `json:"service"`
	Kind      Kind      `json:"kind"`
	State     State     `json:"status"`
	Attempts  int       `json:"attempts"`
	Deadline  time.Time `json:"deadline"`
	LastError string    `json:"last_error,omitempty"`
	// Receipt is the recipient's signed receipt once delivered.
	Receipt *Receipt `json:"receipt,omitempty"`
}

// Err returns nil unless the delivery ended without success: an error
// matching ErrExpired, or one saying why the recipient refused it.
func (d *Delivery) Err() error {
	switch d.State {
	case StateExpired:
		return fmt.Errorf("%w: message %s to %s", ErrExpired, d.ID, d.To)
	case StateFailed:
		return fmt.Errorf("sdk: message %s to %s failed: %s", d.ID, d.To, d.LastError)
	}
	return nil
}

// Receipt is a recipient's signed statement that it stored a message; the
// sender keeps it as proof of delivery (docs/eps-design.md, "Peer
// protocol"). On the wire it is {"receipt": <the signed JSON bytes>,
// "cert": …, "sig": …}: the signature covers Body exactly, so keep Raw (or
// Body, Cert and Sig), not a re-encoding, as the proof.
type Receipt struct {
	MessageID  MessageID `json:"message_id"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	ReceivedAt time.Time `json:"received_at"`
	// Digest is the SHA-256 of the sealed envelope's canonical JSON.
	Digest []byte `json:"digest"`
	// Body is the signed receipt JSON the fields above were read from.
	Body []byte `json:"-"`
	// Cert is the recipient's certificate (DER); Sig its signature over
	// SHA-256("kurier-receipt/v1\x00" || Body).
	Cert []byte `json:"-"`
	Sig  []byte `json:"-"`
	// Raw is the receipt exactly as the endpoint server holds it.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes a signed receipt and keeps its bytes in Raw.
func (r *Receipt) UnmarshalJSON(b []byte) error {
	var w struct {
		Body []byte `json:"receipt"`
		Cert []byte `json:"cert"`
		Sig  []byte `json:"sig"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	type fields Receipt
	var f fields
	if err := json.Unmarshal(w.Body, &f); err != nil {
		return fmt.Errorf("sdk: receipt body: %w", err)
	}
	*r = Receipt(f)
	r.Body, r.Cert, r.Sig = w.Body, w.Cert, w.Sig
	r.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// Directory is the network's directory as this member's endpoint server
// sees it (Client.Directory).
type Directory struct {
	Network string `json:"network"`
	Version uint64 `json:"version"`
	// Self is this member's name.
	Self    string            `json:"self"`
	Members []DirectoryMember `json:"members"`
}

// DirectoryMember is one active member.
type DirectoryMember struct {
	Name        string        `json:"name"`
	Role        pki.Role      `json:"role"`
	DisplayName string        `json:"display_name"`
	Services    []string      `json:"services"`
	SealKeys    []pki.SealKey `json:"seal_keys"`
	// Callable are the services this member may call.
	Callable []string `json:"callable"`
}

// Member returns the entry of the member called name.
func (d *Directory) Member(name string) (*DirectoryMember, bool) {
	for i := range d.Members {
		if d.Members[i].Name == name {
			return &d.Members[i], true
		}
	}
	return nil, false
}

// sealKey picks the key to seal to as the endpoint server does: the last
// listed ML-KEM-768+X25519 key (keys are sorted by id; a rotation adds a
// later id).
func (m *DirectoryMember) sealKey() (pki.SealKey, error) {
	var best *pki.SealKey
	for i := range m.SealKeys {
		if k := &m.SealKeys[i]; k.KEM == seal.KEMMLKEM768X25519 {
			best = k
		}
	}
	if best == nil {
		return pki.SealKey{}, fmt.Errorf("%w: %s has published no seal key", ErrSealed, m.Name)
	}
	return *best, nil
}

// Pong is the endpoint server's answer to Ping.
type Pong struct {
	// Version is the endpoint server's protocol version.
	Version string `json:"version"`
	// Member is this member's identity URI (spiffe://<network>/<role>/<name>).
	Member string `json:"member"`
	// Time is the endpoint server's clock.
	Time time.Time `json:"time"`
}

// item is a message as _poll returns it (eps.Item).
type item struct {
	MessageID     MessageID       `json:"message_id"`
	From          string          `json:"from"`
	Kind          Kind            `json:"kind"`
	Service       string          `json:"service"`
	CorrelationID *MessageID      `json:"correlation_id,omitempty"`
	Sync          bool            `json:"sync,omitempty"`
	Deadline      time.Time       `json:"deadline"`
	Params        json.RawMessage `json:"params,omitempty"`
	Sealed        *seal.Envelope  `json:"sealed,omitempty"`
}

func (it *item) message() (*Message, error) {
	m := &Message{ID: it.MessageID, From: it.From, Kind: it.Kind, Service: it.Service, Sync: it.Sync, Deadline: it.Deadline, Params: it.Params, Sealed: it.Sealed}
	if it.CorrelationID != nil {
		m.CorrelationID = *it.CorrelationID
	}
	return m, m.check()
}

// Anonymous is the sender of a citizen's submission through a one-time
// link (Client.Link): a notification from no member.
const Anonymous = store.Anonymous

// check validates what the endpoint server said about a message.
func (m *Message) check() error {
	switch {
	case m.ID.IsZero():
		return errors.New("no message id")
	case m.From == Anonymous && m.Kind != KindNotification:
		return fmt.Errorf("a %s from %q", m.Kind, Anonymous)
	case m.From != Anonymous && pki.ValidName(m.From) != nil:
		return fmt.Errorf("invalid sender %q", m.From)
	case pki.ValidServiceName(m.Service) != nil:
		return fmt.Errorf("invalid service %q", m.Service)
	case m.Kind == KindResponse && m.CorrelationID.IsZero():
		return errors.New("a response without correlation id")
	}
	switch m.Kind {
	case KindRequest, KindResponse, KindNotification, KindStatus:
	default:
		return fmt.Errorf("unknown kind %q", m.Kind)
	}
	return nil
}

// answer is what a request was answered with: exactly one of result and
// err. Its encoding {"result": …} or {"error": …} is what the endpoint
// server seals back to the requester, and what the Dedup stores.
type answer struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  *jsonrpc.Error  `json:"error,omitempty"`
}

func resultAnswer(v any) (*answer, error) {
	if raw, ok := v.(json.RawMessage); ok && json.Valid(raw) {
		return &answer{Result: bytes.Clone(raw)}, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("sdk: encode result: %w", err)
	}
	return &answer{Result: b}, nil
}
