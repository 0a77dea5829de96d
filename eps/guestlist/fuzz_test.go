package guestlist

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/pki"
)

// FuzzDecodeRequest: a vendor decodes what a health office sends. Every
// refusal is a JSON-RPC error for the office; whatever is accepted is a
// valid DATA_REQUESTED request with a key of its own.
//
//	go test -run '^$' -fuzz FuzzDecodeRequest -fuzztime 60s ./eps/guestlist
func FuzzDecodeRequest(f *testing.F) {
	key, err := pki.NewSealKey("3f2a9c4b-e1d0-4a55-98c2-e9f1b4d3a706")
	if err != nil {
		f.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	req := contactdata.DataRequest{ID: key.ID, LocationID: "cafe-rot-1", Provider: "vendor-a",
		Start: now.Add(-3 * time.Hour), End: now.Add(-time.Hour), RequestedAt: now, Status: contactdata.StatusDataRequested}
	good, err := json.Marshal(map[string]any{"request": req, "seal_key": key.Public()})
	if err != nil {
		f.Fatal(err)
	}
	if _, err := decodeRequest(good); err != nil {
		f.Fatalf("the seed is refused: %v", err)
	}
	f.Add(good)
	f.Add([]byte(`{"request":{},"seal_key":{}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rm, err := decodeRequest(b)
		if err != nil {
			var e *sdk.Error
			if !errors.As(err, &e) && !errors.Is(err, sdk.ErrInvalidParams) {
				t.Fatalf("refusal %v is no JSON-RPC error", err)
			}
			return
		}
		if rm.Request.Status != contactdata.StatusDataRequested || rm.SealKey.ID != rm.Request.ID {
			t.Fatalf("accepted %+v", rm)
		}
		if err := rm.Request.Validate(); err != nil {
			t.Fatalf("accepted an invalid request: %v", err)
		}
	})
}
