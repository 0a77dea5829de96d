package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
)

// The headers with which the endpoint server describes a callback. They
// are what the endpoint server vouches for; the JSON-RPC body carries only
// the method (the service) and the params.
const (
	HeaderFrom          = "Kurier-From"
	HeaderMessageID     = "Kurier-Message-Id"
	HeaderKind          = "Kurier-Kind"
	HeaderService       = "Kurier-Service"
	HeaderDeadline      = "Kurier-Deadline"
	HeaderCorrelationID = "Kurier-Correlation-Id"
	HeaderSync          = "Kurier-Sync"   // "true" on a request whose caller waits
	HeaderSealed        = "Kurier-Sealed" // "true" when params are {"sealed": envelope} (kurier eps --pass-sealed)
)

// CallbackOptions configure Mux.Handler.
type CallbackOptions struct {
	// Token is the bearer token the endpoint server sends with callbacks
	// (eps.Config.CallbackToken). Required unless NoToken is set: without
	// it, anything that can reach the handler could claim any sender.
	// Every request is refused while it is empty and NoToken is not set.
	Token Token
	// NoToken accepts callbacks without a token. Use it only where nothing
	// but the endpoint server can reach the handler.
	NoToken bool
	// MaxBody bounds a callback's body. If zero, 16 MiB.
	MaxBody int64
	// Logger receives the handler's logs. If nil, the Mux's Logger.
	Logger *slog.Logger
}

// Handler returns the http.Handler to give the endpoint server as its
// callback URL (eps.Config.Callback). It checks the bearer token in
// constant time, takes the message's sender, id, kind, service and
// deadline from the endpoint server's Kurier-* headers (never from the
// params), dispatches the message, and answers the endpoint server's
// JSON-RPC request:
//
//	200  JSON-RPC response: the answer to a request (result or error);
//	     result null for other kinds. The endpoint server acknowledges.
//	503  the handler asked to retry (ErrRetry), or its context ended: the
//	     endpoint server delivers the message again later.
//	400, 401, 405, 413  malformed, unauthenticated, not POST, too large.
//
// It serves every path. It is safe for concurrent use.
func (mx *Mux) Handler(opts CallbackOptions) http.Handler {
	if opts.MaxBody <= 0 {
		opts.MaxBody = 16 << 20
	}
	h := &callbackHandler{mx: mx, opts: opts}
	if opts.Token != "" {
		h.token = jsonrpc.NewBearer(string(opts.Token))
	}
	return h
}

type callbackHandler struct {
	mx    *Mux
	opts  CallbackOptions
	token jsonrpc.Bearer
}

func (h *callbackHandler) log() *slog.Logger {
	if h.opts.Logger != nil {
		return h.opts.Logger
	}
	return h.mx.logger()
}

// authorized reports whether r carries the token.
func (h *callbackHandler) authorized(r *http.Request) bool {
	if h.opts.Token == "" {
		if !h.opts.NoToken {
			h.log().Error("callback refused: CallbackOptions has no Token (set NoToken to accept callbacks without one)")
		}
		return h.opts.NoToken
	}
	ok, _ := h.token.Check(r)
	return ok
}

func (h *callbackHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeRPC(w, http.StatusMethodNotAllowed, jsonrpc.ID{}, nil, jsonrpc.NewError(jsonrpc.CodeInvalidRequest, "method must be POST"))
		return
	}
	if !h.authorized(r) {
		h.log().Debug("callback with a missing or wrong token", "remote_addr", r.RemoteAddr)
		w.Header().Set("WWW-Authenticate", `Bearer realm="kurier-callback"`)
		writeRPC(w, http.StatusUnauthorized, jsonrpc.ID{}, nil, jsonrpc.NewError(jsonrpc.CodeNotAllowed, "missing or wrong bearer token"))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeRPC(w, http.StatusRequestEntityTooLarge, jsonrpc.ID{}, nil, jsonrpc.NewError(jsonrpc.CodeTooLarge, nil))
		}
		return // else the endpoint server is gone
	}
	m, id, err := decodeCallback(r.Header, body)
	if err != nil {
		h.log().Debug("malformed callback", "remote_addr", r.RemoteAddr, "err", err)
		writeRPC(w, http.StatusBadRequest, id, nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidRequest, Message: err.Error()})
		return
	}
	o := h.mx.dispatch(r.Context(), m)
	switch {
	case !o.ack:
		w.Header().Set("Retry-After", "1")
		writeRPC(w, http.StatusServiceUnavailable, id, nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "not handled yet; deliver again later"})
	case m.Kind == KindRequest && o.ans != nil:
		writeRPC(w, http.StatusOK, id, o.ans.Result, o.ans.Error)
	default:
		writeRPC(w, http.StatusOK, id, json.RawMessage("null"), nil)
	}
}

// decodeCallback reads the message from the endpoint server's headers and
// JSON-RPC request. The id of the request is returned even with an error,
// when it could be read.
func decodeCallback(hdr http.Header, body []byte) (*Message, jsonrpc.ID, error) {
	var req struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Method  string          `json:"method"`
		Params  json.RawMessage `json:"params"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, jsonrpc.ID{}, fmt.Errorf("body is not a JSON-RPC request: %v", err)
	}
	var id jsonrpc.ID
	if len(req.ID) > 0 && id.UnmarshalJSON(req.ID) != nil {
		id = jsonrpc.ID{}
	}
	if req.JSONRPC != "2.0" {
		return nil, id, errors.New(`body is not a JSON-RPC 2.0 request`)
	}
	m := &Message{
		From:    hdr.Get(HeaderFrom),
		Kind:    Kind(hdr.Get(HeaderKind)),
		Service: hdr.Get(HeaderService),
		Params:  req.Params,
	}
	var err error
	if m.ID, err = ParseMessageID(hdr.Get(HeaderMessageID)); err != nil {
		return nil, id, fmt.Errorf("%s: %v", HeaderMessageID, err)
	}
	if id.IsNull() || !id.Equal(jsonrpc.StringID(m.ID.String())) {
		return nil, id, fmt.Errorf("the request's id is not the %s", HeaderMessageID)
	}
	if m.Deadline, err = time.Parse(time.RFC3339, hdr.Get(HeaderDeadline)); err != nil {
		return nil, id, fmt.Errorf("%s: %v", HeaderDeadline, err)
	}
	if c := hdr.Get(HeaderCorrelationID); c != "" {
		if m.CorrelationID, err = ParseMessageID(c); err != nil {
			return nil, id, fmt.Errorf("%s: %v", HeaderCorrelationID, err)
		}
	}
	if s := hdr.Get(HeaderSync); s != "" {
		if m.Sync, err = strconv.ParseBool(s); err != nil {
			return nil, id, fmt.Errorf("%s: %v", HeaderSync, err)
		}
	}
	if err := m.check(); err != nil {
		return nil, id, err
	}
	want := m.Service
	if m.Kind == KindStatus {
		want = "_status"
	}
	if req.Method != want {
		return nil, id, fmt.Errorf("method %q does not match %s %q", req.Method, HeaderService, m.Service)
	}
	return m, id, nil
}

// writeRPC answers with a JSON-RPC response.
func writeRPC(w http.ResponseWriter, status int, id jsonrpc.ID, result json.RawMessage, e *jsonrpc.Error) {
	if e == nil && result == nil {
		result = json.RawMessage("null")
	}
	b, err := jsonrpc.Response{ID: id, Result: result, Error: e}.MarshalJSON()
	if err != nil { // a result that is not valid JSON: our bug, not the peer's
		b, _ = jsonrpc.Response{ID: id, Error: jsonrpc.NewError(jsonrpc.CodeInternalError, nil)}.MarshalJSON()
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
