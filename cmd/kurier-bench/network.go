package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// The throwaway network every run builds: one relay, the health office whose
// backend is measured, and the vendor whose client connects to it.
const (
	benchNetwork = "kurier.bench"
	relayName    = "r1"
	officeName   = "hd-1"
	vendorName   = "vendor-a"
)

// Files of a network directory.
const (
	rootsFile   = "roots.pem"
	dirKeysFile = "directory-keys.pem"
	dirFile     = "directory.signed"
)

var (
	relayID  = pki.ID{Network: benchNetwork, Role: pki.RoleRelay, Name: relayName}
	officeID = pki.ID{Network: benchNetwork, Role: pki.RoleHealthOffice, Name: officeName}
	vendorID = pki.ID{Network: benchNetwork, Role: pki.RoleProvider, Name: vendorName}
)

// writeNetwork makes an ECDSA P-256 root and intermediate CA, Ed25519 member
// certificates for the relay, the office and the vendor (the keys kurier
// enroll makes, in the shape pki.IDFromCert accepts: one spiffe URI SAN and
// the member's DNS name), and a directory listing them signed with a fresh
// Ed25519 key, and writes them to dir. Keys are written 0600; nothing
// outlives the run's temporary directory.
func writeNetwork(dir string, now time.Time) error {
	notBefore, notAfter := now.Add(-time.Hour), now.Add(24*time.Hour)
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	root, err := signCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: benchNetwork + " bench root"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	inter, err := signCert(&x509.Certificate{
		Subject:               pkix.Name{CommonName: benchNetwork + " bench intermediate"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, root, &interKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, rootsFile), pemCert(root.Raw), 0o644); err != nil {
		return err
	}

	var members []pki.Member
	for _, m := range []struct {
		id      pki.ID
		display string
	}{{relayID, "Bench relay"}, {officeID, "Bench health office"}, {vendorID, "Bench vendor"}} {
		pub, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		leaf, err := signCert(&x509.Certificate{
			Subject:     pkix.Name{CommonName: m.id.DNSName()},
			NotBefore:   notBefore,
			NotAfter:    notAfter,
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			DNSNames:    []string{m.id.DNSName()},
			URIs:        []*url.URL{m.id.URI()},
		}, inter, pub, interKey)
		if err != nil {
			return err
		}
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		chain := append(pemCert(leaf.Raw), pemCert(inter.Raw)...)
		if err := os.WriteFile(filepath.Join(dir, m.id.Name+".pem"), chain, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, m.id.Name+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
			return err
		}
		dm := pki.Member{Name: m.id.Name, Role: m.id.Role, DisplayName: m.display, Pins: []string{pki.Pin(leaf)}}
		if m.id.Role == pki.RoleRelay {
			// The proxy is given the relay's real addresses (proxy.Config.Relays);
			// the directory only authenticates it.
			dm.Relay = &pki.RelayEndpoints{Public: "127.0.0.1:1", Pairing: "127.0.0.1:2", Control: "127.0.0.1:3", ControlTCP: "127.0.0.1:4"}
		}
		members = append(members, dm)
	}

	dirPub, dirKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	signed, err := pki.SignDirectory(&pki.Directory{
		Network:     benchNetwork,
		Version:     1,
		IssuedAt:    notBefore,
		ExpiresAt:   notAfter,
		Members:     members,
		Permissions: []pki.Permission{{Caller: "*", Callee: "*", Services: []string{"*"}}},
	}, dirKey)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(dirPub)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, dirKeysFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, dirFile), signed, 0o644)
}

func signCert(tmpl, parent *x509.Certificate, pub any, key *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("create certificate %s: %w", tmpl.Subject.CommonName, err)
	}
	return x509.ParseCertificate(der)
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// loadTrust reads the roots and the directory keys from dir and returns a
// Trust whose verifier holds the signed directory.
func loadTrust(dir string) (pki.Trust, error) {
	roots := x509.NewCertPool()
	b, err := os.ReadFile(filepath.Join(dir, rootsFile))
	if err != nil {
		return pki.Trust{}, err
	}
	if !roots.AppendCertsFromPEM(b) {
		return pki.Trust{}, fmt.Errorf("%s: no certificates", rootsFile)
	}
	kb, err := os.ReadFile(filepath.Join(dir, dirKeysFile))
	if err != nil {
		return pki.Trust{}, err
	}
	blk, _ := pem.Decode(kb)
	if blk == nil {
		return pki.Trust{}, fmt.Errorf("%s: no PEM block", dirKeysFile)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return pki.Trust{}, fmt.Errorf("%s: %w", dirKeysFile, err)
	}
	ek, ok := pub.(ed25519.PublicKey)
	if !ok {
		return pki.Trust{}, errors.New(dirKeysFile + ": not an Ed25519 key")
	}
	v, err := pki.NewVerifier(pki.VerifierConfig{Network: benchNetwork, Keys: []ed25519.PublicKey{ek}})
	if err != nil {
		return pki.Trust{}, err
	}
	signed, err := os.ReadFile(filepath.Join(dir, dirFile))
	if err != nil {
		return pki.Trust{}, err
	}
	if _, err := v.Update(signed); err != nil {
		return pki.Trust{}, fmt.Errorf("%s: %w", dirFile, err)
	}
	return pki.Trust{Roots: roots, Directory: v}, nil
}

// loadIdentity reads the certificate chain and key of member name from dir.
func loadIdentity(dir, name string) (*pki.Identity, error) {
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	return pki.NewIdentity(&c)
}
