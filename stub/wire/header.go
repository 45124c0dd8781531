package wire

import "encoding/binary"

// Header accessors read and patch the 12-octet header of a raw message in
// place (RFC 1035 §4.1.1). Each needs the whole header: like encoding/binary,
// they panic on a slice shorter than HeaderLen, so callers holding untrusted
// input check len(pkt) >= HeaderLen first.

// rcodeMask selects the 4-bit RCODE in the header's flags word; the upper 8
// bits of an extended rcode travel in the OPT record (RFC 6891 §6.1.3).
const rcodeMask = 0xF

// ID returns the message ID.
func ID(pkt []byte) uint16 { return binary.BigEndian.Uint16(pkt[:HeaderLen]) }

// SetID sets the message ID.
func SetID(pkt []byte, id uint16) { binary.BigEndian.PutUint16(pkt[:HeaderLen], id) }

// IsResponse reports whether the QR bit is set: the message is a response.
func IsResponse(pkt []byte) bool { return flags(pkt)&flagQR != 0 }

// IsTruncated reports whether the TC bit is set: the sender cut the message
// to fit the transport and the receiver should retry over TCP (RFC 1035
// §4.2.1, RFC 7766 §5).
func IsTruncated(pkt []byte) bool { return flags(pkt)&flagTC != 0 }

// Rcode returns the 4-bit RCODE of the header: without the OPT record's
// upper bits (RFC 6891 §6.1.3), so BADVERS reads as 0.
func Rcode(pkt []byte) int { return int(flags(pkt) & rcodeMask) }

// ExtendedRcode returns msg's whole rcode, 0-4095 (RFC 6891 §6.1.3): the
// header's 4 bits and, when msg has an OPT record, its upper 8 bits from
// there, so BADVERS reads as 16. It walks the records only when the header
// counts additional ones, and allocates nothing. A message whose records do
// not parse up to the OPT gives the header's rcode.
func ExtendedRcode(msg []byte) int {
	rcode := Rcode(msg)
	if opt, ok := FindOPT(msg); ok {
		return rcode | int(msg[opt.TTLOff])<<4
	}
	return rcode
}

// FindOPT returns the first OPT record of msg's additional section, among the
// records that parse up to it (RFC 6891 §6.1.1). It walks the records only
// when the header counts additional ones, and allocates nothing.
func FindOPT(msg []byte) (opt RR, ok bool) {
	if Count(msg, Additional) == 0 {
		return RR{}, false
	}
	it := Records(msg)
	for it.Next() {
		if rr := it.RR(); rr.Section == Additional && rr.Type == TypeOPT {
			return rr, true
		}
	}
	return RR{}, false
}

// HeaderRcode returns the part of an extended rcode (0-4095) that the header
// carries, its low 4 bits; the rest needs an OPT record (RFC 6891 §6.1.3).
func HeaderRcode(rcode int) int { return rcode & rcodeMask }

// SetRD sets or clears RD (recursion desired).
func SetRD(pkt []byte, on bool) { setFlag(pkt, flagRD, on) }

// SetAA sets or clears AA (authoritative answer, RFC 1035 §4.1.1).
func SetAA(pkt []byte, on bool) { setFlag(pkt, flagAA, on) }

// SetRA sets or clears RA (recursion available, RFC 1035 §4.1.1).
func SetRA(pkt []byte, on bool) { setFlag(pkt, flagRA, on) }

// SetCD sets or clears CD (checking disabled, RFC 4035 §3.2.2).
func SetCD(pkt []byte, on bool) { setFlag(pkt, flagCD, on) }

// IsAuthentic reports whether the AD bit (authentic data, RFC 4035 §3.2.3) is set: in a reply,
// the resolver validated every record in the answer and authority sections; in a query, the
// client asks to be told so (RFC 6840 §5.7).
func IsAuthentic(pkt []byte) bool { return flags(pkt)&flagAD != 0 }

// SetAD sets or clears AD (authentic data, RFC 4035 §3.2.3, RFC 6840 §5.7–5.8).
func SetAD(pkt []byte, on bool) { setFlag(pkt, flagAD, on) }

// Section numbers the four sections of a message in wire order (RFC 1035
// §4.1); Count takes one.
type Section uint8

// The sections of a message.
const (
	Question Section = iota
	Answer
	Authority
	Additional
)

// Count returns the number of entries the header announces for section s
// (QDCOUNT, ANCOUNT, NSCOUNT or ARCOUNT).
func Count(pkt []byte, s Section) int {
	return int(binary.BigEndian.Uint16(pkt[4+2*int(s&3) : HeaderLen]))
}

func flags(pkt []byte) uint16 { return binary.BigEndian.Uint16(pkt[2:HeaderLen]) }

func setFlag(pkt []byte, bit uint16, on bool) {
	f := flags(pkt) &^ bit
	if on {
		f |= bit
	}
	binary.BigEndian.PutUint16(pkt[2:HeaderLen], f)
}
