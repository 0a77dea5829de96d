package ca

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// Kurier endpoint constants.
const (
	// DirectoryContentType is the media type of a signed directory.
	DirectoryContentType = "application/vnd.kurier.directory"
	maxSealKeysBody      = 64 << 10 // bytes
	maxIssueResponse     = 1 << 20  // bytes; a sign response is a few KiB
)

type trustResponse struct {
	Network       string   `json:"network"`
	Roots         []string `json:"roots"`
	DirectoryKeys []string `json:"directory_keys"`
}

// errorResponse is the body of every error of the Kurier endpoints.
type errorResponse struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encode response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorResponse{Error: msg})
}

// handleTrust serves GET /kurier/v1/trust: the network name, every trusted
// root (PEM) and every trusted directory key (base64 of the raw Ed25519 key).
// Clients authenticate it by the root fingerprint they pinned.
func (s *Server) handleTrust(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.trust)
}

// dirCache holds the last good signed directory read from disk. Each request
// stats the file; it is read again whenever it changed.
type dirCache struct {
	path string
	keys map[string]ed25519.PublicKey

	mu   sync.Mutex // guards the fields below
	fi   os.FileInfo
	good []byte // last document whose signature verified
	mod  time.Time
	etag string
}

// load returns the current signed directory, or nil if none was published.
func (c *dirCache) load() (signed []byte, mod time.Time, etag string, err error) {
	fi, err := os.Stat(c.path)
	c.mu.Lock()
	defer c.mu.Unlock()
	if errors.Is(err, os.ErrNotExist) {
		return nil, time.Time{}, "", nil
	}
	if err != nil {
		return c.good, c.mod, c.etag, err
	}
	if c.fi != nil && os.SameFile(fi, c.fi) && fi.ModTime().Equal(c.fi.ModTime()) && fi.Size() == c.fi.Size() {
		return c.good, c.mod, c.etag, nil
	}
	f, err := os.Open(c.path)
	if err != nil {
		return c.good, c.mod, c.etag, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, pki.MaxDirectorySize+1))
	if err != nil {
		return c.good, c.mod, c.etag, err
	}
	if _, _, err := pki.VerifyDirectorySignature(b, c.keys); err != nil {
		c.fi = fi // don't re-read a bad file on every request
		return c.good, c.mod, c.etag, fmt.Errorf("published directory refused: %w", err)
	}
	sum := sha256.Sum256(b)
	c.fi, c.good, c.mod, c.etag = fi, b, fi.ModTime(), `"`+hex.EncodeToString(sum[:16])+`"`
	return c.good, c.mod, c.etag, nil
}

// handleDirectory serves GET /kurier/v1/directory: the current signed
// directory exactly as `kurierctl directory sign` wrote it, or 404 if none
// was published yet. It supports If-None-Match/If-Modified-Since.
func (s *Server) handleDirectory(w http.ResponseWriter, r *http.Request) {
	b, mod, etag, err := s.dir.load()
	if err != nil {
		s.log.Warn("read published directory", "err", err)
	}
	if b == nil {
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, "directory unavailable")
			return
		}
		writeError(w, http.StatusNotFound, "no directory has been published yet")
		return
	}
	w.Header().Set("Content-Type", DirectoryContentType)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", etag)
	http.ServeContent(w, r, "", mod, bytes.NewReader(b))
}

// sealKeysRequest is the body of POST /kurier/v1/seal-keys.
type sealKeysRequest struct {
	SealKeys []pki.SealKey `json:"seal_keys"`
}

type sealKeysResponse struct {
	Member    string    `json:"member"`
	SealKeys  int       `json:"seal_keys"`
	UpdatedAt time.Time `json:"updated_at"`
}

// handleSealKeys serves POST /kurier/v1/seal-keys over mTLS: it replaces the
// HPKE seal keys of the member named by the verified client certificate.
// Nothing in the body names the member.
func (s *Server) handleSealKeys(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		writeError(w, http.StatusUnauthorized, "a member client certificate is required")
		return
	}
	leaf := r.TLS.VerifiedChains[0][0]
	id, err := pki.IDFromCert(leaf)
	if err != nil {
		writeError(w, http.StatusForbidden, "client certificate carries no member identity")
		return
	}
	log := s.log.With("peer", id.String(), "remote_addr", r.RemoteAddr)
	if err := s.checkMember(id); err != nil {
		log.Debug("seal keys refused", "err", err)
		writeError(w, http.StatusForbidden, "not an active member")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "want application/json")
		return
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSealKeysBody))
	dec.DisallowUnknownFields()
	var req sealKeysRequest
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "malformed body: "+err.Error())
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "malformed body: trailing data")
		return
	}
	if err := ValidSealKeys(req.SealKeys); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	m, err := s.ca.store.SetSealKeys(id.Name, pki.Pin(leaf), req.SealKeys)
	switch {
	case errors.Is(err, ErrNotActive), errors.Is(err, ErrUnknownPin), errors.Is(err, ErrNoMember), errors.Is(err, ErrFinal):
		log.Debug("seal keys refused", "err", err)
		writeError(w, http.StatusForbidden, "not an active member, or the certificate's key is not pinned")
		return
	case err != nil:
		log.Error("store seal keys", "err", err)
		writeError(w, http.StatusInternalServerError, "could not store seal keys")
		return
	}
	log.Info("seal keys updated", "keys", len(m.SealKeys))
	writeJSON(w, http.StatusOK, sealKeysResponse{Member: m.Name, SealKeys: len(m.SealKeys), UpdatedAt: m.SealKeysUpdatedAt})
}

// ValidSealKeys checks a set of seal keys with the directory's rules (unique
// ids of 1-64 of a-z, 0-9 and '-'; public keys of 1-4096 bytes), and that
// there are 1 to MaxSealKeys of them.
func ValidSealKeys(keys []pki.SealKey) error {
	if len(keys) == 0 || len(keys) > MaxSealKeys {
		return fmt.Errorf("want 1 to %d seal keys, got %d", MaxSealKeys, len(keys))
	}
	d := pki.Directory{
		Network: "seal.check", Version: 1, IssuedAt: time.Unix(1, 0), ExpiresAt: time.Unix(2, 0),
		Members: []pki.Member{{Name: "check", Role: pki.RoleProvider, DisplayName: "check", SealKeys: keys}},
	}
	if err := d.Validate(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), `pki: directory member "check": `))
	}
	return nil
}

// issuingPath reports whether a request path is one of smallstep's
// certificate-issuing endpoints.
func issuingPath(p string) bool {
	switch strings.TrimPrefix(p, "/1.0") {
	case "/sign", "/renew", "/rekey", "/re-sign":
		return true
	}
	return false
}

// recordIssued wraps the issuing endpoints: the handler's response is
// buffered, and a certificate it issued is recorded against its member
// (pin and expiry) before the response is sent. If recording fails the
// client gets a 500 instead of a certificate no directory would pin.
//
// This is done on the response rather than in an x509 enforcer because
// enforcers run only for /sign, before the certificate is signed (it may still
// fail afterwards), and not at all for renewals and rekeys.
func (s *Server) recordIssued(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !issuingPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		bw := &bufferedWriter{header: http.Header{}}
		next.ServeHTTP(bw, r)
		if bw.status == 0 {
			bw.status = http.StatusOK
		}
		op := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/1.0"), "/")
		if bw.overflow {
			s.log.Error("certificate response too large", "op", op)
			writeError(w, http.StatusInternalServerError, "response too large")
			return
		}
		if bw.status == http.StatusCreated {
			leaf, err := issuedLeaf(bw.body.Bytes())
			if err == nil {
				err = s.ca.store.RecordCert(leaf)
			}
			if err != nil {
				s.log.Error("record issued certificate", "op", op, "err", err)
				writeError(w, http.StatusInternalServerError, "certificate issued but not recorded; try again")
				return
			}
			id, _ := pki.IDFromCert(leaf) // checked by RecordCert
			s.log.Info("certificate issued", "op", op, "peer", id.String(), "serial", leaf.SerialNumber.String(), "pin", pki.Pin(leaf), "not_after", leaf.NotAfter)
		} else {
			s.log.Debug("certificate request refused", "op", op, "status", bw.status, "remote_addr", r.RemoteAddr)
		}
		for k, v := range bw.header {
			w.Header()[k] = v
		}
		w.WriteHeader(bw.status)
		w.Write(bw.body.Bytes())
	})
}

// issuedLeaf returns the leaf certificate of a smallstep sign response.
func issuedLeaf(body []byte) (*x509.Certificate, error) {
	var resp struct {
		Crt string `json:"crt"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("decode sign response: %w", err)
	}
	blk, _ := pem.Decode([]byte(resp.Crt))
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("sign response has no certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}

// bufferedWriter is an http.ResponseWriter that keeps the response in
// memory, up to maxIssueResponse bytes.
type bufferedWriter struct {
	header   http.Header
	status   int
	body     bytes.Buffer
	overflow bool
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	if b.body.Len()+len(p) > maxIssueResponse {
		b.overflow = true
		return 0, errors.New("ca: response too large")
	}
	return b.body.Write(p)
}
