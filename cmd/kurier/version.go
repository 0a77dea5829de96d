package main

import (
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// buildVersion describes the binary from its build information: the
// module version (a tag, or (devel) from a checkout), the VCS revision and
// time, and "+dirty" for a build from modified sources.
func buildVersion() (version, revision string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", ""
	}
	version = bi.Main.Version
	var when string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	var b strings.Builder
	b.WriteString(version)
	if revision != "" {
		b.WriteString(" " + revision[:min(12, len(revision))])
		if dirty {
			b.WriteString("+dirty")
		}
		if when != "" {
			b.WriteString(" " + when)
		}
	}
	b.WriteString(" " + bi.GoVersion)
	return b.String(), revision
}

// registerBuildInfo exports kurier_build_info{version,revision} = 1, so a
// fleet's versions show in monitoring during an upgrade.
func registerBuildInfo(reg prometheus.Registerer) {
	v, rev := buildVersion()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kurier_build_info",
		Help:        "The running binary's version and VCS revision; always 1.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev},
	})
	g.Set(1)
	reg.MustRegister(g)
}

// versionString is buildVersion's description alone, for --version.
func versionString() string {
	v, _ := buildVersion()
	return v
}
