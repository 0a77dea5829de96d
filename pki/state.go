package pki

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.step.sm/crypto/pemutil"
)

// A member's state directory, written by Enroll and read by every daemon:
//
//	state.json          CA URL, root fingerprint, network, identity
//	roots.pem           network root certificates
//	directory-keys.pem  trusted directory signing keys (PKIX PEM)
//	cert.pem            certificate chain, leaf first (rewritten on renewal)
//	key.pem             private key, PKCS#8 PEM (0600), created here, never sent
//	                    anywhere: Ed25519, or P-256 if enrolled before Ed25519
//	seal.key            HPKE private key for payload sealing (0600)
//	seal-web.key        health offices: X25519 HPKE key for browsers (0600)
//	directory           the last good signed directory (cache)
const (
	stateFile         = "state.json"
	rootsFile         = "roots.pem"
	directoryKeysFile = "directory-keys.pem"
	certFile          = "cert.pem"
	keyFile           = "key.pem"
	sealKeyFile       = "seal.key"
	webSealKeyFile    = "seal-web.key"
	directoryFile     = "directory"
)

// SealKEM is the HPKE KEM used for payload sealing: ML-KEM-768 with X25519
// (a post-quantum hybrid).
func SealKEM() hpke.KEM { return hpke.MLKEM768X25519() }

// SealPrivateKey is a member's HPKE private key with its directory key id.
// It redacts itself in logs.
type SealPrivateKey struct {
	ID  string
	Key hpke.PrivateKey
}

// LogValue implements slog.LogValuer.
func (k SealPrivateKey) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", k.ID), slog.String("key", "REDACTED"))
}

// Public returns the directory entry for the key.
func (k SealPrivateKey) Public() SealKey {
	return SealKey{ID: k.ID, KEM: k.Key.KEM().ID(), Public: k.Key.PublicKey().Bytes()}
}

// NewSealKey generates an HPKE key pair named id.
func NewSealKey(id string) (SealPrivateKey, error) {
	if !ValidKeyID(id) {
		return SealPrivateKey{}, fmt.Errorf("pki: invalid seal key id %q", id)
	}
	k, err := SealKEM().GenerateKey()
	if err != nil {
		return SealPrivateKey{}, fmt.Errorf("pki: generate seal key: %w", err)
	}
	return SealPrivateKey{ID: id, Key: k}, nil
}

// WebSealKEM is the HPKE KEM of a health office's second seal key, the one
// citizens' browsers seal index-case submissions to: DHKEM(X25519), since
// WebCrypto has X25519 but no ML-KEM. Members seal to each other with
// SealKEM only.
func WebSealKEM() hpke.KEM { return hpke.DHKEM(ecdh.X25519()) }

// NewWebSealKey generates a WebSealKEM key pair named id.
func NewWebSealKey(id string) (SealPrivateKey, error) {
	if !ValidKeyID(id) {
		return SealPrivateKey{}, fmt.Errorf("pki: invalid seal key id %q", id)
	}
	k, err := WebSealKEM().GenerateKey()
	if err != nil {
		return SealPrivateKey{}, fmt.Errorf("pki: generate web seal key: %w", err)
	}
	return SealPrivateKey{ID: id, Key: k}, nil
}

const sealPEMType = "KURIER HPKE PRIVATE KEY"

func marshalSealKey(k SealPrivateKey) ([]byte, error) {
	b, err := k.Key.Bytes()
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{
		Type:    sealPEMType,
		Headers: map[string]string{"Key-Id": k.ID, "KEM": strconv.Itoa(int(k.Key.KEM().ID()))},
		Bytes:   b,
	}), nil
}

func parseSealKey(b []byte) (SealPrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != sealPEMType {
		return SealPrivateKey{}, errors.New("pki: not a seal key file")
	}
	kemID, err := strconv.ParseUint(blk.Headers["KEM"], 10, 16)
	if err != nil {
		return SealPrivateKey{}, errors.New("pki: seal key file has no KEM header")
	}
	kem, err := hpke.NewKEM(uint16(kemID))
	if err != nil {
		return SealPrivateKey{}, fmt.Errorf("pki: seal key: %w", err)
	}
	k, err := kem.NewPrivateKey(blk.Bytes)
	if err != nil {
		return SealPrivateKey{}, fmt.Errorf("pki: seal key: %w", err)
	}
	id := blk.Headers["Key-Id"]
	if !ValidKeyID(id) {
		return SealPrivateKey{}, errors.New("pki: seal key file has no valid Key-Id header")
	}
	return SealPrivateKey{ID: id, Key: k}, nil
}

// State is a member's enrolment state.
type State struct {
	// Dir is where the state lives.
	Dir string
	// CAURL and Fingerprint locate and authenticate the network CA.
	CAURL       string
	Fingerprint string
	// ID is this member's identity.
	ID ID
	// Roots are the network roots; DirectoryKeys the trusted directory keys.
	Roots         []*x509.Certificate
	DirectoryKeys []ed25519.PublicKey
	// Cert is the current certificate with its private key.
	Cert *tls.Certificate
	// Seal is the HPKE key for payload sealing.
	Seal SealPrivateKey
	// WebSeal is a health office's X25519 key for submissions sealed in
	// citizens' browsers (see WebSealKEM); nil for other members.
	WebSeal *SealPrivateKey
}

// SealKeys returns the member's private seal keys: Seal, then WebSeal if
// there is one.
func (s *State) SealKeys() []SealPrivateKey {
	keys := []SealPrivateKey{s.Seal}
	if s.WebSeal != nil {
		keys = append(keys, *s.WebSeal)
	}
	return keys
}

type stateJSON struct {
	CAURL       string `json:"ca_url"`
	Fingerprint string `json:"ca_fingerprint"`
	Network     string `json:"network"`
	ID          string `json:"id"`
}

// RootPool returns the roots as a pool.
func (s *State) RootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range s.Roots {
		p.AddCert(r)
	}
	return p
}

// NewVerifier returns a directory verifier for this member's network and
// trusted directory keys, preloaded with the cached directory if one is
// present and still valid (a bad or expired cache is ignored).
func (s *State) NewVerifier(now func() time.Time) (*Verifier, error) {
	v, err := NewVerifier(VerifierConfig{Network: s.ID.Network, Keys: s.DirectoryKeys, Now: now})
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(s.Dir, directoryFile)); err == nil {
		v.Update(b) // a stale cache is replaced by the first fetch
	}
	return v, nil
}

// SaveDirectory caches a verified signed directory in the state directory so
// a restarted daemon starts from it (and refuses anything older).
func (s *State) SaveDirectory(signed []byte) error {
	return writeFileAtomic(filepath.Join(s.Dir, directoryFile), signed, 0o644)
}

// SaveDirectoryKeys records the directory keys a verified directory told the
// member to trust (see TrustAnchors), so a restart starts from them.
func (s *State) SaveDirectoryKeys(keys []ed25519.PublicKey) error {
	var b bytes.Buffer
	for _, k := range keys {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return err
		}
		pem.Encode(&b, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	if err := writeFileAtomic(filepath.Join(s.Dir, directoryKeysFile), b.Bytes(), 0o644); err != nil {
		return err
	}
	s.DirectoryKeys = keys
	return nil
}

// MissingRoots returns the fingerprints in want of roots the member does not
// hold yet.
func (s *State) MissingRoots(want []string) []string {
	have := map[string]bool{}
	for _, r := range s.Roots {
		have[Fingerprint(r)] = true
	}
	var out []string
	for _, fp := range want {
		if !have[fp] {
			out = append(out, fp)
		}
	}
	return out
}

// AdoptRoots fetches the CA's trust bundle and adds the roots whose
// fingerprints are in want (taken from a verified directory) to roots.pem.
// A root the directory does not list is never added. It returns the
// fingerprints added. Connections made before a restart keep using the roots
// loaded at start.
func (s *State) AdoptRoots(ctx context.Context, cl *CAClient, want []string) ([]string, error) {
	missing := s.MissingRoots(want)
	if len(missing) == 0 {
		return nil, nil
	}
	tb, err := cl.Trust(ctx)
	if err != nil {
		return nil, err
	}
	var added []string
	roots := s.Roots
	for _, r := range tb.Roots {
		fp := Fingerprint(r)
		if slices.Contains(missing, fp) && !slices.Contains(added, fp) {
			roots = append(roots, r)
			added = append(added, fp)
		}
	}
	if len(added) == 0 {
		return nil, fmt.Errorf("pki: the CA's trust bundle lacks the roots %v the directory lists", missing)
	}
	ders := make([][]byte, 0, len(roots))
	for _, r := range roots {
		ders = append(ders, r.Raw)
	}
	if err := writeFileAtomic(filepath.Join(s.Dir, rootsFile), chainPEM(ders), 0o644); err != nil {
		return nil, err
	}
	s.Roots = roots
	return added, nil
}

// SaveCert writes a renewed certificate chain. The key is unchanged.
func (s *State) SaveCert(c *tls.Certificate) error {
	return writeFileAtomic(filepath.Join(s.Dir, certFile), chainPEM(c.Certificate), 0o644)
}

func chainPEM(ders [][]byte) []byte {
	var b bytes.Buffer
	for _, d := range ders {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	return b.Bytes()
}

// LoadState reads a member's state directory.
func LoadState(dir string) (*State, error) {
	raw, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("load state: %w (run kurier enroll first)", err)
	}
	var sj stateJSON
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sj); err != nil {
		return nil, fmt.Errorf("load state %s: %w", stateFile, err)
	}
	id, err := ParseID(sj.ID)
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	s := &State{Dir: dir, CAURL: sj.CAURL, Fingerprint: sj.Fingerprint, ID: id}
	if s.Roots, err = readCerts(filepath.Join(dir, rootsFile)); err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	if s.DirectoryKeys, err = readDirectoryKeys(filepath.Join(dir, directoryKeysFile)); err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	if err := checkPrivate(filepath.Join(dir, keyFile)); err != nil {
		return nil, err
	}
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return nil, fmt.Errorf("load state: certificate and key: %w", err)
	}
	if _, err := NewIdentity(&c); err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	if got, _ := IDFromCert(c.Leaf); got != id {
		return nil, fmt.Errorf("load state: certificate is for %s, state says %s", got, id)
	}
	s.Cert = &c
	if err := checkPrivate(filepath.Join(dir, sealKeyFile)); err != nil {
		return nil, err
	}
	sb, err := os.ReadFile(filepath.Join(dir, sealKeyFile))
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	if s.Seal, err = parseSealKey(sb); err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	web := filepath.Join(dir, webSealKeyFile)
	switch wb, err := os.ReadFile(web); {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("load state: %w", err)
	default:
		if err := checkPrivate(web); err != nil {
			return nil, err
		}
		k, err := parseSealKey(wb)
		if err != nil {
			return nil, fmt.Errorf("load state: %s: %w", webSealKeyFile, err)
		}
		s.WebSeal = &k
	}
	return s, nil
}

// checkPrivate refuses a key file others may read.
func checkPrivate(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("load state: %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	return nil
}

func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no certificates", path)
	}
	return out, nil
}

func readDirectoryKeys(path string) ([]ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []ed25519.PublicKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an Ed25519 key", path)
		}
		out = append(out, ek)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no keys", path)
	}
	return out, nil
}

// writeState writes every file of a fresh enrolment. Files holding private
// keys are 0600; the directory is 0700.
func writeState(s *State) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return err
	}
	if err := os.Chmod(s.Dir, 0o700); err != nil {
		return err
	}
	keyPEM, err := pemutil.Serialize(s.Cert.PrivateKey, pemutil.WithPKCS8(true))
	if err != nil {
		return fmt.Errorf("encode key: %w", err)
	}
	sealPEM, err := marshalSealKey(s.Seal)
	if err != nil {
		return fmt.Errorf("encode seal key: %w", err)
	}
	if s.WebSeal != nil {
		webPEM, err := marshalSealKey(*s.WebSeal)
		if err != nil {
			return fmt.Errorf("encode web seal key: %w", err)
		}
		if err := writeFileAtomic(filepath.Join(s.Dir, webSealKeyFile), webPEM, 0o600); err != nil {
			return err
		}
	}
	var roots [][]byte
	for _, r := range s.Roots {
		roots = append(roots, r.Raw)
	}
	var dk bytes.Buffer
	for _, k := range s.DirectoryKeys {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return err
		}
		pem.Encode(&dk, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	sj, err := json.MarshalIndent(stateJSON{CAURL: s.CAURL, Fingerprint: s.Fingerprint, Network: s.ID.Network, ID: s.ID.String()}, "", "  ")
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{keyFile, pem.EncodeToMemory(keyPEM), 0o600},
		{sealKeyFile, sealPEM, 0o600},
		{certFile, chainPEM(s.Cert.Certificate), 0o644},
		{rootsFile, chainPEM(roots), 0o644},
		{directoryKeysFile, dk.Bytes(), 0o644},
		{stateFile, append(sj, '\n'), 0o644}, // last: its presence marks a complete enrolment
	} {
		if err := writeFileAtomic(filepath.Join(s.Dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// writeFileAtomic writes data to a temporary file in the same directory,
// syncs it and renames it over path, so readers see the old or the new file,
// never a torn one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
