// Package strictjson reads the flat JSON objects of the endpoint server's
// wire formats (the peer message, the sealed envelope) strictly and without
// reflection.
//
// encoding/json scans every byte of a value at least twice (once to find
// its end, once to decode it) and matches field names without regard to
// case; a wire message is mostly base64, so that scanning was a tenth of an
// endpoint server's CPU per call. A Parser reads each byte once, knows only
// exact and unique field names, refuses null, and decodes base64 straight
// from the input.
package strictjson

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Parser reads JSON values from a byte slice, front to back.
type Parser struct {
	b []byte
	i int
}

// New returns a Parser at the start of b.
func New(b []byte) *Parser { return &Parser{b: b} }

// WS skips JSON white space.
func (p *Parser) WS() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// Eat consumes c if it is next.
func (p *Parser) Eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// End skips trailing white space and reports whether the input is used up.
func (p *Parser) End() bool {
	p.WS()
	return p.i == len(p.b)
}

// Object reads one JSON object whose field names are all in names, each at
// most once (names has at most 64 entries). For every field it calls value
// with the field's index in names, positioned at the value, which value
// must read. It returns a bit per field seen.
func (p *Parser) Object(what string, names []string, value func(field int) error) (seen uint64, err error) {
	p.WS()
	if !p.Eat('{') {
		return 0, fmt.Errorf("%s is not a JSON object", what)
	}
	p.WS()
	if p.Eat('}') {
		return 0, nil
	}
	for {
		key, err := p.String("field name")
		if err != nil {
			return 0, err
		}
		f := index(names, key)
		if f < 0 {
			// Exact names only: encoding/json would also take "Kind".
			return 0, fmt.Errorf("unknown field %q", key)
		}
		if seen&(1<<f) != 0 {
			return 0, fmt.Errorf("duplicate field %q", key)
		}
		seen |= 1 << f
		p.WS()
		if !p.Eat(':') {
			return 0, fmt.Errorf("no ':' after field name %q", key)
		}
		p.WS()
		if err := value(f); err != nil {
			return 0, err
		}
		p.WS()
		if p.Eat(',') {
			p.WS()
			continue
		}
		if p.Eat('}') {
			return seen, nil
		}
		return 0, fmt.Errorf("no ',' or '}' after field %q", key)
	}
}

func index(names []string, key []byte) int {
	for i, n := range names {
		if n == string(key) { // no allocation
			return i
		}
	}
	return -1
}

// Missing returns an error naming the first of names[:required] whose bit
// is not in seen, or nil.
func Missing(seen uint64, names []string, required int) error {
	for f, name := range names[:required] {
		if seen&(1<<f) == 0 {
			return fmt.Errorf("missing field %q", name)
		}
	}
	return nil
}

// Uint16 reads a JSON number that must be a plain integer from 0 to 65535:
// "1.0", "1e0", "-0" and leading zeros are refused, so every accepted
// number has one spelling.
func (p *Parser) Uint16(what string) (uint16, error) {
	start := p.i
	for p.i < len(p.b) && '0' <= p.b[p.i] && p.b[p.i] <= '9' {
		p.i++
	}
	d := p.b[start:p.i]
	if len(d) == 0 || len(d) > 1 && d[0] == '0' || p.i < len(p.b) && strings.IndexByte(".eE+-", p.b[p.i]) >= 0 {
		return 0, fmt.Errorf("%s is not an integer from 0 to 65535", what)
	}
	v, err := strconv.ParseUint(string(d), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%s: %s is not an integer from 0 to 65535", what, d)
	}
	return uint16(v), nil
}

// Bool reads true or false.
func (p *Parser) Bool(what string) (bool, error) {
	rest := p.b[p.i:]
	switch {
	case bytes.HasPrefix(rest, []byte("true")):
		p.i += 4
		return true, nil
	case bytes.HasPrefix(rest, []byte("false")):
		p.i += 5
		return false, nil
	}
	return false, fmt.Errorf("%s is not true or false", what)
}

// String reads a JSON string. Without escapes, the result aliases the
// input; with them, encoding/json unquotes it.
func (p *Parser) String(what string) ([]byte, error) {
	if !p.Eat('"') {
		return nil, fmt.Errorf("%s is not a string", what)
	}
	start := p.i
	n := bytes.IndexByte(p.b[start:], '"')
	if n < 0 {
		return nil, fmt.Errorf("%s: unterminated string", what)
	}
	s := p.b[start : start+n]
	if bytes.IndexByte(s, '\\') < 0 {
		for _, c := range s {
			if c < 0x20 {
				return nil, fmt.Errorf("%s: control character in string", what)
			}
		}
		p.i = start + n + 1
		return s, nil
	}
	i := start
	for i < len(p.b) && p.b[i] != '"' {
		if p.b[i] == '\\' {
			i++
		}
		i++
	}
	if i >= len(p.b) {
		return nil, fmt.Errorf("%s: unterminated string", what)
	}
	var u string
	if err := json.Unmarshal(p.b[start-1:i+1], &u); err != nil {
		return nil, fmt.Errorf("%s: %v", what, err)
	}
	p.i = i + 1
	return []byte(u), nil
}

var strictB64 = base64.StdEncoding.Strict()

// Base64 reads a non-empty string of standard base64 with padding, in its
// one canonical form: the strict decoder still skips CR and LF, which we
// refuse.
func (p *Parser) Base64(what string) ([]byte, error) {
	s, err := p.String(what)
	if err != nil {
		return nil, err
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("%s is empty (leave the field out instead)", what)
	}
	if bytes.IndexByte(s, '\r') >= 0 || bytes.IndexByte(s, '\n') >= 0 { // only from escapes
		return nil, fmt.Errorf("%s: line breaks in base64", what)
	}
	out := make([]byte, strictB64.DecodedLen(len(s)))
	n, err := strictB64.Decode(out, s)
	if err != nil {
		return nil, fmt.Errorf("%s: not standard base64: %v", what, err)
	}
	return out[:n], nil
}

// ErrTooMany is returned by Base64List for an array over its bound.
var ErrTooMany = errors.New("too many entries")

// Base64List reads an array of at most max Base64 strings. An empty array
// gives an empty, non-nil slice.
func (p *Parser) Base64List(what string, max int) ([][]byte, error) {
	if !p.Eat('[') {
		return nil, fmt.Errorf("%s is not an array", what)
	}
	out := [][]byte{}
	p.WS()
	if p.Eat(']') {
		return out, nil
	}
	for {
		if len(out) == max {
			return nil, fmt.Errorf("%s: %w (at most %d)", what, ErrTooMany, max)
		}
		b, err := p.Base64(what)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
		p.WS()
		if p.Eat(',') {
			p.WS()
			continue
		}
		if p.Eat(']') {
			return out, nil
		}
		return nil, fmt.Errorf("%s: no ',' or ']' after an entry", what)
	}
}
