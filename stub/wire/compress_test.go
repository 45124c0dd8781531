package wire

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// msgOf builds a response to qname/qtype with the records given in presentation form.
func msgOf(t testing.TB, qname string, qtype uint16, rcode int, answer, ns, extra []string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.Response, m.RecursionAvailable, m.Rcode = true, true, rcode
	for _, s := range answer {
		m.Answer = append(m.Answer, mustRR(t, s))
	}
	for _, s := range ns {
		m.Ns = append(m.Ns, mustRR(t, s))
	}
	for _, s := range extra {
		m.Extra = append(m.Extra, mustRR(t, s))
	}
	return m
}

// packBoth returns m packed by miekg/dns without and with name compression.
func packBoth(t testing.TB, m *dns.Msg) (plain, compressed []byte) {
	t.Helper()
	c := m.Copy()
	c.Compress = false
	plain, err := c.Pack()
	if err != nil {
		t.Fatal(err)
	}
	c.Compress = true
	if compressed, err = c.Pack(); err != nil {
		t.Fatal(err)
	}
	return plain, compressed
}

// TestCompressAsMiekg compresses replies miekg/dns packed without compression and expects the
// octets miekg/dns packs with compression (so the same length): the same names compressed, to
// the same suffixes, in the same order.
func TestCompressAsMiekg(t *testing.T) {
	var forty []string
	for i := range 40 {
		forty = append(forty, fmt.Sprintf("big.alpha.svc.cluster.local. 5 IN A 10.244.0.%d", i+2))
	}
	var manyTXT []string // past 16 KiB, where pointers cannot reach
	for i := range 80 {
		manyTXT = append(manyTXT, fmt.Sprintf(`txt.example.com. 60 IN TXT "%0255d"`, i))
	}
	manyTXT = append(manyTXT, "txt.example.com. 60 IN CNAME far.example.com.", "far.example.com. 60 IN MX 10 far.example.com.")
	const soa = "example.com. 300 IN SOA ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 60"
	tests := []struct {
		name            string
		qname           string
		qtype           uint16
		rcode           int
		answer, ns, add []string
	}{
		{name: "40 A records", qname: "big.alpha.svc.cluster.local.", qtype: dns.TypeA, answer: forty},
		{name: "CNAME chain", qname: "www.example.com.", qtype: dns.TypeA, answer: []string{
			"www.example.com. 300 IN CNAME web.example.com.",
			"web.example.com. 100 IN CNAME edge.cdn.example.net.",
			"edge.cdn.example.net. 60 IN CNAME pool.cdn.example.net.",
			"pool.cdn.example.net. 60 IN A 192.0.2.1",
			"pool.cdn.example.net. 60 IN A 192.0.2.2",
		}},
		{name: "NXDOMAIN with SOA", qname: "nope.example.com.", qtype: dns.TypeA, rcode: dns.RcodeNameError, ns: []string{soa}},
		{name: "NODATA with SOA and OPT", qname: "www.example.com.", qtype: dns.TypeAAAA, ns: []string{soa}, add: []string{". 0 CLASS1232 OPT"}},
		{name: "MX", qname: "example.com.", qtype: dns.TypeMX, answer: []string{
			"example.com. 300 IN MX 10 mx1.example.com.", "example.com. 300 IN MX 20 mx2.example.net.",
		}, add: []string{"mx1.example.com. 300 IN A 192.0.2.25", "mx2.example.net. 300 IN AAAA 2001:db8::25"}},
		{name: "NS with glue", qname: "example.com.", qtype: dns.TypeNS, answer: []string{
			"example.com. 300 IN NS ns1.example.com.", "example.com. 300 IN NS ns2.example.org.",
		}, add: []string{"ns1.example.com. 300 IN A 192.0.2.53"}},
		{name: "PTR", qname: "10.1.96.10.in-addr.arpa.", qtype: dns.TypePTR, answer: []string{
			"10.1.96.10.in-addr.arpa. 5 IN PTR web.alpha.svc.cluster.local.", "10.1.96.10.in-addr.arpa. 5 IN PTR 10-96-1-10.web.alpha.svc.cluster.local.",
		}},
		{name: "mixed case names", qname: "WWW.Example.COM.", qtype: dns.TypeA, answer: []string{
			"WWW.Example.COM. 300 IN CNAME web.example.com.", "web.example.com. 300 IN CNAME edge.EXAMPLE.com.",
			"edge.EXAMPLE.com. 300 IN A 192.0.2.1", "EDGE.example.com. 300 IN A 192.0.2.2",
		}},
		{name: "SRV DNAME RRSIG: names written whole, then pointed to", qname: "_http._tcp.example.com.", qtype: dns.TypeANY, answer: []string{
			"_http._tcp.example.com. 5 IN SRV 0 2 80 a.web.example.com.",
			"_http._tcp.example.com. 5 IN SRV 0 2 80 b.web.example.com.",
			"_http._tcp.example.com. 5 IN RRSIG SRV 13 4 5 20260201000000 20260101000000 12345 example.com. AQID",
			"old.example.com. 5 IN DNAME new.example.net.",
			"a.web.example.com. 5 IN CNAME new.example.net.",
		}},
		{name: "root names", qname: ".", qtype: dns.TypeNS, answer: []string{". 300 IN NS a.root-servers.net.", ". 300 IN NS b.root-servers.net."}},
		{name: "escaped octets", qname: `we\.ird\000.example.`, qtype: dns.TypeCNAME, answer: []string{`we\.ird\000.example. 60 IN CNAME \000.example.`, `ird\000.example. 60 IN CNAME we\.ird\000.example.`}},
		{name: "past 16 KiB", qname: "txt.example.com.", qtype: dns.TypeANY, answer: manyTXT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plain, want := packBoth(t, msgOf(t, tt.qname, tt.qtype, tt.rcode, tt.answer, tt.ns, tt.add))
			got, ok := Compress(nil, plain)
			if !ok {
				t.Fatal("Compress refused the message")
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("Compress (%d octets):\n%x\nmiekg/dns (%d octets):\n%x", len(got), got, len(want), want)
			}
			// Compressing again changes nothing; a prefix in dst moves nothing.
			again, ok := Compress([]byte{0xAB, 0xCD}, want)
			if !ok || !bytes.Equal(again[2:], want) || again[0] != 0xAB || again[1] != 0xCD {
				t.Fatalf("compressed again after a prefix (ok %v):\n%x\nwant\n%x", ok, again, want)
			}
			checkPointers(t, got)
		})
	}
}

// The 40 records of a headless Service: what CoreDNS sends over TCP (uncompressed) shrinks to
// what it sends over UDP, so Truncate keeps as many records as CoreDNS would.
func TestCompressFortyRecordsLength(t *testing.T) {
	m := bigSet(t, dns.TypeA, 40)
	plain, compressed := packBoth(t, m)
	got, ok := Compress(nil, plain)
	if !ok || len(got) != len(compressed) {
		t.Fatalf("Compress: %d octets (ok %v), miekg/dns %d, uncompressed %d", len(got), ok, len(compressed), len(plain))
	}
	if len(plain)-len(got) != 40*(len("big.alpha.svc.cluster.local.")+1-2) {
		t.Errorf("saved %d octets, want each owner name a pointer to the question's", len(plain)-len(got))
	}
}

// TestCompressRecompresses reads names compressed in ways miekg/dns does not compress: every
// result reads back as the input does, and is what miekg/dns packs.
func TestCompressRecompresses(t *testing.T) {
	// www.example.com. A with two records, the second owner a pointer to the first owner, whose
	// "example.com" is itself a pointer into the question.
	q := []byte("\x03www\x07example\x03com\x00\x00\x01\x00\x01") // at 12, example.com at 16
	rr1 := append([]byte("\x03www\xc0\x10"), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
	rr2 := append([]byte("\xc0\x21"), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 2) // rr1 at 33
	chain := raw(0, 0x8180, 1, 2, 0, 0, q, rr1, rr2)
	// An SRV whose target is a pointer (RFC 2782 forbids it; miekg/dns reads it): written whole,
	// which its uncompressed owner name pays for.
	srvQ := []byte("\x04_sip\x04_udp\x07example\x03com\x00\x00\x21\x00\x01") // example.com at 22
	srv := append([]byte("\x04_sip\x04_udp\x07example\x03com\x00\x00\x21\x00\x01\x00\x00\x00\x3c\x00\x08"), 0, 0, 0, 0, 0x13, 0xc4, 0xc0, 0x16)
	srvMsg := raw(0, 0x8180, 1, 1, 0, 0, srvQ, srv)
	for name, in := range map[string][]byte{"pointer to a pointer": chain, "compressed SRV target": srvMsg} {
		t.Run(name, func(t *testing.T) {
			var m dns.Msg
			if err := m.Unpack(in); err != nil {
				t.Fatal(err)
			}
			_, want := packBoth(t, &m)
			got, ok := Compress(nil, in)
			if !ok || !bytes.Equal(got, want) {
				t.Fatalf("Compress (ok %v):\n%x\nmiekg/dns:\n%x", ok, got, want)
			}
		})
	}
}

// TestCompressRefuses feeds messages Compress must not rewrite: it returns false and dst as it
// was.
func TestCompressRefuses(t *testing.T) {
	q := []byte("\x03www\x07example\x03com\x00\x00\x01\x00\x01")
	a := func(owner string) []byte {
		return append([]byte(owner), 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
	}
	cname := func(owner, target string) []byte {
		b := append([]byte(owner), 0, 5, 0, 1, 0, 0, 0, 60)
		b = binary.BigEndian.AppendUint16(b, uint16(len(target)))
		return append(b, target...)
	}
	long := strings.Repeat("\x3f"+strings.Repeat("a", 63), 4) + "\x00" // 257 octets
	tests := map[string][]byte{
		"short header":            {0, 0, 0x81, 0x80, 0, 1},
		"question cut":            raw(0, 0x8180, 1, 0, 0, 0, q[:len(q)-1]),
		"count above the records": raw(0, 0x8180, 1, 2, 0, 0, q, a("\xc0\x0c")),
		"trailing octets":         raw(0, 0x8180, 1, 1, 0, 0, q, a("\xc0\x0c"), []byte{0}),
		"pointer to itself":       raw(0, 0x8180, 1, 1, 0, 0, q, a("\xc0\x21")),
		"forward pointer":         raw(0, 0x8180, 1, 1, 0, 0, q, a("\xc0\x23")),
		"pointer loop":            raw(0, 0x8180, 1, 1, 0, 0, q, a("\x01x\xc0\x21")),
		"pointer cut":             raw(0, 0x8180, 1, 1, 0, 0, q, []byte{0xc0}),
		"reserved label type":     raw(0, 0x8180, 1, 1, 0, 0, q, a("\x41\xc0\x0c")),
		"name of 257 octets":      raw(0, 0x8180, 1, 0, 0, 0, []byte(long), []byte{0, 1, 0, 1}),
		// The target's root label is the next record's owner name.
		"RDATA name past RDLENGTH":  raw(0, 0x8180, 1, 2, 0, 0, q, cname("\xc0\x0c", "\x01x"), a("\x00")),
		"RDLENGTH past the message": raw(0, 0x8180, 1, 1, 0, 0, q, cname("\xc0\x0c", "\x01x\xc0\x0c")[:15]),
		"NAPTR":                     raw(0, 0x8180, 1, 1, 0, 0, q, []byte{0xc0, 0x0c, 0, 35, 0, 1, 0, 0, 0, 60, 0, 9, 0, 1, 0, 1, 0, 0, 0, 0xc0, 0x0c}),
	}
	// Too many pointers for miekg/dns: a chain of 127 pointers, each to the one before.
	chain := raw(0, 0x8180, 1, 0, 0, 0, q)
	chain[5] = 128 // QDCOUNT: the first question, then 127 whose names are pointers
	prev := HeaderLen
	for range 127 {
		at := len(chain)
		chain = append(chain, 0xc0|byte(prev>>8), byte(prev), 0, 1, 0, 1)
		prev = at
	}
	tests["127 pointers"] = chain
	// A question name that is a pointer to the ID and flags, "\x01a\x00": written whole, it is
	// longer than the input.
	tests["question longer than the input"] = raw(0x0161, 0, 1, 0, 0, 0, []byte{0xc0, 0, 0, 1, 0, 1})
	// An SRV target that is a pointer (RFC 2782 forbids it): written whole, it makes the
	// message longer.
	tests["longer than the input"] = raw(0, 0x8180, 1, 1, 0, 0, q,
		[]byte{0xc0, 0x0c, 0, 33, 0, 1, 0, 0, 0, 60, 0, 8, 0, 0, 0, 0, 0x13, 0xc4, 0xc0, 0x10})
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			dst := []byte("prefix")
			out, ok := Compress(dst, in)
			if ok || len(out) != len(dst) || string(out) != "prefix" {
				t.Fatalf("Compress = %x, %v; want the prefix alone, false", out, ok)
			}
		})
	}
	// 126 pointers is miekg/dns's limit, and fine.
	chain[5]--
	if _, ok := Compress(nil, chain[:len(chain)-6]); !ok {
		t.Error("refused a chain of 126 pointers")
	}
}

// TestCompressKeepsRDATACutShort copies records whose RDATA ends before their names as they
// are: miekg/dns reads a CNAME without RDATA with an empty target, an MX of 2 octets with an
// empty exchange, an SRV of 3 with port and target zero (and rejects an MX of 1 octet, which
// stays as wrong).
func TestCompressKeepsRDATACutShort(t *testing.T) {
	q := []byte("\x03www\x07example\x03com\x00\x00\xff\x00\x01")
	for name, rr := range map[string][]byte{
		"CNAME of 0": {0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 0, 60, 0, 0},
		"MX of 2":    {0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 0, 60, 0, 2, 0, 10},
		"MX of 1":    {0xc0, 0x0c, 0, 15, 0, 1, 0, 0, 0, 60, 0, 1, 0},
		"SRV of 4":   {0xc0, 0x0c, 0, 33, 0, 1, 0, 0, 0, 60, 0, 4, 0, 1, 0, 2},
	} {
		in := raw(0, 0x8180, 1, 1, 0, 0, q, rr)
		got, ok := Compress(nil, in)
		if !ok || !bytes.Equal(got, in) {
			t.Errorf("%s: Compress = %x, %v; want the input", name, got, ok)
		}
	}
}

// TestCompressManySuffixes writes more distinct suffixes than Compress remembers: the result
// still reads back as the input.
func TestCompressManySuffixes(t *testing.T) {
	var ns []string
	for i := range 3 * suffixSlots {
		ns = append(ns, fmt.Sprintf("example.com. 60 IN NS ns.z%d.example%d.net.", i, i%7))
	}
	m := msgOf(t, "example.com.", dns.TypeNS, 0, ns, nil, nil)
	plain, compressed := packBoth(t, m)
	got, ok := Compress(nil, plain)
	if !ok {
		t.Fatal("refused")
	}
	var back dns.Msg
	if err := back.Unpack(got); err != nil || !sameMsg(&back, unpackMsg(t, plain)) {
		t.Fatalf("reads back as %v (%v)", &back, err)
	}
	t.Logf("%d suffixes: uncompressed %d, Compress %d, miekg/dns %d octets", 3*suffixSlots, len(plain), len(got), len(compressed))
	checkPointers(t, got)
}

// sameMsg reports whether two unpacked messages are deep-equal but for the RDLENGTH each record
// header keeps (a length on the wire, which compression changes, not data).
func sameMsg(a, b *dns.Msg) bool {
	a, b = a.Copy(), b.Copy()
	for _, m := range []*dns.Msg{a, b} {
		for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range s {
				rr.Header().Rdlength = 0
			}
		}
	}
	return reflect.DeepEqual(a, b)
}

func unpackMsg(t testing.TB, b []byte) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatal(err)
	}
	return m
}

// Compress into a buffer big enough allocates nothing.
func TestCompressNoAllocs(t *testing.T) {
	plain, _ := packBoth(t, bigSet(t, dns.TypeCNAME, 20))
	var buf [4096]byte
	allocs := testing.AllocsPerRun(100, func() {
		if _, ok := Compress(buf[:0], plain); !ok {
			t.Fatal("refused")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}

// BenchmarkCompress compresses the 40 A records of a headless Service as CoreDNS sends them over
// TCP, uncompressed.
func BenchmarkCompress(b *testing.B) {
	plain, _ := packBoth(b, bigSet(b, dns.TypeA, 40))
	var buf [4096]byte
	b.ReportAllocs()
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		Compress(buf[:0], plain)
	}
}

// checkPointers fails t when a compression pointer in msg leads anywhere but to an earlier name
// start below 2^14: not into the header, a TTL field or the middle of a label.
func checkPointers(t testing.TB, msg []byte) {
	t.Helper()
	starts := map[int]bool{} // offsets where a label or pointer of a name starts
	var names []int
	walk := func(off int) {
		names = append(names, off)
		for msg[off]&labelMask == 0 && msg[off] != 0 {
			starts[off] = true
			off += 1 + int(msg[off])
		}
		starts[off] = true
	}
	off := HeaderLen
	for range Count(msg, Question) {
		walk(off)
		off, _ = SkipName(msg, off)
		off += 4
	}
	it := Records(msg)
	for it.Next() {
		x := it.RR()
		walk(x.Off)
		l := rdataLayout(x.Type)
		if len(x.RData) == 0 || l.unknown {
			continue
		}
		o := min(x.End-len(x.RData)+int(l.prefix), x.End)
		for range l.names {
			if o == x.End {
				break // RDATA cut short before its name
			}
			walk(o)
			o, _ = SkipName(msg, o)
		}
	}
	if it.Err() != nil || it.Offset() != len(msg) {
		t.Fatalf("the result does not walk: %x", msg)
	}
	for _, off := range names {
		for msg[off] != 0 {
			if msg[off]&labelMask == labelPointer {
				to := int(msg[off]&^labelMask)<<8 | int(msg[off+1])
				if to >= off || to >= maxPointerOffset || !starts[to] || msg[to] == 0 {
					t.Fatalf("pointer at %d to %d, not to an earlier suffix: %x", off, to, msg)
				}
				off = to
				continue
			}
			off += 1 + int(msg[off])
		}
	}
}

// TestRDataLayoutAsMiekg checks rdataLayout against miekg/dns's own description of its types
// (the dns struct tags it generates its packing code from): every type with a name in its
// RDATA has a layout, compressed exactly when miekg/dns compresses it ("cdomain-name"), with
// the names right after prefix octets of fixed-size fields; every other type is opaque.
func TestRDataLayoutAsMiekg(t *testing.T) {
	for typ, newRR := range dns.TypeToRR {
		rt := reflect.TypeOf(newRR()).Elem()
		for rt.NumField() == 1 && rt.Field(0).Anonymous && rt.Field(0).Type != reflect.TypeFor[dns.RR_Header]() {
			rt = rt.Field(0).Type // HTTPS is an SVCB, SIG an RRSIG, NXT an NSEC
		}
		l := rdataLayout(typ)
		name := dns.TypeToString[typ]
		var prefix, names, cnames int
		fixed, named, other := true, false, false // fixed: only fixed-size fields before the first name
		for i := 1; i < rt.NumField(); i++ {      // field 0 is the header
			f := rt.Field(i)
			tag := f.Tag.Get("dns")
			switch {
			case isNameTag(tag):
				if named && !isNameTag(rt.Field(i-1).Tag.Get("dns")) {
					other = true // names apart
				}
				if f.Type.Kind() != reflect.String || !fixed {
					other = true
				}
				named = true
				names++
				if tag == "cdomain-name" {
					cnames++
				}
			case !named:
				switch f.Type.Kind() {
				case reflect.Uint8:
					prefix++
				case reflect.Uint16:
					prefix += 2
				case reflect.Uint32:
					prefix += 4
				default:
					fixed = false
				}
			}
		}
		switch {
		case names == 0:
			if l != (layout{}) {
				t.Errorf("%s has no name, layout %+v", name, l)
			}
		case l.unknown:
			if !other {
				t.Logf("%s: names after %d octets could be handled", name, prefix)
			}
		case other:
			t.Errorf("%s: layout %+v, but its names are not all together after fixed fields", name, l)
		case int(l.prefix) != prefix || int(l.names) != names || l.compress != (cnames > 0) || cnames != 0 && cnames != names:
			t.Errorf("%s: layout %+v, miekg/dns: %d names (%d compressed) after %d octets", name, l, names, cnames, prefix)
		}
	}
}

// hasUnknownLayout reports whether m has a record of a type whose names Compress cannot find.
func hasUnknownLayout(m *dns.Msg) bool {
	for _, s := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range s {
			if rdataLayout(rr.Header().Rrtype).unknown {
				return true
			}
		}
	}
	return false
}

func isNameTag(tag string) bool {
	return strings.Contains(tag, "domain-name") || strings.HasSuffix(tag, "host")
}

// FuzzCompress compresses any message miekg/dns unpacks. When Compress accepts it: the result
// is no longer than the input, its pointers lead only to earlier names (never the header or a
// TTL), and miekg/dns unpacks it to a message deep-equal to the input's, names octet for octet
// in the same letter case (Compress matches suffixes with case, as miekg/dns does). When
// miekg/dns also packs that message, small enough that Compress remembers every suffix, both
// without compression and with, Compress turns the first into the second, octet for octet (and
// refuses it only for a type whose names it cannot find, such as HIP).
func FuzzCompress(f *testing.F) {
	for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeSRV, dns.TypePTR, dns.TypeCNAME} {
		plain, compressed := packBoth(f, bigSet(f, qtype, 6))
		f.Add(plain)
		f.Add(compressed)
	}
	f.Add(reply(f))
	for _, rrs := range [][]string{
		{"example.com. 300 IN SOA ns1.example.com. hostmaster.example.com. 1 7200 900 1209600 60"},
		{"example.com. 300 IN MX 10 mx1.example.com.", "example.com. 300 IN MINFO r.example.com. e.example.com."},
		{"EXAMPLE.com. 300 IN NS ns1.Example.com.", "x.example.com. 5 IN DNAME example.NET."},
		{"example.com. 5 IN RRSIG A 13 2 5 20260201000000 20260101000000 12345 example.com. AQID", "example.com. 5 IN NSEC a.example.com. A RRSIG NSEC"},
		{"example.com. 5 IN HTTPS 1 svc.example.com. alpn=h2", "example.com. 5 IN AFSDB 1 db.example.com.", "example.com. 5 IN RP m.example.com. t.example.com."},
		{"example.com. 5 IN PX 10 a.example.com. b.example.com.", "example.com. 5 IN KX 10 kx.example.com.", "example.com. 5 IN RT 10 rt.example.com."},
		{"example.com. 5 IN NAPTR 100 10 \"u\" \"E2U+sip\" \"\" sip.example.com.", "example.com. 5 IN TYPE65280 \\# 4 c00c0000"},
	} {
		plain, compressed := packBoth(f, msgOf(f, "example.com.", dns.TypeANY, 0, rrs, nil, []string{". 0 CLASS1232 OPT"}))
		f.Add(plain)
		f.Add(compressed)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var in dns.Msg
		if in.Unpack(pkt) != nil {
			if out, ok := Compress([]byte{1}, pkt); ok && len(out) > len(pkt)+1 {
				t.Fatalf("Compress lengthened a message miekg/dns rejects: %x", pkt)
			}
			return
		}
		prefix := []byte{0xAA, 0xBB}[:len(pkt)%3&2] // a TCP length prefix, or none
		out, ok := Compress(bytes.Clone(prefix), pkt)
		if !ok {
			if !bytes.Equal(out, prefix) {
				t.Fatalf("refused, but dst changed: %x", out)
			}
			return
		}
		if !bytes.Equal(out[:len(prefix)], prefix) {
			t.Fatalf("prefix changed: %x", out)
		}
		out = out[len(prefix):]
		if len(out) > len(pkt) {
			t.Fatalf("%d octets from %d:\n%x\n%x", len(out), len(pkt), pkt, out)
		}
		checkPointers(t, out)
		var got dns.Msg
		if err := got.Unpack(out); err != nil {
			t.Fatalf("the result does not unpack: %v\nin  %x\nout %x", err, pkt, out)
		}
		if !sameMsg(&got, &in) {
			t.Fatalf("unpacks as\n%v\nnot\n%v\nin  %x\nout %x", &got, &in, pkt, out)
		}
		c := in.Copy()
		c.Compress = false
		plain, err := c.Pack()
		if err != nil || len(plain) > 2*suffixSlots {
			return
		}
		c.Compress = true
		want, err := c.Pack()
		if err != nil {
			return
		}
		again, ok := Compress(nil, plain)
		if !ok && hasUnknownLayout(&in) {
			return
		}
		if !ok || !bytes.Equal(again, want) {
			t.Fatalf("from miekg/dns's uncompressed packing (ok %v):\n%x\nmiekg/dns's compressed:\n%x\nuncompressed:\n%x", ok, again, want, plain)
		}
	})
}
