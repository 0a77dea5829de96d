package seal

import (
	"crypto/hpke"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// VerifyOptions configures Verify and a Verifier.
type VerifyOptions struct {
	// Trust is the network roots sender certificates must chain to and the
	// directory verifier whose current snapshot must list the sender in
	// good standing with the certificate's key pinned. Both are required.
	Trust pki.Trust
	// Intermediates are intermediate CA certificates for building chains,
	// in addition to those an envelope carries in its chain field. If nil,
	// only the envelope's are used.
	Intermediates *x509.CertPool
	// AllowAnonymous makes Verify accept unsigned envelopes, returning the
	// zero ID. If false, they fail with ErrAnonymous.
	AllowAnonymous bool
	// Now returns the time certificates and the directory are checked at.
	// If nil, time.Now is used.
	Now func() time.Time
	// CacheSize bounds how many verified certificate chains a Verifier
	// keeps. If zero, 1024 are kept; if negative, none.
	CacheSize int
	// CacheTTL bounds how long a verified chain is kept; it is never kept
	// past the expiry of any certificate in it. If zero, 10 minutes.
	CacheTTL time.Duration
}

// Verifier checks who sealed envelopes. It keeps a bounded cache of sender
// certificates whose chain to the roots it has verified, keyed by the
// certificate's SHA-256; the directory check (membership, pin, revocation,
// suspension) and the signature are checked on every call, against the
// directory current at that moment. It is safe for concurrent use.
//
// The roots are fixed when the Verifier is made: build a new one when they
// change.
type Verifier struct {
	opts  VerifyOptions                   // immutable after NewVerifier
	certs *cache[[32]byte, *verifiedCert] // nil: no cache
	// sessions keeps receiving contexts of version 2 envelopes, so that
	// a session costs one decapsulation. nil: none.
	sessions *cache[recipientKey, *hpke.Recipient]
	fresh    atomic.Int64 // chains verified in full, for tests
}

// verifiedCert is a sender certificate whose chain verified. It is
// immutable.
type verifiedCert struct {
	leaf *x509.Certificate
	id   pki.ID
	// from and until bound when the entry may be used: inside the validity
	// of every certificate of the chain, and until at most CacheTTL after
	// the verification.
	from, until time.Time
}

// NewVerifier returns a Verifier.
func NewVerifier(opts VerifyOptions) (*Verifier, error) {
	if opts.Trust.Roots == nil || opts.Trust.Directory == nil {
		return nil, errors.New("seal: VerifyOptions.Trust needs roots and a directory verifier")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 10 * time.Minute
	}
	v := &Verifier{opts: opts}
	switch {
	case opts.CacheSize == 0:
		v.certs = newCache[[32]byte, *verifiedCert](1024)
		v.sessions = newCache[recipientKey, *hpke.Recipient](1024)
	case opts.CacheSize > 0:
		v.certs = newCache[[32]byte, *verifiedCert](opts.CacheSize)
		v.sessions = newCache[recipientKey, *hpke.Recipient](opts.CacheSize)
	}
	return v, nil
}

// Verify checks env with a Verifier made for this one call (no cache). See
// Verifier.Verify.
func Verify(env *Envelope, ctx Context, opts VerifyOptions) (pki.ID, error) {
	opts.CacheSize = -1
	v, err := NewVerifier(opts)
	if err != nil {
		return pki.ID{}, err
	}
	return v.Verify(env, ctx)
}

// Verify checks that env was sealed by the member ctx.Sender and returns
// that member's identity. For a signed envelope: cert must chain to the
// roots (using chain and Intermediates to build the path) for client
// authentication at the current time, name the member ctx.Sender, be
// accepted by the current directory (pki.Snapshot.Authorize: listed, not
// suspended, not revoked, key pinned), and the signature must verify over
// ctx's info, enc and ct. An unsigned envelope is accepted only if
// AllowAnonymous is set and ctx.Sender is Anonymous; the ID is then zero.
//
// Verify does not decrypt; see OpenVerified.
func (v *Verifier) Verify(env *Envelope, ctx Context) (pki.ID, error) {
	var buf [maxInfo]byte
	info, err := ctx.appendInfo(buf[:0])
	if err != nil {
		return pki.ID{}, err
	}
	if err := env.check(); err != nil {
		return pki.ID{}, err
	}
	if err := senderMatches(env, ctx); err != nil {
		return pki.ID{}, err
	}
	if !env.Signed() {
		if !v.opts.AllowAnonymous {
			return pki.ID{}, fmt.Errorf("%w: anonymous senders are not accepted here", ErrAnonymous)
		}
		return pki.ID{}, nil
	}
	now := v.opts.Now()
	c, err := v.cert(env, now)
	if err != nil {
		return pki.ID{}, err
	}
	if c.id.Name != ctx.Sender {
		return pki.ID{}, fmt.Errorf("%w: %w: certificate is for %s, expected sender %q", ErrUntrusted, pki.ErrUnexpectedPeer, c.id, ctx.Sender)
	}
	snap := v.opts.Trust.Directory.Current()
	if snap == nil {
		return pki.ID{}, fmt.Errorf("%w: %w", ErrUntrusted, pki.ErrNoDirectory)
	}
	id, _, err := snap.Authorize(c.leaf, now)
	if err != nil {
		return pki.ID{}, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	if !verifySig(c.leaf.PublicKey, digest(info, env), env.Sig) {
		return pki.ID{}, fmt.Errorf("%w: by %s", ErrBadSignature, id)
	}
	return id, nil
}

// OpenVerified verifies env (Verify) and, if it passes, opens it (Open).
// It returns the plaintext and the sender's identity (zero for an accepted
// anonymous envelope).
func (v *Verifier) OpenVerified(env *Envelope, ctx Context, keys []pki.SealPrivateKey) ([]byte, pki.ID, error) {
	id, err := v.Verify(env, ctx)
	if err != nil {
		return nil, pki.ID{}, err
	}
	pt, err := v.Open(env, ctx, keys)
	if err != nil {
		return nil, pki.ID{}, err
	}
	return pt, id, nil
}

// Open opens env as the package's Open does, but with the Verifier's
// cache of session contexts. It authenticates nothing: call it only for an
// envelope that Verify accepted for ctx, when the two cannot be one
// OpenVerified (the signature is checked before anything is stored, the
// payload opened later).
func (v *Verifier) Open(env *Envelope, ctx Context, keys []pki.SealPrivateKey) ([]byte, error) {
	var buf [maxInfo]byte
	info, err := ctx.appendInfo(buf[:0])
	if err != nil {
		return nil, err
	}
	if err := env.check(); err != nil {
		return nil, err
	}
	if err := senderMatches(env, ctx); err != nil {
		return nil, err
	}
	return open(env, ctx, info, keys, v.sessions)
}

// cert returns env's sender certificate with its chain verified at now,
// from the cache if it holds it for now.
func (v *Verifier) cert(env *Envelope, now time.Time) (*verifiedCert, error) {
	var key [32]byte
	if v.certs != nil {
		key = sha256.Sum256(env.Cert)
		if c, ok := v.certs.get(key); ok && !now.Before(c.from) && now.Before(c.until) {
			return c, nil
		}
	}
	leaf, err := x509.ParseCertificate(env.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: cert: %v", ErrMalformed, err)
	}
	pool := v.opts.Intermediates
	if len(env.Chain) != 0 {
		if pool == nil {
			pool = x509.NewCertPool()
		} else {
			pool = pool.Clone()
		}
		for i, der := range env.Chain {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return nil, fmt.Errorf("%w: chain[%d]: %v", ErrMalformed, i, err)
			}
			pool.AddCert(c)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.opts.Trust.Roots,
		Intermediates: pool,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, fmt.Errorf("%w: certificate key usage does not allow signatures", ErrUntrusted)
	}
	if !supportedKey(leaf.PublicKey) {
		return nil, fmt.Errorf("%w: certificate key is %T, want ECDSA P-256 or Ed25519", ErrUntrusted, leaf.PublicKey)
	}
	id, err := pki.IDFromCert(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUntrusted, err)
	}
	v.fresh.Add(1)
	c := &verifiedCert{leaf: leaf, id: id, until: now.Add(v.opts.CacheTTL)}
	for _, cc := range chains[0] {
		if cc.NotBefore.After(c.from) {
			c.from = cc.NotBefore
		}
		if cc.NotAfter.Before(c.until) {
			c.until = cc.NotAfter // x509 accepts NotAfter itself; we stop a tick early
		}
	}
	if v.certs != nil {
		v.certs.put(key, c)
	}
	return c, nil
}
