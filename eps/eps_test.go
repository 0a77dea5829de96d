package eps_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay/relaytest"
)

const testNet = "kurier.test"

// network: one relay, a health office hd-1 (software polls) and a vendor
// vendor-a (software takes callbacks), each with its own endpoint server
// reachable only through its private proxy.
type network struct {
	ca    *pkitest.CA
	relay *relaytest.Relay
	tap   *tap // between the endpoint servers and the relay's public port
	dir   []byte
	eps   map[string]*member
}

type member struct {
	name  string
	cert  *tls.Certificate
	seal  pki.SealPrivateKey
	web   *pki.SealPrivateKey // a health office's key for one-time links
	wcert *tls.Certificate    // the links' page certificate
	srv   *eps.Server
	api   string // local API URL
	store string // store file
	// software side
	calls chan map[string]any // callbacks the vendor's software received
}

func mustID(t testing.TB, c *tls.Certificate) *pki.Identity {
	t.Helper()
	id, err := pki.NewIdentity(c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newNetwork(t *testing.T) *network {
	t.Helper()
	ca := pkitest.NewCA(t, testNet, time.Now())
	n := &network{ca: ca, relay: relaytest.Listen(t, ca, "r1"), eps: map[string]*member{}}
	n.tap = newTap(t, n.relay.Endpoints.Public)
	var members []pki.Member
	add := func(name string, role pki.Role, services ...string) *member {
		m := &member{name: name, cert: ca.Issue(t, role, name), calls: make(chan map[string]any, 256)}
		var err error
		if m.seal, err = pki.NewSealKey("s1"); err != nil {
			t.Fatal(err)
		}
		e := pkitest.Member(m.cert, name, services...)
		e.SealKeys = []pki.SealKey{m.seal.Public()}
		if role == pki.RoleHealthOffice {
			k, err := pki.NewWebSealKey("w1")
			if err != nil {
				t.Fatal(err)
			}
			m.web = &k
			e.SealKeys = append(e.SealKeys, k.Public())
			m.wcert = ca.IssueWith(t, role, name, pkitest.Options{DNSNames: []string{"*." + name + "." + testNet}, KeyType: pkitest.P256}) // browsers: no Ed25519
		}
		members = append(members, e)
		n.eps[name] = m
		return m
	}
	add("hd-1", pki.RoleHealthOffice, "submit")
	add("vendor-a", pki.RoleProvider, "guest-lists", "admin")
	// A member of role service that never runs: it is listed, so the
	// documented _directory result must allow its role.
	index := pkitest.Member(ca.Issue(t, pki.RoleService, "index"), "Location index", "location-search")
	d := ca.Directory(append(members, index, n.relay.Member())...)
	d.Permissions = []pki.Permission{
		{Caller: "role:health-office", Callee: "role:provider", Services: []string{"guest-lists"}},
		{Caller: "role:provider", Callee: "role:health-office", Services: []string{"submit"}},
	}
	n.dir = ca.Sign(t, d)
	n.relay.Serve(t, pki.Trust{Roots: ca.Roots, Directory: n.verifier(t)}, nil)
	n.start(t, n.eps["hd-1"], "")
	n.start(t, n.eps["vendor-a"], vendorSoftware(t, n.eps["vendor-a"]))
	return n
}

func (n *network) verifier(t testing.TB) *pki.Verifier {
	v := n.ca.Verifier(t, nil)
	if _, err := v.Update(n.dir); err != nil {
		t.Fatal(err)
	}
	return v
}

// start runs a member's endpoint server with its private proxy.
func (n *network) start(t *testing.T, m *member, callback string) {
	t.Helper()
	trust := pki.Trust{Roots: n.ca.Roots, Directory: n.verifier(t)}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("member", m.name)
	m.store = filepath.Join(t.TempDir(), "eps.db")
	st, err := store.Open(store.Config{Path: m.store})
	if err != nil {
		t.Fatal(err)
	}
	cfg := eps.Config{
		Identity: mustID(t, m.cert), Trust: trust, SealKeys: []pki.SealPrivateKey{m.seal}, Store: st,
		Relays: func() []string { return []string{n.tap.addr} }, Callback: callback,
		RetryMin: 50 * time.Millisecond, RetryMax: time.Second, Logger: log,
	}
	if m.web != nil {
		cfg.SealKeys = append(cfg.SealKeys, *m.web)
		cfg.Links = &eps.LinkConfig{Certificate: m.wcert, Key: *m.web}
	}
	ep, err := eps.NewEndpoint(cfg, proxy.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m.srv = ep.Server
	ctx, cancel := context.WithCancel(context.Background())
	lln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m.api = "http://" + lln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := ep.Serve(ctx, lln); err != nil {
			t.Errorf("%s: Serve = %v", m.name, err)
		}
	})
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := ep.Server.Shutdown(sctx); err != nil {
			t.Errorf("%s: Shutdown = %v", m.name, err)
		}
		ep.Close()
		cancel()
		wg.Wait()
		st.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for ep.Registered() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("route not registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// vendorSoftware is the vendor's own software: it answers guest-lists
// calls and records every callback.
func vendorSoftware(t *testing.T, m *member) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID     string          `json:"id"`
			Method string          `json:"method"`
			Params json.RawMessage `json:"params"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		rec := map[string]any{
			"from": r.Header.Get("Kurier-From"), "kind": r.Header.Get("Kurier-Kind"),
			"message_id": r.Header.Get("Kurier-Message-Id"), "correlation_id": r.Header.Get("Kurier-Correlation-Id"),
			"method": req.Method, "params": string(req.Params),
		}
		select {
		case m.calls <- rec:
		default:
		}
		var result any = map[string]any{"ok": true}
		if req.Method == "guest-lists" {
			var p map[string]any
			json.Unmarshal(req.Params, &p)
			result = map[string]any{"caller": r.Header.Get("Kurier-From"), "echo": p, "guests": []string{"Erika Mustermann"}}
		}
		json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": req.ID, "result": result})
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func client(m *member) *jsonrpc.Client { return &jsonrpc.Client{URL: m.api} }

func TestSyncCallThroughRelay(t *testing.T) {
	n := newNetwork(t)
	office := client(n.eps["hd-1"])
	var res struct {
		Caller string         `json:"caller"`
		Echo   map[string]any `json:"echo"`
		Guests []string       `json:"guests"`
	}
	// A payload that claims to come from someone else: ignored, the caller
	// is the verified certificate.
	params := map[string]any{"location": "Café Rot", "from": "vendor-b", "caller": "spiffe://kurier.test/provider/vendor-b"}
	if err := office.Call(t.Context(), "vendor-a.guest-lists", params, &res); err != nil {
		t.Fatal(err)
	}
	if res.Caller != "hd-1" || len(res.Guests) != 1 || res.Echo["location"] != "Café Rot" {
		t.Fatalf("result %+v", res)
	}
	cb := <-n.eps["vendor-a"].calls
	if cb["from"] != "hd-1" || cb["kind"] != "request" {
		t.Errorf("vendor software saw %+v", cb)
	}
}

func TestPermissions(t *testing.T) {
	n := newNetwork(t)
	office, vendor := client(n.eps["hd-1"]), client(n.eps["vendor-a"])
	for _, tt := range []struct {
		name   string
		c      *jsonrpc.Client
		method string
		code   int
	}{
		{"service the office may not call", office, "vendor-a.admin", jsonrpc.CodeNotAllowed},
		{"service not offered", office, "vendor-a.nonsense", jsonrpc.CodeNotAllowed},
		{"vendor calls office's guest-lists", vendor, "hd-1.guest-lists", jsonrpc.CodeNotAllowed},
		{"unknown member", office, "nobody.guest-lists", jsonrpc.CodeUnknownMember},
		{"bad method", office, "nodot", jsonrpc.CodeMethodNotFound},
		{"reserved rpc method", office, "rpc.discover", jsonrpc.CodeMethodNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Call(t.Context(), tt.method, map[string]any{}, nil)
			var e *jsonrpc.Error
			if !errors.As(err, &e) || e.Code != tt.code {
				t.Errorf("Call(%s) = %v, want code %d", tt.method, err, tt.code)
			}
		})
	}
}

func TestParallelCallersNumberingIDs(t *testing.T) {
	n := newNetwork(t)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			c := client(n.eps["hd-1"]) // ids 1, 2, 3 … per caller
			for j := range 3 {
				var res struct {
					Echo map[string]any `json:"echo"`
				}
				if err := c.Call(context.Background(), "vendor-a.guest-lists", map[string]any{"caller": float64(i), "n": float64(j)}, &res); err != nil {
					errs <- err
					return
				}
				if res.Echo["caller"] != float64(i) || res.Echo["n"] != float64(j) {
					errs <- errors.New("got another caller's answer")
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestAsyncRequestAndResponse(t *testing.T) {
	n := newNetwork(t)
	office, vendor := client(n.eps["hd-1"]), client(n.eps["vendor-a"])
	const marker = "MARKER-Erika-Mustermann-0172-5551234"
	var sent struct {
		MessageID string `json:"message_id"`
		Status    string `json:"status"`
	}
	if err := vendor.Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "params": map[string]any{"guest": marker}}, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.Status != "queued" || len(sent.MessageID) != 32 {
		t.Fatalf("_send = %+v", sent)
	}
	// The office's software polls, sees the message from vendor-a and
	// answers it.
	var polled struct {
		Messages []eps.Item `json:"messages"`
	}
	if err := office.Call(t.Context(), "_poll", map[string]any{"wait": 10}, &polled); err != nil {
		t.Fatal(err)
	}
	if len(polled.Messages) != 1 {
		t.Fatalf("polled %d messages, want 1", len(polled.Messages))
	}
	it := polled.Messages[0]
	if it.From != "vendor-a" || it.Kind != "request" || it.MessageID.String() != sent.MessageID || !strings.Contains(string(it.Params), marker) {
		t.Fatalf("polled item %+v", it)
	}
	var acked map[string]any
	if err := office.Call(t.Context(), "_ack", map[string]any{"message_id": it.MessageID, "from": it.From, "result": map[string]any{"case": "A-17"}}, &acked); err != nil {
		t.Fatal(err)
	}
	// The answer reaches the vendor's software as a response carrying the
	// request's id as correlation id.
	deadline := time.After(15 * time.Second)
	for {
		select {
		case cb := <-n.eps["vendor-a"].calls:
			if cb["kind"] != "response" {
				continue
			}
			if cb["from"] != "hd-1" || cb["correlation_id"] != sent.MessageID || !strings.Contains(cb["params"].(string), "A-17") {
				t.Fatalf("response callback %+v", cb)
			}
		case <-deadline:
			t.Fatal("no response reached the vendor's software")
		}
		break
	}
	// The vendor's endpoint server holds the office's signed receipt.
	var st map[string]any
	if err := vendor.Call(t.Context(), "_message", map[string]any{"message_id": sent.MessageID}, &st); err != nil {
		t.Fatal(err)
	}
	if st["status"] != "delivered" || st["receipt"] == nil {
		t.Errorf("_message = %v", st)
	}
	// No byte the relay carried, and no byte of either store, holds the
	// payload in the clear.
	if n.tap.contains([]byte(marker)) {
		t.Error("the marker crossed the relay in the clear")
	}
	for _, m := range n.eps {
		if b, _ := os.ReadFile(m.store); bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s's store holds the marker in the clear", m.name)
		}
	}
	if n.tap.bytes() == 0 {
		t.Error("the tap saw no traffic: the test proves nothing")
	}
}

// tap is a TCP forwarder in front of the relay's public port that keeps a
// copy of every byte in both directions.
type tap struct {
	addr string
	mu   sync.Mutex
	seen bytes.Buffer
}

func newTap(t *testing.T, target string) *tap {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tp := &tap{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				stop := context.AfterFunc(contextFrom(done), func() { c.Close(); up.Close() })
				defer stop()
				var inner sync.WaitGroup
				inner.Go(func() { io.Copy(io.MultiWriter(up, tp), c); up.(*net.TCPConn).CloseWrite() })
				io.Copy(io.MultiWriter(c, tp), up)
				c.(*net.TCPConn).CloseWrite()
				inner.Wait()
			})
		}
	})
	return tp
}

func contextFrom(done chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-done; cancel() }()
	return ctx
}

func (tp *tap) Write(b []byte) (int, error) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.seen.Write(b)
}

func (tp *tap) contains(b []byte) bool {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return bytes.Contains(tp.seen.Bytes(), b)
}

func (tp *tap) bytes() int {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	return tp.seen.Len()
}
