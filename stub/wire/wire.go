// Package wire is the stub's one home for the DNS wire format (RFC 1035 §4.1,
// RFC 6891): it parses queries in place, reads and patches header fields,
// skips and compares names, walks the resource records of a packed message,
// and builds the few replies the stub answers without unpacking anything:
// errors, truncation markers, NODATA and the OPT record. Everything here works
// on the raw packet so the cache-hit path stays free of allocations. Other
// packages use these functions rather than header masks of their own.
//
// # Query parsing
//
// wire.Request.Parse reads a query (the UDP payload, or a TCP message without its 2-byte
// length) in place and tells the server what to do with anything it will not accept:
//
//	| condition | error | the stub answers |
//	|---|---|---|
//	| shorter than a header, or QR=1 (a response) | ErrDrop | nothing (dropped) |
//	| opcode other than QUERY | ErrNotImp | NOTIMP |
//	| question count ≠ 1, answer or authority records, more than one additional record or one that is not OPT, a compressed/overlong/cut question name, a malformed OPT (non-root owner, bad length, malformed ECS/keepalive/expire/… option), bytes after the last record | ErrFormat | FORMERR |
//	| EDNS version > 0 | ErrBadVers | BADVERS (RFC 6891), with an OPT record |
//
// Error replies echo the question when it could be read, copy ID, opcode, RD and CD, set QR and
// RA, and carry an OPT record (payload size 1232, the client's DO bit) exactly when the query had
// one. A client's EDNS payload size is clamped to 512–65535; without EDNS it is 512. An answer
// larger than that is cut, over UDP, to the whole answer records that fit, with TC=1
// (wire.Truncate; authority and additional only as whole sections): glibc retries over TCP, and a
// musl before 1.2.4, which cannot, still gets those records, as CoreDNS gives them.
package wire

import (
	"encoding/binary"
	"errors"
)

// Parse errors. Each one tells the server which reply, if any, to send.
var (
	// ErrDrop means drop the packet without answering: its header is
	// unreadable (shorter than 12 bytes), or it is a response (QR=1), and
	// answering responses invites loops.
	ErrDrop = errors.New("wire: packet too short or not a query")
	// ErrNotImp means the opcode is not QUERY: answer NOTIMP.
	ErrNotImp = errors.New("wire: opcode not implemented")
	// ErrFormat means the query is malformed: answer FORMERR.
	ErrFormat = errors.New("wire: malformed query")
	// ErrBadVers means the client speaks an EDNS version above 0: answer
	// BADVERS (RFC 6891 §6.1.3).
	ErrBadVers = errors.New("wire: unsupported EDNS version")
)

// DNS constants used by the stub; values from RFC 1035, 6891 and 2308.
const (
	HeaderLen = 12 // bytes in a DNS header

	RcodeSuccess  = 0
	RcodeFormErr  = 1
	RcodeServFail = 2
	RcodeNXDomain = 3
	RcodeNotImp   = 4
	RcodeRefused  = 5
	RcodeBadVers  = 16 // extended rcode; needs an OPT record to be expressed

	TypeOPT = 41

	typeSOA   = 6
	classINET = 1

	// MinUDPSize is the payload every DNS client accepts (RFC 1035 §4.2.1).
	MinUDPSize = 512
	// DefaultUDPSize is the payload size this stub advertises in its own OPT
	// records: the DNS Flag Day 2020 value, which avoids IP fragmentation.
	DefaultUDPSize = 1232

	// OPTLen is the size in octets of the OPT record AppendOPT and AppendError
	// write: root owner, type, class, TTL, RDLENGTH 0 (RFC 6891 §6.1.2).
	OPTLen = 11

	maxNameLen = 255 // wire octets of a name, root label included (RFC 1035 §3.1)
)

// Header flag bits, as they sit in the 16-bit flags word.
const (
	flagQR = 1 << 15
	flagAA = 1 << 10
	flagTC = 1 << 9
	flagRD = 1 << 8
	flagRA = 1 << 7
	flagAD = 1 << 5
	flagCD = 1 << 4
)

// Request is a DNS query parsed in place. Its slices alias the packet; Parse
// allocates nothing. Reuse one Request per goroutine: Parse resets it.
type Request struct {
	Packet        []byte // the whole query as received
	ID            uint16
	Opcode        int
	RD, CD, AD    bool   // AD set asks for the AD bit in the reply, DO or not (RFC 6840 §5.7)
	QName         []byte // the question name in wire form, exactly as the client wrote it (original case); nil if not parsed
	QType, QClass uint16
	HasEDNS       bool  // the client sent an OPT record
	DO            bool  // DNSSEC OK bit from the client's OPT
	UDPSize       int   // the client's advertised UDP payload size, clamped to [512, 65535]; 512 without EDNS
	EDNSVersion   uint8 // version field of the client's OPT record
}

// Parse fills r from pkt without copying or allocating. On error, the fields
// that could be read are still set (ID, flags, the question once it parsed,
// HasEDNS once an OPT was seen) so AppendError can build a useful reply.
//
// Accepted: opcode QUERY, exactly one question whose name is uncompressed (a
// compression pointer in the first name can only point into the header),
// empty answer and authority sections, and at most one additional record,
// which must be a well-formed OPT with version 0.
func (r *Request) Parse(pkt []byte) error {
	*r = Request{Packet: pkt, UDPSize: MinUDPSize}
	if len(pkt) < HeaderLen {
		return ErrDrop
	}
	flags := binary.BigEndian.Uint16(pkt[2:])
	if flags&flagQR != 0 {
		return ErrDrop
	}
	r.ID = binary.BigEndian.Uint16(pkt)
	r.Opcode = int(flags>>11) & 0xF
	r.RD = flags&flagRD != 0
	r.CD = flags&flagCD != 0
	r.AD = flags&flagAD != 0
	qd := binary.BigEndian.Uint16(pkt[4:])
	an := binary.BigEndian.Uint16(pkt[6:])
	ns := binary.BigEndian.Uint16(pkt[8:])
	ar := binary.BigEndian.Uint16(pkt[10:])

	if r.Opcode != 0 {
		// Echo the question when there is a readable one: clients match
		// replies by question as well as ID.
		if qd == 1 {
			r.parseQuestion(pkt)
		}
		return ErrNotImp
	}
	if qd != 1 {
		return ErrFormat
	}
	// Parse the question before judging the other counts so a FORMERR can
	// still echo it.
	off, ok := r.parseQuestion(pkt)
	if !ok || an != 0 || ns != 0 || ar > 1 {
		return ErrFormat
	}
	if ar == 1 {
		var err error
		if off, err = r.parseOPT(pkt, off); err != nil {
			return err
		}
	}
	if off != len(pkt) {
		return ErrFormat
	}
	if r.HasEDNS && r.EDNSVersion > 0 {
		return ErrBadVers
	}
	return nil
}

// parseQuestion reads the question at offset 12 and returns the offset after
// it. It sets QName, QType and QClass only when the whole question is valid.
func (r *Request) parseQuestion(pkt []byte) (int, bool) {
	end, ok := PlainNameEnd(pkt, HeaderLen)
	if !ok || end+4 > len(pkt) {
		return 0, false
	}
	r.QName = pkt[HeaderLen:end:end]
	r.QType = binary.BigEndian.Uint16(pkt[end:])
	r.QClass = binary.BigEndian.Uint16(pkt[end+2:])
	return end + 4, true
}

// PlainNameEnd checks the uncompressed name that starts at pkt[off] and returns
// the offset just past its root label. ok is false when the name has a
// compression pointer or a reserved label type (RFC 1035 §4.1.4, RFC 6891 §5),
// runs past pkt, or is longer than 255 octets (RFC 1035 §3.1): a question as
// a query's sender writes it, which the stub checks before it forwards one.
func PlainNameEnd(pkt []byte, off int) (end int, ok bool) {
	start := off
	for {
		if off >= len(pkt) {
			return 0, false
		}
		c := int(pkt[off])
		if c&labelMask != labelNormal { // pointer or reserved label type
			return 0, false
		}
		off += 1 + c
		if off-start > maxNameLen {
			return 0, false
		}
		if c == 0 {
			return off, true
		}
	}
}

// parseOPT reads the single additional record, which must be an OPT RR with
// the root owner name (RFC 6891 §6.1.2). Returns the offset after it.
func (r *Request) parseOPT(pkt []byte, off int) (int, error) {
	// root name (1) + type (2) + class (2) + ttl (4) + rdlength (2)
	if off+11 > len(pkt) || pkt[off] != 0 || binary.BigEndian.Uint16(pkt[off+1:]) != TypeOPT {
		return 0, ErrFormat
	}
	r.HasEDNS = true
	size := int(binary.BigEndian.Uint16(pkt[off+3:]))
	r.UDPSize = max(size, MinUDPSize)
	r.EDNSVersion = pkt[off+6]
	r.DO = pkt[off+7]&0x80 != 0
	rdlen := int(binary.BigEndian.Uint16(pkt[off+9:]))
	off += 11
	if off+rdlen > len(pkt) {
		return 0, ErrFormat
	}
	if !validOptions(pkt[off : off+rdlen]) {
		return 0, ErrFormat
	}
	return off + rdlen, nil
}

// EDNS option codes whose payload has a fixed shape; a malformed one is a
// FORMERR (RFC 7871 §7.1.1 says so for ECS, RFC 7828 §3.2.1 for keepalive).
const (
	optLLQ         = 1
	optUL          = 2
	optSubnet      = 8
	optExpire      = 9
	optKeepalive   = 11
	optEDE         = 15
	optReporting   = 18
	optZoneVersion = 19
)

// validOptions checks the option TLVs of an OPT RDATA and the payloads of the
// options with a defined shape.
func validOptions(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 4 {
			return false
		}
		code := binary.BigEndian.Uint16(b)
		n := int(binary.BigEndian.Uint16(b[2:]))
		if 4+n > len(b) {
			return false
		}
		v := b[4 : 4+n]
		b = b[4+n:]
		switch code {
		case optLLQ:
			if n < 18 {
				return false
			}
		case optUL:
			if n != 4 && n != 8 {
				return false
			}
		case optSubnet:
			if n < 4 {
				return false
			}
			family, source, scope := binary.BigEndian.Uint16(v), v[2], v[3]
			switch family {
			case 0:
				if source != 0 {
					return false
				}
			case 1:
				if source > 32 || scope > 32 || n > 4+4 {
					return false
				}
			case 2:
				if source > 128 || scope > 128 || n > 4+16 {
					return false
				}
			default:
				return false
			}
		case optExpire:
			if n != 0 && n != 4 {
				return false
			}
		case optKeepalive:
			if n != 0 && n != 2 {
				return false
			}
		case optEDE, optZoneVersion:
			if n < 2 {
				return false
			}
		case optReporting:
			if end, ok := PlainNameEnd(v, 0); !ok || end != n {
				return false
			}
		}
	}
	return true
}

// appendHeader appends a reply header for r: ID, opcode, RD and CD copied,
// QR and RA set, and the given low rcode bits and TC flag.
func appendHeader(dst []byte, r *Request, rcode int, tc bool, qd, ns, ar uint16) []byte {
	flags := uint16(flagQR|flagRA) | uint16(r.Opcode&0xF)<<11 | uint16(HeaderRcode(rcode))
	if r.RD {
		flags |= flagRD
	}
	if r.CD {
		flags |= flagCD
	}
	if tc {
		flags |= flagTC
	}
	dst = binary.BigEndian.AppendUint16(dst, r.ID)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = binary.BigEndian.AppendUint16(dst, qd)
	dst = binary.BigEndian.AppendUint16(dst, 0)
	dst = binary.BigEndian.AppendUint16(dst, ns)
	return binary.BigEndian.AppendUint16(dst, ar)
}

// appendReply appends header, question (when r has one) and, iff the client
// sent an OPT record, our own OPT.
func appendReply(dst []byte, r *Request, rcode int, tc bool) []byte {
	var qd uint16
	if r.QName != nil {
		qd = 1
	}
	start := len(dst)
	dst = appendHeader(dst, r, rcode, tc, qd, 0, 0)
	if qd == 1 {
		dst = appendQuestion(dst, r)
	}
	if r.HasEDNS {
		dst = appendOPT(dst, start, DefaultUDPSize, uint8(rcode>>4), r.DO)
	}
	return dst
}

// appendQuestion appends r's question as the client wrote it.
func appendQuestion(dst []byte, r *Request) []byte {
	dst = append(dst, r.QName...)
	dst = binary.BigEndian.AppendUint16(dst, r.QType)
	return binary.BigEndian.AppendUint16(dst, r.QClass)
}

// AppendError appends a reply to r with rcode: header (ID, opcode, RD/CD
// copied, QR, RA), the question if r has one (qdcount 0 when the question
// could not be parsed), and an OPT record iff the client sent one (carrying
// the upper rcode bits, e.g. for BADVERS). Allocates nothing when dst has
// capacity.
func AppendError(dst []byte, r *Request, rcode int) []byte {
	return appendReply(dst, r, rcode, false)
}

// Truncate cuts the reply msg in place so that it fits size octets, for a UDP
// client whose payload size (RFC 1035 §4.2.1: 512 without EDNS; RFC 6891
// §6.2.3 with it) the whole reply exceeds, and returns msg[:n]. It keeps the
// header and the question, then as many whole answer records as fit, in wire
// order (a CNAME chain stays before the records it leads to); the authority
// section only when the whole answer and the whole authority section fit, and
// the additional section only when everything before it and all of it fit:
// never a part of an RRset there, which would change what the reply says (an
// SOA without its signatures, half of a referral). It sets TC when it dropped
// any record, and the section counts to what it kept. A msg that already
// fits is returned unchanged.
//
// This is what the resolver a pod used before podns does: CoreDNS cuts with
// miekg/dns's Msg.Truncate, which keeps records in order while they fit and
// sets TC when any was left out. RFC 2181 §9 allows the partial answer RRset
// with TC set; clients with a TCP fallback (glibc) ignore it and ask again
// over TCP, clients without one (musl before 1.2.4) use the records that came.
// Where only authority or additional records are dropped, TC is set as well
// (RFC 2181 §9 would allow it clear): over TCP the client can get them.
//
// msg must hold no OPT record, which a dropped additional section would take
// along: append the client's OPT afterwards and keep its room (OPTLen) out of
// size. Kept records stay valid because compression pointers only point to
// prior octets (RFC 1035 §4.1.4), all of them kept. The question is kept even
// when it alone exceeds size (it never does for size >= 512 - OPTLen). A
// record that does not parse ends the kept part. Allocates nothing.
func Truncate(msg []byte, size int) []byte {
	if len(msg) <= size || len(msg) < HeaderLen {
		return msg
	}
	it := Records(msg)
	qd := Count(msg, Question)
	if it.Err() != nil {
		qd = 0 // the question does not parse: Offset is the header's end
	}
	end := it.Offset()
	var n [4]int
	for it.Next() {
		rr := it.RR()
		if rr.End > size {
			break
		}
		n[rr.Section]++
		// Answer records count one by one; the other sections only as a whole.
		if rr.Section == Answer || n[rr.Section] == Count(msg, rr.Section) {
			end = rr.End
		}
	}
	for _, s := range [...]Section{Authority, Additional} {
		if n[s] != Count(msg, s) {
			n[s] = 0
		}
	}
	dropped := n[Answer] != Count(msg, Answer) || n[Authority] != Count(msg, Authority) ||
		n[Additional] != Count(msg, Additional)
	out := msg[:end]
	binary.BigEndian.PutUint16(out[4:], uint16(qd))
	binary.BigEndian.PutUint16(out[6:], uint16(n[Answer]))
	binary.BigEndian.PutUint16(out[8:], uint16(n[Authority]))
	binary.BigEndian.PutUint16(out[10:], uint16(n[Additional]))
	if dropped {
		setFlag(out, flagTC, true)
	}
	return out
}

// AppendNoData appends a NODATA reply to r, which must have parsed without
// error: NOERROR, the question, no answer, and in the authority section an
// SOA with TTL and MINIMUM ttl (seconds), which makes the reply negatively
// cacheable for ttl (RFC 2308 §3, §5). The SOA is synthetic: its owner is the
// question name (a compression pointer to it), MNAME and RNAME are the root,
// SERIAL 1, REFRESH 3600, RETRY 600, EXPIRE 86400; it stands in for a zone apex
// nobody asked upstream for. Header as in AppendError; no OPT record: add one
// with AppendOPT. Allocates nothing when dst has capacity.
func AppendNoData(dst []byte, r *Request, ttl uint32) []byte {
	dst = appendHeader(dst, r, RcodeSuccess, false, 1, 1, 0)
	dst = appendQuestion(dst, r)
	dst = append(dst, labelPointer, HeaderLen) // owner: a pointer to the question name
	dst = binary.BigEndian.AppendUint16(dst, typeSOA)
	dst = binary.BigEndian.AppendUint16(dst, classINET)
	dst = binary.BigEndian.AppendUint32(dst, ttl)
	dst = append(dst, 0, 22, 0, 0) // RDLENGTH, MNAME ".", RNAME "."
	for _, v := range [5]uint32{1, 3600, 600, 86400, ttl} {
		dst = binary.BigEndian.AppendUint32(dst, v) // SERIAL, REFRESH, RETRY, EXPIRE, MINIMUM
	}
	return dst
}

// AppendOPT appends an OPT RR (given payload size, DO bit) to the message msg
// and increments its ARCOUNT. msg must start with a DNS header.
func AppendOPT(msg []byte, size int, do bool) []byte {
	return appendOPT(msg, 0, size, 0, do)
}

// appendOPT appends an OPT RR to the message that starts at msg[start:].
func appendOPT(msg []byte, start, size int, extRcode uint8, do bool) []byte {
	size = min(max(size, MinUDPSize), 65535)
	var doFlag byte
	if do {
		doFlag = 0x80
	}
	msg = append(msg,
		0,          // root owner name
		0, TypeOPT, // type
		byte(size>>8), byte(size), // class: UDP payload size
		extRcode, 0, doFlag, 0, // ttl: extended rcode, version 0, DO + Z
		0, 0, // rdlength
	)
	ar := binary.BigEndian.Uint16(msg[start+10:])
	binary.BigEndian.PutUint16(msg[start+10:], ar+1)
	return msg
}
