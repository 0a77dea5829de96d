package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// elem is what a test expects of one decoded element.
type elem struct {
	invalid bool
	id      string // JSON text; "" means no ID
	method  string
	params  string
}

func TestDecodeRequests(t *testing.T) {
	for _, tt := range []struct {
		name      string
		body      string
		wantBatch bool
		wantErr   int // code of errResp, or 0
		want      []elem
	}{
		{"request", `{"jsonrpc":"2.0","method":"a.b","params":{"x":1},"id":"7"}`, false, 0,
			[]elem{{id: `"7"`, method: "a.b", params: `{"x":1}`}}},
		{"notification", `{"jsonrpc":"2.0","method":"n","params":[]}`, false, 0,
			[]elem{{method: "n", params: `[]`}}},
		{"null id", `{"jsonrpc":"2.0","method":"m","id":null}`, false, 0,
			[]elem{{id: `null`, method: "m"}}},
		{"member order free", `{"id":1,"params":[ 1 ],"method":"m","jsonrpc":"2.0"}`, false, 0,
			[]elem{{id: `1`, method: "m", params: `[ 1 ]`}}},
		{"escaped method", `{"jsonrpc":"2.0","method":"\u00e9\n","id":1}`, false, 0,
			[]elem{{id: `1`, method: "é\n"}}},
		{"batch of one", `[{"jsonrpc":"2.0","method":"m","id":1}]`, true, 0,
			[]elem{{id: `1`, method: "m"}}},
		{"batch", `[{"jsonrpc":"2.0","method":"m","id":1}, 5, {"jsonrpc":"2.0","method":"n"}, {"jsonrpc":"2.0","id":"x"}]`, true, 0,
			[]elem{{id: `1`, method: "m"}, {invalid: true}, {method: "n"}, {invalid: true, id: `"x"`}}},
		{"missing method", `{"jsonrpc":"2.0","id":1}`, false, 0, []elem{{invalid: true, id: `1`}}},
		{"missing version", `{"method":"m"}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"version 2", `{"jsonrpc":"2","method":"m"}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"version with space", `{"jsonrpc":"2.0 ","method":"m"}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"params number", `{"jsonrpc":"2.0","method":"m","params":1}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"params true", `{"jsonrpc":"2.0","method":"m","params":true}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"method null", `{"jsonrpc":"2.0","method":null}`, false, 0, []elem{{invalid: true}}},
		{"id array", `{"jsonrpc":"2.0","method":"m","id":[1]}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"unknown member", `{"jsonrpc":"2.0","method":"m","Method":"n"}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"duplicate version", `{"jsonrpc":"2.0","jsonrpc":"2.0","method":"m"}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"duplicate params", `{"jsonrpc":"2.0","method":"m","params":[],"params":{},"id":3}`, false, 0,
			[]elem{{invalid: true, id: `3`, method: "m", params: `{}`}}},
		{"duplicate id", `{"jsonrpc":"2.0","method":"m","id":1,"id":1}`, false, 0, []elem{{invalid: true, method: "m"}}},
		{"empty object", `{}`, false, 0, []elem{{invalid: true}}},
		{"array", `[]`, true, CodeInvalidRequest, nil},
		{"array with space", " [ \n ] ", true, CodeInvalidRequest, nil},
		{"invalid JSON", `{"jsonrpc":"2.0",}`, false, CodeParseError, nil},
		{"invalid in batch", `[{"jsonrpc":"2.0","method":"m","id":1},{]`, false, CodeParseError, nil},
		{"BOM", "\ufeff{}", false, CodeParseError, nil},
		{"only space", " ", false, CodeParseError, nil},
		{"lone surrogate is valid JSON", `{"jsonrpc":"2.0","method":"\ud800","id":1}`, false, 0,
			[]elem{{id: `1`, method: "\ufffd"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reqs, batch, errResp := DecodeRequests([]byte(tt.body))
			if batch != tt.wantBatch {
				t.Errorf("batch = %v, want %v", batch, tt.wantBatch)
			}
			if tt.wantErr != 0 {
				var r Response
				if err := json.Unmarshal(errResp, &r); err != nil || r.Error == nil || r.Error.Code != tt.wantErr || !r.ID.IsNull() || reqs != nil {
					t.Errorf("DecodeRequests = %v, %s; want only an error %d with id null", reqs, errResp, tt.wantErr)
				}
				return
			}
			if errResp != nil {
				t.Fatalf("errResp = %s", errResp)
			}
			if len(reqs) != len(tt.want) {
				t.Fatalf("got %d requests, want %d", len(reqs), len(tt.want))
			}
			for i, w := range tt.want {
				r := reqs[i]
				if (r.Err != nil) != w.invalid || r.Err != nil && r.Err.Code != CodeInvalidRequest {
					t.Errorf("%d: Err = %v, want invalid %v", i, r.Err, w.invalid)
				}
				gotID := ""
				if r.ID != nil {
					gotID = r.ID.String()
				}
				if gotID != w.id || r.Method != w.method || string(r.Params) != w.params {
					t.Errorf("%d: id %q method %q params %q; want %q %q %q", i, gotID, r.Method, r.Params, w.id, w.method, w.params)
				}
			}
		})
	}
}

func TestDecodeParamsAliasBody(t *testing.T) {
	body := []byte(`{"jsonrpc":"2.0","method":"m","params":[1]}`)
	reqs, _, _ := DecodeRequests(body)
	if &reqs[0].Params[0] != &body[bytes.IndexByte(body, '[')] {
		t.Error("Params does not alias the body")
	}
}

func TestRequestJSON(t *testing.T) {
	id := StringID("x")
	for _, tt := range []struct {
		name string
		req  Request
		want string
	}{
		{"request", Request{ID: &id, Method: "m", Params: json.RawMessage(`{"a":1}`)}, `{"jsonrpc":"2.0","method":"m","params":{"a":1},"id":"x"}`},
		{"notification", Request{Method: "m"}, `{"jsonrpc":"2.0","method":"m"}`},
		{"null id", Request{ID: new(ID), Method: "m"}, `{"jsonrpc":"2.0","method":"m","id":null}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(tt.req)
			if err != nil || string(got) != tt.want {
				t.Fatalf("Marshal = %s, %v; want %s", got, err, tt.want)
			}
			var back Request
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if back.Method != tt.req.Method || string(back.Params) != string(tt.req.Params) ||
				(back.ID == nil) != (tt.req.ID == nil) || back.ID != nil && !back.ID.Equal(*tt.req.ID) {
				t.Errorf("round trip = %+v, want %+v", back, tt.req)
			}
		})
	}
	if _, err := json.Marshal(Request{Method: "m", Params: json.RawMessage(`"s"`)}); err == nil {
		t.Error("Marshal accepted string params")
	}
	var r Request
	err := json.Unmarshal([]byte(`{"jsonrpc":"2.0","method":"m","x":1}`), &r)
	if e, ok := errors.AsType[*Error](err); !ok || e.Code != CodeInvalidRequest {
		t.Errorf("Unmarshal of an invalid request: %v, want Invalid Request", err)
	}
}

func TestResponseJSON(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // "" means refused; else what it marshals back to
	}{
		{`{"jsonrpc":"2.0","result":1,"id":1}`, `{"jsonrpc":"2.0","result":1,"id":1}`},
		{`{"id":"a","result":null,"jsonrpc":"2.0"}`, `{"jsonrpc":"2.0","result":null,"id":"a"}`},
		{`{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":null}`, `{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":null}`},
		{`{"jsonrpc":"2.0","error":{"code":1,"message":"m","data":[1, 2]},"id":1}`, `{"jsonrpc":"2.0","error":{"code":1,"message":"m","data":[1,2]},"id":1}`}, // json.Marshal compacts,
		{`{"jsonrpc":"2.0","result":1}`, ``},                                         // no id
		{`{"result":1,"id":1}`, ``},                                                  // no version
		{`{"jsonrpc":"1.0","result":1,"id":1}`, ``},                                  // wrong version
		{`{"jsonrpc":"2.0","id":1}`, ``},                                             // neither
		{`{"jsonrpc":"2.0","result":1,"error":{"code":1,"message":"m"},"id":1}`, ``}, // both
		{`{"jsonrpc":"2.0","result":1,"id":1,"x":2}`, ``},                            // unknown member
		{`{"jsonrpc":"2.0","result":1,"result":2,"id":1}`, ``},                       // duplicate
		{`{"jsonrpc":"2.0","error":{"code":1.5,"message":"m"},"id":1}`, ``},          // code not an integer
		{`{"jsonrpc":"2.0","error":{"code":1},"id":1}`, ``},                          // no message
		{`{"jsonrpc":"2.0","error":{"code":1,"message":"m","x":0},"id":1}`, ``},      // unknown error member
		{`{"jsonrpc":"2.0","error":"oops","id":1}`, ``},                              // error not an object
		{`{"jsonrpc":"2.0","result":1,"id":true}`, ``},                               // id type
		{`[{"jsonrpc":"2.0","result":1,"id":1}]`, ``},                                // not an object
	} {
		var r Response
		err := json.Unmarshal([]byte(tt.in), &r)
		if tt.want == "" {
			if err == nil {
				t.Errorf("Unmarshal(%s) accepted it", tt.in)
			}
			continue
		}
		if err != nil {
			t.Errorf("Unmarshal(%s): %v", tt.in, err)
			continue
		}
		got, err := json.Marshal(r)
		if err != nil || string(got) != tt.want {
			t.Errorf("Unmarshal(%s) then Marshal = %s, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	for _, r := range []Response{{}, {Result: json.RawMessage(`1`), Error: &Error{}}, {Result: json.RawMessage(`{`)}} {
		if b, err := json.Marshal(r); err == nil {
			t.Errorf("Marshal(%+v) = %s, want an error", r, b)
		}
	}
}

func TestCodeText(t *testing.T) {
	for code := -32768; code <= -32000; code++ {
		text := CodeText(code)
		switch {
		case code == CodeParseError,
			CodeInternalError <= code && code <= CodeInvalidRequest,
			CodeSealed <= code && code <= CodeNotAllowed:
			if text == "" {
				t.Errorf("CodeText(%d) is empty", code)
			}
		default:
			if text != "" {
				t.Errorf("CodeText(%d) = %q for a code not in the table", code, text)
			}
		}
	}
	if e := NewError(CodeSealed, "no key s2"); e.Error() != "jsonrpc: Cannot open sealed envelope (-32008)" || string(e.Data) != `"no key s2"` {
		t.Errorf("NewError = %q, data %s", e.Error(), e.Data)
	}
}
