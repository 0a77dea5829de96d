package epstest_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/pki"
)

type sent struct {
	MessageID string `json:"message_id"`
}

type polled struct {
	Messages []eps.Item `json:"messages"`
}

// poll long-polls m's local API until a message of kind arrives.
func poll(t *testing.T, c *jsonrpc.Client, kind string) eps.Item {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var p polled
		if err := c.Call(t.Context(), "_poll", map[string]any{"wait": 5}, &p); err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Messages {
			if it.Kind == kind {
				return it
			}
		}
	}
	t.Fatalf("no %s arrived", kind)
	return eps.Item{}
}

// waitStatus polls _message until the message reaches state.
func waitStatus(t *testing.T, c *jsonrpc.Client, id, state string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var st struct {
			Status string `json:"status"`
		}
		if err := c.Call(t.Context(), "_message", map[string]any{"message_id": id}, &st); err != nil {
			t.Fatal(err)
		}
		if st.Status == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s is %s, want %s", id, st.Status, state)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition
	}
}

// TestDefaultNetwork sends a message from the vendor to the office and an
// answer back, with the tap recording the relay's traffic.
func TestDefaultNetwork(t *testing.T) {
	n := epstest.New(t, epstest.Options{Tap: true})
	office, vendor := n.Member("hd-1").Client(), n.Member("vendor-a").Client()
	const marker = "MARKER-epstest-4711"
	var s sent
	if err := vendor.Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "params": map[string]any{"m": marker}}, &s); err != nil {
		t.Fatal(err)
	}
	it := poll(t, office, "request")
	if it.From != "vendor-a" || it.MessageID.String() != s.MessageID || !bytes.Contains(it.Params, []byte(marker)) {
		t.Fatalf("polled %+v", it)
	}
	if err := office.Call(t.Context(), "_ack", map[string]any{"message_id": it.MessageID, "from": it.From, "result": "ok"}, nil); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, vendor, s.MessageID, "delivered")
	resp := poll(t, vendor, "response")
	if resp.From != "hd-1" || resp.CorrelationID == nil || resp.CorrelationID.String() != s.MessageID {
		t.Errorf("response %+v", resp)
	}
	if n.Tap().Len() == 0 {
		t.Fatal("the tap saw no traffic")
	}
	if n.Tap().Contains([]byte(marker)) {
		t.Error("the marker crossed the relay in the clear")
	}
	for _, m := range n.Members() {
		if b, err := os.ReadFile(m.StorePath()); err != nil || bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s's store: read error %v, or holds the marker in the clear", m.Name(), err)
		}
	}
}

// TestPermissionsAndDirectory: the default permissions are role-based both
// ways, and the accessors describe the members.
func TestPermissionsAndDirectory(t *testing.T) {
	n := epstest.New(t, epstest.Options{})
	office := n.Member("hd-1")
	if office.ID() != (pki.ID{Network: epstest.DefaultNetwork, Role: pki.RoleHealthOffice, Name: "hd-1"}) {
		t.Errorf("ID = %v", office.ID())
	}
	if office.Cert() == nil || office.SealKey().Key == nil || office.API() == "" || office.StorePath() == "" || office.Server() == nil {
		t.Error("an accessor returned nothing")
	}
	var dir struct {
		Self    string `json:"self"`
		Members []struct {
			Name     string   `json:"name"`
			Callable []string `json:"callable"`
		} `json:"members"`
	}
	if err := office.Client().Call(t.Context(), "_directory", nil, &dir); err != nil {
		t.Fatal(err)
	}
	callable := map[string][]string{}
	for _, m := range dir.Members {
		callable[m.Name] = m.Callable
	}
	if dir.Self != "hd-1" || len(callable["vendor-a"]) != 1 || callable["vendor-a"][0] != "guest-lists" || len(callable["hd-1"]) != 0 {
		t.Errorf("_directory for hd-1: self %q, callable %v", dir.Self, callable)
	}
	err := office.Client().Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit"}, nil)
	if e, ok := errors.AsType[*jsonrpc.Error](err); !ok || e.Code != jsonrpc.CodeNotAllowed {
		t.Errorf("office sends to its own role: %v, want not allowed", err)
	}
}

// TestRestartKeepsStoreAndAddress: a message queued for an offline member
// survives the sender's restart and is delivered once the member starts;
// the local API keeps its address.
func TestRestartKeepsStoreAndAddress(t *testing.T) {
	ms := epstest.DefaultMembers()
	ms[0].Offline = true
	ms[1].Token = "vendor-secret"
	n := epstest.New(t, epstest.Options{Members: ms})
	vendor := n.Member("vendor-a")
	api := vendor.API()
	var s sent
	if err := vendor.Client().Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "params": []int{1}}, &s); err != nil {
		t.Fatal(err)
	}
	n.Restart("vendor-a")
	if vendor.API() != api {
		t.Errorf("API moved from %s to %s", api, vendor.API())
	}
	if err := (&jsonrpc.Client{URL: vendor.API()}).Call(t.Context(), "_ping", nil, nil); err == nil {
		t.Error("the local API answered without the token")
	}
	n.Start("hd-1")
	waitStatus(t, vendor.Client(), s.MessageID, "delivered")
	if it := poll(t, n.Member("hd-1").Client(), "request"); it.MessageID.String() != s.MessageID {
		t.Errorf("hd-1 received %s, want %s", it.MessageID, s.MessageID)
	}
}

// TestRestartRelay: after the relay restarts on the same addresses the
// members register again and messages flow.
func TestRestartRelay(t *testing.T) {
	n := epstest.New(t, epstest.Options{Tap: true})
	vendor := n.Member("vendor-a").Client()
	send := func() string {
		var s sent
		if err := vendor.Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "params": map[string]any{}}, &s); err != nil {
			t.Fatal(err)
		}
		return s.MessageID
	}
	waitStatus(t, vendor, send(), "delivered")
	n.RestartRelay()
	waitStatus(t, vendor, send(), "delivered")
	n.RestartRelay() // twice: the restarted relay restarts too
	waitStatus(t, vendor, send(), "delivered")
}

// TestCallback: a member's software given as an http.Handler receives the
// endpoint server's callbacks with the token.
func TestCallback(t *testing.T) {
	got := make(chan http.Header, 1)
	ms := epstest.DefaultMembers()
	ms[1].CallbackToken = "cb-secret"
	ms[1].Callback = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID any `json:"id"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		select {
		case got <- r.Header.Clone():
		default:
		}
		json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": []string{"Erika"}})
	})
	n := epstest.New(t, epstest.Options{Members: ms})
	var res []string
	if err := n.Member("hd-1").Client().Call(t.Context(), "vendor-a.guest-lists", map[string]any{}, &res); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if len(res) != 1 || h.Get("Kurier-From") != "hd-1" || h.Get("Authorization") != "Bearer cb-secret" {
		t.Errorf("result %v, callback headers %v", res, h)
	}
	if n.Member("vendor-a").CallbackURL() == "" || n.Member("hd-1").CallbackURL() != "" {
		t.Error("CallbackURL wrong")
	}
}
