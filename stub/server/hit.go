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
	switch err := r.Parse(pkt); {
	case err == nil:
	case errors.Is(err, wire.ErrDrop):
		droppedUnparseable.Inc()
		return nil, drop, querylog.Error
	case errors.Is(err, wire.ErrNotImp):
		return wire.AppendError(buf[:0], r, wire.RcodeNotImp), reply, querylog.Error
	case errors.Is(err, wire.ErrBadVers):
		return wire.AppendError(buf[:0], r, wire.RcodeBadVers), reply, querylog.Error
	default:
		return wire.AppendError(buf[:0], r, wire.RcodeFormErr), reply, querylog.Error
	}
	countRequest(proto, r.QType)
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
func finish(resp []byte, r *wire.Request, proto int) []byte {
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
