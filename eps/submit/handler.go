// Package submit serves the page through which a citizen (an index case)
// sends contact persons and events to a health office with a one-time link,
//
//	https://k7x2mq.hd-1.kurier.example/#<secret>
//
// The page is served by the office's own endpoint over TLS. The routing
// label (k7x2mq) is public, in DNS and in the TLS SNI; the secret is only in
// the URL fragment, which browsers never send. The page reads it from
// location.hash and presents it as "Authorization: Bearer <secret>" on its
// two requests. It seals the citizen's data in the browser to the office's
// X25519 seal key (static/kurier-seal.js: HPKE, anonymous eps/seal
// envelope) and posts only the envelope. This package never sees the
// plaintext: the office opens the envelope later with its private key
// (seal.Open with Link.Context) and decodes it with ParseSubmission.
//
// Routes of the Handler (every other path is 404):
//
//	GET  /                        the page (static/index.html)
//	GET  /app.js, /kurier-seal.js, /style.css
//	GET  /.well-known/kurier-link the link's public facts as JSON (bearer secret required)
//	POST /submit                  {"message_id": "…", "sealed": <envelope>} (bearer secret required)
//
// Every response has a strict Content-Security-Policy (no inline script or
// style, nothing from other origins), Referrer-Policy: no-referrer and
// Cache-Control: no-store, and none sets a cookie.
package submit

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
	"github.com/prometheus/client_golang/prometheus"
)

//go:embed static
var static embed.FS

// Paths the Handler serves besides the assets.
const (
	PathLinkInfo = "/.well-known/kurier-link"
	PathSubmit   = "/submit"
)

// Headers on every response. The CSP allows scripts, styles and fetches
// from the page's own origin only: no inline code, no eval, no frames, no
// form posts, and Trusted Types so that no string can become HTML.
var securityHeaders = [][2]string{
	{"Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"},
	{"Referrer-Policy", "no-referrer"},
	{"Cache-Control", "no-store"},
	{"X-Content-Type-Options", "nosniff"},
	{"X-Frame-Options", "DENY"},
	{"Cross-Origin-Opener-Policy", "same-origin"},
	{"Cross-Origin-Resource-Policy", "same-origin"},
	{"Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()"},
	{"Strict-Transport-Security", "max-age=31536000"},
}

// Config configures a Handler.
type Config struct {
	// Link is the link the Handler serves. Required; see Link.Check.
	Link Link
	// OnSubmit receives the sealed envelope of the submission. Required.
	// It runs in the request's goroutine with the request's context; the
	// envelope is anonymous, for Link.Recipient and bound to
	// Link.Context (but not opened: the Handler holds no private key). If
	// it returns nil the link is used up; if it returns an error the
	// citizen is told to try again and the link stays usable. It is never
	// called twice at once, and after it returned nil never again.
	OnSubmit func(ctx context.Context, env *seal.Envelope) error
	// Now is the clock for Link.Expires. If nil, time.Now.
	Now func() time.Time
	// MaxBody bounds the body of POST /submit. If zero, 1 MiB; at most
	// seal.MaxSize plus 4 KiB.
	MaxBody int64
	// Logger receives logs; never the secret or the payload. If nil, logs
	// are discarded.
	Logger *slog.Logger
	// Registerer receives the metrics (eps_submit_requests_total by
	// result). Several Handlers may share one: they share the counters.
	// If nil, none are exported.
	Registerer prometheus.Registerer
}

// LinkHandler serves one link (see the package comment). It is safe for
// concurrent use. It sets no server timeouts: the http.Server it runs in
// must (ReadHeaderTimeout, ReadTimeout, IdleTimeout).
type LinkHandler struct {
	cfg    Config // immutable after Handler
	secret jsonrpc.Bearer
	info   []byte // body of PathLinkInfo
	assets map[string]asset
	log    *slog.Logger
	m      *metrics

	mu    sync.Mutex // guards state
	state linkState
	done  chan struct{} // closed when state becomes used
}

var _ http.Handler = (*LinkHandler)(nil)

type linkState int

const (
	fresh   linkState = iota
	pending           // OnSubmit is running
	used
)

type asset struct {
	body  []byte
	ctype string
}

// assetTypes are the files of static/ that are served, at "/"+name
// (index.html at "/").
var assetTypes = map[string]string{
	"index.html":     "text/html; charset=utf-8",
	"app.js":         "text/javascript; charset=utf-8",
	"kurier-seal.js": "text/javascript; charset=utf-8",
	"style.css":      "text/css; charset=utf-8",
}

// linkInfo is the JSON of PathLinkInfo: only what the page needs, nothing
// secret.
type linkInfo struct {
	Label       string      `json:"label"`
	Recipient   string      `json:"recipient"`
	DisplayName string      `json:"display_name"`
	Service     string      `json:"service"`
	Kind        string      `json:"kind"`
	MessageID   string      `json:"message_id"`
	Expires     time.Time   `json:"expires"`
	Key         pki.SealKey `json:"key"`
}

// request is the body of POST /submit.
type request struct {
	MessageID string          `json:"message_id"`
	Sealed    json.RawMessage `json:"sealed"`
}

// Handler checks cfg and returns the handler of its link.
func Handler(cfg Config) (*LinkHandler, error) {
	if err := cfg.Link.Check(); err != nil {
		return nil, err
	}
	if cfg.OnSubmit == nil {
		return nil, errors.New("submit: Config.OnSubmit is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	const maxBody = seal.MaxSize + 4<<10
	switch {
	case cfg.MaxBody == 0:
		cfg.MaxBody = 1 << 20
	case cfg.MaxBody < 0 || cfg.MaxBody > maxBody:
		return nil, fmt.Errorf("submit: Config.MaxBody %d out of range 1-%d", cfg.MaxBody, maxBody)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	l := &cfg.Link
	info, err := json.Marshal(linkInfo{
		Label: l.Label, Recipient: l.RecipientName, DisplayName: l.DisplayName, Service: l.Service,
		Kind: Kind, MessageID: l.MessageID, Expires: l.Expires.UTC(), Key: l.Recipient,
	})
	if err != nil {
		return nil, fmt.Errorf("submit: encode link info: %w", err)
	}
	h := &LinkHandler{
		cfg:    cfg,
		secret: jsonrpc.NewBearer(string(l.Secret)),
		info:   info,
		assets: make(map[string]asset, len(assetTypes)),
		log:    log.With("component", "submit", "label", l.Label),
		m:      m,
		done:   make(chan struct{}),
	}
	for name, ctype := range assetTypes {
		b, err := static.ReadFile("static/" + name)
		if err != nil {
			return nil, fmt.Errorf("submit: embedded asset: %w", err) // a broken build
		}
		path := "/" + name
		if name == "index.html" {
			path = "/"
		}
		h.assets[path] = asset{body: b, ctype: ctype}
	}
	return h, nil
}

// Done returns a channel that is closed once a submission was accepted
// (OnSubmit returned nil): then the route to this link can be withdrawn.
func (h *LinkHandler) Done() <-chan struct{} { return h.done }

// ServeHTTP implements http.Handler.
func (h *LinkHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	for _, kv := range securityHeaders {
		hdr.Set(kv[0], kv[1])
	}
	switch r.URL.Path {
	case PathSubmit:
		h.serveSubmit(w, r)
	case PathLinkInfo:
		h.serveInfo(w, r)
	default:
		h.serveAsset(w, r)
	}
}

func (h *LinkHandler) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.URL.Path]
	if !ok {
		h.refuse(w, r, http.StatusNotFound, "not_found", "no such page")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.refuse(w, r, http.StatusMethodNotAllowed, "bad_method", "use GET")
		return
	}
	h.m.requests.WithLabelValues("asset").Inc()
	w.Header().Set("Content-Type", a.ctype)
	w.Header().Set("Content-Length", strconv.Itoa(len(a.body)))
	if r.Method == http.MethodGet {
		w.Write(a.body)
	}
}

func (h *LinkHandler) serveInfo(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		h.refuse(w, r, http.StatusMethodNotAllowed, "bad_method", "use GET")
		return
	}
	if !h.authorize(w, r) || !h.live(w, r) {
		return
	}
	h.m.requests.WithLabelValues("link_info").Inc()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(h.info)))
	if r.Method == http.MethodGet {
		w.Write(h.info)
	}
}

func (h *LinkHandler) serveSubmit(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		h.refuse(w, r, http.StatusMethodNotAllowed, "bad_method", "use POST")
		return
	}
	// The page posts from its own origin. Authorization and a JSON body
	// already keep other origins out (they would need a CORS preflight,
	// which is refused); where the browser says where a request comes
	// from, refuse other sites outright as well.
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		h.refuse(w, r, http.StatusForbidden, "cross_site", "requests from other sites are refused")
		return
	}
	if !h.authorize(w, r) || !h.live(w, r) {
		return
	}
	if !jsonrpc.IsJSON(r.Header.Get("Content-Type")) {
		w.Header().Set("Accept", "application/json")
		h.refuse(w, r, http.StatusUnsupportedMediaType, "bad_media_type", "Content-Type must be application/json")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			h.refuse(w, r, http.StatusRequestEntityTooLarge, "too_large", "submission too large")
			return
		}
		h.refuse(w, r, http.StatusBadRequest, "malformed", "cannot read the request")
		return
	}
	env, result, msg := h.parse(body)
	if env == nil {
		status := http.StatusBadRequest
		if result != "malformed" {
			status = http.StatusUnprocessableEntity
		}
		h.refuse(w, r, status, result, msg)
		return
	}

	h.mu.Lock()
	st := h.state
	if st == fresh {
		h.state = pending
	}
	h.mu.Unlock()
	switch st {
	case pending:
		h.refuse(w, r, http.StatusConflict, "in_progress", "a submission through this link is in progress")
		return
	case used:
		h.refuse(w, r, http.StatusGone, "used", "this link has been used")
		return
	}
	if err := h.cfg.OnSubmit(r.Context(), env); err != nil {
		h.mu.Lock()
		h.state = fresh
		h.mu.Unlock()
		h.m.requests.WithLabelValues("failed").Inc()
		h.log.Warn("submission not taken", "err", err) // an error of our side: the citizen retries
		w.Header().Set("Retry-After", "30")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "failed", "message": "the submission could not be stored; try again"})
		return
	}
	h.mu.Lock()
	h.state = used
	h.mu.Unlock()
	close(h.done)
	h.m.requests.WithLabelValues("accepted").Inc()
	now := h.cfg.Now().UTC()
	h.log.Info("submission received", "message_id", h.cfg.Link.MessageID, "bytes_in", len(body))
	writeJSON(w, http.StatusOK, map[string]string{"status": "received", "received_at": now.Format(time.RFC3339)})
}

// parse decodes a submit request and checks it belongs to the link. It
// returns the envelope, or nil and the refusal's result label and message.
func (h *LinkHandler) parse(body []byte) (*seal.Envelope, string, string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var req request
	if err := dec.Decode(&req); err != nil {
		return nil, "malformed", "the request is not the expected JSON object"
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "malformed", "data after the request object"
	}
	if len(req.Sealed) == 0 || string(req.Sealed) == "null" {
		return nil, "malformed", "no sealed envelope"
	}
	env, err := seal.Parse(req.Sealed)
	if err != nil {
		return nil, "malformed", "the sealed envelope is malformed"
	}
	l := &h.cfg.Link
	switch {
	case req.MessageID != l.MessageID:
		return nil, "wrong_message", "the message id is not this link's"
	case env.Signed():
		return nil, "signed", "a submission is anonymous: no cert or sig"
	case env.KeyID != l.Recipient.ID || env.KEM != l.Recipient.KEM:
		return nil, "wrong_key", "the envelope is not sealed to this link's key"
	}
	return env, "", ""
}

// authorize checks the bearer secret; if it is missing or wrong it answers
// 401 and returns false.
func (h *LinkHandler) authorize(w http.ResponseWriter, r *http.Request) bool {
	ok, presented := h.secret.Check(r)
	if ok {
		return true
	}
	challenge := `Bearer realm="kurier-submit"`
	if presented {
		challenge += `, error="invalid_token"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	h.refuse(w, r, http.StatusUnauthorized, "unauthorized", "missing or wrong link secret")
	return false
}

// live answers 410 and returns false if the link expired or was used.
func (h *LinkHandler) live(w http.ResponseWriter, r *http.Request) bool {
	if !h.cfg.Now().Before(h.cfg.Link.Expires) {
		h.refuse(w, r, http.StatusGone, "expired", "this link has expired")
		return false
	}
	h.mu.Lock()
	st := h.state
	h.mu.Unlock()
	if st == used {
		h.refuse(w, r, http.StatusGone, "used", "this link has been used")
		return false
	}
	return true
}

// refuse counts a refusal, logs it at Debug (the client controls how often
// it happens) and answers {"error": result, "message": msg}. It never logs
// headers or the body.
func (h *LinkHandler) refuse(w http.ResponseWriter, r *http.Request, status int, result, msg string) {
	h.m.requests.WithLabelValues(result).Inc()
	h.log.Debug("request refused", "result", result, "method", r.Method, "path", r.URL.Path, "remote_addr", r.RemoteAddr)
	writeJSON(w, status, map[string]string{"error": result, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // map[string]string: cannot fail
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

type metrics struct {
	requests *prometheus.CounterVec
}

// results are the values of the result label, so that every series exists
// from the start.
var results = []string{
	// served
	"asset", "link_info", "accepted",
	// OnSubmit failed: the citizen may try again
	"failed",
	// refused
	"not_found", "bad_method", "cross_site", "unauthorized", "expired", "used",
	"in_progress", "bad_media_type", "too_large", "malformed", "wrong_message", "signed", "wrong_key",
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "eps_submit_requests_total",
		Help: "Requests to one-time submission links by result.",
	}, []string{"result"})
	if reg != nil {
		if err := reg.Register(requests); err != nil {
			are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
			if !ok {
				return nil, fmt.Errorf("submit: register metrics: %w", err)
			}
			// Another link's Handler registered it: count into the same.
			if requests, ok = are.ExistingCollector.(*prometheus.CounterVec); !ok {
				return nil, fmt.Errorf("submit: register metrics: %w", err)
			}
		}
	}
	for _, r := range results {
		requests.WithLabelValues(r)
	}
	return &metrics{requests: requests}, nil
}
