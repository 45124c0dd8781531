package cache

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/wire"
)

// wireCase is an upstream reply to a query for www.example.com. (type A unless qtype says), given
// in wire form: SetWire must store what Set stores for the message miekg/dns unpacks from it, as
// the server did before it handed the cache the octets.
type wireCase struct {
	name  string
	cfg   Config
	qname string // default www.example.com.
	qtype uint16 // default A
	do    bool
	pkt   func(t testing.TB, r *wire.Request) []byte
	// fast: the octets decide (buildWire's done); otherwise SetWire unpacks with miekg/dns.
	fast   bool
	cached bool
	raw    bool // pkt is crafted: not re-packed with compression
	// sameLen: SetWire's entry is exactly as long as Set's, not merely no longer.
	sameLen bool
}

func packMsg(t testing.TB, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// msgCase is a wireCase whose reply is built with reply() and then changed by edit.
func msgCase(rcode int, answer, ns, extra []string, edit func(m *dns.Msg)) func(t testing.TB, r *wire.Request) []byte {
	return func(t testing.TB, r *wire.Request) []byte {
		m := reply(t, r, rcode, rrs(t, answer...), rrs(t, ns...), rrs(t, extra...))
		if edit != nil {
			edit(m)
		}
		return packMsg(t, m)
	}
}

func noOPT(m *dns.Msg) { m.Extra = withoutOPT(m.Extra) }

func tsig(t testing.TB) dns.RR {
	return &dns.TSIG{
		Hdr:       dns.RR_Header{Name: "key.example.", Rrtype: dns.TypeTSIG, Class: dns.ClassANY},
		Algorithm: dns.HmacSHA256, TimeSigned: 1767225600, Fudge: 300,
		MACSize: 4, MAC: "01020304", OrigId: 7,
	}
}

func wireCases() []wireCase {
	const (
		soa  = "example.com. 300 IN SOA ns1.example.com. admin.example.com. 1 7200 900 1209600 60"
		a1   = "www.example.com. 300 IN A 192.0.2.1"
		a2   = "www.example.com. 60 IN A 192.0.2.2"
		ns   = "example.com. 600 IN NS ns1.example.com."
		glue = "ns1.example.com. 900 IN A 192.0.2.53"
	)
	sf := Config{ServfailTTL: 3 * time.Second}
	var forty []string // a headless Service's endpoints: 1,226 octets from CoreDNS over TCP
	for i := range 40 {
		forty = append(forty, fmt.Sprintf("www.example.com. 5 IN A 10.244.0.%d", i+2))
	}
	var long []string // past maxWireCompress
	for i := range maxWireCompress/256 + 1 {
		long = append(long, fmt.Sprintf(`www.example.com. 5 IN TXT "%0250d"`, i))
	}
	return []wireCase{
		{name: "40 A records", pkt: msgCase(dns.RcodeSuccess, forty, nil, nil, nil), fast: true, cached: true, sameLen: true},
		{name: "longer than SetWire compresses", qtype: dns.TypeTXT, pkt: msgCase(dns.RcodeSuccess, long, nil, nil, nil), cached: true},
		{name: "positive A", pkt: msgCase(dns.RcodeSuccess, []string{a1, a2}, []string{ns}, []string{glue}, nil), fast: true, cached: true},
		{name: "positive AAAA", qtype: dns.TypeAAAA, pkt: msgCase(dns.RcodeSuccess, []string{"www.example.com. 300 IN AAAA 2001:db8::1"}, nil, nil, nil), fast: true, cached: true},
		{name: "CNAME chain", pkt: msgCase(dns.RcodeSuccess, []string{
			"www.example.com. 300 IN CNAME web.example.com.", "web.example.com. 100 IN CNAME web.example.net.", "web.example.net. 60 IN A 192.0.2.1",
		}, nil, nil, nil), fast: true, cached: true},
		{name: "NXDOMAIN with SOA", pkt: msgCase(dns.RcodeNameError, nil, []string{soa}, nil, nil), fast: true, cached: true},
		{name: "NODATA", pkt: msgCase(dns.RcodeSuccess, nil, []string{soa}, nil, nil), fast: true, cached: true},
		{name: "NXDOMAIN without SOA", pkt: msgCase(dns.RcodeNameError, nil, nil, nil, nil), fast: true},
		{name: "NODATA without SOA", pkt: msgCase(dns.RcodeSuccess, nil, []string{ns}, nil, nil), fast: true},
		{name: "TTL 0", pkt: msgCase(dns.RcodeSuccess, []string{"www.example.com. 0 IN A 192.0.2.1", a1}, nil, nil, nil), fast: true},
		{name: "SERVFAIL with ServfailTTL", cfg: sf, pkt: msgCase(dns.RcodeServerFailure, nil, nil, nil, nil), fast: true, cached: true},
		{name: "SERVFAIL with SOA and ServfailTTL", cfg: sf, pkt: msgCase(dns.RcodeServerFailure, nil, []string{soa}, nil, nil), fast: true, cached: true},
		{name: "SERVFAIL without ServfailTTL", pkt: msgCase(dns.RcodeServerFailure, nil, nil, nil, nil), fast: true},
		{name: "TC", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Truncated = true }), fast: true},
		{name: "REFUSED", pkt: msgCase(dns.RcodeRefused, nil, []string{soa}, nil, nil), fast: true},
		{name: "not a response", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Response = false }), fast: true},
		{name: "opcode NOTIFY", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), fast: true},
		{name: "no question", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Question = nil }), fast: true},
		{name: "two questions", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) })},
		{name: "other name", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Question[0].Name = "www.example.org." }), fast: true},
		{name: "same-length other name", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Question[0].Name = "www.exbmple.com." }), fast: true},
		{name: "other type", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeAAAA }), fast: true},
		{name: "other class", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), fast: true},
		{name: "without OPT", pkt: msgCase(dns.RcodeSuccess, []string{a1}, []string{ns}, []string{glue}, noOPT), fast: true, cached: true},
		{name: "with DO", do: true, pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, []string{glue}, nil), fast: true, cached: true},
		{name: "OPT not last", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, []string{glue}, func(m *dns.Msg) {
			m.Extra = []dns.RR{m.Extra[len(m.Extra)-1], m.Extra[0]}
		}), cached: true},
		{name: "TSIG last", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, []string{glue}, func(m *dns.Msg) {
			m.Extra = append(m.Extra, tsig(nil))
		}), fast: true, cached: true},
		{name: "TSIG before glue", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, []string{glue}, func(m *dns.Msg) {
			m.Extra = append([]dns.RR{tsig(nil)}, m.Extra...)
		}), cached: true},
		{name: "SIG(0) last", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) {
			m.Extra = append(m.Extra, &dns.SIG{RRSIG: dns.RRSIG{
				Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeSIG, Class: dns.ClassANY}, Algorithm: dns.ED25519,
				SignerName: "key.example.", Signature: "AQID",
			}})
		}), fast: true, cached: true},
		{name: "uppercase question name", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Question[0].Name = "WWW.Example.COM." }), fast: true, cached: true},
		{name: "uppercase query name", qname: "WwW.ExAmPlE.cOm.", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, nil), fast: true, cached: true},
		{name: "extended rcode BADVERS", pkt: msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, func(m *dns.Msg) { m.Rcode = dns.RcodeBadVers }), fast: true},
		{name: "extended rcode on NXDOMAIN", pkt: msgCase(dns.RcodeNameError, nil, []string{soa}, nil, func(m *dns.Msg) {
			m.Rcode = dns.RcodeNameError | 1<<4
		}), fast: true},
		{name: "MX SRV TXT PTR NS DNAME", qtype: dns.TypeANY, pkt: msgCase(dns.RcodeSuccess, []string{
			"www.example.com. 300 IN MX 10 mx.example.com.",
			"www.example.com. 300 IN SRV 0 5 53 ns1.example.com.",
			`www.example.com. 300 IN TXT "v=spf1 -all" "" "x"`,
			"www.example.com. 300 IN PTR host.example.com.",
			"www.example.com. 300 IN NS ns1.example.com.",
			"www.example.com. 300 IN DNAME example.net.",
			"www.example.com. 300 IN TYPE65280 \\# 3 010203",
		}, nil, nil, nil), fast: true, cached: true},
		{name: "RRSIG is unpacked", do: true, pkt: msgCase(dns.RcodeSuccess, []string{
			a1, "www.example.com. 300 IN RRSIG A 13 3 300 20260201000000 20260101000000 12345 example.com. AQID",
		}, nil, nil, nil), cached: true},
		{name: "trailing octets", pkt: func(t testing.TB, r *wire.Request) []byte {
			return append(msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, nil)(t, r), 0, 0)
		}, cached: true, raw: true},
		{name: "ARCOUNT too high", pkt: func(t testing.TB, r *wire.Request) []byte {
			b := msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, nil)(t, r)
			binary.BigEndian.PutUint16(b[10:], binary.BigEndian.Uint16(b[10:])+1)
			return b
		}, cached: true, raw: true},
		{name: "compressed question", pkt: func(t testing.TB, r *wire.Request) []byte {
			// The question name is a pointer to the answer's owner name, uncompressed.
			b := msgCase(dns.RcodeSuccess, []string{a1}, nil, nil, noOPT)(t, r)
			n := len(r.QName)
			out := append([]byte{}, b[:wire.HeaderLen]...)
			out = append(out, 0xC0, byte(wire.HeaderLen+2+4))
			out = append(out, b[wire.HeaderLen+n:]...)
			return out
		}, cached: true, raw: true},
		{name: "CNAME pointing into a TTL", qtype: dns.TypeCNAME, pkt: func(t testing.TB, r *wire.Request) []byte {
			b := msgCase(dns.RcodeSuccess, []string{"www.example.com. 60 IN CNAME ."}, nil, nil, noOPT)(t, r)
			it := wire.Records(b)
			if !it.Next() {
				t.Fatal("no record")
			}
			x := it.RR()
			// RDATA "\x00" (the root) becomes a pointer to the TTL's first octet, also 0 (the
			// root) until a TTL above 2^24 s.
			b = append(b[:x.End-1], 0xC0|byte(x.TTLOff>>8), byte(x.TTLOff))
			binary.BigEndian.PutUint16(b[x.TTLOff+4:], 2)
			return b
		}, cached: true, raw: true},
		{name: "SERVFAIL header-only", cfg: sf, pkt: func(t testing.TB, r *wire.Request) []byte {
			return msgCase(dns.RcodeServerFailure, nil, nil, nil, nil)(t, r)[:wire.HeaderLen]
		}, fast: true, raw: true},
		{name: "short", pkt: func(t testing.TB, r *wire.Request) []byte { return []byte{1, 2, 3} }, fast: true, raw: true},
	}
}

// TestSetWireMatchesSet stores each reply with Set (after unpacking it, as the server did) and
// with SetWire, with and without miekg/dns's name compression, and checks the two caches answer
// alike: the same records, TTLs, flags and rcode, for the same lifetime, or neither caches it.
func TestSetWireMatchesSet(t *testing.T) {
	for _, tt := range wireCases() {
		compressions := []bool{false, true}
		if tt.raw {
			compressions = compressions[:1] // crafted octets: packing would undo them
		}
		for _, compress := range compressions {
			t.Run(fmt.Sprintf("%s/compress=%v", tt.name, compress), func(t *testing.T) {
				qname, qtype := cmpOr(tt.qname, "www.example.com."), cmpOr(tt.qtype, dns.TypeA)
				r := request(t, qname, qtype, tt.do, false)
				pkt := tt.pkt(t, r)
				if compress {
					var m dns.Msg
					if m.Unpack(pkt) == nil {
						m.Compress = true
						pkt = packMsg(t, &m)
					}
				}
				cfg := tt.cfg
				set, clk1 := newCache(cfg)
				wc, clk2 := newCache(cfg)
				if _, done := wc.buildWire(r, pkt); done != tt.fast {
					t.Errorf("decided from the octets: %v, want %v", done, tt.fast)
				}
				var msg dns.Msg
				if msg.Unpack(pkt) == nil {
					set.Set(r, &msg)
				}
				orig := bytes.Clone(pkt)
				wc.SetWire(r, pkt)
				if !bytes.Equal(pkt, orig) {
					t.Fatal("SetWire modified the reply")
				}
				if got := wc.Len() == 1; got != tt.cached || set.Len() != wc.Len() {
					t.Fatalf("SetWire cached: %v, want %v; Set cached %d", got, tt.cached, set.Len())
				}
				if !tt.cached {
					return
				}
				es, _ := set.find(r)
				ew, _ := wc.find(r)
				if es.lifetime != ew.lifetime {
					t.Errorf("lifetime %v, Set's %v", ew.lifetime, es.lifetime)
				}
				// SetWire compresses as Set does, whatever the upstream did: a longer entry
				// would fit fewer records in a client's UDP size (wire.Truncate) and cost memory.
				if lw, ls := len(ew.msg()), len(es.msg()); tt.fast && (lw > ls || tt.sameLen && lw != ls) {
					t.Errorf("SetWire's entry holds %d octets, Set's %d (reply %d)", lw, ls, len(pkt))
				}
				// Ask in another case than stored, with and without AD, at a few ages.
				var prev time.Duration
				for _, age := range []time.Duration{0, time.Second, ew.lifetime - time.Nanosecond} {
					clk1.Advance(age - prev)
					clk2.Advance(age - prev)
					prev = age
					for _, ad := range []bool{false, true} {
						q := request(t, strings.ToUpper(qname), qtype, tt.do, false)
						q.AD = ad
						want, got := get(t, set, q), get(t, wc, q)
						if want == nil || got == nil {
							t.Fatalf("age %v: Set hit %v, SetWire hit %v", age, want != nil, got != nil)
						}
						if w, g := normalized(want), normalized(got); w != g {
							t.Errorf("age %v AD %v:\nSetWire\n%s\nSet\n%s", age, ad, g, w)
						}
						// miekg/dns forgives counts above the records present; clients may not.
						if b, _ := wc.Serve(nil, q); !walks(b) {
							t.Errorf("SetWire's answer does not walk to its end with the header's counts: %x", b)
						}
					}
				}
			})
		}
	}
}

// walks reports whether b's records, as its header counts them, end exactly at its end.
func walks(b []byte) bool {
	it := wire.Records(b)
	for it.Next() {
	}
	return it.Err() == nil && it.Offset() == len(b)
}

func cmpOr[T comparable](a, b T) T {
	var zero T
	if a != zero {
		return a
	}
	return b
}

// normalized is m as dig prints it, names in lower case (the cache echoes the client's case in
// the question, and compression may carry it into the records).
func normalized(m *dns.Msg) string {
	return strings.ToLower(m.String())
}

func typicalReply(t testing.TB) (*wire.Request, *dns.Msg, []byte) {
	r := request(t, "www.example.com.", dns.TypeA, false, false)
	m := reply(t, r, dns.RcodeSuccess, rrs(t, "www.example.com. 300 IN A 192.0.2.1", "www.example.com. 300 IN A 192.0.2.2"), nil, nil)
	m.Compress = true
	return r, m, packMsg(t, m)
}

// SetWire allocates the entry and nothing else for a reply of up to stackRRs records.
func TestSetWireAllocatesOnlyTheEntry(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	r, _, pkt := typicalReply(t)
	allocs := testing.AllocsPerRun(1000, func() { c.SetWire(r, pkt) })
	t.Logf("SetWire of a two-record answer: %v allocations", allocs)
	if c.Len() != 1 {
		t.Fatal("not cached")
	}
	if allocs > 1 {
		t.Errorf("SetWire allocates %v times, want 1 (the entry)", allocs)
	}
}

// BenchmarkSetMiss compares the ways an upstream reply reaches the cache on a miss: Set of an
// unpacked message, the server's old path (unpack, then Set) and SetWire of the octets.
func BenchmarkSetMiss(b *testing.B) {
	r, m, pkt := typicalReply(b)
	c := New(DefaultConfig())
	run := func(b *testing.B, set func()) {
		b.ReportAllocs()
		start := dnstest.CPUTime(b)
		for b.Loop() {
			set()
		}
		reportCPU(b, start)
	}
	b.Run("Set", func(b *testing.B) { run(b, func() { c.Set(r, m) }) })
	b.Run("UnpackSet", func(b *testing.B) {
		run(b, func() {
			var msg dns.Msg
			if msg.Unpack(pkt) != nil {
				b.Fatal("unpack")
			}
			c.Set(r, &msg)
		})
	})
	b.Run("SetWire", func(b *testing.B) { run(b, func() { c.SetWire(r, pkt) }) })
}

// FuzzSetWire stores arbitrary octets as an upstream reply and checks that SetWire neither panics
// nor modifies them, that whatever it stores is served as a message miekg/dns unpacks, and that it
// stores what Set stores for the message miekg/dns unpacks from them (the server's path before
// SetWire), answering alike.
func FuzzSetWire(f *testing.F) {
	addSetSeeds(f)
	addCorpus(f, filepath.Join("testdata", "fuzz", "FuzzSetGet"))
	for _, tt := range wireCases() {
		r := request(f, cmpOr(tt.qname, "www.example.com."), cmpOr(tt.qtype, dns.TypeA), tt.do, false)
		pkt := tt.pkt(f, r)
		f.Add(pkt, uint8(0))
		var m dns.Msg
		if !tt.raw && m.Unpack(pkt) == nil {
			m.Compress = true
			f.Add(packMsg(f, &m), uint8(0x13))
		}
	}
	f.Fuzz(func(t *testing.T, pkt []byte, variant uint8) {
		r, ok := fuzzRequest(pkt, variant)
		if !ok {
			return
		}
		cfg := Config{Size: 64, ServfailTTL: 3 * time.Second, MinTTL: time.Duration(variant>>2&3) * time.Second}
		wc, clk := newCache(cfg)
		orig := bytes.Clone(pkt)
		wc.SetWire(r, pkt)
		if !bytes.Equal(pkt, orig) {
			t.Fatal("SetWire modified the reply")
		}
		set, clk2 := newCache(cfg)
		var up dns.Msg
		unpacked := up.Unpack(pkt) == nil
		if unpacked {
			set.Set(r, &up)
			if set.Len() != wc.Len() {
				t.Fatalf("Set stored %d entries, SetWire %d\n%x", set.Len(), wc.Len(), pkt)
			}
		}
		age := time.Duration(variant>>4) * time.Second
		clk.Advance(age)
		clk2.Advance(age)
		out, ok := wc.Serve(nil, r)
		want, wantOK := set.Serve(nil, r)
		if !ok {
			if wantOK {
				t.Fatalf("Set's entry is served, SetWire's not\n%x", pkt)
			}
			return
		}
		var got dns.Msg
		if err := got.Unpack(out); err != nil {
			t.Fatalf("served answer does not unpack: %v\nreply %x\nserved %x", err, pkt, out)
		}
		if got.Id != r.ID || got.RecursionDesired != r.RD || got.CheckingDisabled != r.CD || !got.Response || got.Authoritative || got.IsEdns0() != nil {
			t.Fatalf("header %+v for request %+v", got.MsgHdr, r)
		}
		if !walks(out) {
			t.Fatalf("served answer does not walk to its end with the header's counts\nreply %x\nserved %x", pkt, out)
		}
		if !unpacked {
			// miekg/dns rejects the reply, so Set was never called on it. SetWire checks what it
			// keeps as miekg/dns reads it, so only the hop-by-hop records it cut off can be at fault.
			return
		}
		if !wantOK {
			t.Fatalf("SetWire's entry is served, Set's not\n%x", pkt)
		}
		var w dns.Msg
		if err := w.Unpack(want); err != nil {
			t.Fatal(err)
		}
		if normalized(&got) != normalized(&w) {
			t.Fatalf("SetWire serves\n%s\nSet serves\n%s\nreply %x", &got, &w, pkt)
		}
	})
}

// fuzzRequest builds the query pkt answers: its question when that is a plain name, type and
// class, else www.example.com. A; RD from variant, CD as the reply echoes it, AD and DO from the
// reply's ID (as FuzzSetGet's seeds vary it), the name's case swapped by variant.
func fuzzRequest(pkt []byte, variant uint8) (*wire.Request, bool) {
	qname, qtype, qclass := []byte("\x03www\x07example\x03com\x00"), dns.TypeA, uint16(dns.ClassINET)
	var id, flags uint16
	if len(pkt) >= wire.HeaderLen {
		id, flags = wire.ID(pkt), binary.BigEndian.Uint16(pkt[2:])
		if end, ok := wire.PlainNameEnd(pkt, wire.HeaderLen); ok && end+4 <= len(pkt) {
			qname = pkt[wire.HeaderLen:end]
			qtype, qclass = binary.BigEndian.Uint16(pkt[end:]), binary.BigEndian.Uint16(pkt[end+2:])
		}
	}
	q := make([]byte, wire.HeaderLen, wire.HeaderLen+len(qname)+4+wire.OPTLen)
	binary.BigEndian.PutUint16(q, 0x1234)
	var qflags uint16
	if variant&1 != 0 {
		qflags |= 1 << 8 // RD
	}
	qflags |= flags & (1 << 4) // CD
	if id&1 != 0 {
		qflags |= 1 << 5 // AD
	}
	binary.BigEndian.PutUint16(q[2:], qflags)
	binary.BigEndian.PutUint16(q[4:], 1)
	q = append(q, qname...)
	if variant&2 != 0 {
		swapCase(q[wire.HeaderLen:])
	}
	q = binary.BigEndian.AppendUint16(q, qtype)
	q = binary.BigEndian.AppendUint16(q, qclass)
	q = wire.AppendOPT(q, 1232, id&2 != 0)
	r := new(wire.Request)
	if r.Parse(q) != nil {
		return nil, false
	}
	return r, true
}

// addCorpus adds the inputs go test stored for another fuzz target of the same arguments
// ([]byte, uint8) in dir.
func addCorpus(f *testing.F, dir string) {
	files, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no corpus in %s: %v", dir, err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) != 3 || lines[0] != "go test fuzz v1" {
			f.Fatalf("%s: not a corpus file of two values", name)
		}
		pkt, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			f.Fatalf("%s: %v", name, err)
		}
		v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[2], "byte("), ")"))
		if err != nil {
			f.Fatalf("%s: %v", name, err)
		}
		rn, _ := utf8.DecodeRuneInString(v)
		f.Add([]byte(pkt), byte(rn))
	}
}
