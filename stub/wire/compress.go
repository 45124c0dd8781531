package wire

import (
	"bytes"
	"encoding/binary"
)

// Limits of Compress.
const (
	// maxPointerOffset is one past the largest offset a 14-bit compression pointer holds (RFC
	// 1035 §4.1.4).
	maxPointerOffset = 1 << 14
	// maxPointersFollowed is how many compression pointers one name may take when Compress
	// reads it: miekg/dns's limit (maxCompressionPointers), so Compress reads no name it
	// rejects for that reason.
	maxPointersFollowed = (maxNameLen+1)/2 - 2
	// suffixSlots is how many name suffixes Compress remembers as pointer targets. Past it, the
	// names written later still point to the suffixes remembered, but add none of their own.
	suffixSlots = 128
)

// Compress appends to dst a copy of msg, a whole DNS message, with its names compressed as
// miekg/dns's Msg.Pack with Compress set compresses them (RFC 1035 §4.1.4), and returns the
// extended slice. The question name, the owner name of every record and the names in the RDATA
// of NS, MD, MF, CNAME, SOA (MNAME and RNAME), MB, MG, MR, PTR, MINFO and MX become, from their
// longest suffix written earlier, a pointer to it: the types RFC 3597 §4 lets a server compress,
// the ones miekg/dns compresses. Names in the RDATA of SRV, DNAME, AFSDB, RT, KX, PX, RP, NSEC,
// NXT, RRSIG, SIG, TKEY, TSIG, LP, TALINK, NSAP-PTR, SVCB and HTTPS are written out whole (RFC
// 3597 §4 forbids compressing them; miekg/dns reads pointers there, so a pointer in msg is
// expanded) and, as in miekg/dns, later names may point into them.
//
// Suffixes match octet for octet, letter case included, as miekg/dns matches them (its
// compression map is keyed by the name as written): every name reads back exactly as it is in
// msg. Pointers lead only to names Compress wrote, at offsets below 2^14 (counted from where the
// message starts in dst), never into the header or a TTL field. Names in msg may be compressed
// already: they are read through their pointers and written again for the new layout, and
// RDLENGTH follows the RDATA's new length. Everything else is copied as it is.
//
// ok is false, and dst is returned with its length unchanged, when msg is not a message
// Compress reads whole or the result would be longer than msg: a header cut short, a section
// shorter than its count, octets after the last record, a name that runs past msg or its
// RDATA, uses a reserved label type (RFC 6891 §5), has more than 255 octets (RFC 1035 §3.1)
// or follows a compression pointer that does not point to an earlier octet or more than
// maxPointersFollowed of them, RDATA of a type above with a name that does not fit in it, and
// RDATA of a type with names Compress does not know how to find (NAPTR, HIP, IPSECKEY,
// AMTRELAY, A6). RDATA that ends before a name (an MX of 2 octets, which miekg/dns reads with
// an empty exchange) is copied, as are octets miekg/dns rejects in other ways (an A record of 3
// octets): they read back as they were.
//
// Compress allocates nothing but what growing dst takes; it is at most len(msg) octets longer.
func Compress(dst, msg []byte) ([]byte, bool) {
	base := len(dst)
	if len(msg) < HeaderLen {
		return dst, false
	}
	// out is passed along and returned, not kept in c: escape analysis then lets a caller's
	// stack buffer stay on the stack.
	c := compressor{base: base, msg: msg}
	out := append(dst, msg[:HeaderLen]...)
	off := HeaderLen
	var ok bool
	for range Count(msg, Question) {
		if out, off, ok = c.appendName(out, off, len(msg), true); !ok || off+4 > len(msg) {
			return dst[:base], false
		}
		out = append(out, msg[off:off+4]...)
		off += 4
	}
	for s := Answer; s <= Additional; s++ {
		for range Count(msg, s) {
			if out, off, ok = c.record(out, off); !ok || len(out)-base > len(msg) {
				return dst[:base], false
			}
		}
	}
	if off != len(msg) || len(out)-base > len(msg) {
		return dst[:base], false
	}
	return out, true
}

// compressor holds Compress's state: the message read and the suffixes written so far.
type compressor struct {
	msg  []byte
	base int // where the message starts in out
	// suffixes are the offsets (from base) of the name suffixes written so far, in the order
	// written, and their lengths uncompressed.
	suffixes [suffixSlots]suffix
	n        int
	// name and starts hold the name being read, uncompressed, and where its labels start; here
	// rather than in name, which would zero them for every name.
	name   [maxNameLen]byte
	starts [maxNameLen / 2]uint8
}

type suffix struct {
	off uint16
	len uint8
}

// record copies the resource record at msg[off], its names compressed, and returns where the
// next record starts in msg.
func (c *compressor) record(out []byte, off int) ([]byte, int, bool) {
	msg := c.msg
	out, off, ok := c.appendName(out, off, len(msg), true)
	// type (2) + class (2) + TTL (4) + RDLENGTH (2)
	if !ok || off+10 > len(msg) {
		return out, 0, false
	}
	typ := binary.BigEndian.Uint16(msg[off:])
	rd := off + 10
	end := rd + int(binary.BigEndian.Uint16(msg[off+8:]))
	if end > len(msg) {
		return out, 0, false
	}
	out = append(out, msg[off:rd]...)
	lenAt := len(out) - 2
	if rd == end {
		// No RDATA whatever the type: miekg/dns reads it as a record with empty fields.
		return out, end, true
	}
	l := rdataLayout(typ)
	if l.unknown {
		return out, 0, false
	}
	// miekg/dns reads RDATA that ends after any whole field, the fields left out zero: RDATA that
	// ends before a name holds no name to compress.
	o := min(rd+int(l.prefix), end)
	out = append(out, msg[rd:o]...)
	for range l.names {
		if o == end {
			break
		}
		if out, o, ok = c.appendName(out, o, end, l.compress); !ok {
			return out, 0, false
		}
	}
	out = append(out, msg[o:end]...)
	rdlen := len(out) - lenAt - 2
	if rdlen > 0xFFFF {
		return out, 0, false
	}
	binary.BigEndian.PutUint16(out[lenAt:], uint16(rdlen))
	return out, end, true
}

// layout says where the names are in a type's RDATA: names names right after prefix octets,
// the rest opaque. unknown marks a type with names elsewhere.
type layout struct {
	prefix   uint8
	names    uint8
	compress bool
	unknown  bool
}

// rdataLayout returns the layout of RDATA of type t as miekg/dns (v1.1.73, types.go) reads it.
// A type not listed holds no name: its RDATA is opaque, as any type miekg/dns does not know
// (RFC 3597 §5).
func rdataLayout(t uint16) layout {
	switch t {
	case 2, 3, 4, 5, 7, 8, 9, 12: // NS, MD, MF, CNAME, MB, MG, MR, PTR (RFC 1035 §3.3)
		return layout{names: 1, compress: true}
	case 6, 14: // SOA (MNAME, RNAME, then 20 octets), MINFO (RMAILBX, EMAILBX)
		return layout{names: 2, compress: true}
	case 15: // MX: PREFERENCE, EXCHANGE
		return layout{prefix: 2, names: 1, compress: true}
	case 39, 47, 30, 249, 250, 23: // DNAME, NSEC, NXT, TKEY, TSIG, NSAP-PTR: the name first
		return layout{names: 1}
	case 17, 58: // RP, TALINK: two names
		return layout{names: 2}
	case 18, 21, 36, 107, 64, 65: // AFSDB, RT, KX, LP, SVCB, HTTPS: 16 bits, then a name
		return layout{prefix: 2, names: 1}
	case 26: // PX: PREFERENCE, MAP822, MAPX400
		return layout{prefix: 2, names: 2}
	case 33: // SRV: PRIORITY, WEIGHT, PORT, TARGET (RFC 2782)
		return layout{prefix: 6, names: 1}
	case 24, 46: // SIG, RRSIG: 18 octets, then the signer's name (RFC 4034 §3.1)
		return layout{prefix: 18, names: 1}
	case 35, 55, 45, 260, 38: // NAPTR, HIP, IPSECKEY, AMTRELAY, A6: names after variable fields
		return layout{unknown: true}
	}
	return layout{}
}

// appendName reads the name at msg[off], which must end (where its first pointer or root label ends)
// by limit, appends it to out, compressed when compress is set, and returns where it ends in msg.
func (c *compressor) appendName(out []byte, off, limit int, compress bool) ([]byte, int, bool) {
	buf, starts := &c.name, &c.starts // starts: where the labels start in buf, root label excluded
	n, labels, end := 0, 0, -1
	msg, ptrs := c.msg, 0
read:
	for {
		if off >= len(msg) {
			return out, 0, false
		}
		l := int(msg[off])
		switch l & labelMask {
		case labelNormal:
			if l == 0 {
				buf[n] = 0
				n++
				if end < 0 {
					end = off + 1
				}
				break read
			}
			// miekg/dns: the labels, each with its length octet, take at most 254 octets.
			if off+1+l > len(msg) || n+1+l > maxNameLen-1 {
				return out, 0, false
			}
			starts[labels] = uint8(n)
			labels++
			n += copy(buf[n:], msg[off:off+1+l])
			off += 1 + l
		case labelPointer:
			if off+2 > len(msg) {
				return out, 0, false
			}
			to := int(l&^labelMask)<<8 | int(msg[off+1])
			if to >= off {
				return out, 0, false // only backwards, which with the length cap rules out loops
			}
			if end < 0 {
				end = off + 2
			}
			if ptrs++; ptrs > maxPointersFollowed {
				return out, 0, false
			}
			off = to
		default:
			return out, 0, false
		}
	}
	if end > limit {
		return out, 0, false
	}
	name := buf[:n]
	for i := range labels {
		s := name[starts[i]:]
		if at, ok := c.find(out, s); ok {
			if compress {
				out = append(out, byte(at>>8)|labelPointer, byte(at))
				return out, end, true
			}
		} else if pos := len(out) - c.base; pos < maxPointerOffset && c.n < len(c.suffixes) {
			c.suffixes[c.n] = suffix{off: uint16(pos), len: uint8(len(s))}
			c.n++
		}
		l := int(s[0])
		out = append(out, s[:1+l]...)
	}
	out = append(out, 0)
	return out, end, true
}

// find returns the offset of the first suffix written that equals s, a name without pointers.
func (c *compressor) find(out, s []byte) (int, bool) {
	for _, x := range c.suffixes[:c.n] {
		if int(x.len) == len(s) && equalName(out[c.base:], int(x.off), s) {
			return int(x.off), true
		}
	}
	return 0, false
}

// equalName reports whether the name at msg[o], which Compress wrote, reads as s.
func equalName(msg []byte, o int, s []byte) bool {
	out := msg
	for {
		l := out[o]
		if l&labelMask == labelPointer {
			o = int(l&^labelMask)<<8 | int(out[o+1])
			continue
		}
		if s[0] != l {
			return false
		}
		if l == 0 {
			return true
		}
		if !bytes.Equal(s[1:1+int(l)], out[o+1:o+1+int(l)]) {
			return false
		}
		s = s[1+int(l):]
		o += 1 + int(l)
	}
}
