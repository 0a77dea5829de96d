package contactdata

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	// Only the tests use it: it validates the JSON Schemas against the
	// draft 2020-12 meta-schema and documents against the schemas, with
	// Go's regexp engine (RE2), so that the schema's patterns are judged
	// with the same Unicode tables as the Go code.
	"github.com/santhosh-tekuri/jsonschema/v6"
)

var update = flag.Bool("update", false, "rewrite the .want files in testdata")

// schemaDir holds the schemas; schemaBase is the prefix of their $ids.
const (
	schemaDir  = "../../docs/contact-data"
	schemaBase = "https://kurier.example/schemas/contact-data/v1/"
)

// kinds are the Documents by the base name of their schema, which is also
// the name of their directory in testdata.
var kinds = map[string]func() Document{
	"location":              func() Document { return new(Location) },
	"data-request":          func() Document { return new(DataRequest) },
	"guest-list":            func() Document { return new(GuestList) },
	"contact-person":        func() Document { return new(ContactPerson) },
	"event":                 func() Document { return new(Event) },
	"index-case-submission": func() Document { return new(IndexCaseSubmission) },
}

func kindNames() []string {
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// goOnlyRules are the rules the schemas cannot state: comparisons between
// fields, duplicate members (a JSON Schema validator sees the parsed
// object, where one of the two has already won) and the document's size.
// docs/contact-data.md lists them.
var goOnlyRules = []string{
	ruleDocumentSize,
	ruleDuplicate,
	ruleAfterStart,
	ruleRequestLong,
	ruleNotBeforeReq,
	ruleAfterFrom,
	ruleOverlapList,
	ruleBornBeforeStay,
	ruleLastContact,
	ruleBornBeforeMeet,
	ruleWindowAfter,
	ruleWindowLong,
	ruleNotBeforeWindow,
	ruleContactStart,
	ruleContactEnd,
	ruleOverlapWindow,
}

// compiler loads every schema file of docs/contact-data under its $id.
func compiler(tb testing.TB) *jsonschema.Compiler {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.schema.json"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no schemas in %s: %v", schemaDir, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat() // so that 2021-02-30 is refused, as Go refuses it
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		id, _ := doc.(map[string]any)["$id"].(string)
		if want := schemaBase + filepath.Base(f); id != want {
			tb.Fatalf("%s: $id %q, want %q", f, id, want)
		}
		if err := c.AddResource(id, doc); err != nil {
			tb.Fatal(err)
		}
	}
	return c
}

// compileSchemas compiles the schema of every kind, and checks that the
// directory holds no other top-level schemas than those and common.
func compileSchemas(tb testing.TB) map[string]*jsonschema.Schema {
	tb.Helper()
	c := compiler(tb)
	schemas := map[string]*jsonschema.Schema{}
	for name, newDoc := range kinds {
		if got := newDoc().schema(); got != name {
			tb.Fatalf("kinds[%q] has schema() %q", name, got)
		}
		s, err := c.Compile(schemaBase + name + ".schema.json")
		if err != nil {
			tb.Fatalf("compile %s: %v", name, err)
		}
		schemas[name] = s
	}
	files, _ := filepath.Glob(filepath.Join(schemaDir, "*.schema.json"))
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".schema.json")
		if _, ok := kinds[name]; !ok && name != "common" {
			tb.Errorf("schema %s has no Document type", f)
		}
	}
	return schemas
}

// schemaVerdict validates data against s as a JSON Schema validator would.
func schemaVerdict(s *jsonschema.Schema, data []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

type example struct {
	kind, verdict, path string
	data                []byte
}

// examples returns the documents in testdata/<kind>/<verdict>/*.json.
// verdict is valid (both accept), invalid (both refuse) or goonly (the
// schema accepts, Go refuses with rules from goOnlyRules only).
func examples(tb testing.TB) []example {
	tb.Helper()
	var exs []example
	for _, kind := range kindNames() {
		for _, verdict := range []string{"valid", "invalid", "goonly"} {
			files, err := filepath.Glob(filepath.Join("testdata", kind, verdict, "*.json"))
			if err != nil {
				tb.Fatal(err)
			}
			if verdict != "goonly" && len(files) == 0 {
				tb.Errorf("no %s examples of %s", verdict, kind)
			}
			for _, f := range files {
				b, err := os.ReadFile(f)
				if err != nil {
					tb.Fatal(err)
				}
				exs = append(exs, example{kind, verdict, f, b})
			}
		}
	}
	return exs
}

// errorLines renders a Decode error as the .want files hold it.
func errorLines(err error) string {
	ve, ok := errors.AsType[ValidationErrors](err)
	if !ok {
		return "not a ValidationErrors: " + err.Error() + "\n"
	}
	var b strings.Builder
	for _, e := range ve {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestSchemaAgreement checks every example in testdata against the Go
// validation and the JSON Schema, and the Go errors against the reviewed
// .want file beside each refused example.
func TestSchemaAgreement(t *testing.T) {
	schemas := compileSchemas(t)
	for _, ex := range examples(t) {
		t.Run(strings.TrimPrefix(ex.path, "testdata/"), func(t *testing.T) {
			goErr := Decode(ex.data, kinds[ex.kind]())
			schErr := schemaVerdict(schemas[ex.kind], ex.data)
			switch ex.verdict {
			case "valid":
				if goErr != nil || schErr != nil {
					t.Fatalf("want valid; Go: %v; schema: %v", goErr, schErr)
				}
				return
			case "invalid":
				if goErr == nil || schErr == nil {
					t.Errorf("want invalid for both; Go: %v; schema: %v", goErr, schErr)
				}
			case "goonly":
				if goErr == nil || schErr != nil {
					t.Errorf("want the schema to accept and Go to refuse; Go: %v; schema: %v", goErr, schErr)
				}
				if ve, ok := errors.AsType[ValidationErrors](goErr); ok {
					for _, e := range ve {
						if !slices.Contains(goOnlyRules, e.Rule) {
							t.Errorf("%v: not a Go-only rule", e)
						}
					}
				}
			}
			if goErr == nil {
				return
			}
			wantFile := strings.TrimSuffix(ex.path, ".json") + ".want"
			got := errorLines(goErr)
			if *update {
				if err := os.WriteFile(wantFile, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(wantFile)
			if err != nil {
				t.Fatalf("%v (run with -update, then review the file)", err)
			}
			if got != string(want) {
				t.Errorf("Go errors:\n%s\nwant (%s):\n%s", got, wantFile, want)
			}
		})
	}
}

// TestRoundTripExamples decodes every valid example, encodes it again and
// checks that nothing was lost, added or changed: the encoding means the
// same JSON as the example, decodes to an equal value and passes the
// schema.
func TestRoundTripExamples(t *testing.T) {
	schemas := compileSchemas(t)
	for _, ex := range examples(t) {
		if ex.verdict != "valid" {
			continue
		}
		t.Run(strings.TrimPrefix(ex.path, "testdata/"), func(t *testing.T) {
			doc := kinds[ex.kind]()
			if err := Decode(ex.data, doc); err != nil {
				t.Fatal(err)
			}
			enc, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			var orig, again any
			if err := json.Unmarshal(ex.data, &orig); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(enc, &again); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(orig, again) {
				t.Errorf("re-encoded document differs:\n got %s\nfrom %s", enc, ex.data)
			}
			doc2 := kinds[ex.kind]()
			if err := Decode(enc, doc2); err != nil {
				t.Fatalf("decode re-encoded: %v", err)
			}
			if !reflect.DeepEqual(doc, doc2) {
				t.Errorf("decoded again: %+v, want %+v", doc2, doc)
			}
			if err := schemaVerdict(schemas[ex.kind], enc); err != nil {
				t.Errorf("schema refuses the re-encoded document: %v", err)
			}
		})
	}
}

// TestSchemaDefsAgree checks each string format of common.schema.json
// against the Go rule that says the same, on strings chosen to sit on
// either side of each rule's edges. FuzzRules explores further.
func TestSchemaDefsAgree(t *testing.T) {
	rules := ruleSchemas(t)
	samples := []string{
		"Erika", "Erika Mustermann", "O'Brien", "O’Brien-Schäfer", "Mu\u0308ller", "'t Hooft", "Zoë",
		"Anne-", "-", "'", " Erika", "Erika ", "Erika\u00a0", "\u00a0Erika", "Erika2", "Dr. Erika",
		"李小龍", "Ærø", "\u0308", "a\u0308", "Erika  Mustermann", "Erika\tM", "Erika\u200dM",
		"Gasthaus Zum Löwen", "Gasthaus\nZum Löwen", "Gasthaus\r\nZum Löwen", "x\u2028y", "x\u2029y", "x\u0085y",
		"x\u202ey", "x\u2066y", "x\u2069", "x\ufffdy", "\ufffd", "x\u007fy", "x\u0000y", "\u3000x", "x\u3000",
		"Ünïcödé ✓ 🙂", "x\u00ady", "x ", "x\n", "\nx", "x\ty", "x\t", "Tisch 12\n\nTerrasse",
		"erika.mustermann@example.de", "erika@localhost", "@example.de", "erika@", "erika@@example.de",
		"erika@example..de", "erika@.example.de", "erika@example.de.", "erika mustermann@example.de",
		"müller@bücher.example", "a@b.c", strings.Repeat("a", 64) + "@example.de", strings.Repeat("a", 65) + "@example.de",
		"+49 221 1234567", "0221/1234567", "(0221) 123 45 67", "0171-1234567", "+49 (0) 221 12345", "110",
		"12345", "1234", "+(49) 221 1234", "+", "++49 221 12345", "0221 12345 ", " 0221 12345", "0221 12345)",
		"((0221) 12345", "0221 CALL ME", "０２２１ 12345", "+49 221 12345678901234567890123",
		"51147", "01067", "00123", "5114", "511470", "5114a", "1010", "SW1A 1AA", "00-950", "-1010", "1010-",
		"ABCDEFGHIJ", "ABCDEFGHIJK", "DE", "de", "D", "DEU", "Ö1",
		"3f2a7c1e-9b4d-4e0a-8c6f-2d5b1a9e7f30", "3F2A7C1E-9B4D-4E0A-8C6F-2D5B1A9E7F30", nilUUID,
		"3f2a7c1e9b4d4e0a8c6f2d5b1a9e7f30", "{3f2a7c1e-9b4d-4e0a-8c6f-2d5b1a9e7f30}",
		"vendor-a", "hd-1", "anonymous", "Vendor-A", "-vendor", "vendor-", strings.Repeat("a", 63), strings.Repeat("a", 64),
		"loc-4711", "01F8MECHZX3TBDSZ7XRADM79XV", "wien:heuriger-42", "a~b_c.d", ".loc", "loc 4711", "loc/4711",
		strings.Repeat("a", 128), strings.Repeat("a", 129), strings.Repeat("ä", 100), strings.Repeat("ä", 101),
		strings.Repeat("x", 200), strings.Repeat("x", 201), strings.Repeat("x", 2000), strings.Repeat("x", 2001),
	}
	for _, r := range rules {
		for _, s := range samples {
			r.agree(t, s)
		}
	}
}

// ruleSchema pairs a Go rule with the schema location that states it.
type ruleSchema struct {
	name   string
	goRule func(string) string
	schema *jsonschema.Schema
}

func (r ruleSchema) agree(t testing.TB, s string) {
	goOK := r.goRule(s) == ""
	schErr := r.schema.Validate(s)
	if goOK != (schErr == nil) {
		t.Errorf("%s(%q): Go says %q; schema says %v", r.name, s, r.goRule(s), schErr)
	}
}

func ruleSchemas(tb testing.TB) []ruleSchema {
	tb.Helper()
	c := compiler(tb)
	at := func(file, ptr string) *jsonschema.Schema {
		s, err := c.Compile(schemaBase + file + ".schema.json#" + ptr)
		if err != nil {
			tb.Fatal(err)
		}
		return s
	}
	return []ruleSchema{
		{"personName", nameRule, at("common", "/$defs/personName")},
		{"line200", line(maxLine), at("location", "/properties/name")},
		{"line16", line(maxHouseNumber), at("common", "/$defs/address/properties/house_number")},
		{"text2000", text(maxInfo), at("event", "/properties/additional_information")},
		{"email", emailRule, at("common", "/$defs/email")},
		{"phone", phoneRule, at("common", "/$defs/phone")},
		{"zipDE", func(s string) string { return zipRule(s, "") }, at("common", "/$defs/address/then/properties/zip_code")},
		{"zip", func(s string) string { return zipRule(s, "AT") }, at("common", "/$defs/address/else/properties/zip_code")},
		{"country", countryRule, at("common", "/$defs/address/properties/country")},
		{"uuid", uuidRule, at("common", "/$defs/uuid")},
		{"memberName", memberRule, at("common", "/$defs/memberName")},
		{"locationId", locationIDRule, at("common", "/$defs/locationId")},
		{"timestamp", timestampRule, at("common", "/$defs/timestamp")},
		{"date", func(s string) string { return dateRule(s, minYear) }, at("common", "/$defs/date")},
		{"birthDate", func(s string) string { return dateRule(s, minBirthYear) }, at("common", "/$defs/birthDate")},
	}
}

// timestampRule is the Go verdict on a timestamp string: parseTime, then
// the checks of Validate.
func timestampRule(s string) string {
	t, ok := parseTime(s)
	if !ok {
		return ruleTime
	}
	var c checker
	c.time("", "t", t)
	if len(c.errs) > 0 {
		return c.errs[0].Rule
	}
	return ""
}

func dateRule(s string, min int) string {
	d, err := ParseDate(s)
	if err != nil {
		return ruleDate
	}
	var c checker
	c.date("", "d", d, true, min)
	if len(c.errs) > 0 {
		return c.errs[0].Rule
	}
	return ""
}

func TestSchemaTimesAgree(t *testing.T) {
	rules := ruleSchemas(t)
	for _, s := range []string{
		"2021-03-10T18:30:00Z", "2021-03-10T18:30:00.5Z", "2021-03-10T18:30:00.123456789Z",
		"2021-03-10T18:30:00.1234567890Z", "2021-03-10T18:30:00.Z", "2021-03-10T18:30:00+01:00",
		"2021-03-10T18:30:00+00:00", "2021-03-10T18:30:00-00:00", "2021-03-10t18:30:00Z", "2021-03-10T18:30:00z",
		"2021-03-10 18:30:00Z", "2021-03-10T18:30Z", "2021-02-29T10:00:00Z", "2024-02-29T10:00:00Z",
		"2021-04-31T10:00:00Z", "2021-03-10T24:00:00Z", "2021-03-10T23:60:00Z", "2021-12-31T23:59:60Z",
		"2019-12-31T23:59:59Z", "2020-01-01T00:00:00Z", "2099-12-31T23:59:59.999999999Z", "2100-01-01T00:00:00Z",
		"0001-01-01T00:00:00Z", "+2021-03-10T18:30:00Z", "2021-3-10T18:30:00Z", "2021-03-10T18:30:00,5Z",
		"2021-03-10", "2021-02-29", "2024-02-29", "1900-01-01", "1899-12-31", "2099-12-31", "2100-01-01",
		"2019-12-31", "2020-01-01", "2021-13-01", "2021-00-10", "2021-03-00", "2021-03-32", "10.03.2021",
		"2021-03-10Z", " 2021-03-10", "0000-00-00",
	} {
		for _, r := range rules {
			switch r.name {
			case "timestamp", "date", "birthDate":
				r.agree(t, s)
			}
		}
	}
}

// TestSchemaGoOnlyRulesDocumented checks that docs/contact-data.md names
// every Go-only rule.
func TestSchemaGoOnlyRulesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/contact-data.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range goOnlyRules {
		if !bytes.Contains(doc, []byte(r)) {
			t.Errorf("docs/contact-data.md does not mention the Go-only rule %q", r)
		}
	}
}
