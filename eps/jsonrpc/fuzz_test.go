package jsonrpc

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"testing"
	"unicode/utf8"
)

// fuzzSeeds are the specification's examples and the edge cases of the
// table tests.
var fuzzSeeds = []string{
	`{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}`,
	`{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}`,
	`{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}`,
	`{"jsonrpc": "2.0", "method": "foobar", "id": "1"}`,
	`{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]`,
	`{"jsonrpc": "2.0", "method": 1, "params": "bar"}`,
	`[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},{"jsonrpc": "2.0", "method"]`,
	`[]`, `[1]`, `[1,2,3]`,
	`[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
	  {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"}, {"foo": "boo"},
	  {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"}, {"jsonrpc": "2.0", "method": "get_data", "id": "9"}]`,
	`[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]}, {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]`,
	`{"jsonrpc":"2.0","method":"m","id":1,"id":2}`,
	`{"jsonr\u0070c":"2\u002e0","\u006dethod":"\u0061","id":"\ud83d\ude00"}`,
	`{"jsonrpc":"2.0","method":"m","params":null,"id":1e400}`,
	`{"jsonrpc":"2.0","method":"m","id":-0.0e-0}`,
	`{"jsonrpc":"2.0","method":"m","id":null,"x":{"y":[1,{"z":"]}"}]}}`,
	`[[],{},null,true,"s",0,{"jsonrpc":"2.0","method":"m","id":{}}]`,
	"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}",
	" \t\n[ {\"jsonrpc\" : \"2.0\" , \"method\" : \"m\" , \"id\" : 1 } ] ",
}

func FuzzDecodeRequests(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		reqs, batch, errResp := DecodeRequests(body)
		if !bytes.Equal(body, orig) {
			t.Fatal("DecodeRequests modified the body")
		}
		want := oracle(body, 0)
		if errResp != nil {
			if want.whole == nil {
				t.Fatalf("errResp %s; oracle wants elements %+v", errResp, want.elems)
			}
			checkResponse(t, errResp, *want.whole)
			return
		}
		if want.whole != nil || batch != want.batch || len(reqs) != len(want.elems) {
			t.Fatalf("DecodeRequests = %d requests (batch %v); oracle wants %+v", len(reqs), batch, want)
		}
		for i, r := range reqs {
			w := want.elems[i]
			if (r.Err != nil) != w.invalid {
				t.Fatalf("element %d: Err %v; oracle says invalid %v", i, r.Err, w.invalid)
			}
			gotID := "none"
			if r.ID != nil {
				gotID = r.ID.String()
			}
			if wantID := w.idText(); gotID != wantID {
				t.Fatalf("element %d: id %s; oracle wants %s", i, gotID, wantID)
			}
			if r.Err != nil {
				continue
			}
			if r.Method != w.method || !bytes.Equal(r.Params, w.params) {
				t.Fatalf("element %d: method %q params %s; oracle wants %q %s", i, r.Method, r.Params, w.method, w.params)
			}
			// A valid request survives a round trip.
			b, err := json.Marshal(r)
			if err != nil {
				t.Fatalf("Marshal(%+v): %v", r, err)
			}
			var back Request
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if back.Method != r.Method || (back.ID == nil) != (r.ID == nil) || back.ID != nil && !back.ID.Equal(*r.ID) {
				t.Fatalf("round trip of %s = %+v", b, back)
			}
		}
	})
}

func FuzzServe(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		const maxBatch = 20
		got, status := Serve(t.Context(), body, echo, Options{MaxBatch: maxBatch, Concurrency: 4})
		want := oracle(body, maxBatch)
		switch {
		case want.whole != nil:
			if status != http.StatusOK {
				t.Fatalf("status %d for a whole-body error", status)
			}
			checkResponse(t, got, *want.whole)
			return
		case want.answered() == 0:
			if status != http.StatusNoContent || got != nil {
				t.Fatalf("Serve = %d %s; want 204, nothing to answer", status, got)
			}
			return
		}
		if status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		if !want.batch {
			checkResponse(t, got, want.elems[0])
			return
		}
		var resps []json.RawMessage
		if err := json.Unmarshal(got, &resps); err != nil {
			t.Fatalf("batch response %s: %v", got, err)
		}
		i := 0
		for _, w := range want.elems {
			if !w.invalid && !w.hasID {
				continue // notification
			}
			if i == len(resps) {
				t.Fatalf("%d responses; oracle wants %d", len(resps), want.answered())
			}
			checkResponse(t, resps[i], w)
			i++
		}
		if i != len(resps) {
			t.Fatalf("%d responses; oracle wants %d", len(resps), i)
		}
	})
}

// want is what the oracle expects of a body: a single response for the
// whole body, or one entry per element.
type want struct {
	whole *wantElem
	batch bool
	elems []wantElem
}

func (w want) answered() int {
	n := 0
	for _, e := range w.elems {
		if e.invalid || e.hasID {
			n++
		}
	}
	return n
}

type wantElem struct {
	code    int             // error code of the response; 0 for a result
	invalid bool            // an Invalid Request element
	hasID   bool            // the id member was usable
	id      json.RawMessage // its text
	method  string
	params  json.RawMessage
}

// idText is the text a decoded Request's ID should have: "none" for no id.
func (w wantElem) idText() string {
	if !w.hasID {
		return "none"
	}
	if string(w.id) == "null" {
		return "null"
	}
	return string(w.id)
}

// oracle decides what a body should get, reading it with encoding/json's
// Decoder rather than the package's own scanner.
func oracle(body []byte, maxBatch int) want {
	if !utf8.Valid(body) || !json.Valid(body) {
		return want{whole: &wantElem{code: CodeParseError}}
	}
	var elems []json.RawMessage
	if json.Unmarshal(body, &elems) != nil || elems == nil { // not an array (null decodes to nil)
		return want{elems: []wantElem{oracleElem(body)}}
	}
	if len(elems) == 0 || maxBatch > 0 && len(elems) > maxBatch {
		return want{batch: true, whole: &wantElem{code: CodeInvalidRequest}}
	}
	w := want{batch: true}
	for _, e := range elems {
		w.elems = append(w.elems, oracleElem(e))
	}
	return w
}

func oracleElem(raw []byte) wantElem {
	invalid := wantElem{code: CodeInvalidRequest, invalid: true}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return invalid
	}
	count := map[string]int{}
	vals := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			panic(err) // valid JSON: cannot happen
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			panic(err)
		}
		k := tok.(string)
		count[k]++
		vals[k] = v
	}
	decode := func(k string) any {
		var v any
		unmarshalNumbers(vals[k], &v)
		return v
	}
	w := wantElem{}
	if count["id"] == 1 {
		switch decode("id").(type) {
		case string, json.Number, nil:
			w.hasID, w.id = true, vals["id"]
		}
	}
	ok := count["jsonrpc"] == 1 && decode("jsonrpc") == "2.0" && count["method"] == 1
	if m, isStr := decode("method").(string); isStr {
		w.method = m
	} else {
		ok = false
	}
	switch count["params"] {
	case 0:
	case 1:
		switch decode("params").(type) {
		case map[string]any, []any:
			w.params = vals["params"]
		default:
			ok = false
		}
	default:
		ok = false
	}
	if count["id"] > 1 || count["id"] == 1 && !w.hasID {
		ok = false
	}
	for k := range count {
		switch k {
		case "jsonrpc", "method", "params", "id":
		default:
			ok = false
		}
	}
	if !ok {
		invalid.hasID, invalid.id = w.hasID, w.id
		return invalid
	}
	return w
}

// checkResponse checks that b is one valid response object, as w expects.
// It reads b with encoding/json, not with the package's own decoder.
func checkResponse(t *testing.T, b []byte, w wantElem) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response %s: %v", b, err)
	}
	wantID := "null"
	if w.hasID {
		wantID = string(w.id)
	}
	if string(m["jsonrpc"]) != `"2.0"` || string(m["id"]) != wantID || len(m) != 3 {
		t.Fatalf("response %s; want jsonrpc 2.0, id %s and one of result and error", b, wantID)
	}
	if w.code != 0 {
		var e struct {
			Code    *int
			Message *string
		}
		if err := json.Unmarshal(m["error"], &e); err != nil || e.Code == nil || *e.Code != w.code || e.Message == nil {
			t.Fatalf("response %s; want error %d", b, w.code)
		}
		return
	}
	var got []any
	if err := unmarshalNumbers(m["result"], &got); err != nil {
		t.Fatalf("response %s: result: %v", b, err)
	}
	var params any
	if w.params != nil {
		unmarshalNumbers(w.params, &params)
	}
	if wantRes := []any{w.method, params}; !reflect.DeepEqual(got, wantRes) {
		t.Fatalf("response %s: result %v; want %v", b, got, wantRes)
	}
}

// unmarshalNumbers is json.Unmarshal keeping numbers as json.Number, so
// that numbers out of float64's range decode too.
func unmarshalNumbers(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}
