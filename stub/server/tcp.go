package server

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/wire"
)

// perConnInflight bounds the misses one TCP client may have pipelined at once, so that a single
// connection cannot take every upstream slot.
const perConnInflight = 32

func (s *Server) acceptTCP(l *net.TCPListener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and similar: back off briefly instead of spinning.
			s.log.Warn().Err(err).Msg("tcp accept")
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case s.tcpSlots <- struct{}{}:
		default:
			droppedTCPLimit.Inc()
			_ = c.Close()
			continue
		}
		s.connsMu.Lock()
		if s.closing.Load() {
			s.connsMu.Unlock()
			<-s.tcpSlots
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.connsMu.Unlock()
		tcpConnections.Inc()
		s.wg.Add(1)
		go s.serveTCP(c)
	}
}

// writeTCP sends one reply on c, length-prefixed (RFC 1035 §4.2.2), under wmu.
func (s *Server) writeTCP(c net.Conn, wmu *sync.Mutex, resp []byte) {
	wmu.Lock()
	defer wmu.Unlock()
	countResponse(resp)
	_ = c.SetWriteDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(resp)))
	// One write of prefix and message (net.Buffers uses writev): two writes would cost two
	// segments with Nagle off and stall the client's read of the length.
	bufs := net.Buffers{l[:], resp}
	if _, err := bufs.WriteTo(c); err != nil {
		_ = c.SetReadDeadline(time.Now()) // stop reading from a client we cannot answer
	}
}

// serveTCP reads length-prefixed queries from one client (RFC 1035 §4.2.2) and answers them as
// they complete, pipelined misses possibly out of order (RFC 7766 §6.2.1.1). The read deadline
// is set once per message, so a client that sends nothing, or dribbles one message, is cut off
// after TCPIdleTimeout.
func (s *Server) serveTCP(c net.Conn) {
	var (
		wmu   sync.Mutex // one writer at a time: replies from misses race with inline hits
		conns sync.WaitGroup
		slots = make(chan struct{}, perConnInflight)
		r     wire.Request
		hdr   [2]byte
		in    = make([]byte, maxMsg)
		out   = make([]byte, 0, maxMsg+2)
	)
	defer func() {
		conns.Wait()
		s.connsMu.Lock()
		delete(s.conns, c)
		s.connsMu.Unlock()
		_ = c.Close()
		tcpConnections.Dec()
		<-s.tcpSlots
		s.wg.Done()
	}()
	write := func(resp []byte) { s.writeTCP(c, &wmu, resp) }
	var remote netip.AddrPort
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		remote = a.AddrPort()
	}
	// handle answers one message and reports whether to go on reading. A panic is contained
	// here: the message was read whole, so the connection goes on with the next one, and the
	// client gets SERVFAIL unless its reply already left or the miss path took it over.
	handle := func(pkt []byte) (keep bool) {
		cl := client{remote: remote, proto: protoTCP, start: time.Now()}
		owed := true
		defer func() {
			if v := recover(); v != nil {
				s.panicLog.Record(panics.TCP, v)
				if owed {
					s.replyServFail(panics.TCP, pkt, cl, write)
				}
				keep = true
			}
		}()
		s.hook("tcp")
		resp, v, src := s.answer(&r, out[:0], pkt, protoTCP)
		switch v {
		case reply:
			owed = false
			write(resp)
			s.answered(cl, pkt, resp, src, upstreamInfo{})
		case drop:
			return false // not DNS: a client sending responses or junk gets no more of our time
		case forward:
			slots <- struct{}{} // back-pressure: stop reading while this client has too many misses
			conns.Add(1)
			owed = false // forwardAsync calls the callback exactly once from here on
			s.forwardAsync(pkt, cl, func(resp []byte) {
				defer func() { <-slots; conns.Done() }()
				write(resp)
			})
		}
		return true
	}
	for !s.closing.Load() {
		_ = c.SetReadDeadline(time.Now().Add(s.cfg.TCPIdleTimeout))
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[:]))
		if _, err := io.ReadFull(c, in[:n]); err != nil {
			return
		}
		if !handle(in[:n]) {
			return
		}
	}
}
