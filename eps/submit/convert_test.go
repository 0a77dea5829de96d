package submit

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin and America/New_York without the system's zoneinfo

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func date(s string) contactdata.Date {
	d, err := contactdata.ParseDate(s)
	if err != nil {
		panic(err)
	}
	return d
}

// indexCaseSchema compiles docs/contact-data/index-case-submission.schema.json
// as eps/contactdata's schema tests do (their helper is internal to that
// package): every schema of the directory under its $id, draft 2020-12,
// format assertion on.
func indexCaseSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	const dir, base = "../../docs/contact-data", "https://kurier.example/schemas/contact-data/v1/"
	files, err := filepath.Glob(filepath.Join(dir, "*.schema.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no schemas in %s: %v", dir, err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := c.AddResource(base+filepath.Base(f), doc); err != nil {
			t.Fatal(err)
		}
	}
	s, err := c.Compile(base + "index-case-submission.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// realistic is a submission as the page makes it, for a case in Köln in
// March 2021 (the documentation's example window): contacts with both
// names, with the first or the last name only.
const realistic = `{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2021-03-13T10:42:17Z",
"contacts":[
 {"first_name":"Jürgen","last_name":"Groß","phone":"+49 30 1234567","category":"household","first_contact":"2021-03-01","last_contact":"2021-03-12","note":"Mein Mann.\nHat seit gestern Husten."},
 {"first_name":"Tom","email":"tom@example.de","category":"close","last_contact":"2021-03-09"},
 {"first_name":"Aylin","last_name":"Şahin-O’Brien","phone":"0221/1234567","email":"aylin@example.de","category":"work","first_contact":"2021-03-08","last_contact":"2021-03-10","note":"Gleiches Büro, mit Maske."},
 {"last_name":"Meier","phone":"0171-5551234","category":"other","first_contact":"2021-03-14","last_contact":"2021-03-14"}
],
"events":[
 {"name":"Geburtstagsfeier bei Familie Schulz","place":"Deutz-Mülheimer Straße 111, Köln","start":"2021-03-06T18:00","end":"2021-03-07T01:30","note":"Etwa 15 Gäste, drinnen."},
 {"name":"Chorprobe","place":"Gemeindehaus St. Marien","start":"2021-03-09T19:30"},
 {"name":"Arzttermin","place":"Praxis Dr. Roth","start":"2021-03-11T09:00","end":"2021-03-11T09:00"}
]}`

// realisticWindow holds every entry of realistic: 1 to 14 March 2021 in
// Köln (CET, UTC+1).
var realisticWindow = contactdata.Window{Start: utc("2021-02-28T23:00:00Z"), End: utc("2021-03-14T23:00:00Z")}

func TestIndexCaseRoundTrip(t *testing.T) {
	s, err := ParseSubmission([]byte(realistic))
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.IndexCase(berlin(t), realisticWindow)
	if err != nil {
		t.Fatalf("IndexCase: %v", err)
	}
	want := &contactdata.IndexCaseSubmission{
		Window: realisticWindow,
		Contacts: []contactdata.ContactPerson{{
			FirstName:        "Jürgen",
			LastName:         "Groß",
			ContactCategory:  contactdata.CategoryHighRisk,
			BasicConditions:  "Art des Kontakts laut Seite: Im selben Haushalt (household)\n\nMein Mann.\nHat seit gestern Husten.",
			Phone:            "+49 30 1234567",
			FirstContactDate: date("2021-03-01"),
			LastContactDate:  date("2021-03-12"),
		}, {
			FirstName:        "Tom",
			ContactCategory:  contactdata.CategoryHighRisk,
			BasicConditions:  "Art des Kontakts laut Seite: Enger Kontakt (close)\nErster Kontakt: nicht angegeben, als Tag des letzten Kontakts übernommen",
			Email:            "tom@example.de",
			FirstContactDate: date("2021-03-09"),
			LastContactDate:  date("2021-03-09"),
		}, {
			FirstName:        "Aylin",
			LastName:         "Şahin-O’Brien",
			ContactCategory:  contactdata.CategoryLowRisk,
			BasicConditions:  "Art des Kontakts laut Seite: Arbeit, Schule oder Kinderbetreuung (work)\n\nGleiches Büro, mit Maske.",
			Email:            "aylin@example.de",
			Phone:            "0221/1234567",
			FirstContactDate: date("2021-03-08"),
			LastContactDate:  date("2021-03-10"),
		}, {
			LastName:         "Meier",
			ContactCategory:  contactdata.CategoryLowRisk,
			BasicConditions:  "Art des Kontakts laut Seite: Sonstiger Kontakt (other)",
			Phone:            "0171-5551234",
			FirstContactDate: date("2021-03-14"), // the window's last local day
			LastContactDate:  date("2021-03-14"),
		}},
		Events: []contactdata.Event{{
			Name:                  "Geburtstagsfeier bei Familie Schulz",
			Start:                 utc("2021-03-06T17:00:00Z"),
			End:                   utc("2021-03-07T00:30:00Z"),
			AdditionalInformation: "Ort oder Adresse: Deutz-Mülheimer Straße 111, Köln\n\nEtwa 15 Gäste, drinnen.",
		}, {
			Name:                  "Chorprobe",
			Start:                 utc("2021-03-09T18:30:00Z"),
			End:                   utc("2021-03-09T23:00:00Z"), // midnight in Köln
			AdditionalInformation: "Ort oder Adresse: Gemeindehaus St. Marien\nEnde: nicht angegeben, als Ende des Tages übernommen",
		}, {
			Name:                  "Arzttermin",
			Start:                 utc("2021-03-11T08:00:00Z"),
			End:                   utc("2021-03-11T08:01:00Z"),
			AdditionalInformation: "Ort oder Adresse: Praxis Dr. Roth\nEnde: wie der Beginn angegeben, als eine Minute übernommen",
		}},
		SubmittedAt: utc("2021-03-13T10:42:17Z"),
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		w, _ := json.MarshalIndent(want, "", "  ")
		t.Fatalf("IndexCase =\n%s\nwant\n%s", g, w)
	}

	// The JSON is valid for the Go code and for the JSON Schema, and
	// decodes back to the same value.
	b, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := indexCaseSchema(t).Validate(inst); err != nil {
		t.Errorf("the schema refuses the result: %v\n%s", err, b)
	}
	var back contactdata.IndexCaseSubmission
	if err := contactdata.Decode(b, &back); err != nil {
		t.Fatalf("Decode: %v\n%s", err, b)
	}
	if !reflect.DeepEqual(&back, got) {
		t.Errorf("decoded %+v, want %+v", back, *got)
	}
}

func TestIndexCaseCategory(t *testing.T) {
	for _, tt := range []struct {
		page string
		want contactdata.ContactCategory
		ok   bool
	}{
		{CategoryHousehold, contactdata.CategoryHighRisk, true},
		{CategoryClose, contactdata.CategoryHighRisk, true},
		{CategoryWork, contactdata.CategoryLowRisk, true},
		{CategoryOther, contactdata.CategoryLowRisk, true},
		{"family", "", false},
		{"HIGH_RISK", "", false},
		{"", "", false},
	} {
		t.Run(tt.page, func(t *testing.T) {
			got, ok := ContactCategory(tt.page)
			if got != tt.want || ok != tt.ok {
				t.Fatalf("ContactCategory(%q) = %q, %v; want %q, %v", tt.page, got, ok, tt.want, tt.ok)
			}
			if !ok {
				return
			}
			s, err := ParseSubmission([]byte(realistic))
			if err != nil {
				t.Fatal(err)
			}
			s.Contacts[0].Category = tt.page
			ic, err := s.IndexCase(berlin(t), realisticWindow)
			if err != nil {
				t.Fatal(err)
			}
			p := ic.Contacts[0]
			if p.ContactCategory != tt.want || !strings.HasPrefix(p.BasicConditions, "Art des Kontakts laut Seite: ") ||
				!strings.Contains(p.BasicConditions, "("+tt.page+")\n") {
				t.Errorf("contact %q, %q; want %q with the page's word", p.ContactCategory, p.BasicConditions, tt.want)
			}
		})
	}
}

func TestIndexCaseDST(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name       string
		loc        *time.Location
		wall       string
		start, end string // the instant as an event's start and as its end
	}{
		{"winter", berlin(t), "2026-03-28T12:00", "2026-03-28T11:00:00Z", "2026-03-28T11:00:00Z"},
		{"summer", berlin(t), "2026-07-01T12:00", "2026-07-01T10:00:00Z", "2026-07-01T10:00:00Z"},
		// Sunday 29 March 2026: 02:00 CET becomes 03:00 CEST at 01:00Z.
		{"before the gap", berlin(t), "2026-03-29T01:59", "2026-03-29T00:59:00Z", "2026-03-29T00:59:00Z"},
		{"gap start", berlin(t), "2026-03-29T02:00", "2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z"},
		{"in the gap", berlin(t), "2026-03-29T02:30", "2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"},
		{"after the gap", berlin(t), "2026-03-29T03:00", "2026-03-29T01:00:00Z", "2026-03-29T01:00:00Z"},
		// Sunday 25 October 2026: 03:00 CEST becomes 02:00 CET at 01:00Z.
		{"before the overlap", berlin(t), "2026-10-25T01:59", "2026-10-24T23:59:00Z", "2026-10-24T23:59:00Z"},
		{"overlap start", berlin(t), "2026-10-25T02:00", "2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z"},
		{"in the overlap", berlin(t), "2026-10-25T02:30", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"},
		{"after the overlap", berlin(t), "2026-10-25T03:00", "2026-10-25T02:00:00Z", "2026-10-25T02:00:00Z"},
		// West of UTC time.Date resolves differently; resolve does not.
		{"New York gap", ny, "2026-03-08T02:30", "2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z"},
		{"New York overlap", ny, "2026-11-01T01:30", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"},
		{"UTC", time.UTC, "2026-03-29T02:30", "2026-03-29T02:30:00Z", "2026-03-29T02:30:00Z"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wall, err := time.Parse(localMinute, tt.wall)
			if err != nil {
				t.Fatal(err)
			}
			if got := resolve(wall, tt.loc, false); !got.Equal(utc(tt.start)) || got.Location() != time.UTC {
				t.Errorf("start %s = %v, want %s", tt.wall, got, tt.start)
			}
			if got := resolve(wall, tt.loc, true); !got.Equal(utc(tt.end)) || got.Location() != time.UTC {
				t.Errorf("end %s = %v, want %s", tt.wall, got, tt.end)
			}
		})
	}

	// Through IndexCase: a party through the night the clocks go back,
	// and one into the hour they skip.
	s := &Submission{Format: Format, Label: "k7x2mq", SubmittedAt: "2026-10-30T08:00:00Z",
		Events: []Event{
			{Name: "Party", Place: "Köln", Start: "2026-10-24T22:00", End: "2026-10-25T02:30"},
			{Name: "Nachtschicht", Place: "Köln", Start: "2026-10-25T02:45", End: "2026-10-25T02:45"},
		}}
	ic, err := s.IndexCase(berlin(t), contactdata.Window{Start: utc("2026-10-15T22:00:00Z"), End: utc("2026-10-29T23:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][2]string{
		{"2026-10-24T20:00:00Z", "2026-10-25T01:30:00Z"}, // the later 02:30, CET
		{"2026-10-25T00:45:00Z", "2026-10-25T01:45:00Z"}, // from the first 02:45 to the second
	} {
		if e := ic.Events[i]; !e.Start.Equal(utc(want[0])) || !e.End.Equal(utc(want[1])) {
			t.Errorf("events[%d] %v to %v, want %s to %s", i, e.Start, e.End, want[0], want[1])
		}
	}
	s = &Submission{Format: Format, Label: "k7x2mq", SubmittedAt: "2026-04-01T08:00:00Z",
		Events: []Event{{Name: "Party", Place: "Köln", Start: "2026-03-28T23:00", End: "2026-03-29T02:30"}}}
	ic, err = s.IndexCase(berlin(t), contactdata.Window{Start: utc("2026-03-20T23:00:00Z"), End: utc("2026-03-31T22:00:00Z")})
	if err != nil {
		t.Fatal(err)
	}
	if e := ic.Events[0]; !e.Start.Equal(utc("2026-03-28T22:00:00Z")) || !e.End.Equal(utc("2026-03-29T01:30:00Z")) {
		t.Errorf("party into the skipped hour: %v to %v", e.Start, e.End)
	}
}

// TestIndexCaseDSTOrder checks, minute by minute around Berlin's changes
// of 2026, that an end reading not before a start reading (which is all
// the page ensures) never resolves to an instant before the start's.
func TestIndexCaseDSTOrder(t *testing.T) {
	loc := berlin(t)
	for _, change := range []string{"2026-03-29T02:00", "2026-10-25T02:00"} {
		c, _ := time.Parse(localMinute, change)
		for w := c.Add(-3 * time.Hour); w.Before(c.Add(3 * time.Hour)); w = w.Add(time.Minute) {
			start := resolve(w, loc, false)
			for w2 := w; w2.Before(w.Add(3 * time.Hour)); w2 = w2.Add(time.Minute) {
				if end := resolve(w2, loc, true); end.Before(start) {
					t.Fatalf("start %s = %v, end %s = %v: before it", w.Format(localMinute), start, w2.Format(localMinute), end)
				}
			}
		}
	}
}

func TestIndexCaseErrors(t *testing.T) {
	for _, tt := range []struct {
		name     string
		change   func(s *Submission, w *contactdata.Window)
		want     []string // ValidationError fields, in order
		wantRule string   // of the first, if not ""
	}{
		// Names are not here: ParseSubmission refuses what the model
		// would (TestIndexCaseInput, TestParseSubmissionNames).
		{"phone the page allows", func(s *Submission, _ *contactdata.Window) { s.Contacts[0].Phone = "030.123" },
			[]string{"contacts[0].phone"}, ""},
		{"e-mail the parser allows", func(s *Submission, _ *contactdata.Window) { s.Contacts[1].Email = "tom@localhost" },
			[]string{"contacts[1].email"}, "must be an e-mail address like erika.mustermann@example.de"},
		{"contact before the window", func(s *Submission, _ *contactdata.Window) {
			s.Contacts[0].FirstContact, s.Contacts[0].LastContact = "2021-02-20", "2021-02-27"
		}, []string{"contacts[0].last_contact_date"}, "must not be before the day of window.start"},
		{"contact after the window", func(s *Submission, _ *contactdata.Window) {
			s.Contacts[3].FirstContact, s.Contacts[3].LastContact = "2021-03-16", "2021-03-16"
		}, []string{"contacts[3].first_contact_date"}, "must not be after the day of window.end"},
		{"event before the window", func(s *Submission, _ *contactdata.Window) {
			s.Events[0].Start, s.Events[0].End = "2021-02-20T18:00", "2021-02-20T23:00"
		}, []string{"events[0]"}, "must overlap the window from window.start to window.end"},
		{"event ending as the window starts", func(s *Submission, _ *contactdata.Window) {
			s.Events[0].Start, s.Events[0].End = "2021-02-28T22:00", "2021-03-01T00:00"
		}, []string{"events[0]"}, ""},
		{"several", func(s *Submission, _ *contactdata.Window) {
			s.Contacts[1].Email = "tom@localhost"
			s.Contacts[3].Phone = "110"
			s.Events[2].Start, s.Events[2].End = "2021-04-01T09:00", ""
		}, []string{"contacts[1].email", "contacts[3].phone", "events[2]"}, ""},
		{"submitted before the window", func(s *Submission, _ *contactdata.Window) { s.SubmittedAt = "2021-02-01T10:00:00Z" },
			[]string{"submitted_at"}, "must not be before window.start"},
		{"window too long", func(_ *Submission, w *contactdata.Window) { w.Start = w.End.Add(-32 * 24 * time.Hour) },
			[]string{"window.end"}, "must be at most 31 days after window.start"},
		{"no window", func(_ *Submission, w *contactdata.Window) { *w = contactdata.Window{} },
			[]string{"window.start", "window.end"}, "is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSubmission([]byte(realistic))
			if err != nil {
				t.Fatal(err)
			}
			w := realisticWindow
			tt.change(s, &w)
			got, err := s.IndexCase(berlin(t), w)
			ve, ok := errors.AsType[contactdata.ValidationErrors](err)
			if got != nil || !ok {
				t.Fatalf("IndexCase = %v, %v; want nil and a ValidationErrors", got, err)
			}
			var fields []string
			for _, e := range ve {
				fields = append(fields, e.Field)
			}
			if !slices.Equal(fields, tt.want) || tt.wantRule != "" && ve[0].Rule != tt.wantRule {
				t.Errorf("IndexCase: %v; want fields %q, first rule %q", err, tt.want, tt.wantRule)
			}
		})
	}
}

func TestIndexCaseInput(t *testing.T) {
	s, err := ParseSubmission([]byte(realistic))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.IndexCase(nil, realisticWindow); got != nil || err == nil {
		t.Errorf("IndexCase(nil, …) = %v, %v; want an error", got, err)
	}
	for _, tt := range []struct {
		name   string
		change func(s *Submission)
	}{
		{"format", func(s *Submission) { s.Format = "kurier-submission/v3" }},
		{"format before names were split", func(s *Submission) { s.Format = "kurier-submission/v1" }},
		// Refused before the conversion, which would refuse them too:
		// the page and ParseSubmission check names by the model's rule.
		{"name with a title", func(s *Submission) { s.Contacts[0].LastName = "Dr. Groß" }},
		{"name with a digit", func(s *Submission) { s.Contacts[2].FirstName = "Aylin 2" }},
		{"no name", func(s *Submission) { s.Contacts[0].FirstName, s.Contacts[0].LastName = "", "" }},
		{"name too long", func(s *Submission) { s.Contacts[3].LastName = strings.Repeat("ß", 101) }},
		{"category", func(s *Submission) { s.Contacts[0].Category = "family" }},
		{"date", func(s *Submission) { s.Contacts[0].LastContact = "12.03.2021" }},
		{"time", func(s *Submission) { s.Events[0].Start = "2021-03-06 18:00" }},
		{"submitted_at", func(s *Submission) { s.SubmittedAt = "" }},
		{"submitted_at not UTC", func(s *Submission) { s.SubmittedAt = "2021-03-13T11:42:17+01:00" }},
		{"bidi control", func(s *Submission) { s.Contacts[1].Note = "Tom\u202e" }},
		{"name of spaces", func(s *Submission) { s.Contacts[1].FirstName = "   " }},
		{"untrimmed", func(s *Submission) { s.Events[0].Place = " Köln" }},
		{"event name too long", func(s *Submission) { s.Events[0].Name = strings.Repeat("x", maxEventName+1) }},
		{"note too long for the category line", func(s *Submission) { s.Contacts[3].Note = strings.Repeat("x", maxContactNote+1) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseSubmission([]byte(realistic))
			if err != nil {
				t.Fatal(err)
			}
			tt.change(s)
			if got, err := s.IndexCase(berlin(t), realisticWindow); got != nil || !errors.Is(err, ErrBadSubmission) {
				t.Errorf("IndexCase = %v, %v; want ErrBadSubmission", got, err)
			}
		})
	}

	// The window's instants are taken in UTC; s is not changed.
	before, _ := json.Marshal(s)
	loc := berlin(t)
	w := contactdata.Window{Start: realisticWindow.Start.In(loc), End: realisticWindow.End.In(loc)}
	got, err := s.IndexCase(loc, w)
	if err != nil {
		t.Fatal(err)
	}
	if got.Window != realisticWindow {
		t.Errorf("window %v, want %v", got.Window, realisticWindow)
	}
	if after, _ := json.Marshal(s); !bytes.Equal(before, after) {
		t.Errorf("IndexCase changed the submission:\n%s\n%s", before, after)
	}
}
