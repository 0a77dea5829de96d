package guestlist

import (
	"crypto/hpke"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
)

// Service is the provider's service that takes guest-list requests and
// the office's notices about them.
const Service = "guest-lists"

// MaxGuestListSize is the default bound on a guest list's JSON, in bytes.
// Sealed and encoded in base64 it must still fit the endpoint server's
// 6 MiB payload limit.
const MaxGuestListSize = 4 << 20

// maxReason bounds the reason of an abort, in characters.
const maxReason = 500

// Application error codes of the guest-lists service (outside the range
// JSON-RPC and Kurier reserve). A refusal carries one of them, or a
// standard code: -32602 (Invalid params) for a request that is not valid,
// with the fields in its data; -32001 (Not allowed) for a caller that is
// not a health office; -32006 (Too large) for a guest list over the size
// limit.
const (
	// CodeUnknownLocation: the location is not one of the provider's.
	CodeUnknownLocation = 1001
	// CodeWithdrawn: the office closed or aborted the request before it
	// was answered.
	CodeWithdrawn = 1002
	// CodeConflict: the request's id was used before, by the same office,
	// for a different request.
	CodeConflict = 1003
	// CodeInvalidGuestList: the guest list is not valid (the provider's
	// software produced it so, or the office refused what arrived); data
	// names the fields.
	CodeInvalidGuestList = 1004
)

// RequestMessage is the params of a guest-list request (kind request,
// service guest-lists, sent by the office with _send): the DataRequest and
// the public half of the seal key the office made for this request alone.
// The provider seals the guest list to SealKey; only the office that holds
// the private half opens it.
type RequestMessage struct {
	Request contactdata.DataRequest `json:"request"`
	// SealKey is an ML-KEM-768+X25519 HPKE key (KEM 0x647a) whose id is
	// Request.ID.
	SealKey pki.SealKey `json:"seal_key"`
}

// Answer is the result of a guest-list request: the guest list sealed to
// the request's seal key. The endpoint servers seal it once more to the
// office member's key in transit; neither of them can open the inner
// envelope.
type Answer struct {
	DataRequestID string `json:"data_request_id"`
	// GuestList is an anonymous eps/seal envelope of the GuestList's JSON,
	// bound to ListContext.
	GuestList *seal.Envelope `json:"guest_list"`
}

// Notice is the params of the notification an office sends when it closes
// or aborts a request.
type Notice struct {
	DataRequestID string             `json:"data_request_id"`
	Status        contactdata.Status `json:"status"` // CLOSED or ABORTED
	// Reason is the office's reason for an abort, at most 500 characters.
	// It is sent to the provider: no personal data.
	Reason string `json:"reason,omitempty"`
}

// ListContext is what a guest list is sealed for: an anonymous envelope
// (the provider's endpoint server signs the response that carries it) to
// office, service guest-lists, kind response, and as message id the
// request's UUID without its hyphens. So a list opens only as the answer
// to that one request, for that office.
func ListContext(office, requestID string) seal.Context {
	return seal.Context{
		Sender: seal.Anonymous, Recipient: office, Service: Service, Kind: seal.KindResponse,
		MessageID: strings.ReplaceAll(requestID, "-", ""),
	}
}

// SealList seals the JSON of a guest list to the request's key for office.
// It does not validate the list.
func SealList(key pki.SealKey, office string, list *contactdata.GuestList) (*seal.Envelope, error) {
	pt, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	return seal.SealUnsigned(key, ListContext(office, list.DataRequestID), pt)
}

// checkSealKey checks the key a request carries.
func checkSealKey(k *pki.SealKey, requestID string) error {
	switch {
	case k.KEM != seal.KEMMLKEM768X25519:
		return fieldError(jsonrpc.CodeInvalidParams, "seal_key.kem", fmt.Sprintf("must be %d (ML-KEM-768 with X25519)", seal.KEMMLKEM768X25519))
	case k.ID != requestID:
		return fieldError(jsonrpc.CodeInvalidParams, "seal_key.id", "must be the request's id")
	}
	if _, err := hpke.MLKEM768X25519().NewPublicKey(k.Public); err != nil {
		return fieldError(jsonrpc.CodeInvalidParams, "seal_key.public", "must be an ML-KEM-768 with X25519 public key")
	}
	return nil
}

// FieldError is one refused field, as the data of a refusal lists it.
type FieldError struct {
	Field string `json:"field"`
	Rule  string `json:"rule"`
}

// fieldError is an answer with one refused field.
func fieldError(code int, field, rule string) *sdk.Error {
	return sdk.NewError(code, field+": "+rule, []FieldError{{field, rule}})
}

// validationError turns contactdata's errors about a document at prefix
// ("" for none) into an answer with code that names each field.
func validationError(code int, prefix string, err error) *sdk.Error {
	ve, ok := errors.AsType[contactdata.ValidationErrors](err)
	if !ok {
		return sdk.NewError(code, prefix+": "+err.Error(), nil)
	}
	fields := make([]FieldError, 0, len(ve))
	msgs := make([]string, 0, len(ve))
	for _, e := range ve {
		f := e.Field
		switch {
		case prefix != "" && f != "":
			f = prefix + "." + f
		case prefix != "":
			f = prefix
		}
		fields = append(fields, FieldError{Field: f, Rule: e.Rule})
		if f == "" {
			msgs = append(msgs, e.Rule)
		} else {
			msgs = append(msgs, f+": "+e.Rule)
		}
	}
	return sdk.NewError(code, strings.Join(msgs, "; "), fields)
}

// decodeRequest decodes and validates a RequestMessage: the DataRequest
// strictly with contactdata, the key by its shape.
func decodeRequest(params []byte) (*RequestMessage, error) {
	var raw struct {
		Request json.RawMessage `json:"request"`
		SealKey *pki.SealKey    `json:"seal_key"`
	}
	if err := sdk.DecodeStrict(params, &raw); err != nil {
		return nil, err
	}
	if len(raw.Request) == 0 {
		return nil, fieldError(jsonrpc.CodeInvalidParams, "request", "is required")
	}
	var rm RequestMessage
	if err := contactdata.Decode(raw.Request, &rm.Request); err != nil {
		return nil, validationError(jsonrpc.CodeInvalidParams, "request", err)
	}
	if raw.SealKey == nil {
		return nil, fieldError(jsonrpc.CodeInvalidParams, "seal_key", "is required")
	}
	rm.SealKey = *raw.SealKey
	if rm.Request.Status != contactdata.StatusDataRequested {
		return nil, fieldError(jsonrpc.CodeInvalidParams, "request.status", "must be DATA_REQUESTED")
	}
	if err := checkSealKey(&rm.SealKey, rm.Request.ID); err != nil {
		return nil, err
	}
	return &rm, nil
}

// refusal turns an error answer into the fields of a Refusal.
func refusalOf(e *sdk.Error, byProvider bool) *Refusal {
	r := &Refusal{Code: e.Code, Message: e.Message, ByProvider: byProvider}
	if len(e.Data) > 0 {
		var fields []FieldError
		if json.Unmarshal(e.Data, &fields) == nil {
			r.Fields = fields
		}
	}
	return r
}
