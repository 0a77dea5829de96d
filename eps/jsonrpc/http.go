package jsonrpc

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Token is a bearer token for the local API. It redacts itself when logged
// or formatted with %v or %s; use string(tok) where the token itself must be
// written out.
type Token string

// LogValue implements slog.LogValuer.
func (Token) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String returns a redacted placeholder, never the token.
func (Token) String() string { return "REDACTED" }

var _ slog.LogValuer = Token("")

// HTTPHandler serves JSON-RPC over HTTP: one request or batch per POST,
// answered by Serve. It serves every path; routing is the caller's.
//
//	405  the method is not POST (Allow: POST)
//	401  Options.Token is set and the request lacks "Authorization: Bearer <token>"
//	415  Content-Type is not application/json (charset, if given, must be utf-8)
//	413  the body exceeds Options.MaxBodyBytes
//	200  a JSON-RPC response (errors included)
//	204  notifications only: no body
//
// The error statuses carry a JSON-RPC error response with id null, so a
// client can show one message whatever failed. Requiring application/json
// also keeps web pages out: a browser must ask first (CORS preflight) before
// sending it to another origin, and the preflight, an OPTIONS request, is
// refused. The token is the defence against pages that reach the loopback
// address under their own name (DNS rebinding).
//
// An HTTPHandler is safe for concurrent use.
type HTTPHandler struct {
	h     HandlerFunc
	opts  Options // defaults filled
	log   *slog.Logger
	token Bearer // opts.Token, if set
}

var _ http.Handler = (*HTTPHandler)(nil)

// NewHTTPHandler returns an HTTPHandler running requests with h. Zero
// fields of opts take their defaults; negative ones are an error.
func NewHTTPHandler(h HandlerFunc, opts Options) (*HTTPHandler, error) {
	if h == nil {
		return nil, errors.New("jsonrpc: nil HandlerFunc")
	}
	if opts.MaxBatch < 0 || opts.Concurrency < 0 || opts.MaxBodyBytes < 0 {
		return nil, errors.New("jsonrpc: negative Options.MaxBatch, Concurrency or MaxBodyBytes")
	}
	opts = opts.withDefaults()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Logger = opts.Logger.With("component", "jsonrpc")
	hh := &HTTPHandler{h: h, opts: opts, log: opts.Logger}
	if opts.Token != "" {
		// Compare hashes so the comparison takes the same time whatever the
		// length of the token presented.
		hh.token = NewBearer(string(opts.Token))
	}
	return hh, nil
}

// ServeHTTP implements http.Handler.
func (hh *HTTPHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, NewError(CodeInvalidRequest, "method must be POST"))
		return
	}
	if ok, presented := hh.authorized(r); !ok {
		challenge := `Bearer realm="kurier"`
		if presented {
			challenge += `, error="invalid_token"`
		}
		hh.log.Debug("unauthorized request", "remote_addr", r.RemoteAddr, "token_presented", presented)
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, http.StatusUnauthorized, NewError(CodeNotAllowed, "missing or wrong bearer token"))
		return
	}
	if !IsJSON(r.Header.Get("Content-Type")) {
		w.Header().Set("Accept", "application/json")
		writeError(w, http.StatusUnsupportedMediaType, NewError(CodeInvalidRequest, "Content-Type must be application/json"))
		return
	}
	body, err := hh.readBody(w, r)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, NewError(CodeTooLarge,
				"body larger than "+strconv.FormatInt(hh.opts.MaxBodyBytes, 10)+" bytes"))
			return
		}
		hh.log.Debug("read request body", "remote_addr", r.RemoteAddr, "err", err)
		w.WriteHeader(http.StatusBadRequest) // the client is most likely gone
		return
	}

	resp, status := serve(r.Context(), body, hh.h, hh.opts)
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(resp)))
	w.WriteHeader(status)
	w.Write(resp) // a failed write means the client left; nothing to do
}

// authorized reports whether r carries the token, if one is required, and
// whether r presented any bearer token.
func (hh *HTTPHandler) authorized(r *http.Request) (ok, presented bool) {
	if hh.opts.Token == "" {
		return true, false
	}
	return hh.token.Check(r)
}

// Bearer is a bearer token kept as its SHA-256 digest.
type Bearer [sha256.Size]byte

// NewBearer returns token's Bearer.
func NewBearer(token string) Bearer { return sha256.Sum256([]byte(token)) }

// Check reports whether r carries exactly one "Authorization: Bearer
// <token>" header with this token, and whether it presented any bearer
// token at all. It compares digests, so the time taken does not depend on
// what was presented.
func (b *Bearer) Check(r *http.Request) (ok, presented bool) {
	vals := r.Header.Values("Authorization")
	if len(vals) != 1 { // none, or ambiguous
		return false, len(vals) > 0
	}
	scheme, tok, found := strings.Cut(vals[0], " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return false, false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], b[:]) == 1, true
}

// IsJSON reports whether a Content-Type value is application/json in UTF-8.
func IsJSON(contentType string) bool {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "application/json" {
		return false
	}
	cs, ok := params["charset"]
	return !ok || strings.EqualFold(cs, "utf-8")
}

// readBody reads the whole body, at most MaxBodyBytes of it.
func (hh *HTTPHandler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := hh.opts.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength) + bytes.MinRead) // room to see EOF without growing
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeError answers with an HTTP error status and a JSON-RPC error with id
// null.
func writeError(w http.ResponseWriter, status int, e *Error) {
	b, _ := appendResponse(nil, ID{}, nil, e) // our own data: always valid
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}
