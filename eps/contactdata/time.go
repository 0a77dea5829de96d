package contactdata

import (
	"cmp"
	"errors"
	"fmt"
	"time"
)

// Years that times and dates may lie in. Contact data of this kind starts
// with the pandemic; the bounds also catch a zero time.Time
// (0001-01-01T00:00:00Z) and a year typed with one digit too few or many.
const (
	minYear      = 2020
	maxYear      = 2099
	minBirthYear = 1900
)

const (
	ruleTime       = "must be a time in UTC like 2021-03-10T18:30:00Z (RFC 3339, ending in Z)"
	ruleTimeUTC    = "must be in UTC"
	ruleYears      = "must lie in the years 2020 to 2099"
	ruleDate       = "must be a date like 2021-03-10"
	ruleBirthYears = "must lie in the years 1900 to 2099"
)

// parseTime parses a timestamp as this package writes and accepts them:
// RFC 3339 in UTC with the offset written "Z", "T" in capitals, and 0 to 9
// digits of fractions of a second: 2021-03-10T18:30:00Z,
// 2021-03-10T18:30:00.250Z. Offsets such as +01:00 or +00:00 are refused
// rather than converted, so that a time is written one way only and a
// sender that sends local times finds out at once.
func parseTime(s string) (time.Time, bool) {
	const shape = "dddd-dd-ddTdd:dd:dd"
	if len(s) < len(shape)+1 || s[len(s)-1] != 'Z' {
		return time.Time{}, false
	}
	for i := 0; i < len(shape); i++ {
		if shape[i] == 'd' && !isDigit(s[i]) || shape[i] != 'd' && s[i] != shape[i] {
			return time.Time{}, false
		}
	}
	if frac := s[len(shape) : len(s)-1]; frac != "" {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return time.Time{}, false
		}
		for i := 1; i < len(frac); i++ {
			if !isDigit(frac[i]) {
				return time.Time{}, false
			}
		}
	}
	t, err := time.Parse(time.RFC3339Nano, s) // checks the calendar: no 2021-02-30, no 24:00
	return t, err == nil
}

// time checks a required timestamp and reports whether it is usable for
// comparisons with other fields.
func (c *checker) time(path, name string, t time.Time) bool {
	field := func() string { return join(path, name) }
	switch {
	case t.IsZero():
		c.fail(field(), ruleRequired)
	case t.Location() != time.UTC:
		c.fail(field(), ruleTimeUTC)
	case t.Year() < minYear || t.Year() > maxYear:
		c.fail(field(), ruleYears)
	default:
		return true
	}
	return false
}

// A Date is a calendar day without a time or a zone, written YYYY-MM-DD in
// JSON. Dates of contacts are days as the people involved lived them, that
// is in German local time. The zero Date means "not given".
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// errDate is ParseDate's error; it does not quote the input, which may be a
// date of birth.
var errDate = errors.New("contactdata: not a date like 2021-03-10")

// ParseDate parses a date written YYYY-MM-DD, refusing days that do not
// exist (2021-02-29).
func ParseDate(s string) (Date, error) {
	const shape = "dddd-dd-dd"
	if len(s) != len(shape) {
		return Date{}, errDate
	}
	for i := 0; i < len(shape); i++ {
		if shape[i] == 'd' && !isDigit(s[i]) || shape[i] != 'd' && s[i] != shape[i] {
			return Date{}, errDate
		}
	}
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, errDate
	}
	return DateOf(t), nil
}

// DateOf returns the day of t in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// IsZero reports whether d is the zero Date, which encoding/json's omitzero
// leaves out.
func (d Date) IsZero() bool { return d == Date{} }

// Compare returns -1, 0 or +1 as d is before, equal to or after e.
func (d Date) Compare(e Date) int {
	switch {
	case d.Year != e.Year:
		return cmp.Compare(d.Year, e.Year)
	case d.Month != e.Month:
		return cmp.Compare(d.Month, e.Month)
	default:
		return cmp.Compare(d.Day, e.Day)
	}
}

// AddDays returns the day n days after d (before it if n < 0).
func (d Date) AddDays(n int) Date {
	return DateOf(time.Date(d.Year, d.Month, d.Day+n, 0, 0, 0, 0, time.UTC))
}

// valid reports whether d is a day that exists, in years 1 to 9999.
func (d Date) valid() bool {
	return 1 <= d.Year && d.Year <= 9999 && d.AddDays(0) == d
}

// String returns d as YYYY-MM-DD.
func (d Date) String() string {
	return fmt.Sprintf("%04d-%02d-%02d", d.Year, int(d.Month), d.Day)
}

// MarshalText returns d as YYYY-MM-DD. It does not check d; Validate does.
func (d Date) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a date as ParseDate does.
func (d *Date) UnmarshalText(b []byte) error {
	v, err := ParseDate(string(b))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// date checks a date and reports whether it is usable for comparisons. min
// is the first year allowed; the last is maxYear.
func (c *checker) date(path, name string, d Date, required bool, min int) bool {
	field := func() string { return join(path, name) }
	switch {
	case d.IsZero():
		if required {
			c.fail(field(), ruleRequired)
		}
	case !d.valid():
		c.fail(field(), ruleDate)
	case d.Year < min || d.Year > maxYear:
		if min == minBirthYear {
			c.fail(field(), ruleBirthYears)
		} else {
			c.fail(field(), ruleYears)
		}
	default:
		return true
	}
	return false
}
