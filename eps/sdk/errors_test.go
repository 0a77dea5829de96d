package sdk_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/sdk"
)

var sentinels = []struct {
	code int
	err  error
}{
	{jsonrpc.CodeNotAllowed, sdk.ErrNotAllowed},
	{jsonrpc.CodeUnknownMember, sdk.ErrUnknownMember},
	{jsonrpc.CodeUnavailable, sdk.ErrUnavailable},
	{jsonrpc.CodeTimeout, sdk.ErrTimeout},
	{jsonrpc.CodeQueueFull, sdk.ErrQueueFull},
	{jsonrpc.CodeTooLarge, sdk.ErrTooLarge},
	{jsonrpc.CodeExpired, sdk.ErrExpired},
	{jsonrpc.CodeSealed, sdk.ErrSealed},
	{jsonrpc.CodeMethodNotFound, sdk.ErrMethodNotFound},
	{jsonrpc.CodeInvalidParams, sdk.ErrInvalidParams},
	{jsonrpc.CodeInternalError, sdk.ErrInternal},
}

// fakeAPI is a local API that answers "x.<code>" with that error code.
func fakeAPI(t *testing.T, token string) string {
	h, err := jsonrpc.NewHTTPHandler(func(ctx context.Context, r *jsonrpc.Request) (any, error) {
		_, c, _ := strings.Cut(r.Method, ".")
		code, err := strconv.Atoi(c)
		if err != nil {
			return nil, jsonrpc.NewError(jsonrpc.CodeMethodNotFound, nil)
		}
		return nil, &jsonrpc.Error{Code: code, Message: "refused", Data: []byte(`{"why":"test"}`)}
	}, jsonrpc.Options{Token: jsonrpc.Token(token)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestErrorCodes: each Kurier and JSON-RPC code the local API answers with
// matches its sentinel and no other.
func TestErrorCodes(t *testing.T) {
	c := &sdk.Client{URL: fakeAPI(t, "")}
	for _, tt := range sentinels {
		t.Run(strconv.Itoa(tt.code), func(t *testing.T) {
			_, err := sdk.Call[any](t.Context(), c, "x", strconv.Itoa(tt.code), nil)
			e, ok := errors.AsType[*sdk.Error](err)
			if !ok || e.Code != tt.code || e.Message != "refused" || string(e.Data) != `{"why":"test"}` {
				t.Fatalf("Call = %#v", err)
			}
			for _, other := range sentinels {
				if got := errors.Is(err, other.err); got != (other.code == tt.code) {
					t.Errorf("errors.Is(%v, %v) = %v", err, other.err, got)
				}
			}
			if errors.Is(err, sdk.ErrRetry) {
				t.Error("an answer matches ErrRetry")
			}
		})
	}
	_, err := sdk.Call[any](t.Context(), c, "x", "4001", nil)
	if e, ok := errors.AsType[*sdk.Error](err); !ok || e.Code != 4001 {
		t.Errorf("software code: %v", err)
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			t.Errorf("code 4001 matches %v", s.err)
		}
	}
}

// TestErrorsWithoutAnswer: a refused token is ErrNotAllowed (HTTP 401);
// an endpoint server that is not there is no *Error.
func TestErrorsWithoutAnswer(t *testing.T) {
	url := fakeAPI(t, "right")
	if _, err := (&sdk.Client{URL: url, Token: "wrong"}).Ping(t.Context()); !errors.Is(err, sdk.ErrNotAllowed) {
		t.Errorf("wrong token: %v", err)
	}
	p := &sdk.Poller{Client: &sdk.Client{URL: url}, Mux: &sdk.Mux{}}
	if err := p.Run(t.Context()); !errors.Is(err, sdk.ErrNotAllowed) {
		t.Errorf("Poller.Run without the token = %v, want ErrNotAllowed", err)
	}
	srv := httptest.NewServer(nil)
	gone := srv.URL
	srv.Close()
	_, err := (&sdk.Client{URL: gone}).Send(t.Context(), "hd-1", "submit", nil, sdk.SendOptions{})
	if _, ok := errors.AsType[*sdk.Error](err); ok || err == nil || !strings.Contains(err.Error(), "_send") {
		t.Errorf("Send to no endpoint server = %v", err)
	}
	if _, err := sdk.Call[any](t.Context(), &sdk.Client{URL: url}, "a.b", "c", nil); !errors.Is(err, sdk.ErrInvalidParams) {
		t.Errorf("Call of a member name with a dot = %v", err)
	}
}
