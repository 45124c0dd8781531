package cache

import (
	"encoding/binary"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// SetWire stores reply, the upstream's reply to r in wire form, under the rules of Set: everything
// Set's doc says holds for SetWire, with reply in the place of msg. reply is neither retained nor
// modified: the entry copies it.
//
// A typical reply is judged and stored from its octets, without unpacking or re-packing: the
// header and question are read in place, the records walked, the hop-by-hop records (OPT, TSIG,
// SIG) cut off the end of the additional section, and the names compressed again as Set's
// miekg/dns packing compresses them (wire.Compress), whatever compression the upstream used or
// did not use (CoreDNS does not compress over TCP): the entry is no longer than Set's, and
// wire.Truncate keeps as many records in a client's UDP size. The whole rcode takes the last
// OPT record's upper bits, as miekg/dns's Msg.Rcode does. A reply that reading in place cannot
// vouch for is unpacked with miekg/dns and stored as Set stores it (the same result, slower): a
// hop-by-hop record before another additional record, a compressed question name, a question
// count above 1, records that do not end exactly at the message's end (miekg/dns forgives counts
// above the records present and trailing octets), RDATA of a type not checked here (anything but
// A, AAAA, NS, CNAME, PTR, DNAME, MX, SRV, SOA, TXT and the types miekg/dns does not know, RFC
// 3597; RRSIG, for one, is unpacked), a compression pointer into the header or a TTL field
// (octets a hit rewrites), more than maxWireCompress octets, or a reply wire.Compress refuses
// (one that compressing would lengthen, such as an SRV target the upstream compressed against
// RFC 2782; a name in a hop-by-hop record it cannot read). A reply miekg/dns cannot unpack is
// not cached, unless its only fault is in the hop-by-hop records SetWire cuts off (an OPT option
// or a TSIG miekg/dns rejects, but for its algorithm name, which wire.Compress reads): those are
// neither stored nor served.
func (c *Cache) SetWire(r *wire.Request, reply []byte) {
	e, done := c.buildWire(r, reply)
	if !done {
		var msg dns.Msg
		if msg.Unpack(reply) != nil {
			return
		}
		e = c.build(r, &msg)
	}
	c.insert(e)
}

// stackRRs is how many records buildWire locates without allocating; a reply with more costs an
// allocation more.
const stackRRs = 32

// buildWire builds SetWire's entry from reply in place. done is false when the octets do not
// decide it and the reply must go through miekg/dns (build); with done true, a nil entry means the
// reply is not cached, as Set would decide for the message miekg/dns unpacks from it.
func (c *Cache) buildWire(r *wire.Request, reply []byte) (e *entry, done bool) {
	// Decisions on the header alone hold whatever follows: miekg/dns either fails to unpack the
	// message or reads the same header, and Set refuses it.
	if !validRequest(r) || len(reply) < wire.HeaderLen {
		return nil, true
	}
	if !wire.IsResponse(reply) || wire.IsTruncated(reply) || opcode(reply) != dns.OpcodeQuery || !c.cacheableRcode(wire.Rcode(reply)) {
		return nil, true
	}
	switch wire.Count(reply, wire.Question) {
	case 0:
		return nil, true
	case 1:
	default:
		return nil, false // miekg/dns reads fewer questions than counted when the message ends early
	}
	n := len(r.QName)
	if q := wire.HeaderLen + n; len(reply) < q+4 || !wire.EqualFoldName(reply[wire.HeaderLen:q], r.QName) {
		// Another name, or the same one behind a compression pointer (which miekg/dns follows).
		return nil, !compressed(reply, wire.HeaderLen)
	} else if binary.BigEndian.Uint16(reply[q:]) != r.QType || binary.BigEndian.Uint16(reply[q+2:]) != r.QClass {
		return nil, true
	}
	if len(reply) > 65535 {
		return nil, false // more than an entry holds; miekg/dns may compress it to fit
	}

	var stack [stackRRs]wire.RR
	rrs := stack[:0]
	cut, hops, ext := -1, 0, 0
	it := wire.Records(reply)
	for it.Next() {
		x := it.RR()
		if x.Section == wire.Additional && hopByHop(x.Type) {
			if cut < 0 {
				cut = x.Off
			}
			hops++
			if x.Type == wire.TypeOPT {
				// miekg/dns takes the extended rcode from the last OPT record (Msg.IsEdns0).
				ext = int(reply[x.TTLOff]) << 4
			}
			continue
		}
		if cut >= 0 || x.Type == wire.TypeOPT {
			return nil, false // a hop-by-hop record that is not at the end, or an OPT elsewhere
		}
		rrs = append(rrs, x)
	}
	if it.Err() != nil || it.Offset() != len(reply) {
		return nil, false // miekg/dns reads some messages the walk rejects (counts that lie, trailing octets)
	}
	if ext != 0 {
		return nil, true // the whole rcode is none of the cached ones
	}
	if cut < 0 {
		cut = len(reply)
	}
	b := reply[:cut]
	for _, x := range rrs {
		if !unpackable(b, x, rrs) {
			return nil, false
		}
	}
	// The entry is built from the reply compressed as Set compresses it: an upstream that does
	// not compress (CoreDNS over TCP) would otherwise make entries up to twice as long, and
	// Truncate fit fewer records in a client's UDP size than CoreDNS itself does. The whole reply
	// is compressed, on the stack, and the hop-by-hop records cut off the result: pointers lead
	// only backwards, so no record kept points into them. A longer reply takes the miekg/dns path.
	var out []byte
	var ok bool
	switch {
	case len(reply) <= smallWireCompress:
		// Go zeroes a stack buffer whole: a small one for the usual reply saves ~100 ns.
		var buf [smallWireCompress]byte
		out, ok = wire.Compress(buf[:0], reply)
	case len(reply) <= maxWireCompress:
		var buf [maxWireCompress]byte
		out, ok = wire.Compress(buf[:0], reply)
	}
	if !ok {
		return nil, false
	}
	m := out
	if hops > 0 {
		m = out[:skipRecords(out, len(rrs))]
		binary.BigEndian.PutUint16(m[10:], uint16(wire.Count(reply, wire.Additional)-hops))
	}
	// The same records, located anew in the entry.
	e = newEntry(len(m), len(rrs))
	copy(e.msg(), m)
	rrs = rrs[:0]
	for it := wire.Records(e.msg()); it.Next(); {
		rrs = append(rrs, it.RR())
	}
	return c.fillIn(e, r, rrs, wire.Rcode(reply)), true
}

// skipRecords returns the offset just past the question and the first n records of msg, a
// message wire.Compress wrote (so well-formed, one question). It does not use wire.RecordIter,
// which would move msg, SetWire's stack buffer, to the heap.
func skipRecords(msg []byte, n int) int {
	off, _ := wire.SkipName(msg, wire.HeaderLen)
	off += 4
	for range n {
		off, _ = wire.SkipName(msg, off)
		off += 10 + int(binary.BigEndian.Uint16(msg[off+8:]))
	}
	return off
}

// maxWireCompress is the longest reply that SetWire compresses on the stack: 4 KiB holds all
// but the largest answers (40 A records are 1,226 octets uncompressed). Replies up to
// smallWireCompress octets use a smaller buffer.
const (
	maxWireCompress   = 4096
	smallWireCompress = 512
)

func opcode(msg []byte) int { return int(msg[2]>>3) & 0xF }

// hopByHop reports whether an additional record of type t is about the transport between two
// hosts, not the data: OPT (RFC 6891 §6.1.1), TSIG (RFC 8945 §5.1) and SIG(0) (RFC 2931 §3).
// Set drops them; the server adds its own OPT per client.
func hopByHop(t uint16) bool {
	return t == dns.TypeOPT || t == dns.TypeTSIG || t == dns.TypeSIG
}

// compressed reports whether the name at msg[off] reaches a compression pointer before its end.
func compressed(msg []byte, off int) bool {
	for off < len(msg) {
		c := msg[off]
		switch {
		case c == 0:
			return false
		case c&0xC0 == 0xC0:
			return true
		case c&0xC0 != 0:
			return false
		}
		off += 1 + int(c)
	}
	return false
}

// unpackable reports whether miekg/dns unpacks x, a record of b, to the same record in every
// answer served from b: owner name and RDATA read as miekg/dns reads them (UnpackRRWithHeader: the
// RDATA must end exactly at RDLENGTH), and compression pointers that lead only to octets a hit
// never patches (rrs holds the records whose TTLs it patches). It is strict where miekg/dns is
// lenient (an SOA or MX cut short): such a record goes to miekg/dns, and Set's checks decide.
func unpackable(b []byte, x wire.RR, rrs []wire.RR) bool {
	if nameEnd(b, x.Off, rrs) < 0 {
		return false
	}
	start, end := x.End-len(x.RData), x.End
	// miekg/dns reads names in RDATA from the message cut at the RDATA's end.
	rd := b[:end]
	switch x.Type {
	case dns.TypeA:
		return len(x.RData) == 4
	case dns.TypeAAAA:
		return len(x.RData) == 16
	case dns.TypeNS, dns.TypeCNAME, dns.TypePTR, dns.TypeDNAME:
		return nameEnd(rd, start, rrs) == end
	case dns.TypeMX:
		return len(x.RData) > 2 && nameEnd(rd, start+2, rrs) == end
	case dns.TypeSRV:
		return len(x.RData) > 6 && nameEnd(rd, start+6, rrs) == end
	case dns.TypeSOA:
		o := nameEnd(rd, start, rrs)
		if o < 0 {
			return false
		}
		o = nameEnd(rd, o, rrs)
		return o >= 0 && o+20 == end // SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM
	case dns.TypeTXT:
		o := start
		for o < end {
			o += 1 + int(b[o])
		}
		return start < end && o == end
	}
	// A type miekg/dns does not know it keeps as opaque octets (RFC 3597), which always unpack.
	_, known := dns.TypeToRR[x.Type]
	return !known
}

// maxPointers is how many compression pointers miekg/dns follows in one name.
const maxPointers = (maxName+1)/2 - 2

// nameEnd returns the offset just past the name at msg[off], or -1 when miekg/dns's
// UnpackDomainName would fail on it: a label or pointer past msg, a reserved label type (RFC 6891
// §5), more than 255 octets, more than maxPointers pointers. It also fails when a pointer leads to
// octets in the header or in a TTL field of rrs, which a hit rewrites: the name would then depend
// on the client's ID or the entry's age.
func nameEnd(msg []byte, off int, rrs []wire.RR) int {
	budget, ptrs, end := maxName, 0, -1
	for {
		if off >= len(msg) {
			return -1
		}
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if ptrs > 0 && patched(off, off+1+c, rrs) {
				return -1
			}
			off++
			if c == 0 {
				if ptrs == 0 {
					end = off
				}
				return end
			}
			if off+c > len(msg) {
				return -1
			}
			if budget -= c + 1; budget <= 0 {
				return -1
			}
			off += c
		case 0xC0:
			if off+2 > len(msg) || ptrs > 0 && patched(off, off+2, rrs) {
				return -1
			}
			if ptrs == 0 {
				end = off + 2
			}
			if ptrs++; ptrs > maxPointers {
				return -1
			}
			off = (c&^0xC0)<<8 | int(msg[off+1])
		default:
			return -1
		}
	}
}

// patched reports whether a hit may rewrite any octet of msg[lo:hi]: in the header, or in the
// TTL field of one of rrs (which are in message order). The question name's letters change case
// too, which changes no name.
func patched(lo, hi int, rrs []wire.RR) bool {
	if lo < wire.HeaderLen {
		return true
	}
	l, h := 0, len(rrs)
	for l < h { // the first record whose TTL field ends after lo
		m := int(uint(l+h) >> 1)
		if rrs[m].TTLOff+4 <= lo {
			l = m + 1
		} else {
			h = m
		}
	}
	return l < len(rrs) && rrs[l].TTLOff < hi
}
