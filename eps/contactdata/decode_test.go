package contactdata

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const validEvent = `{"name":"Chorprobe St. Agnes","start":"2021-03-04T18:30:00Z","end":"2021-03-04T20:00:00Z"}`

func TestDecodeStrict(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		want     []string // the errors, as field: rule
	}{
		{"valid", validEvent, nil},
		{"whitespace around", " \n" + validEvent + "\n", nil},
		{"whitespace inside", strings.NewReplacer(`":`, "\" \t: \r\n", `",`, "\"\n ,\t", `{`, "{ ", `}`, "\t}").Replace(validEvent), nil},
		{"escapes", strings.NewReplacer(`"name"`, `"\u006eame"`, `St.`, `\u0053t\u002e`).Replace(validEvent), nil},
		{"unknown member skipped whole", strings.Replace(validEvent, `{`, `{"x":{"a":["]}\"\\",-1.5e+5,true,false,null,{},[[]]],"b":"}"},`, 1),
			[]string{"x: " + ruleUnknown}},
		{"type errors skipped whole", `{"name":["]",{"a":"}"}],"start":{"x":[1,"]"]},"end":1e3}`,
			[]string{"name: " + ruleString, "start: " + ruleString, "end: " + ruleString}},
		{"key in other case", strings.Replace(validEvent, `"name"`, `"NAME"`, 1),
			[]string{"NAME: " + ruleUnknown, "name: " + ruleRequired}},
		{"duplicate", strings.Replace(validEvent, `{`, `{"end":"2021-03-04T21:00:00Z",`, 1),
			[]string{"end: " + ruleDuplicate}},
		{"odd member name", strings.Replace(validEvent, `{`, `{"a b\n":1,`, 1),
			[]string{`["a b\n"]: ` + ruleUnknown}},
		{"long member name", strings.Replace(validEvent, `{`, `{"`+strings.Repeat("ä", 40)+`":1,`, 1),
			[]string{`["` + strings.Repeat("ä", 32) + `…"]: ` + ruleUnknown}},
		{"number", strings.Replace(validEvent, `"Chorprobe St. Agnes"`, `12`, 1), []string{"name: " + ruleString}},
		{"object for string", strings.Replace(validEvent, `"Chorprobe St. Agnes"`, `{"de":"Chorprobe"}`, 1), []string{"name: " + ruleString}},
		{"array for object", strings.Replace(validEvent, `{`, `{"address":[],`, 1), []string{"address: " + ruleObject}},
		{"true for time", strings.Replace(validEvent, `"2021-03-04T18:30:00Z"`, `true`, 1), []string{"start: " + ruleString}},
		{"year 1", strings.Replace(validEvent, `"2021-03-04T18:30:00Z"`, `"0001-01-01T00:00:00Z"`, 1), []string{"start: " + ruleYears}},
		{"lone surrogate", strings.Replace(validEvent, `Agnes`, `Agnes\ud800`, 1), []string{"name: " + ruleReplacement}},
		{"escaped control", strings.Replace(validEvent, `Agnes`, `Agnes\u0000`, 1), []string{"name: " + ruleOneLine}},
		{"invalid UTF-8", strings.Replace(validEvent, `Agnes`, "Agn\xe9s", 1), []string{"must be valid UTF-8 (byte 26 is not)"}},
		{"empty", ``, []string{"must be valid JSON (unexpected end of JSON input at byte 0)"}},
		{"null", `null`, []string{ruleNull}},
		{"array", `[]`, []string{ruleObject}},
		{"string", `"x"`, []string{ruleObject}},
		{"nested error under structural one", strings.Replace(validEvent, `{`, `{"address":{"street":" x","zip":1},`, 1),
			[]string{"address.zip: " + ruleUnknown, "address.zip_code: " + ruleRequired, "address.city: " + ruleRequired, "address.street: " + ruleEdgeSpace}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var e Event
			err := Decode([]byte(tt.in), &e)
			var got []string
			if err != nil {
				ve, ok := errors.AsType[ValidationErrors](err)
				if !ok {
					t.Fatalf("Decode = %v, not a ValidationErrors", err)
				}
				for _, v := range ve {
					got = append(got, v.Error())
				}
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Decode errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestDecodeResets(t *testing.T) {
	e := Event{Name: "alt", Phone: "0221 1234567", AdditionalInformation: "alt"}
	if err := Decode([]byte(validEvent), &e); err != nil {
		t.Fatal(err)
	}
	if e.Phone != "" || e.AdditionalInformation != "" || e.Name != "Chorprobe St. Agnes" {
		t.Errorf("Decode kept old fields: %+v", e)
	}
}

func TestDecodeTooLarge(t *testing.T) {
	data := bytes.Repeat([]byte(" "), MaxDocumentSize+1)
	var e Event
	err := Decode(data, &e)
	if ve, ok := errors.AsType[ValidationErrors](err); !ok || len(ve) != 1 || ve[0].Rule != ruleDocumentSize {
		t.Errorf("Decode = %v, want %q", err, ruleDocumentSize)
	}
}

// TestDecodeBounds checks that a list past its bound neither grows memory
// nor the error list without bound.
func TestDecodeBounds(t *testing.T) {
	b := guestListJSON(MaxGuests + 10)
	var l GuestList
	err := Decode(b, &l)
	ve, ok := errors.AsType[ValidationErrors](err)
	if !ok || len(ve) != 1 || ve[0].Error() != "guests: must have at most 100000 entries" {
		t.Errorf("Decode = %v", err)
	}
	if len(l.Guests) != MaxGuests {
		t.Errorf("stored %d guests, want %d", len(l.Guests), MaxGuests)
	}

	// Every guest broken: the list of errors stops at MaxErrors.
	broken := bytes.ReplaceAll(b, []byte(`"Erika"`), []byte(`"Erika1"`))
	err = Decode(broken, &l)
	ve, _ = errors.AsType[ValidationErrors](err)
	if len(ve) != MaxErrors+1 || ve[0].Error() != "guests: must have at most 100000 entries" ||
		ve[1].Error() != "guests[0].first_name: "+ruleNameChars || ve[MaxErrors].Rule != ruleMoreErrors {
		t.Errorf("Decode: %d errors, first %v, last %v", len(ve), ve[0], ve[len(ve)-1])
	}
}

// guestListJSON returns a guest list of n guests.
func guestListJSON(n int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"data_request_id":"3f2a7c1e-9b4d-4e0a-8c6f-2d5b1a9e7f30","provider":"vendor-a","location_id":"loc-4711",` +
		`"start":"2021-03-10T17:00:00Z","end":"2021-03-10T23:00:00Z","guests":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"first_name":"Erika","last_name":"Mustermann","date_of_birth":"1964-08-12","sex":"FEMALE",` +
			`"email":"erika.mustermann@example.de","phone":"0221 1234567",` +
			`"address":{"street":"Heidestraße","house_number":"17","zip_code":"51147","city":"Köln"},` +
			`"attendance":{"from":"2021-03-10T18:30:00Z","to":"2021-03-10T21:05:00Z","additional_info":"Tisch 12"}}`)
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

// BenchmarkDecodeGuestList decodes and validates a list of 1000 guests.
func BenchmarkDecodeGuestList(b *testing.B) {
	data := guestListJSON(1000)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var l GuestList
		if err := Decode(data, &l); err != nil {
			b.Fatal(err)
		}
	}
}

func TestValidationErrorsAs(t *testing.T) {
	var e Event
	err := Decode([]byte(`{"name":" x"}`), &e)
	ve, ok := errors.AsType[ValidationErrors](err)
	if !ok || len(ve) != 3 {
		t.Fatalf("Decode = %v", err)
	}
	first, ok := errors.AsType[*ValidationError](err)
	if !ok || *first != (ValidationError{Field: "start", Rule: ruleRequired}) {
		t.Errorf("first *ValidationError = %+v", first)
	}
	want := "contactdata: invalid document: start: is required; end: is required; name: " + ruleEdgeSpace
	if err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	if err := (&e).Validate(); err != nil {
		if _, ok := err.(ValidationErrors); !ok {
			t.Errorf("Validate returned %T", err)
		}
	}
	if err := goDocuments()[5].Validate(); err != nil {
		t.Errorf("Validate of a valid event = %#v, want untyped nil", err)
	}
}

func TestMemberPath(t *testing.T) {
	for _, tt := range []struct{ path, key, want string }{
		{"", "name", "name"},
		{"guests[3]", "first_name", "guests[3].first_name"},
		{"a", "", `a[""]`},
		{"a", "x.y", `a["x.y"]`},
		{"", `"`, `["\""]`},
	} {
		if got := memberPath(tt.path, tt.key); got != tt.want {
			t.Errorf("memberPath(%q, %q) = %q, want %q", tt.path, tt.key, got, tt.want)
		}
	}
}
