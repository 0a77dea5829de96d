package contactdata

import (
	"strings"
)

// MaxErrors is how many errors a ValidationErrors lists at most. Past it, one
// more entry with an empty Field says that there were more, so a document
// with 100 000 broken guests costs no more to report than one with 101.
const MaxErrors = 100

// A ValidationError is one rule a document breaks.
//
// Field is the JSON path of the value, in the document's JSON names, with
// list indices from 0: "guests[3].attendance.to". It is empty when the rule
// is about the document as a whole (not JSON, too large, not an object).
// A member that is not a known field is named as it appeared, quoted as
// ["..."] if it is not a plain identifier, and cut at 64 bytes.
//
// Rule is what the value must be, in English, starting with "must", "is" or
// "may": "must be after attendance.from". Rules never quote the value, so an
// error is safe to log although documents carry personal data. Other fields
// a rule refers to are named by their path inside the same list entry (or
// the document), so a rule's text does not depend on indices and can serve
// as a key for translation.
type ValidationError struct {
	Field string
	Rule  string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Rule
	}
	return e.Field + ": " + e.Rule
}

// ValidationErrors is every rule a document breaks, at most MaxErrors of
// them (plus one entry saying there were more). Decode lists the errors of
// the JSON structure (unknown, repeated, missing or mistyped members) in
// document order, then those of the content in the order of the fields,
// less those about a value that was missing or could not be decoded, which
// the first already report.
//
// It is never empty when returned as an error. errors.As finds it, and also
// its first *ValidationError.
type ValidationErrors []*ValidationError

func (es ValidationErrors) Error() string {
	var b strings.Builder
	b.WriteString("contactdata: invalid document: ")
	for i, e := range es {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the errors as a []error, for errors.As and errors.Is.
func (es ValidationErrors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

// ruleMoreErrors is the Rule of the entry appended after MaxErrors errors.
const ruleMoreErrors = "has more errors than listed here"

// checker collects ValidationErrors up to MaxErrors.
type checker struct {
	errs ValidationErrors
	full bool // errs holds MaxErrors entries and the ruleMoreErrors entry
}

func (c *checker) fail(field, rule string) {
	switch {
	case c.full:
	case len(c.errs) < MaxErrors:
		c.errs = append(c.errs, &ValidationError{Field: field, Rule: rule})
	default:
		c.errs = append(c.errs, &ValidationError{Rule: ruleMoreErrors})
		c.full = true
	}
}

// err returns the collected errors, or nil if there are none. It returns an
// untyped nil, never a nil ValidationErrors in an error.
func (c *checker) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return c.errs
}

// within reports whether field is path or a path inside it.
func within(field, path string) bool {
	rest, ok := strings.CutPrefix(field, path)
	return ok && path != "" && (rest == "" || rest[0] == '.' || rest[0] == '[')
}

// join appends a member name to a path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
