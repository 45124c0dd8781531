package server

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/wire"
)

// One header rule for every reply (hit.go finish): AA=0 and RA=1, whatever the upstream set
// and whichever path served it. The upstreams play CoreDNS's kubernetes plugin (AA=1, RA=0)
// and a forwarded answer (AA=0, RA=1); each answers a name with an A record and, for AAAA,
// NODATA with an SOA — the reply glibc's res_send takes for a lame referral when it carries
// AA=0, RA=0 and no additional record.
func TestHeaderFlagsOneRuleForEveryPath(t *testing.T) {
	upstreams := []struct {
		name   string
		aa, ra bool
	}{{"authoritative, no recursion (CoreDNS kubernetes)", true, false}, {"forwarded (AA=0, RA=1)", false, true}}
	for _, up := range upstreams {
		t.Run(up.name, func(t *testing.T) {
			answer := func(q *dns.Msg) (*dns.Msg, error) {
				m := new(dns.Msg)
				m.SetReply(q)
				m.Authoritative, m.RecursionAvailable = up.aa, up.ra
				if q.Question[0].Qtype == dns.TypeA {
					rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.1")
					m.Answer = []dns.RR{rr}
				} else {
					soa, _ := dns.NewRR("example. 60 IN SOA ns.example. host.example. 1 7200 3600 1209600 60")
					m.Ns = []dns.RR{soa}
				}
				return m, nil
			}
			clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
			fwd := &fakeForwarder{answer: answer}
			_, addr := startServer(t, fwd, func(c *Config) {
				c.Cache = cache.New(cache.Config{Size: 100, StaleWindow: time.Hour, Now: clock.Now})
				c.Coalesce = true
			})
			for _, qtype := range []uint16{dns.TypeA, dns.TypeAAAA} {
				name := dns.TypeToString[qtype] + ".flags.example."
				check := func(path string, r *dns.Msg) {
					t.Helper()
					if r.Authoritative || !r.RecursionAvailable {
						t.Errorf("%s %s: AA=%v RA=%v, want AA=0 RA=1", path, dns.TypeToString[qtype], r.Authoritative, r.RecursionAvailable)
					}
				}
				// Miss, and a coalesced follower of the same miss.
				fwd.hold()
				coalesced := testutil.ToFloat64(coalescedTotal)
				var wg sync.WaitGroup
				replies := make([]*dns.Msg, 2)
				for i := range replies {
					wg.Go(func() {
						c := &dns.Client{Timeout: 3 * time.Second}
						replies[i], _, _ = c.Exchange(dnstest.Msg(name, qtype), addr)
					})
				}
				waitFor(t, func() bool { return fwd.calls.Load() >= 1 && testutil.ToFloat64(coalescedTotal) > coalesced })
				fwd.release()
				wg.Wait()
				for i, r := range replies {
					if r == nil {
						t.Fatalf("miss/coalesced reply %d lost", i)
					}
					check("miss or coalesced", r)
				}
				fwd.mu.Lock()
				fwd.gate = nil
				fwd.mu.Unlock()
				check("hit", query(t, "udp", addr, name, qtype, 0))
				check("hit over TCP with EDNS", query(t, "tcp", addr, name, qtype, 1232))
				clock.Advance(2 * time.Minute) // expired, inside the stale window
				fwd.down.Store(true)
				r := query(t, "udp", addr, name, qtype, 0)
				if qtype == dns.TypeA && (len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL) {
					t.Fatalf("want the stale answer, got %v", r)
				}
				check("stale", r)
				fwd.down.Store(false)
			}
		})
	}
}

// The replies the stub makes itself carry the same RA=1 and AA=0.
func TestHeaderFlagsOfTheStubsOwnReplies(t *testing.T) {
	fwd := &fakeForwarder{answer: func(*dns.Msg) (*dns.Msg, error) { return nil, errors.New("all upstreams failed") }}
	_, addr := startServer(t, fwd, func(c *Config) { c.FilterAAAA = true })
	notify := dnstest.Msg("x.example.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	badVers := dnstest.Msg("x.example.", dns.TypeA, dnstest.EDNS(1232, false))
	badVers.IsEdns0().SetVersion(1)
	two := dnstest.Msg("x.example.", dns.TypeA)
	two.Question = append(two.Question, two.Question[0])
	for _, tt := range []struct {
		name  string
		msg   *dns.Msg
		rcode int
	}{
		{"SERVFAIL: no upstream answered", dnstest.Msg("x.example.", dns.TypeA), dns.RcodeServerFailure},
		{"NODATA: the AAAA filter", dnstest.Msg("x.example.", dns.TypeAAAA), dns.RcodeSuccess},
		{"NOTIMP", notify, dns.RcodeNotImplemented},
		{"BADVERS", badVers, dns.RcodeBadVers},
		{"FORMERR", two, dns.RcodeFormatError},
	} {
		pkt, err := tt.msg.Pack()
		if err != nil {
			t.Fatal(err)
		}
		b, err := rawExchange("udp", addr, pkt)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var r dns.Msg
		if err := r.Unpack(b); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if r.Rcode != tt.rcode || r.Authoritative || !r.RecursionAvailable {
			t.Errorf("%s: rcode %s AA=%v RA=%v, want %s AA=0 RA=1", tt.name, dns.RcodeToString[r.Rcode],
				r.Authoritative, r.RecursionAvailable, dns.RcodeToString[tt.rcode])
		}
	}
}

// Every query received is counted in podns_requests_total, the ones answered FORMERR, NOTIMP
// or BADVERS too; podns_responses_total counts each reply by its whole rcode: BADVERS (16, its
// upper bits in the OPT record) is not NOERROR.
func TestRequestAndResponseCounters(t *testing.T) {
	fwd := &fakeForwarder{answer: records(1)}
	_, addr := startServer(t, fwd, nil)
	notify := dnstest.Msg("x.example.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	badVers := dnstest.Msg("x.example.", dns.TypeA, dnstest.EDNS(1232, false))
	badVers.IsEdns0().SetVersion(1)
	two := dnstest.Msg("x.example.", dns.TypeTXT)
	two.Question = append(two.Question, two.Question[0])
	tests := []struct {
		name      string
		msg       *dns.Msg
		reqType   string // the requests_total type label
		respRcode string // the responses_total rcode label
	}{
		{"answer", dnstest.Msg("ok.example.", dns.TypeA), "A", "NOERROR"},
		{"NXDOMAIN", dnstest.Msg("no.example.", dns.TypeMX), "MX", "NXDOMAIN"},
		{"NOTIMP", notify, "SOA", "NOTIMP"},
		{"BADVERS", badVers, "A", "BADVERS"},
		{"FORMERR (two questions: no type read)", two, "other", "FORMERR"},
	}
	for _, tt := range tests {
		for _, proto := range []string{"udp", "tcp"} {
			req := requestsTotal.WithLabelValues(proto, tt.reqType)
			resp := responsesTotal.WithLabelValues(tt.respRcode)
			noerror := responsesTotal.WithLabelValues("NOERROR")
			beforeReq, beforeResp, beforeNoError := testutil.ToFloat64(req), testutil.ToFloat64(resp), testutil.ToFloat64(noerror)
			pkt, err := tt.msg.Pack()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rawExchange(proto, addr, pkt); err != nil {
				t.Fatalf("%s %s: %v", tt.name, proto, err)
			}
			// The reply is counted as it is written, just before the client reads it.
			waitFor(t, func() bool { return testutil.ToFloat64(resp) > beforeResp })
			if got := testutil.ToFloat64(req) - beforeReq; got != 1 {
				t.Errorf("%s %s: podns_requests_total{proto=%q,type=%q} rose by %v, want 1", tt.name, proto, proto, tt.reqType, got)
			}
			if got := testutil.ToFloat64(resp) - beforeResp; got != 1 {
				t.Errorf("%s %s: podns_responses_total{rcode=%q} rose by %v, want 1", tt.name, proto, tt.respRcode, got)
			}
			if tt.respRcode != "NOERROR" && testutil.ToFloat64(noerror) != beforeNoError {
				t.Errorf("%s %s: counted as NOERROR too", tt.name, proto)
			}
		}
	}
}

// countResponse reads the OPT record's upper rcode bits only where the stub's OPT is, last; a
// reply whose last octets merely look like an OPT is judged by walking it.
func TestCountResponseReadsTheExtendedRcode(t *testing.T) {
	var r wire.Request
	if err := r.Parse(dnstest.Query("x.example.", dns.TypeA, dnstest.EDNS(1232, false))); err != nil {
		t.Fatal(err)
	}
	badvers := wire.AppendError(nil, &r, wire.RcodeBadVers)
	if got := wire.ExtendedRcode(badvers); got != wire.RcodeBadVers {
		t.Fatalf("ExtendedRcode(BADVERS reply) = %d", got)
	}
	// A TXT record whose RDATA ends in what an OPT with extended rcode 1 looks like, no OPT.
	m := new(dns.Msg)
	m.SetQuestion("x.example.", dns.TypeTXT)
	m.Response = true
	m.Extra = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "x.example.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: []string{"\x00\x00\x29\x04\xd0\x01\x00\x00\x00\x00\x00"}}}
	lookalike, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	tail := lookalike[len(lookalike)-wire.OPTLen:]
	if tail[2] != wire.TypeOPT || tail[5] != 1 || binary.BigEndian.Uint16(tail[9:]) != 0 {
		t.Fatalf("the look-alike's tail is %x", tail)
	}
	for _, c := range []struct {
		name  string
		msg   []byte
		rcode string
	}{{"BADVERS", badvers, "BADVERS"}, {"look-alike", lookalike, "NOERROR"}} {
		ctr := responsesTotal.WithLabelValues(c.rcode)
		before := testutil.ToFloat64(ctr)
		countResponse(c.msg)
		if testutil.ToFloat64(ctr) != before+1 {
			t.Errorf("%s: not counted as %s", c.name, c.rcode)
		}
	}
}
