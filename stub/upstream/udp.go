package upstream

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"context"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// udpBufs holds receive buffers large enough for any datagram, so that a large EDNS reply is
// never cut and the hot path does not allocate 64 KiB per query.
var udpBufs = sync.Pool{New: func() any { b := make([]byte, dns.MaxMsgSize); return &b }}

// aLongTimeAgo is a deadline in the past: setting it wakes a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchangeUDP sends the query from a fresh socket (a new random source port per query, so no
// two queries share a 5-tuple or a conntrack entry) and waits for the matching reply. The
// socket is connected: the kernel drops datagrams from any other source address and port.
func (s *server) exchangeUDP(ex *exchange, deadline time.Time) (*dns.Msg, error) {
	uc, err := net.DialUDP("udp", nil, s.udpAddr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.addr, err)
	}
	defer uc.Close()
	if err := uc.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("%s: %w", s.addr, err)
	}
	wake := func() { uc.SetDeadline(aLongTimeAgo) }
	defer context.AfterFunc(ex.ctx, wake)()
	defer context.AfterFunc(s.f.ctx, wake)()

	id := randID()
	ex.setID(id)
	if _, err := uc.Write(ex.wire[2:]); err != nil {
		return nil, s.udpErr(ex, err)
	}
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	buf := *bp
	for { // ends at the deadline at the latest
		n, err := uc.Read(buf)
		if err != nil {
			return nil, s.udpErr(ex, err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil || m.Id != id || !matches(m, ex.call.q) {
			// A truncated reply may fail to unpack past its header; it still means "use TCP".
			if err != nil && n >= wire.HeaderLen && wire.ID(buf) == id && wire.IsResponse(buf) && wire.IsTruncated(buf) {
				m = &dns.Msg{MsgHdr: dns.MsgHdr{Id: id, Response: true, Truncated: true}}
				return m, nil
			}
			s.m.errBadReply.Inc()
			continue
		}
		return m, nil
	}
}

func (s *server) udpErr(ex *exchange, err error) error {
	switch {
	case s.f.ctx.Err() != nil:
		return ErrClosed
	case ex.ctx.Err() != nil:
		return ex.ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%s: %w after %v", s.addr, errTimeout, s.f.cfg.Timeout)
	}
	return fmt.Errorf("%s: %w", s.addr, err)
}
