package ca

import (
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kurier-net/kurier/pki"
)

// TestMetrics: every request is counted by endpoint and answer, refused
// enrolments included, and the certificates' expiry is exported.
func TestMetrics(t *testing.T) {
	c := newTestCA(t, "kurier.test", nil)
	ts := startServer(t, c)
	m, tok := addMember(t, c, pki.RoleHealthOffice, "hd-1")
	id := m.ID(c.Network())
	if code, _, body := ts.enrol(t, tok, id, nil); code != http.StatusCreated {
		t.Fatalf("sign = %d %s", code, body)
	}
	if code, _, _ := ts.enrol(t, tok, id, nil); code == http.StatusCreated { // a token is good once
		t.Fatal("a used token enrolled again")
	}
	hc := ts.client(t, nil)
	for _, path := range []string{"/kurier/v1/trust", "/no/such/path"} {
		resp, err := hc.Get(ts.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}

	requests := ts.srv.m.requests
	for _, tc := range []struct {
		endpoint, code string
		want           float64
	}{
		{"sign", "201", 1},
		{"sign", "401", 1},
		{"kurier/trust", "200", 1},
		{"other", "404", 1},
	} {
		if got := testutil.ToFloat64(requests.WithLabelValues(tc.endpoint, tc.code)); got != tc.want {
			t.Errorf("kurier_ca_requests_total{endpoint=%q,code=%q} = %v, want %v", tc.endpoint, tc.code, got, tc.want)
		}
	}
	if n := testutil.CollectAndCount(requests); n != 4 {
		t.Errorf("%d request series, want 4", n)
	}

	mfs, err := ts.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	expiry := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "kurier_ca_not_after_seconds" {
			continue
		}
		for _, s := range mf.Metric {
			expiry[s.Label[0].GetValue()] = s.GetGauge().GetValue()
		}
	}
	for cert, want := range map[string]time.Time{
		"root": c.Roots()[0].NotAfter, "intermediate": c.Intermediate().NotAfter, "server": ts.srv.cert.Load().Leaf.NotAfter,
	} {
		if expiry[cert] != float64(want.Unix()) {
			t.Errorf("kurier_ca_not_after_seconds{cert=%q} = %v, want %v", cert, expiry[cert], want.Unix())
		}
	}
}

func TestEndpoint(t *testing.T) {
	for path, want := range map[string]string{
		"/1.0/sign": "sign", "/sign": "sign", "/1.0/renew": "renew", "/root/abc": "root", "/health": "health",
		"/kurier/v1/directory": "kurier/directory", "/kurier/v1/x": "other", "/../../etc": "other", "/": "other",
	} {
		if got := endpoint(path); got != want {
			t.Errorf("endpoint(%q) = %q, want %q", path, got, want)
		}
	}
}
