package server

import (
	"reflect"
	"testing"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// prepare builds the common query without unpacking it (plainQuery); the result must be the
// message the whole Unpack and SetEdns0 gave: the header bits, the name as miekg/dns presents it
// (escapes, case), the stub's own OPT.
func TestPlainQueryIsWhatUnpackGives(t *testing.T) {
	for _, tc := range []struct {
		name             string
		edns, do, cd, ad bool
	}{
		{"Ex.Com.", false, false, false, false},
		{`a\.b\032c.example.`, true, true, true, true},
		{"x.", true, false, false, true},
		{".", false, false, true, false},
	} {
		m := new(dns.Msg)
		m.SetQuestion(tc.name, dns.TypeAAAA)
		m.CheckingDisabled, m.AuthenticatedData, m.Zero = tc.cd, tc.ad, true
		if tc.edns {
			m.SetEdns0(1400, tc.do)
		}
		pkt, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		var r wire.Request
		if err := r.Parse(pkt); err != nil {
			t.Fatal(err)
		}
		got, err := plainQuery(pkt, &r)
		if err != nil || got == nil {
			t.Fatalf("%s: plainQuery = %v, %v", tc.name, got, err)
		}
		want := new(dns.Msg)
		if err := want.Unpack(pkt); err != nil {
			t.Fatal(err)
		}
		want.Extra = nil
		want.SetEdns0(wire.DefaultUDPSize, r.DO)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, want)
		}
	}
	// A query with an EDNS option takes the whole Unpack.
	m := new(dns.Msg)
	m.SetQuestion("opt.example.", dns.TypeA)
	m.SetEdns0(1232, false)
	m.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0102030405060708"}}
	pkt, _ := m.Pack()
	var r wire.Request
	if err := r.Parse(pkt); err != nil {
		t.Fatal(err)
	}
	if got, err := plainQuery(pkt, &r); got != nil || err != nil {
		t.Errorf("query with a cookie: plainQuery = %v, %v; want nil, nil", got, err)
	}
}
