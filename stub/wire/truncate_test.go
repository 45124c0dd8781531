package wire

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

func mustRR(t testing.TB, s string) dns.RR {
	t.Helper()
	rr, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return rr
}

// bigSet returns a compressed reply, as the cache and the miss path pack it (no OPT), whose
// answer holds n records of qtype: a headless Service's 40 endpoints and its kin.
func bigSet(t testing.TB, qtype uint16, n int) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.Response, m.RecursionAvailable, m.Compress = true, true, true
	switch qtype {
	case dns.TypeA:
		m.SetQuestion("big.alpha.svc.cluster.local.", qtype)
		for i := range n {
			m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf("big.alpha.svc.cluster.local. 5 IN A 10.244.%d.%d", i/200, i%200+2)))
		}
	case dns.TypeAAAA:
		m.SetQuestion("big.alpha.svc.cluster.local.", qtype)
		for i := range n {
			m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf("big.alpha.svc.cluster.local. 5 IN AAAA fd00:10:244::%x", i+2)))
		}
	case dns.TypeSRV:
		m.SetQuestion("_http._tcp.big.alpha.svc.cluster.local.", qtype)
		for i := range n {
			m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf(
				"_http._tcp.big.alpha.svc.cluster.local. 5 IN SRV 0 2 80 10-244-0-%d.big.alpha.svc.cluster.local.", i+2)))
		}
	case dns.TypePTR:
		m.SetQuestion("10.1.96.10.in-addr.arpa.", qtype)
		for i := range n {
			m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf("10.1.96.10.in-addr.arpa. 5 IN PTR name-%d.alpha.svc.cluster.local.", i)))
		}
	case dns.TypeCNAME: // a CNAME chain, then the A set it ends in
		m.SetQuestion("www.example.test.", dns.TypeA)
		m.Answer = append(m.Answer,
			mustRR(t, "www.example.test. 60 IN CNAME edge.cdn.example.net."),
			mustRR(t, "edge.cdn.example.net. 60 IN CNAME pool.cdn.example.net."))
		for i := range n {
			m.Answer = append(m.Answer, mustRR(t, fmt.Sprintf("pool.cdn.example.net. 60 IN A 192.0.2.%d", i+1)))
		}
	default:
		t.Fatalf("no set for type %d", qtype)
	}
	return m
}

// packed is m packed, compressed.
func packed(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fitting counts the records of section s (after all earlier sections whole) that fit in room
// octets, by packing ever longer prefixes: an expectation independent of Truncate.
func fitting(t testing.TB, m *dns.Msg, room int) (an int) {
	t.Helper()
	for k := 1; k <= len(m.Answer); k++ {
		sub := m.Copy()
		sub.Answer, sub.Ns, sub.Extra = m.Answer[:k], nil, nil
		if len(packed(t, sub)) > room {
			return k - 1
		}
	}
	return len(m.Answer)
}

// cut is what the server does to a UDP reply: Truncate to the client's size less the OPT's room,
// then the OPT iff the client sent one.
func cut(msg []byte, size int, edns bool) []byte {
	room := size
	if edns {
		room -= OPTLen
	}
	msg = Truncate(msg, room)
	if edns {
		msg = AppendOPT(msg, DefaultUDPSize, false)
	}
	return msg
}

// A UDP reply too big for the client keeps every whole answer record that fits, in order, with
// TC=1 (issue 12 item 0): a musl client before 1.2.4, which has no TCP fallback, resolves from
// them, as it does against CoreDNS. The records are the reply's own, unpacked by miekg/dns
// (compression pointers intact), as many as packing prefixes says fit, and as many as miekg's
// Msg.Truncate (CoreDNS) keeps.
func TestTruncateKeepsWholeAnswerRecords(t *testing.T) {
	types := []struct {
		name  string
		qtype uint16
	}{{"A", dns.TypeA}, {"AAAA", dns.TypeAAAA}, {"SRV", dns.TypeSRV}, {"PTR", dns.TypePTR}, {"CNAME+A", dns.TypeCNAME}}
	clients := []struct {
		name string
		edns bool
		size int
	}{{"no EDNS", false, 512}, {"EDNS 512", true, 512}, {"EDNS 700", true, 700}, {"EDNS 1232", true, 1232}}
	partial := 0
	for _, ty := range types {
		for _, n := range []int{40, 100} {
			for _, cl := range clients {
				t.Run(fmt.Sprintf("%s×%d/%s", ty.name, n, cl.name), func(t *testing.T) {
					if truncateCase(t, bigSet(t, ty.qtype, n), cl.size, cl.edns) {
						partial++
					}
				})
			}
		}
	}
	if partial < len(types)*len(clients) {
		t.Errorf("only %d cases cut the answer: the sets are too small for the sizes", partial)
	}
}

// truncateCase checks the reply to a client of the given size and says whether the answer was cut.
func truncateCase(t *testing.T, m *dns.Msg, size int, edns bool) bool {
	full := packed(t, m)
	room := size
	if edns {
		room -= OPTLen
	}
	want := fitting(t, m, room)
	if want == 0 {
		t.Fatalf("not one record fits %d octets", room)
	}
	ref := m.Copy()
	if edns {
		ref.SetEdns0(uint16(size), false)
	}
	ref.Truncate(size)
	if len(ref.Answer) != want {
		t.Fatalf("miekg/dns Msg.Truncate keeps %d records, packing prefixes says %d", len(ref.Answer), want)
	}

	out := cut(bytes.Clone(full), size, edns)
	if len(out) > size {
		t.Fatalf("%d octets for a client that takes %d", len(out), size)
	}
	got := unpack(t, out)
	cutShort := want < len(m.Answer)
	if got.Truncated != cutShort || got.Rcode != dns.RcodeSuccess || got.Id != m.Id {
		t.Errorf("header = %+v, want TC=%v NOERROR", got.MsgHdr, cutShort)
	}
	// The OPT, when added, raised ARCOUNT (octets 10-11); nothing else may differ.
	if !cutShort && (!bytes.Equal(out[:10], full[:10]) || !bytes.Equal(out[HeaderLen:len(full)], full[HeaderLen:])) {
		t.Error("a reply that fits was changed")
	}
	if len(got.Question) != 1 || got.Question[0] != m.Question[0] {
		t.Errorf("question = %v, want %v", got.Question, m.Question)
	}
	if len(got.Answer) != want {
		t.Fatalf("%d answer records, want the %d that fit", len(got.Answer), want)
	}
	for i, rr := range got.Answer {
		if rr.String() != m.Answer[i].String() {
			t.Errorf("answer %d = %v, want %v", i, rr, m.Answer[i])
		}
	}
	if len(got.Ns) != 0 {
		t.Errorf("authority = %v, want none", got.Ns)
	}
	if o := got.IsEdns0(); (o != nil) != edns || len(got.Extra) != btoi(edns) {
		t.Errorf("additional = %v, want an OPT iff the client sent one (%v)", got.Extra, edns)
	}
	return cutShort
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Authority and additional records go whole or not at all: a part of an NS set or of the glue
// would say something else than the upstream said. A reply that fits is not touched.
func TestTruncateSectionsWholeOrNotAtAll(t *testing.T) {
	withSections := func(t *testing.T, answers int) *dns.Msg {
		m := bigSet(t, dns.TypeA, answers)
		for i := range 4 {
			m.Ns = append(m.Ns, mustRR(t, fmt.Sprintf("alpha.svc.cluster.local. 30 IN NS ns%d.cluster.local.", i)))
			m.Extra = append(m.Extra, mustRR(t, fmt.Sprintf("ns%d.cluster.local. 30 IN A 10.96.0.%d", i, 10+i)))
		}
		return m
	}
	// sizeOf is the packed size of m with its sections cut to an, ns and ar records.
	sizeOf := func(t *testing.T, m *dns.Msg, an, ns, ar int) int {
		sub := m.Copy()
		sub.Answer, sub.Ns, sub.Extra = m.Answer[:an], m.Ns[:ns], m.Extra[:ar]
		return len(packed(t, sub))
	}
	m := withSections(t, 10)
	tests := []struct {
		name       string
		size       int // octets the reply may take
		an, ns, ar int
		tc         bool
	}{
		{"all fits", sizeOf(t, m, 10, 4, 4), 10, 4, 4, false},
		{"one additional record short", sizeOf(t, m, 10, 4, 4) - 1, 10, 4, 0, true},
		{"three of four additional records fit", sizeOf(t, m, 10, 4, 3), 10, 4, 0, true},
		{"three of four authority records fit", sizeOf(t, m, 10, 3, 0), 10, 0, 0, true},
		{"the answer fits exactly", sizeOf(t, m, 10, 0, 0), 10, 0, 0, true},
		{"nine answer records fit", sizeOf(t, m, 10, 0, 0) - 1, 9, 0, 0, true},
		{"question only", sizeOf(t, m, 0, 0, 0), 0, 0, 0, true},
	}
	full := packed(t, m)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := Truncate(bytes.Clone(full), tt.size)
			if len(out) > tt.size {
				t.Fatalf("%d octets, limit %d", len(out), tt.size)
			}
			got := unpack(t, out)
			if len(got.Answer) != tt.an || len(got.Ns) != tt.ns || len(got.Extra) != tt.ar || got.Truncated != tt.tc {
				t.Fatalf("answer/authority/additional/TC = %d/%d/%d/%v, want %d/%d/%d/%v",
					len(got.Answer), len(got.Ns), len(got.Extra), got.Truncated, tt.an, tt.ns, tt.ar, tt.tc)
			}
			if !tt.tc && !bytes.Equal(out, full) {
				t.Error("a reply that fits was changed")
			}
			want := m.Copy()
			want.Answer, want.Ns, want.Extra, want.Truncated = m.Answer[:tt.an], m.Ns[:tt.ns], m.Extra[:tt.ar], tt.tc
			if got.String() != want.String() {
				t.Errorf("got\n%v\nwant\n%v", got, want)
			}
		})
	}
}

// The question is never cut, however small the size: a reply without it does not match the
// client's query (a client size below 512 octets is not reachable, but the rule holds for any).
func TestTruncateQuestionAlwaysKept(t *testing.T) {
	m := bigSet(t, dns.TypeA, 3)
	full := packed(t, m)
	out := Truncate(bytes.Clone(full), HeaderLen+1)
	got := unpack(t, out)
	if !got.Truncated || len(got.Answer) != 0 || len(got.Question) != 1 || got.Question[0] != m.Question[0] {
		t.Errorf("got %v, want the question alone with TC=1", got)
	}
}

// The server cuts replies on the reader's goroutine for every UDP hit that is too big: in place,
// without an allocation.
func TestTruncateNoAllocs(t *testing.T) {
	full := packed(t, bigSet(t, dns.TypeA, 40))
	buf := make([]byte, 0, 2048)
	allocs := testing.AllocsPerRun(100, func() {
		buf = append(buf[:0], full...)
		buf = Truncate(buf, MinUDPSize-OPTLen)
		buf = AppendOPT(buf, DefaultUDPSize, true)
	})
	if allocs != 0 {
		t.Errorf("Truncate allocates %v times per run, want 0", allocs)
	}
}

// FuzzTruncate checks that Truncate never panics or grows a message, and that what it leaves of
// a message whose records all parse is whole records the header counts, within size (or the
// question alone when that is larger), with TC set iff a record went.
func FuzzTruncate(f *testing.F) {
	f.Add(packed(f, bigSet(f, dns.TypeA, 40)), uint16(512))
	f.Add(packed(f, bigSet(f, dns.TypeCNAME, 40)), uint16(501))
	f.Add(reply(f), uint16(60))
	f.Add([]byte{0, 1, 0x81, 0, 0, 0, 0, 1}, uint16(5))
	f.Fuzz(func(t *testing.T, msg []byte, size uint16) {
		in := bytes.Clone(msg)
		out := Truncate(in, int(size))
		if len(out) > len(msg) || !bytes.Equal(out[min(len(out), HeaderLen):], msg[min(len(out), HeaderLen):len(out)]) {
			t.Fatalf("Truncate changed more than the header: %x -> %x", msg, out)
		}
		it := Records(msg)
		for it.Next() {
		}
		if it.Err() != nil || it.Offset() != len(msg) || len(msg) <= int(size) {
			return // not a message Truncate promises anything about, or one that fits
		}
		qi := Records(msg)
		qEnd := qi.Offset()
		if len(out) > max(int(size), qEnd) {
			t.Fatalf("%d octets left, size %d, question ends at %d", len(out), size, qEnd)
		}
		it = Records(out)
		for it.Next() {
		}
		if it.Err() != nil || it.Offset() != len(out) {
			t.Fatalf("the cut message does not walk: %v at %d of %d", it.Err(), it.Offset(), len(out))
		}
		dropped := false
		for _, s := range []Section{Answer, Authority, Additional} {
			if c := Count(out, s); c > Count(msg, s) || (s != Answer && c != 0 && c != Count(msg, s)) {
				t.Fatalf("section %d: %d records kept of %d", s, c, Count(msg, s))
			}
			dropped = dropped || Count(out, s) != Count(msg, s)
		}
		if IsTruncated(out) != (dropped || IsTruncated(msg)) {
			t.Fatalf("TC=%v, records dropped %v", IsTruncated(out), dropped)
		}
	})
}
