package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/cmd/internal/buildinfo"
)

// registerBuildInfo exports kurier_build_info{version,revision} = 1, so a
// fleet's versions show in monitoring during an upgrade.
func registerBuildInfo(reg prometheus.Registerer) {
	v, rev := buildinfo.Version()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kurier_build_info",
		Help:        "The running binary's version and VCS revision; always 1.",
		ConstLabels: prometheus.Labels{"version": v, "revision": rev},
	})
	g.Set(1)
	reg.MustRegister(g)
}
