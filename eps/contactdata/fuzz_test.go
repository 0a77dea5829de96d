package contactdata

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// FuzzDecode decodes arbitrary bytes as each kind of document and checks
// that Decode never panics; that its errors are a ValidationErrors of at
// most MaxErrors+1 entries; that an accepted document validates, encodes,
// and decodes again to an equal value; and, against the JSON Schema, that
// whatever Go accepts the schema accepts too, and whatever the schema
// accepts but Go refuses breaks only rules the schema cannot state.
//
//	go test -run '^$' -fuzz FuzzDecode -fuzztime 60s ./eps/contactdata/
func FuzzDecode(f *testing.F) {
	schemas := compileSchemas(f)
	names := kindNames()
	for _, ex := range examples(f) {
		f.Add(uint8(slices.Index(names, ex.kind)), ex.data)
	}
	for _, doc := range goDocuments() {
		b, err := json.Marshal(doc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(slices.Index(names, doc.schema())), b)
	}
	f.Fuzz(func(t *testing.T, k uint8, data []byte) {
		kind := names[int(k)%len(names)]
		checkDecode(t, schemas[kind], kind, data)
	})
}

// FuzzValues takes a valid example, sets one of its string values (or,
// when n's top bit is set, removes its member) and checks the result as
// FuzzDecode does: this reaches the rules about content far more often
// than mutating bytes does.
//
//	go test -run '^$' -fuzz FuzzValues -fuzztime 60s ./eps/contactdata/
func FuzzValues(f *testing.F) {
	schemas := compileSchemas(f)
	var valid []example
	for _, ex := range examples(f) {
		if ex.verdict == "valid" {
			valid = append(valid, ex)
		}
	}
	for _, s := range []string{"Erika", "2021-03-10T17:00:00Z", "2021-03-11", "loc-4711", "", " ", "DE", "AT", "x\u0000"} {
		f.Add(uint8(0), uint16(3), s)
	}
	f.Add(uint8(1), uint16(0x8001), "")
	f.Fuzz(func(t *testing.T, k uint8, n uint16, value string) {
		ex := valid[int(k)%len(valid)]
		var doc any
		if err := json.Unmarshal(ex.data, &doc); err != nil {
			t.Fatal(err)
		}
		var leaves []func(del bool, s string) // set or remove one string member
		walkSorted(doc, func(set func(del bool, s string)) { leaves = append(leaves, set) })
		leaves[int(n&0x7fff)%len(leaves)](n&0x8000 != 0, value)
		data, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		checkDecode(t, schemas[ex.kind], ex.kind, data)
	})
}

// walkSorted calls leaf for every string member of v, in the order of the
// sorted member names, with a function that sets or deletes it.
func walkSorted(v any, leaf func(set func(del bool, s string))) {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for key := range v {
			keys = append(keys, key)
		}
		slices.Sort(keys)
		for _, key := range keys {
			if _, ok := v[key].(string); ok {
				leaf(func(del bool, s string) {
					if del {
						delete(v, key)
					} else {
						v[key] = s
					}
				})
			}
			walkSorted(v[key], leaf)
		}
	case []any:
		for _, x := range v {
			walkSorted(x, leaf)
		}
	}
}

// checkDecode decodes data as kind and checks the properties FuzzDecode
// lists.
func checkDecode(t *testing.T, schema *jsonschema.Schema, kind string, data []byte) {
	t.Helper()
	doc := kinds[kind]()
	err := Decode(data, doc)
	schErr := schemaVerdict(schema, data)
	if err != nil {
		ve, ok := errors.AsType[ValidationErrors](err)
		if !ok || len(ve) == 0 || len(ve) > MaxErrors+1 {
			t.Fatalf("Decode error %T with %d entries: %v", err, len(ve), err)
		}
		for _, e := range ve {
			if e.Rule == "" || !utf8.ValidString(e.Field) {
				t.Fatalf("malformed error %+v", e)
			}
			if schErr == nil && !slices.Contains(goOnlyRules, e.Rule) && e.Rule != ruleMoreErrors {
				t.Fatalf("the schema accepts %s, Go refuses it with %v", data, e)
			}
		}
		return
	}
	if schErr != nil {
		t.Fatalf("Go accepts %s, the schema refuses it: %v", data, schErr)
	}
	if err := doc.Validate(); err != nil {
		t.Fatalf("Decode accepted %s, Validate refuses: %v", data, err)
	}
	enc, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("encode %s: %v", data, err)
	}
	again := kinds[kind]()
	if err := Decode(enc, again); err != nil {
		t.Fatalf("re-encoded %s as %s, which Decode refuses: %v", data, enc, err)
	}
	if !reflect.DeepEqual(doc, again) {
		t.Fatalf("re-encoded %s as %s, which decodes differently:\n%+v\n%+v", data, enc, doc, again)
	}
}

// FuzzRules compares each string rule of the Go code with the pattern of
// the JSON Schema that states it, on arbitrary strings.
//
//	go test -run '^$' -fuzz FuzzRules -fuzztime 30s ./eps/contactdata/
func FuzzRules(f *testing.F) {
	rules := ruleSchemas(f)
	for _, s := range []string{"Erika Mustermann", "O’Brien", "+49 221 1234567", "erika@example.de", "51147",
		"3f2a7c1e-9b4d-4e0a-8c6f-2d5b1a9e7f30", "vendor-a", "loc-4711", "2021-03-10T18:30:00.5Z", "2021-03-10",
		"Tisch 12\nTerrasse", "x\u202ey", "a\u0308"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" || !utf8.ValidString(s) {
			return // absent, or not a JSON string
		}
		for _, r := range rules {
			r.agree(t, s)
		}
	})
}
