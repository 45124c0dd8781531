package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// kind is one sort of lookup in the load mix.
type kind int

const (
	kHit      kind = iota // one of hitNames names, A, over UDP: a cache hit once warm
	kAAAA                 // the same names, AAAA: NODATA (the zone has no AAAA), cached negatively
	kHitTCP               // a hit name over TCP, as a client with use-vc
	kMiss                 // a unique name under the wildcard: always a cache miss
	kNX                   // a unique name that does not exist: a miss answered NXDOMAIN
	kNXRepeat             // one of 20 names that do not exist: negative cache hits
	kBig                  // big.soak.test, bigRecords A records: truncated over UDP, then TCP
	nKinds
)

var kindNames = [nKinds]string{"hit", "aaaa", "hit-tcp", "miss", "nxdomain", "nxdomain-repeat", "big"}

func (k kind) String() string { return kindNames[k] }

// mix is the share of each kind, in percent: mostly hits, as a pod's traffic is.
var mix = [nKinds]int{kHit: 50, kAAAA: 15, kHitTCP: 5, kMiss: 12, kNX: 6, kNXRepeat: 6, kBig: 6}

const (
	hitNames   = 100
	bigRecords = 40
	zone       = "soak.test."
	// The resolver's behaviour initc configures (options timeout:1 attempts:3): each attempt
	// waits 1 s, three attempts, then the lookup fails.
	attemptTimeout = time.Second
	attempts       = 3
)

// outcome is how one lookup ended, from the application's side.
type outcome int

const (
	oOK       outcome = iota
	oServfail         // the stub answered SERVFAIL
	oTimeout          // no answer after every attempt
	oWrong            // an answer, but not the one the zone holds (rcode or records)
	oError            // the client could not send (socket error)
	nOutcomes
)

var outcomeNames = [nOutcomes]string{"ok", "servfail", "timeout", "wrong", "error"}

func (o outcome) String() string { return outcomeNames[o] }

// lookup is one lookup's record.
type lookup struct {
	kind       kind
	name       string
	start, end time.Time
	outcome    outcome
	attempts   int // attempts sent, UDP and TCP together
	detail     string
}

func hitName(i int) string { return fmt.Sprintf("h%03d.%s", i, zone) }
func hitIP(i int) net.IP   { return net.IPv4(10, 0, byte(i>>8), byte(i)) }

// zoneFile is the upstream's only zone: hit names with a short TTL (so that they expire,
// are prefetched and are served stale during the soak), the big name, a wildcard for the
// unique misses, and a negative TTL of 10 s (SOA MINIMUM, RFC 2308).
func zoneFileText() string {
	s := fmt.Sprintf("$ORIGIN %s\n$TTL 10\n", zone)
	s += fmt.Sprintf("@ 10 IN SOA ns.%[1]s admin.%[1]s 1 7200 3600 1209600 10\n@ IN NS ns\nns IN A 10.0.0.53\n", zone)
	for i := range hitNames {
		s += fmt.Sprintf("h%03d IN A %s\n", i, hitIP(i))
	}
	for i := range bigRecords {
		s += fmt.Sprintf("big IN A 10.1.0.%d\n", i+1)
	}
	s += "*.miss 30 IN A 10.9.9.9\n"
	return s
}

// question picks the name and type of lookup number seq of kind k.
func question(k kind, seq int64, rng *rand.Rand) (string, uint16) {
	switch k {
	case kHit, kHitTCP:
		return hitName(rng.IntN(hitNames)), dns.TypeA
	case kAAAA:
		return hitName(rng.IntN(hitNames)), dns.TypeAAAA
	case kMiss:
		return fmt.Sprintf("u%d.miss.%s", seq, zone), dns.TypeA
	case kNX:
		return fmt.Sprintf("nx%d.%s", seq, zone), dns.TypeA
	case kNXRepeat:
		return fmt.Sprintf("nxr%02d.%s", rng.IntN(20), zone), dns.TypeA
	default:
		return "big." + zone, dns.TypeA
	}
}

// verify says whether r is the answer the zone holds for a lookup of kind k.
func verify(k kind, name string, r *dns.Msg) (outcome, string) {
	if r.Rcode == dns.RcodeServerFailure {
		return oServfail, "SERVFAIL"
	}
	want := dns.RcodeSuccess
	if k == kNX || k == kNXRepeat {
		want = dns.RcodeNameError
	}
	if r.Rcode != want {
		return oWrong, "rcode " + dns.RcodeToString[r.Rcode]
	}
	var as []net.IP
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			as = append(as, a.A)
		}
	}
	wantN := map[kind]int{kHit: 1, kHitTCP: 1, kMiss: 1, kBig: bigRecords}[k]
	if len(as) != wantN || len(r.Answer) != wantN {
		return oWrong, fmt.Sprintf("%d answers (%d A), want %d A", len(r.Answer), len(as), wantN)
	}
	switch k {
	case kHit, kHitTCP:
		var i int
		if _, err := fmt.Sscanf(name, "h%03d.", &i); err != nil || !as[0].Equal(hitIP(i)) {
			return oWrong, fmt.Sprintf("A %s", as[0])
		}
	case kMiss:
		if !as[0].Equal(net.IPv4(10, 9, 9, 9)) {
			return oWrong, fmt.Sprintf("A %s", as[0])
		}
	}
	return oOK, ""
}

// resolve does what a libc resolver does with resolv.conf's timeout:1 attempts:3: the query
// over UDP from one socket, each attempt waiting 1 s; a truncated reply switches to TCP (one
// connection per attempt). tcp starts over TCP.
func resolve(server netip.AddrPort, name string, qtype uint16, tcp bool) (*dns.Msg, int, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.Id = dns.Id()
	pkt, err := q.Pack()
	if err != nil {
		return nil, 0, err
	}
	var udp *net.UDPConn
	defer func() {
		if udp != nil {
			udp.Close()
		}
	}()
	var lastErr error
	sent := 0
	for attempt := 0; attempt < attempts; attempt++ {
		sent++
		var r *dns.Msg
		if tcp {
			r, err = exchangeTCP(server, pkt, q)
		} else {
			if udp == nil {
				if udp, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server)); err != nil {
					return nil, sent, err
				}
			}
			r, err = exchangeUDP(udp, pkt, q)
			if err == nil && r.Truncated {
				// Not an attempt of its own: the resolver goes to TCP at once.
				tcp = true
				attempt--
				continue
			}
		}
		if err == nil {
			return r, sent, nil
		}
		lastErr = err
		if !isTimeout(err) {
			// A refused or reset connection: glibc tries the next attempt at once.
			continue
		}
	}
	return nil, sent, lastErr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// exchangeUDP sends pkt and waits up to attemptTimeout for a reply with q's ID and question;
// anything else on the socket is ignored, as resolvers do.
func exchangeUDP(c *net.UDPConn, pkt []byte, q *dns.Msg) (*dns.Msg, error) {
	if _, err := c.Write(pkt); err != nil {
		return nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(attemptTimeout))
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if r, ok := matches(buf[:n], q); ok {
			return r, nil
		}
	}
}

func exchangeTCP(server netip.AddrPort, pkt []byte, q *dns.Msg) (*dns.Msg, error) {
	deadline := time.Now().Add(attemptTimeout)
	c, err := net.DialTimeout("tcp", server.String(), attemptTimeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(frame(pkt)); err != nil {
		return nil, err
	}
	for {
		msg, err := readFrame(c)
		if err != nil {
			return nil, err
		}
		if r, ok := matches(msg, q); ok {
			return r, nil
		}
	}
}

func matches(b []byte, q *dns.Msg) (*dns.Msg, bool) {
	r := new(dns.Msg)
	if r.Unpack(b) != nil || !r.Response || r.Id != q.Id || len(r.Question) != 1 {
		return nil, false
	}
	return r, r.Question[0].Qtype == q.Question[0].Qtype && dns.CanonicalName(r.Question[0].Name) == dns.CanonicalName(q.Question[0].Name)
}

// loadgen sends the lookup mix at a bounded rate and hands each finished lookup to record.
type loadgen struct {
	server   netip.AddrPort
	rate     int // lookups per second
	maxInFly int
	record   func(lookup)
	seq      atomic.Int64
	skipped  atomic.Int64 // lookups not started: maxInFly were still in flight
}

// run sends lookups until ctx ends, then waits for those in flight.
func (g *loadgen) run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, g.maxInFly)
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	var cum [nKinds]int
	total := 0
	for k := range nKinds {
		total += mix[k]
		cum[k] = total
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	var started int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			due := int64(now.Sub(start).Seconds() * float64(g.rate))
			for ; started < due; started++ {
				select {
				case sem <- struct{}{}:
				default:
					g.skipped.Add(1)
					continue
				}
				pick := rng.IntN(total)
				k := kind(sort.SearchInts(cum[:], pick+1))
				seq := g.seq.Add(1)
				name, qtype := question(k, seq, rng)
				wg.Go(func() {
					defer func() { <-sem }()
					g.record(g.one(k, name, qtype))
				})
			}
		}
	}
}

func (g *loadgen) one(k kind, name string, qtype uint16) lookup {
	l := lookup{kind: k, name: name, start: time.Now()}
	r, sent, err := resolve(g.server, name, qtype, k == kHitTCP)
	l.end, l.attempts = time.Now(), sent
	switch {
	case err != nil && isTimeout(err):
		l.outcome, l.detail = oTimeout, err.Error()
	case err != nil:
		l.outcome, l.detail = oError, err.Error()
	default:
		l.outcome, l.detail = verify(k, name, r)
	}
	return l
}

// prefill asks n unique names at concurrency workers, so that the cache is full before the
// first sample: RSS then measures a full cache at both ends, not the cache filling up.
func prefill(ctx context.Context, server netip.AddrPort, n, workers int) error {
	var next atomic.Int64
	var failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				r, _, err := resolve(server, fmt.Sprintf("p%d.miss.%s", i, zone), dns.TypeA, false)
				if err != nil || r.Rcode != dns.RcodeSuccess {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f > int64(n)/100 {
		return fmt.Errorf("prefill: %d of %d lookups failed before any fault", f, n)
	}
	return ctx.Err()
}

// stallStats counts the TCP clients that connect and stall.
type stallStats struct {
	opened       atomic.Int64
	closedByStub atomic.Int64
	notClosed    atomic.Int64 // still open after stallHold: the stub never closed it
	maxWaitNs    atomic.Int64 // longest time from the stall to the stub's close
}

// stallHold is how long a stalled client waits for the stub to close its connection; the
// stub's PODNS_TCP_IDLE_TIMEOUT is 10 s by default.
const stallHold = 30 * time.Second

// stallers keeps n TCP connections to server stalled: each sends a partial message — one byte
// of the length prefix, or a whole prefix and part of the message — then waits for the stub
// to close it, and starts over.
func stallers(ctx context.Context, server netip.AddrPort, n int, st *stallStats) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for round := 0; ctx.Err() == nil; round++ {
				stallOnce(ctx, server, (i+round)%2 == 0, st)
			}
		})
	}
	wg.Wait()
}

func stallOnce(ctx context.Context, server netip.AddrPort, halfPrefix bool, st *stallStats) {
	c, err := net.DialTimeout("tcp", server.String(), time.Second)
	if err != nil {
		// The stub is at its connection limit or gone: the lookups and the PID check say which.
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		return
	}
	st.opened.Add(1)
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	partial := []byte{0}
	if !halfPrefix {
		partial = []byte{0, 40, 0xab, 0xcd, 0x01, 0x00}
	}
	t0 := time.Now()
	if _, err := c.Write(partial); err != nil {
		return
	}
	_ = c.SetReadDeadline(t0.Add(stallHold))
	var b [1]byte
	_, err = c.Read(b[:])
	switch {
	case ctx.Err() != nil:
	case isTimeout(err):
		st.notClosed.Add(1)
	default:
		st.closedByStub.Add(1)
		w := int64(time.Since(t0))
		for {
			m := st.maxWaitNs.Load()
			if w <= m || st.maxWaitNs.CompareAndSwap(m, w) {
				break
			}
		}
	}
}

// garbageStats counts the garbage packets and what came back.
type garbageStats struct {
	mu sync.Mutex
	// random: bytes of random length and content; replies counted by rcode, "none" when
	// nothing came back within a second.
	random map[string]int64
	// badName: a well-formed query header (QUERY, one question) followed by a name whose first
	// label byte is a reserved label type (0x40-0xbf): the README's "unreadable name", which
	// must get FORMERR or nothing.
	badName map[string]int64
	// badNameWrong lists the first few replies to badName packets other than FORMERR.
	badNameWrong []string
}

// garbage sends rate garbage packets per second over UDP until ctx ends, alternating the
// two sorts.
func garbage(ctx context.Context, server netip.AddrPort, rate int, gs *garbageStats) {
	gs.random, gs.badName = map[string]int64{}, map[string]int64{}
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var pkt []byte
		bad := i%2 == 1
		if bad {
			pkt = make([]byte, 12, 12+64)
			binary.BigEndian.PutUint16(pkt, uint16(rng.Uint32()))
			binary.BigEndian.PutUint16(pkt[4:], 1) // QDCOUNT
			pkt = append(pkt, byte(0x40+rng.IntN(0x80)))
			for range rng.IntN(60) {
				pkt = append(pkt, byte(rng.Uint32()))
			}
		} else {
			pkt = make([]byte, rng.IntN(600))
			for j := range pkt {
				pkt[j] = byte(rng.Uint32())
			}
		}
		wg.Go(func() {
			res := sendGarbage(server, pkt)
			gs.mu.Lock()
			defer gs.mu.Unlock()
			if !bad {
				gs.random[res]++
				return
			}
			gs.badName[res]++
			if res != "none" && res != "FORMERR" && len(gs.badNameWrong) < 10 {
				gs.badNameWrong = append(gs.badNameWrong, fmt.Sprintf("%x → %s", pkt, res))
			}
		})
	}
}

// sendGarbage sends pkt and names what came back: an rcode, "unparseable", or "none".
func sendGarbage(server netip.AddrPort, pkt []byte) string {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return "send error"
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		return "send error"
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return "none"
	}
	if n < 12 {
		return "unparseable"
	}
	rc := int(buf[3] & 0x0f)
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("rcode %d", rc)
}
