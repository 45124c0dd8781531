package server

import (
	"context"
	"errors"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

const (
	typeAAAA  = 28
	classINET = 1
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
	if s.cfg.FilterAAAA && r.QType == typeAAAA && r.QClass == classINET {
		filteredTotal.Inc()
		return finish(appendNoData(buf[:0], r), buf, r, proto), reply
	}
	if s.cfg.Cache == nil {
		return nil, forward
	}
	resp, ok := s.cfg.Cache.Get(buf[:0], r)
	if !ok {
		return nil, forward
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

// resolve answers a cache miss through the upstreams. pkt is the caller's own copy of the query.
// The reply goes to send; the caller holds an inflight token released by the deferred caller.
func (s *Server) resolve(pkt []byte, proto int, send func([]byte)) {
	var r wire.Request
	if r.Parse(pkt) != nil {
		return // the fast path already parsed this packet; cannot happen
	}
	buf := make([]byte, 0, 1024)
	var q dns.Msg
	if err := q.Unpack(pkt); err != nil {
		// wire accepted what miekg/dns refuses (e.g. an EDNS option it cannot read).
		send(wire.AppendError(buf, &r, wire.RcodeFormErr))
		return
	}
	clientQuestion := append([]dns.Question(nil), q.Question...)
	// Ask upstream with EDNS whatever the client did: over TCP the whole answer comes back and is
	// cached once, and each client is then served what fits its own size. RD always: the stub
	// is a stub, its upstream is the recursive resolver.
	q.Extra = nil
	q.SetEdns0(wire.DefaultUDPSize, r.DO)
	q.CheckingDisabled = r.CD
	q.RecursionDesired = true

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ForwardTimeout)
	resp, leader, err := s.exchange(ctx, flightKey(q.Question[0], &r), &q)
	cancel()
	forwardDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		s.log.Debug().Err(err).Str("qname", q.Question[0].Name).Msg("no upstream answered")
		send(wire.AppendError(buf, &r, wire.RcodeServFail))
		return
	}
	if s.cfg.Cache != nil && leader {
		s.cfg.Cache.Set(&r, resp)
	}
	out, err := pack(resp, clientQuestion, &r, buf)
	if err != nil {
		s.log.Warn().Err(err).Str("qname", q.Question[0].Name).Msg("cannot pack the upstream's reply")
		send(wire.AppendError(buf, &r, wire.RcodeServFail))
		return
	}
	send(finish(out, buf, &r, proto))
}

// pack renders the upstream's reply for the client: its ID, its question with its own letter
// case, its RD bit, and no OPT record (finish adds the client's own).
func pack(resp *dns.Msg, question []dns.Question, r *wire.Request, buf []byte) ([]byte, error) {
	m := *resp // shallow copy: the cache may hold on to resp's slices, which are not modified
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
	m.Rcode &= 0x0f // an extended rcode only means something with the upstream's OPT
	m.Compress = true
	return m.PackBuffer(buf)
}
