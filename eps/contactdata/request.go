package contactdata

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// MaxRequestWindow is the longest time window a DataRequest (and so a
// GuestList) may cover. Fourteen days is the horizon German contact tracing
// worked with (incubation period, and how far back an index case's contacts
// were traced); asking a venue for more at once would hand over the data of
// many guests who cannot matter. An office that needs more sends more
// requests, each of which is recorded.
const MaxRequestWindow = 14 * 24 * time.Hour

// Status is where a DataRequest stands.
//
//	DATA_REQUESTED ──guest list arrives──▶ DATA_RECEIVED ──office is done──▶ CLOSED
//	      │                                      │
//	      └──────────office withdraws────────────┴──────────▶ ABORTED
//
// CLOSED and ABORTED are final.
type Status string

// The statuses of a DataRequest.
const (
	StatusDataRequested Status = "DATA_REQUESTED" // sent to the provider, no answer yet
	StatusDataReceived  Status = "DATA_RECEIVED"  // the provider's guest list has arrived
	StatusClosed        Status = "CLOSED"         // the office is done with it
	StatusAborted       Status = "ABORTED"        // withdrawn before it was closed
)

// Valid reports whether s is one of the four statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusDataRequested, StatusDataReceived, StatusClosed, StatusAborted:
		return true
	}
	return false
}

// ErrTransition is returned, wrapped, by Transition for a change of status
// that the state machine does not have.
var ErrTransition = errors.New("contactdata: status transition not allowed")

// Transition returns nil if a DataRequest may go from status from to status
// to, and an error wrapping ErrTransition otherwise. The transitions are
// DATA_REQUESTED → DATA_RECEIVED → CLOSED, and DATA_REQUESTED or
// DATA_RECEIVED → ABORTED. Staying in the same status is not a transition:
// a caller that wants an idempotent update checks for equality first.
func Transition(from, to Status) error {
	switch {
	case from == StatusDataRequested && (to == StatusDataReceived || to == StatusAborted),
		from == StatusDataReceived && (to == StatusClosed || to == StatusAborted):
		return nil
	case !from.Valid() || !to.Valid():
		return fmt.Errorf("%w: %q to %q: unknown status", ErrTransition, from, to)
	}
	return fmt.Errorf("%w: %s to %s", ErrTransition, from, to)
}

// A DataRequest is a health office's request to a provider for the guests
// of one of its locations in a window of time. The office creates it
// (StatusDataRequested) and sends it to the provider; the provider answers
// with a GuestList that passes GuestList.ValidateFor.
//
// The office is not named in the request: the provider knows it as the
// verified peer that sent the request, never from the payload.
type DataRequest struct {
	ID         string `json:"id"`          // required: a UUID the office chose, see NewRequestID
	LocationID string `json:"location_id"` // required: Location.ID at the provider
	Provider   string `json:"provider"`    // required: the member name of the provider (pki.ValidName)
	// Start and End are the window the office asks for, in UTC: End after
	// Start, at most MaxRequestWindow later.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Reference is the office's case number ("Aktenzeichen"), at most 64
	// characters, so that its staff find their case again.
	Reference string `json:"reference,omitempty"`
	// RequestedAt is when the office made the request, in UTC; not before
	// Start, since a window that has not begun has no guests yet.
	RequestedAt time.Time `json:"requested_at"`
	Status      Status    `json:"status"` // required
}

// NewRequestID returns a random (version 4) UUID for DataRequest.ID.
func NewRequestID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func (*DataRequest) schema() string { return "data-request" }

// Validate checks r and returns nil or a ValidationErrors.
func (r *DataRequest) Validate() error {
	var c checker
	r.validate(&c)
	return c.err()
}

const (
	ruleStatus       = "must be one of DATA_REQUESTED, DATA_RECEIVED, CLOSED, ABORTED"
	ruleAfterStart   = "must be after start"
	ruleRequestLong  = "must be at most 14 days after start"
	ruleNotBeforeReq = "must not be before start"
)

func (r *DataRequest) validate(c *checker) {
	c.required("", "id", r.ID, uuidRule)
	c.required("", "location_id", r.LocationID, locationIDRule)
	c.required("", "provider", r.Provider, memberRule)
	start := c.time("", "start", r.Start)
	end := c.time("", "end", r.End)
	if start && end {
		window(c, "end", r.Start, r.End, ruleAfterStart, MaxRequestWindow, ruleRequestLong)
	}
	c.optional("", "reference", r.Reference, line(maxReference))
	if c.time("", "requested_at", r.RequestedAt) && start && r.RequestedAt.Before(r.Start) {
		c.fail("requested_at", ruleNotBeforeReq)
	}
	if r.Status == "" {
		c.fail("status", ruleRequired)
	} else if !r.Status.Valid() {
		c.fail("status", ruleStatus)
	}
}

// window checks that end (at field) is after start, and at most max later.
func window(c *checker, field string, start, end time.Time, ruleAfter string, max time.Duration, ruleLong string) {
	switch {
	case !end.After(start):
		c.fail(field, ruleAfter)
	case end.Sub(start) > max:
		c.fail(field, ruleLong)
	}
}
