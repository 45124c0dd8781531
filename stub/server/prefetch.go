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
		// The expiry refresh renews an entry that is still fresh; a search candidate that is
		// fresh by now is not asked again.
		start := time.Now()
		res := s.fetchNow(&r, q, panics.Prefetch, why == prefetchSearch) // already on its own goroutine
		s.prefetched(own, res, time.Since(start))
	}()
}

// walkContinues reports whether reply, the upstream's packed answer to a question of type qtype, is one after which every client
// that walks the search list asks the next candidate: only then does the search-path prefetch
// speculate (issue 12 item 4), so that a name found at the first step costs exactly the queries
// its client sends.
//
//   - NXDOMAIN: glibc (res_search keeps trying on HOST_NOT_FOUND), musl (lookup_name.c
//     name_from_dns returns 0 when either reply is NXDOMAIN) and Go's resolver all go on.
//   - NODATA (NOERROR, empty answer section) for A or AAAA: not enough. These come in pairs, and
//     the common case, a Service with only an A record, is an AAAA NODATA whose walk ends at the
//     A answer. Even NODATA for both ends musl's walk (EAI_NODATA) while glibc and Go go on;
//     the stub cannot tell the two apart, so it leaves that walk to the client, which then costs
//     what it costs without podns.
//   - NODATA for any other type (SRV, TXT, MX, …): only glibc's res_search and Go walk the
//     search list for those (musl's res_search is res_query: no search list), and both go on
//     after NODATA (glibc counts it in got_nodata and keeps trying; Go tries the next name).
func walkContinues(qtype uint16, reply []byte) bool {
	if len(reply) < wire.HeaderLen {
		return false
	}
	switch rc := wire.ExtendedRcode(reply); {
	case rc == dns.RcodeNameError:
		return true
	case rc != dns.RcodeSuccess || wire.Count(reply, wire.Answer) != 0 || wire.IsTruncated(reply):
		return false
	}
	return qtype != dns.TypeA && qtype != dns.TypeAAAA
}

// searchPrefetch is the ndots:5 fix. A pod's resolver tries a short or external name X with each
// search domain in turn, then as X itself, one round trip each, mostly NXDOMAIN. When the
// upstream's answer to X.<first search domain>, for an X with fewer dots than ndots — the first
// step of that walk — says the walk goes on (walkContinues), the stub asks upstream for every
// later candidate at once, same type and flags, so that the client's follow-up queries are cache
// hits or join a query already in flight. The answers are exactly the upstream's.
//
// fetch calls it on the first step's goroutine once the answer is stored, before handing it to
// the client. A candidate is never asked twice, whoever asks first: the prefetch skips one that
// is fresh in the cache and joins one in flight, the client's miss joins the prefetch's flight or
// finds its stored answer (coalesce stores before it ends a flight, and checks for a fresh entry
// before it starts one). A panic in it is the prefetch's: it is recovered here, and the client
// still gets its answer.
func (s *Server) searchPrefetch(query []byte, r *wire.Request) {
	if len(s.cfg.Search) == 0 || s.cfg.Cache == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(panics.Prefetch, v)
		}
	}()
	s.hook("search")
	// Unpacked here, once per walk that goes on, rather than on every miss.
	q := new(dns.Msg)
	if q.Unpack(query) != nil || len(q.Question) != 1 {
		return
	}
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
