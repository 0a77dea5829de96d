package seal

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

	"github.com/kurier-net/kurier/eps/internal/strictjson"
	"github.com/kurier-net/kurier/pki"
)

// MaxSize is the largest encoded envelope Parse accepts and Seal produces.
const MaxSize = 8 << 20 // bytes

// Bounds on single fields of an envelope.
const (
	maxKeyID = 64       // bytes, as pki's seal key ids
	maxCert  = 16 << 10 // bytes of DER, per certificate
	maxChain = 4        // intermediate certificates
	maxSig   = 256      // bytes; ECDSA P-256 ASN.1 is at most 72, Ed25519 64
	tagSize  = 16       // bytes; every AEAD we accept has a 16-byte tag
	saltSize = 16       // bytes of a version 2 envelope's salt
)

// HPKE algorithm identifiers (RFC 9180 §7, draft-ietf-hpke-pq).
const (
	KEMMLKEM768X25519 uint16 = 0x647a // ML-KEM-768 with X25519 (X-Wing), the default
	KEMX25519         uint16 = 0x0020 // DHKEM(X25519, HKDF-SHA256), for browsers without ML-KEM

	KDFHKDFSHA256 uint16 = 0x0001

	AEADAES128GCM        uint16 = 0x0001
	AEADAES256GCM        uint16 = 0x0002
	AEADChaCha20Poly1305 uint16 = 0x0003 // the default
)

// encSize returns the length of the encapsulated key of kem, or 0 if kem is
// not one we accept.
func encSize(kem uint16) int {
	switch kem {
	case KEMMLKEM768X25519:
		return 1088 + 32 // ML-KEM-768 ciphertext, X25519 point
	case KEMX25519:
		return 32
	}
	return 0
}

func knownAEAD(id uint16) bool {
	return id == AEADAES128GCM || id == AEADAES256GCM || id == AEADChaCha20Poly1305
}

// Envelope is a sealed payload as it travels (see docs/eps-design.md,
// "Sealed envelope"). Its JSON form is
//
//	{"v":1,"kem":25722,"kdf":1,"aead":3,"key_id":"s1","enc":"…","ct":"…",
//	 "cert":"…","chain":["…"],"sig":"…"}
//
// with every byte field in standard base64 with padding. A version 2
// envelope (sealed in a session, see Sealer) also has "salt" after "enc".
// Cert, Chain and Sig are omitted for an anonymous envelope. Chain is optional even for a signed
// one: it carries intermediate CA certificates (DER, leaf excluded) that help
// a receiver build a path from Cert to the network roots; it is a hint, not
// signed, and trust never comes from it.
//
// Decode envelopes with Parse (or json.Unmarshal, which calls it): both are
// strict. An Envelope is not safe for concurrent mutation; Seal returns a new
// one on every call and Open and Verify only read theirs.
type Envelope struct {
	V     int      `json:"v"`               // format version, 1
	KEM   uint16   `json:"kem"`             // HPKE KEM id
	KDF   uint16   `json:"kdf"`             // HPKE KDF id
	AEAD  uint16   `json:"aead"`            // HPKE AEAD id
	KeyID string   `json:"key_id"`          // the recipient's seal key id
	Enc   []byte   `json:"enc"`             // HPKE encapsulated key
	Salt  []byte   `json:"salt,omitempty"`  // version 2: the message's salt (16 bytes)
	CT    []byte   `json:"ct"`              // ciphertext, tag included
	Cert  []byte   `json:"cert,omitempty"`  // sender's leaf certificate (DER)
	Chain [][]byte `json:"chain,omitempty"` // intermediates (DER), optional
	Sig   []byte   `json:"sig,omitempty"`   // sender's signature
}

// Signed reports whether e carries a sender certificate and signature.
func (e *Envelope) Signed() bool { return len(e.Cert) != 0 }

// malformed returns an error matching ErrMalformed.
func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// check validates every field: the rules Parse enforces on the wire, applied
// to an Envelope however it was made.
func (e *Envelope) check() error {
	switch {
	case e.V != 1 && e.V != 2:
		return malformed("version %d, want 1 or 2", e.V)
	case e.V == 1 && e.Salt != nil:
		return malformed("salt in a version 1 envelope")
	case e.V == 2 && len(e.Salt) != saltSize:
		return malformed("salt is %d bytes, version 2 needs %d", len(e.Salt), saltSize)
	case e.V == 2 && len(e.Cert) == 0:
		return malformed("a version 2 envelope is signed")
	}
	n := encSize(e.KEM)
	if n == 0 {
		return malformed("unknown KEM 0x%04x", e.KEM)
	}
	if e.KDF != KDFHKDFSHA256 {
		return malformed("unknown KDF 0x%04x", e.KDF)
	}
	if !knownAEAD(e.AEAD) {
		return malformed("unknown AEAD 0x%04x", e.AEAD)
	}
	if !pki.ValidKeyID(e.KeyID) {
		return malformed("key_id %q: want 1-%d of a-z, 0-9, '-'", e.KeyID, maxKeyID)
	}
	if len(e.Enc) != n {
		return malformed("enc is %d bytes, KEM 0x%04x needs %d", len(e.Enc), e.KEM, n)
	}
	if len(e.CT) < tagSize || len(e.CT) > MaxSize {
		return malformed("ct is %d bytes, want %d to %d", len(e.CT), tagSize, MaxSize)
	}
	if (len(e.Cert) == 0) != (len(e.Sig) == 0) {
		return malformed("cert and sig must both be present or both absent")
	}
	if len(e.Cert) > maxCert {
		return malformed("cert is %d bytes, at most %d", len(e.Cert), maxCert)
	}
	if len(e.Sig) > maxSig {
		return malformed("sig is %d bytes, at most %d", len(e.Sig), maxSig)
	}
	if e.Chain != nil && len(e.Cert) == 0 {
		return malformed("chain without cert")
	}
	if e.Chain != nil && (len(e.Chain) == 0 || len(e.Chain) > maxChain) {
		return malformed("chain has %d certificates, want 1 to %d (or no chain)", len(e.Chain), maxChain)
	}
	for i, c := range e.Chain {
		if len(c) == 0 || len(c) > maxCert {
			return malformed("chain[%d] is %d bytes, want 1 to %d", i, len(c), maxCert)
		}
	}
	if n := e.encodedLen(); n > MaxSize {
		return fmt.Errorf("%w: %w: encodes to %d bytes, at most %d", ErrTooLarge, ErrMalformed, n, MaxSize)
	}
	return nil
}

func b64len(n int) int { return base64.StdEncoding.EncodedLen(n) }

// encodedLen is len(e.Marshal()) for a valid e, computed without encoding.
func (e *Envelope) encodedLen() int {
	n := len(`{"v":,"kem":,"kdf":,"aead":,"key_id":"","enc":"","ct":""}`) +
		decLen(uint64(e.V)) + decLen(uint64(e.KEM)) + decLen(uint64(e.KDF)) + decLen(uint64(e.AEAD)) +
		len(e.KeyID) + b64len(len(e.Enc)) + b64len(len(e.CT))
	if e.Salt != nil {
		n += len(`,"salt":""`) + b64len(len(e.Salt))
	}
	if len(e.Cert) != 0 {
		n += len(`,"cert":""`) + b64len(len(e.Cert))
	}
	if len(e.Chain) != 0 {
		n += len(`,"chain":[]`) + len(e.Chain) - 1 // commas
		for _, c := range e.Chain {
			n += 2 + b64len(len(c))
		}
	}
	if len(e.Sig) != 0 {
		n += len(`,"sig":""`) + b64len(len(e.Sig))
	}
	return n
}

func decLen(v uint64) int {
	n := 1
	for v >= 10 {
		v /= 10
		n++
	}
	return n
}

// Marshal returns the canonical JSON encoding of e: fields in the order of
// the struct, no white space, byte fields in standard base64 with padding,
// Cert, Chain and Sig left out when empty. It refuses an envelope Parse
// would refuse.
func (e *Envelope) Marshal() ([]byte, error) { return e.AppendJSON(nil) }

// AppendJSON appends Marshal's encoding of e to b, growing b once.
func (e *Envelope) AppendJSON(b []byte) ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	b = slices.Grow(b, e.encodedLen())
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	b = append(b, `,"kem":`...)
	b = strconv.AppendUint(b, uint64(e.KEM), 10)
	b = append(b, `,"kdf":`...)
	b = strconv.AppendUint(b, uint64(e.KDF), 10)
	b = append(b, `,"aead":`...)
	b = strconv.AppendUint(b, uint64(e.AEAD), 10)
	b = append(b, `,"key_id":"`...)
	b = append(b, e.KeyID...) // [a-z0-9-]: nothing to escape
	b = appendB64(append(b, `","enc":`...), e.Enc)
	if e.Salt != nil {
		b = appendB64(append(b, `,"salt":`...), e.Salt)
	}
	b = appendB64(append(b, `,"ct":`...), e.CT)
	if len(e.Cert) != 0 {
		b = appendB64(append(b, `,"cert":`...), e.Cert)
	}
	if len(e.Chain) != 0 {
		b = append(b, `,"chain":[`...)
		for i, c := range e.Chain {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendB64(b, c)
		}
		b = append(b, ']')
	}
	if len(e.Sig) != 0 {
		b = appendB64(append(b, `,"sig":`...), e.Sig)
	}
	return append(b, '}'), nil
}

func appendB64(b, v []byte) []byte {
	b = append(b, '"')
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// MarshalJSON implements json.Marshaler with Marshal. It has a value
// receiver so that an Envelope held by value in another struct encodes the
// same way.
func (e Envelope) MarshalJSON() ([]byte, error) { return e.Marshal() }

// UnmarshalJSON implements json.Unmarshaler with Parse, so an envelope
// inside another JSON document is decoded just as strictly.
func (e *Envelope) UnmarshalJSON(b []byte) error {
	p, err := Parse(b)
	if err != nil {
		return err
	}
	*e = *p
	return nil
}

var (
	_ json.Marshaler   = Envelope{}
	_ json.Unmarshaler = (*Envelope)(nil)
)

// Parse decodes an envelope strictly. It refuses, with an error matching
// ErrMalformed: input over MaxSize (checked before anything else; that error
// also matches ErrTooLarge), anything but one JSON object, unknown,
// duplicate or differently cased field names, null values, numbers that are
// not plain integers, byte fields that are not canonical standard base64 with
// padding, fields out of bounds, a version other than 1 or 2, unknown
// algorithm ids, a cert without a sig or a sig without a cert, and a chain
// without a cert. White space and JSON string escapes (such as "\/") are
// accepted.
//
// Parse does not decrypt or verify anything; see Open and Verify.
func Parse(b []byte) (*Envelope, error) {
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%w: %w: %d bytes, at most %d", ErrTooLarge, ErrMalformed, len(b), MaxSize)
	}
	p := strictjson.New(b)
	e, err := ParseNext(p)
	if err != nil {
		return nil, err
	}
	if !p.End() {
		return nil, malformed("data after the envelope object")
	}
	return e, nil
}

// ParseNext decodes, as strictly as Parse, the envelope object at p's
// position, and leaves p after it: for envelopes inside other wire formats.
// The caller bounds the input's size.
//
// Its own parser rather than encoding/json: the format is one flat object,
// strictness (exact and unique names) comes for free, and byte fields are
// decoded straight from the input, which makes it about ten times faster
// than json.Decoder.Token.
func ParseNext(p *strictjson.Parser) (*Envelope, error) {
	var e Envelope
	seen, err := p.Object("envelope", names, func(f int) error {
		var err error
		switch names[f] {
		case "v":
			var v uint16
			v, err = p.Uint16("v")
			e.V = int(v)
		case "kem":
			e.KEM, err = p.Uint16("kem")
		case "kdf":
			e.KDF, err = p.Uint16("kdf")
		case "aead":
			e.AEAD, err = p.Uint16("aead")
		case "key_id":
			var id []byte
			id, err = p.String("key_id")
			e.KeyID = string(id)
		case "enc":
			e.Enc, err = p.Base64("enc")
		case "ct":
			e.CT, err = p.Base64("ct")
		case "cert":
			e.Cert, err = p.Base64("cert")
		case "chain":
			e.Chain, err = p.Base64List("chain", maxChain)
		case "sig":
			e.Sig, err = p.Base64("sig")
		case "salt":
			e.Salt, err = p.Base64("salt")
		}
		return err
	})
	if err == nil {
		err = strictjson.Missing(seen, names, 7)
	}
	if err != nil {
		return nil, malformed("%v", err)
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return &e, nil
}

// names are the envelope's field names; the first seven are required.
var names = []string{"v", "kem", "kdf", "aead", "key_id", "enc", "ct", "cert", "chain", "sig", "salt"}
