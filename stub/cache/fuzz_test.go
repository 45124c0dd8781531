package cache

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// FuzzSetGet stores arbitrary upstream replies and checks that whatever the
// cache serves unpacks and holds exactly the stored records (TTLs aside), with
// the header and question patched for the asking client.
func FuzzSetGet(f *testing.F) {
	addSetSeeds(f)

	f.Fuzz(func(t *testing.T, pkt []byte, variant uint8) {
		var up dns.Msg
		if up.Unpack(pkt) != nil || len(up.Question) != 1 {
			return
		}
		q := up.Question[0]
		qm := new(dns.Msg)
		qm.SetQuestion(q.Name, q.Qtype)
		qm.Question[0].Qclass = q.Qclass
		qm.Id = 0x1234
		qm.RecursionDesired = variant&1 != 0
		qm.CheckingDisabled = up.CheckingDisabled
		qm.AuthenticatedData = up.Id&1 != 0 // the client's AD, independent of the upstream's
		if o := up.IsEdns0(); o != nil {
			qm.SetEdns0(1232, o.Do())
		}
		qpkt, err := qm.Pack()
		if err != nil {
			return
		}
		if variant&2 != 0 { // ask in another letter case than the upstream's
			swapCase(qpkt[wire.HeaderLen:])
		}
		var r wire.Request
		if r.Parse(qpkt) != nil {
			return
		}
		before := up.String()
		c, clk := newCache(Config{Size: 64, ServfailTTL: 3 * time.Second, MinTTL: time.Duration(variant>>2) * time.Second})
		c.Set(&r, &up)
		if up.String() != before {
			t.Fatal("Set modified the caller's message")
		}
		clk.Advance(time.Duration(variant>>4) * time.Second)
		out, ok := c.Get(nil, &r)
		if !ok {
			return
		}
		var got dns.Msg
		if err := got.Unpack(out); err != nil {
			t.Fatalf("served answer does not unpack: %v\n%x", err, out)
		}
		if got.Id != r.ID || got.RecursionDesired != r.RD || got.CheckingDisabled != r.CD || got.Rcode != up.Rcode || got.Truncated {
			t.Fatalf("header %+v for request %+v, upstream rcode %d", got.MsgHdr, r, up.Rcode)
		}
		if want := up.AuthenticatedData && (r.AD || r.DO); got.AuthenticatedData != want {
			t.Fatalf("AD = %v for request AD=%v DO=%v, upstream AD=%v; want %v", got.AuthenticatedData, r.AD, r.DO, up.AuthenticatedData, want)
		}
		if len(got.Question) != 1 || packName(t, got.Question[0].Name) != string(r.QName) {
			t.Fatalf("question %v, client asked %q", got.Question, r.QName)
		}
		if !sameSet(got.Answer, up.Answer) || !sameSet(got.Ns, up.Ns) || !sameSet(got.Extra, withoutOPT(up.Extra)) {
			t.Fatalf("records differ:\nserved %v\nstored %v", got.String(), up.String())
		}
	})
}

func swapCase(b []byte) {
	for i, c := range b {
		if c == 0 {
			return
		}
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			b[i] = c ^ 0x20
		}
	}
}

func withoutOPT(rrs []dns.RR) []dns.RR {
	var out []dns.RR
	for _, x := range rrs {
		switch x.Header().Rrtype {
		case dns.TypeOPT, dns.TypeTSIG, dns.TypeSIG:
		default:
			out = append(out, x)
		}
	}
	return out
}

// sameSet compares record lists with TTLs and letter case set aside.
func sameSet(a, b []dns.RR) bool {
	norm := func(rrs []dns.RR) []string {
		var s []string
		for _, x := range rrs {
			x = dns.Copy(x)
			x.Header().Ttl = 0
			s = append(s, strings.ToLower(x.String()))
		}
		return s
	}
	return slices.Equal(norm(a), norm(b))
}

// addSetSeeds adds upstream replies of each kind the cache stores (answer, NXDOMAIN, NODATA, a
// mixed-case question, additional records, SERVFAIL), with and without AD.
func addSetSeeds(f *testing.F) {
	seed := func(q string, qtype uint16, rcode int, do bool, answer, ns, extra []string) {
		r := request(f, q, qtype, do, false)
		m := reply(f, r, rcode, rrs(f, answer...), rrs(f, ns...), rrs(f, extra...))
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint8(0))
		// A validated reply, to a client that does not ask for AD (even ID) and one that does.
		m.AuthenticatedData = true
		for _, id := range []uint16{2, 3} {
			m.Id = id
			if b, err = m.Pack(); err != nil {
				f.Fatal(err)
			}
			f.Add(b, uint8(0))
		}
	}
	soa := "example.com. 300 IN SOA ns1.example.com. admin.example.com. 1 7200 900 1209600 60"
	seed("www.example.com.", dns.TypeA, dns.RcodeSuccess, false,
		[]string{"www.example.com. 300 IN CNAME web.example.com.", "web.example.com. 60 IN A 192.0.2.1"},
		[]string{"example.com. 600 IN NS ns1.example.com."}, []string{"ns1.example.com. 900 IN A 192.0.2.53"})
	seed("nx.example.com.", dns.TypeAAAA, dns.RcodeNameError, true, nil, []string{soa}, nil)
	seed("example.com.", dns.TypeMX, dns.RcodeSuccess, false, nil, []string{soa}, nil)
	seed("Example.COM.", dns.TypeTXT, dns.RcodeSuccess, false, []string{`example.com. 60 IN TXT "a" "b"`}, nil, nil)
	seed("srv.example.", dns.TypeSRV, dns.RcodeSuccess, false, []string{"srv.example. 60 IN SRV 0 0 53 t.example."}, nil, []string{"t.example. 60 IN A 192.0.2.7"})
	seed("bad.example.", dns.TypeA, dns.RcodeServerFailure, false, nil, nil, nil)
}
