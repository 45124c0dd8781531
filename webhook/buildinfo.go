package main

import (
	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo is the gauge podns_build_info{version,goversion}, always 1: the Prometheus "info
// metric" convention (prometheus_build_info, coredns_build_info), so a query can count pods per
// release or join a pod's series with the release it runs. version is internal/version.Version
// ("dev" when unstamped), goversion runtime.Version(); one series per process, so it adds no
// cardinality.
func buildInfo(version, goversion string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "podns_build_info",
		Help:        "Always 1; the labels name the podns version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goversion},
	})
	g.Set(1)
	return g
}
