package submit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/kurier-net/kurier/eps/contactdata"
)

// Format is Submission.Format of the version of the page in static/.
//
// Version 1 had one field for a contact's name ("name"); version 2 has
// first_name and last_name. ParseSubmission reads version 2 only: the page
// and the parser are served by the same binary, and a version 1 document
// (from a page loaded before an upgrade) is refused as such, with its
// format named, for the office to read by hand.
const Format = "kurier-submission/v2"

// formatV1 is the format before contacts had first and last names.
const formatV1 = "kurier-submission/v1"

// ErrBadSubmission is returned by ParseSubmission for plaintext that is not
// a valid Submission.
var ErrBadSubmission = errors.New("submit: invalid submission")

// Bounds on a submission; the page enforces the same. They leave room for
// the conversion to the contact-data model (IndexCase): a contact's first
// and last name are the model's, checked with its rule
// (contactdata.NameRule: at most 100 characters), an event's name stays a
// name (at most 200), and a note shares the model's 2000 characters with
// the lines the conversion adds (the category; an event's place).
const (
	maxEntries     = 500 // contacts, and events
	maxText        = 500 // characters of one field
	maxPhone       = 30
	maxEventName   = 200
	maxContactNote = 1800
	maxEventNote   = 1400
)

// Submission is what the page seals: the plaintext of the envelope, as
// JSON. The office opens the envelope (seal.Open with Link.Context) and
// decodes the plaintext with ParseSubmission.
// IndexCase converts it into the data model, a contactdata.IndexCaseSubmission.
type Submission struct {
	// Format is the constant Format, "kurier-submission/v2".
	Format string `json:"format"`
	// Label is the link's label, so a plaintext found on its own still
	// names its case.
	Label string `json:"label"`
	// SubmittedAt is the browser's clock when sealing (RFC 3339, UTC). It
	// is the citizen's claim, not a trusted time.
	SubmittedAt string `json:"submitted_at"`
	// Contacts are the contact persons, in the order entered.
	Contacts []Contact `json:"contacts"`
	// Events are the events, in the order entered.
	Events []Event `json:"events"`
}

// Contact categories (the page's choices).
const (
	CategoryHousehold = "household" // lives in the same household
	CategoryClose     = "close"     // close contact: face to face, under 1.5 m, over 10 minutes
	CategoryWork      = "work"      // at work, school or childcare
	CategoryOther     = "other"     // any other contact
)

// Contact is one contact person.
type Contact struct {
	// FirstName and LastName: at least one is set, since people often
	// know a contact by one name only. Each is a name by the contact-data
	// model's rule (contactdata.NameRule): at most 100 characters, only
	// letters, spaces, hyphens and apostrophes, at least one letter; so
	// "Dr. Müller" is refused here, and on the page, not at the office.
	FirstName string `json:"first_name,omitempty"`
	LastName  string `json:"last_name,omitempty"`
	// Phone and Email: at least one is set.
	Phone string `json:"phone,omitempty"`
	Email string `json:"email,omitempty"`
	// Category is one of the Category constants.
	Category string `json:"category"`
	// FirstContact (optional) and LastContact are dates, YYYY-MM-DD.
	FirstContact string `json:"first_contact,omitempty"`
	LastContact  string `json:"last_contact"`
	Note         string `json:"note,omitempty"`
}

// Event is one event the index case attended.
type Event struct {
	Name  string `json:"name"`
	Place string `json:"place"`
	// Start and End (optional) are local date and time, YYYY-MM-DDTHH:MM,
	// as the citizen entered them (no zone: the office's local time).
	Start string `json:"start"`
	End   string `json:"end,omitempty"`
	Note  string `json:"note,omitempty"`
}

// ParseSubmission decodes and checks a submission strictly: one JSON object,
// no unknown fields, the bounds and formats the page enforces. Errors match
// ErrBadSubmission and name the field by its path in the submission, with
// indices from 0 ("contacts[2].last_name: may contain only letters, spaces,
// hyphens and apostrophes"); they never quote the citizen's values.
func ParseSubmission(b []byte) (*Submission, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Submission
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSubmission, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the object", ErrBadSubmission)
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSubmission, err)
	}
	return &s, nil
}

func (s *Submission) check() error {
	if s.Format == formatV1 {
		return fmt.Errorf("format: %s (one name field) is no longer read; want %s", formatV1, Format)
	}
	if s.Format != Format {
		return fmt.Errorf("format: want %q", Format)
	}
	if !validLabel(s.Label) {
		return errors.New("label: want 1-32 of a-z, 0-9")
	}
	if t, err := time.Parse(time.RFC3339, s.SubmittedAt); err != nil || !strings.HasSuffix(s.SubmittedAt, "Z") || t.Format(time.RFC3339Nano) != s.SubmittedAt {
		return errors.New("submitted_at: want an RFC 3339 time in UTC (Z)")
	}
	if len(s.Contacts) > maxEntries || len(s.Events) > maxEntries {
		return fmt.Errorf("at most %d contacts and %d events", maxEntries, maxEntries)
	}
	if len(s.Contacts)+len(s.Events) == 0 {
		return errors.New("no contacts and no events")
	}
	for i, c := range s.Contacts {
		if err := c.check(fmt.Sprintf("contacts[%d]", i)); err != nil {
			return err
		}
	}
	for i, e := range s.Events {
		if err := e.check(fmt.Sprintf("events[%d]", i)); err != nil {
			return err
		}
	}
	return nil
}

// check checks the contact at path, "contacts[i]".
func (c *Contact) check(path string) error {
	if err := personName(path+".first_name", c.FirstName); err != nil {
		return err
	}
	if err := personName(path+".last_name", c.LastName); err != nil {
		return err
	}
	if c.FirstName == "" && c.LastName == "" {
		return fmt.Errorf("%s: neither first_name nor last_name", path)
	}
	if err := text(path+".phone", c.Phone, false, maxPhone); err != nil {
		return err
	}
	if err := text(path+".email", c.Email, false, maxText); err != nil {
		return err
	}
	if c.Phone == "" && c.Email == "" {
		return fmt.Errorf("%s: neither phone nor email", path)
	}
	switch c.Category {
	case CategoryHousehold, CategoryClose, CategoryWork, CategoryOther:
	default:
		return fmt.Errorf("%s.category: want household, close, work or other", path)
	}
	if err := when(path+".first_contact", c.FirstContact, time.DateOnly, false); err != nil {
		return err
	}
	if err := when(path+".last_contact", c.LastContact, time.DateOnly, true); err != nil {
		return err
	}
	if c.FirstContact != "" && c.FirstContact > c.LastContact { // same layout: compares as dates
		return fmt.Errorf("%s.first_contact: after last_contact", path)
	}
	return text(path+".note", c.Note, false, maxContactNote)
}

const localMinute = "2006-01-02T15:04"

// check checks the event at path, "events[i]".
func (e *Event) check(path string) error {
	if err := text(path+".name", e.Name, true, maxEventName); err != nil {
		return err
	}
	if err := text(path+".place", e.Place, true, maxText); err != nil {
		return err
	}
	if err := when(path+".start", e.Start, localMinute, true); err != nil {
		return err
	}
	if err := when(path+".end", e.End, localMinute, false); err != nil {
		return err
	}
	if e.End != "" && e.End < e.Start {
		return fmt.Errorf("%s.end: before start", path)
	}
	return text(path+".note", e.Note, false, maxEventNote)
}

// personName checks a person's first or last name at path: absent (""), or
// a name by the contact-data model's rule, which IndexCase's result is
// validated with. The error is the model's rule, which never quotes s.
func personName(path, s string) error {
	if s == "" {
		return nil
	}
	if rule := contactdata.NameRule(s); rule != "" {
		return fmt.Errorf("%s: %s", path, rule)
	}
	return nil
}

// text checks the free-text field at path name: bounded, trimmed, no
// control characters (but line breaks and tabs, which a pasted note may
// have).
func text(name, s string, required bool, max int) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s is empty", name)
		}
		return nil
	}
	if !utf8.ValidString(s) || utf8.RuneCountInString(s) > max {
		return fmt.Errorf("%s: want at most %d characters of UTF-8", name, max)
	}
	if strings.TrimSpace(s) != s {
		return fmt.Errorf("%s: not trimmed", name)
	}
	for _, r := range s {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return fmt.Errorf("%s has a control character", name)
		}
		if contactdata.IsBidiControl(r) {
			return fmt.Errorf("%s has a bidirectional control character", name)
		}
	}
	return nil
}

// layoutName says a time layout as people write it. Errors never quote
// the citizen's values: office software may log them.
func layoutName(layout string) string {
	if layout == time.DateOnly {
		return "YYYY-MM-DD"
	}
	return "YYYY-MM-DDTHH:MM"
}

func when(name, s, layout string, required bool) error {
	if s == "" {
		if required {
			return fmt.Errorf("%s is empty", name)
		}
		return nil
	}
	if t, err := time.Parse(layout, s); err != nil || t.Format(layout) != s {
		return fmt.Errorf("%s: want %s", name, layoutName(layout))
	}
	return nil
}
