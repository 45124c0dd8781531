package server

import (
	"errors"
	"net"

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
		resp, v := s.answer(&r, out, in[:n], protoUDP)
		switch v {
		case reply:
			countResponse(resp)
			_, _ = conn.WriteToUDPAddrPort(resp, addr)
		case forward:
			s.forwardAsync(in[:n], protoUDP, func(resp []byte) {
				countResponse(resp)
				_, _ = conn.WriteToUDPAddrPort(resp, addr)
			})
		}
	}
}

// forwardAsync hands a miss to its own goroutine, bounded by MaxInflight: past it the client gets
// SERVFAIL at once rather than a queue that grows without limit.
func (s *Server) forwardAsync(pkt []byte, proto int, send func([]byte)) {
	select {
	case s.inflight <- struct{}{}:
	default:
		overloadTotal.Inc()
		var r wire.Request
		_ = r.Parse(pkt)
		send(wire.AppendError(make([]byte, 0, 512), &r, wire.RcodeServFail))
		return
	}
	own := append([]byte(nil), pkt...) // the reader reuses its buffer
	s.misses.Add(1)
	go func() {
		defer func() { <-s.inflight; s.misses.Done() }()
		s.resolve(own, proto, send)
	}()
}
