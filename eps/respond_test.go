package eps_test

import (
	"errors"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/store"
)

// TestSendResponseIdempotent: software that answers a polled request later
// with _send and correlation_id may repeat the answer under its own
// message id (after a crash or a lost reply) and gets what the first one
// queued; the requester receives one response.
func TestSendResponseIdempotent(t *testing.T) {
	n := epstest.New(t, epstest.Options{})
	office, vendor := n.Member("hd-1").Client(), n.Member("vendor-a").Client()
	var sent struct {
		MessageID string `json:"message_id"`
	}
	if err := vendor.Call(t.Context(), "_send", map[string]any{"to": "hd-1", "service": "submit", "params": map[string]any{"case": "A-17"}}, &sent); err != nil {
		t.Fatal(err)
	}
	req := pollOne(t, office, "request")
	if req.MessageID.String() != sent.MessageID {
		t.Fatalf("office got %s, vendor sent %s", req.MessageID, sent.MessageID)
	}
	answer := store.NewID()
	params := map[string]any{"to": "vendor-a", "correlation_id": req.MessageID, "message_id": answer, "params": map[string]any{"accepted": true}}
	var first, again struct {
		MessageID string `json:"message_id"`
		Duplicate bool   `json:"duplicate"`
	}
	if err := office.Call(t.Context(), "_send", params, &first); err != nil {
		t.Fatal(err)
	}
	if err := office.Call(t.Context(), "_send", params, &again); err != nil {
		t.Fatalf("the same answer again: %v", err)
	}
	if first.MessageID != answer.String() || again.MessageID != answer.String() || first.Duplicate || !again.Duplicate {
		t.Errorf("first %+v, again %+v; want both %s, the second a duplicate", first, again, answer)
	}
	params["message_id"] = store.NewID()
	var e *jsonrpc.Error
	if err := office.Call(t.Context(), "_send", params, nil); !errors.As(err, &e) || e.Code != jsonrpc.CodeInvalidParams {
		t.Errorf("another answer to an answered request: %v, want invalid params", err)
	}
	resp := pollOne(t, vendor, "response")
	if resp.MessageID != answer || resp.CorrelationID == nil || resp.CorrelationID.String() != sent.MessageID {
		t.Errorf("vendor got response %s for %v, want %s for %s", resp.MessageID, resp.CorrelationID, answer, sent.MessageID)
	}
	var more struct {
		Messages []eps.Item `json:"messages"`
	}
	if err := vendor.Call(t.Context(), "_poll", map[string]any{"wait": 1}, &more); err != nil {
		t.Fatal(err)
	}
	for _, it := range more.Messages {
		if it.Kind == "response" {
			t.Errorf("a second response reached the vendor: %s", it.MessageID)
		}
	}
}

// pollOne polls until a message of kind arrives and acknowledges it.
func pollOne(t *testing.T, c *jsonrpc.Client, kind string) eps.Item {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var polled struct {
			Messages []eps.Item `json:"messages"`
		}
		if err := c.Call(t.Context(), "_poll", map[string]any{"wait": 5}, &polled); err != nil {
			t.Fatal(err)
		}
		for _, it := range polled.Messages {
			if it.Kind != kind {
				continue
			}
			if kind != "request" {
				if err := c.Call(t.Context(), "_ack", map[string]any{"message_id": it.MessageID, "from": it.From}, nil); err != nil {
					t.Fatal(err)
				}
			}
			return it
		}
	}
	t.Fatalf("no %s arrived", kind)
	return eps.Item{}
}
