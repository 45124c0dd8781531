package server

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

// forwardAsync hands a miss to a goroutine of its own (an idle miss worker, or a new one),
// bounded by MaxInflight: past it the client gets SERVFAIL at once rather than a queue that
// grows without limit.
//
// Once called, it calls send exactly once, a panic included (SERVFAIL then): the callers' order
// slots and per-connection slots are released by send, so a reply lost to a panic would block
// the replies behind it for good.
func (s *Server) forwardAsync(pkt []byte, cl client, send func([]byte)) {
	owed, token := true, false
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(readerWhere[cl.proto], v)
			if token {
				<-s.inflight
			}
			if owed {
				s.replyServFail(readerWhere[cl.proto], pkt, cl, send)
			}
		}
	}()
	select {
	case s.inflight <- struct{}{}:
		token = true
	default:
		overloadTotal.Inc()
		owed = false
		resp, src := s.overloaded(pkt, cl.proto)
		send(resp)
		s.answered(cl, pkt, resp, src, upstreamInfo{})
		return
	}
	own := append([]byte(nil), pkt...) // the reader reuses its buffer
	s.misses.Add(1)
	owed, token = false, false // the worker owes both from here on
	job := missJob{pkt: own, cl: cl, send: send}
	select {
	case s.missJobs <- job: // an idle worker took it
	default:
		s.workers.Add(1) // the caller, a reader or a TCP connection, is in wg: Shutdown waits for it
		go s.missWorker(job)
	}
}

// replyBufSize is the capacity of a miss worker's reply buffer: room for a reply to a client
// with EDNS's common 1,232-octet size; a larger one (TCP) is built in a buffer of its own.
const replyBufSize = 1232 + wire.OPTLen

// missJob is one client's miss as handed to a worker.
type missJob struct {
	pkt  []byte
	cl   client
	send func([]byte)
}

// maxIdleWorkersPerProc bounds the idle miss workers, per GOMAXPROCS: enough for the misses an
// app's fan-out keeps in flight at once, few enough that a stub in every pod parks no more than a
// few dozen goroutines, whose stacks the GC shrinks while they wait. Measured in the peer
// benchmark's concurrent miss run (10 clients, GOMAXPROCS 1): with 4, the workers past the cap
// ended and their successors grew new stacks, still 4 % of the stub's CPU in stack growth (perf);
// with 16, 0.1 %, and +3.9 % misses per CPU-second.
const maxIdleWorkersPerProc = 16

// missWorker resolves job, then waits for the next miss while fewer than maxIdle workers are
// idle, and otherwise ends; Shutdown ends the idle ones. A miss handed to a worker that has
// resolved misses before runs on the stack the earlier ones grew to miekg/dns's depth: a
// goroutine started per miss began on a small stack and grew it (runtime.morestack and
// copystack) on every miss, ~6 % of the stub's CPU in the peer benchmark's miss runs (perf,
// issue 12 item 5). The GC halves an idle worker's stack when it uses under a quarter of it,
// so a worker that waited through a GC grows once again on its next miss.
func (s *Server) missWorker(job missJob) {
	defer s.workers.Done()
	// The worker's reply buffer, reused by every miss it resolves: send writes the reply out
	// before it returns, or copies it (replyOrder), so no reply outlives its miss. A fresh 1 KiB
	// buffer per miss was the largest of its allocations (issue 12 item 5).
	buf := make([]byte, 0, replyBufSize)
	for {
		s.miss(job.pkt, job.cl, job.send, buf)
		job = missJob{} // hold no client's packet or reply path while idle
		if s.missIdle.Add(1) > int32(s.maxIdle) {
			s.missIdle.Add(-1)
			return
		}
		select {
		case job = <-s.missJobs:
			s.missIdle.Add(-1)
		case <-s.stop:
			s.missIdle.Add(-1)
			return
		}
	}
}

// overloaded is the reply to a miss past MaxInflight: the expired answer when the cache still has
// one inside the stale window (RFC 8767 §5 — a resolver that cannot get a fresh answer in time
// serves stale rather than fail), else SERVFAIL. No upstream query: the upstreams are the backlog.
// Found by the soak (e2e/soak): on a starved host, names whose TTL had just run out got SERVFAIL
// although their stale answers were there.
func (s *Server) overloaded(pkt []byte, proto int) ([]byte, querylog.Source) {
	var r wire.Request
	buf := make([]byte, 0, 512)
	if r.Parse(pkt) == nil && s.cfg.Cache != nil {
		if stale, ok := s.cfg.Cache.Stale(buf, &r, staleTTL); ok {
			s.cfg.Cache.StaleServed()
			return finish(stale, &r, proto), querylog.Stale
		}
	}
	return wire.AppendError(buf, &r, wire.RcodeServFail), querylog.Error
}

// miss resolves one client's cache miss on a miss worker. A panic is contained here: the client gets
// SERVFAIL unless its reply already left.
func (s *Server) miss(pkt []byte, cl client, send func([]byte), buf []byte) {
	replied := false // send runs on this goroutine: resolve calls it, never hands it on
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(panics.Miss, v)
			if !replied {
				s.replyServFail(panics.Miss, pkt, cl, send)
			}
		}
		<-s.inflight
		s.misses.Done()
	}()
	s.hook("miss")
	var resp []byte
	how := s.resolve(pkt, cl.proto, buf, func(b []byte) {
		replied = true
		send(b)
		resp = b
	})
	s.answered(cl, pkt, resp, how.src, how.up)
}

// staleTTL is the TTL of an answer served stale: RFC 8767's recommendation, long enough that
// clients do not hammer a failing upstream, short enough to pick up the real answer soon.
const staleTTL = 30

// prepare parses a client's packet into r and builds the upstream query for it, packed: the
// client's ID, opcode and CD bit, its question exactly as written (its letter case too, which the
// reply gives back to the client), and the stub's own OPT record whatever the client sent (UDP
// size wire.DefaultUDPSize, the client's DO bit, no options: over TCP the whole answer comes back
// and is cached once, and each client is then served what fits its own size). RD is always set
// (the stub's upstream is the recursive resolver), and so is AD: RFC 6840 §5.7 lets a query ask
// for the AD bit with AD=1, and an upstream may set it only when asked, so asking every time
// makes the reply (and the cache entry) the same whoever asked first; the cache and pack then
// show AD only to clients that asked for it. The client's CD bit stays as it was.
//
// The query is built from the bytes Parse checked, without a dns.Msg: unpacking every miss's
// query and packing it again cost allocations and a share of the CPU the peer benchmark's
// misses spent in miekg/dns (issue 12 item 5). An EDNS option the client sent (a cookie, a
// client subnet) is not forwarded, as before: the stub's query is its own.
func prepare(pkt []byte, r *wire.Request) ([]byte, error) {
	if err := r.Parse(pkt); err != nil {
		return nil, err
	}
	return appendQuery(make([]byte, 0, queryLen(r)), pkt, r), nil
}

// queryLen is the length of the query prepare builds for r.
func queryLen(r *wire.Request) int { return wire.HeaderLen + len(r.QName) + 4 + wire.OPTLen }

// appendQuery appends the upstream query for r, a request parsed from pkt, to dst, which must be
// empty: the query is a message of its own (see prepare).
func appendQuery(dst, pkt []byte, r *wire.Request) []byte {
	dst = append(dst[:0], pkt[:wire.HeaderLen]...)
	// The client's ID, opcode and CD bit; RD and AD set; the bits a query has no use for cleared
	// (AA, TC, RA, and Z, which RFC 1035 §4.1.1 says must be zero): a client's stray bit must not
	// make an upstream refuse the stub's query (a strict one answers FORMERR to Z=1).
	dst[2] &^= 0x06 // AA, TC
	dst[3] &^= 0xC0 // RA, Z
	wire.SetRD(dst, true)
	wire.SetAD(dst, true)
	binary.BigEndian.PutUint16(dst[4:], 1)  // QDCOUNT
	binary.BigEndian.PutUint16(dst[6:], 0)  // ANCOUNT
	binary.BigEndian.PutUint16(dst[8:], 0)  // NSCOUNT
	binary.BigEndian.PutUint16(dst[10:], 0) // ARCOUNT: AppendOPT counts its record
	dst = append(dst, pkt[wire.HeaderLen:wire.HeaderLen+len(r.QName)+4]...)
	return wire.AppendOPT(dst, wire.DefaultUDPSize, r.DO)
}

// usable reports whether an upstream reply is an answer, rather than the upstream saying it
// could not produce one (then a stale answer, if there is one, is better).
func usable(reply []byte) bool {
	rc := wire.ExtendedRcode(reply)
	return rc != wire.RcodeServFail && rc != wire.RcodeRefused
}

// result is what fetch delivers: the upstream's reply, or why there is none.
type result struct {
	reply     []byte // the upstream's reply, packed; shared with the flight's other waiters: read only
	err       error
	up        upstreamInfo // the upstream query's answering server and attempts
	coalesced bool         // the reply is an identical query's, already in flight
}

// outcome is where resolve's answer came from, for the histogram and the query log.
type outcome struct {
	src querylog.Source // Miss, Coalesced, Stale or Error
	up  upstreamInfo
}

// resolve answers a cache miss through the upstreams. pkt is the caller's own copy of the query.
//
// When the cache still holds an expired answer inside the stale window (RFC 8767), the upstream
// gets StaleTimeout to answer; if it fails or is slower, the stale answer goes out and the
// upstream query carries on in the background to refresh the cache. For StaleFastWindow after
// such a failure, further stale-eligible misses get their stale answer at once (still refreshed
// in the background): a lookup that walks the search list makes several misses one after
// another, and paying StaleTimeout for each would add up to the client's own timeout. Every
// upstream believed down means the stale answer at once, and no upstream query.
//
// resolve builds the reply in buf (appending past its capacity when it must), calls send exactly
// once, before it returns, and returns where the answer came from. send must not keep the reply:
// buf is the caller's, reused for the next miss.
func (s *Server) resolve(pkt []byte, proto int, buf []byte, send func([]byte)) (how outcome) {
	var r wire.Request
	buf = buf[:0]
	q, err := prepare(pkt, &r)
	if err != nil {
		send(wire.AppendError(buf, &r, wire.RcodeFormErr))
		return outcome{src: querylog.Error}
	}
	var stale []byte
	if s.cfg.Cache != nil { // Stale finds nothing when the cache's StaleWindow is 0
		stale, _ = s.cfg.Cache.Stale(nil, &r, staleTTL)
	}
	if stale != nil && !s.cfg.Forwarder.Healthy() {
		// Every upstream is known down: answer stale at once and send nothing. The forwarder's
		// probes notice the upstream's return; the next miss after that refreshes the entry.
		// Refreshing on every stale answer would only add load to a cluster DNS that is
		// struggling or restarting.
		s.cfg.Cache.StaleServed()
		send(finish(stale, &r, proto))
		return outcome{src: querylog.Stale}
	}
	start := time.Now()
	var res result
	answered := true // res is the upstream's result, not a stale deadline
	if stale == nil {
		// Nothing to answer in its place: the query goes out from this goroutine. One of its
		// own would cost a new stack grown to miekg/dns's depth and two more hand-offs per miss
		// (the peer benchmark's concurrent misses, pprof: stack growth alone was a tenth of the
		// stub's CPU).
		res = s.fetchNow(&r, q, panics.Miss, true)
	} else {
		wait := s.cfg.StaleTimeout
		if start.UnixNano() < s.staleFast.Load() {
			wait = 0 // the upstreams just failed to answer in time: do not make this client wait too
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case res = <-s.fetch(&r, q, panics.Miss, true):
		case <-t.C:
			answered = false
			if start.UnixNano() >= s.staleFast.Load() {
				// Only a real wait renews the window: once the upstreams are back, the background
				// refreshes turn the stale entries into fresh ones and the window lapses.
				s.staleFast.Store(time.Now().Add(s.cfg.StaleFastWindow).UnixNano())
			}
		}
	}
	if answered {
		forwardDuration.Observe(time.Since(start).Seconds())
		if errors.Is(res.err, errFresh) {
			// The answer landed between the hit check and the flight check: it is a hit now.
			// (Evicted again in those microseconds, it counts as a failed upstream query.)
			if resp, st := s.cfg.Cache.Lookup(buf, &r); st != cache.Miss {
				send(finish(resp, &r, proto))
				return outcome{src: querylog.Hit}
			}
		}
		how.up = res.up
		if res.err == nil && (stale == nil || usable(res.reply)) {
			src := querylog.Miss
			if res.coalesced {
				src = querylog.Coalesced
			}
			// The reply as the cache stored it, TTLs capped, exactly as its next hit will be;
			// pack renders what the cache keeps no entry for (REFUSED, a truncated reply, ...).
			if s.cfg.Cache != nil {
				if out, ok := s.cfg.Cache.Serve(buf, &r); ok {
					send(finish(out, &r, proto))
					return outcome{src: src, up: res.up}
				}
			}
			out, ok := packWire(res.reply, &r, proto, buf)
			var err error
			if !ok {
				out, err = pack(res.reply, &r, buf)
			}
			if err == nil {
				send(withExtendedRcode(finish(out, &r, proto), &r, res.reply))
				return outcome{src: src, up: res.up}
			}
			s.log.Warn().Err(err).Str("qname", qname(&r)).Msg("cannot pack the upstream's reply")
		} else if res.err != nil {
			s.log.Debug().Err(res.err).Str("qname", qname(&r)).Msg("no upstream answered")
		}
		if stale != nil {
			s.staleFast.Store(time.Now().Add(s.cfg.StaleFastWindow).UnixNano())
		}
	}
	if stale != nil {
		s.cfg.Cache.StaleServed()
		send(finish(stale, &r, proto))
		how.src = querylog.Stale
		return how
	}
	send(wire.AppendError(buf, &r, wire.RcodeServFail))
	how.src = querylog.Error
	return how
}

// fetch sends q upstream (coalesced with identical queries in flight) on its own goroutine,
// stores a usable reply in the cache, and delivers the result on the channel. The query
// outlives a caller that stopped waiting (stale answer sent): it refreshes the cache. A panic
// (in the forwarder, the coalescing or the cache) is recorded at where and delivered as
// errPanicked. With skipFresh, a question whose answer is fresh in the cache by the time its
// flight would start is not asked: the result is errFresh (see coalesce). For a client's miss
// (where is panics.Miss) whose answer says the search walk goes on, the search-path prefetch
// starts its queries before the result is delivered — a few microseconds of the client's time —
// so that the client's next step, sent once it has this answer, finds them in flight.
func (s *Server) fetch(r *wire.Request, q []byte, where panics.Where, skipFresh bool) <-chan result {
	out := make(chan result, 1)
	s.misses.Add(1)
	go func() {
		defer s.misses.Done()
		out <- s.fetchNow(r, q, where, skipFresh)
	}()
	return out
}

// fetchNow is fetch on the caller's goroutine, for a caller that waits for the reply whatever
// it takes (up to the forwarder's MaxExchangeTime).
func (s *Server) fetchNow(r *wire.Request, q []byte, where panics.Where, skipFresh bool) (res result) {
	walk := false
	defer func() {
		if v := recover(); v != nil {
			s.panicLog.Record(where, v)
			res, walk = result{err: errPanicked}, false
		}
		if walk {
			s.searchPrefetch(q, r) // recovers its own panics
		}
	}()
	ctx := s.missCtx.get(s.cfg.Forwarder.MaxExchangeTime())
	s.hook("fetch")
	var up upstreamInfo
	reply, leader, err := s.coalesce(ctx, flightKey(r), q, r, skipFresh, &up)
	// Only the query that went upstream speculates: its followers asked the same question,
	// and one prefetch per answer is enough.
	walk = err == nil && leader && where == panics.Miss && walkContinues(r.QType, reply)
	return result{reply: reply, err: err, up: up, coalesced: !leader}
}

// pack renders the upstream's reply for the client when the cache keeps no entry for it
// (REFUSED, a truncated reply, a TTL of 0, no cache): its ID, its question with its own letter
// case, its RD and CD bits, the upstream's AD bit only if the client asked for it with AD or DO
// (RFC 6840 §5.7–5.8; prepare always asks), and no OPT record (finish adds the client's own).
// It unpacks and packs with miekg/dns: a rare path, and one that must accept whatever the
// upstream's reply holds. reply is only read.
func pack(reply []byte, r *wire.Request, buf []byte) ([]byte, error) {
	var m dns.Msg
	if err := m.Unpack(reply); err != nil {
		return nil, err
	}
	name, _, err := dns.UnpackDomainName(r.Packet, wire.HeaderLen)
	if err != nil {
		return nil, err
	}
	m.Id = r.ID
	m.Response = true
	m.RecursionDesired = r.RD
	m.CheckingDisabled = r.CD
	m.AuthenticatedData = m.AuthenticatedData && (r.AD || r.DO)
	m.Question = []dns.Question{{Name: name, Qtype: r.QType, Qclass: r.QClass}}
	extra := m.Extra[:0]
	for _, rr := range m.Extra {
		if rr.Header().Rrtype != dns.TypeOPT {
			extra = append(extra, rr)
		}
	}
	m.Extra = extra
	m.Rcode = wire.HeaderRcode(m.Rcode) // an extended rcode only means something with the upstream's OPT
	m.Compress = true
	return m.PackBuffer(buf)
}

// packWire is pack in place of miekg/dns for the common reply it does not cache (a TTL of 0, as
// CoreDNS's erratic and some external zones give; REFUSED; NOERROR without records): the
// upstream's octets copied into buf, with the client's ID, question letter case, RD and CD bits,
// AD only as pack sets it, and the OPT record at the end of the additional section cut off
// (ARCOUNT lowered; its extended rcode bits go with it, as pack's header-only rcode does). ok is
// false where only pack can do it: an OPT that is not the last record, records that do not walk to
// the message's end, a question other than r's, or a UDP reply larger than the client's size
// (pack compresses names; the upstream's octets may not be, and must not lose records to
// truncation that CoreDNS's compressed UDP reply would keep).
func packWire(reply []byte, r *wire.Request, proto int, buf []byte) (out []byte, ok bool) {
	n := len(r.QName)
	if len(reply) < wire.HeaderLen+n+4 || wire.Count(reply, wire.Question) != 1 ||
		!wire.EqualFoldName(reply[wire.HeaderLen:wire.HeaderLen+n], r.QName) {
		return nil, false
	}
	end, ar := len(reply), wire.Count(reply, wire.Additional)
	it := wire.Records(reply)
	for it.Next() {
		if rr := it.RR(); rr.Type == wire.TypeOPT {
			if rr.Section != wire.Additional || rr.End != len(reply) {
				return nil, false
			}
			end = rr.Off
			ar--
		}
	}
	if it.Err() != nil || it.Offset() != len(reply) {
		return nil, false
	}
	if proto == protoUDP {
		room := r.UDPSize
		if r.HasEDNS {
			room -= wire.OPTLen
		}
		if end > room {
			return nil, false
		}
	}
	out = append(buf[:0], reply[:end]...)
	wire.SetID(out, r.ID)
	binary.BigEndian.PutUint16(out[10:], uint16(ar))
	wire.SetRD(out, r.RD)
	wire.SetCD(out, r.CD)
	wire.SetAD(out, wire.IsAuthentic(reply) && (r.AD || r.DO))
	copy(out[wire.HeaderLen:], r.QName)
	return out, true
}

// withExtendedRcode gives resp, the reply to r built from the upstream's reply, the upper rcode
// bits the upstream's OPT record carried (RFC 6891 §6.1.3: BADVERS 16, BADCOOKIE 23, ...), in
// the OPT that finish appended for a client with EDNS; pack and packWire keep only the header's
// 4 bits, and without this a BADCOOKIE reached the client as YXRRSET. A client without EDNS
// gets the header's bits alone, as from CoreDNS, which strips the OPT for such a client.
func withExtendedRcode(resp []byte, r *wire.Request, reply []byte) []byte {
	if !r.HasEDNS || len(resp) < wire.HeaderLen+wire.OPTLen {
		return resp
	}
	if ext := wire.ExtendedRcode(reply) >> 4; ext != 0 {
		resp[len(resp)-wire.OPTLen+5] = byte(ext) // the OPT's TTL field: extended rcode, version, flags
	}
	return resp
}

// qname is r's question name in presentation form, for log lines.
func qname(r *wire.Request) string {
	name, _, err := dns.UnpackDomainName(r.Packet, wire.HeaderLen)
	if err != nil {
		return "?"
	}
	return name
}
