package server

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

// Every answer the stub sends is timed into podns_request_duration_seconds, labelled by where it
// came from, and offered to the query log. A cache hit's cost is kept to one histogram
// observation and one atomic load of the log's mode: the UDP reader reads the clock once when a
// batch arrives and once when its replies have been sent (udp_batch_linux.go), not per hit.

// requestBuckets span a cache hit (tens of µs from reading the batch to sending it) to a miss
// that used the upstreams' whole time (PODNS_UPSTREAM_TIMEOUT per upstream, 2s by default).
var requestBuckets = []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

var requestDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
	Namespace: "podns", Name: "request_duration_seconds",
	Help:    "Time from reading a query to sending its answer, every answer, by where the answer came from (cache: hit, miss, stale, coalesced, filtered, error).",
	Buckets: requestBuckets,
}, []string{"cache"})

// requestObservers are requestDuration's series, resolved once: WithLabelValues per answer would
// hash the label on the hit path. Prefetch answers no client and has none.
var requestObservers = func() (out [querylog.Prefetch]prometheus.Observer) {
	for i := range out {
		out[i] = requestDuration.WithLabelValues(querylog.Source(i).String())
	}
	return out
}()

// client is who sent a query and when it was read: what the histogram and the query log need of
// a query besides its packet.
type client struct {
	remote netip.AddrPort
	proto  int
	start  time.Time
}

// upstreamInfo is what an answer's upstream query reported: the upstream whose reply was used and
// how many upstreams it tried (querylog.Upstream).
type upstreamInfo = querylog.Upstream

var logProto = [2]int{protoUDP: querylog.ProtoUDP, protoTCP: querylog.ProtoTCP}

// answered times the answer resp to the query pkt, sent now, and offers it to the query log.
func (s *Server) answered(cl client, pkt, resp []byte, src querylog.Source, up upstreamInfo) {
	s.answeredAfter(cl, pkt, resp, src, up, time.Since(cl.start))
}

// answeredAfter is answered with the duration d already measured.
func (s *Server) answeredAfter(cl client, pkt, resp []byte, src querylog.Source, up upstreamInfo, d time.Duration) {
	if src < querylog.Prefetch {
		requestObservers[src].Observe(d.Seconds())
	}
	if !s.cfg.QueryLog.On() {
		return
	}
	e := querylog.Entry{Query: pkt, Remote: cl.remote, Proto: logProto[cl.proto], Size: len(resp),
		Duration: d, Source: src, Upstream: up.Server, Attempts: up.Attempts}
	if len(resp) >= wire.HeaderLen {
		e.Rcode = wire.Rcode(resp)
		if e.Rcode == wire.RcodeSuccess && src == querylog.Error {
			e.Rcode = extendedRcode(resp) // BADVERS: its upper bits are in the OPT record
		}
	}
	s.cfg.QueryLog.Record(&e)
}

// prefetched offers an upstream query the stub made on its own (a prefetch) to the query log.
func (s *Server) prefetched(pkt []byte, res result, d time.Duration) {
	if !s.cfg.QueryLog.On() {
		return
	}
	e := querylog.Entry{Query: pkt, Duration: d, Source: querylog.Prefetch, Upstream: res.up.Server, Attempts: res.up.Attempts}
	if res.msg != nil {
		e.Rcode = res.msg.Rcode
		e.Size = res.msg.Len()
	} else {
		e.Rcode = wire.RcodeServFail // no reply: what a client asking would have got
	}
	s.cfg.QueryLog.Record(&e)
}

// extendedRcode returns msg's whole rcode: the header's 4 bits and the OPT record's upper 8
// (RFC 6891 §6.1.3).
func extendedRcode(msg []byte) int {
	rc := wire.Rcode(msg)
	it := wire.Records(msg)
	for it.Next() {
		if rr := it.RR(); rr.Type == wire.TypeOPT {
			return rc | int(rr.TTL>>24)<<4
		}
	}
	return rc
}
