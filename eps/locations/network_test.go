package locations_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/locations"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/pki"
)

// indexNetwork is a network with a location index member "index" (role
// service) whose software takes callbacks, two providers and two health
// offices. The directory lets providers call "locations" and offices
// "location-search"; hd-2 may also call "locations" (an operator's
// mistake the index's own role check catches).
func indexNetwork(t *testing.T) (*epstest.Network, *locations.Index) {
	t.Helper()
	mux := &sdk.Mux{}
	const cbToken = "index-callback-token"
	n := epstest.New(t, epstest.Options{
		Members: []epstest.MemberConfig{
			{Name: "index", Role: pki.RoleService, Services: []string{locations.ServiceLocations, locations.ServiceSearch},
				Callback: mux.Handler(sdk.CallbackOptions{Token: cbToken}), CallbackToken: cbToken},
			{Name: "vendor-a", Role: pki.RoleProvider},
			{Name: "vendor-b", Role: pki.RoleProvider},
			{Name: "hd-1", Role: pki.RoleHealthOffice},
			{Name: "hd-2", Role: pki.RoleHealthOffice},
		},
		Permissions: []pki.Permission{
			{Caller: "role:provider", Callee: "member:index", Services: []string{locations.ServiceLocations}},
			{Caller: "role:health-office", Callee: "member:index", Services: []string{locations.ServiceSearch}},
			{Caller: "member:hd-2", Callee: "member:index", Services: []string{"*"}},
		},
	})
	ix, err := locations.Open(locations.Config{
		Path:   filepath.Join(t.TempDir(), "index.db"),
		Client: client(n, "index"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() }) // after the network (cleanups run last first)
	ix.Register(mux)
	return n, ix
}

func client(n *epstest.Network, name string) *sdk.Client {
	m := n.Member(name)
	return &sdk.Client{URL: m.API(), Token: sdk.Token(m.Token())}
}

func location(id, name string) map[string]any {
	return map[string]any{
		"id": id, "name": name,
		"contact": map[string]any{
			"official_name": name + " GmbH",
			"address":       map[string]any{"street": "Heidestraße", "house_number": "17", "zip_code": "51147", "city": "Köln"},
			"email":         "info@example.de",
		},
	}
}

func TestIndexOverTheNetwork(t *testing.T) {
	n, _ := indexNetwork(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	va, vb, hd1, hd2 := client(n, "vendor-a"), client(n, "vendor-b"), client(n, "hd-1"), client(n, "hd-2")
	put := func(c *sdk.Client, params map[string]any) (locations.PutResult, error) {
		return sdk.Call[locations.PutResult](ctx, c, "index", locations.ServiceLocations, params)
	}
	search := func(c *sdk.Client, text string) (*locations.Result, error) {
		return sdk.Call[*locations.Result](ctx, c, "index", locations.ServiceSearch, locations.Query{Text: text})
	}
	names := func(r *locations.Result) string {
		var s []string
		for _, e := range r.Locations {
			s = append(s, e.Provider+"/"+e.Location.ID+"="+e.Location.Name)
		}
		return strings.Join(s, ",")
	}

	t.Run("publish, search, replace, delete", func(t *testing.T) {
		res, err := put(va, map[string]any{"op": "put", "location": location("loc-1", "Gasthaus Zum Löwen")})
		if err != nil || res != (locations.PutResult{Provider: "vendor-a", ID: "loc-1", Created: true}) {
			t.Fatalf("put = %+v, %v", res, err)
		}
		if _, err := put(va, map[string]any{"op": "put", "location": location("loc-2", "Café Rot")}); err != nil {
			t.Fatal(err)
		}
		r, err := search(hd1, "loewen 51147")
		if err != nil || names(r) != "vendor-a/loc-1=Gasthaus Zum Löwen" {
			t.Fatalf("search = %+v, %v", r, err)
		}
		res, err = put(va, map[string]any{"op": "put", "location": location("loc-1", "Zum Goldenen Löwen")})
		if err != nil || res.Created {
			t.Fatalf("replace = %+v, %v", res, err)
		}
		if r, err = search(hd1, "köln"); err != nil || names(r) != "vendor-a/loc-2=Café Rot,vendor-a/loc-1=Zum Goldenen Löwen" {
			t.Fatalf("search after replace = %s, %v", names(r), err)
		}
		l, err := sdk.Call[*locations.Result](ctx, va, "index", locations.ServiceLocations, map[string]any{"op": "list"})
		if err != nil || len(l.Locations) != 2 {
			t.Fatalf("list = %+v, %v", l, err)
		}
		if _, err := sdk.Call[locations.DeleteResult](ctx, va, "index", locations.ServiceLocations, map[string]any{"op": "delete", "id": "loc-2"}); err != nil {
			t.Fatal(err)
		}
		if r, err = search(hd1, "café"); err != nil || len(r.Locations) != 0 {
			t.Fatalf("deleted location still found: %s, %v", names(r), err)
		}
	})

	t.Run("another provider cannot change or delete it", func(t *testing.T) {
		_, err := sdk.Call[locations.DeleteResult](ctx, vb, "index", locations.ServiceLocations, map[string]any{"op": "delete", "id": "loc-1"})
		if !errors.Is(err, sdk.ErrInvalidParams) {
			t.Errorf("vendor-b deleting vendor-a's loc-1 = %v", err)
		}
		// A put of the same id makes vendor-b's own location, next to
		// vendor-a's, which stays as it was.
		res, err := put(vb, map[string]any{"op": "put", "location": location("loc-1", "Zum Löwen Imitat")})
		if err != nil || res.Provider != "vendor-b" || !res.Created {
			t.Fatalf("vendor-b put = %+v, %v", res, err)
		}
		r, err := search(hd1, "loewen")
		if err != nil || names(r) != "vendor-a/loc-1=Zum Goldenen Löwen,vendor-b/loc-1=Zum Löwen Imitat" {
			t.Fatalf("search = %s, %v", names(r), err)
		}
	})

	t.Run("a forged owner field is ignored", func(t *testing.T) {
		res, err := put(vb, map[string]any{"op": "put", "provider": "vendor-a", "location": location("loc-7", "Forged Bar")})
		if err != nil || res.Provider != "vendor-b" {
			t.Fatalf("put = %+v, %v", res, err)
		}
		r, err := search(hd1, "forged")
		if err != nil || names(r) != "vendor-b/loc-7=Forged Bar" {
			t.Fatalf("search = %s, %v", names(r), err)
		}
		// Inside the location, a provider member is an unknown field.
		bad := location("loc-8", "Forged Inside")
		bad["provider"] = "vendor-a"
		_, err = put(vb, map[string]any{"op": "put", "location": bad})
		if e, ok := errors.AsType[*sdk.Error](err); !ok || !errors.Is(err, sdk.ErrInvalidParams) || !strings.Contains(e.Message, "location.provider: is not a known field") {
			t.Errorf("provider inside the location = %v", err)
		}
	})

	t.Run("invalid location names the field", func(t *testing.T) {
		bad := location("loc-9", "Ohne Kontakt")
		delete(bad["contact"].(map[string]any), "email")
		bad["contact"].(map[string]any)["address"].(map[string]any)["zip_code"] = "5114"
		_, err := put(va, map[string]any{"op": "put", "location": bad})
		e, ok := errors.AsType[*sdk.Error](err)
		if !ok || !errors.Is(err, sdk.ErrInvalidParams) {
			t.Fatalf("put = %v", err)
		}
		var fields []locations.FieldError
		if err := json.Unmarshal(e.Data, &fields); err != nil {
			t.Fatal(err)
		}
		got := map[string]bool{}
		for _, f := range fields {
			got[f.Field] = true
		}
		if !got["location.contact"] || !got["location.contact.address.zip_code"] || len(fields) != 2 {
			t.Errorf("errors = %+v (%s)", fields, e.Message)
		}
		if _, err := put(va, map[string]any{"op": "rename"}); !errors.Is(err, sdk.ErrInvalidParams) || !strings.Contains(err.Error(), "op:") {
			t.Errorf("unknown op = %v", err)
		}
	})

	t.Run("who may call what", func(t *testing.T) {
		// The directory: offices may not publish, providers may not search.
		if _, err := put(hd1, map[string]any{"op": "put", "location": location("loc-x", "Amt")}); !errors.Is(err, sdk.ErrNotAllowed) {
			t.Errorf("office publishing = %v, want not allowed", err)
		}
		if _, err := search(va, "loewen"); !errors.Is(err, sdk.ErrNotAllowed) {
			t.Errorf("provider searching = %v, want not allowed", err)
		}
		// hd-2 is let through by a too broad permission; the index refuses
		// it by its role.
		_, err := put(hd2, map[string]any{"op": "put", "location": location("loc-x", "Amt")})
		if !errors.Is(err, sdk.ErrNotAllowed) || !strings.Contains(err.Error(), "not a provider") {
			t.Errorf("hd-2 publishing = %v, want not allowed by role", err)
		}
		if _, err := search(hd2, "loewen"); err != nil {
			t.Errorf("hd-2 searching = %v", err)
		}
	})
}
