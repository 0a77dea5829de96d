package jsonrpc

import (
	"encoding/json"
	"log/slog"
	"strconv"
	"unicode/utf8"
)

// DecodeRequests decodes a request body: one request object or a batch.
// The caller bounds the size of body beforehand; DecodeRequests does not
// bound the number of elements in a batch (Serve does).
//
// If errResp is non-nil, the body as a whole is answered with it (a Parse
// error for a body that is not valid UTF-8 JSON, an Invalid Request for an
// empty batch) and reqs is nil. Otherwise reqs holds one entry per element
// in order, and batch reports whether the body was an array. Entries with
// Err set are not valid requests: each must be answered with a response
// carrying Err and its ID (null if ID is nil), whether or not it has an id.
// The others are to be run, and answered unless they are notifications.
//
// The Params of the requests alias body, which DecodeRequests does not
// modify or keep.
func DecodeRequests(body []byte) (reqs []Request, batch bool, errResp []byte) {
	return decodeBody(body, 0, nil)
}

// decodeBody is DecodeRequests with a bound on the batch length (0 means
// none) and a logger for the reasons elements were refused (nil: none).
func decodeBody(body []byte, maxBatch int, log *slog.Logger) (reqs []Request, batch bool, errResp []byte) {
	// Validate everything first: invalid JSON anywhere in a batch is a
	// single Parse error, and the scanning below relies on valid input.
	if !utf8.Valid(body) || !json.Valid(body) {
		if log != nil {
			log.Debug("request body is not valid JSON", "bytes_in", len(body))
		}
		return nil, false, errorResponse(ID{}, CodeParseError)
	}
	i := skipSpace(body, 0)
	if body[i] != '[' {
		req, reason := decodeElement(body[i:skipValue(body, i)])
		logInvalid(log, reason, 0)
		return []Request{req}, false, nil
	}
	i = skipSpace(body, i+1)
	if body[i] == ']' {
		return nil, true, errorResponse(ID{}, CodeInvalidRequest)
	}
	for {
		if maxBatch > 0 && len(reqs) == maxBatch {
			if log != nil {
				log.Debug("batch too long", "max_batch", maxBatch)
			}
			b, _ := appendResponse(nil, ID{}, nil, NewError(CodeInvalidRequest,
				"batch longer than "+strconv.Itoa(maxBatch)+" elements"))
			return nil, true, b
		}
		end := skipValue(body, i)
		req, reason := decodeElement(body[i:end])
		logInvalid(log, reason, len(reqs))
		reqs = append(reqs, req)
		i = skipSpace(body, end)
		if body[i] == ']' {
			return reqs, true, nil
		}
		i = skipSpace(body, i+1) // past ','
	}
}

func logInvalid(log *slog.Logger, reason string, index int) {
	if log != nil && reason != "" {
		log.Debug("invalid request", "reason", reason, "index", index)
	}
}

// Bits for the members of a request object.
const (
	hasVersion = 1 << iota
	hasMethod
	hasParams
	hasID
)

// decodeElement decodes one element of a valid JSON body. If it is not a
// valid request, the Request has Err set, and reason says why.
func decodeElement(b []byte) (req Request, reason string) {
	m := members{b: b}
	if !m.open() {
		return Request{Err: invalidRequest()}, "not an object"
	}
	var (
		seen    uint8
		id      ID
		idValid bool
	)
	for m.next() {
		var bit uint8
		switch string(m.key) {
		case "jsonrpc":
			bit = hasVersion
			if !isVersion(m.val) && reason == "" {
				reason = `"jsonrpc" is not "2.0"`
			}
		case "method":
			bit = hasMethod
			if m.val[0] != '"' {
				if reason == "" {
					reason = `"method" is not a string`
				}
				break
			}
			req.Method, _ = unquote(m.val) // valid JSON string
		case "params":
			bit = hasParams
			if c := m.val[0]; c != '{' && c != '[' {
				if reason == "" {
					reason = `"params" is not an object or array`
				}
				break
			}
			req.Params = m.val
		case "id":
			bit = hasID
			switch c := m.val[0]; {
			case c == 'n':
				id, idValid = ID{}, true
			case c == '"' || c == '-' || isDigit(c):
				id, idValid = ID{raw: string(m.val)}, true
			default:
				if reason == "" {
					reason = `"id" is not a string, number or null`
				}
			}
		default:
			if reason == "" {
				reason = "unexpected member " + strconv.Quote(string(m.key))
			}
			continue
		}
		if seen&bit != 0 {
			if reason == "" {
				reason = "member " + strconv.Quote(string(m.key)) + " given twice"
			}
			if bit == hasID {
				idValid = false // which one would be the id?
			}
		}
		seen |= bit
	}
	if seen&hasID != 0 && idValid {
		req.ID = &id
	}
	switch {
	case reason != "":
	case seen&hasVersion == 0:
		reason = `no "jsonrpc" member`
	case seen&hasMethod == 0:
		reason = `no "method" member`
	default:
		return req, ""
	}
	req.Err = invalidRequest()
	return req, reason
}

func invalidRequest() *Error {
	return &Error{Code: CodeInvalidRequest, Message: CodeText(CodeInvalidRequest)}
}

// members iterates over the members of a JSON object in valid JSON. Keys
// are decoded; values are the raw bytes.
type members struct {
	b        []byte
	i        int
	key, val []byte
}

// open reports whether the value at the start of m.b is an object, and
// moves inside it.
func (m *members) open() bool {
	m.i = skipSpace(m.b, 0)
	if m.i >= len(m.b) || m.b[m.i] != '{' {
		return false
	}
	m.i = skipSpace(m.b, m.i+1)
	return true
}

// next moves to the next member, if there is one.
func (m *members) next() bool {
	if m.b[m.i] == '}' {
		return false
	}
	end := skipString(m.b, m.i)
	m.key = m.b[m.i+1 : end-1]
	for _, c := range m.key {
		if c == '\\' {
			s, _ := unquote(m.b[m.i:end]) // valid JSON string
			m.key = []byte(s)
			break
		}
	}
	i := skipSpace(m.b, end)
	i = skipSpace(m.b, i+1) // past ':'
	end = skipValue(m.b, i)
	m.val = m.b[i:end]
	i = skipSpace(m.b, end)
	if m.b[i] == ',' {
		i = skipSpace(m.b, i+1)
	}
	m.i = i
	return true
}

// The scanners below expect valid JSON; they never recurse, so nesting
// depth costs no stack.

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// skipSpace returns the index of the first non-space byte at or after i.
func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func trimSpace(b []byte) []byte {
	i, j := 0, len(b)
	for i < j && isSpace(b[i]) {
		i++
	}
	for j > i && isSpace(b[j-1]) {
		j--
	}
	return b[i:j]
}

// skipString returns the index just past the string literal at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index just past the value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) && !isSpace(b[i]) && b[i] != ',' && b[i] != ']' && b[i] != '}' {
			i++
		}
		return i
	}
}
