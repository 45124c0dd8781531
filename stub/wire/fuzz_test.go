package wire

import (
	"bytes"
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
		if err == ErrShort {
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
