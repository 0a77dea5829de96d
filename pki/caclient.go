package pki

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// The CA client speaks the step-ca HTTP API (/root/{sha}, /1.0/sign,
// /1.0/renew), so a stock step-ca can serve Kurier members as well, plus three
// Kurier endpoints served by kurierctl ca serve: /kurier/v1/trust,
// /kurier/v1/directory and /kurier/v1/seal-keys. It never links the
// authority itself.

// Errors from the CA client.
var (
	ErrFingerprint = errors.New("pki: CA root does not match the expected fingerprint")
	ErrCARefused   = errors.New("pki: CA refused the request")
	ErrNotFound    = errors.New("pki: CA has no such resource")
)

const (
	maxCAResponse      = 1 << 20 // bytes, except directories
	defaultCATimeout   = 30 * time.Second
	directoryMediaType = "application/vnd.kurier.directory"
)

// Token is a one-time enrolment token. It redacts itself in logs.
type Token string

// LogValue implements slog.LogValuer.
func (Token) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Fingerprint returns the SHA-256 fingerprint of a certificate in lowercase
// hex, the form step-ca and kurierctl print.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func normalizeFingerprint(fp string) (string, error) {
	fp = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fp), ":", ""))
	b, err := hex.DecodeString(fp)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("pki: fingerprint %q is not a SHA-256 digest in hex", fp)
	}
	return fp, nil
}

// CAError is the CA's own description of why it refused a request.
type CAError struct {
	Status  int
	Message string
}

func (e *CAError) Error() string {
	return fmt.Sprintf("pki: CA answered %d: %s", e.Status, e.Message)
}

// Is makes errors.Is(err, ErrCARefused) and ErrNotFound work.
func (e *CAError) Is(target error) bool {
	return target == ErrCARefused || (target == ErrNotFound && e.Status == http.StatusNotFound)
}

// CAClientConfig configures a CAClient.
type CAClientConfig struct {
	// URL is the CA's base URL, https://host:port. Required.
	URL string
	// Roots verify the CA's server certificate. Required; see
	// BootstrapRoot to obtain them from a fingerprint.
	Roots *x509.CertPool
	// Timeout bounds each request. If zero, 30s is used.
	Timeout time.Duration
}

// CAClient talks to the network CA. It is safe for concurrent use.
type CAClient struct {
	base    *url.URL
	roots   *x509.CertPool
	timeout time.Duration
	plain   *http.Client // server-authenticated only
}

// NewCAClient returns a client for the CA at cfg.URL.
func NewCAClient(cfg CAClientConfig) (*CAClient, error) {
	u, err := parseCAURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Roots == nil {
		return nil, errors.New("pki: CA client needs the network roots")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultCATimeout
	}
	c := &CAClient{base: u, roots: cfg.Roots, timeout: cfg.Timeout}
	c.plain = c.httpClient(nil)
	return c, nil
}

func parseCAURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("pki: CA URL %q: want https://host[:port]", s)
	}
	u.Path = ""
	return u, nil
}

func (c *CAClient) httpClient(cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12, // a stock step-ca may still offer 1.2; kurierctl serves 1.3
		RootCAs:    c.roots,
	}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return &http.Client{
		Timeout: c.timeout,
		Transport: &http.Transport{
			TLSClientConfig:       cfg,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: c.timeout,
			MaxIdleConns:          2,
			IdleConnTimeout:       30 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("pki: CA redirects are not followed") },
	}
}

// BootstrapRoot fetches the CA's root certificate and accepts it only if its
// SHA-256 fingerprint equals fingerprint and the CA's own server certificate
// chains to it. This is how a new member comes to trust the network.
func BootstrapRoot(ctx context.Context, caURL, fingerprint string) (*x509.Certificate, error) {
	u, err := parseCAURL(caURL)
	if err != nil {
		return nil, err
	}
	fp, err := normalizeFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	var served []*x509.Certificate
	// The root is not known yet: accept any server chain for this one
	// request, remember it, and check it against the root once the root has
	// been authenticated by its fingerprint.
	hc := &http.Client{
		Timeout: defaultCATimeout,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				MinVersion:         tls.VersionTLS12,
				InsecureSkipVerify: true, // verified below against the pinned root
				VerifyConnection: func(cs tls.ConnectionState) error {
					served = cs.PeerCertificates
					return nil
				},
			},
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return errors.New("pki: CA redirects are not followed") },
	}
	defer hc.CloseIdleConnections()
	var resp struct {
		CA string `json:"ca"`
	}
	if err := doJSON(ctx, hc, http.MethodGet, u.JoinPath("root", fp).String(), nil, &resp); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("%w: the CA at %s has no root %s; check --fingerprint against kurierctl ca init's output", ErrFingerprint, caURL, fp)
		}
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	root, err := parseCertPEM(resp.CA)
	if err != nil {
		return nil, fmt.Errorf("fetch root: %w", err)
	}
	got := Fingerprint(root)
	if subtle.ConstantTimeCompare([]byte(got), []byte(fp)) != 1 {
		return nil, fmt.Errorf("%w: got %s, want %s", ErrFingerprint, got, fp)
	}
	if len(served) == 0 {
		return nil, errors.New("pki: CA presented no certificate")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range served[1:] {
		inter.AddCert(c)
	}
	if _, err := served[0].Verify(x509.VerifyOptions{DNSName: u.Hostname(), Roots: roots, Intermediates: inter}); err != nil {
		return nil, fmt.Errorf("%w: the CA's server certificate does not chain to it: %v", ErrFingerprint, err)
	}
	return root, nil
}

func parseCertPEM(s string) (*x509.Certificate, error) {
	b, rest := pem.Decode([]byte(s))
	if b == nil || b.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("pki: want one PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

type signResponse struct {
	Crt       string   `json:"crt"`
	CA        string   `json:"ca"`
	CertChain []string `json:"certChain"`
}

func (r *signResponse) chain() ([]*x509.Certificate, error) {
	pems := r.CertChain
	if len(pems) == 0 {
		pems = []string{r.Crt, r.CA}
	}
	var chain []*x509.Certificate
	for _, p := range pems {
		if p == "" {
			continue
		}
		c, err := parseCertPEM(p)
		if err != nil {
			return nil, fmt.Errorf("parse issued chain: %w", err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, errors.New("pki: CA returned no certificate")
	}
	return chain, nil
}

// Sign sends a certificate request with a one-time token to /1.0/sign and
// returns the issued chain, leaf first, verified against the roots.
func (c *CAClient) Sign(ctx context.Context, csrDER []byte, token Token) ([]*x509.Certificate, error) {
	body, err := json.Marshal(struct {
		CSR string `json:"csr"`
		OTT string `json:"ott"`
	}{
		CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		OTT: string(token),
	})
	if err != nil {
		return nil, err
	}
	var resp signResponse
	if err := doJSON(ctx, c.plain, http.MethodPost, c.base.JoinPath("1.0", "sign").String(), body, &resp); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return c.verifiedChain(&resp)
}

// Renew asks the CA for a new certificate for the same key, authenticating
// with cert over mTLS. It returns the new chain, leaf first.
func (c *CAClient) Renew(ctx context.Context, cert *tls.Certificate) ([]*x509.Certificate, error) {
	hc := c.httpClient(cert)
	defer hc.CloseIdleConnections()
	var resp signResponse
	if err := doJSON(ctx, hc, http.MethodPost, c.base.JoinPath("1.0", "renew").String(), nil, &resp); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	return c.verifiedChain(&resp)
}

func (c *CAClient) verifiedChain(resp *signResponse) ([]*x509.Certificate, error) {
	chain, err := resp.chain()
	if err != nil {
		return nil, err
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: c.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("pki: issued certificate does not chain to the network root: %w", err)
	}
	return chain, nil
}

// TrustBundle is what the CA publishes about the network's trust anchors.
type TrustBundle struct {
	Network       string
	Roots         []*x509.Certificate
	DirectoryKeys []ed25519.PublicKey
}

// Trust fetches /kurier/v1/trust.
func (c *CAClient) Trust(ctx context.Context) (*TrustBundle, error) {
	var resp struct {
		Network       string   `json:"network"`
		Roots         []string `json:"roots"`
		DirectoryKeys []string `json:"directory_keys"`
	}
	if err := doJSON(ctx, c.plain, http.MethodGet, c.base.JoinPath("kurier", "v1", "trust").String(), nil, &resp); err != nil {
		return nil, fmt.Errorf("fetch trust bundle: %w", err)
	}
	if err := ValidNetwork(resp.Network); err != nil {
		return nil, fmt.Errorf("fetch trust bundle: %w", err)
	}
	tb := &TrustBundle{Network: resp.Network}
	for _, p := range resp.Roots {
		r, err := parseCertPEM(p)
		if err != nil {
			return nil, fmt.Errorf("fetch trust bundle: root: %w", err)
		}
		tb.Roots = append(tb.Roots, r)
	}
	for _, k := range resp.DirectoryKeys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, errors.New("fetch trust bundle: malformed directory key")
		}
		tb.DirectoryKeys = append(tb.DirectoryKeys, ed25519.PublicKey(b))
	}
	if len(tb.Roots) == 0 || len(tb.DirectoryKeys) == 0 {
		return nil, errors.New("fetch trust bundle: no roots or no directory keys")
	}
	return tb, nil
}

// Directory fetches the current signed directory. The bytes are not verified:
// hand them to a Verifier.
func (c *CAClient) Directory(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base.JoinPath("kurier", "v1", "directory").String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", directoryMediaType)
	resp, err := c.plain.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch directory: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch directory: %w", caError(resp))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxDirectorySize+1))
	if err != nil {
		return nil, fmt.Errorf("fetch directory: %w", err)
	}
	if len(b) > MaxDirectorySize {
		return nil, fmt.Errorf("fetch directory: larger than %d bytes", MaxDirectorySize)
	}
	return b, nil
}

// PublishSealKeys records this member's HPKE public keys at the CA, which
// includes them in the next directory. The member is identified by cert over
// mTLS, nothing else.
func (c *CAClient) PublishSealKeys(ctx context.Context, cert *tls.Certificate, keys []SealKey) error {
	body, err := json.Marshal(struct {
		SealKeys []SealKey `json:"seal_keys"`
	}{keys})
	if err != nil {
		return err
	}
	hc := c.httpClient(cert)
	defer hc.CloseIdleConnections()
	if err := doJSON(ctx, hc, http.MethodPost, c.base.JoinPath("kurier", "v1", "seal-keys").String(), body, nil); err != nil {
		return fmt.Errorf("publish seal keys: %w", err)
	}
	return nil
}

// doJSON sends body (if not nil) as JSON and decodes a 2xx answer into out
// (if not nil). Any other answer becomes a *CAError.
func doJSON(ctx context.Context, hc *http.Client, method, u string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return caError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxCAResponse))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxCAResponse)).Decode(out); err != nil {
		return fmt.Errorf("decode CA answer: %w", err)
	}
	return nil
}

func caError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	var e struct {
		Message string `json:"message"` // step-ca's API
		Error   string `json:"error"`   // Kurier's endpoints
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil {
		if e.Message != "" {
			msg = e.Message
		} else if e.Error != "" {
			msg = e.Error
		}
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &CAError{Status: resp.StatusCode, Message: msg}
}
