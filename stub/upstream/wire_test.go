package upstream

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/wire"
)

// startRaw serves proto on loopback: every query gets the messages respond returns for it,
// written as they are (TCP adds the length prefix). Probes (". NS") get nothing.
func startRaw(t *testing.T, proto string, respond func(q []byte) [][]byte) string {
	t.Helper()
	if proto == "tcp" {
		return startTCP(t, func(_ int, c net.Conn) {
			var lb [2]byte
			for {
				if _, err := io.ReadFull(c, lb[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(lb[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				for _, r := range respond(q) {
					if _, err := c.Write(append([]byte{byte(len(r) >> 8), byte(len(r))}, r...)); err != nil {
						return
					}
				}
			}
		}).addr
	}
	return startUDP(t, func(pc net.PacketConn) {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			for _, r := range respond(slices.Clone(buf[:n])) {
				pc.WriteTo(r, from)
			}
		}
	})
}

// packed is m in wire form; the test fails the process on a message it cannot pack.
func packed(m *dns.Msg) []byte {
	b, err := m.Pack()
	if err != nil {
		panic(err)
	}
	return b
}

// goodWire is the reply serveAll gives to q (raw), uncompressed: question, one A record.
func goodWire(q []byte) []byte {
	m := new(dns.Msg)
	if err := m.Unpack(q); err != nil {
		panic(err)
	}
	return packed(answer(m, nameIndex(m)))
}

// wireReplies are replies to q (raw, from the query qname(5)) that ExchangeWire must not take:
// each breaks one rule of matches or wellFormed.
func wireReplies(q []byte) map[string][]byte {
	m := new(dns.Msg)
	if err := m.Unpack(q); err != nil {
		panic(err)
	}
	with := func(change func(r *dns.Msg)) []byte {
		r := answer(m, 66)
		change(r)
		return packed(r)
	}
	out := map[string][]byte{
		// Same length as q5.example., one letter off: not a case difference.
		"name":  with(func(r *dns.Msg) { r.Question[0].Name = "q5.exbmple." }),
		"type":  with(func(r *dns.Msg) { r.Question[0].Qtype = dns.TypeAAAA }),
		"class": with(func(r *dns.Msg) { r.Question[0].Qclass = dns.ClassCHAOS }),
		"id":    with(func(r *dns.Msg) { r.Id++ }),
		"qr":    with(func(r *dns.Msg) { r.Response = false }),
		"qd0":   with(func(r *dns.Msg) { r.Question = nil }),
		"qd2":   with(func(r *dns.Msg) { r.Question = append(r.Question, r.Question[0]) }),
	}
	// The question name as a pointer to the answer's owner name, the same name: miekg
	// unpacks it, but a reply's first name has nothing before it to point to.
	good := goodWire(q)
	qEnd := wire.HeaderLen + len(qname(5)) + 1 // the uncompressed question name's end
	ptr := append([]byte(nil), good[:wire.HeaderLen]...)
	owner := wire.HeaderLen + 2 + 4 // after the pointer, QTYPE and QCLASS
	ptr = append(ptr, 0xC0|byte(owner>>8), byte(owner))
	ptr = append(ptr, good[qEnd:qEnd+4]...)
	ptr = append(ptr, good[qEnd+4:]...)
	if new(dns.Msg).Unpack(ptr) != nil {
		panic("the pointer reply does not unpack: it would test wellFormed, not matches")
	}
	out["pointer"] = ptr
	// Cut inside the A record's RDATA: neither the walk nor miekg takes it.
	out["cut"] = good[:len(good)-2]
	return out
}

// Replies that break a rule are dropped and counted, over TCP and UDP, and the right reply
// after them is taken: ExchangeWire's own matching and checking, without dns.Msg.
func TestExchangeWireReplyRules(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		q := packed(query(qname(5)))
		bad := wireReplies(q)
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range bad {
				if !yield(k) {
					return
				}
			}
		})
		addr := startRaw(t, proto, func(got []byte) [][]byte {
			var out [][]byte
			for _, k := range names {
				out = append(out, wireReplies(got)[k])
			}
			good := goodWire(got)
			// Upper case: the name matches without regard to case.
			copy(good[wire.HeaderLen:], strings.ToUpper(string(good[wire.HeaderLen:wire.HeaderLen+len(qname(5))])))
			return append(out, good)
		})
		f := newForwarder(t, Config{Servers: servers(t, addr), Protocol: proto})
		f.probeWait = noProbes
		before := metric(f.peers[0].m.errBadReply)
		m := exchangeWire(t, f, q)
		checkAnswer(t, m, 5)
		if d := metric(f.peers[0].m.errBadReply) - before; d != float64(len(names)) {
			t.Errorf("errors{bad_reply} +%v, want +%d, one for each of %v", d, len(names), names)
		}
	})
}

// Each bad reply alone is never taken: the attempt times out.
func TestExchangeWireBadReplyAloneTimesOut(t *testing.T) {
	q := packed(query(qname(5)))
	for name := range wireReplies(q) {
		t.Run(name, func(t *testing.T) {
			addr := startRaw(t, "tcp", func(got []byte) [][]byte { return [][]byte{wireReplies(got)[name]} })
			f := newForwarder(t, Config{Servers: servers(t, addr), Timeout: 200 * time.Millisecond})
			f.probeWait = noProbes
			before := metric(f.peers[0].m.errBadReply)
			if r, err := f.ExchangeWire(context.Background(), q); !isTimeout(err) {
				t.Fatalf("got %x, %v; want a timeout", r, err)
			}
			if d := metric(f.peers[0].m.errBadReply) - before; d != 1 {
				t.Errorf("errors{bad_reply} +%v, want +1", d)
			}
		})
	}
}

// Replies the record walk refuses but miekg/dns unpacks are still taken (the rule before
// replies were read on wire), and a reply the walk takes is taken although miekg refuses it.
// ExchangeWire hands each back as it came, with the client's ID.
func TestExchangeWireWalkAndMiekg(t *testing.T) {
	for _, c := range []struct {
		name      string
		change    func(good []byte) []byte
		walkOK    bool // wire.Records reaches the last octet
		miekgOK   bool // new(dns.Msg).Unpack succeeds
		exchangOK bool // Exchange, which unpacks, returns it
	}{
		// miekg ignores octets after the last record.
		{"trailing-garbage", func(g []byte) []byte { return append(g, 0xDE, 0xAD, 0xBE) }, false, true, true},
		// miekg stops at the end of the message when the header counts more records.
		{"ancount-too-large", func(g []byte) []byte { g[7]++; return g }, false, true, true},
		// An A record with 3 octets of RDATA: the walk only checks RDLENGTH; miekg refuses.
		{"short-a-rdata", func(g []byte) []byte { g[len(g)-5]--; return g[:len(g)-1] }, true, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := packed(query(qname(5)))
			want := c.change(goodWire(q))
			it := wire.Records(want)
			for it.Next() {
			}
			if walkOK := it.Err() == nil && it.Offset() == len(want); walkOK != c.walkOK {
				t.Fatalf("walk takes the reply: %v, want %v", walkOK, c.walkOK)
			}
			if miekgOK := new(dns.Msg).Unpack(want) == nil; miekgOK != c.miekgOK {
				t.Fatalf("miekg unpacks the reply: %v, want %v", miekgOK, c.miekgOK)
			}
			addr := startRaw(t, "tcp", func(got []byte) [][]byte {
				r := c.change(goodWire(got))
				return [][]byte{r}
			})
			f := newForwarder(t, Config{Servers: servers(t, addr)})
			f.probeWait = noProbes
			before := metric(f.peers[0].m.errBadReply)
			r, err := f.ExchangeWire(context.Background(), q)
			if err != nil {
				t.Fatal(err)
			}
			wire.SetID(want, clientID)
			if !bytes.Equal(r, want) {
				t.Errorf("reply\n%x, want\n%x", r, want)
			}
			if d := metric(f.peers[0].m.errBadReply) - before; d != 0 {
				t.Errorf("errors{bad_reply} +%v, want +0", d)
			}
			m, err := f.Exchange(context.Background(), query(qname(5)))
			if c.exchangOK {
				if err != nil {
					t.Fatal(err)
				}
				checkAnswer(t, m, 5)
			} else if err == nil || !strings.Contains(err.Error(), "unpacking the reply") {
				t.Errorf("Exchange: %v, %v; want an unpack error", m, err)
			}
		})
	}
}

// An EDNS-intolerant server through ExchangeWire: FORMERR without OPT, then the query again
// without its OPT record (cut on wire), and the answer. The caller's query is not written.
func TestExchangeWireEDNSIntolerant(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		srv := startEDNSServer(t, proto, dns.RcodeFormatError, false, 1)
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), Protocol: proto})
		f.probeWait = noProbes
		q := packed(ednsQuery("legacy.example.com."))
		orig := slices.Clone(q)
		m := exchangeWire(t, f, q)
		wantA(t, m, "192.0.2.21")
		if got := srv.seen(); !slices.Equal(got, []bool{true, false}) {
			t.Errorf("queries carried OPT %v, want [true false]", got)
		}
		if !bytes.Equal(q, orig) {
			t.Errorf("the caller's query was written:\n%x, was\n%x", q, orig)
		}
		// Remembered: the next query goes without OPT at once.
		if _, err := f.ExchangeWire(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		if got := srv.seen(); !slices.Equal(got, []bool{true, false, false}) {
			t.Errorf("queries carried OPT %v, want [true false false]", got)
		}
	})
}

// Every server REFUSED, through ExchangeWire: SERVFAIL with the client's ID, its RD, and its
// question as it was sent (case kept), no records.
func TestExchangeWireAllRefused(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		a := startScripted(t, proto, rcodeReply(dns.RcodeRefused))
		b := startScripted(t, proto, rcodeReply(dns.RcodeRefused))
		f := newForwarder(t, Config{Servers: servers(t, a.addr, b.addr), Protocol: proto})
		f.probeWait = noProbes
		q := packed(query("MiXeD.example."))
		r, err := f.ExchangeWire(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(r) < wire.HeaderLen {
			t.Fatalf("reply %x shorter than a header", r)
		}
		if wire.ID(r) != clientID || !wire.IsResponse(r) || wire.Rcode(r) != dns.RcodeServerFailure {
			t.Errorf("reply header %x, want a SERVFAIL response with ID %#x", r[:wire.HeaderLen], clientID)
		}
		if r[2]&0x01 == 0 { // RD
			t.Error("RD not copied from the query")
		}
		for s, want := range []int{1, 0, 0, 0} {
			if got := wire.Count(r, wire.Section(s)); got != want {
				t.Errorf("section %d count %d, want %d", s, got, want)
			}
		}
		if !bytes.Equal(r[wire.HeaderLen:], q[wire.HeaderLen:]) {
			t.Errorf("question %x, want the query's %x", r[wire.HeaderLen:], q[wire.HeaderLen:])
		}
		if a.received.Load() != 1 || b.received.Load() != 1 {
			t.Errorf("A asked %d, B %d times, want once each", a.received.Load(), b.received.Load())
		}
	})
}

// Queries ExchangeWire refuses before sending anything.
func TestExchangeWireRejectsBadQuery(t *testing.T) {
	good := packed(query(qname(1)))
	opt := packed(ednsQuery(qname(1)))
	edit := func(b []byte, change func(b []byte) []byte) []byte { return change(slices.Clone(b)) }
	twoOPT := edit(opt, func(b []byte) []byte {
		b[11]++ // ARCOUNT 2
		return append(b, b[len(b)-11:]...)
	})
	afterOPT := func() []byte {
		m := ednsQuery(qname(1))
		m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(192, 0, 2, 1).To4()})
		return packed(m)
	}()
	for name, q := range map[string][]byte{
		"empty":      nil,
		"short":      good[:wire.HeaderLen-1],
		"qd0":        edit(good, func(b []byte) []byte { b[5] = 0; return b[:wire.HeaderLen] }),
		"qd2":        edit(good, func(b []byte) []byte { b[5] = 2; return append(b, b[wire.HeaderLen:]...) }),
		"pointer":    edit(good, func(b []byte) []byte { return append(b[:wire.HeaderLen], 0xC0, 0x0C, 0, 1, 0, 1) }),
		"cut":        good[:len(good)-1],
		"trailing":   append(slices.Clone(good), 0),
		"two-opt":    twoOPT,
		"after-opt":  afterOPT,
		"too-large":  make([]byte, dns.MaxMsgSize+1),
		"cut-in-opt": opt[:len(opt)-1],
	} {
		t.Run(name, func(t *testing.T) {
			srv := startScripted(t, "tcp", goodReply)
			f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
			f.probeWait = noProbes
			if r, err := f.ExchangeWire(context.Background(), q); err == nil {
				t.Fatalf("got %x, want an error", r)
			}
			if n := srv.received.Load(); n != 0 {
				t.Errorf("the server got %d queries, want none", n)
			}
		})
	}
	// The checks take the queries that are fine, OPT last included.
	if _, _, err := parseQuery(good); err != nil {
		t.Errorf("plain query: %v", err)
	}
	if _, off, err := parseQuery(opt); err != nil || off != len(opt)-11 {
		t.Errorf("query with OPT: OPT at %d, %v; want at %d", off, err, len(opt)-11)
	}
}

// Exchange's OPT goes last even when the caller put it first: ExchangeWire wants it there.
func TestExchangeMovesOPTLast(t *testing.T) {
	srv := startEDNSServer(t, "tcp", dns.RcodeFormatError, false, 1)
	f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
	f.probeWait = noProbes
	q := ednsQuery("legacy.example.com.")
	extra := &dns.A{Hdr: dns.RR_Header{Name: "x.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: net.IPv4(192, 0, 2, 1).To4()}
	q.Extra = append(q.Extra, extra) // OPT first, then the A
	r, err := f.Exchange(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	wantA(t, r, "192.0.2.21")
	if got := srv.seen(); !slices.Equal(got, []bool{true, false}) {
		t.Errorf("queries carried OPT %v, want [true false]", got)
	}
	if q.Extra[0].Header().Rrtype != dns.TypeOPT || q.Extra[1] != extra {
		t.Error("the caller's query was reordered")
	}
}

// A truncated UDP reply that does not parse past its header, from a server whose TCP is
// refused: "use TCP" all the same, and when the TCP retry fails too, the client gets that
// header (TC) with its question back.
func TestExchangeWireTruncatedHeaderOnly(t *testing.T) {
	addr := dnstest.FreeAddr(t) // TCP refused
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var sent [][]byte
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := buf[:n]
			qEnd, _, err := parseQuery(q)
			if err != nil {
				continue
			}
			r := append([]byte(nil), q[:wire.HeaderLen]...)
			r[2], r[3] = 0x80|0x02, 0 // QR, TC
			binary.BigEndian.PutUint16(r[4:], 1)
			binary.BigEndian.PutUint16(r[6:], 1) // ANCOUNT 1, but the record is cut
			binary.BigEndian.PutUint16(r[8:], 0)
			binary.BigEndian.PutUint16(r[10:], 0)
			r = append(r, q[wire.HeaderLen:qEnd]...)
			r = append(r, 0xC0, 0x0C, 0) // a pointer owner and one octet of TYPE
			mu.Lock()
			sent = append(sent, r)
			mu.Unlock()
			pc.WriteTo(r, from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })

	f := newForwarder(t, Config{Servers: servers(t, addr)})
	f.probeWait = noProbes
	q := packed(query("big.example."))
	r, err := f.ExchangeWire(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	bad := sent[0]
	mu.Unlock()
	if new(dns.Msg).Unpack(bad) == nil {
		t.Fatal("the server's reply unpacks: it would not test the header-only case")
	}
	want := append([]byte(nil), q[:wire.HeaderLen]...)
	want[2], want[3] = 0x80|0x02, 0
	binary.BigEndian.PutUint16(want[6:], 0)
	binary.BigEndian.PutUint16(want[10:], 0)
	want = append(want, q[wire.HeaderLen:]...)
	if !bytes.Equal(r, want) {
		t.Errorf("reply\n%x, want the header (client's ID, QR, TC) and the question\n%x", r, want)
	}
	m, err := f.Exchange(context.Background(), query("big.example."))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Truncated || m.Id != clientID || len(m.Question) != 1 || m.Question[0].Name != "big.example." {
		t.Errorf("Exchange: %v, want TC with the question and the client's ID", m)
	}
}

// exchangeWire is ExchangeWire of q, unpacked; any error fails the test.
func exchangeWire(t *testing.T, f *Forwarder, q []byte) *dns.Msg {
	t.Helper()
	r, err := f.ExchangeWire(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	if err := m.Unpack(r); err != nil {
		t.Fatal(err)
	}
	return m
}
