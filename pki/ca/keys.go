package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"

	"github.com/kurier-net/kurier/pki"
)

// encodeKey returns the PEM encoding of a private key: encrypted PKCS#8
// (PBES2, PBKDF2-SHA256 with 600000 iterations, AES-256-CBC) with a
// passphrase, bare PKCS#8 without one.
func encodeKey(key crypto.PrivateKey, pass Passphrase) ([]byte, error) {
	opts := []pemutil.Options{pemutil.WithPKCS8(true)}
	if len(pass) > 0 {
		opts = append(opts, pemutil.WithPassword(pass))
	}
	blk, err := pemutil.Serialize(key, opts...)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(blk), nil
}

// decodeKey reads a private key written by encodeKey. If encrypted is true
// the file must be encrypted; a bare key is refused, so a key file swapped
// for an unencrypted one is noticed.
func decodeKey(path string, pass Passphrase, encrypted bool) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("key %s: not PEM", filepath.Base(path))
	}
	isEnc := blk.Type == "ENCRYPTED PRIVATE KEY" || blk.Headers["Proc-Type"] == "4,ENCRYPTED"
	switch {
	case encrypted && !isEnc:
		return nil, fmt.Errorf("key %s is not encrypted but the CA config says it must be", filepath.Base(path))
	case isEnc && len(pass) == 0:
		return nil, ErrNoPassword
	}
	var opts []pemutil.Options
	if isEnc {
		opts = append(opts, pemutil.WithPassword(pass))
	}
	k, err := pemutil.ParseKey(b, opts...)
	if err != nil {
		if isEnc {
			return nil, fmt.Errorf("%w (%s)", ErrPassphrase, filepath.Base(path))
		}
		return nil, fmt.Errorf("parse key %s: %w", filepath.Base(path), err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key %s is not a signing key", filepath.Base(path))
	}
	return s, nil
}

// matchesCert reports whether key is the private key of c.
func matchesCert(key crypto.Signer, c *x509.Certificate) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	return ok && pub.Equal(c.PublicKey)
}

// IntermediateSigner decrypts the intermediate CA key and checks that it
// belongs to the intermediate certificate.
func (c *CA) IntermediateSigner(pass Passphrase) (crypto.Signer, error) {
	k, err := decodeKey(c.path(c.cfg.IntermediateKey), pass, c.Encrypted())
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate key: %w", err)
	}
	if _, ok := k.(*ecdsa.PrivateKey); !ok || !matchesCert(k, c.inter) {
		return nil, errors.New("ca: intermediate key does not match the intermediate certificate")
	}
	return k, nil
}

// DirectoryKey decrypts the directory signing key and checks that it is the
// configured one (directory_key_id).
func (c *CA) DirectoryKey(pass Passphrase) (ed25519.PrivateKey, error) {
	k, err := decodeKey(c.path(c.cfg.DirectoryKey), pass, c.Encrypted())
	if err != nil {
		return nil, fmt.Errorf("ca: directory key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, errors.New("ca: directory key is not an Ed25519 key")
	}
	if pki.DirectoryKeyID(ek.Public().(ed25519.PublicKey)) != c.cfg.DirectoryKeyID {
		return nil, errors.New("ca: directory key file does not hold the configured directory key")
	}
	return ek, nil
}

// provisionerKey decrypts the JWK provisioner's private key.
func (c *CA) provisionerKey(pass Passphrase) (*jose.JSONWebKey, error) {
	b, err := os.ReadFile(c.path(c.cfg.Provisioner.EncryptedKey))
	if err != nil {
		return nil, fmt.Errorf("ca: read provisioner key: %w", err)
	}
	data := b
	if jwe, perr := jose.ParseEncrypted(string(b)); perr == nil {
		if len(pass) == 0 {
			return nil, fmt.Errorf("ca: provisioner key: %w", ErrNoPassword)
		}
		if data, err = jwe.Decrypt([]byte(pass)); err != nil {
			return nil, fmt.Errorf("ca: provisioner key: %w", ErrPassphrase)
		}
	} else if c.Encrypted() {
		return nil, errors.New("ca: provisioner key is not encrypted but the CA config says it must be")
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(data, &jwk); err != nil {
		return nil, fmt.Errorf("ca: provisioner key: %w", ErrPassphrase)
	}
	if jwk.IsPublic() || jwk.KeyID != c.cfg.Provisioner.Key.KeyID {
		return nil, errors.New("ca: provisioner key does not match the configured provisioner")
	}
	return &jwk, nil
}

// CheckPassphrase reports whether pass decrypts the CA's keys, by decrypting
// the intermediate key. It is slow on purpose (the key derivation is).
func (c *CA) CheckPassphrase(pass Passphrase) error {
	_, err := c.IntermediateSigner(pass)
	return err
}

// writeNew writes a file that must not exist yet, and syncs it.
func writeNew(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
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
	return f.Close()
}

// writeAtomic replaces path with data: a temporary file in the same folder,
// synced, then renamed over path.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
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
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // make the rename durable; best effort
		d.Close()
	}
	return nil
}
