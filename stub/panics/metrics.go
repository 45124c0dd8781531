package panics

import "github.com/prometheus/client_golang/prometheus"

// total is podns_panics_total: the one metric of every recovered panic, whichever package
// recovered it (the server's readers and misses, the upstream connections and probes).
var total = prometheus.NewCounterVec(prometheus.CounterOpts{
	Namespace: "podns", Name: "panics_total",
	Help: "Panics recovered instead of ending the process, by where (udp, tcp, miss, prefetch, upstream, probe); a client still owed a reply got SERVFAIL.",
}, []string{"where"})

// counters are total's series, resolved once: every label value exists from the start, so an
// alert on an increase sees the first panic.
var counters = func() (out [numWhere]prometheus.Counter) {
	for w := range numWhere {
		out[w] = total.WithLabelValues(w.String())
	}
	return out
}()

// Collectors returns the package's collector, unregistered, for the binary to register.
func Collectors() []prometheus.Collector { return []prometheus.Collector{total} }

// Counter returns the series of podns_panics_total for w, for tests that read it.
func Counter(w Where) prometheus.Counter { return counters[w] }
