package server

import (
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/wire"
)

// refresh asks upstream for pkt's question to keep the cache warm (prefetch), with no client
// waiting. Skipped when the upstream slots are all taken: a prefetch must never crowd out a
// client's miss.
func (s *Server) refresh(pkt []byte, why prefetchReason) {
	select {
	case s.inflight <- struct{}{}:
	default:
		return
	}
	prefetchCounters[why].Inc()
	own := append([]byte(nil), pkt...)
	s.misses.Add(1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				s.panicLog.Record(panics.Prefetch, v) // no client waits: nothing to answer
			}
			<-s.inflight
			s.misses.Done()
		}()
		s.hook("prefetch")
		var r wire.Request
		q, err := prepare(own, &r)
		if err != nil {
			return
		}
		start := time.Now()
		res := <-s.fetch(&r, q, panics.Prefetch)
		s.prefetched(own, res, time.Since(start))
	}()
}

// searchPrefetch is the ndots:5 fix. A pod's resolver tries a short or external name X with each
// search domain in turn, then as X itself, one round trip each, mostly NXDOMAIN. When the stub
// sees X.<first search domain> for an X with fewer dots than ndots — the first step of that walk —
// it asks upstream for every later candidate at once, so that the client's follow-up queries are
// cache hits or join a query already in flight. The answers are exactly the upstream's.
//
// It runs on the miss's goroutine, but a panic in it is the prefetch's: it is recovered here, so
// that the client still gets the answer to its own query, which is already on its way.
func (s *Server) searchPrefetch(q *dns.Msg, r *wire.Request) {
	if len(s.cfg.Search) == 0 || s.cfg.Cache == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(panics.Prefetch, v)
		}
	}()
	s.hook("search")
	name := strings.ToLower(q.Question[0].Name)
	suffix := "." + s.cfg.Search[0] + "."
	if !strings.HasSuffix(name, suffix) {
		return
	}
	x := name[:len(name)-len(suffix)]
	if x == "" || strings.Count(x, ".") >= s.cfg.Ndots {
		return
	}
	candidates := make([]string, 0, len(s.cfg.Search))
	for _, d := range s.cfg.Search[1:] {
		candidates = append(candidates, x+"."+d+".")
	}
	candidates = append(candidates, x+".")
	for _, c := range candidates {
		m := q.Copy()
		m.Question[0].Name = c
		m.Id = r.ID
		pkt, err := m.Pack()
		if err != nil {
			continue
		}
		var cr wire.Request
		if cr.Parse(pkt) != nil || s.cfg.Cache.Fresh(&cr) {
			continue
		}
		s.refresh(pkt, prefetchSearch)
	}
}
