// Package contactdata is the data model of the contact-data flows between
// health offices and the providers of check-in apps (docs/contact-data.md):
//
//   - a provider publishes its Locations;
//   - an office sends a DataRequest for the guests of one location in a
//     window of time, and the provider answers with a GuestList;
//   - an index case submits an IndexCaseSubmission, their ContactPersons
//     and Events, through a one-time link.
//
// Each of these types decodes strictly with Decode and checks itself with
// Validate; the JSON Schemas in docs/contact-data/ (draft 2020-12) state the
// same rules for other implementations. A few rules compare fields with
// each other (end after start, a guest's stay overlapping the list's
// window); only the Go code checks those, and docs/contact-data.md lists
// them.
//
// Errors are a ValidationErrors: one ValidationError per broken rule, with
// the JSON path of the field ("guests[3].attendance.to") and the rule in
// English ("must be after attendance.from"), for the office's page to
// translate and show next to the field. Rules never quote the value.
//
// Nothing is normalized. Text with whitespace at either end, a time with an
// offset other than Z, an upper-case UUID are refused with the rule they
// break rather than trimmed or converted, so that a value means the same to
// every party that stores or compares it, and a sender's bug shows at once.
//
// Validate, ValidateFor and encoding only read a value, so they may run
// concurrently on the same value; Decode writes the value it is given.
package contactdata
