package eps

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
)

// TestAppendCallback: the hand-written callback request is the JSON-RPC
// request encoding/json would write for the same item.
func TestAppendCallback(t *testing.T) {
	env, err := seal.Parse([]byte(`{"v":1,"kem":32,"kdf":1,"aead":3,"key_id":"w1","enc":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","ct":"AAAAAAAAAAAAAAAAAAAAAA=="}`))
	if err != nil {
		t.Fatal(err)
	}
	id := store.NewID()
	base := Item{MessageID: id, From: "hd-1", Kind: "request", Service: "guest-lists", Deadline: time.Now()}
	for _, tc := range []struct {
		name   string
		edit   func(*Item)
		method string
		params any // nil: no params member
	}{
		{"object", func(it *Item) { it.Params = json.RawMessage(` {"a": [1, "ä"]}`) }, "guest-lists", map[string]any{"a": []any{1.0, "ä"}}},
		{"array", func(it *Item) { it.Params = json.RawMessage(`[true]`) }, "guest-lists", []any{true}},
		{"scalar goes without params", func(it *Item) { it.Params = json.RawMessage(`42`) }, "guest-lists", nil},
		{"none", func(it *Item) {}, "guest-lists", nil},
		{"status", func(it *Item) { it.Kind = "status"; it.Params = json.RawMessage(`{"state":"delivered"}`) }, "_status", map[string]any{"state": "delivered"}},
		{"sealed", func(it *Item) { it.Sealed = env }, "guest-lists", map[string]any{"sealed": mustJSON(t, env)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := base
			tc.edit(&it)
			b, err := appendCallback(nil, &it)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, b)
			}
			want := map[string]any{"jsonrpc": "2.0", "id": id.String(), "method": tc.method}
			if tc.params != nil {
				want["params"] = tc.params
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got  %v\nwant %v", got, want)
			}
		})
	}
	bad := base
	bad.Params = json.RawMessage(`{"a":`)
	if b, err := appendCallback(nil, &bad); err == nil {
		t.Fatalf("an invalid payload became %s", b)
	}
	bad = base
	bad.Service = `x","method":"_ping`
	if b, err := appendCallback(nil, &bad); err == nil {
		t.Fatalf("a service name that needs escaping became %s", b)
	}
}

func mustJSON(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
