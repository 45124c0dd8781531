package upstream

import (
	"bytes"
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
)

// rcodeUnlessProbe answers every query with rcode, except the ". NS" health probe (NOERROR).
func rcodeUnlessProbe(rcode int) func(q *dns.Msg) *dns.Msg {
	return func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		if q.Question[0].Name == "." && q.Question[0].Qtype == dns.TypeNS {
			return r.SetReply(q)
		}
		return r.SetRcode(q, rcode)
	}
}

// aReply answers q with one A record for its name.
func aReply(ip string) func(q *dns.Msg) *dns.Msg {
	return func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetReply(q)
		r.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
			A:   net.ParseIP(ip).To4(),
		}}
		return r
	}
}

// ednsQuery is an A query with an OPT record, as the server's misses send it.
func ednsQuery(name string) *dns.Msg {
	return dnstest.Msg(name, dns.TypeA, dnstest.ID(clientID), dnstest.EDNS(1232, false))
}

func wantA(t *testing.T, r *dns.Msg, ip string) {
	t.Helper()
	if r.Rcode != dns.RcodeSuccess || r.Id != clientID || len(r.Answer) != 1 {
		t.Fatalf("reply %v, want NOERROR with one A, ID %#x", r, clientID)
	}
	if a, ok := r.Answer[0].(*dns.A); !ok || a.A.String() != ip {
		t.Fatalf("answer %v, want %s", r.Answer[0], ip)
	}
}

// Issue 12 item 1, the given input: A refuses every query but the probe, B answers. Right:
// NOERROR with B's 192.0.2.20, A asked once per query, A still healthy, the reason counted.
func TestRefusedByFirstAnsweredBySecond(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		a := startScripted(t, proto, rcodeUnlessProbe(dns.RcodeRefused))
		b := startScripted(t, proto, aReply("192.0.2.20"))
		f := newForwarder(t, Config{Servers: servers(t, a.addr, b.addr), Protocol: proto})
		f.probeWait = noProbes
		pa := f.peers[0]
		refused, downs := metric(pa.m.errRefused), metric(pa.m.markedDown)
		for i := range 2 {
			r, err := f.Exchange(context.Background(), query("refused.example.com."))
			if err != nil {
				t.Fatal(err)
			}
			wantA(t, r, "192.0.2.20")
			if n := a.received.Load(); n != int32(i+1) {
				t.Errorf("query %d: A got %d queries, want %d: it stays first", i, n, i+1)
			}
		}
		if d := metric(pa.m.errRefused) - refused; d != 2 {
			t.Errorf("errors{reason=refused} of A +%v, want +2", d)
		}
		if metric(pa.m.healthy) != 1 || metric(pa.m.markedDown) != downs || pa.h.down.Load() {
			t.Error("A was marked down for replying REFUSED")
		}
	})
}

// Every RCODE glibc's res_send moves on for moves the stub on too; the others are answers.
func TestPassOverRcodes(t *testing.T) {
	cases := []struct {
		rcode    int
		passOver bool
	}{
		{dns.RcodeServerFailure, true},
		{dns.RcodeNotImplemented, true},
		{dns.RcodeRefused, true},
		{dns.RcodeSuccess, false}, // NODATA
		{dns.RcodeNameError, false},
		{dns.RcodeFormatError, false}, // to a query without OPT: nothing to fall back from
		{dns.RcodeYXDomain, false},
	}
	protos(t, func(t *testing.T, proto string) {
		for _, c := range cases {
			t.Run(dns.RcodeToString[c.rcode], func(t *testing.T) {
				a := startScripted(t, proto, rcodeReply(c.rcode))
				b := startScripted(t, proto, goodReply)
				f := newForwarder(t, Config{Servers: servers(t, a.addr, b.addr), Protocol: proto})
				f.probeWait = noProbes
				before := map[string]float64{}
				for _, reason := range []string{reasonServfail, reasonNotimp, reasonRefused} {
					before[reason] = metric(errorsTotal.WithLabelValues(f.peers[0].addr, reason))
				}
				r, err := f.Exchange(context.Background(), query(qname(7)))
				if err != nil {
					t.Fatal(err)
				}
				if c.passOver {
					checkAnswer(t, r, 7)
				} else if r.Rcode != c.rcode || len(r.Answer) != 0 || b.received.Load() != 0 {
					t.Errorf("reply %s, B asked %d times: want A's own %s, B not asked",
						dns.RcodeToString[r.Rcode], b.received.Load(), dns.RcodeToString[c.rcode])
				}
				for reason, v := range before {
					want := 0.0
					if c.passOver && reason == passOverReason(c.rcode) {
						want = 1
					}
					if d := metric(errorsTotal.WithLabelValues(f.peers[0].addr, reason)) - v; d != want {
						t.Errorf("errors{reason=%s} +%v, want +%v", reason, d, want)
					}
				}
			})
		}
	})
}

// When every server replies with an RCODE the stub passes over, the caller gets SERVFAIL (what
// glibc makes of it too: TRY_AGAIN), not an error: every server was asked, and each answered.
func TestAllServersPassedOver(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		for _, rc := range [][2]int{
			{dns.RcodeRefused, dns.RcodeRefused},
			{dns.RcodeServerFailure, dns.RcodeNotImplemented},
			{dns.RcodeNotImplemented, dns.RcodeRefused},
			{dns.RcodeRefused, dns.RcodeServerFailure},
		} {
			t.Run(dns.RcodeToString[rc[0]]+"+"+dns.RcodeToString[rc[1]], func(t *testing.T) {
				a := startScripted(t, proto, rcodeReply(rc[0]))
				b := startScripted(t, proto, rcodeReply(rc[1]))
				f := newForwarder(t, Config{Servers: servers(t, a.addr, b.addr), Protocol: proto})
				f.probeWait = noProbes
				r, err := f.Exchange(context.Background(), query("x.example."))
				if err != nil {
					t.Fatal(err)
				}
				if r.Rcode != dns.RcodeServerFailure || r.Id != clientID || !r.Response || len(r.Answer) != 0 ||
					len(r.Question) != 1 || r.Question[0].Name != "x.example." {
					t.Errorf("reply %v, want SERVFAIL for x.example. with the client's ID", r)
				}
				if a.received.Load() != 1 || b.received.Load() != 1 {
					t.Errorf("A asked %d, B %d times, want once each", a.received.Load(), b.received.Load())
				}
				if !f.Healthy() || f.peers[0].h.down.Load() || f.peers[1].h.down.Load() {
					t.Error("a server was marked down for replying")
				}
			})
		}
	})
}

// A passed-over reply and a server that gave no reply at all: an error naming both (the caller
// answers SERVFAIL, or a stale answer), not a reply a cache would keep.
func TestPassedOverThenDeadIsAnError(t *testing.T) {
	a := startScripted(t, "tcp", rcodeReply(dns.RcodeRefused))
	dead := dnstest.FreeAddr(t) // connection refused
	f := newForwarder(t, Config{Servers: servers(t, a.addr, dead)})
	f.probeWait = noProbes
	r, err := f.Exchange(context.Background(), query("x.example."))
	if err == nil {
		t.Fatalf("reply %v, want an error", r)
	}
	if !strings.Contains(err.Error(), a.addr+": REFUSED") || !strings.Contains(err.Error(), dead) {
		t.Errorf("error %q does not name both servers' failures", err)
	}
}

// Passing over stays within the whole-exchange bound: the next server is asked at once, not
// after Timeout.
func TestPassOverIsImmediate(t *testing.T) {
	a := startScripted(t, "tcp", rcodeReply(dns.RcodeServerFailure))
	b := startScripted(t, "tcp", goodReply)
	f := newForwarder(t, Config{Servers: servers(t, a.addr, b.addr), Timeout: 5 * time.Second})
	f.probeWait = noProbes
	start := time.Now()
	r, err := f.Exchange(context.Background(), query(qname(2)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 2)
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v: the SERVFAIL was waited past", d)
	}
}

// ednsServer answers like the EDNS-intolerant upstream: FORMERR (or rcode), without OPT,
// to any query carrying OPT; big answers over UDP truncated at 512 bytes; and records whether
// each query carried OPT.
type ednsServer struct {
	addr string
	mu   sync.Mutex
	opts []bool // per query (probes excluded): carried OPT
}

func (s *ednsServer) seen() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.opts...)
}

func startEDNSServer(t *testing.T, proto string, rejectRcode int, withOPT bool, records int) *ednsServer {
	t.Helper()
	s := &ednsServer{}
	opts := []dnstest.ServeOption{dnstest.TCPOnly()}
	if proto == "udp" {
		opts = nil // UDP, and TCP for the truncation retry
	}
	s.addr = dnstest.Serve(t, func(w dns.ResponseWriter, q *dns.Msg) {
		if q.Question[0].Qtype == dns.TypeNS {
			_ = w.WriteMsg(new(dns.Msg).SetReply(q))
			return
		}
		hasOPT := q.IsEdns0() != nil
		s.mu.Lock()
		s.opts = append(s.opts, hasOPT)
		s.mu.Unlock()
		r := new(dns.Msg)
		if hasOPT {
			r.SetRcode(q, rejectRcode)
			r.Extra = nil // SetRcode copies nothing, but be explicit: no OPT in the reply
			if withOPT {
				r.SetEdns0(1232, false)
			}
			_ = w.WriteMsg(r)
			return
		}
		r.SetReply(q)
		for i := range records {
			r.Answer = append(r.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
				A:   net.IPv4(192, 0, 2, byte(21+i)).To4(),
			})
		}
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
			r.Truncate(dns.MinMsgSize) // no OPT: 512 bytes (RFC 1035 section 4.2.1)
		}
		_ = w.WriteMsg(r)
	}, opts...)
	return s
}

// Issue 12 item 2, the given input at the forwarder: FORMERR without OPT to the query with OPT,
// the answer without. Right: NOERROR with 192.0.2.21, one retry without OPT, reason edns.
func TestEDNSIntolerantFormerr(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		srv := startEDNSServer(t, proto, dns.RcodeFormatError, false, 1)
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), Protocol: proto})
		f.probeWait = noProbes
		edns := metric(f.peers[0].m.errEDNS)
		q := ednsQuery("legacy.example.com.")
		r, err := f.Exchange(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		wantA(t, r, "192.0.2.21")
		if got := srv.seen(); !slices.Equal(got, []bool{true, false}) {
			t.Errorf("queries carried OPT %v, want [true false]: one retry without OPT", got)
		}
		if d := metric(f.peers[0].m.errEDNS) - edns; d != 1 {
			t.Errorf("errors{reason=edns} +%v, want +1", d)
		}
		if q.IsEdns0() == nil {
			t.Error("the caller's query lost its OPT record")
		}
	})
}

// NOTIMP without OPT is the other way a server says it does not do EDNS (RFC 6891 section 7).
func TestEDNSIntolerantNotimp(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		srv := startEDNSServer(t, proto, dns.RcodeNotImplemented, false, 1)
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), Protocol: proto})
		f.probeWait = noProbes
		r, err := f.Exchange(context.Background(), ednsQuery("legacy.example.com."))
		if err != nil {
			t.Fatal(err)
		}
		wantA(t, r, "192.0.2.21")
		if got := srv.seen(); !slices.Equal(got, []bool{true, false}) {
			t.Errorf("queries carried OPT %v, want [true false]", got)
		}
	})
}

// A FORMERR that carries an OPT comes from a server that understands EDNS: it is the answer,
// and the query is not sent again without OPT.
func TestFormerrWithOPTNotRetried(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		srv := startEDNSServer(t, proto, dns.RcodeFormatError, true, 1)
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), Protocol: proto})
		f.probeWait = noProbes
		edns := metric(f.peers[0].m.errEDNS)
		r, err := f.Exchange(context.Background(), ednsQuery("legacy.example.com."))
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeFormatError {
			t.Errorf("rcode %s, want the server's FORMERR", dns.RcodeToString[r.Rcode])
		}
		if got := srv.seen(); !slices.Equal(got, []bool{true}) {
			t.Errorf("queries carried OPT %v, want [true]: no retry", got)
		}
		if metric(f.peers[0].m.errEDNS) != edns || f.peers[0].ednsIntolerant() {
			t.Error("a FORMERR with OPT was taken for EDNS intolerance")
		}
	})
}

// A server that rejects the query without OPT as well was not rejecting the OPT: nothing is
// remembered, the next query carries OPT again.
func TestFormerrWithoutOPTEitherNotRemembered(t *testing.T) {
	srv := startScripted(t, "tcp", rcodeReply(dns.RcodeFormatError)) // no OPT, whatever was asked
	f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
	f.probeWait = noProbes
	for i := range 2 {
		r, err := f.Exchange(context.Background(), ednsQuery("bad.example."))
		if err != nil {
			t.Fatal(err)
		}
		if r.Rcode != dns.RcodeFormatError {
			t.Errorf("query %d: rcode %s, want FORMERR", i, dns.RcodeToString[r.Rcode])
		}
		if n := srv.received.Load(); n != int32(2*(i+1)) {
			t.Errorf("query %d: server got %d queries in all, want %d (with OPT, then without)", i, n, 2*(i+1))
		}
	}
	if f.peers[0].ednsIntolerant() {
		t.Error("remembered as EDNS-intolerant")
	}
}

// A query without OPT (none to remove) is not re-sent on FORMERR.
func TestFormerrToPlainQueryNotRetried(t *testing.T) {
	srv := startScripted(t, "tcp", rcodeReply(dns.RcodeFormatError))
	f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
	f.probeWait = noProbes
	r, err := f.Exchange(context.Background(), query("bad.example."))
	if err != nil || r.Rcode != dns.RcodeFormatError {
		t.Fatalf("%v %v, want FORMERR", r, err)
	}
	if n := srv.received.Load(); n != 1 {
		t.Errorf("server got %d queries, want 1", n)
	}
}

// The server's intolerance is remembered for ednsMemory: later queries go without OPT at once;
// after the window, with OPT again (and the fallback repeats).
func TestEDNSIntoleranceRemembered(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		srv := startEDNSServer(t, proto, dns.RcodeFormatError, false, 1)
		clock := dnstest.NewClock(time.Now())
		var logs bytes.Buffer
		var mu sync.Mutex
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), Protocol: proto, Now: clock.Now,
			Logger: zerolog.New(lockedWriter{mu: &mu, w: &logs})})
		f.probeWait = noProbes
		ask := func() {
			t.Helper()
			r, err := f.Exchange(context.Background(), ednsQuery("legacy.example.com."))
			if err != nil {
				t.Fatal(err)
			}
			wantA(t, r, "192.0.2.21")
		}
		ask()
		clock.Advance(ednsMemory - time.Second)
		ask()
		if got := srv.seen(); !slices.Equal(got, []bool{true, false, false}) {
			t.Errorf("queries carried OPT %v, want [true false false]: the second at once without", got)
		}
		clock.Advance(time.Second)
		ask()
		if got := srv.seen(); !slices.Equal(got, []bool{true, false, false, true, false}) {
			t.Errorf("queries carried OPT %v, want [true false false true false]: EDNS tried again after %v", got, ednsMemory)
		}
		mu.Lock()
		defer mu.Unlock()
		if n := strings.Count(logs.String(), "rejects queries with EDNS"); n != 2 {
			t.Errorf("%d intolerance lines, want 2 (one per window):\n%s", n, logs.String())
		}
	})
}

// Without OPT the server's UDP reply is at most 512 bytes: a bigger answer comes truncated and
// the TCP retry, also without OPT, carries it whole.
func TestEDNSIntolerantBigAnswerOverTCP(t *testing.T) {
	srv := startEDNSServer(t, "udp", dns.RcodeFormatError, false, 40) // 40 A records: ~700 bytes
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Protocol: "udp"})
	f.probeWait = noProbes
	r, err := f.Exchange(context.Background(), ednsQuery("big.example."))
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeSuccess || r.Truncated || len(r.Answer) != 40 {
		t.Fatalf("rcode %s TC %v with %d records, want all 40", dns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer))
	}
	if got := srv.seen(); !slices.Equal(got, []bool{true, false, false}) {
		t.Errorf("queries carried OPT %v, want [true false false] (UDP with, UDP without, TCP without)", got)
	}
}
