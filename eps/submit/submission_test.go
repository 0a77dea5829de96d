package submit

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSubmission(t *testing.T) {
	const ok = `{"format":"kurier-submission/v1","label":"k7x2mq","submitted_at":"2026-03-01T10:00:00Z",
	"contacts":[{"name":"Jürgen Groß","phone":"+49 30 1234567","category":"household","first_contact":"2026-02-20","last_contact":"2026-02-27","note":"Zeile 1\nZeile 2"}],
	"events":[{"name":"Geburtstagsfeier","place":"Musterstraße 1, Berlin","start":"2026-02-25T19:00","end":"2026-02-25T23:30"}]}`
	s, err := ParseSubmission([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Contacts) != 1 || s.Contacts[0].Name != "Jürgen Groß" || len(s.Events) != 1 || s.Events[0].End != "2026-02-25T23:30" {
		t.Errorf("parsed %+v", s)
	}
	for _, tt := range []struct{ name, old, new string }{
		{"format", `kurier-submission/v1`, `kurier-submission/v2`},
		{"unknown field", `"label"`, `"secret":"x","label"`},
		{"label", `"k7x2mq"`, `"K7X2MQ"`},
		{"submitted_at", `2026-03-01T10:00:00Z`, `gestern`},
		{"no name", `"Jürgen Groß"`, `""`},
		{"no phone nor email", `"phone":"+49 30 1234567",`, ``},
		{"category", `"household"`, `"family"`},
		{"no last contact", `,"last_contact":"2026-02-27"`, ``},
		{"date format", `"2026-02-27"`, `"27.02.2026"`},
		{"impossible date", `"2026-02-27"`, `"2026-02-30"`},
		{"first after last", `"2026-02-20"`, `"2026-02-28"`},
		{"control character", `Zeile 1\nZeile 2`, `Zeile 1\u0007`},
		{"no place", `"Musterstraße 1, Berlin"`, `""`},
		{"end before start", `"2026-02-25T23:30"`, `"2026-02-25T18:00"`},
		{"start with seconds", `"2026-02-25T19:00"`, `"2026-02-25T19:00:00"`},
		{"trailing data", `]}`, `]}{}`},
		{"nothing", `"contacts":[{"name":"Jürgen Groß","phone":"+49 30 1234567","category":"household","first_contact":"2026-02-20","last_contact":"2026-02-27","note":"Zeile 1\nZeile 2"}],
	"events":[{"name":"Geburtstagsfeier","place":"Musterstraße 1, Berlin","start":"2026-02-25T19:00","end":"2026-02-25T23:30"}]`, `"contacts":[],"events":[]`},
		{"long name", `"Jürgen Groß"`, `"` + strings.Repeat("x", 501) + `"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			in := strings.Replace(ok, tt.old, tt.new, 1)
			if in == ok {
				t.Fatalf("%q not in the submission", tt.old)
			}
			if _, err := ParseSubmission([]byte(in)); !errors.Is(err, ErrBadSubmission) {
				t.Errorf("ParseSubmission = %v, want ErrBadSubmission", err)
			}
		})
	}
}
