package eps_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/submit"
	"github.com/kurier-net/kurier/pki"
)

// citizen is a browser stand-in: it reaches a link's page through the
// relay over TLS (SNI <label>.hd-1.<network>) and seals as the page does.
type citizen struct {
	t      *testing.T
	n      *epstest.Network
	link   linkInfo
	secret string
	host   string // <label>.hd-1.<network>
	client *http.Client
}

type linkInfo struct {
	URL       string    `json:"url"`
	Label     string    `json:"label"`
	MessageID string    `json:"message_id"`
	Service   string    `json:"service"`
	Expires   time.Time `json:"expires"`
}

func newLink(t *testing.T, n *epstest.Network, params any) *citizen {
	t.Helper()
	var li linkInfo
	if err := n.Member("hd-1").Client().Call(t.Context(), "_link", params, &li); err != nil {
		t.Fatalf("_link: %v", err)
	}
	u, err := url.Parse(li.URL)
	if err != nil {
		t.Fatal(err)
	}
	if u.Path != "/" || u.RawQuery != "" || u.Fragment == "" || strings.Contains(u.Host, u.Fragment) {
		t.Fatalf("link %s: the secret must be the fragment only", li.Label)
	}
	if want := li.Label + "." + n.Member("hd-1").ID().DNSName(); u.Hostname() != want {
		t.Fatalf("link host %q, want %q", u.Hostname(), want)
	}
	relay := n.RelayPublic()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: n.Trust().Roots, ServerName: u.Hostname(), MinVersion: tls.VersionTLS13},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, relay)
		},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &citizen{t: t, n: n, link: li, secret: u.Fragment, host: u.Host, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

func (c *citizen) do(method, path, secret string, body []byte) (int, string, error) {
	req, err := http.NewRequest(method, "https://"+c.host+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// submission seals plaintext as the page does and returns the POST body.
func (c *citizen) submission(plaintext []byte) []byte {
	c.t.Helper()
	var facts struct {
		Key           pki.SealKey `json:"key"`
		RecipientName string      `json:"recipient"`
		Service       string      `json:"service"`
		MessageID     string      `json:"message_id"`
	}
	status, body, err := c.do("GET", submit.PathLinkInfo, c.secret, nil)
	if err != nil || status != 200 {
		c.t.Fatalf("link info: %d %s %v", status, body, err)
	}
	if err := json.Unmarshal([]byte(body), &facts); err != nil {
		c.t.Fatalf("link info %s: %v", body, err)
	}
	ctx := seal.Context{Sender: seal.Anonymous, Recipient: facts.RecipientName, Service: facts.Service, Kind: seal.KindNotification, MessageID: facts.MessageID}
	env, err := seal.SealUnsigned(facts.Key, ctx, plaintext)
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := json.Marshal(map[string]any{"message_id": facts.MessageID, "sealed": env})
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// gone reports whether the link's host no longer reaches a page: the relay
// refuses the TLS connection once the route is withdrawn.
func (c *citizen) gone() bool {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", c.n.RelayPublic(),
		&tls.Config{RootCAs: c.n.Trust().Roots, ServerName: strings.Split(c.host, ":")[0], MinVersion: tls.VersionTLS13})
	if err != nil {
		return true
	}
	conn.Close()
	return false
}

// submissionMarker is a contact's last name, so letters only.
const submissionMarker = "Zeugin-Markiert-Qwxkvj"

func testSubmission(label string) []byte {
	return []byte(`{"format":"kurier-submission/v2","label":"` + label + `","submitted_at":"2026-11-24T10:00:00Z",` +
		`"contacts":[{"first_name":"Erika","last_name":"` + submissionMarker + `","phone":"+49 30 1234567","category":"household","last_contact":"2026-11-20"}],"events":[]}`)
}

func linkNetwork(t *testing.T, configure func(string, *eps.Config)) *epstest.Network {
	members := epstest.DefaultMembers()
	members[0].Links = true
	members[0].Services = append(members[0].Services, "index-cases")
	return epstest.New(t, epstest.Options{Members: members, Tap: true, Configure: configure})
}

func TestOneTimeLink(t *testing.T) {
	n := linkNetwork(t, nil)
	office := n.Member("hd-1").Client()
	c := newLink(t, n, map[string]any{"ttl_seconds": 3600})
	if c.link.Service != "index-cases" || time.Until(c.link.Expires) > time.Hour || time.Until(c.link.Expires) < 59*time.Minute {
		t.Errorf("link %+v: want service index-cases, expiry in an hour", c.link)
	}

	// The page is served over TLS through the relay.
	status, body, err := c.do("GET", "/", "", nil)
	if err != nil || status != 200 || !strings.Contains(body, `lang="de"`) {
		t.Fatalf("page: %d %v %.200s", status, err, body)
	}
	// A forged secret is refused; the link stays usable.
	if status, _, _ := c.do("GET", submit.PathLinkInfo, strings.Repeat("A", 43), nil); status != 401 && status != 403 {
		t.Errorf("forged secret: HTTP %d, want 401 or 403", status)
	}
	// An oversized submission is refused and leaves the link usable.
	if status, _, _ := c.do("POST", submit.PathSubmit, c.secret, bytes.Repeat([]byte(" "), 9<<20)); status != 413 {
		t.Errorf("oversized submission: HTTP %d, want 413", status)
	}
	// A submission sealed for another message id is refused.
	other := c.submission(testSubmission(c.link.Label))
	other = bytes.Replace(other, []byte(c.link.MessageID), []byte(strings.Repeat("0", 32)), 1)
	if status, _, _ := c.do("POST", submit.PathSubmit, c.secret, other); status < 400 || status == 200 {
		t.Errorf("envelope for another message id: HTTP %d, want a refusal", status)
	}

	again := c.submission(testSubmission(c.link.Label))
	status, body, err = c.do("POST", submit.PathSubmit, c.secret, c.submission(testSubmission(c.link.Label)))
	if err != nil || status != 200 {
		t.Fatalf("submit: %d %s %v", status, body, err)
	}
	it := pollOne(t, office, "notification")
	if it.From != "anonymous" || it.Service != "index-cases" || it.MessageID.String() != c.link.MessageID {
		t.Errorf("office's software got %s from %s for %s, want %s from anonymous for index-cases", it.MessageID, it.From, it.Service, c.link.MessageID)
	}
	sub, err := submit.ParseSubmission(it.Params)
	if err != nil {
		t.Fatalf("submission as received: %v", err)
	}
	if len(sub.Contacts) != 1 || sub.Contacts[0].LastName != submissionMarker {
		t.Errorf("submission as received: %+v", sub)
	}

	// Used: a second submission is refused, and the route is withdrawn
	// so the link's host reaches nothing at all.
	if status, _, err := c.do("POST", submit.PathSubmit, c.secret, again); err == nil && status == 200 {
		t.Error("a second submission through a used link was accepted")
	}
	waitUntil(t, "the used link's route to be withdrawn", c.gone)
	if n.Tap().Contains([]byte(submissionMarker)) {
		t.Error("the submission's plaintext crossed the relay")
	}
	if n.Tap().Contains([]byte(c.secret)) {
		t.Error("the link's secret crossed the relay in plaintext")
	}
}

func TestOneTimeLinkExpiresAndWithdraws(t *testing.T) {
	n := linkNetwork(t, func(name string, cfg *eps.Config) {
		if cfg.Links != nil {
			cfg.Links.DefaultTTL = 2 * time.Second
		}
	})
	office := n.Member("hd-1").Client()
	expiring := newLink(t, n, nil)
	if status, _, err := expiring.do("GET", submit.PathLinkInfo, expiring.secret, nil); err != nil || status != 200 {
		t.Fatalf("fresh link: %d %v", status, err)
	}
	waitUntil(t, "the expired link's route to be withdrawn", expiring.gone)

	withdrawn := newLink(t, n, map[string]any{"ttl_seconds": 600})
	if withdrawn.gone() {
		t.Fatal("a fresh link is not reachable")
	}
	if err := office.Call(t.Context(), "_unlink", map[string]any{"label": withdrawn.link.Label}, nil); err != nil {
		t.Fatalf("_unlink: %v", err)
	}
	waitUntil(t, "the withdrawn link's route to go", withdrawn.gone)

	var e *jsonrpc.Error
	for _, bad := range []map[string]any{{"ttl_seconds": 5}, {"ttl_seconds": 999999999}, {"secret": "x"}} {
		err := office.Call(t.Context(), "_link", bad, nil)
		if !errors.As(err, &e) || e.Code != jsonrpc.CodeInvalidParams {
			t.Errorf("_link %v: %v, want invalid params", bad, err)
		}
	}
	// Links are a health office's: a vendor's endpoint server has none.
	err := n.Member("vendor-a").Client().Call(t.Context(), "_link", nil, nil)
	if !errors.As(err, &e) || e.Code != jsonrpc.CodeMethodNotFound {
		t.Errorf("_link at a vendor: %v, want method not found", err)
	}
}

func TestOneTimeLinkSurvivesRestart(t *testing.T) {
	n := linkNetwork(t, nil)
	c := newLink(t, n, nil)
	n.Restart("hd-1")
	waitUntil(t, "the link to be served again after a restart", func() bool { return !c.gone() })
	c.client.Transport.(*http.Transport).CloseIdleConnections()
	status, body, err := c.do("POST", submit.PathSubmit, c.secret, c.submission(testSubmission(c.link.Label)))
	if err != nil || status != 200 {
		t.Fatalf("submit after restart: %d %s %v", status, body, err)
	}
	it := pollOne(t, n.Member("hd-1").Client(), "notification")
	if it.MessageID.String() != c.link.MessageID {
		t.Errorf("got message %s, want %s", it.MessageID, c.link.MessageID)
	}
	// Used before a restart: not served after it.
	n.Restart("hd-1")
	time.Sleep(200 * time.Millisecond)
	if !c.gone() {
		t.Error("a used link is served again after a restart")
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
