package cache

import "github.com/prometheus/client_golang/prometheus"

// Collectors are plain unlabelled metrics so the hit path costs one atomic
// add. They are shared by every Cache in the process (a binary has one).
var (
	hitsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "cache", Name: "hits_total",
		Help: "Queries answered from the cache.",
	})
	missesTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "cache", Name: "misses_total",
		Help: "Cache lookups that found no entry or an expired one.",
	})
	entriesGauge = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "podns", Subsystem: "cache", Name: "entries",
		Help: "Entries held by the cache, expired ones included until they are evicted.",
	})
	evictionsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "cache", Name: "evictions_total",
		Help: "Entries removed to make room for new ones.",
	})
	insertsTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "cache", Name: "inserts_total",
		Help: "Upstream replies stored in the cache (new entries and replacements).",
	})
	staleTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "cache", Name: "stale_served_total",
		Help: "Answers served from expired entries because the upstreams could not answer in time (RFC 8767).",
	})
)

// Collectors returns the cache's metrics, unregistered, for the binary to
// register in its own registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{hitsTotal, missesTotal, entriesGauge, evictionsTotal, insertsTotal, staleTotal}
}
