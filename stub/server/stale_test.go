package server

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/wire"
)

func TestServeStale(t *testing.T) {
	failing := func(*dns.Msg) (*dns.Msg, error) { return nil, errors.New("connection refused") }
	servfail := func(q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		return m, nil
	}
	nxdomain := func(q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeNameError)
		soa, _ := dns.NewRR("example. 60 IN SOA ns.example. host.example. 1 7200 3600 1209600 30")
		m.Ns = []dns.RR{soa}
		return m, nil
	}
	tests := []struct {
		name      string
		after     func(*dns.Msg) (*dns.Msg, error) // the upstream once the entry expired
		hold      bool                             // the upstream does not answer in time
		down      bool                             // the forwarder reports every upstream down
		wantStale bool
		wantRcode int
		maxWait   time.Duration
	}{
		{name: "upstream error", after: failing, wantStale: true, maxWait: time.Second},
		{name: "upstream SERVFAIL", after: servfail, wantStale: true, maxWait: time.Second},
		{name: "upstream too slow", after: records(1), hold: true, wantStale: true, maxWait: 2 * time.Second},
		{name: "every upstream down: at once", after: records(1), hold: true, down: true, wantStale: true, maxWait: 400 * time.Millisecond},
		{name: "NXDOMAIN is an answer, not a failure", after: nxdomain, wantRcode: dns.RcodeNameError, maxWait: time.Second},
		{name: "fresh answer wins", after: records(1), wantRcode: dns.RcodeSuccess, maxWait: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
			fwd := &fakeForwarder{answer: records(1)}
			_, addr := startServer(t, fwd, func(c *Config) {
				c.Cache = cache.New(cache.Config{Size: 100, StaleWindow: time.Hour, Now: clock.Now})
				c.StaleTimeout = 500 * time.Millisecond
			})
			query(t, "udp", addr, "svc.example.", dns.TypeA, 0) // cached, TTL 300
			clock.Advance(10 * time.Minute)
			fwd.mu.Lock()
			fwd.answer = tt.after
			fwd.mu.Unlock()
			if tt.hold {
				fwd.hold()
				defer fwd.release()
			}
			fwd.down.Store(tt.down)
			served := staleServed(t)
			start := time.Now()
			r := query(t, "udp", addr, "svc.example.", dns.TypeA, 0)
			took := time.Since(start)
			// The counter counts stale answers sent, not misses that found one: the alert on it
			// (monitoring/) must stay quiet while fresh answers replace expired entries.
			if got, want := staleServed(t)-served, map[bool]float64{true: 1, false: 0}[tt.wantStale]; got != want {
				t.Errorf("podns_cache_stale_served_total rose by %v, want %v", got, want)
			}
			if took > tt.maxWait {
				t.Errorf("answered after %v, want within %v", took, tt.maxWait)
			}
			if tt.down {
				if n := fwd.calls.Load(); n != 1 {
					t.Errorf("every upstream down: %d upstream queries, want only the first fill", n)
				}
			}
			if tt.wantStale {
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
					t.Fatalf("want the stale answer with TTL %d, got %v", staleTTL, r)
				}
				if tt.hold && !tt.down && took < 400*time.Millisecond {
					t.Errorf("stale after %v: the upstream was not given StaleTimeout", took)
				}
				return
			}
			if r.Rcode != tt.wantRcode || (len(r.Answer) == 1 && r.Answer[0].Header().Ttl == staleTTL) {
				t.Fatalf("want the upstream's fresh answer (rcode %s), got %v", dns.RcodeToString[tt.wantRcode], r)
			}
		})
	}
}

// staleServed reads podns_cache_stale_served_total.
func staleServed(t *testing.T) float64 {
	t.Helper()
	for _, c := range cache.Collectors() {
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		if strings.Contains((<-ch).String(), `"podns_cache_stale_served_total"`) {
			return testutil.ToFloat64(c)
		}
	}
	t.Fatal("no podns_cache_stale_served_total")
	return 0
}

func TestStaleAnswerRefreshedInBackground(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	fwd := &fakeForwarder{answer: records(1)}
	_, addr := startServer(t, fwd, func(c *Config) {
		c.Cache = cache.New(cache.Config{Size: 100, StaleWindow: time.Hour, Now: clock.Now})
		c.StaleTimeout = 50 * time.Millisecond
		// As deployed (PODNS_COALESCE=on): a poll below that lands between the release and
		// the refresh's store joins the refresh. Without coalescing it would ask again.
		c.Coalesce = true
	})
	query(t, "udp", addr, "svc.example.", dns.TypeA, 0)
	clock.Advance(10 * time.Minute)
	fwd.hold()
	if r := query(t, "udp", addr, "svc.example.", dns.TypeA, 0); r.Answer[0].Header().Ttl != staleTTL {
		t.Fatalf("want stale, got %v", r)
	}
	fwd.release() // the exchange that outlived the client's wait completes and refreshes the cache
	waitFor(t, func() bool {
		r := query(t, "udp", addr, "svc.example.", dns.TypeA, 0)
		return r.Answer[0].Header().Ttl == 300
	})
	if got := fwd.calls.Load(); got != 2 {
		t.Errorf("upstream asked %d times, want 2 (the first fill and one refresh)", got)
	}
}

func TestPrefetchRefreshesHotEntryBeforeExpiry(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	fwd := &fakeForwarder{answer: records(1)}
	_, addr := startServer(t, fwd, func(c *Config) {
		c.Cache = cache.New(cache.Config{Size: 100, Prefetch: true, Now: clock.Now})
	})
	for range 3 {
		query(t, "udp", addr, "hot.example.", dns.TypeA, 0) // miss, then two hits
	}
	clock.Advance(280 * time.Second) // the last tenth of a 300 s TTL
	if r := query(t, "udp", addr, "hot.example.", dns.TypeA, 0); len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 20 {
		t.Fatalf("hit in the window: %v", r)
	}
	waitFor(t, func() bool { return fwd.calls.Load() == 2 }) // the prefetch went upstream
	waitFor(t, func() bool {
		return query(t, "udp", addr, "hot.example.", dns.TypeA, 0).Answer[0].Header().Ttl == 300
	})
	clock.Advance(30 * time.Second) // past the original expiry: still a hit, no miss
	if r := query(t, "udp", addr, "hot.example.", dns.TypeA, 0); r.Answer[0].Header().Ttl != 270 {
		t.Fatalf("after the old expiry: %v", r)
	}
	if got := fwd.calls.Load(); got != 2 {
		t.Errorf("upstream asked %d times, want 2", got)
	}
}

// walkAnswers plays a cluster DNS for the search-path tests: every name under cluster.local is
// NXDOMAIN except the service web.ns.svc.cluster.local, which has one A record; other names
// answer as records(1) does (an A record, NXDOMAIN for other types).
func walkAnswers(q *dns.Msg) (*dns.Msg, error) {
	name := strings.ToLower(q.Question[0].Name)
	if !strings.HasSuffix(name, ".cluster.local.") || name == "web.ns.svc.cluster.local." {
		return records(1)(q)
	}
	m := new(dns.Msg)
	m.SetRcode(q, dns.RcodeNameError)
	soa, _ := dns.NewRR("cluster.local. 30 IN SOA ns.dns.cluster.local. host.cluster.local. 1 7200 1800 86400 30")
	m.Ns = []dns.RR{soa}
	return m, nil
}

func TestSearchPathPrefetch(t *testing.T) {
	search := []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	tests := []struct {
		name  string
		query string
		want  []string // asked upstream, in any order: they go out in parallel
	}{
		{"external name: NXDOMAIN at the first step", "Api.Example.com.ns.svc.cluster.local.", []string{
			"Api.Example.com.ns.svc.cluster.local.", "api.example.com.svc.cluster.local.", "api.example.com.cluster.local.", "api.example.com."}},
		{"short service name found at the first step: nothing more", "web.ns.svc.cluster.local.", []string{"web.ns.svc.cluster.local."}},
		{"as many dots as ndots: no walk", "a.b.c.d.e.f.ns.svc.cluster.local.", []string{"a.b.c.d.e.f.ns.svc.cluster.local."}},
		{"one dot fewer than ndots: walk", "a.b.c.d.e.ns.svc.cluster.local.", []string{
			"a.b.c.d.e.ns.svc.cluster.local.", "a.b.c.d.e.svc.cluster.local.", "a.b.c.d.e.cluster.local.", "a.b.c.d.e."}},
		{"not under the first search domain", "api.example.com.svc.cluster.local.", []string{"api.example.com.svc.cluster.local."}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fwd := &fakeForwarder{answer: walkAnswers}
			s, addr := startServer(t, fwd, func(c *Config) { c.Search = search; c.Ndots = 5 })
			query(t, "udp", addr, tt.query, dns.TypeA, 0)
			waitFor(t, func() bool { return len(fwd.names()) >= len(tt.want) })
			quiesce(t, s) // every prefetch the first step started has ended
			got := fwd.names()
			if !sameSet(got, tt.want) {
				t.Fatalf("asked upstream %q, want %q", got, tt.want)
			}
			// The client's follow-up queries are now hits.
			for _, name := range tt.want[1:] {
				query(t, "udp", addr, name, dns.TypeA, 0)
			}
			if n := len(fwd.names()); n != len(tt.want) {
				t.Errorf("follow-ups went upstream: %q", fwd.names())
			}
		})
	}
	t.Run("off without a search list", func(t *testing.T) {
		fwd := &fakeForwarder{answer: walkAnswers}
		s, addr := startServer(t, fwd, nil)
		query(t, "udp", addr, "api.example.com.ns.svc.cluster.local.", dns.TypeA, 0)
		quiesce(t, s)
		if got := fwd.names(); len(got) != 1 {
			t.Fatalf("asked %q", got)
		}
	})
}

// cached reports whether the server's cache holds an A answer for every name.
func cached(t *testing.T, s *Server, names ...string) bool {
	t.Helper()
	var r wire.Request
	for _, n := range names {
		if err := r.Parse(dnstest.Query(n, dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		if _, st := s.cfg.Cache.Lookup(nil, &r); st == cache.Miss {
			return false
		}
	}
	return true
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// A lookup that walks the search list makes several stale-eligible misses in a row. Once the
// upstream has failed to answer one in time, the next ones must not each wait StaleTimeout.
func TestStaleAtOnceAfterATimedOutUpstream(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	fwd := &fakeForwarder{answer: records(1)}
	s, addr := startServer(t, fwd, func(c *Config) {
		c.Cache = cache.New(cache.Config{Size: 100, StaleWindow: time.Hour, Now: clock.Now})
		c.StaleTimeout = 400 * time.Millisecond
	})
	names := []string{"web.ns.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local."}
	for _, n := range names {
		query(t, "udp", addr, n, dns.TypeA, 0)
	}
	clock.Advance(10 * time.Minute)
	fwd.hold() // the upstream goes silent (a pooled connection to a pod that is gone)
	defer fwd.release()
	for i, n := range names {
		start := time.Now()
		r := query(t, "udp", addr, n, dns.TypeA, 0)
		took := time.Since(start)
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
			t.Fatalf("%s: want the stale answer, got %v", n, r)
		}
		switch {
		case i == 0 && took < 350*time.Millisecond:
			t.Errorf("first miss answered after %v: the upstream was not given StaleTimeout", took)
		case i > 0 && took > 200*time.Millisecond:
			t.Errorf("miss %d waited %v: after a timed-out upstream, stale answers should go out at once", i, took)
		}
	}
	if s.staleFast.Load() == 0 {
		t.Error("no fast-stale window recorded")
	}
}

// A miss is answered as its next hit will be: TTLs capped by the cache's MaxTTL (and raised by
// MinTTL) already in the first reply, as CoreDNS's cache caps the reply it forwards. Before, the
// miss carried the upstream's 300 s and only the hits the cap (a new-user trial's finding).
func TestMissAnswerCarriesTheCachedTTL(t *testing.T) {
	fwd := &fakeForwarder{answer: records(1)} // TTL 300
	_, addr := startServer(t, fwd, func(c *Config) {
		c.Cache = cache.New(cache.Config{Size: 100, MaxTTL: 10 * time.Second})
	})
	miss := query(t, "udp", addr, "capped.example.", dns.TypeA, 0)
	hit := query(t, "udp", addr, "capped.example.", dns.TypeA, 0)
	if len(miss.Answer) != 1 || miss.Answer[0].Header().Ttl != 10 {
		t.Fatalf("miss: %v, want one record with TTL 10", miss.Answer)
	}
	if len(hit.Answer) != 1 || hit.Answer[0].Header().Ttl != 10 || fwd.calls.Load() != 1 {
		t.Fatalf("hit: %v after %d upstream queries, want TTL 10 from the cache", hit.Answer, fwd.calls.Load())
	}
	neg := query(t, "udp", addr, "capped.example.", dns.TypeAAAA, 0) // NXDOMAIN, SOA minimum from records
	if len(neg.Ns) != 1 || neg.Ns[0].Header().Ttl > uint32(cache.DefaultNegMaxTTL/time.Second) {
		t.Fatalf("negative miss: %v, want the SOA's TTL capped to %v", neg.Ns, cache.DefaultNegMaxTTL)
	}
}
