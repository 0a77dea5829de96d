package ca_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/locations"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/ca"
	"github.com/kurier-net/kurier/pki/pkitest"
)

// TestDefaultPolicy: the built-in policy lets the contact-data flows of
// docs/contact-data.md run, and grants a service member nothing else.
func TestDefaultPolicy(t *testing.T) {
	tc := pkitest.NewCA(t, "kurier.test", time.Now())
	hd := tc.Issue(t, pki.RoleHealthOffice, "hd-1")
	hd2 := tc.Issue(t, pki.RoleHealthOffice, "hd-2")
	vendor := tc.Issue(t, pki.RoleProvider, "vendor-a")
	index := tc.Issue(t, pki.RoleService, "index")
	d := tc.Directory(
		pkitest.Member(hd, "Gesundheitsamt 1", "submit"),
		pkitest.Member(hd2, "Gesundheitsamt 2", "submit"),
		pkitest.Member(vendor, "Vendor A", "guest-lists"),
		pkitest.Member(index, "Location index", locations.ServiceLocations, locations.ServiceSearch),
	)
	d.Permissions = ca.DefaultPolicy().Permissions
	snap := tc.Verifier(t, d).Current()
	id := func(c *tls.Certificate) pki.ID {
		got, err := pki.IDFromCert(c.Leaf)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, tt := range []struct {
		caller  *tls.Certificate
		callee  string
		service string
		want    bool
	}{
		{hd, "vendor-a", "guest-lists", true},
		{vendor, "hd-1", "submit", true},
		{hd, "hd-2", "submit", true},
		{vendor, "index", locations.ServiceLocations, true},
		{hd, "index", locations.ServiceSearch, true},
		{hd, "index", locations.ServiceLocations, false},  // offices do not publish
		{vendor, "index", locations.ServiceSearch, false}, // providers do not search
		{index, "hd-1", "submit", false},                  // the index calls no one
		{index, "vendor-a", "guest-lists", false},
		{vendor, "vendor-a", "guest-lists", false},
	} {
		if got := snap.Allowed(id(tt.caller), tt.callee, tt.service); got != tt.want {
			t.Errorf("%s may call %s.%s: %v, want %v", id(tt.caller).Name, tt.callee, tt.service, got, tt.want)
		}
	}
}
