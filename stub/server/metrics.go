package server

import (
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/podns/podns/stub/wire"
)

// Every podns metric is Namespace "podns", a Subsystem naming its part (cache, upstream) and a
// short Name. The server's are the stub's own requests and replies, so they have no Subsystem:
// podns_requests_total, not podns_server_requests_total (the names are a contract).
//
// The request and response counters are resolved to plain Counters once, at package init, for
// the query types and rcodes that matter: WithLabelValues on every query would hash labels on
// the hot path.
var (
	requestsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Name: "requests_total",
		Help: "DNS requests received, by transport (udp, tcp) and query type.",
	}, []string{"proto", "type"})
	responsesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Name: "responses_total",
		Help: "DNS responses sent, by rcode.",
	}, []string{"rcode"})
	droppedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Name: "dropped_total",
		Help: "Requests dropped without an answer, by reason (unparseable: no readable header or a response; tcp_limit: over PODNS_TCP_MAX_CONNS).",
	}, []string{"reason"})
	overloadTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Name: "overload_total",
		Help: "Cache misses answered SERVFAIL because too many were already waiting on the upstreams.",
	})
	coalescedTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Name: "coalesced_total",
		Help: "Cache misses that waited for an identical query already upstream instead of sending their own.",
	})
	sameIDHeldTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Name: "same_id_held_total",
		Help: "Replies held back behind an earlier reply to the same client socket and query ID (musl ID reuse).",
	})
	filteredTotal = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "podns", Name: "aaaa_filtered_total",
		Help: "AAAA questions answered NODATA by PODNS_AAAA=filter.",
	})
	prefetchTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Name: "prefetch_total",
		Help: "Upstream queries the stub sent on its own to keep the cache warm, by reason (expiry: a hot entry near its end; search: the ndots search-path candidates).",
	}, []string{"reason"})
	tcpConnections = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "podns", Name: "tcp_connections",
		Help: "Open client TCP connections.",
	})
	forwardDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "podns", Name: "forward_duration_seconds",
		Help:    "Time to answer a cache miss, from the request to the reply (all upstream attempts included).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
)

// Collectors returns the server's metrics for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{requestsTotal, responsesTotal, droppedTotal, overloadTotal, tcpConnections, forwardDuration,
		coalescedTotal, sameIDHeldTotal, filteredTotal, prefetchTotal, requestDuration}
}

const (
	protoUDP = iota
	protoTCP
)

var protoNames = [2]string{"udp", "tcp"}

// countedTypes get their own label value; every other type counts as "other".
var countedTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeCNAME, dns.TypePTR, dns.TypeSRV, dns.TypeMX,
	dns.TypeTXT, dns.TypeNS, dns.TypeSOA, dns.TypeHTTPS, dns.TypeSVCB, dns.TypeANY}

type typeCounters struct {
	byType map[uint16]prometheus.Counter // read-only after init
	other  prometheus.Counter
}

var requestCounters = func() (out [2]typeCounters) {
	for p, name := range protoNames {
		out[p] = typeCounters{byType: map[uint16]prometheus.Counter{}, other: requestsTotal.WithLabelValues(name, "other")}
		for _, t := range countedTypes {
			out[p].byType[t] = requestsTotal.WithLabelValues(name, dns.TypeToString[t])
		}
	}
	return out
}()

var rcodeCounters = func() (out [16]prometheus.Counter) {
	for i := range out {
		name, ok := dns.RcodeToString[i]
		if !ok {
			name = "other"
		}
		out[i] = responsesTotal.WithLabelValues(name)
	}
	return out
}()

func countRequest(proto int, qtype uint16) {
	if c, ok := requestCounters[proto].byType[qtype]; ok {
		c.Inc()
		return
	}
	requestCounters[proto].other.Inc()
}

// countResponse counts the reply by the rcode in its header.
func countResponse(resp []byte) {
	if len(resp) >= wire.HeaderLen {
		rcodeCounters[wire.Rcode(resp)].Inc()
	}
}

var (
	droppedUnparseable = droppedTotal.WithLabelValues("unparseable")
	droppedTCPLimit    = droppedTotal.WithLabelValues("tcp_limit")
)

type prefetchReason int

const (
	prefetchExpiry prefetchReason = iota
	prefetchSearch
)

var prefetchCounters = [2]prometheus.Counter{
	prefetchTotal.WithLabelValues("expiry"),
	prefetchTotal.WithLabelValues("search"),
}
