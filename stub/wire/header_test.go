package wire

import (
	"bytes"
	"testing"

	"github.com/miekg/dns"
)

func TestHeaderRead(t *testing.T) {
	tests := []struct {
		name string
		hdr  dns.MsgHdr
		qd   int // questions (example.com. A IN)
		an   int // A records
	}{
		{"query", dns.MsgHdr{Id: 1, RecursionDesired: true}, 1, 0},
		{"response", dns.MsgHdr{Id: 0xFFFF, Response: true, RecursionAvailable: true}, 1, 2},
		{"truncated response", dns.MsgHdr{Id: 0x8000, Response: true, Truncated: true}, 1, 0},
		{"SERVFAIL", dns.MsgHdr{Id: 2, Response: true, Rcode: dns.RcodeServerFailure, CheckingDisabled: true}, 1, 0},
		{"NXDOMAIN, AD set", dns.MsgHdr{Id: 3, Response: true, Rcode: dns.RcodeNameError, AuthenticatedData: true}, 0, 1},
		{"every flag but QR and TC", dns.MsgHdr{Id: 4, Opcode: dns.OpcodeUpdate, Authoritative: true, RecursionDesired: true,
			RecursionAvailable: true, Zero: true, AuthenticatedData: true, CheckingDisabled: true, Rcode: 15}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &dns.Msg{MsgHdr: tt.hdr}
			for range tt.qd {
				m.Question = append(m.Question, dns.Question{Name: "example.com.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			}
			for i := range tt.an {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: "example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, byte(i)}})
			}
			pkt, err := m.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if got := ID(pkt); got != tt.hdr.Id {
				t.Errorf("ID = %#x, want %#x", got, tt.hdr.Id)
			}
			if got := IsResponse(pkt); got != tt.hdr.Response {
				t.Errorf("IsResponse = %v, want %v", got, tt.hdr.Response)
			}
			if got := IsTruncated(pkt); got != tt.hdr.Truncated {
				t.Errorf("IsTruncated = %v, want %v", got, tt.hdr.Truncated)
			}
			if got := IsAuthentic(pkt); got != tt.hdr.AuthenticatedData {
				t.Errorf("IsAuthentic = %v, want %v", got, tt.hdr.AuthenticatedData)
			}
			if got := Rcode(pkt); got != tt.hdr.Rcode {
				t.Errorf("Rcode = %d, want %d", got, tt.hdr.Rcode)
			}
			for s, want := range []int{tt.qd, tt.an, 0, 0} {
				if got := Count(pkt, Section(s)); got != want {
					t.Errorf("Count(%d) = %d, want %d", s, got, want)
				}
			}
		})
	}
}

// An extended rcode keeps only its low 4 bits in the header: BADVERS (16)
// reads back as NOERROR when the OPT record is gone.
func TestHeaderRcode(t *testing.T) {
	for _, tc := range []struct{ in, want int }{
		{dns.RcodeSuccess, 0}, {dns.RcodeNameError, 3}, {15, 15}, {dns.RcodeBadVers, 0}, {dns.RcodeBadCookie, 7}, {4095, 15},
	} {
		if got := HeaderRcode(tc.in); got != tc.want {
			t.Errorf("HeaderRcode(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
	// With the OPT record stripped, a BADVERS reply's header says 0.
	m := new(dns.Msg)
	m.SetRcode(new(dns.Msg).SetQuestion("example.com.", dns.TypeA), dns.RcodeBadVers)
	m.SetEdns0(1232, false)
	pkt, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	if got := Rcode(pkt); got != 0 {
		t.Errorf("Rcode of a BADVERS reply = %d, want 0 (the upper bits are in the OPT record)", got)
	}
}

// The setters change their own field and nothing else in the header.
func TestHeaderSet(t *testing.T) {
	all := raw(0x1234, 0xFFFF, 1, 2, 3, 4)
	none := raw(0x1234, 0, 1, 2, 3, 4)
	tests := []struct {
		name string
		set  func([]byte)
		want func(*dns.MsgHdr)
	}{
		{"SetID", func(p []byte) { SetID(p, 0xBEEF) }, func(h *dns.MsgHdr) { h.Id = 0xBEEF }},
		{"SetRD on", func(p []byte) { SetRD(p, true) }, func(h *dns.MsgHdr) { h.RecursionDesired = true }},
		{"SetRD off", func(p []byte) { SetRD(p, false) }, func(h *dns.MsgHdr) { h.RecursionDesired = false }},
		{"SetCD on", func(p []byte) { SetCD(p, true) }, func(h *dns.MsgHdr) { h.CheckingDisabled = true }},
		{"SetCD off", func(p []byte) { SetCD(p, false) }, func(h *dns.MsgHdr) { h.CheckingDisabled = false }},
		{"SetAD on", func(p []byte) { SetAD(p, true) }, func(h *dns.MsgHdr) { h.AuthenticatedData = true }},
		{"SetAD off", func(p []byte) { SetAD(p, false) }, func(h *dns.MsgHdr) { h.AuthenticatedData = false }},
	}
	for _, tt := range tests {
		for _, orig := range [][]byte{all, none} {
			pkt := bytes.Clone(orig)
			tt.set(pkt)
			got, want := header(t, pkt), header(t, orig)
			tt.want(&want)
			if got != want {
				t.Errorf("%s on %x: header %+v, want %+v", tt.name, orig, got, want)
			}
			if !bytes.Equal(pkt[4:], orig[4:]) {
				t.Errorf("%s changed the counts: %x", tt.name, pkt)
			}
		}
	}
}

// header decodes the flags word the way miekg/dns does, without the sections.
func header(t *testing.T, pkt []byte) dns.MsgHdr {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(raw(ID(pkt), flags(pkt), 0, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	return m.MsgHdr
}

func TestHeaderShortPanics(t *testing.T) {
	for name, f := range map[string]func([]byte){
		"ID":          func(p []byte) { ID(p) },
		"SetID":       func(p []byte) { SetID(p, 1) },
		"IsResponse":  func(p []byte) { IsResponse(p) },
		"IsTruncated": func(p []byte) { IsTruncated(p) },
		"Rcode":       func(p []byte) { Rcode(p) },
		"SetRD":       func(p []byte) { SetRD(p, true) },
		"SetCD":       func(p []byte) { SetCD(p, true) },
		"Count":       func(p []byte) { Count(p, Additional) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s on 11 octets did not panic", name)
				}
			}()
			f(make([]byte, HeaderLen-1))
		}()
	}
}

// ExtendedRcode is the header's 4 bits with the first OPT record's upper 8 (RFC 6891 §6.1.3),
// and FindOPT finds that OPT: none without one, none past records that do not parse.
func TestExtendedRcodeAndFindOPT(t *testing.T) {
	msg := func(rcode int, opt bool) []byte {
		m := new(dns.Msg)
		m.SetQuestion("example.com.", dns.TypeA)
		m.Response = true
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "ns.example.com.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: []byte{192, 0, 2, 1}})
		if opt {
			m.SetEdns0(1232, false)
		}
		m.Rcode = rcode // miekg/dns packs the upper bits into the OPT
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	badvers := msg(dns.RcodeBadVers, true)
	cut := badvers[:len(badvers)-3] // the OPT record cut short: ARCOUNT still counts it
	for _, tc := range []struct {
		name  string
		msg   []byte
		rcode int
		opt   bool
	}{
		{"no OPT", msg(dns.RcodeRefused, false), dns.RcodeRefused, false},
		{"OPT, header rcode only", msg(dns.RcodeNameError, true), dns.RcodeNameError, true},
		{"BADVERS in the OPT", badvers, dns.RcodeBadVers, true},
		{"OPT cut short", cut, dns.RcodeSuccess, false}, // BADVERS's header bits are 0
	} {
		if got := ExtendedRcode(tc.msg); got != tc.rcode {
			t.Errorf("%s: ExtendedRcode %d, want %d", tc.name, got, tc.rcode)
		}
		opt, ok := FindOPT(tc.msg)
		if ok != tc.opt || ok && (opt.Type != TypeOPT || opt.Section != Additional || opt.End != len(tc.msg)) {
			t.Errorf("%s: FindOPT %+v, %v; want found %v, the message's last record", tc.name, opt, ok, tc.opt)
		}
	}
}
