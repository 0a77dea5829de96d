package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"reflect"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/kurier-net/kurier/pki"
)

// Version 2 envelopes: sealing in a session.
//
// A signed envelope of version 1 costs a KEM encapsulation to seal and a
// decapsulation to open, for every message. A Sealer instead keeps one HPKE
// sender context per (sender, recipient, recipient key, AEAD) for a while,
// and seals each message with a key of its own exported from it:
//
//	session info = "kurier-session/v1\x00" || sender || "\x00" || recipient
//	(enc, context) = SetupBaseS(recipient key, session info)
//	key || nonce = context.Export("kurier-msg/v1\x00" || salt || info, Nk + 12)
//	ct = AEAD(key).Seal(nonce, plaintext, aad = "")
//
// where info is the message's HPKE info of version 1 (the package comment)
// and salt is 16 fresh random bytes, so every message has its own key and
// nonce even under a reused message id. The envelope carries enc (the same
// for every message of the session) and salt. A receiver derives the same
// context from enc, so each envelope opens on its own, without state; a
// Verifier keeps recent receiving contexts so that only the first envelope
// of a session costs a decapsulation. A version 2 envelope is always signed,
// with the signature of version 1 under the prefix "kurier-seal-sig/v2\x00"
// and the salt after enc (digest).
//
// Confidentiality is HPKE's to the recipient's static key, as for version 1
// (neither has forward secrecy against that key). What a session adds to
// protect is its exporter secret, held in the sender's memory for at most
// SessionTTL: the plaintexts it protects passed through the same memory.
const (
	sessionInfoPrefix = "kurier-session/v1\x00"
	msgExportPrefix   = "kurier-msg/v1\x00"
	sigPrefixV2       = "kurier-seal-sig/v2\x00"
	nonceSize         = 12 // every AEAD we accept
)

// Session defaults of SealerConfig.
const (
	DefaultSessionTTL     = 10 * time.Minute
	DefaultSessionMaxUses = 1 << 20
)

// sessionInfo is the HPKE info of a session from sender to recipient.
func sessionInfo(sender, recipient string) []byte {
	b := make([]byte, 0, len(sessionInfoPrefix)+len(sender)+1+len(recipient))
	b = append(b, sessionInfoPrefix...)
	b = append(b, sender...)
	b = append(b, 0)
	return append(b, recipient...)
}

// messageKey exports the key and nonce of one message from a session.
func messageKey(export func(string, int) ([]byte, error), aeadID uint16, salt, info []byte) (cipher.AEAD, []byte, error) {
	nk := aeadKeySize(aeadID)
	ctx := make([]byte, 0, len(msgExportPrefix)+len(salt)+len(info))
	ctx = append(append(append(ctx, msgExportPrefix...), salt...), info...)
	km, err := export(string(ctx), nk+nonceSize)
	if err != nil {
		return nil, nil, err
	}
	a, err := newAEAD(aeadID, km[:nk])
	if err != nil {
		return nil, nil, err
	}
	return a, km[nk:], nil
}

func aeadKeySize(id uint16) int {
	if id == AEADAES128GCM {
		return 16
	}
	return 32
}

func newAEAD(id uint16, key []byte) (cipher.AEAD, error) {
	switch id {
	case AEADChaCha20Poly1305:
		return chacha20poly1305.New(key)
	case AEADAES128GCM, AEADAES256GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	}
	return nil, fmt.Errorf("seal: unknown AEAD 0x%04x", id)
}

// senderSession is a sending HPKE context and what it may still be used
// for. Export only reads it, so it is safe for concurrent use.
type senderSession struct {
	enc     []byte
	sender  *hpke.Sender
	expires time.Time
	mu      sync.Mutex // guards uses
	uses    int
}

// sessionKey names a sender session.
type sessionKey struct {
	key  [32]byte // keyHash of the recipient key
	aead uint16
	info string // session info
}

// sessions holds a Sealer's sender sessions.
type sessions struct {
	ttl     time.Duration
	maxUses int
	now     func() time.Time

	mu sync.Mutex // guards m
	m  map[sessionKey]*senderSession
}

// maxSessions bounds a Sealer's sessions: one per recipient key it seals
// to, so about the members it talks to.
const maxSessions = 4096

// get returns a usable session for the recipient key pk (named by h),
// making a new one when there is none, it expired or it was used up.
func (ss *sessions) get(h [32]byte, pk hpke.PublicKey, aeadID uint16, info []byte) (*senderSession, error) {
	k := sessionKey{key: h, aead: aeadID, info: string(info)}
	now := ss.now()
	ss.mu.Lock()
	s := ss.m[k]
	ss.mu.Unlock()
	if s != nil && now.Before(s.expires) {
		s.mu.Lock()
		ok := s.uses < ss.maxUses
		s.uses++
		s.mu.Unlock()
		if ok {
			return s, nil
		}
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), aeadFor(aeadID), info)
	if err != nil {
		return nil, err
	}
	s = &senderSession{enc: enc, sender: sender, expires: now.Add(ss.ttl), uses: 1}
	ss.mu.Lock()
	if _, ok := ss.m[k]; !ok && len(ss.m) >= maxSessions {
		for old := range ss.m { // an arbitrary one, as cache does
			delete(ss.m, old)
			break
		}
	}
	ss.m[k] = s
	ss.mu.Unlock()
	return s, nil
}

// sealSession seals plaintext in a session to pk as a version 2 envelope,
// unsigned yet.
func (s *Sealer) sealSession(to pki.SealKey, pk hpke.PublicKey, aeadID uint16, ctx Context, info, plaintext []byte) (*Envelope, error) {
	sess, err := s.sessions.get(keyHash(to.KEM, to.Public), pk, aeadID, sessionInfo(ctx.Sender, ctx.Recipient))
	if err != nil {
		return nil, fmt.Errorf("seal: to key %s: %w", to.ID, err)
	}
	salt := make([]byte, saltSize)
	rand.Read(salt)
	a, nonce, err := messageKey(sess.sender.Export, aeadID, salt, info)
	if err != nil {
		return nil, fmt.Errorf("seal: to key %s: %w", to.ID, err)
	}
	ct := a.Seal(nil, nonce, plaintext, nil)
	return &Envelope{V: 2, KEM: to.KEM, KDF: KDFHKDFSHA256, AEAD: aeadID, KeyID: to.ID, Enc: sess.enc, Salt: salt, CT: ct}, nil
}

// recipientKey names a receiving session in a Verifier's cache: the
// private key it was opened with, and a hash of enc and the session info.
type recipientKey struct {
	key hpke.PrivateKey
	h   [32]byte
}

// openSession opens a version 2 envelope with key, through cache if not
// nil. Failures are ErrOpen.
func openSession(env *Envelope, ctx Context, info []byte, key hpke.PrivateKey, c *cache[recipientKey, *hpke.Recipient]) ([]byte, error) {
	sinfo := sessionInfo(ctx.Sender, ctx.Recipient)
	var rk recipientKey
	var r *hpke.Recipient
	if c != nil && !reflect.TypeOf(key).Comparable() {
		c = nil // a key type of another implementation: no map key, no cache
	}
	if c != nil {
		h := sha256.New()
		h.Write(env.Enc)
		h.Write([]byte{0, byte(env.AEAD >> 8), byte(env.AEAD)})
		h.Write(sinfo)
		rk = recipientKey{key: key}
		h.Sum(rk.h[:0])
		r, _ = c.get(rk)
	}
	if r == nil {
		var err error
		if r, err = hpke.NewRecipient(env.Enc, key, hpke.HKDFSHA256(), aeadFor(env.AEAD), sinfo); err != nil {
			return nil, ErrOpen
		}
		if c != nil {
			c.put(rk, r)
		}
	}
	a, nonce, err := messageKey(r.Export, env.AEAD, env.Salt, info)
	if err != nil {
		return nil, ErrOpen
	}
	pt, err := a.Open(nil, nonce, env.CT, nil)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
