package contactdata

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// MaxDocumentSize is the largest document Decode accepts, in bytes: room
// for MaxGuests guests with all their details.
const MaxDocumentSize = 64 << 20

// maxEntries bounds every JSON array Decode stores; Validate applies the
// tighter bound of each list.
const maxEntries = MaxGuests

// A Document is one of the types that are exchanged on their own:
// *Location, *DataRequest, *GuestList, *ContactPerson, *Event and
// *IndexCaseSubmission. Each has a JSON Schema in docs/contact-data/.
type Document interface {
	// Validate checks the document and returns nil or a ValidationErrors.
	Validate() error
	// schema is the base name of the document's JSON Schema file.
	schema() string
}

var (
	_ Document = (*Location)(nil)
	_ Document = (*DataRequest)(nil)
	_ Document = (*GuestList)(nil)
	_ Document = (*ContactPerson)(nil)
	_ Document = (*Event)(nil)
	_ Document = (*IndexCaseSubmission)(nil)
)

// Rules about the JSON itself.
const (
	ruleDocumentSize = "must be at most 64 MiB"
	ruleDuplicate    = "appears more than once"
	ruleUnknown      = "is not a known field"
	ruleNull         = "must not be null; leave the field out instead"
	ruleEmpty        = "must not be empty; leave the field out instead"
	ruleString       = "must be a string"
	ruleObject       = "must be an object"
	ruleArray        = "must be an array"
)

func ruleMaxEntries(n int) string { return fmt.Sprintf("must have at most %d entries", n) }

// Decode decodes data, one JSON document, into doc and validates it. It
// sets *doc whole (fields not in data are zero) and returns nil or a
// ValidationErrors; on an error, doc holds what could be decoded.
//
// Decoding is strict, so that a document means the same to every parser
// that reads it:
//
//   - data is UTF-8, at most MaxDocumentSize bytes, one JSON object and
//     nothing after it;
//   - member names match exactly (encoding/json would also match them
//     case-insensitively) and appear once; unknown members are refused;
//   - required members are present (a required list may be empty, but not
//     left out); null and "" are refused: an optional field is left out;
//   - times are RFC 3339 in UTC, written with "Z".
//
// Nothing is normalized: a value is accepted as sent or refused with the
// rule it breaks.
func Decode(data []byte, doc Document) error {
	v := reflect.ValueOf(doc).Elem()
	v.SetZero()
	var c checker
	switch {
	case len(data) > MaxDocumentSize:
		c.fail("", ruleDocumentSize)
		return c.err()
	case !utf8.Valid(data):
		c.fail("", fmt.Sprintf("must be valid UTF-8 (byte %d is not)", invalidUTF8(data)))
		return c.err()
	case !json.Valid(data):
		var raw json.RawMessage
		err := json.Unmarshal(data, &raw) // for the error's offset
		if se, ok := errors.AsType[*json.SyntaxError](err); ok {
			c.fail("", fmt.Sprintf("must be valid JSON (%s at byte %d)", strings.TrimPrefix(se.Error(), "json: "), se.Offset))
		} else {
			c.fail("", "must be valid JSON")
		}
		return c.err()
	}
	w := walker{data: data, c: &c, structs: map[reflect.Type]*structInfo{}}
	w.value(document, v)
	if len(c.errs) > 0 && c.errs[0].Field == "" {
		return c.err() // not an object: nothing to validate
	}
	err := doc.Validate()
	if err == nil {
		return c.err()
	}
	for _, e := range err.(ValidationErrors) {
		if e.Rule == ruleMoreErrors && e.Field == "" {
			c.fail("", ruleMoreErrors) // keep the notice within the bound
			continue
		}
		covered := false
		for _, b := range w.broken {
			if within(e.Field, b) {
				covered = true
				break
			}
		}
		if !covered {
			c.fail(e.Field, e.Rule)
		}
	}
	return c.err()
}

func invalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// walker decodes a JSON value into a Go value of the model types, checking
// the structure as it goes and recording what is wrong with its path. A
// struct field is a required member unless its JSON tag has omitempty or
// omitzero. It knows the kinds the model uses: strings (and string types),
// time.Time, Date, structs, pointers to structs and slices.
//
// It reads data, which Decode has checked to be valid UTF-8 JSON, with a
// scanner of its own rather than json.Decoder.Token, which costs five times
// as much; only strings with escapes go through encoding/json, so that they
// decode exactly as every other Go parser decodes them.
type walker struct {
	data    []byte
	i       int // the next byte of data to read
	c       *checker
	structs map[reflect.Type]*structInfo
	// broken are the paths of values that are missing or could not be
	// decoded: what Validate says about them or inside them, Decode
	// leaves out. Recorded while c has room.
	broken []string
}

// at is the place of a value, from which its path is built when an error
// needs it: a member of the value at parent (index -1), an entry of it
// (index ≥ 0), or the document (index -2).
type at struct {
	parent string
	key    []byte
	index  int
}

var document = at{index: -2}

func (a at) String() string {
	switch {
	case a.index == -2:
		return ""
	case a.index >= 0:
		return a.parent + "[" + strconv.Itoa(a.index) + "]"
	}
	return memberPath(a.parent, string(a.key))
}

// brokenValue records a value that is missing or could not be decoded.
func (w *walker) brokenValue(path, rule string) {
	if !w.c.full && len(w.c.errs) < MaxErrors {
		w.broken = append(w.broken, path)
	}
	w.c.fail(path, rule)
}

type structInfo struct {
	fields   []int          // the Go field index of each JSON member
	names    []string       // the JSON name of each member
	required []bool         // whether each member is required: no omitempty or omitzero
	index    map[string]int // JSON member name → position in fields
}

var (
	timeType = reflect.TypeFor[time.Time]()
	dateType = reflect.TypeFor[Date]()
)

func (w *walker) info(t reflect.Type) *structInfo {
	if si := w.structs[t]; si != nil {
		return si
	}
	si := &structInfo{index: map[string]int{}}
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" {
			panic("contactdata: field without a JSON name: " + t.String() + "." + t.Field(i).Name)
		}
		si.index[name] = len(si.fields)
		si.fields = append(si.fields, i)
		si.names = append(si.names, name)
		si.required = append(si.required, opts == "")
	}
	w.structs[t] = si
	return si
}

// peek skips whitespace and returns the next byte. Valid JSON never ends
// where a value or delimiter is due, so there is one.
func (w *walker) peek() byte {
	for {
		switch c := w.data[w.i]; c {
		case ' ', '\t', '\n', '\r':
			w.i++
		default:
			return c
		}
	}
}

// str reads the string at w.i and returns its content: the bytes between
// the quotes if it has no escapes (they alias data), else the decoded text.
func (w *walker) str() []byte {
	start := w.i
	escaped := false
	j := start + 1
	for ; w.data[j] != '"'; j++ {
		if w.data[j] == '\\' {
			escaped = true
			j++ // the escaped byte; \uXXXX's digits are no quotes
		}
	}
	w.i = j + 1
	if !escaped {
		return w.data[start+1 : j]
	}
	var s string
	if err := json.Unmarshal(w.data[start:j+1], &s); err != nil {
		panic("contactdata: valid JSON string does not decode: " + err.Error())
	}
	return []byte(s)
}

// skip reads past the value at w.i.
func (w *walker) skip() {
	depth := 0
	for {
		switch w.peek() {
		case '"':
			w.str()
		case '{', '[':
			depth++
			w.i++
		case '}', ']':
			depth--
			w.i++
		case ',', ':':
			w.i++
		default: // number, true, false, null
			for w.i < len(w.data) && !strings.ContainsRune(" \t\n\r,]}", rune(w.data[w.i])) {
				w.i++
			}
		}
		if depth == 0 {
			return
		}
	}
}

// value decodes the value at w.i into v.
func (w *walker) value(a at, v reflect.Value) {
	c := w.peek()
	if c == 'n' {
		w.i += len("null")
		w.brokenValue(a.String(), ruleNull)
		return
	}
	t := v.Type()
	switch {
	case t == timeType || t == dateType || t.Kind() == reflect.String:
		if c != '"' {
			w.skip()
			w.brokenValue(a.String(), ruleString)
			return
		}
		b := w.str()
		switch {
		case len(b) == 0:
			w.brokenValue(a.String(), ruleEmpty)
		case t == timeType:
			tm, ok := parseTime(string(b))
			switch {
			case !ok:
				w.brokenValue(a.String(), ruleTime)
			case tm.IsZero():
				w.brokenValue(a.String(), ruleYears) // Validate would call it missing
			default:
				*v.Addr().Interface().(*time.Time) = tm // no boxing, unlike reflect.ValueOf
			}
		case t == dateType:
			d, err := ParseDate(string(b))
			if err != nil {
				w.brokenValue(a.String(), ruleDate)
			} else {
				*v.Addr().Interface().(*Date) = d
			}
		default:
			v.SetString(string(b))
		}
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Struct:
		if c != '{' {
			w.skip()
			w.brokenValue(a.String(), ruleObject)
			return
		}
		if t.Kind() == reflect.Pointer {
			v.Set(reflect.New(t.Elem()))
			v = v.Elem()
		}
		w.object(a.String(), v)
	case t.Kind() == reflect.Slice:
		if c != '[' {
			w.skip()
			w.brokenValue(a.String(), ruleArray)
			return
		}
		w.array(a.String(), v)
	default:
		panic("contactdata: cannot decode into " + t.String())
	}
}

// object decodes the object at w.i into the struct v.
func (w *walker) object(path string, v reflect.Value) {
	si := w.info(v.Type())
	var seen []bool // by position in si.fields; allocated on first use
	w.i++           // '{'
	for w.peek() != '}' {
		key := w.str()
		w.peek()
		w.i++ // ':'
		i, known := si.index[string(key)]
		switch {
		case !known:
			w.c.fail(memberPath(path, string(key)), ruleUnknown)
			w.skip()
		case seen != nil && seen[i]:
			w.c.fail(memberPath(path, string(key)), ruleDuplicate)
			w.skip()
		default:
			if seen == nil {
				seen = make([]bool, len(si.fields))
			}
			seen[i] = true
			w.value(at{parent: path, key: key, index: -1}, v.Field(si.fields[i]))
		}
		if w.peek() == ',' {
			w.i++
			w.peek()
		}
	}
	w.i++ // '}'
	for i, req := range si.required {
		if req && (seen == nil || !seen[i]) {
			w.brokenValue(join(path, si.names[i]), ruleRequired)
		}
	}
}

// array decodes the array at w.i into the slice v.
func (w *walker) array(path string, v reflect.Value) {
	v.Set(reflect.MakeSlice(v.Type(), 0, 0)) // [] is an empty list, not a missing one
	zero := reflect.Zero(v.Type().Elem())
	w.i++ // '['
	for n := 0; w.peek() != ']'; n++ {
		if n < maxEntries {
			// Append even if the value turns out wrong, so that the
			// indices of Validate's paths stay those of the document.
			v.Set(reflect.Append(v, zero))
			w.value(at{parent: path, index: n}, v.Index(n))
		} else {
			if n == maxEntries {
				w.c.fail(path, ruleMaxEntries(maxEntries))
			}
			w.skip()
		}
		if w.peek() == ',' {
			w.i++
		}
	}
	w.i++ // ']'
}

// maxKeyInPath bounds how much of an unknown member's name an error quotes.
const maxKeyInPath = 64

// memberPath appends a member name to a path: .name if it is a plain
// identifier, else ["name"], cut at maxKeyInPath bytes.
func memberPath(path, key string) string {
	plain := key != ""
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c == '_' || isDigit(c) || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			plain = false
			break
		}
	}
	if len(key) > maxKeyInPath {
		cut := maxKeyInPath
		for cut > 0 && !utf8.RuneStart(key[cut]) {
			cut--
		}
		key = key[:cut] + "…"
		plain = false
	}
	if plain {
		return join(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}
