package wire

import (
	"bytes"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParse checks that Parse never panics, that every packet it accepts is a
// DNS message miekg/dns unpacks to the same question and EDNS settings, and
// that every error reply built from what it read is itself a valid message.
func FuzzParse(f *testing.F) {
	f.Add(query(f, "example.com.", dns.TypeA, -1, false))
	f.Add(query(f, "example.com.", dns.TypeAAAA, 4096, true))
	f.Add(query(f, "MiXeD.CaSe.ExAmPlE.", dns.TypeA, 1232, false))
	f.Add(query(f, `we\.ird\000.name.`, dns.TypeTXT, -1, false))
	f.Add(raw(1, 0x0100, 1, 0, 0, 0, []byte("\x03www\xc0\x0c\x00\x01\x00\x01"))) // compression in a query
	f.Add(raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, option(8, 0, 1, 24, 0, 10, 0, 0))))
	f.Add(raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(1, nil)))
	f.Add(raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, option(8, 0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0))))
	f.Add(raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, append(option(10, 1, 2, 3, 4, 5, 6, 7, 8), option(11)...))))
	f.Add(raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, option(18, []byte("\x05agent\x07example\x00")...))))
	f.Add(raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, option(15, 0, 3, 'h', 'i'))))
	f.Add(raw(1, 4<<11, 1, 0, 0, 0, qExample))
	full := query(f, "truncated.example.", dns.TypeA, 1232, true)
	for _, n := range []int{0, 5, 12, 20, len(full) - 3} {
		f.Add(full[:n])
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var r Request
		err := r.Parse(pkt)
		if err == ErrDrop {
			return
		}
		if err == nil {
			m := new(dns.Msg)
			if uerr := m.Unpack(pkt); uerr != nil {
				t.Fatalf("Parse accepted a packet miekg/dns rejects: %v\n%x", uerr, pkt)
			}
			if len(m.Question) != 1 || m.Question[0].Qtype != r.QType || m.Question[0].Qclass != r.QClass || m.Id != r.ID {
				t.Fatalf("question/ID differ: miekg %v id %d, Parse %+v", m.Question, m.Id, r)
			}
			buf := make([]byte, 256)
			n, perr := dns.PackDomainName(m.Question[0].Name, buf, 0, nil, false)
			if perr != nil || !bytes.Equal(buf[:n], r.QName) {
				t.Fatalf("name: miekg %q (%v) repacks to %x, Parse has %x", m.Question[0].Name, perr, buf[:n], r.QName)
			}
			o := m.IsEdns0()
			if (o != nil) != r.HasEDNS || (o != nil && (o.Do() != r.DO || max(int(o.UDPSize()), 512) != r.UDPSize)) {
				t.Fatalf("EDNS differs: miekg %v, Parse %+v", o, r)
			}
		}
		rcode := dns.RcodeFormatError
		switch err {
		case nil:
			rcode = dns.RcodeServerFailure
		case ErrNotImp:
			rcode = dns.RcodeNotImplemented
		case ErrBadVers:
			rcode = dns.RcodeBadVers
		}
		m := new(dns.Msg)
		if uerr := m.Unpack(AppendError(nil, &r, rcode)); uerr != nil {
			t.Fatalf("error reply does not unpack: %v", uerr)
		}
		if m.Rcode != rcode || m.Id != r.ID {
			t.Fatalf("error reply rcode %d id %d, want %d %d", m.Rcode, m.Id, rcode, r.ID)
		}
	})
}

// FuzzRecords checks that the record iterator never panics or reads outside
// the message, that its records tile the message from the end of the
// question, and that it reads every message miekg/dns reads in full, with the
// same record types and the same end.
func FuzzRecords(f *testing.F) {
	full := reply(f)
	f.Add(full)
	for _, n := range []int{0, 11, 12, 30, 40, len(full) - 1} {
		f.Add(full[:n])
	}
	a := []byte("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01")
	f.Add(raw(1, 0x8000, 1, 1, 0, 0, qExample, a))
	f.Add(raw(1, 0x8000, 0, 0, 1, 0, a))
	f.Add(raw(1, 0x8000, 1, 1, 0, 0, qExample, []byte{0xc0, byte(HeaderLen + len(qExample))}, a[2:])) // owner points at itself
	f.Add(raw(1, 0x8000, 1, 1, 0, 0, qExample, []byte{0x40}, a[2:]))                                  // reserved label type
	f.Add(raw(1, 0x8000, 1, 0, 0, 1, qExample, optV0))
	f.Fuzz(func(t *testing.T, msg []byte) {
		it := Records(msg)
		prev := it.Offset()
		var got []uint16
		for it.Next() {
			rr := it.RR()
			if rr.Off != prev || rr.Off >= rr.TTLOff || rr.TTLOff+6+len(rr.RData) != rr.End || rr.End > len(msg) ||
				it.Offset() != rr.End || rr.Section < Answer || rr.Section > Additional {
				t.Fatalf("record %d %+v after offset %d, Offset %d, message of %d", len(got), rr, prev, it.Offset(), len(msg))
			}
			prev = rr.End
			got = append(got, rr.Type)
		}
		if it.Offset() > len(msg) {
			t.Fatalf("Offset %d past the message of %d", it.Offset(), len(msg))
		}
		m := new(dns.Msg)
		if m.Unpack(msg) != nil || len(m.Question) != Count(msg, Question) ||
			len(m.Answer) != Count(msg, Answer) || len(m.Ns) != Count(msg, Authority) || len(m.Extra) != Count(msg, Additional) {
			return // miekg/dns rejects it, or reads fewer records than the header counts
		}
		if !questionsWhole(msg) {
			// miekg/dns accepts a question cut short at the end of the message (type and class
			// read as 0); a question is 4 octets after its name (RFC 1035 §4.1.2), and the
			// iterator rightly refuses less.
			return
		}
		if it.Err() != nil {
			t.Fatalf("miekg/dns reads every record, the iterator stops at offset %d: %v", it.Offset(), it.Err())
		}
		var want []uint16
		for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range s {
				want = append(want, rr.Header().Rrtype)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("types %v, miekg/dns %v", got, want)
		}
	})
}

// questionsWhole reports whether every question the header counts has its name, type and class
// inside msg.
func questionsWhole(msg []byte) bool {
	off := HeaderLen
	for range Count(msg, Question) {
		end, ok := SkipName(msg, off)
		if !ok || end+4 > len(msg) {
			return false
		}
		off = end + 4
	}
	return true
}
