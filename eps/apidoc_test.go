package eps_test

// The API reference in docs/eps-api.schema.json is checked here against the
// endpoint server itself: every method the server handles must be in it,
// every example in it is run against a real network (relay, two endpoint
// servers behind their private proxies) and every answer is validated with
// the schema. A change to the local API that the reference does not follow
// fails these tests.

import (
	"bytes"
	"crypto/hpke"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
)

const (
	apiSchemaFile = "../docs/eps-api.schema.json"
	apiGuideFile  = "../docs/eps.md"
	callPattern   = "<member>.<service>" // the methods entry for IRIS connect's convention
)

// handledMethods are the '_' methods the issue lists; handleLocal's switch
// is parsed as well, so a method added there is caught even if this list
// is not updated.
var handledMethods = []string{"_ping", "_directory", "_status", "_send", "_message", "_poll", "_ack", "_call"}

// runOrder is the order examples run in: later ones use the messages
// earlier ones sent. Methods not listed run afterwards, by name.
var runOrder = []string{"_ping", "_directory", "_status", "_call", callPattern, "_send", "_message", "_poll", "_ack"}

type apiDoc struct {
	ID         string                     `json:"$id"`
	Methods    map[string]apiMethod       `json:"methods"`
	ErrorCodes []apiErrorCode             `json:"errorCodes"`
	Defs       map[string]json.RawMessage `json:"$defs"`
}

type apiMethod struct {
	Params   schemaRef    `json:"params"`
	Result   schemaRef    `json:"result"`
	Errors   []apiError   `json:"errors"`
	Examples []apiExample `json:"examples"`
}

type schemaRef struct {
	Ref string `json:"$ref"`
}

type apiError struct {
	Code int    `json:"code"`
	When string `json:"when"`
}

type apiErrorCode struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type apiExample struct {
	Summary string          `json:"summary"`
	Caller  string          `json:"caller"`
	Method  string          `json:"method"` // for callPattern
	Run     *bool           `json:"run"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   *jsonrpc.Error  `json:"error"`
}

func (ex *apiExample) runs() bool {
	return (ex.Run == nil || *ex.Run) && (ex.Result != nil || ex.Error != nil)
}

// apiSchema is the parsed reference and its compiled schemas.
type apiSchema struct {
	doc  apiDoc
	c    *jsonschema.Compiler
	root *jsonschema.Schema
}

func loadAPISchema(t *testing.T) *apiSchema {
	t.Helper()
	b, err := os.ReadFile(apiSchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var s apiSchema
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&s.doc); err != nil {
		t.Fatalf("%s: %v", apiSchemaFile, err)
	}
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	s.c = jsonschema.NewCompiler()
	s.c.DefaultDraft(jsonschema.Draft2020)
	s.c.AssertFormat()  // date-time
	s.c.AssertContent() // base64
	if err := s.c.AddResource(s.doc.ID, raw); err != nil {
		t.Fatal(err)
	}
	// Compiling validates the document against the 2020-12 meta-schema.
	if s.root, err = s.c.Compile(s.doc.ID); err != nil {
		t.Fatalf("compile %s: %v", apiSchemaFile, err)
	}
	return &s
}

// def compiles a schema of $defs by reference ("#/$defs/Name").
func (s *apiSchema) def(t *testing.T, ref string) *jsonschema.Schema {
	t.Helper()
	if !strings.HasPrefix(ref, "#/$defs/") {
		t.Fatalf("schema reference %q does not point into $defs", ref)
	}
	sch, err := s.c.Compile(s.doc.ID + ref)
	if err != nil {
		t.Fatalf("compile %s: %v", ref, err)
	}
	return sch
}

// validateJSON checks JSON text against a schema.
func validateJSON(t *testing.T, sch *jsonschema.Schema, what string, b []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Errorf("%s: not JSON: %v\n%s", what, err, b)
		return
	}
	if err := sch.Validate(v); err != nil {
		t.Errorf("%s does not match the schema: %v\n%s", what, err, b)
	}
}

// codeMethods parses handleLocal in local.go for the method names it
// switches on.
func codeMethods(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "local.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != "handleLocal" {
			continue
		}
		ast.Inspect(fd, func(n ast.Node) bool {
			cc, ok := n.(*ast.CaseClause)
			if !ok {
				return true
			}
			for _, e := range cc.List {
				if lit, ok := e.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil && strings.HasPrefix(s, "_") {
						names = append(names, s)
					}
				}
			}
			return true
		})
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// TestAPIDocMethods: the reference lists exactly the methods the server
// handles, and its error table agrees with package jsonrpc.
func TestAPIDocMethods(t *testing.T) {
	s := loadAPISchema(t)
	code := codeMethods(t)
	for _, m := range handledMethods {
		if !slices.Contains(code, m) {
			t.Errorf("handleLocal no longer handles %s (or local.go could not be parsed)", m)
		}
	}
	for _, m := range code {
		if _, ok := s.doc.Methods[m]; !ok {
			t.Errorf("method %s is handled by the server but missing from %s", m, apiSchemaFile)
		}
	}
	for m := range s.doc.Methods {
		if m != callPattern && !slices.Contains(code, m) {
			t.Errorf("%s documents %s, which the server does not handle", apiSchemaFile, m)
		}
	}
	if _, ok := s.doc.Methods[callPattern]; !ok {
		t.Errorf("%s does not document %s calls", apiSchemaFile, callPattern)
	}
	seen := map[int]bool{}
	for _, e := range s.doc.ErrorCodes {
		seen[e.Code] = true
		if want := jsonrpc.CodeText(e.Code); e.Message != want {
			t.Errorf("error %d is documented as %q, jsonrpc.CodeText says %q", e.Code, e.Message, want)
		}
	}
	for code := -32768; code <= -32000; code++ {
		if jsonrpc.CodeText(code) != "" && !seen[code] {
			t.Errorf("error %d (%s) is missing from errorCodes", code, jsonrpc.CodeText(code))
		}
	}
	for name, m := range s.doc.Methods {
		for _, e := range m.Errors {
			if !seen[e.Code] {
				t.Errorf("%s lists error %d, which is not in errorCodes", name, e.Code)
			}
		}
	}
}

// TestAPIDocExamplesValid: every example in the reference matches its own
// schema, so the examples can be trusted as much as the schemas.
func TestAPIDocExamplesValid(t *testing.T) {
	s := loadAPISchema(t)
	for _, name := range slices.Sorted(maps.Keys(s.doc.Defs)) {
		var d struct {
			Examples []json.RawMessage `json:"examples"`
		}
		if err := json.Unmarshal(s.doc.Defs[name], &d); err != nil {
			t.Fatalf("$defs/%s: %v", name, err)
		}
		if len(d.Examples) == 0 {
			continue
		}
		sch := s.def(t, "#/$defs/"+name)
		for i, ex := range d.Examples {
			validateJSON(t, sch, fmt.Sprintf("$defs/%s example %d", name, i), ex)
		}
	}
	errSchema := s.def(t, "#/$defs/Error")
	for _, name := range slices.Sorted(maps.Keys(s.doc.Methods)) {
		m := s.doc.Methods[name]
		params, result := s.def(t, m.Params.Ref), s.def(t, m.Result.Ref)
		if len(m.Examples) == 0 {
			t.Errorf("%s has no examples", name)
		}
		for i, ex := range m.Examples {
			what := fmt.Sprintf("%s example %d (%s)", name, i, ex.Summary)
			if ex.Params != nil && ex.Error == nil { // an error example may break the schema on purpose
				validateJSON(t, params, what+" params", ex.Params)
			}
			if ex.Result != nil {
				validateJSON(t, result, what+" result", ex.Result)
			}
			if ex.Error != nil {
				b, _ := json.Marshal(ex.Error)
				validateJSON(t, errSchema, what+" error", b)
			}
			// As a whole request body: valid per the root schema, unless
			// it is meant to name no method.
			method := name
			if ex.Method != "" {
				method = ex.Method
			}
			req := map[string]any{"jsonrpc": "2.0", "id": i, "method": method}
			if ex.Params != nil {
				req["params"] = ex.Params
			}
			b, _ := json.Marshal(req)
			v, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			err := s.root.Validate(v)
			switch {
			case ex.Error != nil && ex.Error.Code == jsonrpc.CodeMethodNotFound:
				if err == nil {
					t.Errorf("%s: the root schema accepts a request the server answers with Method not found:\n%s", what, b)
				}
			case ex.Error == nil && err != nil:
				t.Errorf("%s: the root schema refuses the request: %v\n%s", what, err, b)
			}
		}
	}
}

// TestAPIDocGuideRequests: every request body in a curl example of
// docs/eps.md is a valid request per the reference.
func TestAPIDocGuideRequests(t *testing.T) {
	s := loadAPISchema(t)
	guide, err := os.ReadFile(apiGuideFile)
	if err != nil {
		t.Fatal(err)
	}
	bodies := regexp.MustCompile(`(?s)curl [^\n]*?(?:\\\n[^\n]*?)*?-d '([^']*)'`).FindAllSubmatch(guide, -1)
	if want := bytes.Count(guide, []byte("curl -s ")); len(bodies) != want || want == 0 {
		t.Fatalf("found the body of %d of the %d curl examples in %s; write them as curl … -d '<json>'", len(bodies), want, apiGuideFile)
	}
	for _, m := range bodies {
		body := m[1]
		if bytes.Contains(body, []byte("$")) { // shell variables: not literal JSON
			continue
		}
		validateJSON(t, s.root, "request body in "+apiGuideFile, body)
	}
}

// TestAPIDoc runs every example of the reference against a real network:
// the documented methods answer (never Method not found), successful
// results match the result schema, and documented errors come with the
// documented code. Callbacks the vendor's software receives are checked
// against the callback schemas.
func TestAPIDoc(t *testing.T) {
	s := loadAPISchema(t)
	n := newNetwork(t)
	errSchema := s.def(t, "#/$defs/Error")

	order := slices.Clone(runOrder)
	for _, name := range slices.Sorted(maps.Keys(s.doc.Methods)) {
		if !slices.Contains(order, name) {
			order = append(order, name)
		}
	}
	subst := map[string]string{} // example message id → the real one
	var sent []string            // real ids of messages _send examples queued, with their sender
	var sentBy []string
	succeeded := map[string]bool{}
	for _, name := range order {
		m, ok := s.doc.Methods[name]
		if !ok {
			continue // TestAPIDocMethods reports it
		}
		result := s.def(t, m.Result.Ref)
		if name == "_ack" {
			// Acknowledge only what has arrived: wait until the office
			// holds every message sent so far.
			for i, id := range sent {
				apiWaitDelivered(t, s, n.eps[sentBy[i]], id)
			}
		}
		for i, ex := range m.Examples {
			if !ex.runs() {
				continue
			}
			what := fmt.Sprintf("%s example %d (%s)", name, i, ex.Summary)
			caller, ok := n.eps[ex.Caller]
			if !ok {
				t.Fatalf("%s: caller %q is not a member of the test network", what, ex.Caller)
			}
			method := name
			if ex.Method != "" {
				method = ex.Method
			}
			var params any
			if ex.Params != nil {
				p, err := rewriteParams(ex.Params, subst, ex.Error == nil)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				params = p
			}
			var got json.RawMessage
			err := client(caller).Call(t.Context(), method, params, &got)
			var rerr *jsonrpc.Error
			if errors.As(err, &rerr) && rerr.Code == jsonrpc.CodeMethodNotFound && (ex.Error == nil || ex.Error.Code != jsonrpc.CodeMethodNotFound) {
				t.Errorf("%s: the server answers the documented method %s with Method not found: %v", what, method, rerr.Message)
				continue
			}
			if ex.Error != nil {
				if rerr == nil || rerr.Code != ex.Error.Code {
					t.Errorf("%s: got %s, %v; want error %d", what, got, err, ex.Error.Code)
					continue
				}
				if !slices.ContainsFunc(m.Errors, func(e apiError) bool { return e.Code == rerr.Code }) {
					t.Errorf("%s: error %d is not in the method's error list", what, rerr.Code)
				}
				b, _ := json.Marshal(rerr)
				validateJSON(t, errSchema, what+" error", b)
				continue
			}
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			succeeded[name] = true
			validateJSON(t, result, what+" result", got)
			learnIDs(ex.Result, got, subst)
			if name == "_send" {
				var r struct {
					MessageID string `json:"message_id"`
				}
				json.Unmarshal(got, &r)
				sent, sentBy = append(sent, r.MessageID), append(sentBy, ex.Caller)
			}
		}
	}
	for name := range s.doc.Methods {
		if !succeeded[name] {
			t.Errorf("no example of %s ran successfully, so its result schema is untested", name)
		}
	}
	if len(sent) == 0 {
		t.Fatal("no _send example ran: nothing to check the callbacks with")
	}
	apiCheckCallbacks(t, s, n.eps["vendor-a"], sent[0])
}

// rewriteParams replaces the example's message ids with the real ones and,
// if fresh is set, every deadline with one an hour from now (an example's
// fixed date would lie in the past one day).
func rewriteParams(raw json.RawMessage, subst map[string]string, fresh bool) (any, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	var walk func(v any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case string:
			if r, ok := subst[x]; ok {
				return r
			}
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		case map[string]any:
			for k := range x {
				if k == "deadline" && fresh {
					x[k] = time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
					continue
				}
				x[k] = walk(x[k])
			}
		}
		return v
	}
	return walk(v), nil
}

var exampleIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// learnIDs maps message ids in an example result to the ids at the same
// place in the real result; the first mapping of an id stands.
func learnIDs(example, got json.RawMessage, subst map[string]string) {
	var ev, gv any
	if json.Unmarshal(example, &ev) != nil || json.Unmarshal(got, &gv) != nil {
		return
	}
	var walk func(e, g any)
	walk = func(e, g any) {
		switch x := e.(type) {
		case string:
			if y, ok := g.(string); ok && exampleIDPattern.MatchString(x) {
				if _, known := subst[x]; !known {
					subst[x] = y
				}
			}
		case []any:
			if y, ok := g.([]any); ok {
				for i := range min(len(x), len(y)) {
					walk(x[i], y[i])
				}
			}
		case map[string]any:
			if y, ok := g.(map[string]any); ok {
				for k := range x {
					// A link's label is random like a message id.
					if ex, ok := x[k].(string); ok && k == "label" {
						if got, ok := y[k].(string); ok && subst[ex] == "" {
							subst[ex] = got
						}
					}
					walk(x[k], y[k])
				}
			}
		}
	}
	walk(ev, gv)
}

// apiWaitDelivered waits until the sender's _message reports id delivered,
// validating every answer.
func apiWaitDelivered(t *testing.T, s *apiSchema, sender *member, id string) {
	t.Helper()
	sch := s.def(t, s.doc.Methods["_message"].Result.Ref)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got json.RawMessage
		if err := client(sender).Call(t.Context(), "_message", map[string]any{"message_id": id}, &got); err != nil {
			t.Fatalf("_message %s: %v", id, err)
		}
		validateJSON(t, sch, "_message result", got)
		var r struct {
			Status string `json:"status"`
		}
		json.Unmarshal(got, &r)
		if r.Status == "delivered" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s not delivered: %s", id, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// apiCheckCallbacks checks what the vendor's software received by callback
// for the request it sent (id): a _status report and the office's
// response.
func apiCheckCallbacks(t *testing.T, s *apiSchema, vendor *member, id string) {
	t.Helper()
	status, resp := s.def(t, "#/$defs/StatusReport"), s.def(t, "#/$defs/ResponsePayload")
	msgID := s.def(t, "#/$defs/MessageID")
	var sawStatus, sawResponse bool
	deadline := time.After(15 * time.Second)
	for !sawStatus || !sawResponse {
		select {
		case cb := <-vendor.calls:
			params := []byte(cb["params"].(string))
			validateJSON(t, msgID, "Kurier-Message-Id", []byte(strconv.Quote(cb["message_id"].(string))))
			switch cb["kind"] {
			case "status":
				if cb["method"] != "_status" || cb["from"] != vendor.name {
					t.Errorf("status callback %v: want method _status from %s", cb, vendor.name)
				}
				validateJSON(t, status, "_status callback params", params)
				sawStatus = sawStatus || strings.Contains(string(params), id)
			case "response":
				if cb["correlation_id"] != id {
					continue
				}
				if cb["method"] != "submit" || cb["from"] != "hd-1" {
					t.Errorf("response callback %v: want method submit from hd-1", cb)
				}
				validateJSON(t, resp, "response callback params", params)
				sawResponse = true
			}
		case <-deadline:
			t.Fatalf("callbacks: status report seen %v, response seen %v", sawStatus, sawResponse)
		}
	}
}

// TestAPIDocSealedBySoftware follows docs/eps.md, "Sealing payloads
// yourself": the vendor's software takes the office's seal key from
// _directory, seals with HPKE for a message id it chose, and _send signs
// and delivers the envelope; the office's software polls the plaintext.
func TestAPIDocSealedBySoftware(t *testing.T) {
	s := loadAPISchema(t)
	n := newNetwork(t)
	vendor, office := client(n.eps["vendor-a"]), client(n.eps["hd-1"])

	var dir struct {
		Members []struct {
			SealKeys []struct {
				ID     string `json:"id"`
				KEM    uint16 `json:"kem"`
				Public []byte `json:"public"`
			} `json:"seal_keys"`
		} `json:"members"`
	}
	if err := vendor.Call(t.Context(), "_directory", map[string]any{"member": "hd-1"}, &dir); err != nil {
		t.Fatal(err)
	}
	if len(dir.Members) != 1 || len(dir.Members[0].SealKeys) == 0 {
		t.Fatalf("_directory: %+v", dir)
	}
	// As docs/eps.md says: the last key of KEM ML-KEM-768+X25519 (an
	// office also lists an X25519 key for browsers).
	keys := dir.Members[0].SealKeys
	key := keys[len(keys)-1]
	for _, k := range keys {
		if k.KEM == seal.KEMMLKEM768X25519 {
			key = k
		}
	}
	if key.KEM != seal.KEMMLKEM768X25519 {
		t.Fatalf("no seal key of KEM ML-KEM-768+X25519: %+v", keys)
	}

	id := store.NewID().String() // the software's own message id
	info, err := seal.Context{Sender: "vendor-a", Recipient: "hd-1", Service: "submit", Kind: "request", MessageID: id}.Info()
	if err != nil {
		t.Fatal(err)
	}
	pk, err := hpke.MLKEM768X25519().NewPublicKey(key.Public)
	if err != nil {
		t.Fatal(err)
	}
	enc, sender, err := hpke.NewSender(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), info)
	if err != nil {
		t.Fatal(err)
	}
	const payload = `{"location":"Café Rot","guests":[{"name":"Erika Mustermann"}]}`
	ct, err := sender.Seal(nil, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]any{"v": 1, "kem": key.KEM, "kdf": 1, "aead": 3, "key_id": key.ID, "enc": enc, "ct": ct}
	b, _ := json.Marshal(env)
	validateJSON(t, s.def(t, "#/$defs/UnsignedEnvelope"), "software-sealed envelope", b)

	var sent struct {
		MessageID string `json:"message_id"`
	}
	if err := vendor.Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "sealed": env, "message_id": id}, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.MessageID != id {
		t.Errorf("_send returned message id %s, want the software's %s", sent.MessageID, id)
	}
	var got json.RawMessage
	if err := office.Call(t.Context(), "_poll", map[string]any{"wait": 15}, &got); err != nil {
		t.Fatal(err)
	}
	validateJSON(t, s.def(t, s.doc.Methods["_poll"].Result.Ref), "_poll result", got)
	var polled struct {
		Messages []struct {
			MessageID string          `json:"message_id"`
			From      string          `json:"from"`
			Params    json.RawMessage `json:"params"`
		} `json:"messages"`
	}
	json.Unmarshal(got, &polled)
	if len(polled.Messages) != 1 || polled.Messages[0].MessageID != id || polled.Messages[0].From != "vendor-a" ||
		!sameJSON(polled.Messages[0].Params, []byte(payload)) {
		t.Fatalf("_poll = %s; want the software-sealed payload from vendor-a with id %s", got, id)
	}

	// The same message again is a retry: answered with the message already
	// queued (duplicate), not sent twice. The id for another message is
	// refused.
	var again map[string]any
	err = vendor.Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "sealed": env, "message_id": id}, &again)
	if err != nil || again["duplicate"] != true || again["message_id"] != id {
		t.Errorf("_send of the same message again = %v, %v; want the queued message, duplicate", again, err)
	}
	err = vendor.Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "notification": true, "params": map[string]any{}, "message_id": id}, nil)
	if e, ok := errors.AsType[*jsonrpc.Error](err); !ok || e.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("_send of another message with a used message_id = %v, want %d", err, jsonrpc.CodeInvalidParams)
	}
}

func sameJSON(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}
