package jsonrpc

import (
	"encoding/json"
	"errors"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ID is a request id: a JSON string, a number or null. It keeps the exact
// JSON text it was decoded from, and encodes back to that text, so a number
// keeps its digits and form (1.0 stays 1.0) and a string its escapes.
//
// The zero ID is null. Compare ids with Equal, or use Key as a map key: ==
// compares the text, so it tells "a" from "\u0061" and 1 from 1.0, which
// are the same id.
type ID struct {
	raw string // JSON text of a string or number; "" means null
}

// StringID returns the id that is the string s. Invalid UTF-8 in s is
// replaced with U+FFFD.
func StringID(s string) ID { return ID{raw: string(appendString(nil, s))} }

// IntID returns the id that is the number n.
func IntID(n int64) ID { return ID{raw: strconv.FormatInt(n, 10)} }

// IsNull reports whether id is null.
func (id ID) IsNull() bool { return id.raw == "" }

// IsString reports whether id is a string.
func (id ID) IsString() bool { return id.raw != "" && id.raw[0] == '"' }

// IsNumber reports whether id is a number.
func (id ID) IsNumber() bool { return id.raw != "" && id.raw[0] != '"' }

// String returns the id's JSON text: "null", a quoted string or a number.
func (id ID) String() string {
	if id.raw == "" {
		return "null"
	}
	return id.raw
}

// Equal reports whether id and other have the same type and value. Strings
// compare by their decoded value, numbers by their exact decimal value
// (so 1, 1.0, 10e-1 and 1E0 are equal, and so are 0 and -0).
func (id ID) Equal(other ID) bool {
	return id.raw == other.raw || id.Key() == other.Key()
}

// Key returns a string that is the same for two ids exactly when they are
// Equal, for use as a map key. Its format is not specified.
func (id ID) Key() string {
	switch {
	case id.raw == "":
		return "z"
	case id.raw[0] == '"':
		s, _ := unquote([]byte(id.raw)) // valid by construction
		return "s" + s
	default:
		return "n" + canonicalNumber(id.raw)
	}
}

// MarshalJSON returns the id's JSON text.
func (id ID) MarshalJSON() ([]byte, error) { return id.appendJSON(nil), nil }

func (id ID) appendJSON(dst []byte) []byte {
	if id.raw == "" {
		return append(dst, "null"...)
	}
	return append(dst, id.raw...)
}

var errIDType = errors.New("jsonrpc: id must be a string, a number or null")

// UnmarshalJSON keeps b as the id's text. It fails unless b is one JSON
// string, number or null in valid UTF-8; surrounding white space is dropped.
func (id *ID) UnmarshalJSON(b []byte) error {
	b = trimSpace(b)
	if len(b) == 0 || !utf8.Valid(b) || !json.Valid(b) {
		return errIDType
	}
	switch c := b[0]; {
	case c == 'n':
		*id = ID{}
	case c == '"' || c == '-' || '0' <= c && c <= '9':
		*id = ID{raw: string(b)}
	default:
		return errIDType
	}
	return nil
}

// canonicalNumber returns the exact value of a valid JSON number as
// [-]digits "e" exponent, with no leading or trailing zeros in the digits,
// or "0" for zero.
func canonicalNumber(s string) string {
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	digits, frac := s[:i], ""
	if i < len(s) && s[i] == '.' {
		j := i + 1
		for j < len(s) && isDigit(s[j]) {
			j++
		}
		frac, i = s[i+1:j], j
	}
	expText := "0"
	if i < len(s) { // 'e' or 'E', then [+-]digits
		expText = strings.TrimPrefix(s[i+1:], "+")
	}
	digits = strings.TrimLeft(digits+frac, "0")
	if digits == "" {
		return "0"
	}
	trimmed := strings.TrimRight(digits, "0")
	shift := int64(len(digits)-len(trimmed)) - int64(len(frac))

	var exp string
	if len(expText) <= 18 { // fits in int64 with room for shift, which is bounded by the body size
		e, _ := strconv.ParseInt(expText, 10, 64)
		exp = strconv.FormatInt(e+shift, 10)
	} else {
		e, _ := new(big.Int).SetString(expText, 10)
		exp = e.Add(e, big.NewInt(shift)).String()
	}
	if neg {
		return "-" + trimmed + "e" + exp
	}
	return trimmed + "e" + exp
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
