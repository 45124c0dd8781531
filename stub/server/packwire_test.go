package server

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// packWire gives the client the reply pack gives, from the upstream's octets: same header bits,
// rcode, question (the client's letter case) and records, without the upstream's OPT; and it
// declines (ok false) what only pack can do.
func TestPackWireIsPack(t *testing.T) {
	rr := func(s string) dns.RR {
		x, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	soa := rr("example. 60 IN SOA ns.example. host.example. 1 7200 3600 1209600 30")
	type tc struct {
		name     string
		reply    func(q *dns.Msg) *dns.Msg
		client   func(m *dns.Msg) // the client's query, changed from a plain A query
		proto    int
		compress bool
		want     bool // packWire takes it
	}
	ednsReply := func(m *dns.Msg) *dns.Msg { m.SetEdns0(1232, false); return m }
	tests := []tc{
		{name: "TTL 0 answer with OPT", want: true, reply: func(q *dns.Msg) *dns.Msg {
			m := new(dns.Msg).SetReply(q)
			m.Answer = []dns.RR{rr("www.example. 0 IN A 192.0.2.1")}
			return ednsReply(m)
		}},
		{name: "REFUSED without OPT", want: true, reply: func(q *dns.Msg) *dns.Msg {
			return new(dns.Msg).SetRcode(q, dns.RcodeRefused)
		}},
		{name: "NXDOMAIN, client case, compressed upstream", want: true, compress: true,
			client: func(m *dns.Msg) { m.Question[0].Name = "WwW.ExAmple." },
			reply: func(q *dns.Msg) *dns.Msg {
				m := new(dns.Msg).SetRcode(q, dns.RcodeNameError)
				m.Question[0].Name = "www.example."
				m.Ns = []dns.RR{soa}
				return ednsReply(m)
			}},
		{name: "AD kept for a client with DO", want: true,
			client: func(m *dns.Msg) { m.SetEdns0(1232, true) },
			reply: func(q *dns.Msg) *dns.Msg {
				m := new(dns.Msg).SetReply(q)
				m.AuthenticatedData = true
				m.Answer = []dns.RR{rr("www.example. 0 IN A 192.0.2.1")}
				return ednsReply(m)
			}},
		{name: "AD cleared for a client without AD or DO", want: true,
			client: func(m *dns.Msg) { m.AuthenticatedData = false },
			reply: func(q *dns.Msg) *dns.Msg {
				m := new(dns.Msg).SetReply(q)
				m.AuthenticatedData = true
				m.Answer = []dns.RR{rr("www.example. 0 IN A 192.0.2.1")}
				return m
			}},
		{name: "CD and RD echoed from the client", want: true,
			client: func(m *dns.Msg) { m.CheckingDisabled, m.RecursionDesired = true, false },
			reply: func(q *dns.Msg) *dns.Msg {
				m := new(dns.Msg).SetReply(q)
				m.CheckingDisabled, m.RecursionDesired = false, true
				return m
			}},
		{name: "extended rcode (BADCOOKIE's upper bits) dropped with the OPT", want: true, reply: func(q *dns.Msg) *dns.Msg {
			m := new(dns.Msg).SetReply(q)
			m = ednsReply(m)
			m.Rcode = dns.RcodeBadCookie
			return m
		}},
		{name: "OPT before another additional record", want: false, reply: func(q *dns.Msg) *dns.Msg {
			m := ednsReply(new(dns.Msg).SetReply(q))
			m.Extra = append(m.Extra, rr("ns.example. 0 IN A 192.0.2.9"))
			return m
		}},
		{name: "too big for a plain UDP client: pack compresses", want: false, proto: protoUDP, reply: func(q *dns.Msg) *dns.Msg {
			m := new(dns.Msg).SetReply(q)
			for range 40 {
				m.Answer = append(m.Answer, rr("www.example. 0 IN A 192.0.2.1"))
			}
			return m
		}},
		{name: "as big over TCP", want: true, proto: protoTCP, reply: func(q *dns.Msg) *dns.Msg {
			m := new(dns.Msg).SetReply(q)
			for range 40 {
				m.Answer = append(m.Answer, rr("www.example. 0 IN A 192.0.2.1"))
			}
			return m
		}},
	}
	for _, tt := range tests {
		q := new(dns.Msg).SetQuestion("www.example.", dns.TypeA)
		q.Id, q.AuthenticatedData = 4242, true
		if tt.client != nil {
			tt.client(q)
		}
		pkt, err := q.Pack()
		if err != nil {
			t.Fatal(err)
		}
		var r wire.Request
		if err := r.Parse(pkt); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		up := tt.reply(q)
		up.Id = 999 // the upstream's own ID: ExchangeWire restores the query's, pack and packWire the client's
		up.Compress = tt.compress
		reply, err := up.Pack()
		if err != nil {
			t.Fatal(err)
		}
		orig := string(reply)
		proto := tt.proto
		if proto == 0 {
			proto = protoUDP
		}
		got, ok := packWire(reply, &r, proto, make([]byte, 0, 512))
		if string(reply) != orig {
			t.Errorf("%s: packWire wrote to the upstream's reply", tt.name)
		}
		if ok != tt.want {
			t.Fatalf("%s: packWire ok = %v, want %v", tt.name, ok, tt.want)
		}
		if !ok {
			continue
		}
		want, err := pack(reply, &r, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := normal(t, got), normal(t, want); g != w {
			t.Errorf("%s:\npackWire %s\n    pack %s", tt.name, g, w)
		}
		if got[wire.HeaderLen] != pkt[wire.HeaderLen] || string(got[wire.HeaderLen:wire.HeaderLen+len(r.QName)]) != string(r.QName) {
			t.Errorf("%s: question %q, want the client's %q", tt.name, got[wire.HeaderLen:wire.HeaderLen+len(r.QName)], r.QName)
		}
	}
}

// normal is a reply's text with names lowercased: pack's compression may give an owner name the
// question's letter case, which means the same name (RFC 4343).
func normal(t *testing.T, b []byte) string {
	t.Helper()
	it := wire.Records(b) // miekg/dns forgives counts above the records present: walk them
	for it.Next() {
	}
	if it.Err() != nil || it.Offset() != len(b) {
		t.Fatalf("reply's counts do not match its records (%v, %d of %d octets)", it.Err(), it.Offset(), len(b))
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("reply does not unpack: %v", err)
	}
	q := m.Question[0].Name
	m.Question = nil
	return q + " " + strings.ToLower(m.String())
}

// An upstream's extended rcode (RFC 6891 §6.1.3: its upper 8 bits are in the OPT record) reaches
// a client with EDNS whole, on both rendering paths (packWire, and pack for a UDP reply too big
// to patch); a client without EDNS gets the header's 4 bits, as CoreDNS gives it. Found by the
// fresh-user trial: BADCOOKIE (23) reached the client as YXRRSET (7), 19 as NXDOMAIN.
func TestUpstreamExtendedRcodeReachesTheClient(t *testing.T) {
	for _, rcode := range []int{dns.RcodeBadVers, dns.RcodeBadCookie, 19} {
		for _, big := range []bool{false, true} {
			fwd := &fakeForwarder{answer: func(q *dns.Msg) (*dns.Msg, error) {
				m := new(dns.Msg).SetReply(q)
				if big { // 60 records: over 512 octets, so a plain UDP reply goes through pack
					full, _ := records(60)(q)
					m.Answer = full.Answer
				}
				m.SetEdns0(1232, false)
				m.Rcode = rcode
				return m, nil
			}}
			_, addr := startServer(t, fwd, nil)
			for _, tc := range []struct {
				proto string
				edns  int
				want  int
			}{
				{"udp", 1232, rcode},
				{"tcp", 1232, rcode},
				{"udp", 0, rcode & 0xF},
				{"tcp", 0, rcode & 0xF},
			} {
				name := fmt.Sprintf("x%d.example.", rcode)
				if r := query(t, tc.proto, addr, name, dns.TypeA, tc.edns); r.Rcode != tc.want {
					t.Errorf("upstream rcode %d (big %v), %s client with EDNS %d: rcode %d, want %d",
						rcode, big, tc.proto, tc.edns, r.Rcode, tc.want)
				}
			}
		}
	}
}
