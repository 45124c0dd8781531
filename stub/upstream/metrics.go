package upstream

import "github.com/prometheus/client_golang/prometheus"

// The collectors are created here and registered by the binary in its own registry
// (see Collectors), so tests and several Forwarders never fight over a global registry.
// Every series carries the label upstream="host:port" as normalised by New.
var (
	queriesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "queries_total",
		Help: "Queries sent to an upstream server, one per attempt and protocol (re-sends after a server-closed connection are not counted again).",
	}, []string{"upstream", "protocol"})

	errorsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "errors_total",
		Help: "Upstream errors by reason: timeout, network (attempt failed), closed (query re-sent because its connection died), bad_reply (reply ignored), servfail/notimp/refused (reply passed over for the next server, if any), edns (query rejected for its OPT record, re-sent without).",
	}, []string{"upstream", "reason"})

	duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "duration_seconds",
		Help: "Time from sending a query to an upstream server to its valid reply (successful attempts only).",
		// A pod-local stub talks to a cluster DNS a few hops away: 100µs is a hot CoreDNS cache on
		// the same node, seconds are a recursion that is about to time out.
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"upstream"})

	reconnectsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "reconnects_total",
		Help: "TCP connections the upstream server closed (or broke) while queries were in flight on them; those queries were re-sent on a new connection.",
	}, []string{"upstream"})

	openConnections = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "open_connections",
		Help: "TCP connections to an upstream server currently open.",
	}, []string{"upstream"})

	healthy = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "healthy",
		Help: "1 while the upstream server is up, 0 while it is marked down (skipped while another server is up, tried anyway while every server is down; probed in the background).",
	}, []string{"upstream"})

	probesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "probes_total",
		Help: "Liveness probes of upstream servers (at startup and of down servers) by result: alive (any reply, whatever its RCODE) or dead (no reply, refused, unreachable).",
	}, []string{"upstream", "result"})

	markedDownTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "marked_down_total",
		Help: "Times the upstream server was marked down; counts flaps a scrape of podns_upstream_healthy misses.",
	}, []string{"upstream"})

	skippedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "skipped_total",
		Help: "Queries that did not try the upstream server because it was down and another server was up: each one a timeout a client did not wait for.",
	}, []string{"upstream"})

	protocolFallbackTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "protocol_fallback_total",
		Help: "Times the stub switched an upstream server from TCP to UDP because TCP to it was refused or timed out while it answered over UDP (a NetworkPolicy allowing UDP/53 only).",
	}, []string{"upstream"})

	protocolInUse = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "podns", Subsystem: "upstream", Name: "protocol",
		Help: "1 for the protocol (tcp or udp) the upstream server's queries currently go over, 0 for the other.",
	}, []string{"upstream", "protocol"})
)

// Probe results, the values of the label "result" of podns_upstream_probes_total.
const (
	probeAlive = "alive"
	probeDead  = "dead"
)

// Error reasons, the values of the label "reason" of podns_upstream_errors_total.
const (
	reasonTimeout  = "timeout"
	reasonNetwork  = "network"
	reasonClosed   = "closed"
	reasonBadReply = "bad_reply"
	// The RCODEs that make the stub try the next server (passOverReason).
	reasonServfail = "servfail"
	reasonNotimp   = "notimp"
	reasonRefused  = "refused"
	// reasonEDNS: FORMERR or NOTIMP without OPT to a query with OPT; re-sent without OPT.
	reasonEDNS = "edns"
)

// Collectors returns the package's Prometheus collectors, unregistered, for the binary to
// register in its registry.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{queriesTotal, errorsTotal, duration, reconnectsTotal, openConnections,
		healthy, probesTotal, markedDownTotal, skippedTotal, protocolFallbackTotal, protocolInUse}
}

// peerMetrics holds one server's series, resolved once in New so the hot path does not
// hash label values per query.
type peerMetrics struct {
	queriesTCP, queriesUDP  prometheus.Counter
	errTimeout, errNetwork  prometheus.Counter
	errClosed, errBadReply  prometheus.Counter
	errServfail, errNotimp  prometheus.Counter
	errRefused, errEDNS     prometheus.Counter
	duration                prometheus.Observer
	reconnects              prometheus.Counter
	open                    prometheus.Gauge
	healthy                 prometheus.Gauge
	probesAlive, probesDead prometheus.Counter
	markedDown, skipped     prometheus.Counter
	fallbacks               prometheus.Counter
	protoTCP, protoUDP      prometheus.Gauge
}

func newPeerMetrics(addr string) peerMetrics {
	return peerMetrics{
		queriesTCP:  queriesTotal.WithLabelValues(addr, "tcp"),
		queriesUDP:  queriesTotal.WithLabelValues(addr, "udp"),
		errTimeout:  errorsTotal.WithLabelValues(addr, reasonTimeout),
		errNetwork:  errorsTotal.WithLabelValues(addr, reasonNetwork),
		errClosed:   errorsTotal.WithLabelValues(addr, reasonClosed),
		errBadReply: errorsTotal.WithLabelValues(addr, reasonBadReply),
		errServfail: errorsTotal.WithLabelValues(addr, reasonServfail),
		errNotimp:   errorsTotal.WithLabelValues(addr, reasonNotimp),
		errRefused:  errorsTotal.WithLabelValues(addr, reasonRefused),
		errEDNS:     errorsTotal.WithLabelValues(addr, reasonEDNS),
		duration:    duration.WithLabelValues(addr),
		reconnects:  reconnectsTotal.WithLabelValues(addr),
		open:        openConnections.WithLabelValues(addr),
		healthy:     healthy.WithLabelValues(addr),
		probesAlive: probesTotal.WithLabelValues(addr, probeAlive),
		probesDead:  probesTotal.WithLabelValues(addr, probeDead),
		markedDown:  markedDownTotal.WithLabelValues(addr),
		skipped:     skippedTotal.WithLabelValues(addr),
		fallbacks:   protocolFallbackTotal.WithLabelValues(addr),
		protoTCP:    protocolInUse.WithLabelValues(addr, "tcp"),
		protoUDP:    protocolInUse.WithLabelValues(addr, "udp"),
	}
}
