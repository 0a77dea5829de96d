package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/eps/submit"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/proxy"
)

// node is one member's endpoint server with its private proxy, as
// `kurier eps` runs them, and the member's own software behind its
// callback URL.
type node struct {
	name   string
	st     *pki.State
	ep     *eps.Endpoint
	api    *sdk.Client
	mux    *sdk.Mux
	webPin string // links' certificate key, for a browser's --ignore-certificate-errors-spki-list
}

// startEPS starts name's endpoint server (with links if links is set) and
// its software, a callback server dispatching through an sdk.Mux.
func (d *demo) startEPS(ctx context.Context, st *pki.State, v *pki.Verifier, links bool, relayPort int) (*node, error) {
	t0 := time.Now()
	n := &node{name: st.ID.Name, st: st, mux: &sdk.Mux{Logger: d.log}}
	id, err := pki.NewIdentity(st.Cert)
	if err != nil {
		return nil, err
	}
	trust := pki.Trust{Roots: st.RootPool(), Directory: v}
	log := d.log.With("member", n.name)
	db, err := store.Open(store.Config{Path: filepath.Join(st.Dir, "eps.db"), Logger: log})
	if err != nil {
		return nil, err
	}
	// The software's callback server, with the token the EPS sends.
	cbToken := rand.Text()
	cbLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		return nil, err
	}
	cbSrv := &http.Server{Handler: n.mux.Handler(sdk.CallbackOptions{Token: sdk.Token(cbToken)}), ReadHeaderTimeout: 5 * time.Second}
	cfg := eps.Config{
		Identity: id, Trust: trust, SealKeys: st.SealKeys(), Store: db,
		Callback: "http://" + cbLn.Addr().String() + "/kurier", CallbackToken: cbToken,
		RetryMin: 100 * time.Millisecond, RetryMax: 2 * time.Second, Logger: log,
	}
	if links {
		cert, pin, err := webCertificate(st.ID.DNSName())
		if err != nil {
			db.Close()
			return nil, err
		}
		n.webPin = pin
		cfg.Links = &eps.LinkConfig{Certificate: cert, Key: *st.WebSeal, Port: relayPort}
	}
	if n.ep, err = eps.NewEndpoint(cfg, proxy.Config{}); err != nil {
		db.Close()
		cbLn.Close()
		return nil, err
	}
	apiLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		cbLn.Close()
		return nil, err
	}
	n.api = &sdk.Client{URL: "http://" + apiLn.Addr().String() + "/"}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := n.ep.Serve(runCtx, apiLn); err != nil {
			d.log.Error("endpoint server failed", "member", n.name, "err", err)
		}
	})
	wg.Go(func() { cbSrv.Serve(cbLn) })
	d.defer_(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		n.ep.Shutdown(sctx)
		cbSrv.Shutdown(sctx)
		cancel()
		wg.Wait()
		db.Close()
	})
	name := st.ID.DNSName()
	for n.ep.Registered() < 2 {
		if time.Since(t0) > 15*time.Second {
			return nil, fmt.Errorf("%s: route registered at %d of 2 relays after 15s", n.name, n.ep.Registered())
		}
		time.Sleep(5 * time.Millisecond)
	}
	what := "endpoint server"
	if links {
		what += " with one-time links"
	}
	d.step(n.name, "kurier eps: %s, local API %s, dialled out to both relays, registered %s (%v)",
		what, apiLn.Addr(), name, time.Since(t0).Round(time.Millisecond))
	return n, nil
}

// webCertificate makes the demo's certificate for the office's link pages,
// *.<host>, self-signed. In production it comes from a CA browsers trust.
// It is not a member key and stays P-256: browsers do not accept Ed25519
// certificates in TLS.
func webCertificate(host string) (*tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "*." + host},
		DNSNames:  []string{"*." + host},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", err
	}
	pin := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, base64.StdEncoding.EncodeToString(pin[:]), nil
}

// indexCase runs the second flow: a one-time link for an index case, the
// citizen's submission sealed on the citizen's side, the office's software
// receiving it, and the dead link.
func (d *demo) indexCase(ctx context.Context, office *node, relayAddr string, held func(name string) bool) error {
	got := make(chan *sdk.Message, 1)
	office.mux.Handle("index-cases", func(ctx context.Context, m *sdk.Message) (any, error) {
		select {
		case got <- m:
		default:
		}
		return nil, nil
	})
	t0 := time.Now()
	link, err := office.api.Link(ctx, sdk.LinkOptions{TTL: time.Hour})
	if err != nil {
		return fmt.Errorf("_link: %w", err)
	}
	u, err := url.Parse(link.URL)
	if err != nil {
		return err
	}
	d.step("office-sw", "_link for one index case (%v): https://%s/#<secret>, expires %s",
		time.Since(t0).Round(time.Microsecond), u.Host, link.Expires.Format("15:04 UTC"))
	d.step("", "  label %s routes at the relays; the secret is only in the URL fragment, never in DNS, SNI or a path", link.Label)
	host := u.Hostname()
	if d.waitBrowser {
		d.step("", "  open it in a browser, the demo waits up to 10 minutes:")
		d.say("\n    chromium --user-data-dir=$(mktemp -d) --host-resolver-rules='MAP %s 127.0.0.1' --ignore-certificate-errors-spki-list=%s '%s'\n\n",
			host, office.webPin, link.URL)
		return d.awaitSubmission(ctx, got, t0, 10*time.Minute, relayAddr, host, u.Host, office, held)
	}

	// The citizen: what the page does in the browser (kurier-seal.js),
	// here in Go: fetch the link's facts with the secret, seal to the
	// office's X25519 key, post only the envelope.
	t1 := time.Now()
	cl := citizenClient(relayAddr, host, office)
	info, err := citizenDo(cl, "GET", "https://"+u.Host+submit.PathLinkInfo, u.Fragment, nil)
	if err != nil {
		return fmt.Errorf("link info: %w", err)
	}
	var facts struct {
		Key       pki.SealKey `json:"key"`
		Recipient string      `json:"recipient"`
		Display   string      `json:"display_name"`
		Service   string      `json:"service"`
		MessageID string      `json:"message_id"`
	}
	if err := json.Unmarshal(info, &facts); err != nil {
		return err
	}
	sub := submit.Submission{
		Format: submit.Format, Label: link.Label, SubmittedAt: time.Now().UTC().Format(time.RFC3339),
		Contacts: []submit.Contact{{FirstName: "Erika", LastName: "Mustermann", Phone: "+49 30 1234567", Category: submit.CategoryHousehold,
			LastContact: time.Now().AddDate(0, 0, -2).Format(time.DateOnly)}},
		Events: []submit.Event{},
	}
	plain, err := json.Marshal(sub)
	if err != nil {
		return err
	}
	env, err := seal.SealUnsigned(facts.Key, seal.Context{Sender: seal.Anonymous, Recipient: facts.Recipient,
		Service: facts.Service, Kind: seal.KindNotification, MessageID: facts.MessageID}, plain)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"message_id": facts.MessageID, "sealed": env})
	if err != nil {
		return err
	}
	if _, err := citizenDo(cl, "POST", "https://"+u.Host+submit.PathSubmit, u.Fragment, body); err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	d.step("citizen", "page for %q over TLS 1.3 through the relay; 1 contact sealed to key %s (X25519, HPKE), %d bytes posted (%v)",
		facts.Display, facts.Key.ID, len(body), time.Since(t1).Round(time.Millisecond))

	return d.awaitSubmission(ctx, got, t0, 15*time.Second, relayAddr, host, u.Host, office, held)
}

// awaitSubmission waits for the submission at the office's software and
// then checks that the link is dead.
func (d *demo) awaitSubmission(ctx context.Context, got chan *sdk.Message, t0 time.Time, wait time.Duration, relayAddr, host, hostPort string, office *node, held func(string) bool) error {
	select {
	case m := <-got:
		s, err := submit.ParseSubmission(m.Params)
		if err != nil {
			return fmt.Errorf("the office's software got an invalid submission: %w", err)
		}
		d.step("office-sw", "submission %s from %s on %s: %d contact(s), %d event(s), opened by its EPS (%v after the link was made)",
			m.ID.String()[:8], m.From, m.Service, len(s.Contacts), len(s.Events), time.Since(t0).Round(time.Millisecond))
	case <-time.After(wait):
		return fmt.Errorf("the submission did not reach the office's software within %v", wait)
	case <-ctx.Done():
		return ctx.Err()
	}
	// The link is dead: the route is withdrawn at every relay.
	t1 := time.Now()
	for held(host) {
		if time.Since(t1) > 10*time.Second {
			return errors.New("the relays still hold the used link's route after 10s")
		}
		time.Sleep(time.Millisecond)
	}
	d.step("r1, r2", "route %s withdrawn (%v after the submission)", host, time.Since(t1).Round(time.Microsecond))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := citizenDo(citizenClient(relayAddr, host, office), "GET", "https://"+hostPort+"/", "", nil)
		if err != nil {
			d.step("citizen", "the link again: %s", shortLinkErr(err))
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the used link still answers after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func shortLinkErr(err error) string {
	if errors.Is(err, io.EOF) || strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "reset") {
		return "the relay closed the connection: the route is withdrawn"
	}
	return shortErr(err)
}

// citizenClient reaches the link's host through the relay, trusting the
// link pages' certificate (in production: the browser's trusted CAs).
func citizenClient(relayAddr, host string, office *node) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, relayAddr)
		},
		TLSClientConfig: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				pin := sha256.Sum256(cs.PeerCertificates[0].RawSubjectPublicKeyInfo)
				if base64.StdEncoding.EncodeToString(pin[:]) != office.webPin {
					return errors.New("not the office's link certificate")
				}
				return cs.PeerCertificates[0].VerifyHostname(host)
			}},
		DisableKeepAlives: true,
	}}
}

func citizenDo(cl *http.Client, method, u, secret string, body []byte) ([]byte, error) {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := cl.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}
