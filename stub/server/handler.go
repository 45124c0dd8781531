package server

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/wire"
)

// verdict says what to do with a query after the fast path looked at it.
type verdict int

const (
	reply   verdict = iota // the reply is ready: send it
	drop                   // send nothing (unreadable header, or a response packet)
	forward                // a cache miss: resolve it upstream, off the reader's goroutine
)

// answer is the fast path, run on the reader's goroutine for every query: parse in place, answer
// errors and cache hits into buf. It allocates nothing, so a cache hit costs a copy and a few
// patches, never an unpacked message.
func (s *Server) answer(r *wire.Request, buf, pkt []byte, proto int) ([]byte, verdict) {
	switch err := r.Parse(pkt); {
	case err == nil:
	case errors.Is(err, wire.ErrShort):
		droppedUnparseable.Inc()
		return nil, drop
	case errors.Is(err, wire.ErrNotImp):
		return wire.AppendError(buf[:0], r, wire.RcodeNotImp), reply
	case errors.Is(err, wire.ErrBadVers):
		return wire.AppendError(buf[:0], r, wire.RcodeBadVers), reply
	default:
		return wire.AppendError(buf[:0], r, wire.RcodeFormErr), reply
	}
	countRequest(proto, r.QType)
	if s.cfg.FilterAAAA && r.QType == dns.TypeAAAA && r.QClass == dns.ClassINET {
		filteredTotal.Inc()
		return finish(wire.AppendNoData(buf[:0], r, filteredTTL), buf, r, proto), reply
	}
	if s.cfg.Cache == nil {
		return nil, forward
	}
	resp, st := s.cfg.Cache.Lookup(buf[:0], r)
	switch st {
	case cache.Miss:
		return nil, forward
	case cache.Prefetch:
		s.refresh(pkt, prefetchExpiry) // once per entry lifetime: the copy it makes is not per hit
	}
	return finish(resp, buf, r, proto), reply
}

// finish adds the OPT record a client that sent one expects, and replaces an answer that does not
// fit the client's UDP size with a truncated one (TC=1: the client retries over TCP).
func finish(resp, buf []byte, r *wire.Request, proto int) []byte {
	if r.HasEDNS {
		resp = wire.AppendOPT(resp, wire.DefaultUDPSize, r.DO)
	}
	if proto == protoUDP && len(resp) > r.UDPSize {
		return wire.AppendTruncated(buf[:0], r)
	}
	return resp
}

// staleTTL is the TTL of an answer served stale: RFC 8767's recommendation, long enough that
// clients do not hammer a failing upstream, short enough to pick up the real answer soon.
const staleTTL = 30

// prepare builds the upstream query for a client's packet: the client's question, EDNS whatever
// the client did (over TCP the whole answer comes back and is cached once, and each client is
// then served what fits its own size), the client's DO and CD bits, and RD always (the stub's
// upstream is the recursive resolver).
// It also returns the client's question on its own: the forwarder may change q.
func prepare(pkt []byte, r *wire.Request) (q *dns.Msg, client []dns.Question, err error) {
	if err := r.Parse(pkt); err != nil {
		return nil, nil, err
	}
	q = new(dns.Msg)
	if err := q.Unpack(pkt); err != nil {
		return nil, nil, err // wire accepted what miekg/dns refuses (e.g. an EDNS option it cannot read)
	}
	client = append([]dns.Question(nil), q.Question...)
	q.Extra = nil
	q.SetEdns0(wire.DefaultUDPSize, r.DO)
	q.CheckingDisabled = r.CD
	q.RecursionDesired = true
	return q, client, nil
}

// usable reports whether an upstream reply is an answer, rather than the upstream saying it
// could not produce one (then a stale answer, if there is one, is better).
func usable(m *dns.Msg) bool {
	return m.Rcode != dns.RcodeServerFailure && m.Rcode != dns.RcodeRefused
}

type result struct {
	msg *dns.Msg
	err error
}

// resolve answers a cache miss through the upstreams. pkt is the caller's own copy of the query.
//
// When the cache still holds an expired answer inside the stale window (RFC 8767), the upstream
// gets StaleTimeout to answer; if it fails or is slower, the stale answer goes out and the
// exchange carries on in the background to refresh the cache. For StaleFastWindow after such a
// failure, further stale-eligible misses get their stale answer at once (still refreshed in the
// background): a lookup that walks the search list makes several misses one after another, and
// paying StaleTimeout for each would add up to the client's own timeout. Every upstream believed
// down means the stale answer at once, and no upstream query.
func (s *Server) resolve(pkt []byte, proto int, send func([]byte)) {
	var r wire.Request
	buf := make([]byte, 0, 1024)
	q, clientQuestion, err := prepare(pkt, &r)
	if err != nil {
		send(wire.AppendError(buf, &r, wire.RcodeFormErr))
		return
	}
	var stale []byte
	if s.cfg.Cache != nil { // Stale finds nothing when the cache's StaleWindow is 0
		stale, _ = s.cfg.Cache.Stale(nil, &r, staleTTL)
	}
	if stale != nil && !s.cfg.Forwarder.Healthy() {
		// Every upstream is known down: answer stale at once and send nothing. The forwarder's
		// probes notice the upstream's return; the next miss after that refreshes the entry.
		// Refreshing on every stale answer would only add load to a cluster DNS that is
		// struggling or restarting.
		send(finish(stale, buf, &r, proto))
		return
	}
	start := time.Now()
	results := s.exchangeAsync(&r, q)
	s.searchPrefetch(q, &r) // after the client's own query is on its way
	var deadline <-chan time.Time
	if stale != nil {
		wait := s.cfg.StaleTimeout
		if start.UnixNano() < s.staleFast.Load() {
			wait = 0 // the upstreams just failed to answer in time: do not make this client wait too
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	select {
	case res := <-results:
		forwardDuration.Observe(time.Since(start).Seconds())
		if res.err == nil && (stale == nil || usable(res.msg)) {
			out, err := pack(res.msg, clientQuestion, &r, buf)
			if err == nil {
				send(finish(out, buf, &r, proto))
				return
			}
			s.log.Warn().Err(err).Str("qname", q.Question[0].Name).Msg("cannot pack the upstream's reply")
		} else if res.err != nil {
			s.log.Debug().Err(res.err).Str("qname", q.Question[0].Name).Msg("no upstream answered")
		}
		if stale != nil {
			s.staleFast.Store(time.Now().Add(s.cfg.StaleFastWindow).UnixNano())
		}
	case <-deadline:
		if start.UnixNano() >= s.staleFast.Load() {
			// Only a real wait renews the window: once the upstreams are back, the background
			// refreshes turn the stale entries into fresh ones and the window lapses.
			s.staleFast.Store(time.Now().Add(s.cfg.StaleFastWindow).UnixNano())
		}
	}
	if stale != nil {
		send(finish(stale, buf, &r, proto))
		return
	}
	send(wire.AppendError(buf, &r, wire.RcodeServFail))
}

// exchangeAsync sends q upstream (coalesced with identical queries in flight) on its own
// goroutine, stores a usable reply in the cache, and delivers the result on the channel. The
// exchange outlives a caller that stopped waiting (stale answer sent): it refreshes the cache.
func (s *Server) exchangeAsync(r *wire.Request, q *dns.Msg) <-chan result {
	out := make(chan result, 1)
	s.misses.Add(1)
	go func() {
		defer s.misses.Done()
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Forwarder.MaxExchangeTime())
		defer cancel()
		msg, leader, err := s.exchange(ctx, flightKey(q.Question[0], r), q)
		if err == nil && leader && s.cfg.Cache != nil {
			s.cfg.Cache.Set(r, msg)
		}
		out <- result{msg, err}
	}()
	return out
}

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
		defer func() { <-s.inflight; s.misses.Done() }()
		var r wire.Request
		q, _, err := prepare(own, &r)
		if err != nil {
			return
		}
		<-s.exchangeAsync(&r, q)
	}()
}

// searchPrefetch is the ndots:5 fix. A pod's resolver tries a short or external name X with each
// search domain in turn, then as X itself, one round trip each, mostly NXDOMAIN. When the stub
// sees X.<first search domain> for an X with fewer dots than ndots — the first step of that walk —
// it asks upstream for every later candidate at once, so that the client's follow-up queries are
// cache hits or join a query already in flight. The answers are exactly the upstream's.
func (s *Server) searchPrefetch(q *dns.Msg, r *wire.Request) {
	if len(s.cfg.Search) == 0 || s.cfg.Cache == nil {
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

// pack renders the upstream's reply for the client: its ID, its question with its own letter
// case, its RD bit, and no OPT record (finish adds the client's own).
func pack(resp *dns.Msg, question []dns.Question, r *wire.Request, buf []byte) ([]byte, error) {
	m := *resp // shallow copy: other waiters and the cache share resp, which is not modified
	m.Id = r.ID
	m.Response = true
	m.RecursionDesired = r.RD
	m.CheckingDisabled = r.CD
	m.Question = question
	m.Extra = make([]dns.RR, 0, len(resp.Extra))
	for _, rr := range resp.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			m.Extra = append(m.Extra, rr)
		}
	}
	m.Rcode = wire.HeaderRcode(m.Rcode) // an extended rcode only means something with the upstream's OPT
	m.Compress = true
	return m.PackBuffer(buf)
}
