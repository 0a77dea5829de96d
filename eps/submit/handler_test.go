package submit

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
	"github.com/prometheus/client_golang/prometheus"
)

// fixture is a Handler of a test link with a recording OnSubmit.
type fixture struct {
	t    *testing.T
	key  pki.SealPrivateKey
	link *Link
	h    *LinkHandler
	reg  *prometheus.Registry
	logs *bytes.Buffer

	now       time.Time
	mu        sync.Mutex // guards the fields below
	got       []*seal.Envelope
	submitErr error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, key: x25519Key(t, "browser-1"), reg: prometheus.NewRegistry(), logs: new(bytes.Buffer)}
	f.now = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	f.link = testLink(t, f.key, f.now)
	log := slog.New(slog.NewTextHandler(io.MultiWriter(f.logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := Handler(Config{
		Link: *f.link,
		OnSubmit: func(ctx context.Context, env *seal.Envelope) error {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.submitErr != nil {
				return f.submitErr
			}
			f.got = append(f.got, env)
			return nil
		},
		Now:        func() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now },
		Logger:     log,
		Registerer: f.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	f.h = h
	return f
}

func (f *fixture) setNow(t time.Time) { f.mu.Lock(); f.now = t; f.mu.Unlock() }

// sealed seals pt for the link as the page does.
func (f *fixture) sealed(pt string) *seal.Envelope {
	s, err := seal.NewSealer(seal.SealerConfig{AEAD: seal.AEADAES128GCM})
	if err != nil {
		f.t.Fatal(err)
	}
	env, err := s.Seal(f.link.Recipient, f.link.Context(), []byte(pt), nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return env
}

func body(id string, env *seal.Envelope) string {
	b, err := env.Marshal()
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf(`{"message_id":%q,"sealed":%s}`, id, b)
}

type req struct {
	method, path, auth, ctype, body string
	header                          map[string]string
}

func (f *fixture) do(r req) *httptest.ResponseRecorder {
	hr := httptest.NewRequest(r.method, "https://k7x2mq.hd-1.kurier.test"+r.path, strings.NewReader(r.body))
	if r.auth != "" {
		hr.Header.Set("Authorization", r.auth)
	}
	if r.ctype != "" {
		hr.Header.Set("Content-Type", r.ctype)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, hr)
	return w
}

func (f *fixture) bearer() string { return "Bearer " + string(f.link.Secret) }

func (f *fixture) submit(b string) *httptest.ResponseRecorder {
	return f.do(req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: b})
}

// count returns eps_submit_requests_total{result}.
func count(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "eps_submit_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no eps_submit_requests_total{result=%q}", result)
	return 0
}

func errorCode(t *testing.T, w *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct{ Error, Message string }
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", w.Body, err)
	}
	return e.Error
}

func TestNewLink(t *testing.T) {
	key := x25519Key(t, "browser-1")
	l := testLink(t, key, time.Now())
	sec, err := base64.RawURLEncoding.Strict().DecodeString(string(l.Secret))
	if err != nil || len(sec) < 16 {
		t.Errorf("secret %d bytes, %v; want at least 16 of base64url", len(sec), err)
	}
	if !validMessageID(l.MessageID) {
		t.Errorf("message id %q", l.MessageID)
	}
	l2 := testLink(t, key, time.Now())
	if l.Secret == l2.Secret || l.MessageID == l2.MessageID {
		t.Error("two links share a secret or message id")
	}
	gen, err := NewLink(Link{Recipient: key.Public(), RecipientName: "hd-1", DisplayName: "GA", Service: "contacts", Expires: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if len(gen.Label) != 6 || !validLabel(gen.Label) {
		t.Errorf("generated label %q", gen.Label)
	}
	if got, want := l.URL("hd-1.kurier.example"), "https://k7x2mq.hd-1.kurier.example/#"+string(l.Secret); got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}
	if _, err := NewLink(*l); err == nil {
		t.Error("NewLink took a link with a secret")
	}

	mlkem, err := pki.NewSealKey("s1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		modify func(*Link)
	}{
		{"ml-kem key", func(l *Link) { l.Recipient = mlkem.Public() }},
		{"short public key", func(l *Link) { l.Recipient.Public = l.Recipient.Public[:31] }},
		{"bad key id", func(l *Link) { l.Recipient.ID = "S 1" }},
		{"short secret", func(l *Link) { l.Secret = Secret(base64.RawURLEncoding.EncodeToString(make([]byte, 15))) }},
		{"padded secret", func(l *Link) { l.Secret = Secret(base64.URLEncoding.EncodeToString(make([]byte, 32))) }},
		{"label with dot", func(l *Link) { l.Label = "k7.x2" }},
		{"label upper case", func(l *Link) { l.Label = "K7X2MQ" }},
		{"recipient anonymous", func(l *Link) { l.RecipientName = "anonymous" }},
		{"bad service", func(l *Link) { l.Service = "Contacts" }},
		{"bad message id", func(l *Link) { l.MessageID = "xyz" }},
		{"no display name", func(l *Link) { l.DisplayName = "" }},
		{"control in display name", func(l *Link) { l.DisplayName = "GA\nX" }},
		{"no expiry", func(l *Link) { l.Expires = time.Time{} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := *l
			tt.modify(&bad)
			if err := bad.Check(); err == nil {
				t.Error("Check accepted it")
			}
			if _, err := Handler(Config{Link: bad, OnSubmit: func(context.Context, *seal.Envelope) error { return nil }}); err == nil {
				t.Error("Handler accepted it")
			}
		})
	}
}

func validMessageID(s string) bool {
	_, err := (seal.Context{Sender: seal.Anonymous, Recipient: "hd-1", Service: "x", Kind: Kind, MessageID: s}).Info()
	return err == nil
}

func TestSecretRedacted(t *testing.T) {
	l := testLink(t, x25519Key(t, "browser-1"), time.Now())
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("link", "link", l, "secret", l.Secret)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("link", "link", *l, "secret", l.Secret)
	fmt.Fprintf(&buf, "%v %+v %#v %s %v", l, *l, *l, l.Secret, l.Secret)
	if strings.Contains(buf.String(), string(l.Secret)) {
		t.Errorf("the secret shows in\n%s", buf.String())
	}
}

func TestHandlerConfig(t *testing.T) {
	l := testLink(t, x25519Key(t, "browser-1"), time.Now())
	ok := func(context.Context, *seal.Envelope) error { return nil }
	if _, err := Handler(Config{Link: *l}); err == nil {
		t.Error("no OnSubmit accepted")
	}
	if _, err := Handler(Config{Link: *l, OnSubmit: ok, MaxBody: seal.MaxSize + 8<<10}); err == nil {
		t.Error("MaxBody over the envelope bound accepted")
	}
	// Handlers of several links share one registry.
	reg := prometheus.NewRegistry()
	for range 3 {
		if _, err := Handler(Config{Link: *l, OnSubmit: ok, Registerer: reg}); err != nil {
			t.Fatalf("second Handler on one registry: %v", err)
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	for _, r := range []req{
		{method: "GET", path: "/"},
		{method: "GET", path: "/app.js"},
		{method: "GET", path: "/nope"},
		{method: "GET", path: PathLinkInfo},
		{method: "GET", path: PathLinkInfo, auth: f.bearer()},
		{method: "POST", path: PathSubmit, auth: "Bearer wrong", ctype: "application/json", body: "{}"},
	} {
		w := f.do(r)
		h := w.Header()
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s %s: CSP %q lacks %q", r.method, r.path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe") || strings.Contains(csp, "*") || strings.Contains(csp, "data:") {
			t.Errorf("%s %s: CSP %q allows inline code or other origins", r.method, r.path, csp)
		}
		for k, want := range map[string]string{
			"Referrer-Policy":        "no-referrer",
			"Cache-Control":          "no-store",
			"X-Content-Type-Options": "nosniff",
		} {
			if got := h.Get(k); got != want {
				t.Errorf("%s %s: %s = %q, want %q", r.method, r.path, k, got, want)
			}
		}
		if c := h.Values("Set-Cookie"); len(c) != 0 {
			t.Errorf("%s %s sets cookies: %q", r.method, r.path, c)
		}
	}
}

func TestAssets(t *testing.T) {
	f := newFixture(t)
	for path, ctype := range map[string]string{
		"/":               "text/html; charset=utf-8",
		"/app.js":         "text/javascript; charset=utf-8",
		"/kurier-seal.js": "text/javascript; charset=utf-8",
		"/style.css":      "text/css; charset=utf-8",
	} {
		w := f.do(req{method: "GET", path: path})
		if w.Code != 200 || w.Header().Get("Content-Type") != ctype || w.Body.Len() == 0 {
			t.Errorf("GET %s = %d %q (%d bytes)", path, w.Code, w.Header().Get("Content-Type"), w.Body.Len())
		}
		if w := f.do(req{method: "HEAD", path: path}); w.Code != 200 || w.Body.Len() != 0 {
			t.Errorf("HEAD %s = %d, %d bytes", path, w.Code, w.Body.Len())
		}
	}
	for _, r := range []struct {
		req
		status int
	}{
		{req{method: "GET", path: "/index.html"}, 404},
		{req{method: "GET", path: "/static/app.js"}, 404},
		{req{method: "GET", path: "/favicon.ico"}, 404},
		{req{method: "POST", path: "/"}, 405},
		{req{method: "OPTIONS", path: PathSubmit}, 405},
	} {
		if w := f.do(r.req); w.Code != r.status {
			t.Errorf("%s %s = %d, want %d", r.method, r.path, w.Code, r.status)
		}
	}
	if n := count(t, f.reg, "not_found"); n != 3 {
		t.Errorf("not_found counted %v times, want 3", n)
	}
}

func TestLinkInfo(t *testing.T) {
	f := newFixture(t)
	for _, auth := range []string{"", "Bearer ", "Bearer " + string(f.link.Secret) + "x", "Basic " + string(f.link.Secret), strings.ToUpper(f.bearer())} {
		w := f.do(req{method: "GET", path: PathLinkInfo, auth: auth})
		if w.Code != 401 || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: %d %q, want 401 with a Bearer challenge", auth, w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
	w := f.do(req{method: "GET", path: PathLinkInfo, auth: f.bearer()})
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s = %d %q", PathLinkInfo, w.Code, w.Header().Get("Content-Type"))
	}
	if strings.Contains(w.Body.String(), string(f.link.Secret)) {
		t.Fatal("link info holds the secret")
	}
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	var got linkInfo
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := linkInfo{Label: "k7x2mq", Recipient: "hd-1", DisplayName: "Gesundheitsamt Musterstadt", Service: "contacts",
		Kind: "notification", MessageID: f.link.MessageID, Expires: f.link.Expires, Key: f.key.Public()}
	if !got.Expires.Equal(want.Expires) || !bytes.Equal(got.Key.Public, want.Key.Public) {
		t.Errorf("link info %+v, want %+v", got, want)
	}
	got.Expires, got.Key.Public, want.Expires, want.Key.Public = time.Time{}, nil, time.Time{}, nil
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("link info %+v, want %+v", got, want)
	}
	if n := count(t, f.reg, "unauthorized"); n != 5 {
		t.Errorf("unauthorized counted %v times, want 5", n)
	}
}

func TestSubmitRefusals(t *testing.T) {
	f := newFixture(t)
	env := f.sealed(`{"format":"kurier-submission/v2"}`)
	good := body(f.link.MessageID, env)
	signed := *env
	signed.Cert, signed.Sig = []byte("not a certificate"), []byte("not a signature")
	otherKey := *env
	otherKey.KeyID = "browser-2"
	big := `{"message_id":"` + strings.Repeat("a", 1<<20) + `"}`

	for _, tt := range []struct {
		name   string
		r      req
		status int
		result string
	}{
		{"GET", req{method: "GET", path: PathSubmit, auth: f.bearer()}, 405, "bad_method"},
		{"no secret", req{method: "POST", path: PathSubmit, ctype: "application/json", body: good}, 401, "unauthorized"},
		{"wrong secret", req{method: "POST", path: PathSubmit, auth: "Bearer " + strings.Repeat("A", 43), ctype: "application/json", body: good}, 401, "unauthorized"},
		{"secret in the query is not a secret", req{method: "POST", path: PathSubmit + "?secret=" + string(f.link.Secret), ctype: "application/json", body: good}, 401, "unauthorized"},
		{"cross site", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: good, header: map[string]string{"Sec-Fetch-Site": "cross-site"}}, 403, "cross_site"},
		{"form post", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/x-www-form-urlencoded", body: good}, 415, "bad_media_type"},
		{"too large", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: big}, 413, "too_large"},
		{"not JSON", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: "sealed"}, 400, "malformed"},
		{"unknown field", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: strings.TrimSuffix(good, "}") + `,"secret":"x"}`}, 400, "malformed"},
		{"two objects", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: good + good}, 400, "malformed"},
		{"no envelope", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: `{"message_id":"` + f.link.MessageID + `"}`}, 400, "malformed"},
		{"malformed envelope", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: strings.Replace(good, `"v":1`, `"v":2`, 1)}, 400, "malformed"},
		{"wrong message id", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: body(strings.Repeat("0", 32), env)}, 422, "wrong_message"},
		{"signed", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: body(f.link.MessageID, &signed)}, 422, "signed"},
		{"other key", req{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: body(f.link.MessageID, &otherKey)}, 422, "wrong_key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := count(t, f.reg, tt.result)
			w := f.do(tt.r)
			if w.Code != tt.status {
				t.Errorf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			if got := errorCode(t, w); got != tt.result {
				t.Errorf("error %q, want %q", got, tt.result)
			}
			if n := count(t, f.reg, tt.result); n != before+1 {
				t.Errorf("%s counted %v, want %v", tt.result, n, before+1)
			}
		})
	}
	if len(f.got) != 0 {
		t.Fatalf("OnSubmit called %d times for refused requests", len(f.got))
	}
	// Still usable after all that.
	if w := f.submit(good); w.Code != 200 {
		t.Fatalf("good submission after refusals: %d %s", w.Code, w.Body)
	}
	checkLogs(t, f, env)
}

// checkLogs asserts that nothing logged holds the secret or the payload.
func checkLogs(t *testing.T, f *fixture, env *seal.Envelope) {
	t.Helper()
	logs := f.logs.String()
	if logs == "" {
		t.Fatal("nothing logged at Debug: the check below would prove nothing")
	}
	for what, s := range map[string]string{
		"secret":     string(f.link.Secret),
		"ciphertext": base64.StdEncoding.EncodeToString(env.CT)[:24],
		"enc":        base64.StdEncoding.EncodeToString(env.Enc)[:24],
	} {
		if strings.Contains(logs, s) {
			t.Errorf("the logs hold the %s", what)
		}
	}
}

func TestSubmitOnce(t *testing.T) {
	f := newFixture(t)
	const pt = `{"format":"kurier-submission/v2","label":"k7x2mq","submitted_at":"2026-03-01T10:00:00Z","contacts":[{"first_name":"Erika","last_name":"Mustermann","email":"erika@example.de","category":"close","last_contact":"2026-02-28"}],"events":[]}`
	env := f.sealed(pt)
	select {
	case <-f.h.Done():
		t.Fatal("Done before any submission")
	default:
	}
	w := f.submit(body(f.link.MessageID, env))
	if w.Code != 200 {
		t.Fatalf("submit = %d %s", w.Code, w.Body)
	}
	var ok struct {
		Status     string    `json:"status"`
		ReceivedAt time.Time `json:"received_at"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &ok); err != nil || ok.Status != "received" || !ok.ReceivedAt.Equal(f.now) {
		t.Errorf("answer %s: %+v, %v", w.Body, ok, err)
	}
	select {
	case <-f.h.Done():
	default:
		t.Error("Done not closed after the submission")
	}
	if len(f.got) != 1 {
		t.Fatalf("OnSubmit got %d envelopes", len(f.got))
	}
	// The office opens it with its key.
	plain, err := seal.Open(f.got[0], f.link.Context(), []pki.SealPrivateKey{f.key})
	if err != nil || string(plain) != pt {
		t.Fatalf("office opens %q, %v", plain, err)
	}
	if _, err := ParseSubmission(plain); err != nil {
		t.Error(err)
	}

	// The link is dead: a second submission (even the same one), the
	// link info, all 410; a wrong secret still 401.
	for _, r := range []req{
		{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: body(f.link.MessageID, env)},
		{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: body(f.link.MessageID, f.sealed("{}"))},
		{method: "GET", path: PathLinkInfo, auth: f.bearer()},
	} {
		w := f.do(r)
		if w.Code != 410 || errorCode(t, w) != "used" {
			t.Errorf("%s %s after use: %d %s, want 410 used", r.method, r.path, w.Code, w.Body)
		}
	}
	if w := f.do(req{method: "POST", path: PathSubmit, auth: "Bearer nope", ctype: "application/json", body: "{}"}); w.Code != 401 {
		t.Errorf("wrong secret after use: %d, want 401", w.Code)
	}
	if len(f.got) != 1 {
		t.Errorf("OnSubmit called %d times", len(f.got))
	}
	if n := count(t, f.reg, "used"); n != 3 {
		t.Errorf("used counted %v, want 3", n)
	}
	if n := count(t, f.reg, "accepted"); n != 1 {
		t.Errorf("accepted counted %v, want 1", n)
	}
	checkLogs(t, f, env)
}

func TestSubmitExpired(t *testing.T) {
	f := newFixture(t)
	f.setNow(f.link.Expires)
	for _, r := range []req{
		{method: "GET", path: PathLinkInfo, auth: f.bearer()},
		{method: "POST", path: PathSubmit, auth: f.bearer(), ctype: "application/json", body: body(f.link.MessageID, f.sealed("{}"))},
	} {
		w := f.do(r)
		if w.Code != 410 || errorCode(t, w) != "expired" {
			t.Errorf("%s %s after expiry: %d %s, want 410 expired", r.method, r.path, w.Code, w.Body)
		}
	}
	if w := f.do(req{method: "GET", path: PathLinkInfo}); w.Code != 401 {
		t.Errorf("no secret after expiry: %d, want 401 (tell nothing to those without it)", w.Code)
	}
	if len(f.got) != 0 {
		t.Error("OnSubmit called after expiry")
	}
}

func TestSubmitRetryAfterFailure(t *testing.T) {
	f := newFixture(t)
	f.submitErr = errors.New("inbox full")
	b := body(f.link.MessageID, f.sealed("{}"))
	w := f.submit(b)
	if w.Code != 503 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("OnSubmit failing: %d %q, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"))
	}
	if n := count(t, f.reg, "failed"); n != 1 {
		t.Errorf("failed counted %v", n)
	}
	f.mu.Lock()
	f.submitErr = nil
	f.mu.Unlock()
	if w := f.submit(b); w.Code != 200 {
		t.Fatalf("retry: %d %s", w.Code, w.Body)
	}
}

func TestSubmitConcurrent(t *testing.T) {
	key := x25519Key(t, "browser-1")
	link := testLink(t, key, time.Now())
	entered, release := make(chan struct{}), make(chan struct{})
	var calls int
	h, err := Handler(Config{Link: *link, OnSubmit: func(ctx context.Context, env *seal.Envelope) error {
		calls++ // never concurrent: the Handler guarantees it (and -race checks)
		close(entered)
		<-release
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	env, err := seal.NewSealer(seal.SealerConfig{AEAD: seal.AEADAES128GCM})
	if err != nil {
		t.Fatal(err)
	}
	e, err := env.Seal(link.Recipient, link.Context(), []byte("{}"), nil)
	if err != nil {
		t.Fatal(err)
	}
	post := func() int {
		r := httptest.NewRequest("POST", PathSubmit, strings.NewReader(body(link.MessageID, e)))
		r.Header.Set("Authorization", "Bearer "+string(link.Secret))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	var wg sync.WaitGroup
	var first int
	wg.Go(func() { first = post() })
	<-entered
	if got := post(); got != 409 {
		t.Errorf("second submission while the first is in OnSubmit: %d, want 409", got)
	}
	close(release)
	wg.Wait()
	if first != 200 {
		t.Errorf("first submission: %d", first)
	}
	if got := post(); got != 410 {
		t.Errorf("after: %d, want 410", got)
	}
	if calls != 1 {
		t.Errorf("OnSubmit called %d times", calls)
	}
}
