package ca

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.step.sm/crypto/jose"
	"go.step.sm/crypto/pemutil"

	"github.com/kurier-net/kurier/pki"
)

// The layout of a CA directory. Paths in the config file are relative to the
// directory, so a CA directory can be moved or restored from a backup as a
// whole.
const (
	configFile       = "ca.json"
	rootCertFile     = "certs/root_ca.crt"
	interCertFile    = "certs/intermediate_ca.crt"
	rootKeyFile      = "secrets/root_ca.key"
	interKeyFile     = "secrets/intermediate_ca.key"
	dirKeyFile       = "secrets/directory.key"
	provKeyFile      = "secrets/provisioner.jwe"
	provKeyFileBare  = "secrets/provisioner.jwk"
	dirPubFile       = "directory.pub"
	authorityDBFile  = "db/authority.db"
	memberDBFile     = "members.db"
	directoryDirName = "directory"
	currentDirFile   = "current"
)

// Defaults and bounds of the CA's settings.
const (
	DefaultCertLifetime      = 24 * time.Hour
	DefaultTokenTTL          = 2 * time.Hour
	DefaultDirectoryValidity = 7 * 24 * time.Hour
	minCertLifetime          = 10 * time.Minute
	maxCertLifetime          = 30 * 24 * time.Hour
	minTokenTTL              = time.Minute
	maxTokenTTL              = 7 * 24 * time.Hour
	configVersion            = 1
	defaultProvisionerName   = "kurier-enrolment"
)

// Errors returned when a CA directory cannot be used.
var (
	ErrExists     = errors.New("ca: CA directory already exists and is not empty")
	ErrNotCA      = errors.New("ca: not a Kurier CA directory")
	ErrPassphrase = errors.New("ca: wrong passphrase or damaged key file")
	ErrNoPassword = errors.New("ca: the CA keys are encrypted and no passphrase was given")
)

// Duration is a time.Duration that encodes as a Go duration string ("24h0m0s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"24h\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// FileConfig is the CA's configuration file, <ca-dir>/ca.json. It holds no
// secret. Paths are relative to the CA directory.
type FileConfig struct {
	// Version of the file format; 1.
	Version int `json:"version"`
	// Network is the network name every member identity lives under.
	Network string `json:"network"`
	// DNSNames are the host names and IP addresses the CA serves under. The
	// first one names the CA in token audiences
	// (https://<first>/1.0/sign). The CA's TLS certificate carries all.
	DNSNames []string `json:"dns_names"`
	// CertLifetime is the lifetime of member certificates.
	CertLifetime Duration `json:"cert_lifetime"`
	// TokenTTL is the default lifetime of enrolment tokens.
	TokenTTL Duration `json:"token_ttl"`
	// Roots are the trusted root certificates (PEM files). The first is the
	// root of the current intermediate; more than one during a root
	// rotation. All of them are published in the trust bundle.
	Roots []string `json:"roots"`
	// RootKey is the first root's private key. Only needed to issue a new
	// intermediate; it may be moved offline.
	RootKey string `json:"root_key,omitempty"`
	// Intermediate and IntermediateKey are the issuing CA.
	Intermediate    string `json:"intermediate"`
	IntermediateKey string `json:"intermediate_key"`
	// DirectoryKey is the Ed25519 key directories are signed with, and
	// DirectoryKeyID its key id (pki.DirectoryKeyID).
	DirectoryKey   string `json:"directory_key"`
	DirectoryKeyID string `json:"directory_key_id"`
	// StagedDirectoryKey is a new directory key that is trusted but not yet
	// used for signing (during a rotation), with its id.
	StagedDirectoryKey   string `json:"staged_directory_key,omitempty"`
	StagedDirectoryKeyID string `json:"staged_directory_key_id,omitempty"`
	// DirectoryKeys are the trusted directory public keys (base64 of the raw
	// 32 bytes), published in the trust bundle. They include the signing
	// key's public key; more than one during a key rotation.
	DirectoryKeys []string `json:"directory_keys"`
	// Provisioner is the JWK provisioner that signs enrolment tokens.
	Provisioner ProvisionerConfig `json:"provisioner"`
	// AuthorityDB is the bbolt file of the smallstep authority (issued
	// certificates, used tokens, passive revocations).
	AuthorityDB string `json:"authority_db"`
	// MemberDB is the bbolt file of the member store.
	MemberDB string `json:"member_db"`
	// Directory is the folder signed directories are written to.
	Directory string `json:"directory"`
	// InsecureUnencryptedKeys is true if the private keys were written
	// without encryption.
	InsecureUnencryptedKeys bool `json:"insecure_unencrypted_keys,omitempty"`
	// CreatedAt is when the CA was initialised.
	CreatedAt time.Time `json:"created_at"`
}

// ProvisionerConfig describes the JWK provisioner.
type ProvisionerConfig struct {
	// Name is the provisioner name, the iss claim of every token.
	Name string `json:"name"`
	// Key is the public key tokens are verified with.
	Key *jose.JSONWebKey `json:"key"`
	// EncryptedKey is the file holding the private key, a JWE encrypted with
	// the CA passphrase (or a bare JWK with insecure_unencrypted_keys).
	EncryptedKey string `json:"encrypted_key"`
}

func (c *FileConfig) validate() error {
	if c.Version != configVersion {
		return fmt.Errorf("unsupported config version %d", c.Version)
	}
	if err := pki.ValidNetwork(c.Network); err != nil {
		return err
	}
	if err := validDNSNames(c.DNSNames); err != nil {
		return err
	}
	if err := validCertLifetime(time.Duration(c.CertLifetime)); err != nil {
		return err
	}
	if err := validTokenTTL(time.Duration(c.TokenTTL)); err != nil {
		return err
	}
	if len(c.Roots) == 0 || c.Intermediate == "" || c.IntermediateKey == "" || c.DirectoryKey == "" ||
		c.AuthorityDB == "" || c.MemberDB == "" || c.Directory == "" || c.Provisioner.EncryptedKey == "" {
		return errors.New("missing file paths")
	}
	if len(c.DirectoryKeys) == 0 {
		return errors.New("no trusted directory keys")
	}
	ids := map[string]bool{}
	for _, k := range c.DirectoryKeys {
		pub, err := decodeDirectoryKey(k)
		if err != nil {
			return err
		}
		ids[pki.DirectoryKeyID(pub)] = true
	}
	if !ids[c.DirectoryKeyID] {
		return fmt.Errorf("directory_key_id %q is not among the trusted directory keys", c.DirectoryKeyID)
	}
	if (c.StagedDirectoryKey == "") != (c.StagedDirectoryKeyID == "") || (c.StagedDirectoryKeyID != "" && !ids[c.StagedDirectoryKeyID]) {
		return errors.New("staged directory key: want a file and the id of a trusted key")
	}
	if c.Provisioner.Name == "" || c.Provisioner.Key == nil || !c.Provisioner.Key.IsPublic() || c.Provisioner.Key.KeyID == "" {
		return errors.New("provisioner needs a name and a public key with a key id")
	}
	return nil
}

func validDNSNames(names []string) error {
	if len(names) == 0 {
		return errors.New("at least one DNS name or IP address is required")
	}
	for _, n := range names {
		if net.ParseIP(n) != nil {
			continue
		}
		if err := pki.ValidNetwork(n); err != nil { // same rules as a DNS name
			return fmt.Errorf("invalid CA DNS name %q: want a lowercase host name or an IP address", n)
		}
	}
	return nil
}

func validCertLifetime(d time.Duration) error {
	if d < minCertLifetime || d > maxCertLifetime {
		return fmt.Errorf("certificate lifetime %s out of range [%s, %s]", d, minCertLifetime, maxCertLifetime)
	}
	return nil
}

func validTokenTTL(d time.Duration) error {
	if d < minTokenTTL || d > maxTokenTTL {
		return fmt.Errorf("token TTL %s out of range [%s, %s]", d, minTokenTTL, maxTokenTTL)
	}
	return nil
}

func decodeDirectoryKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("directory key %q is not a base64 Ed25519 public key", s)
	}
	return ed25519.PublicKey(b), nil
}

// Fingerprint returns the fingerprint of a certificate as step prints it: the
// SHA-256 of its DER encoding, in lowercase hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// CA is an initialised CA directory, opened without any secret. It is safe
// for concurrent use; every method that needs a private key takes the
// passphrase and decrypts the key for that call only.
type CA struct {
	dir   string
	cfg   FileConfig
	now   func() time.Time
	store *Store

	roots   []*x509.Certificate
	inter   *x509.Certificate
	dirKeys []ed25519.PublicKey
}

// OpenConfig configures Open.
type OpenConfig struct {
	// Dir is the CA directory. Required.
	Dir string
	// Now returns the current time for tokens, directories and member
	// records. If nil, time.Now is used. (Certificates issued by the
	// smallstep authority always use the real clock.)
	Now func() time.Time
	// LockTimeout bounds the wait for the member store's file lock. If zero,
	// 5s is used.
	LockTimeout time.Duration
}

// Open reads the configuration and public material of a CA directory. It
// decrypts nothing.
func Open(cfg OpenConfig) (*CA, error) {
	if cfg.Dir == "" {
		return nil, errors.New("ca: OpenConfig.Dir is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	b, err := os.ReadFile(filepath.Join(cfg.Dir, configFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has no %s", ErrNotCA, cfg.Dir, configFile)
		}
		return nil, fmt.Errorf("ca: read config: %w", err)
	}
	var fc FileConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fc); err != nil {
		return nil, fmt.Errorf("ca: config %s: %w", filepath.Join(cfg.Dir, configFile), err)
	}
	if err := fc.validate(); err != nil {
		return nil, fmt.Errorf("ca: config %s: %w", filepath.Join(cfg.Dir, configFile), err)
	}
	c := &CA{dir: cfg.Dir, cfg: fc, now: cfg.Now}
	for _, p := range fc.Roots {
		crts, err := pemutil.ReadCertificateBundle(c.path(p))
		if err != nil {
			return nil, fmt.Errorf("ca: read root: %w", err)
		}
		c.roots = append(c.roots, crts...)
	}
	c.inter, err = pemutil.ReadCertificate(c.path(fc.Intermediate))
	if err != nil {
		return nil, fmt.Errorf("ca: read intermediate: %w", err)
	}
	if _, err := c.inter.Verify(x509.VerifyOptions{Roots: c.rootPool(), CurrentTime: c.inter.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("ca: intermediate does not chain to a configured root: %w", err)
	}
	for _, k := range fc.DirectoryKeys {
		pub, _ := decodeDirectoryKey(k) // checked in validate
		c.dirKeys = append(c.dirKeys, pub)
	}
	c.store, err = NewStore(StoreConfig{Path: c.path(fc.MemberDB), Network: fc.Network, LockTimeout: cfg.LockTimeout, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *CA) path(rel string) string {
	if filepath.IsAbs(rel) {
		return rel
	}
	return filepath.Join(c.dir, filepath.FromSlash(rel))
}

func (c *CA) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range c.roots {
		p.AddCert(r)
	}
	return p
}

// Dir returns the CA directory.
func (c *CA) Dir() string { return c.dir }

// Config returns a copy of the CA's configuration.
func (c *CA) Config() FileConfig {
	fc := c.cfg
	fc.DNSNames = append([]string(nil), c.cfg.DNSNames...)
	fc.Roots = append([]string(nil), c.cfg.Roots...)
	fc.DirectoryKeys = append([]string(nil), c.cfg.DirectoryKeys...)
	return fc
}

// Network returns the network name.
func (c *CA) Network() string { return c.cfg.Network }

// Encrypted reports whether the CA's private keys are encrypted, that is
// whether operations that use them need a passphrase.
func (c *CA) Encrypted() bool { return !c.cfg.InsecureUnencryptedKeys }

// Roots returns the trusted root certificates, the current one first.
func (c *CA) Roots() []*x509.Certificate { return append([]*x509.Certificate(nil), c.roots...) }

// Intermediate returns the issuing CA certificate.
func (c *CA) Intermediate() *x509.Certificate { return c.inter }

// RootFingerprint returns the fingerprint of the current root (see
// Fingerprint). Clients pin it to bootstrap trust in the CA.
func (c *CA) RootFingerprint() string { return Fingerprint(c.roots[0]) }

// DirectoryKeys returns the trusted directory public keys.
func (c *CA) DirectoryKeys() []ed25519.PublicKey {
	return append([]ed25519.PublicKey(nil), c.dirKeys...)
}

// Store returns the member store.
func (c *CA) Store() *Store { return c.store }

// SignAudience returns the audience of enrolment tokens,
// https://<first DNS name>/1.0/sign.
func (c *CA) SignAudience() string {
	return "https://" + hostForURL(c.cfg.DNSNames[0]) + "/1.0/sign"
}

func hostForURL(h string) string {
	if ip := net.ParseIP(h); ip != nil && ip.To4() == nil && !strings.HasPrefix(h, "[") {
		return "[" + h + "]"
	}
	return h
}
