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
)

// Format is Submission.Format of the version of the page in static/.
const Format = "kurier-submission/v1"

// ErrBadSubmission is returned by ParseSubmission for plaintext that is not
// a valid Submission.
var ErrBadSubmission = errors.New("submit: invalid submission")

// Bounds on a submission; the page enforces the same. They leave room for
// the conversion to the contact-data model (IndexCase): a contact's name
// becomes its last_name (at most 100), an event's name stays a name (at
// most 200), and a note shares the model's 2000 characters with the lines
// the conversion adds (the category; an event's place).
const (
	maxEntries     = 500 // contacts, and events
	maxText        = 500 // characters of one field
	maxContactName = 100
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
	// Format is "kurier-submission/v1".
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
	Name string `json:"name"`
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
// ErrBadSubmission.
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
		if err := c.check(); err != nil {
			return fmt.Errorf("contact %d: %v", i+1, err)
		}
	}
	for i, e := range s.Events {
		if err := e.check(); err != nil {
			return fmt.Errorf("event %d: %v", i+1, err)
		}
	}
	return nil
}

func (c *Contact) check() error {
	if err := text("name", c.Name, true, maxContactName); err != nil {
		return err
	}
	if err := text("phone", c.Phone, false, maxPhone); err != nil {
		return err
	}
	if err := text("email", c.Email, false, maxText); err != nil {
		return err
	}
	if c.Phone == "" && c.Email == "" {
		return errors.New("neither phone nor email")
	}
	switch c.Category {
	case CategoryHousehold, CategoryClose, CategoryWork, CategoryOther:
	default:
		return errors.New("category: want household, close, work or other")
	}
	if err := when("first_contact", c.FirstContact, time.DateOnly, false); err != nil {
		return err
	}
	if err := when("last_contact", c.LastContact, time.DateOnly, true); err != nil {
		return err
	}
	if c.FirstContact != "" && c.FirstContact > c.LastContact { // same layout: compares as dates
		return errors.New("first contact after last contact")
	}
	return text("note", c.Note, false, maxContactNote)
}

const localMinute = "2006-01-02T15:04"

func (e *Event) check() error {
	if err := text("name", e.Name, true, maxEventName); err != nil {
		return err
	}
	if err := text("place", e.Place, true, maxText); err != nil {
		return err
	}
	if err := when("start", e.Start, localMinute, true); err != nil {
		return err
	}
	if err := when("end", e.End, localMinute, false); err != nil {
		return err
	}
	if e.End != "" && e.End < e.Start {
		return errors.New("end before start")
	}
	return text("note", e.Note, false, maxEventNote)
}

// text checks a free-text field: bounded, trimmed, no control characters
// (but line breaks and tabs, which a pasted note may have).
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
		// Bidirectional overrides and isolates could make a name or note
		// display as something else in the office's software.
		if 0x202a <= r && r <= 0x202e || 0x2066 <= r && r <= 0x2069 {
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
