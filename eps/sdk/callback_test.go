package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/sdk"
)

// delivery is a callback as the endpoint server sends it (eps.Server's
// callback).
type delivery struct {
	id, from, kind, service, method, corr string
	params                                string
	token                                 string
	deadline                              time.Time
}

func request(id, from string) delivery {
	return delivery{id: id, from: from, kind: "request", service: "submit", method: "submit", params: `{"guest":"Erika"}`, token: cbToken, deadline: time.Now().Add(time.Hour)}
}

func (d delivery) httpRequest() *http.Request {
	body := fmt.Sprintf(`{"jsonrpc":"2.0","id":%q,"method":%q,"params":%s}`, d.id, d.method, d.params)
	r := httptest.NewRequest(http.MethodPost, "/kurier", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	set := func(k, v string) {
		if v != "" {
			r.Header.Set(k, v)
		}
	}
	set("Kurier-From", d.from)
	set("Kurier-Message-Id", d.id)
	set("Kurier-Kind", d.kind)
	set("Kurier-Service", d.service)
	set("Kurier-Correlation-Id", d.corr)
	if !d.deadline.IsZero() {
		set("Kurier-Deadline", d.deadline.UTC().Format(time.RFC3339))
	}
	if d.token != "" {
		set("Authorization", "Bearer "+d.token)
	}
	return r
}

// serve delivers d to h and returns the status and the decoded answer.
func serve(t *testing.T, h http.Handler, d delivery) (int, jsonrpc.Response) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, d.httpRequest())
	var resp jsonrpc.Response
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		t.Fatalf("answer %q (HTTP %d) is not a JSON-RPC response: %v", w.Body, w.Code, err)
	}
	return w.Code, resp
}

const (
	id1 = "0123456789abcdef0123456789abcdef"
	id2 = "fedcba9876543210fedcba9876543210"
)

func TestCallbackRequests(t *testing.T) {
	var from atomic.Value
	mx := &sdk.Mux{Logger: testLogger(t)}
	mx.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		from.Store(m.From)
		var p map[string]string
		if err := m.Decode(&p); err != nil {
			return nil, err
		}
		switch p["do"] {
		case "retry":
			return nil, fmt.Errorf("database down: %w", sdk.ErrRetry)
		case "rpc-error":
			return nil, &jsonrpc.Error{Code: -31000, Message: "custom"}
		}
		return map[string]string{"from": m.From}, nil
	})
	h := mx.Handler(sdk.CallbackOptions{Token: cbToken})
	for _, tt := range []struct {
		name       string
		change     func(*delivery)
		wantStatus int
		wantCode   int    // JSON-RPC error code, 0 for a result
		wantResult string // if wantCode is 0
	}{
		{"ok", func(d *delivery) {}, 200, 0, `{"from":"vendor-a"}`},
		{"payload claims another sender", func(d *delivery) { d.params = `{"from":"vendor-b","Kurier-From":"vendor-b"}` }, 200, 0, `{"from":"vendor-a"}`},
		{"no token", func(d *delivery) { d.token = "" }, 401, jsonrpc.CodeNotAllowed, ""},
		{"wrong token", func(d *delivery) { d.token = cbToken + "x" }, 401, jsonrpc.CodeNotAllowed, ""},
		{"no sender", func(d *delivery) { d.from = "" }, 400, jsonrpc.CodeInvalidRequest, ""},
		{"sender not a member name", func(d *delivery) { d.from = "Vendor B" }, 400, jsonrpc.CodeInvalidRequest, ""},
		{"another message id", func(d *delivery) { d.id = id2; d.params = `{}` }, 200, 0, `{"from":"vendor-a"}`},
		{"method differs from the service", func(d *delivery) { d.method = "other" }, 400, jsonrpc.CodeInvalidRequest, ""},
		{"no deadline", func(d *delivery) { d.deadline = time.Time{} }, 400, jsonrpc.CodeInvalidRequest, ""},
		{"unknown kind", func(d *delivery) { d.kind = "gossip" }, 400, jsonrpc.CodeInvalidRequest, ""},
		{"response without correlation id", func(d *delivery) { d.kind = "response" }, 400, jsonrpc.CodeInvalidRequest, ""},
		{"no handler", func(d *delivery) { d.service, d.method = "other", "other" }, 200, jsonrpc.CodeMethodNotFound, ""},
		{"params of the wrong shape", func(d *delivery) { d.params = `[1,2]` }, 200, jsonrpc.CodeInvalidParams, ""},
		{"handler asks to retry", func(d *delivery) { d.params = `{"do":"retry"}` }, 503, jsonrpc.CodeInternalError, ""},
		{"handler's JSON-RPC error", func(d *delivery) { d.params = `{"do":"rpc-error"}` }, 200, -31000, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := request(id1, "vendor-a")
			tt.change(&d)
			status, resp := serve(t, h, d)
			if status != tt.wantStatus {
				t.Errorf("HTTP status %d, want %d", status, tt.wantStatus)
			}
			switch {
			case tt.wantCode != 0 && (resp.Error == nil || resp.Error.Code != tt.wantCode):
				t.Errorf("answer %+v, want error %d", resp, tt.wantCode)
			case tt.wantCode == 0 && string(resp.Result) != tt.wantResult:
				t.Errorf("result %s, want %s (error %v)", resp.Result, tt.wantResult, resp.Error)
			}
			if tt.wantStatus == 200 && !resp.ID.Equal(jsonrpc.StringID(d.id)) {
				t.Errorf("answer id %s, want %q", resp.ID, d.id)
			}
		})
	}
	if got := from.Load(); got != "vendor-a" {
		t.Errorf("the handler saw sender %v", got)
	}

	// The id check: a request whose JSON-RPC id is not the message id.
	d := request(id1, "vendor-a")
	r := d.httpRequest()
	r.Header.Set("Kurier-Message-Id", id2)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 400 {
		t.Errorf("id mismatch: HTTP %d, want 400", w.Code)
	}
}

func TestCallbackTokenRequired(t *testing.T) {
	mx := &sdk.Mux{Logger: testLogger(t)}
	mx.Handle("submit", func(context.Context, *sdk.Message) (any, error) { return "ok", nil })
	d := request(id1, "vendor-a")
	if status, _ := serve(t, mx.Handler(sdk.CallbackOptions{}), d); status != 401 {
		t.Errorf("no Token configured: HTTP %d, want 401", status)
	}
	d.token = ""
	if status, resp := serve(t, mx.Handler(sdk.CallbackOptions{NoToken: true}), d); status != 200 || string(resp.Result) != `"ok"` {
		t.Errorf("NoToken: HTTP %d, %+v", status, resp)
	}
	w := httptest.NewRecorder()
	mx.Handler(sdk.CallbackOptions{Token: cbToken}).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: HTTP %d", w.Code)
	}
	big := request(id1, "vendor-a")
	big.params = `{"x":"` + strings.Repeat("x", 2<<10) + `"}`
	if status, _ := serve(t, mx.Handler(sdk.CallbackOptions{Token: cbToken, MaxBody: 1 << 10}), big); status != http.StatusRequestEntityTooLarge {
		t.Errorf("too large: HTTP %d", status)
	}
}

// TestCallbackOtherKinds: notifications, responses and status reports go
// to their handlers and get a null result.
func TestCallbackOtherKinds(t *testing.T) {
	got := make(chan string, 8)
	mx := &sdk.Mux{Logger: testLogger(t)}
	mx.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		got <- "notification " + string(m.Kind)
		return "ignored", nil
	})
	mx.HandleResponse("submit", func(ctx context.Context, m *sdk.Message) error {
		var res map[string]string
		if err := m.Result(&res); err != nil {
			return err
		}
		got <- "response " + m.CorrelationID.String() + " " + res["case"]
		return nil
	})
	mx.HandleStatus(func(ctx context.Context, r *sdk.Report) error {
		got <- "status " + r.MessageID.String() + " " + string(r.State)
		return nil
	})
	h := mx.Handler(sdk.CallbackOptions{Token: cbToken})
	for _, tt := range []struct {
		d    delivery
		want string
	}{
		{delivery{id: id1, from: "vendor-a", kind: "notification", service: "submit", method: "submit", params: `{}`}, "notification notification"},
		{delivery{id: id1, from: "vendor-a", kind: "response", service: "submit", method: "submit", corr: id2, params: `{"result":{"case":"A-1"}}`}, "response " + id2 + " A-1"},
		{delivery{id: id1, from: "hd-1", kind: "status", service: "submit", method: "_status", params: `{"message_id":"` + id2 + `","to":"vendor-a","service":"submit","status":"delivered"}`}, "status " + id2 + " delivered"},
	} {
		tt.d.token, tt.d.deadline = cbToken, time.Now().Add(time.Hour)
		status, resp := serve(t, h, tt.d)
		if status != 200 || string(resp.Result) != "null" {
			t.Errorf("%s: HTTP %d, %+v", tt.d.kind, status, resp)
		}
		if s := receive(t, got, tt.d.kind); s != tt.want {
			t.Errorf("handler saw %q, want %q", s, tt.want)
		}
	}
}

// TestDedupAcrossRestarts: the same delivery twice, and again after the
// software restarted (the dedup file reopened), runs the handler once and
// gets the same answer each time; the same id from another sender is
// another message.
func TestDedupAcrossRestarts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dedup.db")
	var runs atomic.Int32
	software := func(d *sdk.Dedup) http.Handler {
		mx := &sdk.Mux{Dedup: d, Logger: testLogger(t)}
		mx.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
			n := runs.Add(1)
			if n == 2 {
				return nil, sdk.NewError(4002, "second run refused", nil)
			}
			return map[string]any{"case": "A-17", "run": n}, nil
		})
		return mx.Handler(sdk.CallbackOptions{Token: cbToken})
	}
	d, err := sdk.OpenDedup(path)
	if err != nil {
		t.Fatal(err)
	}
	h := software(d)
	_, first := serve(t, h, request(id1, "vendor-a"))
	_, again := serve(t, h, request(id1, "vendor-a"))
	d.Close()

	d2 := openDedup(t, path)
	_, afterRestart := serve(t, software(d2), request(id1, "vendor-a"))
	if r := runs.Load(); r != 1 {
		t.Errorf("the handler ran %d times, want 1", r)
	}
	for _, resp := range []jsonrpc.Response{again, afterRestart} {
		if string(resp.Result) != string(first.Result) || string(first.Result) != `{"case":"A-17","run":1}` {
			t.Errorf("answers %s, %s; want the first answer %s", again.Result, afterRestart.Result, first.Result)
		}
	}

	// An error answer is recorded too.
	_, other := serve(t, software(d2), request(id1, "vendor-b"))
	_, otherAgain := serve(t, software(d2), request(id1, "vendor-b"))
	if other.Error == nil || other.Error.Code != 4002 || otherAgain.Error == nil || otherAgain.Error.Code != 4002 || runs.Load() != 2 {
		t.Errorf("another sender's message: %+v then %+v after %d runs", other, otherAgain, runs.Load())
	}
	for _, from := range []string{"vendor-a", "vendor-b"} {
		if ok, err := d2.Handled(from, mustID(t, id1)); !ok || err != nil {
			t.Errorf("Handled(%s) = %v, %v", from, ok, err)
		}
	}
	if ok, _ := d2.Handled("vendor-c", mustID(t, id1)); ok {
		t.Error("Handled for a sender that sent nothing")
	}
}

// TestDedupUpdate: a handler's writes in Dedup.Update commit together with
// the record. A crash after the commit (simulated: the file is closed and
// reopened) leaves a message that is answered from the record and whose
// effect is not repeated; an Update that fails leaves no trace.
func TestDedupUpdate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	cases := []byte("cases")
	var runs atomic.Int32
	software := func(d *sdk.Dedup) http.Handler {
		mx := &sdk.Mux{Dedup: d, Logger: testLogger(t)}
		mx.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
			runs.Add(1)
			var p map[string]string
			if err := m.Decode(&p); err != nil {
				return nil, err
			}
			_, err := d.Update(ctx, func(tx *bolt.Tx) (any, error) {
				b, err := tx.CreateBucketIfNotExists(cases)
				if err != nil {
					return nil, err
				}
				if err := b.Put([]byte(m.ID.String()), []byte(p["guest"])); err != nil {
					return nil, err
				}
				if p["guest"] == "fail" {
					return nil, fmt.Errorf("%w: refused", sdk.ErrInvalidParams)
				}
				return map[string]int{"cases": count(b)}, nil
			})
			if err != nil {
				return nil, err
			}
			if _, err := d.Update(ctx, func(*bolt.Tx) (any, error) { return nil, nil }); err == nil {
				t.Error("a second Update for one message succeeded")
			}
			// Whatever the handler returns after Update, the recorded
			// answer stands: here the crash right after the commit.
			return nil, errors.New("crashed after the commit")
		})
		return mx.Handler(sdk.CallbackOptions{Token: cbToken})
	}
	d, err := sdk.OpenDedup(path)
	if err != nil {
		t.Fatal(err)
	}
	_, first := serve(t, software(d), request(id1, "vendor-a"))
	failed := request(id2, "vendor-a")
	failed.params = `{"guest":"fail"}`
	_, refused := serve(t, software(d), failed)
	d.Close()

	d2 := openDedup(t, path)
	_, again := serve(t, software(d2), request(id1, "vendor-a"))
	if string(first.Result) != `{"cases":1}` || string(again.Result) != string(first.Result) {
		t.Errorf("answers %+v then %+v, want {\"cases\":1} twice", first, again)
	}
	if refused.Error == nil || refused.Error.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("failed Update answered %+v", refused)
	}
	if r := runs.Load(); r != 2 {
		t.Errorf("the handler ran %d times, want 2 (once per message)", r)
	}
	err = d2.DB().View(func(tx *bolt.Tx) error {
		b := tx.Bucket(cases)
		if b == nil || count(b) != 1 || string(b.Get([]byte(id1))) != "Erika" || b.Get([]byte(id2)) != nil {
			return errors.New("the cases bucket does not hold exactly the one committed case")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if ok, _ := d2.Handled("vendor-a", mustID(t, id2)); !ok {
		t.Error("the refused message's error answer was not recorded")
	}

	// Outside a handler Update is a plain transaction.
	res, err := d2.Update(t.Context(), func(tx *bolt.Tx) (any, error) { return count(tx.Bucket(cases)), nil })
	if err != nil || res != 1 {
		t.Errorf("plain Update = %v, %v", res, err)
	}
}

func mustID(t *testing.T, s string) sdk.MessageID {
	t.Helper()
	id, err := sdk.ParseMessageID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func count(b *bolt.Bucket) int {
	n := 0
	b.ForEach(func(k, v []byte) error { n++; return nil })
	return n
}
