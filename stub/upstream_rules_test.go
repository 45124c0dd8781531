package main

// The metrics of a stub are process-wide: these tests assert only series labelled with their own
// upstreams, and every test of this package compares what it adds, never absolute values.

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

// countingUpstream is a loopback DNS server (UDP and TCP) that answers with respond and records,
// for every query but the ". NS" health probe, whether it carried an OPT record.
type countingUpstream struct {
	addr string
	mu   sync.Mutex
	opts []bool
}

func (u *countingUpstream) seen() []bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]bool(nil), u.opts...)
}

func startCounting(t *testing.T, respond func(q *dns.Msg) *dns.Msg) *countingUpstream {
	t.Helper()
	u := &countingUpstream{}
	u.addr = dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		if q.Question[0].Name == "." && q.Question[0].Qtype == dns.TypeNS {
			return new(dns.Msg).SetReply(q)
		}
		u.mu.Lock()
		u.opts = append(u.opts, q.IsEdns0() != nil)
		u.mu.Unlock()
		return respond(q)
	}))
	return u
}

func rcodeTo(rcode int) func(q *dns.Msg) *dns.Msg {
	return func(q *dns.Msg) *dns.Msg { return new(dns.Msg).SetRcode(q, rcode) }
}

func aTo(ip string) func(q *dns.Msg) *dns.Msg {
	return func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg).SetReply(q)
		rr, err := dns.NewRR(q.Question[0].Name + " 300 IN A " + ip)
		if err != nil {
			panic(err)
		}
		r.Answer = []dns.RR{rr}
		return r
	}
}

// startWithUpstreams runs the stub (startStub) with upstreams and returns its DNS and HTTP
// addresses once it is ready.
func startWithUpstreams(t *testing.T, upstreams ...string) (dnsAddr, httpAddr string) {
	t.Helper()
	s := startStub(t, map[string]string{"PODNS_UPSTREAMS": strings.Join(upstreams, ","), "PODNS_SHUTDOWN_GRACE": "1ms"})
	return s.dns, s.http
}

// ask sends name IN A over UDP without EDNS, as a plain libc client does.
func ask(t *testing.T, dnsAddr, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(m, dnsAddr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func wantAnswer(t *testing.T, r *dns.Msg, ip string) {
	t.Helper()
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("reply %v, want NOERROR with %s", r, ip)
	}
	if a, ok := r.Answer[0].(*dns.A); !ok || !a.A.Equal(net.ParseIP(ip)) {
		t.Fatalf("answer %v, want %s", r.Answer[0], ip)
	}
}

// Issue 12 item 1, end to end: PODNS_UPSTREAMS=A,B; A refuses every query but the health
// probe, B answers. The client gets B's answer. The REFUSED is not cached: B's answer is, so
// the repeat is a hit (each upstream asked once), and A's refusal shows in the metrics while
// A stays healthy.
func TestRefusingFirstUpstreamEndToEnd(t *testing.T) {
	a := startCounting(t, rcodeTo(dns.RcodeRefused))
	b := startCounting(t, aTo("192.0.2.20"))
	dnsAddr, httpAddr := startWithUpstreams(t, a.addr, b.addr)
	for range 2 {
		wantAnswer(t, ask(t, dnsAddr, "refused.example.com."), "192.0.2.20")
	}
	if na, nb := len(a.seen()), len(b.seen()); na != 1 || nb != 1 {
		t.Errorf("A asked %d, B %d times, want once each (the repeat is a cache hit)", na, nb)
	}
	_, metrics, err := httpGet("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`podns_upstream_errors_total{reason="refused",upstream="` + a.addr + `"} 1`,
		`podns_upstream_healthy{upstream="` + a.addr + `"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// Every upstream refusing: the client gets SERVFAIL (what glibc makes of it: TRY_AGAIN), cached
// like an upstream's own SERVFAIL (PODNS_CACHE_SERVFAIL_TTL, 5s by default): the repeat right
// after is a hit.
func TestAllUpstreamsRefusingEndToEnd(t *testing.T) {
	a := startCounting(t, rcodeTo(dns.RcodeRefused))
	b := startCounting(t, func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg).SetRcode(q, dns.RcodeNotImplemented)
		r.SetEdns0(1232, false) // with OPT: not an EDNS rejection, no fallback
		return r
	})
	dnsAddr, _ := startWithUpstreams(t, a.addr, b.addr)
	for i := range 2 {
		if r := ask(t, dnsAddr, "nowhere.example."); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("query %d: rcode %s, want SERVFAIL", i, dns.RcodeToString[r.Rcode])
		}
	}
	if na, nb := len(a.seen()), len(b.seen()); na != 1 || nb != 1 {
		t.Errorf("A asked %d, B %d times, want once each", na, nb)
	}
}

// Issue 12 item 2, end to end: the upstream answers any query with an OPT record FORMERR (no
// OPT in the reply) and the same query without OPT with legacy.example.com. A 192.0.2.21. A
// client without EDNS asks. Right: NOERROR with 192.0.2.21.
func TestEDNSIntolerantUpstreamEndToEnd(t *testing.T) {
	u := startCounting(t, func(q *dns.Msg) *dns.Msg {
		if q.IsEdns0() != nil {
			return new(dns.Msg).SetRcode(q, dns.RcodeFormatError)
		}
		return aTo("192.0.2.21")(q)
	})
	dnsAddr, _ := startWithUpstreams(t, u.addr)
	wantAnswer(t, ask(t, dnsAddr, "legacy.example.com."), "192.0.2.21")
	r := ask(t, dnsAddr, "other.example.com.") // a miss: straight without OPT, remembered
	wantAnswer(t, r, "192.0.2.21")
	got := u.seen()
	if len(got) != 3 || !got[0] || got[1] || got[2] {
		t.Errorf("upstream queries carried OPT %v, want [true false false]", got)
	}
}

// FORMERR is never cached: each client query asks the upstream again (stub/cache keeps only
// NOERROR, NXDOMAIN and SERVFAIL). The FORMERR carries OPT, so it is the upstream's answer, not
// an EDNS rejection.
func TestFormerrNotCachedEndToEnd(t *testing.T) {
	u := startCounting(t, func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg).SetRcode(q, dns.RcodeFormatError)
		r.SetEdns0(1232, false)
		return r
	})
	dnsAddr, _ := startWithUpstreams(t, u.addr)
	for i := range 2 {
		if r := ask(t, dnsAddr, "bad.example."); r.Rcode != dns.RcodeFormatError {
			t.Errorf("query %d: rcode %s, want the upstream's FORMERR", i, dns.RcodeToString[r.Rcode])
		}
	}
	if n := len(u.seen()); n != 2 {
		t.Errorf("upstream asked %d times, want 2: a FORMERR was cached", n)
	}
}
