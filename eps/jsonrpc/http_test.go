package jsonrpc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

const (
	testToken = Token("s3cr3t-t0ken")
	oneCall   = `{"jsonrpc":"2.0","method":"m","id":1}`
)

func TestHTTPStatus(t *testing.T) {
	url, hc := startHTTP(t, echo, Options{Token: testToken, MaxBodyBytes: 1 << 10})
	for _, tt := range []struct {
		name        string
		method      string
		contentType string
		auth        []string // Authorization header values
		body        string
		chunked     bool // send without Content-Length
		wantStatus  int
		wantHeader  map[string]string
		wantCode    int    // JSON-RPC error code in the body, or 0
		wantBody    string // exact body, if set
	}{
		{"ok", "POST", "application/json", []string{"Bearer " + string(testToken)}, oneCall, false,
			200, map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"}, 0,
			`{"jsonrpc":"2.0","result":["m",null],"id":1}`},
		{"ok charset", "POST", "application/json; charset=UTF-8", []string{"bearer  " + string(testToken)}, oneCall, false,
			200, nil, 0, `{"jsonrpc":"2.0","result":["m",null],"id":1}`},
		{"ok chunked", "POST", "application/json", []string{"Bearer " + string(testToken)}, oneCall, true,
			200, nil, 0, `{"jsonrpc":"2.0","result":["m",null],"id":1}`},
		{"notification", "POST", "application/json", []string{"Bearer " + string(testToken)}, `{"jsonrpc":"2.0","method":"m"}`, false,
			204, nil, 0, ``},
		{"notification batch", "POST", "application/json", []string{"Bearer " + string(testToken)}, `[{"jsonrpc":"2.0","method":"m"}]`, false,
			204, nil, 0, ``},
		{"parse error is 200", "POST", "application/json", []string{"Bearer " + string(testToken)}, `{`, false,
			200, nil, CodeParseError, ``},
		{"GET", "GET", "", []string{"Bearer " + string(testToken)}, ``, false,
			405, map[string]string{"Allow": "POST"}, CodeInvalidRequest, ``},
		{"OPTIONS preflight", "OPTIONS", "", nil, ``, false,
			405, map[string]string{"Allow": "POST"}, CodeInvalidRequest, ``},
		{"PUT", "PUT", "application/json", []string{"Bearer " + string(testToken)}, oneCall, false,
			405, map[string]string{"Allow": "POST"}, CodeInvalidRequest, ``},
		{"no token", "POST", "application/json", nil, oneCall, false,
			401, map[string]string{"WWW-Authenticate": `Bearer realm="kurier"`}, CodeNotAllowed, ``},
		{"wrong token", "POST", "application/json", []string{"Bearer nope"}, oneCall, false,
			401, map[string]string{"WWW-Authenticate": `Bearer realm="kurier", error="invalid_token"`}, CodeNotAllowed, ``},
		{"token prefix", "POST", "application/json", []string{"Bearer " + string(testToken)[:5]}, oneCall, false,
			401, nil, CodeNotAllowed, ``},
		{"token twice", "POST", "application/json", []string{"Bearer " + string(testToken), "Bearer " + string(testToken)}, oneCall, false,
			401, nil, CodeNotAllowed, ``},
		{"basic auth", "POST", "application/json", []string{"Basic " + string(testToken)}, oneCall, false,
			401, map[string]string{"WWW-Authenticate": `Bearer realm="kurier"`}, CodeNotAllowed, ``},
		{"no content type", "POST", "", []string{"Bearer " + string(testToken)}, oneCall, false,
			415, map[string]string{"Accept": "application/json"}, CodeInvalidRequest, ``},
		{"text/plain", "POST", "text/plain", []string{"Bearer " + string(testToken)}, oneCall, false,
			415, nil, CodeInvalidRequest, ``},
		{"form", "POST", "application/x-www-form-urlencoded", []string{"Bearer " + string(testToken)}, oneCall, false,
			415, nil, CodeInvalidRequest, ``},
		{"latin1", "POST", "application/json; charset=iso-8859-1", []string{"Bearer " + string(testToken)}, oneCall, false,
			415, nil, CodeInvalidRequest, ``},
		{"too large", "POST", "application/json", []string{"Bearer " + string(testToken)}, strings.Repeat(" ", 1<<10) + oneCall, false,
			413, nil, CodeTooLarge, ``},
		{"too large chunked", "POST", "application/json", []string{"Bearer " + string(testToken)}, strings.Repeat(" ", 1<<10) + oneCall, true,
			413, nil, CodeTooLarge, ``},
		{"at the limit", "POST", "application/json", []string{"Bearer " + string(testToken)}, strings.Repeat(" ", 1<<10-len(oneCall)) + oneCall, false,
			200, nil, 0, `{"jsonrpc":"2.0","result":["m",null],"id":1}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = io.MultiReader(body) // hides the length
			}
			req, err := http.NewRequestWithContext(t.Context(), tt.method, url, body)
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			for _, a := range tt.auth {
				req.Header.Add("Authorization", a)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, got)
			}
			for k, v := range tt.wantHeader {
				if resp.Header.Get(k) != v {
					t.Errorf("%s: %q, want %q", k, resp.Header.Get(k), v)
				}
			}
			switch {
			case tt.wantStatus == http.StatusNoContent:
				if len(got) != 0 {
					t.Errorf("204 with body %q", got)
				}
			case tt.wantCode != 0:
				var r Response
				if err := json.Unmarshal(got, &r); err != nil || r.Error == nil || r.Error.Code != tt.wantCode || !r.ID.IsNull() {
					t.Errorf("body %s (%v), want a JSON-RPC error %d with id null", got, err, tt.wantCode)
				}
				if resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("Content-Type %q for an error body", resp.Header.Get("Content-Type"))
				}
			case string(got) != tt.wantBody:
				t.Errorf("body %s, want %s", got, tt.wantBody)
			}
		})
	}
}

// TestHTTPNoToken checks that without Options.Token no Authorization is
// needed, and any sent is ignored.
func TestHTTPNoToken(t *testing.T) {
	url, hc := startHTTP(t, echo, Options{})
	for _, auth := range []string{"", "Bearer whatever"} {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", url, strings.NewReader(oneCall))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("Authorization %q: status %d, want 200", auth, resp.StatusCode)
		}
	}
}

func TestNewHTTPHandler(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    HandlerFunc
		opts Options
		ok   bool
	}{
		{"defaults", echo, Options{}, true},
		{"nil handler", nil, Options{}, false},
		{"negative batch", echo, Options{MaxBatch: -1}, false},
		{"negative concurrency", echo, Options{Concurrency: -1}, false},
		{"negative body", echo, Options{MaxBodyBytes: -1}, false},
	} {
		_, err := NewHTTPHandler(tt.h, tt.opts)
		if (err == nil) != tt.ok {
			t.Errorf("%s: NewHTTPHandler: %v", tt.name, err)
		}
	}
}

func TestTokenRedacted(t *testing.T) {
	var buf bytes.Buffer
	opts := Options{Token: testToken}
	fmt.Fprintf(&buf, "%v %s %+v", testToken, testToken, opts)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("options", "token", testToken, "opts", opts)
	if strings.Contains(buf.String(), string(testToken)) {
		t.Errorf("token leaked: %s", buf.String())
	}
}

// TestHTTPClientErrors checks the Client's errors for HTTP failures.
func TestHTTPClientErrors(t *testing.T) {
	url, hc := startHTTP(t, echo, Options{Token: testToken, MaxBodyBytes: 100})
	for _, tt := range []struct {
		name       string
		token      Token
		params     any
		wantStatus int
		wantCode   int
	}{
		{"no token", "", nil, 401, CodeNotAllowed},
		{"too large", testToken, []string{strings.Repeat("x", 100)}, 413, CodeTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{URL: url, HTTPClient: hc, Token: tt.token}
			err := c.Call(t.Context(), "m", tt.params, nil)
			he, ok := errors.AsType[*HTTPError](err)
			if !ok || he.StatusCode != tt.wantStatus {
				t.Fatalf("Call: %v, want an HTTPError %d", err, tt.wantStatus)
			}
			if e, ok := errors.AsType[*Error](err); !ok || e.Code != tt.wantCode {
				t.Errorf("Call: %v, want it to unwrap to code %d", err, tt.wantCode)
			}
		})
	}
}
