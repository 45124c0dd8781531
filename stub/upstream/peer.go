package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// queryState is the state of one exchange, shared by its attempts.
type queryState struct {
	f   *Forwarder
	ctx context.Context
	// frame is what the next send writes: ednsFrame, or plainFrame for a server that does not
	// accept EDNS. Each has the TCP length prefix; UDP sends frame[2:]. ednsFrame is the query
	// as given, in buf.
	frame, ednsFrame, plainFrame []byte
	// buf is the storage of ednsFrame, kept with the pooled state (see release).
	buf    []byte
	qid    uint16 // the query's own ID, restored in the reply
	edns   bool   // the query carries an OPT record
	optOff int    // the OPT record's offset in the query (ednsFrame[2:]), when edns
	call   call   // reused by every send: registered with at most one connection at a time
	timer  *time.Timer
}

// maxKeptBuf is the largest query buffer a released queryState keeps: a query with a large
// OPT or additional records should not pin its buffer in the pool.
const maxKeptBuf = 1024

// useEDNS makes the next send carry the query as given (on) or without its OPT record (off).
// The frame without OPT, the query cut before its OPT (the last record) with ARCOUNT one less,
// is made on first use: most servers accept EDNS, and a miss should not pay for it.
func (qs *queryState) useEDNS(on bool) {
	if on || !qs.edns {
		qs.frame = qs.ednsFrame
		return
	}
	if qs.plainFrame == nil {
		n := qs.optOff // the message's length without its OPT
		b := make([]byte, 2+n)
		copy(b, qs.ednsFrame[:2+n])
		b[0], b[1] = byte(n>>8), byte(n)
		binary.BigEndian.PutUint16(b[2+10:], uint16(wire.Count(b[2:], wire.Additional)-1)) // ARCOUNT
		qs.plainFrame = b
	}
	qs.frame = qs.plainFrame
}

// armTimer makes qs.timer fire at deadline; the timer is created on first use because UDP
// attempts rely on socket deadlines instead.
func (qs *queryState) armTimer(deadline time.Time) <-chan time.Time {
	d := time.Until(deadline)
	if qs.timer == nil {
		qs.timer = time.NewTimer(d)
	} else {
		qs.timer.Reset(d) // Go ≥1.23 timers: no stale value survives Reset
	}
	return qs.timer.C
}

// getQueryState returns a cleared queryState whose call has its reply channel, from f's pool of
// finished exchanges' states (Forwarder.queryStates): each exchange makes three allocations and
// a timer fewer (issue 12 item 5).
func (f *Forwarder) getQueryState() *queryState {
	qs, ok := f.queryStates.Get().(*queryState)
	if !ok {
		qs = &queryState{call: call{done: make(chan result, 1)}}
	}
	qs.f = f // release needs it even when the exchange ends before it starts
	return qs
}

// release stops qs's timer and returns qs to its forwarder's pool, cleared. Only for an exchange that
// returned: by then its call is registered nowhere and its reply channel is empty (viaTCP
// returns only once a result was taken or the registration withdrawn, giveUp), so no late
// reply can reach the next exchange.
func (qs *queryState) release() {
	if qs.timer != nil {
		qs.timer.Stop() // Go ≥1.23 timers: nothing stale is left in C after Stop
	}
	select {
	case <-qs.call.done:
		return // a result nobody took: the invariant above broke, so this state is not reused
	default:
	}
	f := qs.f
	buf := qs.buf[:0]
	if cap(buf) > maxKeptBuf {
		buf = nil
	}
	*qs = queryState{call: call{done: qs.call.done}, timer: qs.timer, buf: buf}
	f.queryStates.Put(qs)
}

// setID writes id, the upstream ID of the next send (see randID), into the query's frame.
func (qs *queryState) setID(id uint16) {
	wire.SetID(qs.frame[2:], id)
}

// randID returns a random upstream query ID. math/rand/v2's top-level functions use the
// runtime's ChaCha8 generator, seeded from the OS's cryptographic randomness: IDs are
// unpredictable to an off-path spoofer (RFC 5452) and cost no lock.
func randID() uint16 { return uint16(rand.Uint32()) }

// peer is one upstream server: its TCP pool, health, metrics and log limiter.
type peer struct {
	f       *Forwarder
	addr    string // normalised "ip:port", the metrics label
	ap      netip.AddrPort
	udpAddr *net.UDPAddr
	m       peerMetrics

	mu    sync.Mutex
	conns []*conn // open or dialing; retired and dead ones stay until their goroutine ends
	// budget is the number of queries one connection may carry, learned from a server that
	// closed a connection with queries in flight after answering that many (a miekg/dns
	// server's MaxTCPQueries, 128 by default). 0 means no limit is known.
	budget int

	h  health
	fb fallback // the UDP fallback in tcp mode (fallback.go)
	st recent   // recent round trips and the last error, for Status (status.go)

	// noEDNSUntil is when (f.now, Unix nanoseconds) the server is next sent queries with an OPT
	// record again; 0, or a time past, means it is believed to accept EDNS.
	noEDNSUntil atomic.Int64

	logMu sync.Mutex
	log   limiter // failure lines
}

// ednsMemory is how long a server that rejected a query for its OPT record (RFC 6891 section 7)
// is sent queries without OPT before EDNS is tried again: 15 minutes, the default of Unbound's
// infra-host-ttl, the lifetime of its per-server record of "EDNS version information" (and
// round-trip times and lameness). A cluster DNS that gets upgraded or replaced is trusted with
// EDNS again within that time; one that is still intolerant costs one extra round trip per
// window.
const ednsMemory = 15 * time.Minute

// ednsIntolerant reports whether queries to p currently go without an OPT record.
func (p *peer) ednsIntolerant() bool {
	until := p.noEDNSUntil.Load()
	return until != 0 && p.f.now().UnixNano() < until
}

// markEDNSIntolerant sends p's queries without OPT for ednsMemory from now, and logs it when p
// was not already believed intolerant.
func (p *peer) markEDNSIntolerant() {
	now := p.f.now()
	old := p.noEDNSUntil.Swap(now.Add(ednsMemory).UnixNano())
	if old == 0 || now.UnixNano() >= old {
		p.f.cfg.Logger.Warn().Str("upstream", p.addr).Float64("for", ednsMemory.Seconds()).
			Msg("upstream rejects queries with EDNS (FORMERR or NOTIMP without OPT, RFC 6891 section 7): sending them without OPT, replies limited to 512 bytes over UDP")
	}
}

// rejectsEDNS reports whether r, the reply to a query that carried an OPT record, says the
// server did not understand the OPT: FORMERR or NOTIMP without an OPT of its own (RFC 6891
// section 7; a server that understands EDNS includes OPT in its error reply, section 6.1.1).
// Without an OPT the header's RCODE is the whole RCODE.
func rejectsEDNS(r []byte) bool {
	rc := wire.Rcode(r)
	_, hasOPT := wire.FindOPT(r)
	return (rc == dns.RcodeFormatError || rc == dns.RcodeNotImplemented) && !hasOPT
}

func newPeer(f *Forwarder, ap netip.AddrPort) *peer {
	addr := ap.String()
	return &peer{f: f, addr: addr, ap: ap, udpAddr: net.UDPAddrFromAddrPort(ap), m: newPeerMetrics(addr)}
}

// attempt tries one server once, within Config.Timeout.
//
// A query with an OPT record that the server rejects for it (rejectsEDNS) is sent once more
// without OPT, within the same attempt (RFC 6891 section 6.2.2: a requestor that gets such a
// reply retries without EDNS). When that retry is answered with anything but FORMERR or NOTIMP,
// the OPT was the cause and the server gets its queries without OPT for ednsMemory; otherwise
// the query itself was the problem and nothing is remembered. A FORMERR that carries an OPT
// comes from a server that understands EDNS, and is the answer.
func (p *peer) attempt(qs *queryState) ([]byte, error) {
	start := time.Now()
	startMono := p.f.mono()
	deadline := start.Add(p.f.cfg.Timeout)
	withOPT := qs.edns && !p.ednsIntolerant()
	r, err := p.send(qs, deadline, withOPT)
	if err == nil && withOPT && rejectsEDNS(r) {
		p.replied(startMono + int64(time.Since(start))) // it answered: alive, whatever comes next
		p.m.errEDNS.Inc()
		r, err = p.send(qs, deadline, false)
		if err == nil {
			if rc := wire.ExtendedRcode(r); rc != dns.RcodeFormatError && rc != dns.RcodeNotImplemented {
				p.markEDNSIntolerant()
			}
		}
	}
	if err == nil {
		elapsed := time.Since(start)
		p.m.duration.Observe(elapsed.Seconds())
		p.st.observe(elapsed)
		p.replied(startMono + int64(elapsed))
		return r, nil
	}
	switch {
	case errors.Is(err, ErrClosed), qs.ctx.Err() != nil:
		// Not the server's fault.
	case errors.Is(err, errTimeout):
		p.m.errTimeout.Inc()
		p.logFailure(reasonTimeout, err)
		p.failed(err, startMono, true)
	default:
		p.m.errNetwork.Inc()
		p.logFailure(reasonNetwork, err)
		p.failed(err, startMono, false)
	}
	return nil, err
}

// send sends the query once, with or without its OPT record, over the configured protocol or
// the UDP fallback; a truncated UDP reply is retried over TCP (the same frame: a query without
// OPT stays without OPT). A TCP attempt refused at once is asked over UDP within the attempt. A query without OPT gets a UDP reply of at most 512 bytes (RFC 1035 section
// 4.2.1, RFC 6891 section 7); a larger answer comes back truncated and is fetched over TCP.
func (p *peer) send(qs *queryState, deadline time.Time, withOPT bool) ([]byte, error) {
	qs.useEDNS(withOPT)
	if !p.overUDP() {
		p.m.queriesTCP.Inc()
		r, err := p.viaTCP(qs, deadline)
		if err == nil || !refusedFast(err) || qs.ctx.Err() != nil {
			return r, err
		}
		// Refused at once: a policy that allows UDP only, or a server that is gone. The rest
		// of the attempt tells them apart (fallback.go).
		p.m.queriesUDP.Inc()
		ur, uerr := p.viaUDP(qs, deadline)
		if uerr != nil {
			if errors.Is(uerr, ErrClosed) || qs.ctx.Err() != nil {
				return nil, uerr
			}
			return nil, fmt.Errorf("%w; over UDP: %v", err, uerr)
		}
		p.useUDP(err)
		if wire.IsTruncated(ur) {
			return p.retryTruncated(qs, deadline, ur)
		}
		return ur, nil
	}
	p.m.queriesUDP.Inc()
	r, err := p.viaUDP(qs, deadline)
	if err == nil && wire.IsTruncated(r) {
		return p.retryTruncated(qs, deadline, r)
	}
	return r, err
}

// retryTruncated retries over TCP the query whose UDP reply r was truncated. In udp mode the
// retry has the rest of the attempt and its failure fails the attempt. For a server used over
// UDP because its TCP failed, the retry has at most fallbackTCPWait, and when it fails too the
// client gets r, TC set: what it would have got from the server without podns (glibc then
// asks over TCP and fails as it would have; musl before 1.2.4 uses the records that fit).
func (p *peer) retryTruncated(qs *queryState, deadline time.Time, r []byte) ([]byte, error) {
	p.m.queriesTCP.Inc()
	if p.f.udp {
		return p.viaTCP(qs, deadline)
	}
	if soon := time.Now().Add(fallbackTCPWait); soon.Before(deadline) {
		deadline = soon
	}
	tr, err := p.viaTCP(qs, deadline)
	if err == nil || errors.Is(err, ErrClosed) || qs.ctx.Err() != nil {
		return tr, err
	}
	return truncatedAnswer(r, qs.call.q), nil
}

// passedOver records a reply whose RCODE made the stub try the next server (see
// passOverReason); last says no server was left to try. The server stays alive for health
// purposes: it answered.
func (p *peer) passedOver(reason string, last bool) {
	switch reason {
	case reasonServfail:
		p.m.errServfail.Inc()
	case reasonNotimp:
		p.m.errNotimp.Inc()
	case reasonRefused:
		p.m.errRefused.Inc()
	}
	err := errPassedOver
	if last {
		err = errPassedOverLast
	}
	p.logFailure(reason, err)
}

// The error of the log line (and of Status's LastError) for a reply the stub passed over: with
// another server to try, or none left (a single upstream, or the last of the order). A new-user
// trial read "next server tried" on a stub with one upstream.
var (
	errPassedOver     = errors.New("reply passed over, next server tried")
	errPassedOverLast = errors.New("reply passed over, no other server left to try: the client gets SERVFAIL (or a stale answer)")
)

// logFailure logs at most one line per server per logInterval, carrying the number of
// failures it stood for, so that a dead server does not turn every query into a log line.
func (p *peer) logFailure(reason string, err error) {
	p.noteError(reason, err)
	now := p.f.now()
	p.logMu.Lock()
	ok, suppressed := p.log.allow(now)
	p.logMu.Unlock()
	if !ok {
		return
	}
	p.f.cfg.Logger.Warn().Str("upstream", p.addr).Str("reason", reason).Err(err).
		Int("suppressed", suppressed).Msg("upstream query failed")
}

// matches reports whether msg is a response with the upstream ID id to question q (the
// query's question in wire form: an uncompressed name, QTYPE, QCLASS): QR set, QDCOUNT 1, and
// the same question, the name compared case-insensitively in ASCII only, as DNS does (RFC
// 4343). A reply's question name is the first name of the message, so it has nothing to point
// back to: a compression pointer there does not match.
func matches(msg []byte, id uint16, q []byte) bool {
	if len(msg) < wire.HeaderLen+len(q) || wire.ID(msg) != id || !wire.IsResponse(msg) ||
		wire.Count(msg, wire.Question) != 1 {
		return false
	}
	a := msg[wire.HeaderLen : wire.HeaderLen+len(q)]
	n := len(q) - 4 // the name; length octets (at most 63) are never letters, so folding spares them
	return wire.EqualFoldName(a[:n], q[:n]) && string(a[n:]) == string(q[n:])
}

// wellFormed reports whether msg is a message the stub accepts as a reply: its records parse
// (wire.Records) to exactly its last octet, or, failing that, miekg/dns unpacks it, the rule
// before replies were read on wire. miekg accepts octets after the last record and header
// counts larger than the records present (it stops at the end of the message); such a reply
// costs an Unpack, a well-formed one none.
func wellFormed(msg []byte) bool {
	it := wire.Records(msg)
	for it.Next() {
	}
	if it.Err() == nil && it.Offset() == len(msg) {
		return true
	}
	return new(dns.Msg).Unpack(msg) == nil
}
