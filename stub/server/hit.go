package server

import (
	"errors"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/querylog"
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
// patches, never an unpacked message. src says where a reply came from (hit, filtered, error).
func (s *Server) answer(r *wire.Request, buf, pkt []byte, proto int) (resp []byte, v verdict, src querylog.Source) {
	err := r.Parse(pkt)
	if errors.Is(err, wire.ErrDrop) {
		droppedUnparseable.Inc()
		return nil, drop, querylog.Error
	}
	// Every query that gets a reply counts, the ones refused below too; QType is 0 ("other")
	// when the question did not parse.
	countRequest(proto, r.QType)
	switch {
	case err == nil:
	case errors.Is(err, wire.ErrNotImp):
		return wire.AppendError(buf[:0], r, wire.RcodeNotImp), reply, querylog.Error
	case errors.Is(err, wire.ErrBadVers):
		return wire.AppendError(buf[:0], r, wire.RcodeBadVers), reply, querylog.Error
	default:
		return wire.AppendError(buf[:0], r, wire.RcodeFormErr), reply, querylog.Error
	}
	if s.cfg.FilterAAAA && r.QType == dns.TypeAAAA && r.QClass == dns.ClassINET {
		filteredTotal.Inc()
		return finish(wire.AppendNoData(buf[:0], r, filteredTTL), r, proto), reply, querylog.Filtered
	}
	if s.cfg.Cache == nil {
		return nil, forward, querylog.Miss
	}
	resp, st := s.cfg.Cache.Lookup(buf[:0], r)
	switch st {
	case cache.Miss:
		return nil, forward, querylog.Miss
	case cache.Prefetch:
		s.refresh(pkt, prefetchExpiry) // once per entry lifetime: the copy it makes is not per hit
	}
	return finish(resp, r, proto), reply, querylog.Hit
}

// finish cuts a UDP reply that does not fit the client's payload size down to the whole records
// that fit, with TC=1 (wire.Truncate: what CoreDNS does, so a client without a TCP fallback, musl
// before 1.2.4, still gets addresses, and one with it retries over TCP), and then adds the OPT
// record a client that sent one expects, its room kept. resp is the caller's own: cut in place.
//
// Every reply built from a cache entry or an upstream reply (hit, miss, stale, coalesced, the
// AAAA filter's NODATA) goes through here, and gets the stub's header rule, the same for all:
//   - AA=0. The stub answers from its cache or its upstream, never from a zone it is authoritative
//     for (RFC 1035 §4.1.1), whatever AA its upstream set. CoreDNS's cache sets AA=1 on every
//     hit instead (plugin/cache item.go toMsg, since 1.5.1), to stop old clients taking a
//     cached NODATA from its kubernetes plugin, which sets RA=0, for a lame referral; with RA=1
//     below that cannot happen, so the stub needs no false AA.
//   - RA=1. The stub offers recursion, through its upstream, to every client (RFC 1035 §4.1.1);
//     wire.AppendError sets it on the replies the stub makes itself. It also keeps glibc's
//     res_send and Go's resolver (checkHeader, golang.org/issue/15434) from taking a NOERROR
//     reply with no records, AA=0 and RA=0 for a lame referral and the lookup for a failure.
func finish(resp []byte, r *wire.Request, proto int) []byte {
	wire.SetAA(resp, false)
	wire.SetRA(resp, true)
	if proto == protoUDP {
		room := r.UDPSize
		if r.HasEDNS {
			room -= wire.OPTLen
		}
		resp = wire.Truncate(resp, room)
	}
	if r.HasEDNS {
		resp = wire.AppendOPT(resp, wire.DefaultUDPSize, r.DO)
	}
	return resp
}
