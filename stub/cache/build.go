package cache

import (
	"encoding/binary"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// record is what build needs to know about one packed resource record.
type record struct {
	section int // 0 answer, 1 authority, 2 additional
	typ     uint16
	ttlOff  int
	rdata   []byte
}

// build packs msg into an entry for r, applying the caching rules of Set.
// It returns nil when msg must not be cached.
func (c *Cache) build(r *wire.Request, msg *dns.Msg) *entry {
	if r == nil || msg == nil || len(r.QName) == 0 || len(r.QName) > maxName {
		return nil
	}
	if msg.Truncated || msg.Opcode != dns.OpcodeQuery || len(msg.Question) != 1 {
		return nil
	}
	switch msg.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
	case dns.RcodeServerFailure:
		if c.servfail <= 0 {
			return nil
		}
	default:
		return nil
	}
	q := msg.Question[0]
	if q.Qtype != r.QType || q.Qclass != r.QClass {
		return nil
	}

	// Pack a shallow copy so the caller's message is left alone.
	m := *msg
	m.Id = 0
	m.Authoritative = false // we answer from a cache, not from the zone
	m.Compress = true
	m.Extra = nil
	for _, x := range msg.Extra {
		switch x.Header().Rrtype {
		case dns.TypeOPT, dns.TypeTSIG, dns.TypeSIG:
			// Hop-by-hop records: the server adds its own OPT per client.
		default:
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
	// The question name is the first name in the packet, so it is never
	// compressed and sits at offset 12 with the same length as r.QName.
	n := len(r.QName)
	if len(b) < wire.HeaderLen+n+4 || !equalFold(b[wire.HeaderLen:wire.HeaderLen+n], r.QName) {
		return nil
	}
	lower(b[wire.HeaderLen : wire.HeaderLen+n])
	rrs, ok := walk(b, wire.HeaderLen+n+4)
	if !ok {
		return nil
	}

	var lifetime time.Duration
	switch msg.Rcode {
	case dns.RcodeServerFailure:
		lifetime = c.servfail
		ceil := seconds(c.servfail + time.Second - 1)
		for _, x := range rrs {
			setTTL(b, x, min(getTTL(b, x), ceil))
		}
	default:
		negative := msg.Rcode == dns.RcodeNameError || !answers(rrs, r.QType)
		soa := -1
		if negative {
			for i, x := range rrs {
				if x.section == 1 && x.typ == dns.TypeSOA && len(x.rdata) >= 22 {
					soa = i
					break
				}
			}
			if soa < 0 {
				return nil // RFC 2308 §5: no SOA, no negative caching
			}
		}
		low := uint32(1<<31 - 1)
		for i, x := range rrs {
			ttl := getTTL(b, x)
			if i == soa {
				minimum := binary.BigEndian.Uint32(x.rdata[len(x.rdata)-4:])
				ttl = min(ttl, sane(minimum))
			}
			cap := c.maxTTL
			if negative && x.section == 1 {
				cap = c.negMaxTTL
			}
			ttl = min(max(ttl, c.minTTL), cap)
			setTTL(b, x, ttl)
			low = min(low, ttl)
		}
		if len(rrs) == 0 || low == 0 {
			return nil
		}
		lifetime = time.Duration(low) * time.Second
	}

	e := &entry{
		name:     b[wire.HeaderLen : wire.HeaderLen+n : wire.HeaderLen+n],
		qtype:    r.QType,
		qclass:   r.QClass,
		flags:    requestFlags(r),
		msg:      b,
		ttlOffs:  make([]uint16, len(rrs)),
		stored:   c.clock(),
		lifetime: lifetime,
	}
	for i, x := range rrs {
		e.ttlOffs[i] = uint16(x.ttlOff)
	}
	var buf [maxName + 5]byte
	_, e.hash = c.key(&buf, r.QName, r.QType, r.QClass, e.flags)
	return e
}

// answers reports whether the answer section holds data for qtype, which
// tells a positive reply from NODATA (possibly after a CNAME chain).
func answers(rrs []record, qtype uint16) bool {
	for _, x := range rrs {
		if x.section == 0 && (x.typ == qtype || qtype == dns.TypeANY) {
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

func getTTL(b []byte, x record) uint32      { return sane(binary.BigEndian.Uint32(b[x.ttlOff:])) }
func setTTL(b []byte, x record, ttl uint32) { binary.BigEndian.PutUint32(b[x.ttlOff:], ttl) }

// walk lists the resource records of the packed message b whose question
// ends at off. OPT records are skipped (their TTL field is not a TTL).
func walk(b []byte, off int) ([]record, bool) {
	counts := [3]int{
		int(binary.BigEndian.Uint16(b[6:])),
		int(binary.BigEndian.Uint16(b[8:])),
		int(binary.BigEndian.Uint16(b[10:])),
	}
	rrs := make([]record, 0, counts[0]+counts[1]+counts[2])
	for section, count := range counts {
		for range count {
			end, ok := skipName(b, off)
			if !ok || end+10 > len(b) {
				return nil, false
			}
			typ := binary.BigEndian.Uint16(b[end:])
			rdlen := int(binary.BigEndian.Uint16(b[end+8:]))
			rd := end + 10
			if rd+rdlen > len(b) {
				return nil, false
			}
			if typ != dns.TypeOPT {
				rrs = append(rrs, record{section: section, typ: typ, ttlOff: end + 4, rdata: b[rd : rd+rdlen]})
			}
			off = rd + rdlen
		}
	}
	return rrs, off == len(b)
}

// skipName returns the offset after the (possibly compressed) name at off.
func skipName(b []byte, off int) (int, bool) {
	for off < len(b) {
		c := b[off]
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return off + 1, true
			}
			off += 1 + int(c)
		case 0xC0:
			if off+2 > len(b) {
				return 0, false
			}
			return off + 2, true
		default:
			return 0, false
		}
	}
	return 0, false
}

// lower lowercases ASCII letters in place; DNS names compare case-insensitively
// over ASCII only (RFC 4343).
func lower(b []byte) {
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
}

// equalFold compares two wire names ASCII case-insensitively.
func equalFold(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
