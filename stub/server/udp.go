package server

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/wire"
)

// serveUDP reads queries from one socket until Shutdown. Hits are answered inline; misses go to
// their own goroutine so that a slow upstream never holds up the hits behind it.
func (s *Server) serveUDP(conn *net.UDPConn) {
	defer s.wg.Done()
	in := make([]byte, maxMsg)
	out := make([]byte, 0, maxMsg)
	var r wire.Request
	for {
		n, addr, err := conn.ReadFromUDPAddrPort(in)
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn().Err(err).Msg("udp read")
			continue
		}
		s.handleUDP(conn, client{remote: addr, proto: protoUDP, start: time.Now()}, &r, in[:n], out)
	}
}

// handleUDP answers one datagram: a hit inline, a miss handed to its own goroutine. A panic is
// contained here, so that the reader goes on with the next datagram: the client gets SERVFAIL
// unless its reply already left or the miss path took it over. The deferred recover is open-coded
// (one defer, no loop): it costs the hit path no allocation.
func (s *Server) handleUDP(conn *net.UDPConn, cl client, r *wire.Request, pkt, out []byte) {
	owed := true
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(panics.UDP, v)
			if owed {
				s.replyServFail(panics.UDP, pkt, cl, func(b []byte) { s.sendImmediate(conn, cl.remote, wire.ID(b), b) })
			}
		}
	}()
	s.hook("udp")
	resp, v, src := s.answer(r, out, pkt, protoUDP)
	switch v {
	case reply:
		owed = false
		s.sendImmediate(conn, cl.remote, r.ID, resp)
		s.answered(cl, pkt, resp, src, upstreamInfo{})
	case forward:
		owed = false // forwardUDP owes the reply from here on
		s.forwardUDP(conn, cl, r.ID, pkt)
	}
}

// sendImmediate sends a reply that is ready now, through the same-ID order when it must.
func (s *Server) sendImmediate(conn *net.UDPConn, addr netip.AddrPort, id uint16, resp []byte) {
	if s.mustOrder() {
		s.sendInOrder(conn, addr, id, resp)
		return
	}
	sendUDP(conn, addr, resp)
}

// mustOrder reports whether an immediate UDP reply has to go through the same-ID order: only
// while some miss is pending, so the hit path builds no closure and takes no lock otherwise.
func (s *Server) mustOrder() bool { return s.cfg.OrderSameID && s.order.active.Load() > 0 }

// sendInOrder sends an immediate reply, behind any pending reply to the same client and ID.
func (s *Server) sendInOrder(conn *net.UDPConn, addr netip.AddrPort, id uint16, resp []byte) {
	s.order.sendNow(addr, id, resp, func(b []byte) { sendUDP(conn, addr, b) })
}

// forwardUDP sends a UDP client's miss upstream; with OrderSameID its reply takes its place in
// line first, so that a later reply with the same client and ID cannot overtake it.
func (s *Server) forwardUDP(conn *net.UDPConn, cl client, id uint16, pkt []byte) {
	addr := cl.remote
	send := func(b []byte) { sendUDP(conn, addr, b) }
	if s.cfg.OrderSameID {
		slot := s.order.reserve(addr, id)
		send = func(b []byte) { s.order.complete(slot, b, func(b []byte) { sendUDP(conn, addr, b) }) }
	}
	s.forwardAsync(pkt, cl, send)
}
