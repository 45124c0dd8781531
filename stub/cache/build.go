package cache

import (
	"encoding/binary"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// build packs msg into an entry for r, applying the caching rules of Set.
// It returns nil when msg must not be cached.
func (c *Cache) build(r *wire.Request, msg *dns.Msg) *entry {
	if !c.cacheable(r, msg) {
		return nil
	}
	b := packForCache(msg)
	if b == nil {
		return nil
	}
	// The question name is the first name in the packet, so it is never
	// compressed and sits at offset 12 with the same length as r.QName.
	n := len(r.QName)
	if len(b) < wire.HeaderLen+n+4 || !wire.EqualFoldName(b[wire.HeaderLen:wire.HeaderLen+n], r.QName) {
		return nil
	}
	rrs, ok := records(b)
	if !ok {
		return nil
	}
	return c.fill(r, b, rrs, msg.Rcode)
}

// fill is the part of building an entry that Set and SetWire share: it copies b, a reply to r
// already judged cacheable with rcode rcode and already stripped of hop-by-hop records, into a
// new entry, clears ID and AA there (the cache answers, not the zone), lowercases the question
// name, applies the TTL rules of Set to the records rrs (located in b, OPT left out) and keys the
// entry. b is not modified. It returns nil when a TTL rule says the reply must not be cached.
func (c *Cache) fill(r *wire.Request, b []byte, rrs []wire.RR, rcode int) *entry {
	e := newEntry(len(b), len(rrs))
	copy(e.msg(), b)
	return c.fillIn(e, r, rrs, rcode)
}

// fillIn is fill on an entry that already holds the reply, rrs located in it: SetWire locates
// them there so no record points into its stack buffer (which would move that to the heap).
func (c *Cache) fillIn(e *entry, r *wire.Request, rrs []wire.RR, rcode int) *entry {
	m := e.msg()
	wire.SetID(m, 0)
	wire.SetAA(m, false)
	n := len(r.QName)
	wire.Lower(m[wire.HeaderLen : wire.HeaderLen+n])
	var lifetime time.Duration
	if rcode == dns.RcodeServerFailure {
		lifetime = c.clampServfail(m, rrs)
	} else {
		var ok bool
		if lifetime, ok = c.clampTTLs(m, rrs, rcode == dns.RcodeNameError || !answers(rrs, r.QType)); !ok {
			return nil
		}
	}
	offs := e.ttlOffs()
	for i, x := range rrs {
		binary.NativeEndian.PutUint16(offs[2*i:], uint16(x.TTLOff))
	}
	e.nameLen = uint8(n)
	e.qtype, e.qclass = r.QType, r.QClass
	e.flags = requestFlags(r)
	e.stored = c.clock()
	e.lifetime = lifetime
	var buf [maxName + 5]byte
	_, e.hash = c.key(&buf, r.QName, r.QType, r.QClass, e.flags)
	return e
}

// cacheable reports whether msg, the reply to r, may be cached at all: a response (QR) to a
// QUERY with one question matching r's type and class, not truncated, and NOERROR, NXDOMAIN or
// (when configured) SERVFAIL.
func (c *Cache) cacheable(r *wire.Request, msg *dns.Msg) bool {
	if !validRequest(r) || msg == nil {
		return false
	}
	if !msg.Response || msg.Truncated || msg.Opcode != dns.OpcodeQuery || len(msg.Question) != 1 || !c.cacheableRcode(msg.Rcode) {
		return false
	}
	q := msg.Question[0]
	return q.Qtype == r.QType && q.Qclass == r.QClass
}

func validRequest(r *wire.Request) bool {
	return r != nil && len(r.QName) > 0 && len(r.QName) <= maxName
}

// cacheableRcode reports whether a reply with the whole (extended, RFC 6891 §6.1.3) rcode may be
// cached: NOERROR, NXDOMAIN, and SERVFAIL when Config.ServfailTTL is above 0.
func (c *Cache) cacheableRcode(rcode int) bool {
	switch rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return true
	case dns.RcodeServerFailure:
		return c.servfail > 0
	}
	return false
}

// packForCache packs msg as an entry stores it: ID 0, AA clear, compressed, without hop-by-hop
// records. nil when it cannot be packed or read back. The entry copies it into its own
// allocation of the packed length: Pack allocates for the uncompressed message, ~2,000 octets
// for a 700-octet answer.
func packForCache(msg *dns.Msg) []byte {
	// Pack a shallow copy so the caller's message is left alone.
	m := *msg
	m.Id = 0
	m.Authoritative = false // we answer from a cache, not from the zone
	m.Compress = true
	m.Extra = nil
	for _, x := range msg.Extra {
		if !hopByHop(x.Header().Rrtype) { // the server adds its own OPT per client
			m.Extra = append(m.Extra, x)
		}
	}
	b, err := m.Pack()
	if err != nil || len(b) > 65535 {
		return nil
	}
	// miekg/dns unpacks some malformed records leniently (an SOA cut short)
	// and then packs them into something it cannot read back. Such a reply
	// would be served broken for its whole lifetime: check it once here, on
	// the miss path.
	if new(dns.Msg).Unpack(b) != nil {
		return nil
	}
	return b
}

// clampServfail caps every TTL of a SERVFAIL reply at the SERVFAIL caching time (rounded up to
// whole seconds) and returns that time as the entry's lifetime.
func (c *Cache) clampServfail(b []byte, rrs []wire.RR) time.Duration {
	ceil := seconds(c.servfail + time.Second - 1)
	for _, x := range rrs {
		setTTL(b, x, min(getTTL(x), ceil))
	}
	return c.servfail
}

// clampTTLs applies the TTL floor and caps to a NOERROR or NXDOMAIN reply in b and returns the
// entry's lifetime: its lowest TTL. A negative reply (NXDOMAIN or NODATA) needs an SOA in the
// authority section, whose TTL is further capped by its MINIMUM field (RFC 2308 §5); ok is false
// when there is no SOA, no record, or a TTL of 0 — such replies are not cached.
func (c *Cache) clampTTLs(b []byte, rrs []wire.RR, negative bool) (lifetime time.Duration, ok bool) {
	soa := -1
	if negative {
		for i, x := range rrs {
			if x.Section == wire.Authority && x.Type == dns.TypeSOA && len(x.RData) >= 22 {
				soa = i
				break
			}
		}
		if soa < 0 {
			return 0, false // RFC 2308 §5: no SOA, no negative caching
		}
	}
	low := uint32(1<<31 - 1)
	for i, x := range rrs {
		ttl := getTTL(x)
		if i == soa {
			minimum := binary.BigEndian.Uint32(x.RData[len(x.RData)-4:])
			ttl = min(ttl, sane(minimum))
		}
		cap := c.maxTTL
		if negative && x.Section == wire.Authority {
			cap = c.negMaxTTL
		}
		ttl = min(max(ttl, c.minTTL), cap)
		setTTL(b, x, ttl)
		low = min(low, ttl)
	}
	if len(rrs) == 0 || low == 0 {
		return 0, false
	}
	return time.Duration(low) * time.Second, true
}

// answers reports whether the answer section holds data for qtype, which
// tells a positive reply from NODATA (possibly after a CNAME chain).
func answers(rrs []wire.RR, qtype uint16) bool {
	for _, x := range rrs {
		if x.Section == wire.Answer && (x.Type == qtype || qtype == dns.TypeANY) {
			return true
		}
	}
	return false
}

// sane treats TTLs with the top bit set as 0, as RFC 2181 §8 requires.
func sane(ttl uint32) uint32 {
	if ttl > 1<<31-1 {
		return 0
	}
	return ttl
}

func getTTL(x wire.RR) uint32                { return sane(x.TTL) }
func setTTL(b []byte, x wire.RR, ttl uint32) { binary.BigEndian.PutUint32(b[x.TTLOff:], ttl) }

// records lists the resource records of the packed message b, OPT records
// left out (their TTL field is not a TTL). ok is false when b does not walk
// to its last octet.
func records(b []byte) (rrs []wire.RR, ok bool) {
	it := wire.Records(b)
	rrs = make([]wire.RR, 0, wire.Count(b, wire.Answer)+wire.Count(b, wire.Authority)+wire.Count(b, wire.Additional))
	for it.Next() {
		if rr := it.RR(); rr.Type != wire.TypeOPT {
			rrs = append(rrs, rr)
		}
	}
	return rrs, it.Err() == nil && it.Offset() == len(b)
}
