package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/cmd/internal/buildinfo"
)

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"kurier", "--version"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("kurier --version exited %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "kurier version ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("kurier --version printed %q", out.String())
	}

	reg := prometheus.NewRegistry()
	buildinfo.Register(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "kurier_build_info" || mfs[0].Metric[0].GetGauge().GetValue() != 1 {
		t.Fatalf("build info metric: %v", mfs)
	}
	v, _ := buildinfo.Version()
	for _, l := range mfs[0].Metric[0].Label {
		if l.GetName() == "version" && l.GetValue() != v {
			t.Errorf("version label %q, want %q", l.GetValue(), v)
		}
	}
}
