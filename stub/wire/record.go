package wire

import (
	"encoding/binary"
	"errors"
)

// ErrMalformed means a message's records cannot be walked: the header is cut,
// a name is invalid (see SkipName), or a count or RDLENGTH promises more
// octets than the message holds.
var ErrMalformed = errors.New("wire: malformed message")

// RR locates one resource record inside a packed message (RFC 1035 §4.1.3).
// Offsets index the message; RData aliases it.
type RR struct {
	Section Section // Answer, Authority or Additional
	Off     int     // the owner name's first octet: where the record starts
	End     int     // just past the RDATA: where the next record starts
	// Type is the record's type. TypeOPT marks the EDNS pseudo-record (RFC
	// 6891 §6.1.2), whose class and TTL fields hold the UDP payload size,
	// extended rcode, version and flags instead.
	Type   uint16
	Class  uint16
	TTLOff int    // offset of the 32-bit TTL field, to patch the TTL in place
	TTL    uint32 // the TTL field as read, unsigned; RFC 2181 §8 says to treat values above 2^31-1 as 0
	RData  []byte // the RDATA; names in it may be compression pointers into the message
}

// RecordIter walks the resource records of a packed message in wire order,
// answer, authority, then additional, without allocating and without
// following compression pointers. Use it like bufio.Scanner:
//
//	it := wire.Records(msg)
//	for it.Next() {
//		rr := it.RR()
//		...
//	}
//	if it.Err() != nil { ... }
type RecordIter struct {
	msg  []byte
	off  int
	sec  Section
	left int // records still to read in sec
	rr   RR
	err  error
}

// Records returns an iterator over msg's records. It skips the question
// section first (QDCOUNT entries of a name, QTYPE and QCLASS); when that
// fails the iterator is empty and Err returns ErrMalformed.
func Records(msg []byte) RecordIter {
	if len(msg) < HeaderLen {
		return RecordIter{msg: msg, err: ErrMalformed}
	}
	it := RecordIter{msg: msg, off: HeaderLen, sec: Answer, left: Count(msg, Answer)}
	for range Count(msg, Question) {
		end, ok := SkipName(msg, it.off)
		if !ok || end+4 > len(msg) {
			it.err = ErrMalformed
			return it
		}
		it.off = end + 4
	}
	return it
}

// Next reads the next record, which RR then returns. It returns false after
// the last record the header counts, or at the first record that does not
// parse (then Err is ErrMalformed). Octets after the last record are not
// read: compare Offset with len(msg) to reject them.
func (it *RecordIter) Next() bool {
	if it.err != nil {
		return false
	}
	for it.left == 0 {
		if it.sec == Additional {
			return false
		}
		it.sec++
		it.left = Count(it.msg, it.sec)
	}
	msg := it.msg
	end, ok := SkipName(msg, it.off)
	// type (2) + class (2) + ttl (4) + rdlength (2)
	if !ok || end+10 > len(msg) {
		it.err = ErrMalformed
		return false
	}
	rd := end + 10
	rdEnd := rd + int(binary.BigEndian.Uint16(msg[end+8:]))
	if rdEnd > len(msg) {
		it.err = ErrMalformed
		return false
	}
	it.rr = RR{
		Section: it.sec,
		Off:     it.off,
		End:     rdEnd,
		Type:    binary.BigEndian.Uint16(msg[end:]),
		Class:   binary.BigEndian.Uint16(msg[end+2:]),
		TTLOff:  end + 4,
		TTL:     binary.BigEndian.Uint32(msg[end+4:]),
		RData:   msg[rd:rdEnd:rdEnd],
	}
	it.off = rdEnd
	it.left--
	return true
}

// RR returns the record the last successful Next read.
func (it *RecordIter) RR() RR { return it.rr }

// Err returns ErrMalformed if the walk stopped at a record (or question) that
// does not parse, and nil otherwise.
func (it *RecordIter) Err() error { return it.err }

// Offset returns where the next record starts: the end of the question
// section before the first Next, then the End of the last record read. After
// an error it is the end of the last whole record, so msg[:Offset()] holds
// only whole records.
func (it *RecordIter) Offset() int { return it.off }
