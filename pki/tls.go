package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ALPN protocol ids. QUIC requires one; TCP connections carry one too so a
// connection for one purpose can never be mistaken for another.
const (
	// ALPNPeer is the EPS-to-EPS protocol (HTTP/2 inside mTLS).
	ALPNPeer = "kurier-peer/1"
	// ALPNControl is the control session between a private proxy and a relay.
	ALPNControl = "kurier-control/1"
	// ALPNGossip is reserved for relay-to-relay traffic.
	ALPNGossip = "kurier-gossip/1"
)

// Trust is what a process trusts: the network's root certificates and the
// verified member directory.
type Trust struct {
	// Roots are the network root CAs. Required.
	Roots *x509.CertPool
	// Directory decides which verified peers are members in good standing.
	// Required.
	Directory *Verifier
}

func (t Trust) check() error {
	if t.Roots == nil || t.Directory == nil {
		return errors.New("pki: trust needs roots and a directory verifier")
	}
	return nil
}

// PeerCheck is an extra check run after the directory accepted a peer, with
// the peer's identity and directory entry. It may be nil.
type PeerCheck func(id ID, m *Member) error

// ServerConfig returns a TLS 1.3 server configuration that presents id's
// current certificate, requires a client certificate chaining to t.Roots,
// and accepts the client only if the directory lists it as an active,
// unrevoked member whose key is pinned, and check (if not nil) passes. The
// check runs in VerifyConnection, on every handshake including resumed ones.
// alpn must not be empty; a client that negotiates no ALPN id is refused.
func ServerConfig(id *Identity, t Trust, alpn []string, check PeerCheck) (*tls.Config, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	if id == nil || len(alpn) == 0 {
		return nil, errors.New("pki: server config needs an identity and an ALPN id")
	}
	return &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ClientAuth:       tls.RequireAndVerifyClientCert,
		ClientCAs:        t.Roots,
		NextProtos:       alpn,
		GetCertificate:   id.getCertificate,
		VerifyConnection: verifyPeer(t, ID{}, check),
	}, nil
}

// ClientConfig returns a TLS 1.3 client configuration for dialling the member
// want: it presents id's current certificate, sends want's DNS name as SNI,
// verifies the server chain against t.Roots and accepts the server only if it
// is exactly want, listed in the directory in good standing with a pinned
// key, and check (if not nil) passes. Sessions are cached for resumption;
// resumed sessions are re-checked against the directory.
func ClientConfig(id *Identity, t Trust, want ID, alpn []string, check PeerCheck) (*tls.Config, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	if id == nil || len(alpn) == 0 || want.IsZero() {
		return nil, errors.New("pki: client config needs an identity, a peer and an ALPN id")
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		ServerName:           want.DNSName(),
		RootCAs:              t.Roots,
		NextProtos:           alpn,
		GetClientCertificate: id.getClientCertificate,
		ClientSessionCache:   tls.NewLRUClientSessionCache(64),
		VerifyConnection:     verifyPeer(t, want, check),
	}, nil
}

func verifyPeer(t Trust, want ID, check PeerCheck) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return errors.New("pki: no verified peer chain")
		}
		// crypto/tls lets a peer that offers no ALPN at all through; we
		// don't, so that a connection always says what it is for.
		if cs.NegotiatedProtocol == "" {
			return errors.New("pki: peer negotiated no ALPN protocol")
		}
		got, m, err := t.Directory.Authorize(cs.VerifiedChains[0][0])
		if err != nil {
			return err
		}
		if !want.IsZero() && got != want {
			return fmt.Errorf("%w: got %s, want %s", ErrUnexpectedPeer, got, want)
		}
		if check != nil {
			return check(got, m)
		}
		return nil
	}
}

// PeerID returns the verified member identity of the peer of an established
// TLS connection built with ServerConfig or ClientConfig.
func PeerID(cs tls.ConnectionState) (ID, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return ID{}, errors.New("pki: no verified peer chain")
	}
	return IDFromCert(cs.VerifiedChains[0][0])
}
