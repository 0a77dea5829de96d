package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
)

// ErrBadResponse is wrapped by the Client's errors for responses that are
// not valid JSON-RPC or do not answer the requests sent.
var ErrBadResponse = errors.New("jsonrpc: bad response")

// HTTPError is returned by the Client when the server answered with a
// status other than 200 and 204.
type HTTPError struct {
	StatusCode int
	// Err is the JSON-RPC error the body held, or nil if it held none.
	Err *Error
}

func (e *HTTPError) Error() string {
	s := "jsonrpc: http status " + strconv.Itoa(e.StatusCode)
	if e.Err != nil {
		s += ": " + e.Err.Message + " (" + strconv.Itoa(e.Err.Code) + ")"
	}
	return s
}

// Unwrap returns the JSON-RPC error in the body, if any.
func (e *HTTPError) Unwrap() error {
	if e.Err == nil {
		return nil
	}
	return e.Err
}

// Client calls a JSON-RPC server over HTTP. The zero value needs only URL.
// A Client is safe for concurrent use and must not be copied after first
// use.
type Client struct {
	// URL is the server's endpoint. Required.
	URL string
	// HTTPClient sends the requests. If nil, http.DefaultClient is used.
	HTTPClient *http.Client
	// Token, if not empty, is sent as "Authorization: Bearer <Token>".
	Token Token
	// MaxResponseBytes bounds a response body. If zero, 32 MiB.
	MaxResponseBytes int64

	lastID atomic.Int64 // ids this client assigned: 1, 2, 3, …
}

const defaultMaxResponse = 32 << 20 // bytes

// nextID returns the next id this client assigns.
func (c *Client) nextID() ID { return IntID(c.lastID.Add(1)) }

// Call calls method with params and decodes the result into result (if
// result is not nil). params is encoded with encoding/json and must encode
// to an object or an array; nil sends no params. The id is the next of
// this client's own sequence 1, 2, 3, …
//
// If the server answered with an error, Call returns it as an *Error.
// Errors from HTTP statuses other than 200 are *HTTPError, which unwraps to
// the JSON-RPC error the body held. Call blocks until the response arrives
// or ctx ends.
func (c *Client) Call(ctx context.Context, method string, params, result any) error {
	id := c.nextID()
	body, err := encodeCall(nil, &id, method, params)
	if err != nil {
		return fmt.Errorf("jsonrpc: call %s: %w", method, err)
	}
	data, err := c.post(ctx, body)
	if err != nil {
		return fmt.Errorf("jsonrpc: call %s: %w", method, err)
	}
	if data == nil {
		return fmt.Errorf("jsonrpc: call %s: %w: no content", method, ErrBadResponse)
	}
	var resp Response
	if err := json.Unmarshal(data, &resp); err != nil {
		return fmt.Errorf("jsonrpc: call %s: %w: %w", method, ErrBadResponse, err)
	}
	switch {
	case resp.Error != nil && (resp.ID.IsNull() || resp.ID.Equal(id)):
		return resp.Error // null id: the server could not read ours
	case !resp.ID.Equal(id):
		return fmt.Errorf("jsonrpc: call %s: %w: id %s answers none of ours (%s)", method, ErrBadResponse, resp.ID, id)
	case result != nil:
		if err := json.Unmarshal(resp.Result, result); err != nil {
			return fmt.Errorf("jsonrpc: call %s: decode result: %w", method, err)
		}
	}
	return nil
}

// Notify sends method with params as a notification: the server runs it
// and answers nothing. params is as for Call.
func (c *Client) Notify(ctx context.Context, method string, params any) error {
	body, err := encodeCall(nil, nil, method, params)
	if err != nil {
		return fmt.Errorf("jsonrpc: notify %s: %w", method, err)
	}
	data, err := c.post(ctx, body)
	if err != nil {
		return fmt.Errorf("jsonrpc: notify %s: %w", method, err)
	}
	if data != nil {
		var resp Response
		if json.Unmarshal(data, &resp) == nil && resp.Error != nil {
			return resp.Error
		}
		return fmt.Errorf("jsonrpc: notify %s: %w: unexpected content", method, ErrBadResponse)
	}
	return nil
}

// BatchElem is one call in a batch.
type BatchElem struct {
	Method string
	// Params is as for Call.
	Params any
	// ID is the request's id. If nil, the Client assigns the next of its
	// own sequence (skipping ids given in the same batch). Ignored for a
	// notification.
	ID *ID
	// Notification sends the call as a notification, without an id.
	Notification bool
	// Result, if not nil, receives the decoded result.
	Result any
	// Error is set by Batch: nil on success, an *Error if the server
	// answered with one, or another error if the result could not be
	// decoded. Always nil for notifications.
	Error error
}

// Batch sends elems as one batch and sets each element's Error. It returns
// an error only if the batch as a whole failed: it could not be sent, the
// server refused it (an *Error, or an *HTTPError), or the response does not
// answer it. Batch blocks until the response arrives or ctx ends.
func (c *Client) Batch(ctx context.Context, elems []BatchElem) error {
	if len(elems) == 0 {
		return errors.New("jsonrpc: empty batch")
	}
	ids := make([]ID, len(elems))
	index := make(map[string]int, len(elems)) // ID.Key → element
	for i := range elems {
		if e := &elems[i]; !e.Notification && e.ID != nil {
			k := e.ID.Key()
			if _, dup := index[k]; dup {
				return fmt.Errorf("jsonrpc: batch: id %s given twice", e.ID)
			}
			ids[i], index[k] = *e.ID, i
		}
	}
	body := []byte{'['}
	for i := range elems {
		e := &elems[i]
		e.Error = nil
		var idp *ID
		if !e.Notification {
			if e.ID == nil {
				for {
					ids[i] = c.nextID()
					if _, taken := index[ids[i].Key()]; !taken {
						break
					}
				}
				index[ids[i].Key()] = i
			}
			idp = &ids[i]
		}
		if i > 0 {
			body = append(body, ',')
		}
		var err error
		if body, err = encodeCall(body, idp, e.Method, e.Params); err != nil {
			return fmt.Errorf("jsonrpc: batch element %d (%s): %w", i, e.Method, err)
		}
	}
	body = append(body, ']')

	data, err := c.post(ctx, body)
	if err != nil {
		return fmt.Errorf("jsonrpc: batch: %w", err)
	}
	if data == nil {
		if len(index) > 0 {
			return fmt.Errorf("jsonrpc: batch: %w: no content", ErrBadResponse)
		}
		return nil
	}
	if d := trimSpace(data); len(d) > 0 && d[0] == '{' { // the batch as a whole was refused
		var resp Response
		if err := json.Unmarshal(d, &resp); err != nil || resp.Error == nil {
			return fmt.Errorf("jsonrpc: batch: %w: single response to a batch", ErrBadResponse)
		}
		return resp.Error
	}
	var resps []Response
	if err := json.Unmarshal(data, &resps); err != nil {
		return fmt.Errorf("jsonrpc: batch: %w: %w", ErrBadResponse, err)
	}
	answered := make([]bool, len(elems))
	for _, r := range resps {
		i, ok := index[r.ID.Key()]
		if !ok || answered[i] {
			if r.Error != nil && r.ID.IsNull() {
				// The server could not read one of our elements; it
				// cannot say which, so the batch as a whole failed.
				return r.Error
			}
			return fmt.Errorf("jsonrpc: batch: %w: unexpected response id %s", ErrBadResponse, r.ID)
		}
		answered[i] = true
		e := &elems[i]
		switch {
		case r.Error != nil:
			e.Error = r.Error
		case e.Result != nil:
			if err := json.Unmarshal(r.Result, e.Result); err != nil {
				e.Error = fmt.Errorf("jsonrpc: decode result of %s: %w", e.Method, err)
			}
		}
	}
	for _, i := range index {
		if !answered[i] {
			return fmt.Errorf("jsonrpc: batch: %w: no response for id %s", ErrBadResponse, ids[i])
		}
	}
	return nil
}

// encodeCall appends a request with params encoded by encoding/json.
func encodeCall(dst []byte, id *ID, method string, params any) ([]byte, error) {
	var raw []byte
	if params != nil {
		var err error
		if raw, err = json.Marshal(params); err != nil {
			return nil, fmt.Errorf("encode params: %w", err)
		}
		if string(raw) == "null" { // a nil map or slice: no params
			raw = nil
		}
	}
	return appendRequest(dst, id, method, raw)
}

// post sends body and returns the response body, nil for 204.
func (c *Client) post(ctx context.Context, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+string(c.Token))
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	limit := c.MaxResponseBytes
	if limit <= 0 {
		limit = defaultMaxResponse
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBadResponse, limit)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return data, nil
	case http.StatusNoContent:
		return nil, nil
	}
	he := &HTTPError{StatusCode: resp.StatusCode}
	var r Response
	if json.Unmarshal(data, &r) == nil {
		he.Err = r.Error
	}
	return nil, he
}
