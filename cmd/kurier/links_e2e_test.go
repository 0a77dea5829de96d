package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/submit"
	"github.com/kurier-net/kurier/pki"
)

// webCert writes a self-signed certificate and key for names to dir and
// returns their paths.
func webCert(t *testing.T, dir string, names ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, names[0][2:]+".crt"), filepath.Join(dir, names[0][2:]+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestEPSLinksBinary: `kurier eps --link-cert` at a health office, the link
// fetched and used with curl through the real relay, the submission at the
// office's software, and the link dead afterwards.
func TestEPSLinksBinary(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not installed: .ci/run installs it")
	}
	n, states := setupNetwork(t,
		[]string{"hd-1", "--role", "health-office", "--display-name", "Gesundheitsamt 1", "--service", "index-cases"},
		[]string{"vendor-a", "--role", "provider", "--display-name", "Vendor A", "--service", "guest-lists"})
	host := "hd-1.e2e.kurier"
	certFile, keyFile := webCert(t, n.dir, "*."+host)
	_, port, _ := net.SplitHostPort(n.pub)

	// A certificate for another name, and a vendor's state, are refused
	// with a clear error before anything starts.
	otherCert, otherKey := webCert(t, n.dir, "*.other.example")
	out, err := exec.Command(n.kurier, "eps", "--state", states["hd-1"], "--listen", freePort(t, "tcp"),
		"--link-cert", otherCert, "--link-key", otherKey).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is not valid for *."+host) {
		t.Errorf("a link certificate for another name: %v\n%s", err, out)
	}
	out, err = exec.Command(n.kurier, "eps", "--state", states["vendor-a"], "--listen", freePort(t, "tcp"),
		"--link-cert", certFile, "--link-key", keyFile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "one-time links are for health offices") {
		t.Errorf("links at a vendor: %v\n%s", err, out)
	}

	api := freePort(t, "tcp")
	office := start(t, n.kurier, append([]string{"eps", "--state", states["hd-1"], "--listen", api,
		"--link-cert", certFile, "--link-key", keyFile, "--link-port", port}, daemonArgs("")...)...)
	c := &jsonrpc.Client{URL: "http://" + api + "/"}
	waitFor(t, "the office's endpoint server", 30*time.Second, func() bool {
		return c.Call(t.Context(), "_ping", nil, nil) == nil
	})
	var link struct {
		URL       string `json:"url"`
		MessageID string `json:"message_id"`
	}
	waitFor(t, "a link", 30*time.Second, func() bool {
		return c.Call(t.Context(), "_link", map[string]any{"ttl_seconds": 600}, &link) == nil
	})
	u, err := url.Parse(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Port() != port || !strings.HasSuffix(u.Hostname(), "."+host) {
		t.Fatalf("link %s://%s: want a host under %s on the relay's port %s", u.Scheme, u.Host, host, port)
	}
	secret := u.Fragment
	curlArgs := func(extra ...string) []string {
		return append([]string{"-sS", "--max-time", "10", "--tlsv1.3", "--cacert", certFile,
			"--resolve", u.Hostname() + ":" + port + ":127.0.0.1"}, extra...)
	}
	base := "https://" + u.Host
	page, err := exec.Command(curl, curlArgs(base+"/")...).CombinedOutput()
	if err != nil || !strings.Contains(string(page), `lang="de"`) {
		t.Fatalf("curl the page: %v\n%.300s", err, page)
	}
	info, err := exec.Command(curl, curlArgs("-H", "Authorization: Bearer "+secret, base+submit.PathLinkInfo)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl the link's facts: %v\n%s", err, info)
	}
	var facts struct {
		Key       pki.SealKey `json:"key"`
		Recipient string      `json:"recipient"`
		Service   string      `json:"service"`
		MessageID string      `json:"message_id"`
	}
	if err := json.Unmarshal(info, &facts); err != nil || facts.Key.KEM != seal.KEMX25519 {
		t.Fatalf("link facts %s: %v", info, err)
	}
	plain := `{"format":"kurier-submission/v2","label":"` + strings.SplitN(u.Hostname(), ".", 2)[0] + `","submitted_at":"` +
		time.Now().UTC().Format(time.RFC3339) + `","contacts":[{"first_name":"Erika","last_name":"Zeugin","phone":"+49 30 1234567","category":"close","last_contact":"` +
		time.Now().AddDate(0, 0, -1).Format(time.DateOnly) + `"}],"events":[]}`
	env, err := seal.SealUnsigned(facts.Key, seal.Context{Sender: seal.Anonymous, Recipient: facts.Recipient, Service: facts.Service,
		Kind: seal.KindNotification, MessageID: facts.MessageID}, []byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"message_id": facts.MessageID, "sealed": env})
	bodyFile := filepath.Join(n.dir, "submission.json")
	os.WriteFile(bodyFile, body, 0o600)
	res, err := exec.Command(curl, curlArgs("-H", "Authorization: Bearer "+secret, "-H", "Content-Type: application/json",
		"--data-binary", "@"+bodyFile, base+submit.PathSubmit)...).CombinedOutput()
	if err != nil || !strings.Contains(string(res), `"status":"received"`) {
		t.Fatalf("curl the submission: %v\n%s", err, res)
	}

	var polled struct {
		Messages []struct {
			MessageID string          `json:"message_id"`
			From      string          `json:"from"`
			Service   string          `json:"service"`
			Params    json.RawMessage `json:"params"`
		} `json:"messages"`
	}
	waitFor(t, "the submission at the office's software", 30*time.Second, func() bool {
		return c.Call(t.Context(), "_poll", map[string]any{"wait": 2}, &polled) == nil && len(polled.Messages) > 0
	})
	m := polled.Messages[0]
	if m.From != "anonymous" || m.Service != "index-cases" || m.MessageID != link.MessageID || !strings.Contains(string(m.Params), `"last_name":"Zeugin"`) {
		t.Errorf("the office's software got %+v", m)
	}
	waitFor(t, "the used link to be dead", 30*time.Second, func() bool {
		_, err := exec.Command(curl, curlArgs(base+"/")...).CombinedOutput()
		return err != nil
	})
	office.stop(t)
	n.relay.stop(t)
}
