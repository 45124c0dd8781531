package server

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// prepare builds the upstream query in wire form, without a dns.Msg; it must be the message that
// unpacking the client's query, replacing its OPT with the stub's (SetEdns0), setting RD and AD
// and clearing the bits a query has no use for (AA, TC, RA, Z) gives: the ID, opcode and CD bit,
// the question byte for byte (escapes, case), the stub's own OPT with the client's DO, and no
// client EDNS option.
func TestPrepareIsTheClientsQueryWithTheStubsOPT(t *testing.T) {
	cookie := []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
	for _, tc := range []struct {
		name             string
		edns, do, cd, ad bool
		rd               bool
		opts             []dns.EDNS0
	}{
		{name: "Ex.Com."},
		{name: `a\.b\032c.example.`, edns: true, do: true, cd: true, ad: true, rd: true},
		{name: "x.", edns: true, ad: true},
		{name: ".", cd: true},
		{name: "opt.example.", edns: true, opts: cookie},
	} {
		m := new(dns.Msg)
		m.SetQuestion(tc.name, dns.TypeAAAA)
		m.Id = 0xbeef
		m.RecursionDesired = tc.rd
		m.CheckingDisabled, m.AuthenticatedData = tc.cd, tc.ad
		m.Zero, m.Authoritative, m.Truncated, m.RecursionAvailable = true, true, true, true // stray bits
		if tc.edns {
			m.SetEdns0(1400, tc.do)
			m.IsEdns0().Option = tc.opts
		}
		pkt, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		var r wire.Request
		q, err := prepare(pkt, &r)
		if err != nil {
			t.Fatalf("%s: prepare: %v", tc.name, err)
		}
		if len(q) != queryLen(&r) || cap(q) != len(q) {
			t.Errorf("%s: query of %d octets (cap %d), want %d", tc.name, len(q), cap(q), queryLen(&r))
		}
		qlen := len(r.QName) + 4
		if !bytes.Equal(q[wire.HeaderLen:wire.HeaderLen+qlen], pkt[wire.HeaderLen:wire.HeaderLen+qlen]) {
			t.Errorf("%s: question %x, want the client's %x", tc.name, q[wire.HeaderLen:wire.HeaderLen+qlen], pkt[wire.HeaderLen:wire.HeaderLen+qlen])
		}
		got := new(dns.Msg)
		if err := got.Unpack(q); err != nil {
			t.Fatalf("%s: the query does not unpack: %v", tc.name, err)
		}
		want := new(dns.Msg)
		if err := want.Unpack(pkt); err != nil {
			t.Fatal(err)
		}
		want.Extra = nil
		want.SetEdns0(wire.DefaultUDPSize, tc.do)
		want.RecursionDesired, want.AuthenticatedData = true, true
		want.Zero, want.Authoritative, want.Truncated, want.RecursionAvailable = false, false, false, false
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, want)
		}
	}
}

// A packet that does not parse is prepare's error, for the FORMERR the client gets.
func TestPrepareRefusesWhatParseRefuses(t *testing.T) {
	m := new(dns.Msg)
	m.SetQuestion("two.example.", dns.TypeA)
	m.Question = append(m.Question, m.Question[0])
	pkt, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	var r wire.Request
	if q, err := prepare(pkt, &r); err == nil || q != nil {
		t.Errorf("two questions: prepare = %x, %v; want an error", q, err)
	}
}
