package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

// query packs a query for name/qtype with ID 0xBEEF; edns < 0 means no OPT record.
func query(_ testing.TB, name string, qtype uint16, edns int, do bool) []byte {
	opts := []dnstest.MsgOption{dnstest.ID(0xBEEF)}
	if edns >= 0 {
		opts = append(opts, dnstest.EDNS(uint16(edns), do))
	}
	return dnstest.Query(name, qtype, opts...)
}

func wireName(t testing.TB, name string) []byte {
	t.Helper()
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name  string
		pkt   func(t *testing.T) []byte
		want  Request
		qname string
	}{
		{
			name:  "A without EDNS",
			pkt:   func(t *testing.T) []byte { return query(t, "example.com.", dns.TypeA, -1, false) },
			want:  Request{ID: 0xBEEF, RD: true, QType: dns.TypeA, QClass: dns.ClassINET, UDPSize: 512},
			qname: "example.com.",
		},
		{
			name:  "AAAA with EDNS and DO",
			pkt:   func(t *testing.T) []byte { return query(t, "example.com.", dns.TypeAAAA, 4096, true) },
			want:  Request{ID: 0xBEEF, RD: true, QType: dns.TypeAAAA, QClass: dns.ClassINET, HasEDNS: true, DO: true, UDPSize: 4096},
			qname: "example.com.",
		},
		{
			name:  "mixed case kept as written",
			pkt:   func(t *testing.T) []byte { return query(t, "ExAmPlE.CoM.", dns.TypeA, 1232, false) },
			want:  Request{ID: 0xBEEF, RD: true, QType: dns.TypeA, QClass: dns.ClassINET, HasEDNS: true, UDPSize: 1232},
			qname: "ExAmPlE.CoM.",
		},
		{
			name:  "small EDNS size clamped to 512",
			pkt:   func(t *testing.T) []byte { return query(t, "a.b.", dns.TypeMX, 100, false) },
			want:  Request{ID: 0xBEEF, RD: true, QType: dns.TypeMX, QClass: dns.ClassINET, HasEDNS: true, UDPSize: 512},
			qname: "a.b.",
		},
		{
			name:  "root name",
			pkt:   func(t *testing.T) []byte { return query(t, ".", dns.TypeNS, -1, false) },
			want:  Request{ID: 0xBEEF, RD: true, QType: dns.TypeNS, QClass: dns.ClassINET, UDPSize: 512},
			qname: ".",
		},
		{
			name: "RD clear, CD set, ECS option",
			pkt: func(t *testing.T) []byte {
				m := new(dns.Msg)
				m.SetQuestion("svc.cluster.local.", dns.TypeA)
				m.Id = 7
				m.RecursionDesired = false
				m.CheckingDisabled = true
				o := m.SetEdns0(65535, false).IsEdns0()
				o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: []byte{10, 0, 0, 0}})
				b, err := m.Pack()
				if err != nil {
					t.Fatal(err)
				}
				return b
			},
			want:  Request{ID: 7, CD: true, QType: dns.TypeA, QClass: dns.ClassINET, HasEDNS: true, UDPSize: 65535},
			qname: "svc.cluster.local.",
		},
		{
			// RFC 6840 §5.7: a stub sets AD to ask whether the answer validated, without DO.
			name: "AD set, no EDNS",
			pkt: func(t *testing.T) []byte {
				return dnstest.Query("example.com.", dns.TypeA, dnstest.ID(0xBEEF), func(m *dns.Msg) { m.AuthenticatedData = true })
			},
			want:  Request{ID: 0xBEEF, RD: true, AD: true, QType: dns.TypeA, QClass: dns.ClassINET, UDPSize: 512},
			qname: "example.com.",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := tt.pkt(t)
			var r Request
			if err := r.Parse(pkt); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !bytes.Equal(r.QName, wireName(t, tt.qname)) {
				t.Errorf("QName = %q, want %q", r.QName, tt.qname)
			}
			if &r.Packet[0] != &pkt[0] || (len(r.QName) > 0 && &r.QName[0] != &pkt[12]) {
				t.Error("Request does not alias the packet")
			}
			got := r
			got.Packet, got.QName = nil, nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// raw builds a packet from a header and a body.
func raw(id, flags, qd, an, ns, ar uint16, body ...[]byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, id)
	for _, v := range []uint16{flags, qd, an, ns, ar} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	for _, x := range body {
		b = append(b, x...)
	}
	return b
}

var (
	qExample = []byte("\x07example\x03com\x00\x00\x01\x00\x01")       // example.com. A IN
	optV0    = []byte("\x00\x00\x29\x10\x00\x00\x00\x80\x00\x00\x00") // OPT 4096, DO
)

func opt(version byte, rdata []byte) []byte {
	b := []byte{0, 0, 41, 0x04, 0xD0, 0, version, 0, 0}
	b = binary.BigEndian.AppendUint16(b, uint16(len(rdata)))
	return append(b, rdata...)
}

func option(code uint16, data ...byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func TestParseErrors(t *testing.T) {
	long := bytes.Repeat([]byte("\x3f"+string(bytes.Repeat([]byte("a"), 63))), 4) // 256 octets before the root
	tests := []struct {
		name     string
		pkt      []byte
		want     error
		question bool // the question is parsed despite the error
		edns     bool
	}{
		{"empty", nil, ErrDrop, false, false},
		{"11 bytes", make([]byte, 11), ErrDrop, false, false},
		{"response", raw(1, 0x8100, 1, 0, 0, 0, qExample), ErrDrop, false, false},
		{"NOTIFY", raw(1, 4<<11, 1, 0, 0, 0, qExample), ErrNotImp, true, false},
		{"UPDATE without question", raw(1, 5<<11, 0, 0, 0, 0), ErrNotImp, false, false},
		{"no question", raw(1, 0x0100, 0, 0, 0, 0), ErrFormat, false, false},
		{"two questions", raw(1, 0x0100, 2, 0, 0, 0, qExample, qExample), ErrFormat, false, false},
		{"answer count", raw(1, 0x0100, 1, 1, 0, 0, qExample), ErrFormat, true, false},
		{"authority count", raw(1, 0x0100, 1, 0, 1, 0, qExample), ErrFormat, true, false},
		{"two additionals", raw(1, 0x0100, 1, 0, 0, 2, qExample, optV0, optV0), ErrFormat, true, false},
		{"non-OPT additional", raw(1, 0x0100, 1, 0, 0, 1, qExample, []byte("\x00\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\x01\x02\x03\x04")), ErrFormat, true, false},
		{"OPT with owner name", raw(1, 0x0100, 1, 0, 0, 1, qExample, []byte("\x01a\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00")), ErrFormat, true, false},
		{"OPT truncated", raw(1, 0x0100, 1, 0, 0, 1, qExample, optV0[:7]), ErrFormat, true, false},
		{"OPT rdlength beyond packet", raw(1, 0x0100, 1, 0, 0, 1, qExample, []byte("\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x05\x00")), ErrFormat, true, true},
		{"OPT option header cut", raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, []byte{0, 10, 0})), ErrFormat, true, true},
		{"OPT option longer than rdata", raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, []byte{0, 10, 0, 9, 1})), ErrFormat, true, true},
		{"ECS bad family", raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, option(8, 0, 3, 0, 0))), ErrFormat, true, true},
		{"ECS prefix too long", raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, option(8, 0, 1, 33, 0, 1, 2, 3, 4))), ErrFormat, true, true},
		{"keepalive bad length", raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, option(11, 1))), ErrFormat, true, true},
		{"compression pointer in question", raw(1, 0x0100, 1, 0, 0, 0, []byte("\x03www\xc0\x0c\x00\x01\x00\x01")), ErrFormat, false, false},
		{"reserved label type", raw(1, 0x0100, 1, 0, 0, 0, []byte("\x43abc\x00\x00\x01\x00\x01")), ErrFormat, false, false},
		{"name over 255 octets", raw(1, 0x0100, 1, 0, 0, 0, long, []byte("\x00\x00\x01\x00\x01")), ErrFormat, false, false},
		{"name cut", raw(1, 0x0100, 1, 0, 0, 0, []byte("\x07exam")), ErrFormat, false, false},
		{"qtype cut", raw(1, 0x0100, 1, 0, 0, 0, qExample[:15]), ErrFormat, false, false},
		{"qclass cut", raw(1, 0x0100, 1, 0, 0, 0, qExample[:len(qExample)-1]), ErrFormat, false, false},
		{"garbage after question", raw(1, 0x0100, 1, 0, 0, 0, qExample, []byte{0}), ErrFormat, true, false},
		{"garbage after OPT", raw(1, 0x0100, 1, 0, 0, 1, qExample, optV0, []byte{0}), ErrFormat, true, true},
		{"EDNS version 1", raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(1, nil)), ErrBadVers, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			err := r.Parse(tt.pkt)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, want %v", err, tt.want)
			}
			if got := r.QName != nil; got != tt.question {
				t.Errorf("question parsed = %v, want %v", got, tt.question)
			}
			if r.HasEDNS != tt.edns {
				t.Errorf("HasEDNS = %v, want %v", r.HasEDNS, tt.edns)
			}
		})
	}
}

// Options with a defined shape are accepted when well formed; others pass
// through whatever they hold.
func TestParseOptions(t *testing.T) {
	tests := []struct {
		name string
		opts []byte
		ok   bool
	}{
		{"cookie", option(10, 1, 2, 3, 4, 5, 6, 7, 8), true},
		{"padding", option(12, make([]byte, 40)...), true},
		{"keepalive empty", option(11), true},
		{"keepalive 2", option(11, 0, 100), true},
		{"keepalive 3", option(11, 0, 100, 1), false},
		{"ECS v4 /24", option(8, 0, 1, 24, 0, 10, 1, 2), true},
		{"ECS v4 address too long", option(8, 0, 1, 24, 0, 10, 1, 2, 3, 4), false},
		{"ECS v6 /56", option(8, 0, 2, 56, 0, 0x20, 1, 0xd, 0xb8, 0, 0, 0), true},
		{"ECS v6 prefix 129", option(8, 0, 2, 129, 0), false},
		{"ECS family 0 prefix 0", option(8, 0, 0, 0, 0), true},
		{"ECS family 0 prefix 8", option(8, 0, 0, 8, 0), false},
		{"ECS short", option(8, 0, 1, 24), false},
		{"expire empty", option(9), true},
		{"expire 3 bytes", option(9, 1, 2, 3), false},
		{"EDE", option(15, 0, 3), true},
		{"EDE short", option(15, 0), false},
		{"LLQ short", option(1, 1, 2), false},
		{"UL 4", option(2, 0, 0, 0, 60), true},
		{"UL 5", option(2, 0, 0, 0, 60, 1), false},
		{"reporting name", option(18, []byte("\x05agent\x07example\x00")...), true},
		{"reporting cut name", option(18, 5, 'a', 'g'), false},
		{"zone version", option(19, 2, 0, 0, 0, 0, 1), true},
		{"unknown code", option(65001, 1, 2, 3), true},
		{"two options", append(option(10, 1, 2, 3, 4, 5, 6, 7, 8), option(12, 0, 0)...), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkt := raw(1, 0x0100, 1, 0, 0, 1, qExample, opt(0, tt.opts))
			var r Request
			err := r.Parse(pkt)
			if (err == nil) != tt.ok {
				t.Fatalf("Parse = %v, want ok=%v", err, tt.ok)
			}
			if err == nil {
				if uerr := new(dns.Msg).Unpack(pkt); uerr != nil {
					t.Errorf("accepted, but miekg/dns cannot read it: %v", uerr)
				}
			} else if !errors.Is(err, ErrFormat) {
				t.Errorf("Parse = %v, want ErrFormat", err)
			}
		})
	}
}

// A name of exactly 255 octets is the longest allowed.
func TestParseLongestName(t *testing.T) {
	name := bytes.Repeat([]byte("\x3f"+string(bytes.Repeat([]byte("a"), 63))), 3)
	name = append(name, "\x3d"+string(bytes.Repeat([]byte("b"), 61))+"\x00"...)
	if len(name) != 255 {
		t.Fatalf("test name is %d octets", len(name))
	}
	var r Request
	if err := r.Parse(raw(1, 0, 1, 0, 0, 0, name, []byte{0, 1, 0, 1})); err != nil {
		t.Fatalf("255-octet name: %v", err)
	}
}

func unpack(t *testing.T, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("reply does not unpack: %v\n%x", err, b)
	}
	return m
}

func TestAppendError(t *testing.T) {
	tests := []struct {
		name     string
		pkt      []byte
		rcode    int
		question bool
		edns     bool
	}{
		{"FORMERR with question", raw(9, 0x0110, 1, 1, 0, 0, qExample), dns.RcodeFormatError, true, false},
		{"FORMERR without question", raw(9, 0x0110, 0, 0, 0, 0), dns.RcodeFormatError, false, false},
		{"NOTIMP", raw(9, 4<<11|0x0100, 1, 0, 0, 0, qExample), dns.RcodeNotImplemented, true, false},
		{"BADVERS", raw(9, 0x0100, 1, 0, 0, 1, qExample, opt(1, nil)), dns.RcodeBadVers, true, true},
		{"SERVFAIL with EDNS", raw(9, 0x0100, 1, 0, 0, 1, qExample, optV0), dns.RcodeServerFailure, true, true},
		{"REFUSED", raw(9, 0, 1, 0, 0, 0, qExample), dns.RcodeRefused, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Request
			_ = r.Parse(tt.pkt)
			prefix := []byte("keep")
			out := AppendError(prefix, &r, tt.rcode)
			if string(out[:4]) != "keep" {
				t.Fatal("AppendError overwrote dst")
			}
			m := unpack(t, out[4:])
			if m.Id != 9 || !m.Response || !m.RecursionAvailable || m.Rcode != tt.rcode || m.Truncated {
				t.Errorf("header: id=%d qr=%v ra=%v rcode=%d tc=%v", m.Id, m.Response, m.RecursionAvailable, m.Rcode, m.Truncated)
			}
			if m.RecursionDesired != r.RD || m.CheckingDisabled != r.CD || m.Opcode != r.Opcode {
				t.Errorf("RD/CD/opcode not copied: %v %v %d", m.RecursionDesired, m.CheckingDisabled, m.Opcode)
			}
			if tt.question {
				if len(m.Question) != 1 || m.Question[0] != (dns.Question{Name: "example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET}) {
					t.Errorf("question = %v", m.Question)
				}
			} else if len(m.Question) != 0 {
				t.Errorf("question = %v, want none", m.Question)
			}
			o := m.IsEdns0()
			if (o != nil) != tt.edns {
				t.Fatalf("OPT present = %v, want %v", o != nil, tt.edns)
			}
			if o != nil && (o.UDPSize() != DefaultUDPSize || o.Version() != 0 || o.Do() != r.DO) {
				t.Errorf("OPT = %v", o)
			}
			if len(m.Answer)+len(m.Ns) != 0 || len(m.Extra) > 1 {
				t.Errorf("unexpected records: %v", m)
			}
		})
	}
}

func TestAppendOPT(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("example.com.", dns.TypeA)
	m.Response = true
	m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}}}
	m.Extra = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "ns.example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 2}}}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		size, want int
		do         bool
	}{{1232, 1232, true}, {4096, 4096, false}, {100, 512, false}, {1 << 20, 65535, true}} {
		got := unpack(t, AppendOPT(bytes.Clone(b), tc.size, tc.do))
		if len(got.Extra) != 2 || len(got.Answer) != 1 {
			t.Fatalf("sections: %v", got)
		}
		o := got.IsEdns0()
		if o == nil || int(o.UDPSize()) != tc.want || o.Do() != tc.do || o.Version() != 0 || o.ExtendedRcode() != 0 {
			t.Errorf("size %d: OPT = %v", tc.size, o)
		}
	}
}

func TestNoAllocs(t *testing.T) {
	pkt := query(t, "www.Example.com.", dns.TypeAAAA, 1232, true)
	var r Request
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() {
		if err := r.Parse(pkt); err != nil {
			t.Fatal(err)
		}
		buf = AppendError(buf[:0], &r, dns.RcodeServerFailure)
		buf = AppendOPT(buf, 1232, true)
	})
	if allocs != 0 {
		t.Errorf("Parse/Append* allocate %v times per run, want 0", allocs)
	}
}

func BenchmarkParse(b *testing.B) {
	pkt := query(b, "www.Example.com.", dns.TypeAAAA, 1232, true)
	var r Request
	b.ReportAllocs()
	start := dnstest.CPUTime(b)
	for b.Loop() {
		if err := r.Parse(pkt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(dnstest.CPUTime(b)-start)/float64(b.N), "cpu-ns/op")
}
