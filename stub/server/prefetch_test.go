package server

import (
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/upstream"
)

// The search-path prefetch against a loopback cluster DNS and the real forwarder, with clients
// that walk the search list as glibc does (issue 12 item 4): the upstream must see exactly the
// questions the client asks, each once, however the answers and the client's queries interleave.

var podSearch = []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local"}

// zone plays the cluster DNS as a pod sees it (CoreDNS's kubernetes or file plugin): AA=1 and
// RA=0 on every answer; NXDOMAIN with the zone's SOA for a name it does not have, NODATA with
// the SOA for a type a name lacks. It counts the queries per question ("name TYPE", name
// lowercased) and holds the queries for a name in gates until that gate is closed.
type zone struct {
	rrs   map[string][]dns.RR // lowercased owner → its records
	mu    sync.Mutex
	asked map[string]int
	gates map[string]chan struct{}
	// arrived, when set, learns of each query's question as it arrives (before any gate).
	arrived chan string
}

func newZone(t *testing.T, records ...string) *zone {
	t.Helper()
	z := &zone{rrs: map[string][]dns.RR{}, asked: map[string]int{}, gates: map[string]chan struct{}{}}
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		n := strings.ToLower(rr.Header().Name)
		z.rrs[n] = append(z.rrs[n], rr)
	}
	return z
}

func question(name string, qtype uint16) string {
	return strings.ToLower(name) + " " + dns.TypeToString[qtype]
}

func (z *zone) reply(q *dns.Msg) *dns.Msg {
	qq := q.Question[0]
	name := strings.ToLower(qq.Name)
	z.mu.Lock()
	gate, arrived := z.gates[name], z.arrived
	if name != "." { // the forwarder's health probe is not the client's
		z.asked[question(name, qq.Qtype)]++
	}
	z.mu.Unlock()
	if arrived != nil {
		arrived <- question(name, qq.Qtype)
	}
	if gate != nil {
		<-gate
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	rrs, ok := z.rrs[name]
	for _, rr := range rrs {
		if rr.Header().Rrtype == qq.Qtype {
			m.Answer = append(m.Answer, rr)
		}
	}
	if len(m.Answer) == 0 {
		if !ok {
			m.Rcode = dns.RcodeNameError
		}
		soa, _ := dns.NewRR("cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30")
		m.Ns = []dns.RR{soa}
	}
	return m
}

func (z *zone) counts() map[string]int {
	z.mu.Lock()
	defer z.mu.Unlock()
	return maps.Clone(z.asked)
}

// hold makes the queries for name wait until the returned function is called.
func (z *zone) hold(name string) (release func()) {
	g := make(chan struct{})
	z.mu.Lock()
	z.gates[strings.ToLower(name)] = g
	z.mu.Unlock()
	return func() { close(g) }
}

// searchStub starts z on loopback, a real forwarder to it, and a stub with the pod's search
// list, ndots 5 and coalescing on (the default), with hook as its test hook.
func searchStub(t *testing.T, z *zone, hook func(string)) (*Server, string) {
	t.Helper()
	up := dnstest.Serve(t, dnstest.Reply(z.reply))
	fwd, err := upstream.New(upstream.Config{Servers: []netip.AddrPort{netip.MustParseAddrPort(up)}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Close() })
	return startServerWith(t, fwd, func(c *Config) {
		c.Search = podSearch
		c.Ndots = 5
		c.Coalesce = true
	}, func(s *Server) { s.testHook = hook })
}

// candidates is the walk of x with the pod's search list: each search domain, then x itself.
func candidates(x string) []string {
	var out []string
	for _, d := range podSearch {
		out = append(out, x+"."+d+".")
	}
	return append(out, x+".")
}

// step asks every type of name at once, each on its own socket (as glibc sends A and AAAA in
// parallel), and returns the replies in the order of types.
func step(addr, name string, types ...uint16) ([]*dns.Msg, error) {
	out := make([]*dns.Msg, len(types))
	errs := make([]error, len(types))
	var wg sync.WaitGroup
	for i, qt := range types {
		wg.Go(func() {
			c := &dns.Client{Net: "udp", Timeout: 3 * time.Second}
			out[i], _, errs[i] = c.Exchange(dnstest.Msg(name, qt), addr)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", name, dns.TypeToString[types[i]], err)
		}
	}
	return out, nil
}

// walk looks x up as glibc's res_search does with ndots:5: candidate after candidate, all types
// at once, and stops at the first candidate where some type has an answer. It returns every
// question it asked ("name TYPE", as zone counts them) and the candidate it stopped at.
func walk(t *testing.T, addr, x string, types ...uint16) (asked map[string]int, found string) {
	t.Helper()
	asked = map[string]int{}
	for _, c := range candidates(x) {
		replies, err := step(addr, c, types...)
		if err != nil {
			t.Fatal(err)
		}
		for _, qt := range types {
			asked[question(c, qt)]++
		}
		for _, r := range replies {
			if r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0 {
				return asked, c
			}
		}
	}
	return asked, ""
}

// quiesce waits until no miss or prefetch of s holds an upstream slot. Called once the client
// has its replies it is exact: a search prefetch takes its slots before the reply that
// triggered it goes out, and a prefetch holds its slot until its answer is stored.
func quiesce(t *testing.T, s *Server) {
	t.Helper()
	waitFor(t, func() bool { return len(s.inflight) == 0 })
}

func searchPrefetched() float64 { return testutil.ToFloat64(prefetchCounters[prefetchSearch]) }

// A short Service name that exists in the pod's own namespace (A record only, AAAA NODATA, as
// in an IPv4 cluster) is found at the first step: the upstream sees the A and AAAA of that
// name, nothing else — no later candidate, no bare "web.".
func TestSearchPrefetchShortNameCostsOnlyItsQueries(t *testing.T) {
	z := newZone(t, "web.ns.svc.cluster.local. 30 IN A 10.96.1.10")
	s, addr := searchStub(t, z, nil)
	base := searchPrefetched()
	asked, found := walk(t, addr, "web", dns.TypeA, dns.TypeAAAA)
	if found != "web.ns.svc.cluster.local." {
		t.Fatalf("found at %q, want the first step", found)
	}
	quiesce(t, s) // whatever the answers started has ended
	if got := z.counts(); !maps.Equal(got, asked) {
		t.Errorf("upstream saw %v, the client asked %v", got, asked)
	}
	if n := searchPrefetched() - base; n != 0 {
		t.Errorf("podns_prefetch_total{reason=\"search\"} rose by %v, want 0", n)
	}
}

// An external name walks the whole list: after the first step's NXDOMAIN the stub asks the
// rest at once, so the client's next steps are hits (or join those queries), and the upstream
// sees exactly the client's questions, each once: never more than without the stub.
func TestSearchPrefetchExternalNameAsksWhatTheClientAsks(t *testing.T) {
	z := newZone(t, "api.example.com. 30 IN A 192.0.2.1", "api.example.com. 30 IN AAAA 2001:db8::1")
	s, addr := searchStub(t, z, nil)
	base := searchPrefetched()
	cands := candidates("api.example.com")
	if _, err := step(addr, cands[0], dns.TypeA, dns.TypeAAAA); err != nil {
		t.Fatal(err)
	}
	quiesce(t, s)
	// Before the client's second step, every later candidate of both types is known.
	for _, c := range cands[1:] {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			if z.counts()[question(c, qt)] != 1 {
				t.Errorf("%s %s not prefetched after the first NXDOMAIN: upstream saw %v", c, dns.TypeToString[qt], z.counts())
			}
		}
	}
	if n := searchPrefetched() - base; n != 6 {
		t.Errorf("podns_prefetch_total{reason=\"search\"} rose by %v, want 6 (3 candidates × A, AAAA)", n)
	}
	asked, found := walk(t, addr, "api.example.com", dns.TypeA, dns.TypeAAAA)
	if found != "api.example.com." {
		t.Fatalf("found at %q, want the last step", found)
	}
	quiesce(t, s)
	if got := z.counts(); !maps.Equal(got, asked) {
		t.Errorf("upstream saw %v, the client asked %v: want the same, each once", got, asked)
	}
}

// The client's second step can reach the stub before the first step's prefetch asks for it
// (the prefetch's goroutines are slow to start). The candidate is then not asked twice: a
// finished second step is fresh in the cache, a second step still upstream is joined.
func TestSearchPrefetchNeverAsksTwiceWhenTheClientIsFirst(t *testing.T) {
	for _, inFlight := range []bool{false, true} {
		t.Run(fmt.Sprintf("second step in flight %v", inFlight), func(t *testing.T) {
			z := newZone(t, "api.example.com. 30 IN A 192.0.2.1")
			entered, proceed := make(chan struct{}), make(chan struct{})
			var once sync.Once
			hook := func(stage string) {
				if stage == "prefetch" { // each prefetch's goroutine, before it asks anything
					once.Do(func() { close(entered) })
					<-proceed
				}
			}
			s, addr := searchStub(t, z, hook)
			cands := candidates("api.example.com")
			if _, err := step(addr, cands[0], dns.TypeA); err != nil {
				t.Fatal(err)
			}
			<-entered // the first step's answer is out; its prefetches wait
			second := make(chan error, 1)
			if inFlight {
				release := z.hold(cands[1])
				z.mu.Lock()
				arrived := make(chan string, 16)
				z.arrived = arrived
				z.mu.Unlock()
				go func() { _, err := step(addr, cands[1], dns.TypeA); second <- err }()
				for q := range arrived { // the client's second step is upstream, held
					if q == question(cands[1], dns.TypeA) {
						break
					}
				}
				coalesced := testutil.ToFloat64(coalescedTotal)
				close(proceed)
				// The prefetch joins the held query rather than asking again.
				waitFor(t, func() bool { return testutil.ToFloat64(coalescedTotal) > coalesced })
				release()
			} else {
				_, err := step(addr, cands[1], dns.TypeA)
				second <- err
				close(proceed)
			}
			if err := <-second; err != nil {
				t.Fatal(err)
			}
			quiesce(t, s)
			if n := z.counts()[question(cands[1], dns.TypeA)]; n != 1 {
				t.Errorf("%s asked upstream %d times, want once", cands[1], n)
			}
			for _, c := range cands[2:] {
				if n := z.counts()[question(c, dns.TypeA)]; n != 1 {
					t.Errorf("%s asked upstream %d times, want once (prefetched)", c, n)
				}
			}
		})
	}
}

// walkContinues decides from the first step's answer alone; these are the answers of the
// kinds it has rules for.
func TestWalkContinues(t *testing.T) {
	soa, _ := dns.NewRR("cluster.local. 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30")
	a, _ := dns.NewRR("x.ns.svc.cluster.local. 30 IN A 10.0.0.1")
	cname, _ := dns.NewRR("x.ns.svc.cluster.local. 30 IN CNAME y.example.")
	reply := func(qtype uint16, rcode int, answer ...dns.RR) (*dns.Msg, *dns.Msg) {
		q := dnstest.Msg("x.ns.svc.cluster.local.", qtype)
		m := new(dns.Msg)
		m.SetRcode(q, rcode)
		m.Answer = answer
		if len(answer) == 0 {
			m.Ns = []dns.RR{soa}
		}
		return q, m
	}
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []dns.RR
		want   bool
	}{
		{"NXDOMAIN, A", dns.TypeA, dns.RcodeNameError, nil, true},
		{"NXDOMAIN, AAAA", dns.TypeAAAA, dns.RcodeNameError, nil, true},
		{"NXDOMAIN, SRV", dns.TypeSRV, dns.RcodeNameError, nil, true},
		{"answer", dns.TypeA, dns.RcodeSuccess, []dns.RR{a}, false},
		{"CNAME only: glibc stops (ANCOUNT > 0)", dns.TypeA, dns.RcodeSuccess, []dns.RR{cname}, false},
		{"NODATA, AAAA: the A-only Service", dns.TypeAAAA, dns.RcodeSuccess, nil, false},
		{"NODATA, A: musl ends the walk on NODATA for both", dns.TypeA, dns.RcodeSuccess, nil, false},
		{"NODATA, SRV", dns.TypeSRV, dns.RcodeSuccess, nil, true},
		{"NODATA, TXT", dns.TypeTXT, dns.RcodeSuccess, nil, true},
		{"SERVFAIL", dns.TypeA, dns.RcodeServerFailure, nil, false},
		{"REFUSED", dns.TypeA, dns.RcodeRefused, nil, false},
	}
	for _, tt := range tests {
		q, m := reply(tt.qtype, tt.rcode, tt.answer...)
		if got := walkContinues(q.Question[0].Qtype, packed(t, m)); got != tt.want {
			t.Errorf("%s: walkContinues = %v, want %v", tt.name, got, tt.want)
		}
	}
	q, m := reply(dns.TypeSRV, dns.RcodeSuccess)
	m.Truncated = true
	if walkContinues(q.Question[0].Qtype, packed(t, m)) {
		t.Error("a truncated empty reply is no NODATA")
	}
}

// NODATA for a type other than A and AAAA (here SRV, as glibc's res_search walks it) goes on
// like NXDOMAIN; NODATA for AAAA while A has data (the A-only Service) does not.
func TestSearchPrefetchOnNoData(t *testing.T) {
	z := newZone(t,
		"web.ns.svc.cluster.local. 30 IN A 10.96.1.10",
		`_http._tcp.web.ns.svc.cluster.local. 30 IN TXT "no SRV here"`,
		"_http._tcp.web.svc.cluster.local. 30 IN SRV 0 100 80 web.svc.cluster.local.")
	s, addr := searchStub(t, z, nil)
	base := searchPrefetched()
	if _, err := step(addr, "web.ns.svc.cluster.local.", dns.TypeAAAA); err != nil {
		t.Fatal(err)
	}
	quiesce(t, s)
	if n := searchPrefetched() - base; n != 0 {
		t.Errorf("AAAA NODATA: %v search prefetches, want 0; upstream saw %v", n, z.counts())
	}
	asked, found := walk(t, addr, "_http._tcp.web", dns.TypeSRV)
	if found != "_http._tcp.web.svc.cluster.local." {
		t.Fatalf("SRV found at %q", found)
	}
	quiesce(t, s)
	// The client's second step may have been first to ask its candidate (then the prefetch
	// skipped it); the candidates after it are the prefetch's alone.
	if n := searchPrefetched() - base; n < 2 || n > 3 {
		t.Errorf("SRV NODATA at the first step: %v search prefetches, want 2 or 3", n)
	}
	for _, c := range candidates("_http._tcp.web")[2:] {
		if n := z.counts()[question(c, dns.TypeSRV)]; n != 1 {
			t.Errorf("%s SRV asked upstream %d times, want once (prefetched)", c, n)
		}
	}
	// The SRV walk stopped at its second step; the later candidates were asked for nothing:
	// the cost of speculating on a name found in the middle of the list.
	got := z.counts()
	for q := range asked {
		if got[q] != 1 {
			t.Errorf("%s asked upstream %d times, want once", q, got[q])
		}
	}
}

// packed packs m for the functions that read replies in wire form.
func packed(t *testing.T, m *dns.Msg) []byte {
	t.Helper()
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
