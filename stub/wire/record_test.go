package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/miekg/dns"
)

// reply packs a compressed response with records in every section and an OPT.
func reply(t testing.TB) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion("www.example.com.", dns.TypeA)
	m.Response = true
	m.Compress = true
	rr := func(s string) dns.RR {
		x, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	m.Answer = []dns.RR{
		rr("www.example.com. 300 IN CNAME web.example.com."),
		rr("web.example.com. 60 IN A 192.0.2.1"),
		rr("web.example.com. 4294967295 IN A 192.0.2.2"),
	}
	m.Ns = []dns.RR{rr("example.com. 3600 IN NS ns.example.com.")}
	m.Extra = []dns.RR{rr("ns.example.com. 120 CH TXT \"x\"")}
	m.SetEdns0(1232, true)
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The iterator agrees with miekg/dns on every record of a compressed reply,
// and its offsets cover the message without gaps.
func TestRecords(t *testing.T) {
	msg := reply(t)
	want := []struct {
		sec   Section
		typ   uint16
		class uint16
		ttl   uint32
	}{
		{Answer, dns.TypeCNAME, dns.ClassINET, 300},
		{Answer, dns.TypeA, dns.ClassINET, 60},
		{Answer, dns.TypeA, dns.ClassINET, 4294967295},
		{Authority, dns.TypeNS, dns.ClassINET, 3600},
		{Additional, dns.TypeTXT, dns.ClassCHAOS, 120},
		{Additional, TypeOPT, 1232, 0x8000},
	}
	it := Records(msg)
	if qEnd := HeaderLen + len("\x03www\x07example\x03com\x00") + 4; it.Offset() != qEnd {
		t.Errorf("Offset before Next = %d, want %d (the end of the question)", it.Offset(), qEnd)
	}
	prev := it.Offset()
	i := 0
	for it.Next() {
		rr := it.RR()
		if i >= len(want) {
			t.Fatalf("extra record %+v", rr)
		}
		w := want[i]
		if rr.Section != w.sec || rr.Type != w.typ || rr.Class != w.class || rr.TTL != w.ttl {
			t.Errorf("record %d = section %d type %d class %d ttl %d, want %+v", i, rr.Section, rr.Type, rr.Class, rr.TTL, w)
		}
		if rr.Off != prev || it.Offset() != rr.End {
			t.Errorf("record %d spans [%d, %d), previous ended at %d, Offset %d", i, rr.Off, rr.End, prev, it.Offset())
		}
		if binary.BigEndian.Uint32(msg[rr.TTLOff:]) != rr.TTL {
			t.Errorf("record %d: TTLOff %d does not point at its TTL", i, rr.TTLOff)
		}
		x, end, err := dns.UnpackRR(msg, rr.Off)
		if err != nil || end != rr.End || x.Header().Rrtype != rr.Type {
			t.Errorf("record %d: miekg/dns reads %v ending at %d (%v), iterator %d ending at %d", i, x, end, err, rr.Type, rr.End)
		}
		if rr.TTLOff+6+len(rr.RData) != rr.End || cap(rr.RData) != len(rr.RData) ||
			(len(rr.RData) > 0 && &rr.RData[0] != &msg[rr.End-len(rr.RData)]) {
			t.Errorf("record %d: RData does not alias the end of the record, capped", i)
		}
		prev = rr.End
		i++
	}
	if it.Err() != nil || i != len(want) || it.Offset() != len(msg) {
		t.Errorf("after %d records: Err %v, Offset %d of %d", i, it.Err(), it.Offset(), len(msg))
	}
	if it.Next() {
		t.Error("Next after the end returned true")
	}
}

func TestRecordsMalformed(t *testing.T) {
	a := []byte("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01") // A, owner a pointer to the question
	tests := []struct {
		name   string
		msg    []byte
		n      int   // records read
		err    error // Err afterwards
		offset int   // Offset afterwards; -1 means len(msg)
	}{
		{"empty", nil, 0, ErrMalformed, 0},
		{"header cut", make([]byte, HeaderLen-1), 0, ErrMalformed, 0},
		{"header only", make([]byte, HeaderLen), 0, nil, -1},
		{"question cut", raw(1, 0x8000, 1, 0, 0, 0, qExample[:len(qExample)-1]), 0, ErrMalformed, HeaderLen},
		{"question name bad", raw(1, 0x8000, 1, 0, 0, 0, []byte("\x45abc\x00\x00\x01\x00\x01")), 0, ErrMalformed, HeaderLen},
		{"one record", raw(1, 0x8000, 1, 1, 0, 0, qExample, a), 1, nil, -1},
		{"no question, one record", raw(1, 0x8000, 0, 0, 1, 0, a), 1, nil, -1},
		{"ANCOUNT beyond the records", raw(1, 0x8000, 1, 2, 0, 0, qExample, a), 1, ErrMalformed, -1},
		{"ARCOUNT beyond the records", raw(1, 0x8000, 1, 1, 0, 1, qExample, a), 1, ErrMalformed, -1},
		{"fixed fields cut", raw(1, 0x8000, 1, 2, 0, 0, qExample, a, a[:11]), 1, ErrMalformed, HeaderLen + len(qExample) + len(a)},
		{"RDLENGTH beyond the message", raw(1, 0x8000, 1, 2, 0, 0, qExample, a, a[:len(a)-1]), 1, ErrMalformed, HeaderLen + len(qExample) + len(a)},
		{"owner with reserved label type", raw(1, 0x8000, 1, 1, 0, 0, qExample, []byte{0x80}, a[2:]), 0, ErrMalformed, HeaderLen + len(qExample)},
		{"owner pointer cut", raw(1, 0x8000, 1, 1, 0, 0, qExample, []byte{0xc0}), 0, ErrMalformed, HeaderLen + len(qExample)},
		// A pointer loop is somebody else's problem: the iterator never follows pointers.
		{"owner pointing at itself", raw(1, 0x8000, 1, 1, 0, 0, qExample, []byte{0xc0, byte(HeaderLen + len(qExample))}, a[2:]), 1, nil, -1},
		{"trailing octets are left", raw(1, 0x8000, 1, 1, 0, 0, qExample, a, []byte{0, 0}), 1, nil, HeaderLen + len(qExample) + len(a)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			it := Records(tt.msg)
			n := 0
			for it.Next() {
				n++
			}
			want := tt.offset
			if want < 0 {
				want = len(tt.msg)
			}
			if n != tt.n || !errors.Is(it.Err(), tt.err) || it.Offset() != want {
				t.Errorf("read %d records, Err %v, Offset %d; want %d, %v, %d", n, it.Err(), it.Offset(), tt.n, tt.err, want)
			}
			if it.Next() {
				t.Error("Next true after it returned false")
			}
		})
	}
}

// msg[:Offset()] after a walk that stopped at a cut record holds only whole
// records: what a truncating writer keeps.
func TestRecordsCutMessage(t *testing.T) {
	full := reply(t)
	it := Records(full)
	ends := []int{HeaderLen, it.Offset()} // a cut question leaves the header, then the question
	for it.Next() {
		ends = append(ends, it.RR().End)
	}
	for n := HeaderLen; n < len(full); n++ {
		it := Records(full[:n])
		for it.Next() {
		}
		want := 0
		for _, e := range ends {
			if e <= n {
				want = e
			}
		}
		if it.Err() == nil || it.Offset() != want {
			t.Errorf("cut at %d: Err %v, Offset %d; want ErrMalformed at %d", n, it.Err(), it.Offset(), want)
		}
	}
}

func TestAppendNoData(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pkt    []byte
		rd, cd bool
	}{
		{"RD", query(t, "IPv6.Example.", dns.TypeAAAA, -1, false), true, false},
		{"RD and CD with EDNS", func() []byte {
			p := query(t, "IPv6.Example.", dns.TypeAAAA, 1232, true)
			SetCD(p, true)
			return p
		}(), true, true},
		{"neither", func() []byte {
			p := query(t, "IPv6.Example.", dns.TypeAAAA, -1, false)
			SetRD(p, false)
			return p
		}(), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r Request
			if err := r.Parse(tc.pkt); err != nil {
				t.Fatal(err)
			}
			out := AppendNoData([]byte("keep"), &r, 30)
			if string(out[:4]) != "keep" {
				t.Fatal("AppendNoData overwrote dst")
			}
			m := unpack(t, out[4:])
			if m.Id != 0xBEEF || !m.Response || !m.RecursionAvailable || m.Rcode != dns.RcodeSuccess || m.Truncated || m.Authoritative ||
				m.RecursionDesired != tc.rd || m.CheckingDisabled != tc.cd || m.Opcode != dns.OpcodeQuery {
				t.Errorf("header = %+v", m.MsgHdr)
			}
			if len(m.Question) != 1 || m.Question[0] != (dns.Question{Name: "IPv6.Example.", Qtype: dns.TypeAAAA, Qclass: dns.ClassINET}) {
				t.Errorf("question = %v", m.Question)
			}
			if len(m.Answer) != 0 || len(m.Extra) != 0 || len(m.Ns) != 1 {
				t.Fatalf("sections: %v", m)
			}
			want := &dns.SOA{Hdr: dns.RR_Header{Name: "IPv6.Example.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 30, Rdlength: 22},
				Ns: ".", Mbox: ".", Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 30}
			if soa, ok := m.Ns[0].(*dns.SOA); !ok || *soa != *want {
				t.Errorf("authority = %v, want %v", m.Ns[0], want)
			}
			// The owner is a pointer to the question name, not a copy.
			if got := out[4+HeaderLen+len(r.QName)+4:][:2]; !bytes.Equal(got, []byte{0xc0, HeaderLen}) {
				t.Errorf("SOA owner = %x, want a pointer to offset 12", got)
			}
		})
	}
}

// The new API allocates nothing: the cache builds on the iterator, and the
// hit path on the header setters.
func TestAPINoAllocs(t *testing.T) {
	msg := reply(t)
	pkt := query(t, "www.Example.com.", dns.TypeAAAA, 1232, true)
	var r Request
	if err := r.Parse(pkt); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	name := bytes.Clone(r.QName)
	allocs := testing.AllocsPerRun(100, func() {
		for it := Records(msg); it.Next(); {
			_ = it.RR()
		}
		buf = AppendNoData(buf[:0], &r, 30)
		SetID(buf, ID(msg))
		SetRD(buf, !IsResponse(msg))
		SetCD(buf, IsTruncated(msg))
		SetAD(buf, IsAuthentic(msg))
		_ = Rcode(buf) + Count(buf, Authority)
		Lower(name)
		_ = EqualFoldName(name, r.QName)
		_, _ = SkipName(msg, HeaderLen)
	})
	if allocs != 0 {
		t.Errorf("wire API allocates %v times per run, want 0", allocs)
	}
}
