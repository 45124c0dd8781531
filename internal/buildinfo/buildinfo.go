// Package buildinfo is the podns_build_info metric the stub and the webhook expose. Not in
// internal/version: initc imports that and has no metrics, so it would link Prometheus for nothing.
package buildinfo

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podns/podns/internal/version"
)

// Collector is the gauge podns_build_info{version,goversion}, always 1: the Prometheus "info
// metric" convention (prometheus_build_info, coredns_build_info), so a query can count pods per
// release or join a pod's series with the release it runs. version is internal/version.Version
// ("dev" when unstamped), goversion runtime.Version(); one series per process, so it adds no
// cardinality.
func Collector() prometheus.Collector {
	return collector(version.Version, runtime.Version())
}

func collector(version, goversion string) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "podns_build_info",
		Help:        "Always 1; the labels name the podns version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goversion},
	})
	g.Set(1)
	return g
}
