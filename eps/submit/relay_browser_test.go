package submit_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/submit"
)

// TestBrowserThroughRelay: the office's software asks its endpoint server
// for a link; a citizen opens it in Chromium, which reaches the page
// through the real relay and the office's private proxy; the page seals in
// the browser, and the office's software receives the submission. The
// relay never sees the plaintext or the secret, and the link dies.
func TestBrowserThroughRelay(t *testing.T) {
	members := epstest.DefaultMembers()
	members[0].Links = true
	members[0].Services = append(members[0].Services, "index-cases")
	n := epstest.New(t, epstest.Options{Members: members, Tap: true})
	office := n.Member("hd-1")

	var link struct {
		URL       string `json:"url"`
		MessageID string `json:"message_id"`
	}
	if err := office.Client().Call(t.Context(), "_link", map[string]any{"ttl_seconds": 600, "display_name": "Gesundheitsamt Musterstadt"}, &link); err != nil {
		t.Fatalf("_link: %v", err)
	}
	u, err := url.Parse(link.URL)
	if err != nil {
		t.Fatal(err)
	}
	pin := sha256.Sum256(office.WebCert().Leaf.RawSubjectPublicKeyInfo)
	// Chromium resolves the link's host to the relay's host (the port is
	// the relay's, in the link) and trusts the test certificate by its key.
	relayHost := strings.Split(n.RelayPublic(), ":")[0]
	done := submit.SubmitInBrowser(t, link.URL, "Erika", "Zeugin-Qwxkvj",
		"--host-resolver-rules=MAP "+u.Hostname()+" "+relayHost,
		"--ignore-certificate-errors-spki-list="+base64.StdEncoding.EncodeToString(pin[:]))
	if !strings.Contains(done, "Vielen Dank") || !strings.Contains(done, "Gesundheitsamt Musterstadt") {
		t.Fatalf("confirmation: %q", done)
	}

	// The office's software gets it, opened by its endpoint server.
	deadline := time.Now().Add(15 * time.Second)
	var got *eps.Item
	for got == nil && time.Now().Before(deadline) {
		var polled struct {
			Messages []eps.Item `json:"messages"`
		}
		if err := office.Client().Call(t.Context(), "_poll", map[string]any{"wait": 5}, &polled); err != nil {
			t.Fatal(err)
		}
		for _, it := range polled.Messages {
			if it.Kind != "status" {
				got = &it
			}
		}
	}
	if got == nil {
		t.Fatal("the submission did not reach the office's software")
	}
	if got.From != "anonymous" || got.MessageID.String() != link.MessageID {
		t.Errorf("received %s from %s, want %s from anonymous", got.MessageID, got.From, link.MessageID)
	}
	sub, err := submit.ParseSubmission(got.Params)
	if err != nil {
		t.Fatalf("%v: %s", err, got.Params)
	}
	b, _ := json.Marshal(sub.Contacts)
	if len(sub.Contacts) != 1 || sub.Contacts[0].FirstName != "Erika" || sub.Contacts[0].LastName != "Zeugin-Qwxkvj" || sub.Contacts[0].Category != submit.CategoryHousehold {
		t.Errorf("contacts as received: %s", b)
	}
	if n.Tap().Contains([]byte("Zeugin-Qwxkvj")) {
		t.Error("the relay saw the submission in plaintext")
	}
	if n.Tap().Contains([]byte(u.Fragment)) {
		t.Error("the relay saw the link's secret")
	}
}
