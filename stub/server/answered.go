package server

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

// Every answer the stub sends is timed into podns_request_duration_seconds, labelled by where it
// came from, and offered to the query log. A cache hit's cost is kept to a counter in the reader's
// own batch and one atomic load of the log's mode: the UDP reader reads the clock once when a
// batch arrives and once when its replies have been sent, and counts the batch's hits into the
// histogram at once (udp_batch_linux.go, flush), not one observation per hit. Measured with
// BenchmarkHitPathTimed against BenchmarkHitPath.

// requestBuckets span a cache hit (tens of µs from reading the batch to sending it) to a miss
// that used the upstreams' whole time (PODNS_UPSTREAM_TIMEOUT per upstream, 2s by default), in
// seconds: Prometheus's le bounds.
var requestBuckets = [...]float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// requestDuration is podns_request_duration_seconds. Every series exists from the start (a
// dashboard's rate() of a label that never moved is 0, not missing). Prefetch answers no client
// and has none.
var requestDuration = newDurationHistogram(prometheus.NewDesc("podns_request_duration_seconds",
	"Time from reading a query to sending its answer, every answer, by where the answer came from (cache: hit, miss, stale, coalesced, filtered, error).",
	[]string{"cache"}, nil))

// durationHistogram is a Prometheus histogram that takes n observations of one duration in one
// call (observe): a UDP batch's hits share their duration, so the batch costs the histogram two
// atomic additions whatever its size. client_golang's Histogram takes one at a time.
type durationHistogram struct {
	desc   *prometheus.Desc
	bounds [len(requestBuckets)]time.Duration // requestBuckets as durations: integer compares
	series [querylog.Prefetch]durationSeries
}

type durationSeries struct {
	counts [len(requestBuckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sumNs  atomic.Int64                           // nanoseconds: exact, and one atomic add
}

func newDurationHistogram(desc *prometheus.Desc) *durationHistogram {
	h := &durationHistogram{desc: desc}
	for i, b := range requestBuckets {
		h.bounds[i] = time.Duration(b * float64(time.Second))
	}
	return h
}

// observe counts n answers of src that took d.
func (h *durationHistogram) observe(src querylog.Source, d time.Duration, n uint64) {
	i := 0
	for i < len(h.bounds) && d > h.bounds[i] {
		i++
	}
	s := &h.series[src]
	s.counts[i].Add(n)
	s.sumNs.Add(int64(d) * int64(n))
}

// Describe implements prometheus.Collector.
func (h *durationHistogram) Describe(ch chan<- *prometheus.Desc) { ch <- h.desc }

// Collect implements prometheus.Collector. The count is the buckets' total, so that the +Inf
// bucket always equals it; an answer counted during a scrape may be in the sum and not yet in the
// buckets, or the other way round, until the next scrape.
func (h *durationHistogram) Collect(ch chan<- prometheus.Metric) {
	for src := range h.series {
		s := &h.series[src]
		cum := make(map[float64]uint64, len(requestBuckets))
		var total uint64
		for i, b := range requestBuckets {
			total += s.counts[i].Load()
			cum[b] = total
		}
		total += s.counts[len(requestBuckets)].Load()
		ch <- prometheus.MustNewConstHistogram(h.desc, total, time.Duration(s.sumNs.Load()).Seconds(), cum, querylog.Source(src).String())
	}
}

// count returns how many answers of src were observed (tests).
func (h *durationHistogram) count(src querylog.Source) (n uint64) {
	for i := range h.series[src].counts {
		n += h.series[src].counts[i].Load()
	}
	return n
}

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
		requestDuration.observe(src, d, 1)
	}
	s.offer(cl, pkt, resp, src, up, d)
}

// offer gives the answer to the query log, if it is on.
func (s *Server) offer(cl client, pkt, resp []byte, src querylog.Source, up upstreamInfo, d time.Duration) {
	if !s.cfg.QueryLog.On() {
		return
	}
	e := querylog.Entry{Query: pkt, Remote: cl.remote, Proto: logProto[cl.proto], Size: len(resp),
		Duration: d, Source: src, Upstream: up.Server, Attempts: up.Attempts}
	if len(resp) >= wire.HeaderLen {
		e.Rcode = wire.ExtendedRcode(resp) // BADVERS, or an upstream's: the upper bits are in the OPT record
	}
	s.cfg.QueryLog.Record(&e)
}

// prefetched offers an upstream query the stub made on its own (a prefetch) to the query log.
// A search candidate found fresh in the cache (errFresh) was not asked: no line.
func (s *Server) prefetched(pkt []byte, res result, d time.Duration) {
	if !s.cfg.QueryLog.On() || errors.Is(res.err, errFresh) {
		return
	}
	e := querylog.Entry{Query: pkt, Duration: d, Source: querylog.Prefetch, Upstream: res.up.Server, Attempts: res.up.Attempts}
	if res.reply != nil {
		e.Rcode = wire.ExtendedRcode(res.reply)
		e.Size = len(res.reply)
	} else {
		e.Rcode = wire.RcodeServFail // no reply: what a client asking would have got
	}
	s.cfg.QueryLog.Record(&e)
}
