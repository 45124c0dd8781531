package server

import (
	"encoding/binary"

	"github.com/podns/podns/stub/wire"
)

// filteredTTL is the TTL of the SOA in a filtered AAAA answer: long enough that clients do not
// ask again at once, short enough that turning the filter off takes effect soon.
const filteredTTL = 30

// appendNoData appends a NODATA answer to r: NOERROR, no answer, and an SOA in the authority
// section so that the answer is negatively cacheable (RFC 2308). Never NXDOMAIN: that would tell
// the client the NAME does not exist, and some clients then give up on its A record too. The SOA
// is synthetic (owner: the queried name, MNAME and RNAME: the root) because the real zone apex is
// unknown without asking upstream, which is what the filter exists to avoid.
func appendNoData(dst []byte, r *wire.Request) []byte {
	flags := uint16(1<<15 | 1<<7) // QR, RA
	if r.RD {
		flags |= 1 << 8
	}
	if r.CD {
		flags |= 1 << 4
	}
	dst = binary.BigEndian.AppendUint16(dst, r.ID)
	dst = binary.BigEndian.AppendUint16(dst, flags)
	dst = append(dst, 0, 1, 0, 0, 0, 1, 0, 0) // QD=1 AN=0 NS=1 AR=0
	dst = append(dst, r.QName...)
	dst = binary.BigEndian.AppendUint16(dst, r.QType)
	dst = binary.BigEndian.AppendUint16(dst, r.QClass)
	dst = append(dst, 0xc0, wire.HeaderLen) // owner: pointer to the question name
	dst = append(dst, 0, 6, 0, 1)           // SOA IN
	dst = binary.BigEndian.AppendUint32(dst, filteredTTL)
	dst = append(dst, 0, 22, 0, 0) // RDLENGTH, MNAME ".", RNAME "."
	for _, v := range [5]uint32{1, 3600, 600, 86400, filteredTTL} {
		dst = binary.BigEndian.AppendUint32(dst, v) // serial, refresh, retry, expire, minimum
	}
	return dst
}
