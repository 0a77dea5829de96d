package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// Rotation of the CA's keys. Every rotation writes new files next to the old
// ones (never over them) and then replaces ca.json atomically. A running
// `ca serve` keeps what it loaded at start: restart it afterwards.

// saveConfig validates fc and atomically replaces ca.json with it.
func (c *CA) saveConfig(fc FileConfig) error {
	if err := fc.validate(); err != nil {
		return fmt.Errorf("ca: new config: %w", err)
	}
	b, err := json.MarshalIndent(&fc, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(c.dir, configFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("ca: write config: %w", err)
	}
	c.cfg = fc
	return nil
}

func (c *CA) stamp() string { return c.now().UTC().Format("20060102T150405.000Z") }

// writeKeyFile writes a new encrypted (or, for an unencrypted CA, bare)
// private key file.
func (c *CA) writeKeyFile(rel string, key crypto.PrivateKey, pass Passphrase) error {
	if c.Encrypted() && len(pass) == 0 {
		return ErrNoPassword
	}
	if !c.Encrypted() {
		pass = nil
	}
	b, err := encodeKey(key, pass)
	if err != nil {
		return err
	}
	if err := writeNew(c.path(rel), b, 0o600); err != nil {
		return fmt.Errorf("ca: write %s: %w", rel, err)
	}
	return nil
}

// newIntermediate creates an intermediate key and certificate under root,
// valid for five years or until the root expires, whichever is sooner.
func (c *CA) newIntermediate(root *x509.Certificate, rootKey crypto.Signer) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	now := c.now().UTC().Truncate(time.Second)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(interLifetime)
	if root.NotAfter.Before(notAfter) {
		notAfter = root.NotAfter
	}
	crt, err := createCert(rand.Reader, &x509.Certificate{
		Subject:               pkix.Name{CommonName: c.cfg.Network + " Intermediate CA " + c.stamp(), Organization: []string{"Kurier"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, root, &key.PublicKey, rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create intermediate: %w", err)
	}
	return key, crt, nil
}

// rootKey decrypts the current root's key.
func (c *CA) rootKey(pass Passphrase) (crypto.Signer, error) {
	if c.cfg.RootKey == "" {
		return nil, errors.New("ca: no root key configured (is it offline? put it back and set root_key)")
	}
	k, err := decodeKey(c.path(c.cfg.RootKey), pass, c.Encrypted())
	if err != nil {
		return nil, fmt.Errorf("ca: root key: %w", err)
	}
	if !matchesCert(k, c.roots[0]) {
		return nil, errors.New("ca: root key does not match the current root certificate")
	}
	return k, nil
}

// RotateIntermediate issues a new intermediate under the current root and
// makes it the issuing CA. Certificates issued by the old intermediate stay
// valid (they chain to the same root) until they expire; renewals are
// issued by the new one.
func (c *CA) RotateIntermediate(pass Passphrase) (*x509.Certificate, error) {
	rk, err := c.rootKey(pass)
	if err != nil {
		return nil, err
	}
	key, crt, err := c.newIntermediate(c.roots[0], rk)
	if err != nil {
		return nil, err
	}
	s := c.stamp()
	fc := c.Config()
	fc.Intermediate = "certs/intermediate_ca-" + s + ".crt"
	fc.IntermediateKey = "secrets/intermediate_ca-" + s + ".key"
	if err := writeNew(c.path(fc.Intermediate), pemCert(crt), 0o644); err != nil {
		return nil, fmt.Errorf("ca: write intermediate: %w", err)
	}
	if err := c.writeKeyFile(fc.IntermediateKey, key, pass); err != nil {
		return nil, err
	}
	if err := c.saveConfig(fc); err != nil {
		return nil, err
	}
	c.inter = crt
	return crt, nil
}

// RotateRoot creates a new root and a new intermediate under it, and makes
// them current. The old roots stay trusted (they are still in the trust
// bundle) until RetireRoot, so members enrolled under them keep working
// while they renew into the new hierarchy.
func (c *CA) RotateRoot(pass Passphrase) (root, inter *x509.Certificate, err error) {
	// Prove the passphrase before creating anything.
	if _, err := c.rootKey(pass); err != nil {
		return nil, nil, err
	}
	now := c.now().UTC().Truncate(time.Second)
	rk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	s := c.stamp()
	root, err = createCert(rand.Reader, &x509.Certificate{
		Subject:               pkix.Name{CommonName: c.cfg.Network + " Root CA " + s, Organization: []string{"Kurier"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(rootLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &rk.PublicKey, rk)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: create root: %w", err)
	}
	ik, inter, err := c.newIntermediate(root, rk)
	if err != nil {
		return nil, nil, err
	}
	fc := c.Config()
	rootFile := "certs/root_ca-" + s + ".crt"
	fc.Roots = append([]string{rootFile}, fc.Roots...)
	fc.RootKey = "secrets/root_ca-" + s + ".key"
	fc.Intermediate = "certs/intermediate_ca-" + s + ".crt"
	fc.IntermediateKey = "secrets/intermediate_ca-" + s + ".key"
	if err := writeNew(c.path(rootFile), pemCert(root), 0o644); err != nil {
		return nil, nil, fmt.Errorf("ca: write root: %w", err)
	}
	if err := writeNew(c.path(fc.Intermediate), pemCert(inter), 0o644); err != nil {
		return nil, nil, fmt.Errorf("ca: write intermediate: %w", err)
	}
	if err := c.writeKeyFile(fc.RootKey, rk, pass); err != nil {
		return nil, nil, err
	}
	if err := c.writeKeyFile(fc.IntermediateKey, ik, pass); err != nil {
		return nil, nil, err
	}
	if err := c.saveConfig(fc); err != nil {
		return nil, nil, err
	}
	c.roots = append([]*x509.Certificate{root}, c.roots...)
	c.inter = inter
	return root, inter, nil
}

// RetireRoot removes the root with the given fingerprint from the trusted
// roots. The current root cannot be retired. Its files stay on disk.
func (c *CA) RetireRoot(fingerprint string) error {
	i := slices.IndexFunc(c.roots, func(r *x509.Certificate) bool { return Fingerprint(r) == fingerprint })
	switch {
	case i < 0:
		return fmt.Errorf("ca: no trusted root has fingerprint %s", fingerprint)
	case i == 0:
		return errors.New("ca: the current root cannot be retired")
	}
	// Roots and files correspond only if every file holds one certificate,
	// which is how this package writes them.
	if len(c.roots) != len(c.cfg.Roots) {
		return errors.New("ca: root files hold several certificates; edit roots in ca.json by hand")
	}
	fc := c.Config()
	fc.Roots = slices.Delete(fc.Roots, i, i+1)
	if err := c.saveConfig(fc); err != nil {
		return err
	}
	c.roots = slices.Delete(c.roots, i, i+1)
	return nil
}

// AddDirectoryKey creates a new directory signing key and adds it to the
// trusted keys (so it is published in the trust bundle), without signing
// with it yet: members must learn the key before they see documents signed
// with it. ActivateDirectoryKey switches signing over.
func (c *CA) AddDirectoryKey(pass Passphrase) (string, error) {
	if c.cfg.StagedDirectoryKey != "" {
		return "", errors.New("ca: a new directory key is already staged; activate it first")
	}
	if c.Encrypted() {
		// Prove the passphrase, so the new key is encrypted with the right one.
		if _, err := c.DirectoryKey(pass); err != nil {
			return "", err
		}
	}
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return "", err
	}
	kid := pki.DirectoryKeyID(pub)
	fc := c.Config()
	fc.StagedDirectoryKey = "secrets/directory-" + kid + ".key"
	fc.StagedDirectoryKeyID = kid
	fc.DirectoryKeys = append(fc.DirectoryKeys, base64.StdEncoding.EncodeToString(pub))
	if err := c.writeKeyFile(fc.StagedDirectoryKey, key, pass); err != nil {
		return "", err
	}
	if err := c.saveConfig(fc); err != nil {
		return "", err
	}
	c.dirKeys = append(c.dirKeys, pub)
	return kid, nil
}

// ActivateDirectoryKey makes the staged directory key the signing key and
// rewrites directory.pub with its public key. The old key stays trusted
// until RetireDirectoryKey.
func (c *CA) ActivateDirectoryKey(pass Passphrase) (string, error) {
	if c.cfg.StagedDirectoryKey == "" {
		return "", errors.New("ca: no directory key is staged (run AddDirectoryKey first)")
	}
	fc := c.Config()
	fc.DirectoryKey, fc.StagedDirectoryKey = fc.StagedDirectoryKey, ""
	fc.DirectoryKeyID, fc.StagedDirectoryKeyID = fc.StagedDirectoryKeyID, ""
	k, err := decodeKey(c.path(fc.DirectoryKey), pass, c.Encrypted())
	if err != nil {
		return "", fmt.Errorf("ca: staged directory key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return "", errors.New("ca: staged directory key is not an Ed25519 key")
	}
	pub := ek.Public().(ed25519.PublicKey)
	if pki.DirectoryKeyID(pub) != fc.DirectoryKeyID {
		return "", errors.New("ca: staged directory key file does not hold the staged key")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	if err := c.saveConfig(fc); err != nil {
		return "", err
	}
	if err := writeAtomic(filepath.Join(c.dir, dirPubFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		return "", fmt.Errorf("ca: write %s: %w", dirPubFile, err)
	}
	return pki.DirectoryKeyID(pub), nil
}

// RetireDirectoryKey removes a directory key from the trusted keys. The
// signing key and a staged key cannot be retired. Documents signed by the
// retired key no longer verify anywhere that reloaded the trust bundle.
func (c *CA) RetireDirectoryKey(keyID string) error {
	i := slices.IndexFunc(c.dirKeys, func(k ed25519.PublicKey) bool { return pki.DirectoryKeyID(k) == keyID })
	if i < 0 {
		return fmt.Errorf("ca: no trusted directory key has id %s", keyID)
	}
	if keyID == c.cfg.DirectoryKeyID || keyID == c.cfg.StagedDirectoryKeyID {
		return errors.New("ca: the signing (or staged) directory key cannot be retired")
	}
	fc := c.Config()
	fc.DirectoryKeys = slices.Delete(fc.DirectoryKeys, i, i+1)
	if err := c.saveConfig(fc); err != nil {
		return err
	}
	c.dirKeys = slices.Delete(c.dirKeys, i, i+1)
	return nil
}
