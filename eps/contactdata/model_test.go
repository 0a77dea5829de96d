package contactdata

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func day(s string) Date {
	d, err := ParseDate(s)
	if err != nil {
		panic(err)
	}
	return d
}

var heidestrasse = Address{Street: "Heidestraße", HouseNumber: "17", ZipCode: "51147", City: "Köln"}

// goDocuments are documents built in Go, one or more of each kind, valid.
func goDocuments() []Document {
	req := &DataRequest{
		ID:          "3f2a7c1e-9b4d-4e0a-8c6f-2d5b1a9e7f30",
		LocationID:  "loc-4711",
		Provider:    "vendor-a",
		Start:       utc("2021-03-10T17:00:00Z"),
		End:         utc("2021-03-10T23:00:00Z"),
		Reference:   "GA Köln 53.2-2021/0815",
		RequestedAt: utc("2021-03-12T09:15:27.123456789Z"),
		Status:      StatusDataRequested,
	}
	contact := ContactPerson{
		FirstName:        "Hans",
		LastName:         "Meier",
		DateOfBirth:      day("1958-02-28"),
		ContactCategory:  CategoryHighRiskMed,
		BasicConditions:  "Pflege ohne FFP2-Maske,\nca. 20 Minuten.",
		MobilePhone:      "0171-5551234",
		Address:          &Address{Street: "Kalker Hauptstraße", HouseNumber: "247-273", ZipCode: "51103", City: "Köln", Country: "DE"},
		FirstContactDate: day("2021-03-08"),
		LastContactDate:  day("2021-03-10"),
	}
	event := Event{
		Name:    "Geburtstagsfeier bei Familie Schulz",
		Address: &heidestrasse,
		Start:   utc("2021-03-06T18:00:00Z"),
		End:     utc("2021-03-06T23:30:00Z"),
	}
	return []Document{
		&Location{
			ID:   "loc-4711",
			Name: "Gasthaus Zum Löwen",
			Contact: LocationContact{
				OfficialName:   "Gasthaus Zum Löwen GmbH",
				Representative: "Erika Mustermann",
				Address:        heidestrasse,
				Email:          "info@zum-loewen.example",
			},
			Context: "Restaurant",
		},
		req,
		&GuestList{
			DataRequestID: req.ID,
			Provider:      req.Provider,
			LocationID:    req.LocationID,
			Start:         req.Start,
			End:           req.End,
			Guests: []Guest{{
				FirstName:   "Erika",
				LastName:    "Mustermann",
				DateOfBirth: day("1964-08-12"),
				Sex:         SexFemale,
				Email:       "erika.mustermann@example.de",
				Phone:       "0221 1234567",
				Address:     &heidestrasse,
				Attendance:  Attendance{From: utc("2021-03-10T18:30:00Z"), To: utc("2021-03-10T21:05:00Z"), AdditionalInfo: "Tisch 12"},
			}, {
				FirstName:   "Max",
				LastName:    "Mustermann",
				MobilePhone: "+49 171 9876543",
				Attendance:  Attendance{From: utc("2021-03-10T16:15:00Z"), To: utc("2021-03-10T17:45:00Z")},
			}},
		},
		&GuestList{ // nil Guests: encoded as []
			DataRequestID: req.ID, Provider: req.Provider, LocationID: req.LocationID, Start: req.Start, End: req.End,
		},
		&contact,
		&event,
		&IndexCaseSubmission{
			Window:                Window{Start: utc("2021-03-04T23:00:00Z"), End: utc("2021-03-14T23:00:00Z")},
			Contacts:              []ContactPerson{contact},
			Events:                []Event{event},
			AdditionalInformation: "Symptome seit dem 11. März.",
			SubmittedAt:           utc("2021-03-13T10:42:17Z"),
		},
		&IndexCaseSubmission{ // nil lists: encoded as []
			Window:      Window{Start: utc("2021-03-04T23:00:00Z"), End: utc("2021-03-14T23:00:00Z")},
			SubmittedAt: utc("2021-03-15T08:00:00Z"),
		},
	}
}

// TestRoundTripGo encodes documents built in Go and decodes them again.
func TestRoundTripGo(t *testing.T) {
	schemas := compileSchemas(t)
	for _, doc := range goDocuments() {
		t.Run(doc.schema(), func(t *testing.T) {
			if err := doc.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			enc, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			if err := schemaVerdict(schemas[doc.schema()], enc); err != nil {
				t.Errorf("schema refuses %s: %v", enc, err)
			}
			got := kinds[doc.schema()]()
			if err := Decode(enc, got); err != nil {
				t.Fatalf("Decode(%s): %v", enc, err)
			}
			want := doc
			// Decode makes [] of the lists that Go left nil.
			switch d := doc.(type) {
			case *GuestList:
				if d.Guests == nil {
					c := *d
					c.Guests = []Guest{}
					want = &c
				}
			case *IndexCaseSubmission:
				c := *d
				if c.Contacts == nil {
					c.Contacts = []ContactPerson{}
				}
				if c.Events == nil {
					c.Events = []Event{}
				}
				want = &c
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("round trip of %s:\n got %+v\nwant %+v", enc, got, want)
			}
		})
	}
}

// TestValidateGo covers what only documents built in Go can get wrong:
// times not in UTC or zero, days that do not exist, bad UTF-8.
func TestValidateGo(t *testing.T) {
	berlin := time.FixedZone("CET", 3600)
	for _, tt := range []struct {
		name   string
		change func(r *DataRequest)
		want   string // one error
	}{
		{"not UTC", func(r *DataRequest) { r.Start = r.Start.In(berlin) }, "start: " + ruleTimeUTC},
		{"local", func(r *DataRequest) { r.End = r.End.Local() }, "end: " + ruleTimeUTC},
		{"zero", func(r *DataRequest) { r.RequestedAt = time.Time{} }, "requested_at: " + ruleRequired},
		{"bad UTF-8", func(r *DataRequest) { r.Reference = "GA \xff" }, "reference: " + ruleUTF8},
		{"status", func(r *DataRequest) { r.Status = "closed" }, "status: " + ruleStatus},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := goDocuments()[1].(*DataRequest)
			tt.change(r)
			err := r.Validate()
			if err == nil || err.Error() != "contactdata: invalid document: "+tt.want {
				t.Errorf("Validate = %v, want %s", err, tt.want)
			}
		})
	}
	p := goDocuments()[4].(*ContactPerson)
	p.FirstContactDate = Date{2021, time.February, 29}
	p.DateOfBirth = Date{1850, time.January, 1}
	want := "contactdata: invalid document: date_of_birth: " + ruleBirthYears + "; first_contact_date: " + ruleDate
	if err := p.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate = %v, want %s", err, want)
	}
}

// TestNameRule checks that NameRule, which eps/submit checks the citizen's
// names with, is the rule Validate applies to first_name and last_name.
func TestNameRule(t *testing.T) {
	for _, tt := range []struct{ name, want string }{
		{"Jürgen", ""},
		{"Şahin-O’Brien", ""},
		{"d'Alembert", ""},
		{"Mu\u0308ller", ""}, // decomposed ü
		{strings.Repeat("ä", maxName), ""},
		{strings.Repeat("ä", maxName+1), ruleMaxChars(maxName)},
		{"Dr. Müller", ruleNameChars},
		{"Aylin 2", ruleNameChars},
		{"Tom\u202e", ruleNameChars},
		{" Tom", ruleEdgeSpace},
		{"- '", ruleNameLetter},
		{"", ruleNameLetter},
		{"G\xffnter", ruleUTF8},
	} {
		if got := NameRule(tt.name); got != tt.want {
			t.Errorf("NameRule(%q) = %q, want %q", tt.name, got, tt.want)
		}
		if tt.name == "" {
			continue // an absent name: ContactPerson's rule is one of the two
		}
		p := goDocuments()[4].(*ContactPerson)
		p.FirstName, p.LastName = tt.name, tt.name
		err := p.Validate()
		want := ""
		if tt.want != "" {
			want = "contactdata: invalid document: first_name: " + tt.want + "; last_name: " + tt.want
		}
		if got := fmt.Sprint(err); err == nil && want != "" || err != nil && got != want {
			t.Errorf("Validate with both names %q = %v, want %q", tt.name, err, want)
		}
	}
}

func TestValidateFor(t *testing.T) {
	for _, tt := range []struct {
		name   string
		change func(l *GuestList)
		want   []string
	}{
		{"answers", func(*GuestList) {}, nil},
		{"part of the window", func(l *GuestList) { l.Start = l.Start.Add(30 * time.Minute); l.End = l.End.Add(-30 * time.Minute) }, nil},
		{"other request", func(l *GuestList) { l.DataRequestID = NewRequestID() }, []string{"data_request_id: " + ruleMatchID}},
		{"other provider", func(l *GuestList) { l.Provider = "vendor-b" }, []string{"provider: " + ruleMatchProvider}},
		{"other location", func(l *GuestList) { l.LocationID = "loc-4712" }, []string{"location_id: " + ruleMatchLocation}},
		{"wider window", func(l *GuestList) { l.Start = l.Start.Add(-time.Second); l.End = l.End.Add(time.Second) },
			[]string{"start: " + ruleInRequestStart, "end: " + ruleInRequestEnd}},
		{"invalid on its own", func(l *GuestList) { l.Guests[0].LastName = "" }, []string{"guests[0].last_name: " + ruleRequired}},
		{"start missing", func(l *GuestList) { l.Start = time.Time{} }, []string{"start: " + ruleRequired}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			docs := goDocuments()
			r, l := docs[1].(*DataRequest), docs[2].(*GuestList)
			tt.change(l)
			var got []string
			if ve, ok := errors.AsType[ValidationErrors](l.ValidateFor(r)); ok {
				for _, e := range ve {
					got = append(got, e.Error())
				}
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ValidateFor = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTransition(t *testing.T) {
	allowed := map[[2]Status]bool{
		{StatusDataRequested, StatusDataReceived}: true,
		{StatusDataReceived, StatusClosed}:        true,
		{StatusDataRequested, StatusAborted}:      true,
		{StatusDataReceived, StatusAborted}:       true,
	}
	statuses := []Status{StatusDataRequested, StatusDataReceived, StatusClosed, StatusAborted, "", "OPEN", "data_requested"}
	n := 0
	for _, from := range statuses {
		for _, to := range statuses {
			err := Transition(from, to)
			if want := allowed[[2]Status{from, to}]; want != (err == nil) {
				t.Errorf("Transition(%q, %q) = %v, want allowed %v", from, to, err, want)
			}
			if err != nil && !errors.Is(err, ErrTransition) {
				t.Errorf("Transition(%q, %q) = %v, not ErrTransition", from, to, err)
			}
			if err == nil {
				n++
			}
		}
	}
	if n != len(allowed) {
		t.Errorf("%d transitions allowed, want %d", n, len(allowed))
	}
}

func TestNewRequestID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewRequestID()
		if r := uuidRule(id); r != "" || id[14] != '4' || !strings.ContainsRune("89ab", rune(id[19])) {
			t.Fatalf("NewRequestID() = %s: %s, or not version 4", id, r)
		}
		if seen[id] {
			t.Fatalf("NewRequestID() repeated %s", id)
		}
		seen[id] = true
	}
}

func TestDate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Date
		ok   bool
	}{
		{"2021-03-10", Date{2021, 3, 10}, true},
		{"2024-02-29", Date{2024, 2, 29}, true},
		{"0001-01-01", Date{1, 1, 1}, true},
		{"2021-02-29", Date{}, false},
		{"2021-3-10", Date{}, false},
		{"2021-03-10T00:00:00Z", Date{}, false},
		{"10.03.2021", Date{}, false},
		{"+021-03-10", Date{}, false},
		{"", Date{}, false},
	} {
		got, err := ParseDate(tt.in)
		if got != tt.want || (err == nil) != tt.ok {
			t.Errorf("ParseDate(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && strings.Contains(err.Error(), tt.in) && tt.in != "" {
			t.Errorf("ParseDate(%q) error %q quotes its input", tt.in, err)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
	d := Date{2021, 2, 28}
	if got := d.AddDays(1); got != (Date{2021, 3, 1}) {
		t.Errorf("AddDays(1) = %v", got)
	}
	if d.Compare(Date{2021, 3, 1}) != -1 || d.Compare(d) != 0 || d.Compare(Date{2020, 12, 31}) != 1 {
		t.Error("Compare is wrong")
	}
	if got := DateOf(utc("2021-03-10T23:30:00Z")); got != (Date{2021, 3, 10}) {
		t.Errorf("DateOf = %v", got)
	}
	var u Date
	if err := json.Unmarshal([]byte(`"2021-03-10"`), &u); err != nil || u != (Date{2021, 3, 10}) {
		t.Errorf("json.Unmarshal = %v, %v", u, err)
	}
	if b, _ := json.Marshal(struct {
		D Date `json:"d,omitzero"`
	}{}); string(b) != "{}" {
		t.Errorf("zero Date with omitzero encodes as %s", b)
	}
}
