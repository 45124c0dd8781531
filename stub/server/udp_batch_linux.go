package server

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

// Under load most of a cache hit's cost is two system calls and the netpoller around them, not
// the cache. recvmmsg and sendmmsg move up to udpBatch datagrams per call, so a burst of
// lookups costs two system calls, not two per lookup. Blocking still goes through Go's netpoller
// (RawConn.Read/Write), so deadlines and Shutdown work as for any socket.
//
// Both calls are raw system calls (RawSyscall6: no entersyscall/exitsyscall). They never block
// (MSG_DONTWAIT; a UDP send that finds the buffer full fails with EAGAIN), so the runtime has
// nothing to hand off while they run. With the ordinary Syscall6, every call made while the
// process had been idle woke the runtime's sysmon thread (entersyscall wakes it from its deep
// sleep), which then slept 20 µs and woke again before sleeping deeply: at the rates pods see,
// where each query finds the stub idle, that was two thread wake-ups per query on top of the
// one the packet itself costs. Measured in the peer benchmark (issue 17): threads switched in
// per query 2.4 → 0.7 at 2,000 q/s, CPU per query −25 % at 2,000 and 200 q/s.

// udpBatch is how many datagrams one system call moves.
const udpBatch = 32

// udpSlot is the read buffer of one datagram. DNS queries are small (RFC 1035's 512 bytes, EDNS
// ones well under 1 KiB); a larger one is cut short by the kernel (MSG_TRUNC) and dropped.
const udpSlot = 4096

// batchIO is one reader's preallocated batch: nothing on the hit path allocates.
type batchIO struct {
	in    [udpBatch][udpSlot]byte
	names [udpBatch]unix.RawSockaddrInet6 // large enough for IPv4 and IPv6 peers
	rvec  [udpBatch]unix.Iovec
	rmsg  [udpBatch]unix.Mmsghdr
	out   [udpBatch][]byte // reply buffers; a reply larger than the slot grows its own
	svec  [udpBatch]unix.Iovec
	smsg  [udpBatch]unix.Mmsghdr

	// The system calls run inside RawConn.Read/Write callbacks. Built once: a closure made per
	// call would escape to the heap on every batch.
	readFn, writeFn func(fd uintptr) bool
	rn              int           // datagrams received by readFn
	serr            syscall.Errno // error of the last readFn/writeFn call
	sdone, sk, sent int           // writeFn sends smsg[sdone:sk], reports sent

	// t0 is when recvmmsg returned the batch, on the monotonic clock since epoch: every
	// datagram in it counts as read then, so that timing the hits costs one clock read per
	// batch, not one per hit. time.Since reads the monotonic clock only; time.Now reads the
	// wall clock too.
	epoch time.Time
	t0    time.Duration
	meta  [udpBatch]sentMeta // of each queued reply, for flush
}

// sentMeta is what flush needs of a queued reply to time it and offer it to the query log.
type sentMeta struct {
	dgram int             // the datagram of the batch it answers
	src   querylog.Source // where it came from
	done  bool            // timed and logged already (the SERVFAIL after a panic: replyServFail did)
}

func newBatchIO() *batchIO {
	b := &batchIO{epoch: time.Now()}
	for i := range b.rmsg {
		b.rvec[i].Base = &b.in[i][0]
		b.rvec[i].SetLen(udpSlot)
		b.rmsg[i].Hdr.Iov = &b.rvec[i]
		b.rmsg[i].Hdr.SetIovlen(1)
		b.out[i] = make([]byte, 0, udpSlot)
	}
	b.readFn = func(fd uintptr) bool {
		// Raw: see the top of this file.
		r, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.rmsg[0])), udpBatch, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false // wait in the netpoller
		}
		b.rn, b.serr = int(r), e
		return true
	}
	b.writeFn = func(fd uintptr) bool {
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&b.smsg[b.sdone])), uintptr(b.sk-b.sdone), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		b.sent, b.serr = int(r), e
		return true
	}
	return b
}

// serveUDPBatch is serveUDP with batched system calls.
func (s *Server) serveUDPBatch(conn *net.UDPConn) {
	defer s.wg.Done()
	rc, err := conn.SyscallConn()
	if err != nil {
		s.wg.Add(1)
		s.serveUDP(conn)
		return
	}
	b := newBatchIO()
	var r wire.Request
	for {
		n, err := b.recv(rc)
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			s.log.Warn().Err(err).Msg("udp read")
			continue
		}
		b.t0 = time.Since(b.epoch)
		k := 0 // replies queued for sendmmsg
		for i := range n {
			k = s.handleBatched(conn, rc, b, &r, i, k)
		}
		s.flush(rc, b, k)
	}
}

// flush sends the first k queued replies, then times them all with one clock read and offers
// them to the query log. A hit's duration is thus from its batch's arrival to its batch's
// sendmmsg: what the client waited on the stub, the other datagrams in the batch included.
func (s *Server) flush(rc syscall.RawConn, b *batchIO, k int) {
	if k == 0 {
		return
	}
	b.send(rc, k)
	s.account(b, k)
}

// account times the first k queued replies of the batch, just sent, and offers them to the query
// log.
func (s *Server) account(b *batchIO, k int) {
	d := time.Since(b.epoch) - b.t0
	var n [querylog.Prefetch]uint64 // replies per source: one histogram update each
	for j := range k {
		if m := &b.meta[j]; !m.done {
			n[m.src]++
		}
	}
	for src, c := range n {
		if c > 0 {
			requestDuration.observe(querylog.Source(src), d, c)
		}
	}
	if !s.cfg.QueryLog.On() {
		return
	}
	for j := range k {
		m := &b.meta[j]
		if m.done {
			continue
		}
		cl := client{proto: protoUDP}
		cl.remote, _ = sockaddrToAddrPort(&b.names[m.dgram])
		s.offer(cl, b.in[m.dgram][:b.rmsg[m.dgram].Len], b.out[j][:b.svec[j].Len], m.src, upstreamInfo{}, d)
	}
}

// handleBatched answers datagram i of the batch, k replies being queued before it, and returns
// how many are queued after it. A panic is contained here, so that the reader goes on with the
// rest of the batch: the client gets SERVFAIL, queued behind the replies before it, unless its
// reply already left or the miss path took it over. The deferred recover is open-coded (one
// defer, no loop): it costs the hit path no allocation.
func (s *Server) handleBatched(conn *net.UDPConn, rc syscall.RawConn, b *batchIO, r *wire.Request, i, k int) (queued int) {
	queued = k
	m := &b.rmsg[i]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		droppedUnparseable.Inc() // larger than any DNS query has reason to be
		return queued
	}
	pkt := b.in[i][:m.Len]
	addr, ok := sockaddrToAddrPort(&b.names[i])
	if !ok {
		return queued
	}
	cl := client{remote: addr, proto: protoUDP, start: b.epoch.Add(b.t0)}
	owed := true
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(panics.UDP, v)
			if owed {
				s.replyServFail(panics.UDP, pkt, cl, func(resp []byte) {
					if s.mustOrder() {
						s.sendInOrder(conn, addr, wire.ID(resp), resp)
						return
					}
					countResponse(resp)
					b.out[queued] = append(b.out[queued][:0], resp...)
					b.queue(queued, b.out[queued], &b.names[i], m.Hdr.Namelen)
					b.meta[queued] = sentMeta{done: true}
					queued++
				})
			}
		}
	}()
	s.hook("batch")
	resp, v, src := s.answer(r, b.out[queued][:0], pkt, protoUDP)
	switch v {
	case reply:
		owed = false
		if s.mustOrder() {
			s.sendInOrder(conn, addr, r.ID, resp)
			s.answered(cl, pkt, resp, src, upstreamInfo{})
			return queued
		}
		countResponse(resp)
		b.queue(queued, resp, &b.names[i], m.Hdr.Namelen)
		b.meta[queued] = sentMeta{dgram: i, src: src}
		return queued + 1
	case forward:
		// Replies already answered in this batch leave first, so that none can be
		// overtaken by this query's reply (the musl same-ID order).
		s.flush(rc, b, queued)
		queued = 0
		owed = false // forwardUDP owes the reply from here on
		s.forwardUDP(conn, cl, r.ID, pkt)
	}
	return queued
}

// recv fills the batch with at least one datagram, waiting in the netpoller when none is queued.
func (b *batchIO) recv(rc syscall.RawConn) (int, error) {
	for i := range b.rmsg {
		b.rmsg[i].Hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		b.rmsg[i].Hdr.Namelen = unix.SizeofSockaddrInet6
		b.rmsg[i].Hdr.Flags = 0
	}
	if err := rc.Read(b.readFn); err != nil {
		return 0, err
	}
	if b.serr != 0 {
		return 0, b.serr
	}
	return b.rn, nil
}

// queue puts reply k of the batch in the send list, addressed to the sockaddr it came from.
func (b *batchIO) queue(k int, resp []byte, name *unix.RawSockaddrInet6, namelen uint32) {
	b.out[k] = resp[:0] // keep a reply buffer that grew for the next batch
	b.svec[k].Base = &resp[0]
	b.svec[k].SetLen(len(resp))
	b.smsg[k].Hdr.Name = (*byte)(unsafe.Pointer(name))
	b.smsg[k].Hdr.Namelen = namelen
	b.smsg[k].Hdr.Iov = &b.svec[k]
	b.smsg[k].Hdr.SetIovlen(1)
}

// send hands the first k queued replies to the kernel. A reply the kernel refuses (a peer that
// went away) is skipped; UDP gives no better option.
func (b *batchIO) send(rc syscall.RawConn, k int) {
	b.sdone, b.sk = 0, k
	for b.sdone < k {
		switch err := rc.Write(b.writeFn); {
		case err != nil:
			return // socket closed
		case b.serr != 0:
			b.sdone++ // the first remaining reply failed: drop it, send the rest
		default:
			b.sdone += b.sent
		}
	}
}

// sockaddrToAddrPort reads the peer address recvmmsg wrote, without allocating.
func sockaddrToAddrPort(sa *unix.RawSockaddrInet6) (netip.AddrPort, bool) {
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port), true
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			// Zoned (link-local) peers are rare on a pod's loopback; the zone costs an allocation.
			a = a.WithZone(zoneName(sa.Scope_id))
		}
		return netip.AddrPortFrom(a, port), true
	}
	return netip.AddrPort{}, false
}

func zoneName(idx uint32) string {
	if ifi, err := net.InterfaceByIndex(int(idx)); err == nil {
		return ifi.Name
	}
	return ""
}
