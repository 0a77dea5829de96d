package contactdata

import (
	"encoding/json"
	"fmt"
	"time"
)

// MaxGuests is the most guests one GuestList may carry: a day of a large
// venue. Decode stops storing list entries past it, so a document's
// memory stays bounded whatever it holds.
const MaxGuests = 100_000

// A GuestList is a provider's answer to a DataRequest: the guests of the
// location whose stay overlaps the window.
//
// Provider is the sender. The flow checks that it is the verified peer that
// sent the list, and ValidateFor checks that the list answers the request.
type GuestList struct {
	DataRequestID string `json:"data_request_id"` // required: DataRequest.ID
	Provider      string `json:"provider"`        // required: DataRequest.Provider
	LocationID    string `json:"location_id"`     // required: DataRequest.LocationID
	// Start and End are the window the list covers: the request's, or a
	// part of it. End is after Start, at most MaxRequestWindow later.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Guests are at most MaxGuests guests. The list is required but may be
	// empty: nobody checked in during the window. A nil Guests is encoded
	// as [].
	Guests []Guest `json:"guests"`
}

// A Guest is one guest's check-in at a location.
//
// A guest must be reachable: at least one of Email, Phone, MobilePhone and
// Address is required. (Check-in rules required contact details; a guest
// without any is of no use to tracing, and would likely mean a vendor bug.)
type Guest struct {
	FirstName   string     `json:"first_name"`             // required; letters, spaces, hyphens, apostrophes; at most 100
	LastName    string     `json:"last_name"`              // required; letters, spaces, hyphens, apostrophes; at most 100
	DateOfBirth Date       `json:"date_of_birth,omitzero"` // years 1900 to 2099, not after the attendance
	Sex         Sex        `json:"sex,omitempty"`          // "" means not given
	Email       string     `json:"email,omitempty"`        // an e-mail address (its shape is checked)
	Phone       string     `json:"phone,omitempty"`        // a phone number: +, digits, spaces and ( ) / -
	MobilePhone string     `json:"mobile_phone,omitempty"` // as Phone
	Address     *Address   `json:"address,omitempty"`      // nil means not given
	Attendance  Attendance `json:"attendance"`             // required
}

// Attendance is when a guest was at the location. It must overlap the
// GuestList's window, but need not lie within it: a guest who came before
// the window began and stayed into it is exactly whom the office looks for,
// and clipping the times would falsify them.
type Attendance struct {
	From time.Time `json:"from"` // required, UTC
	To   time.Time `json:"to"`   // required, UTC, after From
	// AdditionalInfo is what else the provider knows (table, area), at
	// most 2000 characters.
	AdditionalInfo string `json:"additional_info,omitempty"`
}

// Sex is a guest's sex as the check-in recorded it: the German civil
// register's choices, less "no entry", which is an absent field.
type Sex string

// The values of Sex.
const (
	SexFemale  Sex = "FEMALE"
	SexMale    Sex = "MALE"
	SexDiverse Sex = "DIVERSE"
)

const (
	ruleSex            = "must be one of FEMALE, MALE, DIVERSE"
	ruleAfterFrom      = "must be after attendance.from"
	ruleOverlapList    = "must overlap the guest list's window from start to end"
	ruleBornBeforeStay = "must not be after the day of attendance.from"
	ruleMatchID        = "must be the id of the request"
	ruleMatchProvider  = "must be the provider of the request"
	ruleMatchLocation  = "must be the location_id of the request"
	ruleInRequestStart = "must not be before the request's start"
	ruleInRequestEnd   = "must not be after the request's end"
)

// MarshalJSON encodes l with a nil Guests as [], since guests is required.
func (l GuestList) MarshalJSON() ([]byte, error) {
	type plain GuestList // without this method
	if l.Guests == nil {
		l.Guests = []Guest{}
	}
	return json.Marshal(plain(l))
}

func (*GuestList) schema() string { return "guest-list" }

// Validate checks l on its own and returns nil or a ValidationErrors.
func (l *GuestList) Validate() error {
	var c checker
	l.validate(&c)
	return c.err()
}

// ValidateFor checks that l is valid and answers r: the same id, provider
// and location, and a window within r's (equal to it, or a part of it). It
// returns nil or a ValidationErrors. Whether r still waits for an answer
// (its Status) is the flow's business.
func (l *GuestList) ValidateFor(r *DataRequest) error {
	var c checker
	start, end := l.validate(&c)
	if l.DataRequestID != r.ID {
		c.fail("data_request_id", ruleMatchID)
	}
	if l.Provider != r.Provider {
		c.fail("provider", ruleMatchProvider)
	}
	if l.LocationID != r.LocationID {
		c.fail("location_id", ruleMatchLocation)
	}
	if start && l.Start.Before(r.Start) {
		c.fail("start", ruleInRequestStart)
	}
	if end && l.End.After(r.End) {
		c.fail("end", ruleInRequestEnd)
	}
	return c.err()
}

// validate checks l and reports whether Start and End are valid times.
func (l *GuestList) validate(c *checker) (startOK, endOK bool) {
	c.required("", "data_request_id", l.DataRequestID, uuidRule)
	c.required("", "provider", l.Provider, memberRule)
	c.required("", "location_id", l.LocationID, locationIDRule)
	start := c.time("", "start", l.Start)
	end := c.time("", "end", l.End)
	ok := start && end
	if ok {
		window(c, "end", l.Start, l.End, ruleAfterStart, MaxRequestWindow, ruleRequestLong)
		ok = l.End.After(l.Start)
	}
	if len(l.Guests) > MaxGuests {
		c.fail("guests", ruleMaxEntries(MaxGuests))
	}
	for i := range l.Guests {
		if c.full {
			break // nothing more would be recorded
		}
		g := &l.Guests[i]
		g.validate(c, fmt.Sprintf("guests[%d]", i), ok, l.Start, l.End)
	}
	return start, end
}

// validate checks g at path; if windowOK, its attendance must overlap the
// window from start to end.
func (g *Guest) validate(c *checker, path string, windowOK bool, start, end time.Time) {
	c.required(path, "first_name", g.FirstName, nameRule)
	c.required(path, "last_name", g.LastName, nameRule)
	born := c.date(path, "date_of_birth", g.DateOfBirth, false, minBirthYear)
	if g.Sex != "" && g.Sex != SexFemale && g.Sex != SexMale && g.Sex != SexDiverse {
		c.fail(join(path, "sex"), ruleSex)
	}
	c.optional(path, "email", g.Email, emailRule)
	c.optional(path, "phone", g.Phone, phoneRule)
	c.optional(path, "mobile_phone", g.MobilePhone, phoneRule)
	if g.Address != nil {
		g.Address.validate(c, join(path, "address"))
	}
	if g.Email == "" && g.Phone == "" && g.MobilePhone == "" && g.Address == nil {
		c.fail(path, ruleContactMeans)
	}
	a := &g.Attendance
	ap := join(path, "attendance")
	from := c.time(ap, "from", a.From)
	to := c.time(ap, "to", a.To)
	if from && to && !a.To.After(a.From) {
		c.fail(join(ap, "to"), ruleAfterFrom)
	} else if from && to && windowOK && !(a.From.Before(end) && a.To.After(start)) {
		c.fail(ap, ruleOverlapList)
	}
	c.optional(ap, "additional_info", a.AdditionalInfo, text(maxInfo))
	if born && from && g.DateOfBirth.Compare(DateOf(a.From)) > 0 {
		c.fail(join(path, "date_of_birth"), ruleBornBeforeStay)
	}
}
