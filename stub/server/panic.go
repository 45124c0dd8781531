package server

import (
	"errors"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

// A panic while a query is handled costs that query, never the process: every goroutine that
// handles a query recovers at its boundary (the UDP and TCP readers per message, the miss and
// prefetch goroutines), records the panic (podns_panics_total and a rate-limited log line with the
// stack), answers SERVFAIL when the client is still owed a reply, and carries on.

// errPanicked is the result of an upstream query whose goroutine panicked: its waiters answer
// SERVFAIL (or stale) as for any upstream failure.
var errPanicked = errors.New("panic while querying upstream")

// readerWhere is where a panic in the reader of each transport counts.
var readerWhere = [2]panics.Where{protoUDP: panics.UDP, protoTCP: panics.TCP}

// hook calls Server.testHook, the tests' way to inject a panic at one stage; nil in production.
func (s *Server) hook(stage string) {
	if s.testHook != nil {
		s.testHook(stage)
	}
}

// servFail appends to dst the SERVFAIL owed to pkt after a panic. pkt is parsed afresh, since the
// caller's Request may be half filled by the query that panicked; if parsing is what panics, the
// reply is the bare header with pkt's ID. A packet that is not a query gets nothing (nil).
func servFail(dst, pkt []byte) (out []byte) {
	defer func() {
		if recover() != nil {
			out = nil
			if len(pkt) >= wire.HeaderLen {
				out = wire.AppendError(dst[:0], &wire.Request{ID: wire.ID(pkt)}, wire.RcodeServFail)
			}
		}
	}()
	var r wire.Request
	if errors.Is(r.Parse(pkt), wire.ErrDrop) {
		return nil
	}
	return wire.AppendError(dst[:0], &r, wire.RcodeServFail)
}

// replyServFail sends through send the SERVFAIL owed to pkt, cl's query, after a panic at where,
// and times it (cache=error). A panic in send itself is recorded and dropped: it must not escape
// the recovering function.
func (s *Server) replyServFail(where panics.Where, pkt []byte, cl client, send func([]byte)) {
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(where, v)
		}
	}()
	if resp := servFail(make([]byte, 0, 512), pkt); resp != nil {
		send(resp)
		s.answered(cl, pkt, resp, querylog.Error, upstreamInfo{})
	}
}
