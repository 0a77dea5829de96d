package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.step.sm/crypto/keyutil"
	"go.step.sm/crypto/x509util"

	"github.com/kurier-net/kurier/pki"
)

const testPass = "correct horse"

// newTestCA initialises a CA for network in a temporary directory, its keys
// encrypted with testPass, and opens it with the given clock (time.Now if
// nil).
func newTestCA(t *testing.T, network string, now func() time.Time) *CA {
	t.Helper()
	return initTestCA(t, InitConfig{Network: network, Passphrase: Passphrase(testPass), Now: now})
}

// newBareTestCA is newTestCA with unencrypted keys: for the CAs a test only
// needs as a foreign party, where the key derivation would only cost time.
func newBareTestCA(t *testing.T, network string) *CA {
	t.Helper()
	return initTestCA(t, InitConfig{Network: network, InsecureUnencryptedKeys: true})
}

func initTestCA(t *testing.T, cfg InitConfig) *CA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ca")
	cfg.Dir = dir
	cfg.DNSNames = []string{"localhost", "127.0.0.1"}
	if _, err := Init(cfg); err != nil {
		t.Fatal(err)
	}
	now := cfg.Now
	c, err := Open(OpenConfig{Dir: dir, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testServer is a running CA server on loopback.
type testServer struct {
	ca   *CA
	srv  *Server
	url  string
	pool *x509.CertPool
	reg  *prometheus.Registry
}

// startServer serves c on 127.0.0.1:0 until the test ends, then checks that
// Shutdown returns nil and that no goroutine leaked.
func startServer(t *testing.T, c *CA) *testServer {
	t.Helper()
	before := runtime.NumGoroutine()
	reg := prometheus.NewRegistry()
	srv, err := New(Config{CA: c, Passphrase: Passphrase(testPass), Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v, want ErrServerClosed", err)
		}
		waitGoroutines(t, before)
	})
	return &testServer{ca: c, srv: srv, url: "https://" + ln.Addr().String(), pool: c.rootPool(), reg: reg}
}

// waitGoroutines polls until the goroutine count is back to n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutines: %d, want <= %d\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// client returns an HTTPS client trusting the CA's roots and presenting
// cert (if not nil).
func (ts *testServer) client(t *testing.T, cert *tls.Certificate) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: ts.pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// signResponse is smallstep's response to /sign, /renew and /rekey.
type signResponse struct {
	Crt       string   `json:"crt"`
	CA        string   `json:"ca"`
	CertChain []string `json:"certChain"`
}

func (r *signResponse) tlsCert(t *testing.T, key crypto.Signer) *tls.Certificate {
	t.Helper()
	c := &tls.Certificate{PrivateKey: key}
	for _, p := range r.CertChain {
		blk, _ := pem.Decode([]byte(p))
		if blk == nil {
			t.Fatal("bad PEM in certChain")
		}
		c.Certificate = append(c.Certificate, blk.Bytes)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	c.Leaf = leaf
	return c
}

// post sends JSON to path and decodes a 2xx JSON answer into out. It
// returns the status code and the body.
func post(t *testing.T, hc *http.Client, url string, in, out any) (int, []byte) {
	t.Helper()
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	resp, err := hc.Post(url, "application/json", body)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode/100 == 2 && out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("decode %s: %v: %s", url, err, b)
		}
	}
	return resp.StatusCode, b
}

// csrFor makes a key and a CSR for id with the given SANs (id's own SANs if
// sans is nil), the way a step client does (a P-256 key).
func csrFor(t *testing.T, id pki.ID, sans []string) (crypto.Signer, string) {
	t.Helper()
	k, err := keyutil.GenerateDefaultKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer), csrWith(t, k.(crypto.Signer), id, sans)
}

// csrWith is csrFor with a given key.
func csrWith(t *testing.T, signer crypto.Signer, id pki.ID, sans []string) string {
	t.Helper()
	if sans == nil {
		sans = []string{id.URI().String(), id.DNSName()}
	}
	csr, err := x509util.CreateCertificateRequest(id.DNSName(), sans, signer)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
}

// enrol redeems token with a CSR for id and a new P-256 key, and returns
// the HTTP status, the certificate (on success) and the response body.
func (ts *testServer) enrol(t *testing.T, token Token, id pki.ID, sans []string) (int, *tls.Certificate, []byte) {
	t.Helper()
	k, err := keyutil.GenerateDefaultKey()
	if err != nil {
		t.Fatal(err)
	}
	return ts.enrolWith(t, k.(crypto.Signer), token, id, sans)
}

// enrolWith is enrol with a given key.
func (ts *testServer) enrolWith(t *testing.T, key crypto.Signer, token Token, id pki.ID, sans []string) (int, *tls.Certificate, []byte) {
	t.Helper()
	csr := csrWith(t, key, id, sans)
	var resp signResponse
	code, body := post(t, ts.client(t, nil), ts.url+"/1.0/sign", map[string]string{"csr": csr, "ott": string(token)}, &resp)
	if code != http.StatusCreated {
		return code, nil, body
	}
	return code, resp.tlsCert(t, key), body
}

// renew renews cert over mTLS.
func (ts *testServer) renew(t *testing.T, cert *tls.Certificate) (int, *tls.Certificate, []byte) {
	t.Helper()
	var resp signResponse
	code, body := post(t, ts.client(t, cert), ts.url+"/1.0/renew", nil, &resp)
	if code != http.StatusCreated {
		return code, nil, body
	}
	return code, resp.tlsCert(t, cert.PrivateKey.(crypto.Signer)), body
}

// addMember adds an active member and returns a fresh token for it.
func addMember(t *testing.T, c *CA, role pki.Role, name string) (*Member, Token) {
	t.Helper()
	nm := NewMember{Name: name, Role: role, DisplayName: "Member " + name, Services: []string{"contacts"}}
	if role == pki.RoleRelay {
		nm.Relay = &pki.RelayEndpoints{Public: "relay.example:443", Pairing: "relay.example:4443", Control: "relay.example:4444", ControlTCP: "relay.example:4445"}
	}
	m, err := c.Store().Add(nm)
	if err != nil {
		t.Fatal(err)
	}
	return m, newToken(t, c, m)
}

// signers caches decrypted token signers per CA: each decryption costs a
// second under the race detector.
var signers sync.Map // *CA → *TokenSigner

func newToken(t *testing.T, c *CA, m *Member) Token {
	t.Helper()
	v, ok := signers.Load(c)
	if !ok {
		s, err := c.TokenSigner(Passphrase(testPass))
		if err != nil {
			t.Fatal(err)
		}
		v, _ = signers.LoadOrStore(c, s)
	}
	ti, err := v.(*TokenSigner).Token(m, 0)
	if err != nil {
		t.Fatal(err)
	}
	return ti.Token
}
