// Package buildinfo describes the running binary for --version and
// metrics, from the build information the Go toolchain embeds.
package buildinfo

import (
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Version describes the binary: the module version (a tag, or (devel)
// from a checkout), the VCS revision and time, "+dirty" for a build from
// modified sources, and the Go version. revision is the full VCS revision,
// or empty.
func Version() (version, revision string) {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown", ""
	}
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
	b.WriteString(bi.Main.Version)
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

// String is Version's description alone, for --version.
func String() string {
	v, _ := Version()
	return v
}

// Register exports kurier_build_info{version,revision} = 1 to reg, so a
// fleet's versions show in monitoring during an upgrade.
func Register(reg prometheus.Registerer) {
	v, rev := Version()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kurier_build_info",
		Help:        "The running binary's version and VCS revision; always 1.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev},
	})
	g.Set(1)
	reg.MustRegister(g)
}
