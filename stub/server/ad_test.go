package server

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/upstream"
)

// asked is what an upstream saw of each query: its type and DNSSEC bits.
type asked struct {
	qtype      uint16
	ad, do, cd bool
}

// validator plays a validating resolver that sets AD only when the query asked for it (AD=1 or
// DO=1, RFC 6840 §5.7–5.8) and did not disable checking (CD=1: nothing is validated, RFC 4035
// §3.2.2); never=true plays one that does not validate at all. It answers every question with
// one A record and records what each query asked.
type validator struct {
	never bool
	mu    sync.Mutex
	seen  []asked
}

func (v *validator) reply(q *dns.Msg) *dns.Msg {
	a := asked{qtype: q.Question[0].Qtype, ad: q.AuthenticatedData, cd: q.CheckingDisabled}
	if o := q.IsEdns0(); o != nil {
		a.do = o.Do()
	}
	v.mu.Lock()
	v.seen = append(v.seen, a)
	v.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	m.AuthenticatedData = !v.never && (a.ad || a.do) && !a.cd
	m.Answer = []dns.RR{&dns.A{
		Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
		A:   net.IPv4(192, 0, 2, 1),
	}}
	return m
}

func (v *validator) answer(q *dns.Msg) (*dns.Msg, error) { return v.reply(q), nil }

func (v *validator) queries() []asked {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]asked(nil), v.seen...)
}

// asker is a client's choice of the bits that ask for AD: AD itself, EDNS with DO, and CD.
type asker struct{ ad, do, cd bool }

func (k asker) msg(name string) *dns.Msg {
	opts := []dnstest.MsgOption{dnstest.CD(k.cd), func(m *dns.Msg) { m.AuthenticatedData = k.ad }}
	if k.do {
		opts = append(opts, dnstest.EDNS(1232, true))
	}
	return dnstest.Msg(name, dns.TypeA, opts...)
}

// ask sends k's query for name over UDP and returns the reply's AD bit.
func (k asker) ask(t *testing.T, addr, name string) bool {
	t.Helper()
	r := dnstest.Exchange(t, "udp", addr, k.msg(name))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("AD=%v DO=%v CD=%v: reply %v", k.ad, k.do, k.cd, r)
	}
	return r.AuthenticatedData
}

// The input: an upstream that sets AD only when asked. Whatever order the clients come
// in, the one that asked for AD gets it and the one that did not does not, on the miss and on
// the hit of the same entry.
func TestADDoesNotDependOnWhoAskedFirst(t *testing.T) {
	plain, wants := asker{}, asker{ad: true}
	for _, tc := range []struct {
		name          string
		first, second asker
	}{
		{"(a) AD=1 fills, AD=0 hits", wants, plain},
		{"(b) AD=0 fills, AD=1 hits", plain, wants},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &validator{}
			fwd := &fakeForwarder{answer: v.answer}
			_, addr := startServer(t, fwd, nil)
			if got := tc.first.ask(t, addr, "signed.example."); got != tc.first.ad {
				t.Errorf("miss for AD=%v: AD=%v", tc.first.ad, got)
			}
			if got := tc.second.ask(t, addr, "signed.example."); got != tc.second.ad {
				t.Errorf("hit for AD=%v: AD=%v, want %v", tc.second.ad, got, tc.second.ad)
			}
			if n := fwd.calls.Load(); n != 1 {
				t.Fatalf("upstream asked %d times, want 1 (the second query is a hit)", n)
			}
			if q := v.queries()[0]; !q.ad {
				t.Errorf("upstream query %+v: want AD=1 whatever the client sent", q)
			}
		})
	}
}

// The same two orders through the real forwarder and a loopback upstream: the AD bit the stub
// sets survives packing, and the upstream's reply AD survives the exchange.
func TestADWithRealForwarder(t *testing.T) {
	v := &validator{}
	upAddr := dnstest.Serve(t, dnstest.Reply(v.reply))
	fwd, err := upstream.New(upstream.Config{Servers: []netip.AddrPort{netip.MustParseAddrPort(upAddr)}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Close() })
	_, addr := startServer(t, fwd, nil)
	plain, wants := asker{}, asker{ad: true}
	for _, step := range []struct {
		name string
		k    asker
	}{
		{"a.example.", wants}, {"a.example.", plain}, // order (a)
		{"b.example.", plain}, {"b.example.", wants}, // order (b)
	} {
		if got := step.k.ask(t, addr, step.name); got != step.k.ad {
			t.Errorf("%s AD=%v: served AD=%v", step.name, step.k.ad, got)
		}
	}
	var names int
	for _, q := range v.queries() {
		if q.qtype != dns.TypeA {
			continue // the forwarder's health probe (". NS") is not a client's query
		}
		if !q.ad {
			t.Errorf("upstream query %+v without AD", q)
		}
		names++
	}
	if names != 2 {
		t.Errorf("upstream saw %d queries for 2 names, want 2 (the rest are hits)", names)
	}
}

// DO=1 asks for AD too (RFC 6840 §5.8): a DO client gets the upstream's AD on a miss and on a hit,
// with or without its own AD bit. DO is part of the cache key, so these share one entry between
// themselves and not with the DO=0 clients.
func TestADServedToDOClient(t *testing.T) {
	v := &validator{}
	fwd := &fakeForwarder{answer: v.answer}
	_, addr := startServer(t, fwd, nil)
	for _, k := range []asker{{do: true}, {do: true, ad: true}, {do: true}} {
		if !k.ask(t, addr, "signed.example.") {
			t.Errorf("DO=1 AD=%v: AD=0, want the upstream's AD=1", k.ad)
		}
	}
	if got := (asker{}).ask(t, addr, "signed.example."); got {
		t.Error("DO=0 AD=0 client: AD=1")
	}
	if n := fwd.calls.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (one DO=1 entry, one DO=0)", n)
	}
}

// CD=1 (checking disabled) is a separate entry and upstream query: the upstream does not validate
// it, and its AD=0 neither comes from nor leaks into the CD=0 entry.
func TestADWithCDIsSeparateEntry(t *testing.T) {
	v := &validator{}
	fwd := &fakeForwarder{answer: v.answer}
	_, addr := startServer(t, fwd, nil)
	checked, unchecked := asker{ad: true}, asker{ad: true, cd: true}
	for range 2 { // miss, then hit, for each
		if !checked.ask(t, addr, "signed.example.") {
			t.Error("CD=0 AD=1: AD=0")
		}
		if unchecked.ask(t, addr, "signed.example.") {
			t.Error("CD=1 AD=1: AD=1 from an upstream that did not validate")
		}
	}
	if n := fwd.calls.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2 (one entry per CD bit)", n)
	}
	qs := v.queries()
	if len(qs) != 2 || qs[0].cd == qs[1].cd {
		t.Errorf("upstream queries %+v: want one with CD=0 and one with CD=1", qs)
	}
}

// An upstream that never validates gives AD=0 to everyone, however they ask.
func TestADNeverSetByNonValidatingUpstream(t *testing.T) {
	v := &validator{never: true}
	_, addr := startServer(t, &fakeForwarder{answer: v.answer}, nil)
	for _, k := range []asker{{ad: true}, {}, {do: true}, {ad: true, do: true}, {ad: true}} {
		if k.ask(t, addr, "plain.example.") {
			t.Errorf("AD=%v DO=%v: AD=1 from an upstream that never sets it", k.ad, k.do)
		}
	}
}

// Clients waiting on one coalesced upstream query each get the AD bit they asked for: the flight
// is shared (AD is not in its key, every upstream query asks for AD), the answer is not.
func TestADOfCoalescedWaiters(t *testing.T) {
	v := &validator{}
	fwd := &fakeForwarder{answer: v.answer}
	fwd.hold()
	_, addr := startServer(t, fwd, func(c *Config) { c.Coalesce = true })
	base := testutil.ToFloat64(coalescedTotal)
	clients := []asker{{}, {ad: true}}
	got := make([]*dns.Msg, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, k := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
			got[i], _, errs[i] = c.Exchange(k.msg("together.example."), addr)
		}()
	}
	// One leader at the upstream's gate, one waiter on its flight.
	waitFor(t, func() bool { return fwd.calls.Load() == 1 && testutil.ToFloat64(coalescedTotal)-base == 1 })
	fwd.release()
	wg.Wait()
	for i, k := range clients {
		if errs[i] != nil {
			t.Fatalf("AD=%v: %v", k.ad, errs[i])
		}
		if got[i].AuthenticatedData != k.ad {
			t.Errorf("AD=%v waiter: served AD=%v", k.ad, got[i].AuthenticatedData)
		}
	}
	if n := fwd.calls.Load(); n != 1 {
		t.Errorf("upstream asked %d times, want 1", n)
	}
}

// A prefetch triggered by a client that did not ask for AD still asks upstream for it, so the
// refreshed entry keeps the AD bit for the clients that do.
func TestADKeptByPrefetchRefresh(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	v := &validator{}
	fwd := &fakeForwarder{answer: v.answer}
	_, addr := startServer(t, fwd, func(c *Config) {
		c.Cache = cache.New(cache.Config{Size: 100, Prefetch: true, Now: clock.Now})
	})
	plain := asker{}
	for range 3 {
		plain.ask(t, addr, "hot.example.") // miss, then two hits
	}
	clock.Advance(280 * time.Second) // the last tenth of a 300 s TTL: this hit asks for a refresh
	plain.ask(t, addr, "hot.example.")
	waitFor(t, func() bool {
		r := dnstest.Exchange(t, "udp", addr, asker{ad: true}.msg("hot.example."))
		return r.Answer[0].Header().Ttl == 300 // the refreshed entry is in
	})
	if n := fwd.calls.Load(); n != 2 {
		t.Fatalf("upstream asked %d times, want 2 (the fill and the refresh)", n)
	}
	for _, q := range v.queries() {
		if !q.ad {
			t.Errorf("upstream query %+v without AD", q)
		}
	}
	if !(asker{ad: true}).ask(t, addr, "hot.example.") {
		t.Error("AD=1 client after the refresh: AD=0")
	}
	if plain.ask(t, addr, "hot.example.") {
		t.Error("AD=0 client after the refresh: AD=1")
	}
}

// The search-path prefetch's queries are copies of the client's prepared query: they ask for AD
// too, so a later candidate the client asks for with AD=1 is a hit with AD=1.
func TestADOfSearchPathPrefetch(t *testing.T) {
	v := &validator{}
	first := "web.ns.svc.cluster.local."
	fwd := &fakeForwarder{answer: func(q *dns.Msg) (*dns.Msg, error) {
		if q.Question[0].Name == first { // the walk goes on: the candidates below are prefetched
			v.reply(q)
			m := new(dns.Msg)
			m.SetRcode(q, dns.RcodeNameError)
			return m, nil
		}
		return v.answer(q)
	}}
	s, addr := startServer(t, fwd, func(c *Config) {
		c.Search = []string{"ns.svc.cluster.local", "svc.cluster.local"}
		c.Ndots = 5
	})
	if r := dnstest.Exchange(t, "udp", addr, (asker{}).msg(first)); r.Rcode != dns.RcodeNameError {
		t.Fatalf("first step: %v", r)
	}
	later := []string{"web.svc.cluster.local.", "web."}
	waitFor(t, func() bool { return cached(t, s, later...) })
	n := fwd.calls.Load()
	for _, name := range later {
		if !(asker{ad: true}).ask(t, addr, name) {
			t.Errorf("%s, prefetched for an AD=0 client, served AD=0 to an AD=1 client", name)
		}
	}
	if fwd.calls.Load() != n {
		t.Error("the prefetched candidates were not hits")
	}
	for _, q := range v.queries() {
		if !q.ad {
			t.Errorf("upstream query %+v without AD", q)
		}
	}
}
