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

// viaUDP sends the query from a fresh socket (a new random source port per query, so no
// two queries share a 5-tuple or a conntrack entry) and waits for the matching reply. The
// socket is connected: the kernel drops datagrams from any other source address and port.
func (p *peer) viaUDP(qs *queryState, deadline time.Time) ([]byte, error) {
	uc, err := net.DialUDP("udp", nil, p.udpAddr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p.addr, err)
	}
	defer uc.Close()
	if err := uc.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("%s: %w", p.addr, err)
	}
	wake := func() { uc.SetDeadline(aLongTimeAgo) }
	defer context.AfterFunc(qs.ctx, wake)()
	defer context.AfterFunc(p.f.ctx, wake)()

	id := randID()
	qs.setID(id)
	if _, err := uc.Write(qs.frame[2:]); err != nil {
		return nil, p.udpErr(qs, err)
	}
	bp := udpBufs.Get().(*[]byte)
	defer udpBufs.Put(bp)
	buf := *bp
	for { // ends at the deadline at the latest
		n, err := uc.Read(buf)
		if err != nil {
			return nil, p.udpErr(qs, err)
		}
		msg := buf[:n]
		if !wellFormed(msg) {
			// A truncated reply may not parse past its header; it still means "use TCP".
			if n >= wire.HeaderLen && wire.ID(msg) == id && wire.IsResponse(msg) && wire.IsTruncated(msg) {
				return truncatedHeader(id), nil
			}
			p.m.errBadReply.Inc()
			continue
		}
		if !matches(msg, id, qs.call.q) {
			p.m.errBadReply.Inc()
			continue
		}
		return append([]byte(nil), msg...), nil // buf goes back to the pool
	}
}

// truncatedHeader is the reply viaUDP returns for a truncated reply that does not parse past
// its header: that header's ID, QR and TC, and nothing else (no question: see truncatedAnswer).
func truncatedHeader(id uint16) []byte {
	h := make([]byte, wire.HeaderLen)
	wire.SetID(h, id)
	h[2] = 0x80 | 0x02 // QR, TC
	return h
}

func (p *peer) udpErr(qs *queryState, err error) error {
	switch {
	case p.f.ctx.Err() != nil:
		return ErrClosed
	case qs.ctx.Err() != nil:
		return qs.ctx.Err()
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%s: %w after %v", p.addr, errTimeout, p.f.cfg.Timeout)
	}
	return fmt.Errorf("%s: %w", p.addr, err)
}
