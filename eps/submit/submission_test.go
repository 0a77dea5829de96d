package submit

import (
	"errors"
	"strings"
	"testing"

	"github.com/kurier-net/kurier/eps/contactdata"
)

func TestParseSubmission(t *testing.T) {
	const ok = `{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-03-01T10:00:00Z",
	"contacts":[{"first_name":"Jürgen","last_name":"Groß","phone":"+49 30 1234567","category":"household","first_contact":"2026-02-20","last_contact":"2026-02-27","note":"Zeile 1\nZeile 2"}],
	"events":[{"name":"Geburtstagsfeier","place":"Musterstraße 1, Berlin","start":"2026-02-25T19:00","end":"2026-02-25T23:30"}]}`
	s, err := ParseSubmission([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Contacts) != 1 || s.Contacts[0].FirstName != "Jürgen" || s.Contacts[0].LastName != "Groß" || len(s.Events) != 1 || s.Events[0].End != "2026-02-25T23:30" {
		t.Errorf("parsed %+v", s)
	}
	for _, tt := range []struct{ name, old, new, want string }{
		{"format", `kurier-submission/v2`, `kurier-submission/v3`, "format: want"},
		{"format 1", `kurier-submission/v2`, `kurier-submission/v1`, "format: kurier-submission/v1 (one name field) is no longer read"},
		{"one name field", `"first_name":"Jürgen","last_name":"Groß"`, `"name":"Jürgen Groß"`, `unknown field "name"`},
		{"unknown field", `"label"`, `"secret":"x","label"`, `unknown field "secret"`},
		{"label", `"k7x2mq"`, `"K7X2MQ"`, "label:"},
		{"submitted_at", `2026-03-01T10:00:00Z`, `gestern`, "submitted_at:"},
		{"no name", `"first_name":"Jürgen","last_name":"Groß",`, ``, "contacts[0]: neither first_name nor last_name"},
		{"empty names", `"first_name":"Jürgen","last_name":"Groß"`, `"first_name":"","last_name":""`, "contacts[0]: neither first_name nor last_name"},
		{"title", `"Groß"`, `"Dr. Groß"`, "contacts[0].last_name: may contain only letters, spaces, hyphens and apostrophes"},
		{"digit", `"Jürgen"`, `"Jürgen 2"`, "contacts[0].first_name: may contain only letters, spaces, hyphens and apostrophes"},
		{"no phone nor email", `"phone":"+49 30 1234567",`, ``, "contacts[0]: neither phone nor email"},
		{"category", `"household"`, `"family"`, "contacts[0].category: want household, close, work or other"},
		{"no last contact", `,"last_contact":"2026-02-27"`, ``, "contacts[0].last_contact is empty"},
		{"date format", `"2026-02-27"`, `"27.02.2026"`, "contacts[0].last_contact: want YYYY-MM-DD"},
		{"impossible date", `"2026-02-27"`, `"2026-02-30"`, "contacts[0].last_contact: want YYYY-MM-DD"},
		{"first after last", `"2026-02-20"`, `"2026-02-28"`, "contacts[0].first_contact: after last_contact"},
		{"control character", `Zeile 1\nZeile 2`, `Zeile 1\u0007`, "contacts[0].note has a control character"},
		{"no place", `"Musterstraße 1, Berlin"`, `""`, "events[0].place is empty"},
		{"end before start", `"2026-02-25T23:30"`, `"2026-02-25T18:00"`, "events[0].end: before start"},
		{"start with seconds", `"2026-02-25T19:00"`, `"2026-02-25T19:00:00"`, "events[0].start: want YYYY-MM-DDTHH:MM"},
		{"trailing data", `]}`, `]}{}`, "data after the object"},
		{"nothing", `"contacts":[{"first_name":"Jürgen","last_name":"Groß","phone":"+49 30 1234567","category":"household","first_contact":"2026-02-20","last_contact":"2026-02-27","note":"Zeile 1\nZeile 2"}],
	"events":[{"name":"Geburtstagsfeier","place":"Musterstraße 1, Berlin","start":"2026-02-25T19:00","end":"2026-02-25T23:30"}]`, `"contacts":[],"events":[]`, "no contacts and no events"},
		{"long name", `"Groß"`, `"` + strings.Repeat("x", 101) + `"`, "contacts[0].last_name: must be at most 100 characters"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Replace(ok, tt.old, tt.new, 1)
			if in == ok {
				t.Fatalf("%q not in the submission", tt.old)
			}
			_, err := ParseSubmission([]byte(in))
			if !errors.Is(err, ErrBadSubmission) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseSubmission = %v, want ErrBadSubmission saying %q", err, tt.want)
			}
		})
	}
}

// TestParseSubmissionNames checks that ParseSubmission takes a contact's
// first and last name exactly when the contact-data model does, names the
// field by its path, and never quotes the name.
func TestParseSubmissionNames(t *testing.T) {
	const tpl = `{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-03-01T10:00:00Z","contacts":[
	{"first_name":"Erika","email":"erika@example.de","category":"close","last_contact":"2026-02-27"},
	{"first_name":"Jürgen","last_name":"Groß","phone":"+49 30 1234567","category":"household","last_contact":"2026-02-27"},
	{"FIELD":VALUE,"phone":"+49 30 1234567","category":"work","last_contact":"2026-02-27"}],"events":[]}`
	for _, name := range []string{
		"Groß", "Şahin-O’Brien", "d'Alembert", "Mu\u0308ller", "Zoë Anne", "Иван", "李", "Ngũgĩ wa", strings.Repeat("ä", 100),
		"Dr. Müller", "Prof Dr. Groß", "Aylin 2", "Anna,", "O\"Brien", "Tom\u202e", "Tom\u200b", "Tom\t", " Tom", "Tom ",
		"- '", "\u0308", "Tom\u0000", strings.Repeat("ä", 101), "\ufffd",
	} {
		for _, field := range []string{"first_name", "last_name"} {
			in := strings.NewReplacer("FIELD", field, "VALUE", mustJSON(t, name)).Replace(tpl) // as the page's JSON.stringify
			s, err := ParseSubmission([]byte(in))
			rule := contactdata.NameRule(name)
			switch {
			case rule == "" && err != nil:
				t.Errorf("%s %q: the model takes it, ParseSubmission says %v", field, name, err)
			case rule == "" && (s.Contacts[2].FirstName+s.Contacts[2].LastName != name):
				t.Errorf("%s %q: parsed as %+v", field, name, s.Contacts[2])
			case rule != "" && !errors.Is(err, ErrBadSubmission):
				t.Errorf("%s %q: the model says %q, ParseSubmission = %v", field, name, rule, err)
			case rule != "" && !strings.HasSuffix(err.Error(), ": contacts[2]."+field+": "+rule):
				t.Errorf("%s %q: ParseSubmission = %v, want contacts[2].%s: %s", field, name, err, field, rule)
			case rule != "" && strings.TrimSpace(name) != "" && strings.Contains(err.Error(), strings.TrimSpace(name)):
				t.Errorf("%s %q: the error quotes the name: %v", field, name, err)
			}
		}
	}
}
