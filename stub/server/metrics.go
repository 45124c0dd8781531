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
		Help: "DNS requests received and answered, by transport (udp, tcp) and query type: every query, malformed, refused (FORMERR, NOTIMP, BADVERS) or not; packets dropped unanswered count in podns_dropped_total instead.",
	}, []string{"proto", "type"})
	responsesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "podns", Name: "responses_total",
		Help: "DNS responses sent, by rcode: the whole extended rcode (RFC 6891 §6.1.3; BADVERS is 16, not NOERROR), named as in the IANA registry, \"other\" for a value without a name.",
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

// rcodeNames names every rcode a response can carry that has a name in the IANA DNS RCODE
// registry and fits the header and the OPT record; the rest count as "other", which keeps the
// label's values to this list. 16 is BADVERS: BADSIG shares the number but is a TSIG error,
// carried in a TSIG record, never as a message's rcode (RFC 6891 §9, RFC 8945 §6.2).
var rcodeNames = [...]string{
	0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
	6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 11: "DSOTYPENI",
	16: "BADVERS", 17: "BADKEY", 18: "BADTIME", 19: "BADMODE", 20: "BADNAME", 21: "BADALG",
	22: "BADTRUNC", 23: "BADCOOKIE",
}

var rcodeOther = responsesTotal.WithLabelValues("other")

var rcodeCounters = func() (out [len(rcodeNames)]prometheus.Counter) {
	for i, name := range rcodeNames {
		if name == "" {
			out[i] = rcodeOther
			continue
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

// countResponse counts the reply by its whole rcode. The stub's replies hold at most one OPT
// record, its own, and always last (finish and wire.AppendError append it; the upstream's is
// stripped), so unless their last octets are an OPT with upper rcode bits set the header's
// rcode is the whole rcode and nothing is walked: the hit path pays a few comparisons.
func countResponse(resp []byte) {
	if len(resp) < wire.HeaderLen {
		return
	}
	rc := wire.Rcode(resp)
	if t := len(resp) - wire.OPTLen; wire.Count(resp, wire.Additional) > 0 && t >= wire.HeaderLen &&
		resp[t] == 0 && resp[t+1] == 0 && resp[t+2] == wire.TypeOPT && resp[t+5] != 0 {
		rc = wire.ExtendedRcode(resp)
	}
	if rc < len(rcodeCounters) {
		rcodeCounters[rc].Inc()
		return
	}
	rcodeOther.Inc()
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
