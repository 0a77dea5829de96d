package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
)

func TestClientCall(t *testing.T) {
	url, hc := startHTTP(t, specHandler, Options{Token: testToken})
	c := &Client{URL: url, HTTPClient: hc, Token: testToken}

	var got int
	if err := c.Call(t.Context(), "subtract", []int{42, 23}, &got); err != nil || got != 19 {
		t.Errorf("Call(subtract [42 23]) = %d, %v; want 19", got, err)
	}
	if err := c.Call(t.Context(), "subtract", map[string]int{"minuend": 42, "subtrahend": 23}, &got); err != nil || got != 19 {
		t.Errorf("Call(subtract {42 23}) = %d, %v; want 19", got, err)
	}
	var data []any
	if err := c.Call(t.Context(), "get_data", nil, &data); err != nil || fmt.Sprint(data) != "[hello 5]" {
		t.Errorf("Call(get_data) = %v, %v", data, err)
	}
	if err := c.Call(t.Context(), "get_data", []int(nil), nil); err != nil { // nil slice: no params
		t.Errorf("Call(get_data, nil slice): %v", err)
	}

	err := c.Call(t.Context(), "foobar", nil, nil)
	if e, ok := err.(*Error); !ok || e.Code != CodeMethodNotFound {
		t.Errorf("Call(foobar) = %v, want *Error %d", err, CodeMethodNotFound)
	}
	if err := c.Call(t.Context(), "sum", "not structured", nil); err == nil {
		t.Error("Call with string params succeeded")
	}
	var s string
	if err := c.Call(t.Context(), "sum", []int{1}, &s); err == nil {
		t.Error("Call decoding a number into a string succeeded")
	}
	if err := c.Notify(t.Context(), "update", []int{1, 2}); err != nil {
		t.Errorf("Notify: %v", err)
	}
	if n := c.lastID.Load(); n != 7 {
		t.Errorf("client used %d ids, want 7: one per Call", n)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Call(ctx, "sum", []int{1}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Call with a canceled context: %v", err)
	}
}

func TestClientBatch(t *testing.T) {
	url, hc := startHTTP(t, specHandler, Options{MaxBatch: 10})
	c := &Client{URL: url, HTTPClient: hc}

	var sum, diff, taken int
	var data []any
	given := IntID(2) // the id the client would pick next: it must skip it
	str := StringID("1")
	elems := []BatchElem{
		{Method: "sum", Params: []int{1, 2, 4}, Result: &sum},
		{Method: "notify_hello", Params: []int{7}, Notification: true},
		{Method: "subtract", Params: []int{42, 23}, Result: &diff, ID: &str},
		{Method: "foo.get", Params: map[string]string{"name": "myself"}},
		{Method: "get_data", Result: &data, ID: &given},
		{Method: "sum", Params: []int{5}, Result: &taken},
	}
	if err := c.Batch(t.Context(), elems); err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if sum != 7 || diff != 19 || taken != 5 || fmt.Sprint(data) != "[hello 5]" {
		t.Errorf("results %d %d %d %v", sum, diff, taken, data)
	}
	for i, want := range []int{0, 0, 0, CodeMethodNotFound, 0, 0} {
		if e, _ := errors.AsType[*Error](elems[i].Error); (want == 0) != (elems[i].Error == nil) || e != nil && e.Code != want {
			t.Errorf("element %d: Error %v, want code %d", i, elems[i].Error, want)
		}
	}

	// Only notifications: nothing comes back, and that is fine.
	if err := c.Batch(t.Context(), []BatchElem{{Method: "a", Notification: true}, {Method: "b", Notification: true}}); err != nil {
		t.Errorf("Batch of notifications: %v", err)
	}

	// Refused as a whole.
	long := make([]BatchElem, 11)
	for i := range long {
		long[i].Method = "sum"
	}
	if err := c.Batch(t.Context(), long); !isCode(err, CodeInvalidRequest) {
		t.Errorf("Batch longer than MaxBatch: %v, want Invalid Request", err)
	}

	// Refused before sending.
	one := IntID(1)
	for name, elems := range map[string][]BatchElem{
		"empty":         nil,
		"duplicate ids": {{Method: "a", ID: &one}, {Method: "b", ID: new(IntID(1))}},
		"bad params":    {{Method: "a", Params: 1}},
	} {
		if err := c.Batch(t.Context(), elems); err == nil {
			t.Errorf("Batch %s succeeded", name)
		}
	}
}

func isCode(err error, code int) bool {
	e, ok := errors.AsType[*Error](err)
	return ok && e.Code == code
}

// TestClientBadResponses checks that the Client refuses responses that do
// not answer what it sent.
func TestClientBadResponses(t *testing.T) {
	var body atomic.Value // string the fake server answers with
	url, hc := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		b := body.Load().(string)
		if b == "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		w.Write([]byte(b))
	}))
	c := &Client{URL: url, HTTPClient: hc, MaxResponseBytes: 200}
	for _, tt := range []struct {
		name, resp string
		batch      bool
		wantCode   int // 0: want ErrBadResponse
	}{
		{"wrong id", `{"jsonrpc":"2.0","result":1,"id":99}`, false, 0},
		{"string id", `{"jsonrpc":"2.0","result":1,"id":"1"}`, false, 0},
		{"no content", ``, false, 0},
		{"not JSON-RPC", `{"result":1}`, false, 0},
		{"too large", `{"jsonrpc":"2.0","result":"` + string(make([]byte, 200)) + `","id":1}`, false, 0},
		{"error with null id", `{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}`, false, CodeParseError},
		{"batch: unknown id", `[{"jsonrpc":"2.0","result":1,"id":99}]`, true, 0},
		{"batch: answered twice", `[{"jsonrpc":"2.0","result":1,"id":1},{"jsonrpc":"2.0","result":1,"id":1}]`, true, 0},
		{"batch: missing answer", `[]`, true, 0},
		{"batch: no content", ``, true, 0},
		{"batch: single result", `{"jsonrpc":"2.0","result":1,"id":1}`, true, 0},
		{"batch: single error", `{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}`, true, CodeInvalidRequest},
		{"batch: null-id error", `[{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":null}]`, true, CodeInvalidRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c.lastID.Store(0) // the next id is 1
			body.Store(tt.resp)
			var err error
			if tt.batch {
				err = c.Batch(t.Context(), []BatchElem{{Method: "m"}})
			} else {
				err = c.Call(t.Context(), "m", nil, nil)
			}
			if tt.wantCode != 0 {
				if !isCode(err, tt.wantCode) {
					t.Errorf("got %v, want code %d", err, tt.wantCode)
				}
			} else if !errors.Is(err, ErrBadResponse) {
				t.Errorf("got %v, want ErrBadResponse", err)
			}
		})
	}
}

// TestParallelCallers runs 100 clients against one server, each numbering
// its ids 1, 2, 3, …, so the ids of different callers collide all the time.
// Every caller must get its own answers.
func TestParallelCallers(t *testing.T) {
	type call struct {
		Caller, Seq int
	}
	h := func(ctx context.Context, req *Request) (any, error) {
		var p call
		if err := json.Unmarshal(req.Params, &p); err != nil {
			return nil, NewError(CodeInvalidParams, err.Error())
		}
		return map[string]any{"caller": p.Caller, "seq": p.Seq, "id": req.ID}, nil
	}
	url, hc := startHTTP(t, h, Options{})
	const callers, calls = 100, 10
	var wg sync.WaitGroup
	for caller := range callers {
		wg.Go(func() {
			c := &Client{URL: url, HTTPClient: hc}
			type answer struct {
				Caller, Seq int
				ID          json.RawMessage
			}
			id := 0 // the last id this caller's client used
			for seq := 1; seq <= calls; seq++ {
				if seq%5 == 0 { // every fifth round trip is a batch of two
					var a, b answer
					err := c.Batch(t.Context(), []BatchElem{
						{Method: "echo", Params: call{caller, seq}, Result: &a},
						{Method: "echo", Params: call{caller, -seq}, Result: &b},
					})
					if err != nil || a.Caller != caller || a.Seq != seq || b.Caller != caller || b.Seq != -seq ||
						string(a.ID) != strconv.Itoa(id+1) || string(b.ID) != strconv.Itoa(id+2) {
						t.Errorf("caller %d batch %d: %+v %+v %v", caller, seq, a, b, err)
					}
					id += 2
					continue
				}
				var a answer
				err := c.Call(t.Context(), "echo", call{caller, seq}, &a)
				if id++; err != nil || a.Caller != caller || a.Seq != seq || string(a.ID) != strconv.Itoa(id) {
					t.Errorf("caller %d call %d: got %+v, %v", caller, seq, a, err)
				}
			}
		})
	}
	wg.Wait()
}
