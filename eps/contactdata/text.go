package contactdata

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/kurier-net/kurier/pki"
)

// Rules of the string formats. The patterns in
// docs/contact-data/common.schema.json say the same (schema_test.go and
// FuzzRules check that they agree).
const (
	ruleRequired     = "is required"
	ruleUTF8         = "must be valid UTF-8"
	ruleEdgeSpace    = "must not start or end with whitespace"
	ruleOneLine      = "must be one line without control characters"
	ruleControl      = "must not contain control characters other than tab and line breaks"
	ruleBidi         = "must not contain bidirectional control characters"
	ruleReplacement  = "must not contain U+FFFD, the mark of text broken in transcoding"
	ruleNameChars    = "may contain only letters, spaces, hyphens and apostrophes"
	ruleNameLetter   = "must contain a letter"
	ruleEmail        = "must be an e-mail address like erika.mustermann@example.de"
	rulePhone        = "must be a phone number like +49 221 1234567: at least 5 digits, with spaces and ( ) / - between them and an optional leading +"
	ruleZipDE        = "must be a German postcode of 5 digits, like 51147"
	ruleZip          = "must be a postcode of 1 to 10 letters, digits, spaces and hyphens"
	ruleCountry      = "must be an ISO 3166-1 alpha-2 country code in capitals, like DE"
	ruleUUID         = "must be a UUID in lowercase, like 3f2a7c1e-9b4d-4e0a-8c6f-2d5b1a9e7f30"
	ruleNilUUID      = "must not be the nil UUID"
	ruleLocationID   = "must be 1 to 128 of A-Z a-z 0-9 . _ ~ : -, starting with a letter or digit"
	ruleMember       = "must be a member name: 1 to 63 of a-z 0-9 -, not starting or ending with -"
	ruleMemberAnon   = "must not be the reserved member name anonymous"
	ruleContactMeans = "must have at least one of email, phone, mobile_phone or address"
)

func ruleMaxChars(n int) string { return fmt.Sprintf("must be at most %d characters", n) }

// Lengths in characters (Unicode code points, as JSON Schema's maxLength
// counts them).
const (
	maxName        = 100 // first_name, last_name
	maxLine        = 200 // names of places and events, street, representative
	maxCity        = 100
	maxHouseNumber = 16
	maxZip         = 10
	maxEmail       = 254 // RFC 5321's path limit less the angle brackets
	maxEmailLocal  = 64
	maxPhone       = 30
	maxContext     = 100
	maxReference   = 64
	maxInfo        = 2000 // additional_info, additional_information, basic_conditions
	maxNote        = 10000
	maxLocationID  = 128
)

// IsBidiControl reports whether r is a bidirectional override or isolate,
// which could make a name or note display as something else in an
// office's software; no text field of the model may hold one.
func IsBidiControl(r rune) bool {
	return 0x202A <= r && r <= 0x202E || 0x2066 <= r && r <= 0x2069
}

// isSpace reports whether r may not start or end a text: Unicode separators
// (Z) and the control characters that are whitespace.
func isSpace(r rune) bool { return unicode.IsSpace(r) || unicode.Is(unicode.Z, r) }

// Trim removes what may not start or end a text of the model (isSpace)
// from both ends of s.
func Trim(s string) string { return strings.TrimFunc(s, isSpace) }

// edgeRule checks that s neither starts nor ends with whitespace.
func edgeRule(s string) string {
	first, _ := utf8.DecodeRuneInString(s)
	last, _ := utf8.DecodeLastRuneInString(s)
	if isSpace(first) || isSpace(last) {
		return ruleEdgeSpace
	}
	return ""
}

// textRule returns the first rule that s, non-empty text of at most max
// characters, breaks, or "". A single line (multiline false) has no
// control characters and no line or paragraph separator; text of several
// lines may also have tab, CR and LF, and U+2028 and U+2029 but not at the
// start or end.
//
// Schema: $defs/line: ^E(L*E)?$ where L is any character but Cc, Zl, Zp,
// bidi controls and U+FFFD, and E is L less the separators (Z).
// $defs/text: ^E((T|M)*E)?$ with M any character but Cc, bidi controls and
// U+FFFD, and T tab, CR and LF.
func textRule(s string, max int, multiline bool) string {
	if !utf8.ValidString(s) {
		return ruleUTF8
	}
	if utf8.RuneCountInString(s) > max {
		return ruleMaxChars(max)
	}
	for _, r := range s {
		switch {
		case !multiline && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029'):
			return ruleOneLine
		case multiline && unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r':
			return ruleControl
		case IsBidiControl(r):
			return ruleBidi
		case r == utf8.RuneError:
			return ruleReplacement
		}
	}
	return edgeRule(s)
}

// NameRule returns the rule that s breaks as a person's first or last name
// (of a ContactPerson or a Guest), worded as a ValidationError's Rule and
// never quoting s, or "" if s is a valid name. It is the rule Validate
// applies, for code that checks names before they become a document (the
// citizen's page in eps/submit). The empty name breaks a rule; whether a
// name may be left out is the caller's to decide.
func NameRule(s string) string { return nameRule(s) }

func isNameRune(r rune) bool {
	return unicode.IsLetter(r) || unicode.Is(unicode.M, r) || r == ' ' || r == '-' || r == '\'' || r == '’'
}

// nameRule checks a person's name: letters (with combining marks, so
// decomposed umlauts pass), spaces, hyphens and apostrophes (' and ’), at
// least one letter, no space at either end.
//
// Schema: $defs/personName: ^(AS*)?\p{L}(S*A)?$ where S is \p{L}\p{M}'’ - and
// A is S less the space.
func nameRule(s string) string {
	if !utf8.ValidString(s) {
		return ruleUTF8
	}
	if utf8.RuneCountInString(s) > maxName {
		return ruleMaxChars(maxName)
	}
	letter := false
	for _, r := range s {
		if !isNameRune(r) {
			return ruleNameChars
		}
		letter = letter || unicode.IsLetter(r)
	}
	if s != "" && (s[0] == ' ' || s[len(s)-1] == ' ') {
		return ruleEdgeSpace
	}
	if !letter {
		return ruleNameLetter
	}
	return ""
}

// isAddrRune reports whether r may appear in an e-mail address (but '@'
// and '.' have their places).
func isAddrRune(r rune) bool {
	return !unicode.IsControl(r) && !unicode.Is(unicode.Z, r) && !IsBidiControl(r) && r != utf8.RuneError
}

// emailRule checks the shape of an e-mail address, no more: one '@', a
// local part of 1 to 64 characters, a domain of at least two dot-separated
// labels, no whitespace or control characters anywhere. Whether it is
// deliverable is for the office to find out.
//
// Schema: $defs/email.
func emailRule(s string) string {
	if !utf8.ValidString(s) {
		return ruleUTF8
	}
	if utf8.RuneCountInString(s) > maxEmail {
		return ruleMaxChars(maxEmail)
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || utf8.RuneCountInString(local) > maxEmailLocal || strings.ContainsRune(domain, '@') {
		return ruleEmail
	}
	for _, r := range local {
		if !isAddrRune(r) {
			return ruleEmail
		}
	}
	// Labels: non-empty, at least two.
	if domain == "" || domain[0] == '.' || domain[len(domain)-1] == '.' ||
		!strings.Contains(domain, ".") || strings.Contains(domain, "..") {
		return ruleEmail
	}
	for _, r := range domain {
		if !isAddrRune(r) {
			return ruleEmail
		}
	}
	return ""
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// phoneRule checks a phone number as people write them in Germany:
// "+49 221 1234567", "0221/1234567", "(0221) 123 45 67", "0171-1234567".
//
// Schema: $defs/phone: ^\+?\(?[0-9]([ ()/-]*[0-9]){4,}$, at most 30.
func phoneRule(s string) string {
	if utf8.RuneCountInString(s) > maxPhone {
		return ruleMaxChars(maxPhone)
	}
	rest := strings.TrimPrefix(s, "+")
	rest = strings.TrimPrefix(rest, "(")
	if rest == "" || !isDigit(rest[0]) || !isDigit(rest[len(rest)-1]) {
		return rulePhone
	}
	digits := 0
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; {
		case isDigit(c):
			digits++
		case c == ' ' || c == '(' || c == ')' || c == '/' || c == '-':
		default:
			return rulePhone
		}
	}
	if digits < 5 {
		return rulePhone
	}
	return ""
}

// zipRule checks a postcode: five digits from 01000 to 99999 in Germany
// (country "" or "DE"), else 1 to 10 letters, digits, inner spaces and
// hyphens ("1010", "SW1A 1AA", "00-950").
func zipRule(zip, country string) string {
	if country == "" || country == "DE" {
		if len(zip) != 5 || zip[:2] == "00" {
			return ruleZipDE
		}
		for i := 0; i < len(zip); i++ {
			if !isDigit(zip[i]) {
				return ruleZipDE
			}
		}
		return ""
	}
	if zip == "" || len(zip) > maxZip || zip[0] == ' ' || zip[0] == '-' || zip[len(zip)-1] == ' ' || zip[len(zip)-1] == '-' {
		return ruleZip
	}
	for i := 0; i < len(zip); i++ {
		c := zip[i]
		if !isDigit(c) && !('A' <= c && c <= 'Z') && !('a' <= c && c <= 'z') && c != ' ' && c != '-' {
			return ruleZip
		}
	}
	return ""
}

func countryRule(s string) string {
	if len(s) != 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z' {
		return ruleCountry
	}
	return ""
}

// nilUUID is the UUID of all zeros (RFC 9562 §5.9).
const nilUUID = "00000000-0000-0000-0000-000000000000"

// uuidRule checks a UUID in its canonical lowercase form. Any version is
// accepted; NewRequestID makes version 4.
func uuidRule(s string) string {
	if len(s) != 36 {
		return ruleUUID
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return ruleUUID
			}
		default:
			if !isDigit(c) && !('a' <= c && c <= 'f') {
				return ruleUUID
			}
		}
	}
	if s == nilUUID {
		return ruleNilUUID
	}
	return ""
}

// locationIDRule checks a provider's location id: opaque to everyone else,
// but safe in a log line or a URL path segment, and wide enough for the
// UUIDs, ULIDs, numbers and base64url strings vendors use.
func locationIDRule(s string) string {
	if len(s) > maxLocationID {
		return ruleLocationID
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := isDigit(c) || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '~' && c != ':' && c != '-') {
			return ruleLocationID
		}
	}
	return ""
}

// memberRule checks a member name as pki.ValidName does.
func memberRule(s string) string {
	if s == pki.ReservedName {
		return ruleMemberAnon
	}
	if pki.ValidName(s) != nil {
		return ruleMember
	}
	return ""
}

// Helpers that check the member name of the value at path and record what
// it breaks; they build the member's path only then. An optional field is
// absent when it is "" (encoding/json's omitempty), so "" passes; Decode
// refuses an empty string where it is present.

func (c *checker) required(path, name, s string, rule func(string) string) {
	if s == "" {
		c.fail(join(path, name), ruleRequired)
	} else if r := rule(s); r != "" {
		c.fail(join(path, name), r)
	}
}

func (c *checker) optional(path, name, s string, rule func(string) string) {
	if s == "" {
		return
	}
	if r := rule(s); r != "" {
		c.fail(join(path, name), r)
	}
}

func line(max int) func(string) string {
	return func(s string) string { return textRule(s, max, false) }
}

func text(max int) func(string) string {
	return func(s string) string { return textRule(s, max, true) }
}
