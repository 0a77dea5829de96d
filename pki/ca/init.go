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
	"io"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.step.sm/crypto/jose"

	"github.com/kurier-net/kurier/pki"
)

// InitConfig configures Init.
type InitConfig struct {
	// Dir is the CA directory to create. Required. It must not exist, or be
	// an empty directory.
	Dir string
	// Network is the network name. Required.
	Network string
	// DNSNames are the host names and IPs the CA serves under. If empty,
	// localhost, 127.0.0.1 and ::1 are used.
	DNSNames []string
	// CertLifetime is the lifetime of member certificates. If zero, 24h.
	CertLifetime time.Duration
	// TokenTTL is the default lifetime of enrolment tokens. If zero, 2h.
	TokenTTL time.Duration
	// Passphrase encrypts every private key. Required unless
	// InsecureUnencryptedKeys is set.
	Passphrase Passphrase
	// InsecureUnencryptedKeys writes the private keys without encryption.
	// It must be set explicitly, and Passphrase must then be empty.
	InsecureUnencryptedKeys bool
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Rand is the source of key material. If nil, crypto/rand is used.
	Rand io.Reader
}

// InitResult describes a newly created CA.
type InitResult struct {
	Dir     string `json:"dir"`
	Network string `json:"network"`
	// RootFingerprint is the SHA-256 of the root certificate's DER, hex.
	RootFingerprint string   `json:"root_fingerprint"`
	DNSNames        []string `json:"dns_names"`
	// DirectoryKeyID and DirectoryKey identify the directory signing key
	// (key id as in the signed directory; base64 of the raw public key).
	DirectoryKeyID  string    `json:"directory_key_id"`
	DirectoryKey    string    `json:"directory_key"`
	ProvisionerName string    `json:"provisioner"`
	ProvisionerKID  string    `json:"provisioner_kid"`
	CertLifetime    Duration  `json:"cert_lifetime"`
	TokenTTL        Duration  `json:"token_ttl"`
	RootNotAfter    time.Time `json:"root_not_after"`
	InterNotAfter   time.Time `json:"intermediate_not_after"`
	Encrypted       bool      `json:"encrypted"`
}

// Lifetimes of the CA certificates.
const (
	rootLifetime  = 10 * 365 * 24 * time.Hour
	interLifetime = 5 * 365 * 24 * time.Hour
)

// Init creates a new CA directory (mode 0700) holding:
//
//	ca.json                      configuration (FileConfig), 0600
//	certs/root_ca.crt            ECDSA P-256 root, 10 years, 0644
//	certs/intermediate_ca.crt    ECDSA P-256 intermediate, 5 years, path length 0, 0644
//	secrets/root_ca.key          root key, encrypted PKCS#8 PEM, 0600
//	secrets/intermediate_ca.key  intermediate key, encrypted PKCS#8 PEM, 0600
//	secrets/directory.key        Ed25519 directory signing key, encrypted PKCS#8 PEM, 0600
//	secrets/provisioner.jwe      JWK provisioner key (token signing), JWE (PBES2), 0600
//	directory.pub                directory public key, PEM PKIX, 0644
//	members.db                   member store (bbolt), 0600
//	db/                          the smallstep authority's bbolt DB (created by the server)
//	directory/                   signed directories (current, and one copy per version)
//
// Everything is written to a temporary sibling directory first and renamed
// into place, so a failed Init leaves nothing behind, and an existing CA is
// never overwritten.
func Init(cfg InitConfig) (*InitResult, error) {
	if cfg.Dir == "" {
		return nil, errors.New("ca: InitConfig.Dir is required")
	}
	if err := pki.ValidNetwork(cfg.Network); err != nil {
		return nil, err
	}
	if len(cfg.DNSNames) == 0 {
		cfg.DNSNames = []string{"localhost", "127.0.0.1", "::1"}
	}
	if err := validDNSNames(cfg.DNSNames); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if cfg.CertLifetime == 0 {
		cfg.CertLifetime = DefaultCertLifetime
	}
	if err := validCertLifetime(cfg.CertLifetime); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if err := validTokenTTL(cfg.TokenTTL); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	switch {
	case cfg.InsecureUnencryptedKeys && len(cfg.Passphrase) > 0:
		return nil, errors.New("ca: a passphrase and InsecureUnencryptedKeys exclude each other")
	case !cfg.InsecureUnencryptedKeys && len(cfg.Passphrase) == 0:
		return nil, errors.New("ca: a passphrase is required to encrypt the CA keys (or set InsecureUnencryptedKeys)")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}

	dir := filepath.Clean(cfg.Dir)
	if err := checkEmpty(dir); err != nil {
		return nil, err
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("ca: create %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".init-*")
	if err != nil {
		return nil, fmt.Errorf("ca: create temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op once renamed
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	res, err := initInto(tmp, cfg)
	if err != nil {
		return nil, fmt.Errorf("ca: init: %w", err)
	}
	// rename(2) replaces an empty directory, and fails on a non-empty one,
	// so a CA created concurrently is never overwritten. (os.Rename refuses
	// any existing directory, so call the system directly.)
	if err := syscall.Rename(tmp, dir); err != nil {
		if errors.Is(err, os.ErrExist) || isNotEmpty(err) {
			return nil, fmt.Errorf("%w: %s", ErrExists, dir)
		}
		return nil, fmt.Errorf("ca: move CA into place: %w", err)
	}
	res.Dir = dir
	return res, nil
}

func checkEmpty(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%w: %s is a file", ErrExists, dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("ca: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: %s", ErrExists, dir)
	}
	return nil
}

func initInto(dir string, cfg InitConfig) (*InitResult, error) {
	now := cfg.Now().UTC().Truncate(time.Second)
	pass := cfg.Passphrase
	write := func(rel string, data []byte, perm os.FileMode) error {
		if err := writeNew(filepath.Join(dir, filepath.FromSlash(rel)), data, perm); err != nil {
			return fmt.Errorf("write %s: %w", rel, err)
		}
		return nil
	}
	writeKey := func(rel string, key crypto.PrivateKey) error {
		b, err := encodeKey(key, pass)
		if err != nil {
			return err
		}
		return write(rel, b, 0o600)
	}
	for _, d := range []string{"certs", "secrets", "db", directoryDirName} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}

	// Root and intermediate.
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), cfg.Rand)
	if err != nil {
		return nil, err
	}
	root, err := createCert(cfg.Rand, &x509.Certificate{
		Subject:               pkix.Name{CommonName: cfg.Network + " Root CA", Organization: []string{"Kurier"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(rootLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("create root: %w", err)
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), cfg.Rand)
	if err != nil {
		return nil, err
	}
	inter, err := createCert(cfg.Rand, &x509.Certificate{
		Subject:               pkix.Name{CommonName: cfg.Network + " Intermediate CA", Organization: []string{"Kurier"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(interLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return nil, fmt.Errorf("create intermediate: %w", err)
	}
	if err := write(rootCertFile, pemCert(root), 0o644); err != nil {
		return nil, err
	}
	if err := write(interCertFile, pemCert(inter), 0o644); err != nil {
		return nil, err
	}
	if err := writeKey(rootKeyFile, rootKey); err != nil {
		return nil, err
	}
	if err := writeKey(interKeyFile, interKey); err != nil {
		return nil, err
	}

	// Directory signing key.
	dirPub, dirKey, err := ed25519.GenerateKey(cfg.Rand)
	if err != nil {
		return nil, err
	}
	if err := writeKey(dirKeyFile, dirKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(dirPub)
	if err != nil {
		return nil, err
	}
	if err := write(dirPubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return nil, err
	}

	// JWK provisioner for one-time enrolment tokens.
	jwk, err := jose.GenerateJWK("EC", "P-256", "ES256", "sig", "", 0)
	if err != nil {
		return nil, fmt.Errorf("generate provisioner key: %w", err)
	}
	provFile := provKeyFile
	var provData []byte
	if cfg.InsecureUnencryptedKeys {
		provFile = provKeyFileBare
		if provData, err = json.Marshal(jwk); err != nil {
			return nil, err
		}
	} else {
		jwe, err := jose.EncryptJWK(jwk, pass)
		if err != nil {
			return nil, fmt.Errorf("encrypt provisioner key: %w", err)
		}
		s, err := jwe.CompactSerialize()
		if err != nil {
			return nil, err
		}
		provData = []byte(s)
	}
	if err := write(provFile, provData, 0o600); err != nil {
		return nil, err
	}
	pubJWK := jwk.Public()

	fc := FileConfig{
		Version:                 configVersion,
		Network:                 cfg.Network,
		DNSNames:                cfg.DNSNames,
		CertLifetime:            Duration(cfg.CertLifetime),
		TokenTTL:                Duration(cfg.TokenTTL),
		Roots:                   []string{rootCertFile},
		RootKey:                 rootKeyFile,
		Intermediate:            interCertFile,
		IntermediateKey:         interKeyFile,
		DirectoryKey:            dirKeyFile,
		DirectoryKeyID:          pki.DirectoryKeyID(dirPub),
		DirectoryKeys:           []string{base64.StdEncoding.EncodeToString(dirPub)},
		Provisioner:             ProvisionerConfig{Name: defaultProvisionerName, Key: &pubJWK, EncryptedKey: provFile},
		AuthorityDB:             authorityDBFile,
		MemberDB:                memberDBFile,
		Directory:               directoryDirName,
		InsecureUnencryptedKeys: cfg.InsecureUnencryptedKeys,
		CreatedAt:               now,
	}
	if err := fc.validate(); err != nil {
		return nil, err
	}
	cb, err := json.MarshalIndent(&fc, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := write(configFile, append(cb, '\n'), 0o600); err != nil {
		return nil, err
	}

	st, err := NewStore(StoreConfig{Path: filepath.Join(dir, memberDBFile), Network: cfg.Network, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	if err := st.create(); err != nil {
		return nil, err
	}
	return &InitResult{
		Network:         cfg.Network,
		RootFingerprint: Fingerprint(root),
		DNSNames:        cfg.DNSNames,
		DirectoryKeyID:  pki.DirectoryKeyID(dirPub),
		DirectoryKey:    fc.DirectoryKeys[0],
		ProvisionerName: fc.Provisioner.Name,
		ProvisionerKID:  pubJWK.KeyID,
		CertLifetime:    fc.CertLifetime,
		TokenTTL:        fc.TokenTTL,
		RootNotAfter:    root.NotAfter,
		InterNotAfter:   inter.NotAfter,
		Encrypted:       !cfg.InsecureUnencryptedKeys,
	}, nil
}

func createCert(rnd io.Reader, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	serial, err := rand.Int(rnd, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rnd, tmpl, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func isNotEmpty(err error) bool { return errors.Is(err, syscall.ENOTEMPTY) }
