package jsonrpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Error codes. The package comment has the table of what each one means.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603

	CodeNotAllowed    = -32001
	CodeUnknownMember = -32002
	CodeUnavailable   = -32003
	CodeTimeout       = -32004
	CodeQueueFull     = -32005
	CodeTooLarge      = -32006
	CodeExpired       = -32007
	CodeSealed        = -32008
)

// CodeText returns the message for a code in the package table, or "" for
// any other code.
func CodeText(code int) string {
	switch code {
	case CodeParseError:
		return "Parse error"
	case CodeInvalidRequest:
		return "Invalid Request"
	case CodeMethodNotFound:
		return "Method not found"
	case CodeInvalidParams:
		return "Invalid params"
	case CodeInternalError:
		return "Internal error"
	case CodeNotAllowed:
		return "Not allowed"
	case CodeUnknownMember:
		return "Unknown member"
	case CodeUnavailable:
		return "Unavailable"
	case CodeTimeout:
		return "Timeout"
	case CodeQueueFull:
		return "Queue full"
	case CodeTooLarge:
		return "Too large"
	case CodeExpired:
		return "Expired"
	case CodeSealed:
		return "Cannot open sealed envelope"
	}
	return ""
}

// Error is a JSON-RPC error object. A handler returns one (possibly
// wrapped) to send it to the caller as it is; the Client returns one when
// the server answered with an error.
type Error struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	// Data is optional detail, any JSON value. Nil means none.
	Data json.RawMessage `json:"data,omitempty"`
}

var _ error = (*Error)(nil)

// NewError returns an Error with the code, CodeText(code) as the message,
// and data encoded as JSON (nil means no data). If data cannot be encoded
// the error has no data.
func NewError(code int, data any) *Error {
	e := &Error{Code: code, Message: CodeText(code)}
	if data != nil {
		if b, err := json.Marshal(data); err == nil {
			e.Data = b
		}
	}
	return e
}

// Error returns the message and the code; the data is left out.
func (e *Error) Error() string {
	return "jsonrpc: " + e.Message + " (" + strconv.Itoa(e.Code) + ")"
}

// UnmarshalJSON decodes an error object strictly: an integer code and a
// string message are required, data is optional, and nothing else may be
// there.
func (e *Error) UnmarshalJSON(b []byte) error {
	if !json.Valid(b) {
		return errors.New("jsonrpc: error object is not valid JSON")
	}
	m := members{b: b}
	if !m.open() {
		return errors.New("jsonrpc: error is not an object")
	}
	var out Error
	var seen uint8
	for m.next() {
		var bit uint8
		var err error
		switch string(m.key) {
		case "code":
			bit = 1
			err = json.Unmarshal(m.val, &out.Code)
		case "message":
			bit = 2
			if m.val[0] != '"' {
				err = errors.New("not a string")
			} else {
				out.Message, err = unquote(m.val)
			}
		case "data":
			bit = 4
			out.Data = append(json.RawMessage(nil), m.val...)
		default:
			return fmt.Errorf("jsonrpc: error object has unknown member %q", m.key)
		}
		if err != nil {
			return fmt.Errorf("jsonrpc: error object member %q: %w", m.key, err)
		}
		if seen&bit != 0 {
			return fmt.Errorf("jsonrpc: error object has member %q twice", m.key)
		}
		seen |= bit
	}
	if seen&3 != 3 {
		return errors.New("jsonrpc: error object lacks code or message")
	}
	*e = out
	return nil
}

// appendError appends e as a JSON object. It fails only if e.Data is not
// valid JSON.
func appendError(dst []byte, e *Error) ([]byte, error) {
	dst = append(dst, `{"code":`...)
	dst = strconv.AppendInt(dst, int64(e.Code), 10)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, e.Message)
	if len(e.Data) > 0 {
		if !json.Valid(e.Data) {
			return dst, errors.New("jsonrpc: error data is not valid JSON")
		}
		dst = append(dst, `,"data":`...)
		dst = append(dst, e.Data...)
	}
	return append(dst, '}'), nil
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always encodes
	return append(dst, b...)
}

// unquote decodes a JSON string literal known to be valid.
func unquote(lit []byte) (string, error) {
	inner := lit[1 : len(lit)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			err := json.Unmarshal(lit, &s)
			return s, err
		}
	}
	return string(inner), nil
}

// Request is a JSON-RPC request or notification.
type Request struct {
	// ID is the request's id; nil means the request is a notification. A
	// request with "id": null has a non-nil ID that IsNull.
	ID *ID
	// Method is the name of the method to call.
	Method string
	// Params is the params member as received: a JSON object or array, or
	// nil if absent. When decoded by this package it aliases the body.
	Params json.RawMessage
	// Err is set by DecodeRequests when the element is not a valid request;
	// ID then holds the id if it could be read, and the element must be
	// answered with Err. Handlers never see a Request with Err set, and
	// MarshalJSON ignores it.
	Err *Error
}

// IsNotification reports whether r has no id, so it gets no response.
func (r *Request) IsNotification() bool { return r.ID == nil }

// MarshalJSON encodes r as a request object. It fails if Params is set but
// is not a JSON object or array.
func (r Request) MarshalJSON() ([]byte, error) {
	return appendRequest(nil, r.ID, r.Method, r.Params)
}

// UnmarshalJSON decodes one request object with the strict rules of
// DecodeRequests. If b is not valid UTF-8 JSON it returns a Parse error
// *Error; if it is not a valid request, an Invalid Request *Error. On error
// r is unchanged.
func (r *Request) UnmarshalJSON(b []byte) error {
	if !utf8.Valid(b) || !json.Valid(b) {
		return &Error{Code: CodeParseError, Message: CodeText(CodeParseError)}
	}
	req, _ := decodeElement(b[skipSpace(b, 0):])
	if req.Err != nil {
		return req.Err
	}
	req.Params = append(json.RawMessage(nil), req.Params...) // don't alias b past the call
	*r = req
	return nil
}

func appendRequest(dst []byte, id *ID, method string, params json.RawMessage) ([]byte, error) {
	dst = append(dst, `{"jsonrpc":"2.0","method":`...)
	dst = appendString(dst, method)
	if len(params) > 0 {
		if !isStructured(params) {
			return nil, errors.New("jsonrpc: params must be a JSON object or array")
		}
		dst = append(dst, `,"params":`...)
		dst = append(dst, params...)
	}
	if id != nil {
		dst = append(dst, `,"id":`...)
		dst = id.appendJSON(dst)
	}
	return append(dst, '}'), nil
}

// isStructured reports whether b is a valid JSON object or array.
func isStructured(b []byte) bool {
	i := skipSpace(b, 0)
	return i < len(b) && (b[i] == '{' || b[i] == '[') && json.Valid(b)
}

// Response is a JSON-RPC response: exactly one of Result and Error is set.
type Response struct {
	// ID echoes the request's id; null if the request's id could not be
	// read.
	ID ID
	// Result is the method's result; set (possibly to "null") on success.
	Result json.RawMessage
	// Error is set on failure.
	Error *Error
}

// MarshalJSON encodes r. It fails if both or neither of Result and Error
// are set, or if Result or Error.Data is not valid JSON.
func (r Response) MarshalJSON() ([]byte, error) {
	if (r.Error == nil) == (r.Result == nil) {
		return nil, errors.New("jsonrpc: response needs exactly one of result and error")
	}
	if r.Error == nil && !json.Valid(r.Result) {
		return nil, errors.New("jsonrpc: result is not valid JSON")
	}
	return appendResponse(nil, r.ID, r.Result, r.Error)
}

// UnmarshalJSON decodes a response object strictly: "jsonrpc" must be
// "2.0", "id" must be present, exactly one of "result" and "error" must be
// there, and nothing else may be.
func (r *Response) UnmarshalJSON(b []byte) error {
	if !json.Valid(b) {
		return errors.New("jsonrpc: response is not valid JSON")
	}
	m := members{b: b}
	if !m.open() {
		return errors.New("jsonrpc: response is not an object")
	}
	var out Response
	var seen uint8
	for m.next() {
		var bit uint8
		var err error
		switch string(m.key) {
		case "jsonrpc":
			bit = 1
			if !isVersion(m.val) {
				err = errors.New(`not "2.0"`)
			}
		case "id":
			bit = 2
			err = out.ID.UnmarshalJSON(m.val)
		case "result":
			bit = 4
			out.Result = append(json.RawMessage(nil), m.val...)
		case "error":
			bit = 8
			out.Error = new(Error)
			err = out.Error.UnmarshalJSON(m.val)
		default:
			return fmt.Errorf("jsonrpc: response has unknown member %q", m.key)
		}
		if err != nil {
			return fmt.Errorf("jsonrpc: response member %q: %w", m.key, err)
		}
		if seen&bit != 0 {
			return fmt.Errorf("jsonrpc: response has member %q twice", m.key)
		}
		seen |= bit
	}
	if seen&3 != 3 || seen&12 == 0 || seen&12 == 12 {
		return errors.New(`jsonrpc: response needs "jsonrpc", "id" and exactly one of "result" and "error"`)
	}
	*r = out
	return nil
}

// appendResponse appends a response object. Exactly one of result and e is
// used (e if non-nil); result must be valid JSON. It fails only if e.Data
// is not valid JSON.
func appendResponse(dst []byte, id ID, result []byte, e *Error) ([]byte, error) {
	dst = append(dst, `{"jsonrpc":"2.0",`...)
	if e != nil {
		dst = append(dst, `"error":`...)
		var err error
		if dst, err = appendError(dst, e); err != nil {
			return nil, err
		}
	} else {
		dst = append(dst, `"result":`...)
		dst = append(dst, result...)
	}
	dst = append(dst, `,"id":`...)
	dst = id.appendJSON(dst)
	return append(dst, '}'), nil
}

// errorResponse encodes a response carrying a standard error and no data.
func errorResponse(id ID, code int) []byte {
	b, _ := appendResponse(nil, id, nil, &Error{Code: code, Message: CodeText(code)}) // no data: cannot fail
	return b
}

// isVersion reports whether lit, a valid JSON value, is the string "2.0".
func isVersion(lit []byte) bool {
	if string(lit) == `"2.0"` {
		return true
	}
	if lit[0] != '"' {
		return false
	}
	s, err := unquote(lit)
	return err == nil && s == "2.0"
}
