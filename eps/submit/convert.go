package submit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kurier-net/kurier/eps/contactdata"
)

// ContactCategory returns the contactdata category that a page category
// (Contact.Category) becomes in IndexCase, and false for a word that is not
// one of the page's:
//
//	household → HIGH_RISK  same household: close contact (RKI category I)
//	close     → HIGH_RISK  face to face, under 1.5 m, over 10 minutes: category I
//	work      → LOW_RISK   work, school, childcare: other contact (category II)
//	other     → LOW_RISK   any other contact: category II
//
// This is a health office's judgement, made here once so that every office
// software makes it the same way, and it is a first sorting only: the page's
// categories overlap (a colleague who shared an office for hours is "work"
// and also "close"), and the office sets the category after its interview.
// HIGH_RISK_MED and NO_RISK need facts the page does not ask for (medical
// care, protective equipment), so they never result. The citizen's own word
// is kept in the contact's basic_conditions (see IndexCase).
func ContactCategory(category string) (contactdata.ContactCategory, bool) {
	switch category {
	case CategoryHousehold, CategoryClose:
		return contactdata.CategoryHighRisk, true
	case CategoryWork, CategoryOther:
		return contactdata.CategoryLowRisk, true
	}
	return "", false
}

// categoryLabel returns the page's label of a category, as its review
// shows it (CATEGORY in static/app.js).
func categoryLabel(category string) string {
	switch category {
	case CategoryHousehold:
		return "Im selben Haushalt"
	case CategoryClose:
		return "Enger Kontakt"
	case CategoryWork:
		return "Arbeit, Schule oder Kinderbetreuung"
	case CategoryOther:
		return "Sonstiger Kontakt"
	}
	return category
}

// Lines IndexCase writes into the free text of a contact or event, in German
// like the page and the office's staff who read them. Each is one line; the
// citizen's own note follows after a blank line.
const (
	lineCategory   = "Art des Kontakts laut Seite: %s (%s)" // label, page word
	lineNoFirst    = "Erster Kontakt: nicht angegeben, als Tag des letzten Kontakts übernommen"
	linePlace      = "Ort oder Adresse: %s"
	lineNoEnd      = "Ende: nicht angegeben, als Ende des Tages übernommen"
	lineEndIsStart = "Ende: wie der Beginn angegeben, als eine Minute übernommen"
)

// IndexCase converts s, the page's submission, into the network's data
// model for window, the span of time the office asked the index case about
// (its instants are taken in UTC). loc is the office's time zone, in which
// the citizen entered the events' times, e.g. Europe/Berlin. s must be a
// valid submission (ParseSubmission's checks); if it is not, the error
// matches ErrBadSubmission.
//
// The conversion, entry for entry and in the same order, so that contacts[i]
// and events[i] of the result are the citizen's i-th entries:
//
//   - Text is trimmed of whitespace at either end, as the page does before
//     sealing; nothing else in it is changed.
//   - A contact's first_name and last_name become the model's first_name
//     and last_name; ParseSubmission (and the page) have checked them with
//     the model's rule, and one may be absent, as the model allows.
//   - Its category maps as ContactCategory says. basic_conditions starts
//     with the page's category ("Art des Kontakts laut Seite: Im selben
//     Haushalt (household)"), then, after a blank line, the citizen's note.
//   - Its dates stay dates. A first contact the citizen left out becomes the
//     day of the last contact, and basic_conditions says so.
//   - An event's place goes into additional_information ("Ort oder Adresse:
//     …"), followed by the note after a blank line. Its start and end are
//     local times in loc, converted to UTC as the widest span they can mean:
//     a start in an hour that the clock goes through twice (October in
//     Europe/Berlin) is the earlier instant, an end there the later one; a
//     time in an hour the clock skips (March) is read with the offset after
//     the change for a start and the offset before it for an end, so
//     02:30 on 29 March 2026 in Europe/Berlin is 00:30Z as a start and
//     01:30Z as an end. An end left out becomes the end of the start's day
//     (the next local midnight), and an end equal to the start one minute
//     after it; the text says which.
//   - submitted_at is converted to UTC; the link's label is not carried over.
//
// The result passes IndexCaseSubmission.Validate, or IndexCase returns nil
// and a contactdata.ValidationErrors (errors.As finds it) listing every rule
// the converted entries break, with the paths of the result: a phone number
// the model refuses ("contacts[2].phone"), a note that with the lines above
// exceeds 2000 characters, a contact that does not overlap the window
// ("contacts[2].last_contact_date: must not be before the day of
// window.start"), an event wholly outside it ("events[0]: must overlap …").
// Names are not among them: ParseSubmission's checks, which IndexCase
// repeats, refuse every name the model would.
// Such entries are refused, not dropped or clipped: the office has the whole
// submission, and no date is changed to fit.
//
// IndexCase only reads s, so it may run concurrently on the same submission.
func (s *Submission) IndexCase(loc *time.Location, window contactdata.Window) (*contactdata.IndexCaseSubmission, error) {
	if loc == nil {
		return nil, errors.New("submit: IndexCase needs the office's time zone")
	}
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSubmission, err)
	}
	submitted, err := time.Parse(time.RFC3339, s.SubmittedAt)
	if err != nil { // check parsed it
		return nil, fmt.Errorf("%w: submitted_at: %v", ErrBadSubmission, err)
	}
	out := &contactdata.IndexCaseSubmission{
		Window:      contactdata.Window{Start: window.Start.UTC(), End: window.End.UTC()},
		Contacts:    make([]contactdata.ContactPerson, len(s.Contacts)),
		Events:      make([]contactdata.Event, len(s.Events)),
		SubmittedAt: submitted.UTC(),
	}
	for i := range s.Contacts {
		p, err := s.Contacts[i].person()
		if err != nil {
			return nil, fmt.Errorf("%w: contacts[%d].%v", ErrBadSubmission, i, err)
		}
		out.Contacts[i] = p
	}
	for i := range s.Events {
		e, err := s.Events[i].event(loc)
		if err != nil {
			return nil, fmt.Errorf("%w: events[%d].%v", ErrBadSubmission, i, err)
		}
		out.Events[i] = e
	}
	if err := out.Validate(); err != nil {
		return nil, fmt.Errorf("submit: submission %s as an IndexCaseSubmission: %w", s.Label, err)
	}
	return out, nil
}

// person converts a contact that passed check.
func (c *Contact) person() (contactdata.ContactPerson, error) {
	cat, ok := ContactCategory(c.Category)
	if !ok {
		return contactdata.ContactPerson{}, errors.New("category: want household, close, work or other")
	}
	last, err := contactdata.ParseDate(c.LastContact)
	if err != nil {
		return contactdata.ContactPerson{}, fmt.Errorf("last_contact: %v", err)
	}
	lines := []string{fmt.Sprintf(lineCategory, categoryLabel(c.Category), c.Category)}
	first := last
	if c.FirstContact == "" {
		lines = append(lines, lineNoFirst)
	} else if first, err = contactdata.ParseDate(c.FirstContact); err != nil {
		return contactdata.ContactPerson{}, fmt.Errorf("first_contact: %v", err)
	}
	return contactdata.ContactPerson{
		FirstName:        contactdata.Trim(c.FirstName),
		LastName:         contactdata.Trim(c.LastName),
		ContactCategory:  cat,
		BasicConditions:  withNote(lines, c.Note),
		Email:            contactdata.Trim(c.Email),
		Phone:            contactdata.Trim(c.Phone),
		FirstContactDate: first,
		LastContactDate:  last,
	}, nil
}

// event converts an event that passed check, its times read in loc.
func (e *Event) event(loc *time.Location) (contactdata.Event, error) {
	startWall, err := time.Parse(localMinute, e.Start)
	if err != nil {
		return contactdata.Event{}, fmt.Errorf("start: %v", err)
	}
	start := resolve(startWall, loc, false)
	lines := []string{fmt.Sprintf(linePlace, contactdata.Trim(e.Place))}
	var end time.Time
	if e.End == "" {
		y, m, d := startWall.Date()
		end = resolve(time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC), loc, true)
		lines = append(lines, lineNoEnd)
	} else {
		endWall, err := time.Parse(localMinute, e.End)
		if err != nil {
			return contactdata.Event{}, fmt.Errorf("end: %v", err)
		}
		end = resolve(endWall, loc, true)
	}
	if !end.After(start) { // the same wall time: end is never before start (see resolve)
		end = start.Add(time.Minute)
		lines = append(lines, lineEndIsStart)
	}
	return contactdata.Event{
		Name:                  contactdata.Trim(e.Name),
		Start:                 start,
		End:                   end,
		AdditionalInformation: withNote(lines, e.Note),
	}, nil
}

// resolve returns the UTC instant that wall, a wall-clock reading given as
// a time in UTC, means in loc: the earliest instant it can mean, or the
// latest if latest is set. Usually there is one. In an hour that the clock
// goes through twice there are two, one per offset. In an hour the clock
// skips there is none, and the reading is taken with either offset, the one
// after the change giving the earlier instant and the one before it the
// later: what a clock that was changed early or late would have shown.
//
// Reading a start with latest false and an end with latest true gives the
// widest span the two readings can mean, and an end reading not before the
// start reading never gives an instant before the start's.
//
// It looks at the offsets a day before and a day after wall, so it assumes
// that loc changes its offset at most once in two days, as every real zone
// does. (time.Date is no help here: in a gap or an overlap it picks one of
// the two offsets without saying which.)
func resolve(wall time.Time, loc *time.Location, latest bool) time.Time {
	_, before := wall.Add(-24 * time.Hour).In(loc).Zone()
	_, after := wall.Add(24 * time.Hour).In(loc).Zone()
	var found []time.Time
	for _, off := range []int{before, after} {
		t := wall.Add(-time.Duration(off) * time.Second)
		if sameWall(t.In(loc), wall) {
			found = append(found, t)
		}
	}
	if len(found) == 0 { // a skipped hour: both offsets
		found = []time.Time{wall.Add(-time.Duration(before) * time.Second), wall.Add(-time.Duration(after) * time.Second)}
	}
	t := found[0]
	for _, u := range found[1:] {
		if latest == u.After(t) {
			t = u
		}
	}
	return t.UTC()
}

// sameWall reports whether t shows the wall-clock minute of wall.
func sameWall(t, wall time.Time) bool {
	y1, m1, d1 := t.Date()
	y2, m2, d2 := wall.Date()
	return y1 == y2 && m1 == m2 && d1 == d2 && t.Hour() == wall.Hour() && t.Minute() == wall.Minute()
}

// withNote joins lines and, after a blank line, note (trimmed) if it is not
// empty.
func withNote(lines []string, note string) string {
	if note = contactdata.Trim(note); note != "" {
		lines = append(lines, "", note)
	}
	return strings.Join(lines, "\n")
}
