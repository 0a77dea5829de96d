package contactdata

import (
	"encoding/json"
	"fmt"
	"time"
)

// Bounds of an IndexCaseSubmission.
const (
	// MaxSubmissionWindow is the longest window an index case reports on:
	// two weeks back to find the source of an infection and two forward
	// for those it may have passed on to, with a few days to spare.
	MaxSubmissionWindow = 31 * 24 * time.Hour
	MaxContacts         = 1000
	MaxEvents           = 1000
)

// ContactCategory is how close a contact was, in IRIS connect's categories,
// which follow the Robert Koch Institute's contact person categories.
type ContactCategory string

// The values of ContactCategory.
const (
	CategoryHighRisk    ContactCategory = "HIGH_RISK"     // close contact (category I)
	CategoryHighRiskMed ContactCategory = "HIGH_RISK_MED" // close contact in medical care
	CategoryLowRisk     ContactCategory = "LOW_RISK"      // other contact (category II)
	CategoryNoRisk      ContactCategory = "NO_RISK"       // e.g. medical staff with protective equipment
)

// A ContactPerson is someone an index case met, as the index case reports
// them. At least one of FirstName and LastName is required: people often
// know a contact by one name only, and the office can still find them. For
// the same reason no contact details are required.
type ContactPerson struct {
	FirstName   string `json:"first_name,omitempty"`   // as Guest.FirstName; one of the two is required
	LastName    string `json:"last_name,omitempty"`    // as Guest.LastName
	DateOfBirth Date   `json:"date_of_birth,omitzero"` // years 1900 to 2099, not after FirstContactDate
	// ContactCategory is required: the page explains the categories.
	ContactCategory ContactCategory `json:"contact_category"`
	// BasicConditions are the circumstances of the contact (masks,
	// distance, indoors), at most 2000 characters.
	BasicConditions string   `json:"basic_conditions,omitempty"`
	Email           string   `json:"email,omitempty"`
	Phone           string   `json:"phone,omitempty"`
	MobilePhone     string   `json:"mobile_phone,omitempty"`
	Address         *Address `json:"address,omitempty"`
	// FirstContactDate and LastContactDate are required days (German
	// local time), years 2020 to 2099; LastContactDate is not before
	// FirstContactDate.
	FirstContactDate Date `json:"first_contact_date"`
	LastContactDate  Date `json:"last_contact_date"`
}

// An Event is an occasion an index case attended: a party, a service, a
// training.
type Event struct {
	Name    string   `json:"name"`              // required, at most 200 characters
	Phone   string   `json:"phone,omitempty"`   // of the host or venue
	Address *Address `json:"address,omitempty"` // nil means not given
	// Start and End are required, in UTC; End is after Start.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// AdditionalInformation is what else the index case wants to say, at
	// most 2000 characters.
	AdditionalInformation string `json:"additional_information,omitempty"`
}

// An IndexCaseSubmission is what an index case (a citizen who tested
// positive) submits through the one-time link the health office gave them:
// their contacts and events in the window the office asked about.
//
// Contacts and Events are required but may be empty (an index case who met
// nobody says so); nil slices are encoded as []. Every contact's days must
// fall within the window, and every event must overlap it.
type IndexCaseSubmission struct {
	Window   Window          `json:"window"`   // required
	Contacts []ContactPerson `json:"contacts"` // at most MaxContacts
	Events   []Event         `json:"events"`   // at most MaxEvents
	// AdditionalInformation is free text from the index case, at most
	// 10 000 characters.
	AdditionalInformation string `json:"additional_information,omitempty"`
	// SubmittedAt is the browser's clock when the page sealed the
	// submission, in UTC, not before Window.Start: the citizen's claim,
	// not a trusted time.
	SubmittedAt time.Time `json:"submitted_at"`
}

// A Window is the span of time an IndexCaseSubmission covers, in UTC: End
// is after Start and at most MaxSubmissionWindow later.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

const (
	ruleCategory        = "must be one of HIGH_RISK, HIGH_RISK_MED, LOW_RISK, NO_RISK"
	ruleContactName     = "must have first_name or last_name"
	ruleLastContact     = "must not be before first_contact_date"
	ruleBornBeforeMeet  = "must not be after first_contact_date"
	ruleWindowAfter     = "must be after window.start"
	ruleWindowLong      = "must be at most 31 days after window.start"
	ruleNotBeforeWindow = "must not be before window.start"
	ruleContactStart    = "must not be before the day of window.start"
	ruleContactEnd      = "must not be after the day of window.end"
	ruleOverlapWindow   = "must overlap the window from window.start to window.end"
)

// MarshalJSON encodes s with nil Contacts and Events as [], since both are
// required.
func (s IndexCaseSubmission) MarshalJSON() ([]byte, error) {
	type plain IndexCaseSubmission // without this method
	if s.Contacts == nil {
		s.Contacts = []ContactPerson{}
	}
	if s.Events == nil {
		s.Events = []Event{}
	}
	return json.Marshal(plain(s))
}

func (*ContactPerson) schema() string       { return "contact-person" }
func (*Event) schema() string               { return "event" }
func (*IndexCaseSubmission) schema() string { return "index-case-submission" }

// Validate checks p on its own and returns nil or a ValidationErrors.
func (p *ContactPerson) Validate() error {
	var c checker
	p.validate(&c, "", nil)
	return c.err()
}

// Validate checks e on its own and returns nil or a ValidationErrors.
func (e *Event) Validate() error {
	var c checker
	e.validate(&c, "", nil)
	return c.err()
}

// Validate checks s and returns nil or a ValidationErrors.
func (s *IndexCaseSubmission) Validate() error {
	var c checker
	s.validate(&c)
	return c.err()
}

func (s *IndexCaseSubmission) validate(c *checker) {
	start := c.time("window", "start", s.Window.Start)
	end := c.time("window", "end", s.Window.End)
	var w *Window
	if start && end {
		window(c, "window.end", s.Window.Start, s.Window.End, ruleWindowAfter, MaxSubmissionWindow, ruleWindowLong)
		if s.Window.End.After(s.Window.Start) {
			w = &s.Window
		}
	}
	if len(s.Contacts) > MaxContacts {
		c.fail("contacts", ruleMaxEntries(MaxContacts))
	}
	for i := range s.Contacts {
		if c.full {
			return
		}
		s.Contacts[i].validate(c, fmt.Sprintf("contacts[%d]", i), w)
	}
	if len(s.Events) > MaxEvents {
		c.fail("events", ruleMaxEntries(MaxEvents))
	}
	for i := range s.Events {
		if c.full {
			return
		}
		s.Events[i].validate(c, fmt.Sprintf("events[%d]", i), w)
	}
	c.optional("", "additional_information", s.AdditionalInformation, text(maxNote))
	if c.time("", "submitted_at", s.SubmittedAt) && start && s.SubmittedAt.Before(s.Window.Start) {
		c.fail("submitted_at", ruleNotBeforeWindow)
	}
}

// validate checks p at path; if w is not nil, its days must fall within w.
//
// The days are German local days and the window's ends are UTC instants.
// Germany is ahead of UTC, so a contact within the window happened no
// earlier than the UTC day of w.Start and no later than the day after the
// UTC day of w.End; that is what is checked, and it never refuses a true
// contact.
func (p *ContactPerson) validate(c *checker, path string, w *Window) {
	c.optional(path, "first_name", p.FirstName, nameRule)
	c.optional(path, "last_name", p.LastName, nameRule)
	if p.FirstName == "" && p.LastName == "" {
		c.fail(path, ruleContactName)
	}
	born := c.date(path, "date_of_birth", p.DateOfBirth, false, minBirthYear)
	switch p.ContactCategory {
	case CategoryHighRisk, CategoryHighRiskMed, CategoryLowRisk, CategoryNoRisk:
	case "":
		c.fail(join(path, "contact_category"), ruleRequired)
	default:
		c.fail(join(path, "contact_category"), ruleCategory)
	}
	c.optional(path, "basic_conditions", p.BasicConditions, text(maxInfo))
	c.optional(path, "email", p.Email, emailRule)
	c.optional(path, "phone", p.Phone, phoneRule)
	c.optional(path, "mobile_phone", p.MobilePhone, phoneRule)
	if p.Address != nil {
		p.Address.validate(c, join(path, "address"))
	}
	first := c.date(path, "first_contact_date", p.FirstContactDate, true, minYear)
	last := c.date(path, "last_contact_date", p.LastContactDate, true, minYear)
	if first && last && p.LastContactDate.Compare(p.FirstContactDate) < 0 {
		c.fail(join(path, "last_contact_date"), ruleLastContact)
	}
	if born && first && p.DateOfBirth.Compare(p.FirstContactDate) > 0 {
		c.fail(join(path, "date_of_birth"), ruleBornBeforeMeet)
	}
	if w == nil {
		return
	}
	// The contact must overlap the window, not lie within it: someone the
	// index case has lived with for years is a contact of the window too.
	if last && p.LastContactDate.Compare(DateOf(w.Start)) < 0 {
		c.fail(join(path, "last_contact_date"), ruleContactStart)
	}
	if first && p.FirstContactDate.Compare(DateOf(w.End).AddDays(1)) > 0 {
		c.fail(join(path, "first_contact_date"), ruleContactEnd)
	}
}

// validate checks e at path; if w is not nil, e must overlap it.
func (e *Event) validate(c *checker, path string, w *Window) {
	c.required(path, "name", e.Name, line(maxLine))
	c.optional(path, "phone", e.Phone, phoneRule)
	if e.Address != nil {
		e.Address.validate(c, join(path, "address"))
	}
	start := c.time(path, "start", e.Start)
	end := c.time(path, "end", e.End)
	if start && end && !e.End.After(e.Start) {
		c.fail(join(path, "end"), ruleAfterStart)
	} else if start && end && w != nil && !(e.Start.Before(w.End) && e.End.After(w.Start)) {
		c.fail(path, ruleOverlapWindow)
	}
	c.optional(path, "additional_information", e.AdditionalInformation, text(maxInfo))
}
