package sdk

import (
	"encoding/json"
	"errors"
	"strconv"

	"github.com/kurier-net/kurier/eps/jsonrpc"
)

// Sentinels for the JSON-RPC error codes software branches on. An *Error
// matches the sentinel of its code with errors.Is:
//
//	_, err := sdk.Call[Guests](ctx, c, "vendor-a", "guest-lists", q)
//	if errors.Is(err, sdk.ErrUnavailable) { /* try later */ }
//
// A handler may return them too (wrapped, with detail), and the caller gets
// that code: fmt.Errorf("%w: no location given", sdk.ErrInvalidParams).
var (
	// ErrNotAllowed (-32001): the directory does not let this member call
	// the service, or the local API's bearer token is missing or wrong.
	ErrNotAllowed = errors.New("sdk: not allowed")
	// ErrUnknownMember (-32002): no such active member in the directory.
	ErrUnknownMember = errors.New("sdk: unknown member")
	// ErrUnavailable (-32003): the member cannot be reached now.
	ErrUnavailable = errors.New("sdk: member unavailable")
	// ErrTimeout (-32004): the member did not answer in time.
	ErrTimeout = errors.New("sdk: timeout")
	// ErrQueueFull (-32005): the outbox for the recipient, or its inbox for
	// this member, is full; retry later.
	ErrQueueFull = errors.New("sdk: queue full")
	// ErrTooLarge (-32006): a body, params or message exceeds a size limit.
	ErrTooLarge = errors.New("sdk: too large")
	// ErrExpired (-32007): the deadline passed before delivery.
	ErrExpired = errors.New("sdk: expired")
	// ErrSealed (-32008): an envelope cannot be sealed or opened: no seal
	// key, bad signature or failed decryption.
	ErrSealed = errors.New("sdk: cannot open sealed envelope")

	// ErrMethodNotFound (-32601): no such method or service handler.
	ErrMethodNotFound = errors.New("sdk: method not found")
	// ErrInvalidParams (-32602): params missing, of the wrong shape, or
	// refused. Message.Decode wraps it.
	ErrInvalidParams = errors.New("sdk: invalid params")
	// ErrInternal (-32603): the other side failed; it logs the detail.
	ErrInternal = errors.New("sdk: internal error")
)

// ErrRetry, returned by a handler (wrapped or not), leaves the message
// unacknowledged: the endpoint server delivers it again later (by callback
// with backoff, by poll after the lease). Use it for transient failures
// such as a database that is down, so that the requester is not answered
// with an error. Nothing is recorded in the Dedup.
var ErrRetry = errors.New("sdk: retry later")

var codeErrs = []struct {
	code int
	err  error
}{
	{jsonrpc.CodeNotAllowed, ErrNotAllowed},
	{jsonrpc.CodeUnknownMember, ErrUnknownMember},
	{jsonrpc.CodeUnavailable, ErrUnavailable},
	{jsonrpc.CodeTimeout, ErrTimeout},
	{jsonrpc.CodeQueueFull, ErrQueueFull},
	{jsonrpc.CodeTooLarge, ErrTooLarge},
	{jsonrpc.CodeExpired, ErrExpired},
	{jsonrpc.CodeSealed, ErrSealed},
	{jsonrpc.CodeMethodNotFound, ErrMethodNotFound},
	{jsonrpc.CodeInvalidParams, ErrInvalidParams},
	{jsonrpc.CodeInternalError, ErrInternal},
}

// Error is a JSON-RPC error: one the endpoint server or another member's
// software answered with, or one a handler returns to choose the code its
// caller sees. errors.Is(err, ErrXxx) matches the sentinel of its code.
//
// Software may use its own codes for its own conditions; JSON-RPC reserves
// -32768 to -32000 (Kurier uses -32099 to -32000).
type Error struct {
	Code    int
	Message string
	// Data is optional detail, any JSON value; nil means none.
	Data json.RawMessage
}

// NewError returns an Error with data encoded as JSON (nil: none; data
// that cannot be encoded is left out).
func NewError(code int, message string, data any) *Error {
	e := &Error{Code: code, Message: message}
	if data != nil {
		if b, err := json.Marshal(data); err == nil {
			e.Data = b
		}
	}
	return e
}

func (e *Error) Error() string {
	return "sdk: " + e.Message + " (code " + strconv.Itoa(e.Code) + ")"
}

// Is reports whether target is the sentinel for e's code.
func (e *Error) Is(target error) bool {
	for _, c := range codeErrs {
		if c.code == e.Code {
			return target == c.err
		}
	}
	return false
}

// rpcError turns whatever the JSON-RPC client returned into the SDK's
// error: an *Error for an answer with a JSON-RPC error (also inside an
// HTTP error status), else err with what was being done.
func rpcError(method string, err error) error {
	if err == nil {
		return nil
	}
	if je, ok := errors.AsType[*jsonrpc.Error](err); ok {
		return &Error{Code: je.Code, Message: je.Message, Data: je.Data}
	}
	return &callError{method: method, err: err}
}

// callError is a local API call that got no JSON-RPC answer.
type callError struct {
	method string
	err    error
}

func (e *callError) Error() string { return "sdk: " + e.method + ": " + e.err.Error() }
func (e *callError) Unwrap() error { return e.err }

// errorObject is the JSON-RPC error a handler's err is answered with: an
// *Error or *jsonrpc.Error as it is, a wrapped sentinel with its code and
// err's text, anything else as Internal error (internal is then set, and
// the detail must only be logged).
func errorObject(err error) (e *jsonrpc.Error, internal bool) {
	if se, ok := errors.AsType[*Error](err); ok {
		return &jsonrpc.Error{Code: se.Code, Message: se.Message, Data: se.Data}, false
	}
	if je, ok := errors.AsType[*jsonrpc.Error](err); ok {
		return je, false
	}
	for _, c := range codeErrs {
		if c.code != jsonrpc.CodeInternalError && errors.Is(err, c.err) {
			return &jsonrpc.Error{Code: c.code, Message: err.Error()}, false
		}
	}
	return jsonrpc.NewError(jsonrpc.CodeInternalError, nil), true
}
