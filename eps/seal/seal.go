// Package seal implements Kurier's sealed envelope (docs/eps-design.md,
// "Sealed envelope"): a payload encrypted with HPKE (RFC 9180, base mode,
// single shot) to one of the recipient's directory seal keys and, unless the
// sender is anonymous, signed with the sender's certificate key.
//
// The HPKE info binds the envelope to its message:
//
//	"kurier-seal/v1\x00" || sender || "\x00" || recipient || "\x00" ||
//	service || "\x00" || kind || "\x00" || message id
//
// where sender and recipient are member names and sender is "anonymous" for
// an unsigned envelope. The signature is by the key of the sender's
// certificate over
//
//	SHA-256("kurier-seal-sig/v1\x00" || info || kem (2) || kdf (2) || aead (2) ||
//	        len(key_id) (1) || key_id || len(enc) (2) || enc || ct)
//
// (integers big endian), so the signature also binds the suite and the
// recipient key: one signed envelope cannot be made to open to different
// plaintexts under two recipient keys.
//
// as ECDSA P-256 (ASN.1 DER, over that digest) or Ed25519 (pure Ed25519 with
// the 32-byte digest as the message).
//
// A receiver calls Verifier.OpenVerified, or Verify and then Open: Open alone
// authenticates nothing about the sender. Seal, Open and Verify are the
// uncached forms; on a hot path use a Sealer (which keeps parsed recipient
// keys) and a Verifier (which keeps verified sender certificate chains).
package seal

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// Errors. Every error of this package matches at most one of ErrMalformed,
// ErrUnknownKey, ErrOpen, ErrAnonymous, ErrUntrusted and ErrBadSignature.
var (
	// ErrMalformed: the envelope or the context breaks the format.
	ErrMalformed = errors.New("seal: malformed envelope")
	// ErrTooLarge: the envelope is, or would be, over MaxSize. Such errors
	// also match ErrMalformed.
	ErrTooLarge = errors.New("seal: envelope too large")
	// ErrUnknownKey: the envelope names no key the recipient holds, or one
	// of another KEM.
	ErrUnknownKey = errors.New("seal: unknown recipient key")
	// ErrOpen: decryption failed. It never says why.
	ErrOpen = errors.New("seal: cannot open envelope")
	// ErrAnonymous: the envelope is unsigned where a signed one is needed
	// (anonymous senders not allowed, or the context names a sender).
	ErrAnonymous = errors.New("seal: envelope is anonymous")
	// ErrUntrusted: the sender certificate does not chain to the network
	// roots, names another member than the expected sender, or is refused by
	// the directory. Errors from the directory also match the pki error
	// (pki.ErrRevoked, pki.ErrUnpinned, ...).
	ErrUntrusted = errors.New("seal: sender certificate not trusted")
	// ErrBadSignature: the signature does not verify.
	ErrBadSignature = errors.New("seal: bad signature")
)

// Anonymous is the sender name of unsigned envelopes. No signed envelope
// may use it, so a member called "anonymous" cannot sign envelopes.
const Anonymous = "anonymous"

// The message kinds of docs/eps-design.md, "Message".
const (
	KindRequest      = "request"
	KindResponse     = "response"
	KindNotification = "notification"
)

const (
	infoPrefix = "kurier-seal/v1\x00"
	sigPrefix  = "kurier-seal-sig/v1\x00"
	idLen      = 32 // lowercase hex of a 16-byte message id
	maxInfo    = len(infoPrefix) + 4 + 2*63 + 64 + len(KindNotification) + idLen
)

// Context is the message an envelope belongs to. All fields are required.
// Its encoding into HPKE's info (see the package comment) has no separator
// inside a field, so every Context has exactly one info.
type Context struct {
	// Sender is the sending member's name (pki.ValidName), or Anonymous.
	Sender string
	// Recipient is the receiving member's name.
	Recipient string
	// Service is the service called (pki.ValidServiceName).
	Service string
	// Kind is KindRequest, KindResponse or KindNotification.
	Kind string
	// MessageID is the message id: 32 lowercase hex digits.
	MessageID string
}

// Info validates c and returns the HPKE info it binds envelopes to. It is
// exported for tests of other implementations of the format.
func (c Context) Info() ([]byte, error) {
	return c.appendInfo(make([]byte, 0, maxInfo))
}

func (c Context) appendInfo(b []byte) ([]byte, error) {
	if c.Sender != Anonymous {
		if err := pki.ValidName(c.Sender); err != nil {
			return nil, fmt.Errorf("%w: context sender: %v", ErrMalformed, err)
		}
	}
	if err := pki.ValidName(c.Recipient); err != nil {
		return nil, fmt.Errorf("%w: context recipient: %v", ErrMalformed, err)
	}
	if err := pki.ValidServiceName(c.Service); err != nil {
		return nil, fmt.Errorf("%w: context service: %v", ErrMalformed, err)
	}
	switch c.Kind {
	case KindRequest, KindResponse, KindNotification:
	default:
		return nil, fmt.Errorf("%w: context kind %q: want request, response or notification", ErrMalformed, c.Kind)
	}
	if !validMessageID(c.MessageID) {
		return nil, fmt.Errorf("%w: context message id %q: want %d lowercase hex digits", ErrMalformed, c.MessageID, idLen)
	}
	b = append(b, infoPrefix...)
	for i, s := range [...]string{c.Sender, c.Recipient, c.Service, c.Kind, c.MessageID} {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, s...)
	}
	return b, nil
}

func validMessageID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func kemFor(id uint16) hpke.KEM {
	switch id {
	case KEMMLKEM768X25519:
		return hpke.MLKEM768X25519()
	case KEMX25519:
		kem, _ := hpke.NewKEM(KEMX25519) // DHKEM(X25519) is always built in
		return kem
	}
	return nil
}

func aeadFor(id uint16) hpke.AEAD {
	switch id {
	case AEADAES128GCM:
		return hpke.AES128GCM()
	case AEADAES256GCM:
		return hpke.AES256GCM()
	case AEADChaCha20Poly1305:
		return hpke.ChaCha20Poly1305()
	}
	return nil
}

// SealerConfig configures a Sealer.
type SealerConfig struct {
	// AEAD is the HPKE AEAD id to seal with: AEADChaCha20Poly1305,
	// AEADAES128GCM or AEADAES256GCM. If zero, ChaCha20-Poly1305 is used.
	AEAD uint16
	// KeyCacheSize bounds how many parsed recipient public keys are kept
	// (parsing an ML-KEM-768 key costs about as much as a sixth of a seal).
	// If zero, 256 are kept; if negative, none.
	KeyCacheSize int
	// SessionTTL is how long a session seals signed envelopes (version 2,
	// see session.go) to one recipient key before a new one starts;
	// SessionMaxUses bounds its messages. If zero, DefaultSessionTTL and
	// DefaultSessionMaxUses. A negative SessionTTL turns sessions off:
	// every envelope is version 1, one KEM encapsulation each.
	SessionTTL     time.Duration
	SessionMaxUses int
	// Now is the clock for sessions. If nil, time.Now.
	Now func() time.Time
}

// Sealer seals envelopes. It keeps parsed recipient public keys in a bounded
// cache. It is safe for concurrent use. The zero Sealer seals with
// ChaCha20-Poly1305 and caches nothing.
type Sealer struct {
	aead     uint16                           // 0: ChaCha20-Poly1305
	keys     *cache[[32]byte, hpke.PublicKey] // by keyHash; nil: no cache
	sessions *sessions                        // nil: version 1 only
}

// keyHash names a serialized public key of a KEM in the key cache.
func keyHash(kem uint16, public []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte{byte(kem >> 8), byte(kem)})
	h.Write(public)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// NewSealer returns a Sealer.
func NewSealer(cfg SealerConfig) (*Sealer, error) {
	if cfg.AEAD != 0 && !knownAEAD(cfg.AEAD) {
		return nil, fmt.Errorf("seal: unknown AEAD 0x%04x", cfg.AEAD)
	}
	s := &Sealer{aead: cfg.AEAD}
	if cfg.SessionTTL >= 0 {
		ss := &sessions{ttl: cfg.SessionTTL, maxUses: cfg.SessionMaxUses, now: cfg.Now, m: map[sessionKey]*senderSession{}}
		if ss.ttl == 0 {
			ss.ttl = DefaultSessionTTL
		}
		if ss.maxUses <= 0 {
			ss.maxUses = DefaultSessionMaxUses
		}
		if ss.now == nil {
			ss.now = time.Now
		}
		s.sessions = ss
	}
	switch {
	case cfg.KeyCacheSize == 0:
		s.keys = newCache[[32]byte, hpke.PublicKey](256)
	case cfg.KeyCacheSize > 0:
		s.keys = newCache[[32]byte, hpke.PublicKey](cfg.KeyCacheSize)
	}
	return s, nil
}

// Seal seals plaintext with the zero Sealer: ChaCha20-Poly1305, no key
// cache. See Sealer.Seal.
func Seal(to pki.SealKey, ctx Context, plaintext []byte, signer *tls.Certificate) (*Envelope, error) {
	var s Sealer
	return s.Seal(to, ctx, plaintext, signer)
}

// Seal encrypts plaintext to the recipient key to, a seal key from the
// recipient's directory entry, bound to ctx. If signer is nil the envelope
// is anonymous and ctx.Sender must be Anonymous; otherwise signer's leaf
// (signer.Leaf, or Certificate[0] parsed if Leaf is nil) must name the
// member ctx.Sender, its key must be ECDSA P-256 or Ed25519, and the
// envelope carries the leaf as cert and the rest of signer.Certificate as
// chain (sharing memory with signer.Certificate: don't modify them). It
// fails with ErrTooLarge if the envelope would exceed MaxSize.
func (s *Sealer) Seal(to pki.SealKey, ctx Context, plaintext []byte, signer *tls.Certificate) (*Envelope, error) {
	var buf [maxInfo]byte
	info, err := ctx.appendInfo(buf[:0])
	if err != nil {
		return nil, err
	}
	if len(plaintext) > MaxSize/4*3 { // base64 alone would be over the limit
		return nil, fmt.Errorf("%w: %w: plaintext is %d bytes", ErrTooLarge, ErrMalformed, len(plaintext))
	}
	var key crypto.Signer
	if signer == nil {
		if ctx.Sender != Anonymous {
			return nil, fmt.Errorf("seal: no signer for sender %q (only %q envelopes are unsigned)", ctx.Sender, Anonymous)
		}
	} else if key, err = checkSigner(signer, ctx.Sender); err != nil {
		return nil, err
	}
	pk, err := s.publicKey(to)
	if err != nil {
		return nil, err
	}
	aeadID := s.aead
	if aeadID == 0 {
		aeadID = AEADChaCha20Poly1305
	}
	var e *Envelope
	if key != nil && s.sessions != nil {
		if e, err = s.sealSession(to, pk, aeadID, ctx, info, plaintext); err != nil {
			return nil, err
		}
	} else {
		enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), aeadFor(aeadID), info)
		if err != nil {
			return nil, fmt.Errorf("seal: to key %s: %w", to.ID, err)
		}
		ct, err := sender.Seal(nil, plaintext)
		if err != nil {
			return nil, fmt.Errorf("seal: to key %s: %w", to.ID, err)
		}
		e = &Envelope{V: 1, KEM: to.KEM, KDF: KDFHKDFSHA256, AEAD: aeadID, KeyID: to.ID, Enc: enc, CT: ct}
	}
	if key != nil {
		e.Cert = signer.Certificate[0]
		if len(signer.Certificate) > 1 {
			e.Chain = signer.Certificate[1:]
		}
		if e.Sig, err = sign(key, digest(info, e)); err != nil {
			return nil, err
		}
	}
	if err := e.check(); err != nil {
		return nil, err
	}
	return e, nil
}

// SealUnsigned seals plaintext to the key to for ctx without a signature,
// under ctx.Sender's name: what software does that keeps plaintext away
// from its endpoint server, which then signs the envelope with Sign. Such
// an envelope does not open or verify until it is signed.
func SealUnsigned(to pki.SealKey, ctx Context, plaintext []byte) (*Envelope, error) {
	if ctx.Sender == Anonymous {
		return Seal(to, ctx, plaintext, nil)
	}
	var buf [maxInfo]byte
	info, err := ctx.appendInfo(buf[:0])
	if err != nil {
		return nil, err
	}
	if len(plaintext) > MaxSize/4*3 {
		return nil, fmt.Errorf("%w: %w: plaintext is %d bytes", ErrTooLarge, ErrMalformed, len(plaintext))
	}
	s := &Sealer{}
	pk, err := s.publicKey(to)
	if err != nil {
		return nil, err
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), aeadFor(AEADChaCha20Poly1305), info)
	if err != nil {
		return nil, fmt.Errorf("seal: to key %s: %w", to.ID, err)
	}
	ct, err := sender.Seal(nil, plaintext)
	if err != nil {
		return nil, fmt.Errorf("seal: to key %s: %w", to.ID, err)
	}
	e := &Envelope{V: 1, KEM: to.KEM, KDF: KDFHKDFSHA256, AEAD: AEADChaCha20Poly1305, KeyID: to.ID, Enc: enc, CT: ct}
	if err := e.check(); err != nil { // as Seal: nothing that would not encode
		return nil, err
	}
	return e, nil
}

// Sign signs an envelope that was sealed without a signature (by software
// that does not hold the sender's certificate key) as ctx.Sender, whose
// certificate signer is. Signing needs no plaintext: the signature covers
// the info string, the suite, the key id and the ciphertext.
func Sign(env *Envelope, ctx Context, signer *tls.Certificate) error {
	if env.Signed() {
		return fmt.Errorf("%w: envelope is already signed", ErrMalformed)
	}
	if ctx.Sender == Anonymous {
		return fmt.Errorf("%w: an anonymous envelope is not signed", ErrMalformed)
	}
	var buf [maxInfo]byte
	info, err := ctx.appendInfo(buf[:0])
	if err != nil {
		return err
	}
	key, err := checkSigner(signer, ctx.Sender)
	if err != nil {
		return err
	}
	e := *env
	e.Cert = signer.Certificate[0]
	if len(signer.Certificate) > 1 {
		e.Chain = signer.Certificate[1:]
	}
	if e.Sig, err = sign(key, digest(info, &e)); err != nil {
		return err
	}
	if err := e.check(); err != nil {
		return err
	}
	*env = e
	return nil
}

// publicKey parses to, through the cache if s has one.
func (s *Sealer) publicKey(to pki.SealKey) (hpke.PublicKey, error) {
	if !pki.ValidKeyID(to.ID) {
		return nil, fmt.Errorf("seal: invalid recipient key id %q", to.ID)
	}
	kem := kemFor(to.KEM)
	if kem == nil {
		return nil, fmt.Errorf("seal: recipient key %s: unsupported KEM 0x%04x", to.ID, to.KEM)
	}
	var h [32]byte
	if s.keys != nil {
		h = keyHash(to.KEM, to.Public)
		if pk, ok := s.keys.get(h); ok {
			return pk, nil
		}
	}
	pk, err := kem.NewPublicKey(to.Public)
	if err != nil {
		return nil, fmt.Errorf("seal: recipient key %s: %w", to.ID, err)
	}
	if s.keys != nil {
		s.keys.put(h, pk)
	}
	return pk, nil
}

// checkSigner checks that c can sign envelopes for the member named sender.
func checkSigner(c *tls.Certificate, sender string) (crypto.Signer, error) {
	if sender == Anonymous {
		return nil, fmt.Errorf("seal: %q envelopes cannot be signed", Anonymous)
	}
	if len(c.Certificate) == 0 {
		return nil, errors.New("seal: signer has no certificate")
	}
	if len(c.Certificate) > 1+maxChain {
		return nil, fmt.Errorf("seal: signer chain has %d intermediates, at most %d", len(c.Certificate)-1, maxChain)
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("seal: parse signer certificate: %w", err)
		}
	}
	id, err := pki.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("seal: signer certificate: %w", err)
	}
	if id.Name != sender {
		return nil, fmt.Errorf("seal: signer certificate is for %s, context sender is %q", id, sender)
	}
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("seal: signer private key cannot sign")
	}
	if !supportedKey(leaf.PublicKey) {
		return nil, fmt.Errorf("seal: signer key is %T, want ECDSA P-256 or Ed25519", leaf.PublicKey)
	}
	if pk, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pk.Equal(leaf.PublicKey) {
		return nil, errors.New("seal: signer private key does not match its certificate")
	}
	return key, nil
}

func supportedKey(k crypto.PublicKey) bool {
	switch k := k.(type) {
	case *ecdsa.PublicKey:
		return k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return true
	}
	return false
}

// digest is what the signature signs.
func digest(info []byte, e *Envelope) []byte {
	h := sha256.New()
	if e.V == 2 {
		h.Write([]byte(sigPrefixV2))
	} else {
		h.Write([]byte(sigPrefix))
	}
	h.Write(info)
	var b [8]byte
	binary.BigEndian.PutUint16(b[0:], e.KEM)
	binary.BigEndian.PutUint16(b[2:], e.KDF)
	binary.BigEndian.PutUint16(b[4:], e.AEAD)
	b[6] = byte(len(e.KeyID))
	h.Write(b[:7])
	h.Write([]byte(e.KeyID))
	binary.BigEndian.PutUint16(b[0:], uint16(len(e.Enc)))
	h.Write(b[:2])
	h.Write(e.Enc)
	if e.V == 2 {
		h.Write([]byte{byte(len(e.Salt))})
		h.Write(e.Salt)
	}
	h.Write(e.CT)
	return h.Sum(nil)
}

func sign(key crypto.Signer, d []byte) ([]byte, error) {
	var opts crypto.SignerOpts = crypto.SHA256 // ECDSA: sign the digest
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		opts = crypto.Hash(0) // pure Ed25519, the digest is the message
	}
	sig, err := key.Sign(rand.Reader, d, opts)
	if err != nil {
		return nil, fmt.Errorf("seal: sign: %w", err)
	}
	return sig, nil
}

// verifySig checks sig by pub over d.
func verifySig(pub crypto.PublicKey, d, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return k.Curve == elliptic.P256() && ecdsa.VerifyASN1(k, d, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, d, sig)
	}
	return false
}

// Open decrypts env with the key named by env.KeyID among keys, bound to
// ctx. It checks that the envelope is signed exactly when ctx.Sender is not
// Anonymous, but it does not check the signature or the sender: use Verify
// first, or Verifier.OpenVerified. Decryption failures are ErrOpen and say
// nothing more.
func Open(env *Envelope, ctx Context, keys []pki.SealPrivateKey) ([]byte, error) {
	var v Verifier // no caches: Verifier.Open without session contexts kept
	return v.Open(env, ctx, keys)
}

// senderMatches checks that env is signed exactly when ctx names a sender.
func senderMatches(env *Envelope, ctx Context) error {
	switch {
	case env.Signed() && ctx.Sender == Anonymous:
		return fmt.Errorf("%w: signed envelope for sender %q", ErrMalformed, Anonymous)
	case !env.Signed() && ctx.Sender != Anonymous:
		return fmt.Errorf("%w: unsigned, but the context names sender %q", ErrAnonymous, ctx.Sender)
	}
	return nil
}

// open decrypts env; c, if not nil, keeps the receiving contexts of
// version 2 sessions.
func open(env *Envelope, ctx Context, info []byte, keys []pki.SealPrivateKey, c *cache[recipientKey, *hpke.Recipient]) ([]byte, error) {
	var key hpke.PrivateKey
	for _, k := range keys {
		if k.ID == env.KeyID && k.Key != nil {
			key = k.Key
			break
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownKey, env.KeyID)
	}
	if got := key.KEM().ID(); got != env.KEM {
		return nil, fmt.Errorf("%w: key %q is for KEM 0x%04x, the envelope uses 0x%04x", ErrUnknownKey, env.KeyID, got, env.KEM)
	}
	if env.V == 2 {
		return openSession(env, ctx, info, key, c)
	}
	r, err := hpke.NewRecipient(env.Enc, key, hpke.HKDFSHA256(), aeadFor(env.AEAD), info)
	if err != nil {
		return nil, ErrOpen
	}
	pt, err := r.Open(nil, env.CT)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
