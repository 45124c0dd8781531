package cache

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podns/podns/stub/wire"
)

func TestPrefetchSignalledOnceForHotEntriesNearExpiry(t *testing.T) {
	tests := []struct {
		name     string
		prefetch bool          // Config.Prefetch
		ttl      int           // record TTL
		lookups  int           // hits before the clock reaches the window
		advance  time.Duration // then the clock moves to here
		want     Status        // for the next lookup
		wantNext Status        // and the one after
	}{
		{"hot and in the last tenth", true, 100, PrefetchHits, 91 * time.Second, Prefetch, Hit},
		{"hot but early", true, 100, PrefetchHits, 80 * time.Second, Hit, Hit},
		// The lookups in the window count too: the first is hit 1, not hot; the second is hot.
		{"not hot enough", true, 100, 0, 91 * time.Second, Hit, Prefetch},
		{"short TTL: the last second", true, 5, PrefetchHits, 4 * time.Second, Prefetch, Hit},
		{"1 s TTL is never prefetched", true, 1, PrefetchHits, 0, Hit, Hit},
		{"prefetch off", false, 100, 10, 95 * time.Second, Hit, Hit},
		{"expired is a miss", true, 100, PrefetchHits, 100 * time.Second, Miss, Miss},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, clk := newCache(Config{Size: 100, Prefetch: tt.prefetch})
			r := request(t, "hot.example.", dns.TypeA, false, false)
			c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, fmt.Sprintf("hot.example. %d IN A 192.0.2.1", tt.ttl)), nil, nil))
			for range tt.lookups {
				if _, st := c.Lookup(nil, r); st != Hit {
					t.Fatalf("early lookup: %v", st)
				}
			}
			clk.Advance(tt.advance)
			if _, st := c.Lookup(nil, r); st != tt.want {
				t.Fatalf("lookup in window: %v, want %v", st, tt.want)
			}
			if _, st := c.Lookup(nil, r); st != tt.wantNext {
				t.Fatalf("next lookup: %v, want %v (a refresh is requested once)", st, tt.wantNext)
			}
			// The refreshed entry can be prefetched again in its own last tenth.
			if tt.want == Prefetch {
				c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, fmt.Sprintf("hot.example. %d IN A 192.0.2.1", tt.ttl)), nil, nil))
				for range tt.lookups {
					c.Lookup(nil, r)
				}
				clk.Advance(tt.advance)
				if _, st := c.Lookup(nil, r); st != Prefetch {
					t.Fatalf("refreshed entry: %v, want Prefetch", st)
				}
			}
		})
	}
}

func TestStaleServedWithinWindowOnly(t *testing.T) {
	c, clk := newCache(Config{Size: 100, StaleWindow: time.Hour})
	r := request(t, "svc.example.", dns.TypeA, false, false)
	c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, "svc.example. 60 IN A 192.0.2.1"), nil, rrs(t, "ns.example. 60 IN A 192.0.2.53")))
	if _, ok := c.Stale(nil, r, 30); ok {
		t.Fatal("fresh entry served as stale")
	}
	clk.Advance(61 * time.Second)
	if m := get(t, c, r); m != nil {
		t.Fatal("expired entry served by Get")
	}
	counted := testutil.ToFloat64(staleTotal)
	b, ok := c.Stale(nil, r, 30)
	if !ok {
		t.Fatal("expired entry inside the window not served stale")
	}
	// Only the caller knows whether the stale answer goes out (a fresh one may win).
	if got := testutil.ToFloat64(staleTotal) - counted; got != 0 {
		t.Errorf("Stale counted %v answers served, want 0", got)
	}
	c.StaleServed()
	if got := testutil.ToFloat64(staleTotal) - counted; got != 1 {
		t.Errorf("StaleServed counted %v, want 1", got)
	}
	var m dns.Msg
	if err := m.Unpack(b); err != nil || m.Id != r.ID || len(m.Answer) != 1 {
		t.Fatalf("stale answer %v, %v", &m, err)
	}
	for _, x := range append(m.Answer, m.Extra...) {
		if x.Header().Ttl != 30 {
			t.Errorf("stale TTL %d, want 30: %v", x.Header().Ttl, x)
		}
	}
	clk.Advance(time.Hour)
	if _, ok := c.Stale(nil, r, 30); ok {
		t.Fatal("served stale past the window")
	}
	off, clk2 := newCache(Config{Size: 100})
	off.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, "svc.example. 60 IN A 192.0.2.1"), nil, nil))
	clk2.Advance(61 * time.Second)
	if _, ok := off.Stale(nil, r, 30); ok {
		t.Fatal("served stale with StaleWindow 0")
	}
}

func TestServfailNeverStaleAndNeverDisplacesStaleAnswer(t *testing.T) {
	c, clk := newCache(Config{Size: 100, StaleWindow: time.Hour, ServfailTTL: 5 * time.Second})
	r := request(t, "svc.example.", dns.TypeA, false, false)
	c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, "svc.example. 60 IN A 192.0.2.1"), nil, nil))
	clk.Advance(120 * time.Second)
	c.Set(r, reply(t, r, dns.RcodeServerFailure, nil, nil, nil)) // upstream failing
	if b, ok := c.Stale(nil, r, 30); !ok {
		t.Fatal("a SERVFAIL displaced the answer that could be served stale")
	} else {
		var m dns.Msg
		if err := m.Unpack(b); err != nil || m.Rcode != dns.RcodeSuccess {
			t.Fatalf("stale answer %v %v", &m, err)
		}
	}
	// A SERVFAIL on its own is cached briefly but never served stale.
	s := request(t, "broken.example.", dns.TypeA, false, false)
	c.Set(s, reply(t, s, dns.RcodeServerFailure, nil, nil, nil))
	clk.Advance(6 * time.Second)
	if _, ok := c.Stale(nil, s, 30); ok {
		t.Fatal("SERVFAIL served stale")
	}
}

func TestEvictionKeepsEntriesInsideTheStaleWindow(t *testing.T) {
	const size = 64
	c, clk := newCache(Config{Size: size, StaleWindow: time.Hour})
	reqs := make([]*wire.Request, size)
	for i := range reqs {
		reqs[i] = request(t, fmt.Sprintf("n%d.example.", i), dns.TypeA, false, false)
		ttl := 3600
		if i == 10 {
			ttl = 10 // expires first but stays servable stale
		}
		c.Set(reqs[i], reply(t, reqs[i], dns.RcodeSuccess, rrs(t, fmt.Sprintf("n%d.example. %d IN A 192.0.2.1", i, ttl)), nil, nil))
	}
	for i := range reqs {
		if i != 11 { // everyone but n11 is hit, n10 included, before it expires
			get(t, c, reqs[i])
		}
	}
	clk.Advance(20 * time.Second)
	extra := request(t, "new.example.", dns.TypeA, false, false)
	c.Set(extra, reply(t, extra, dns.RcodeSuccess, rrs(t, "new.example. 60 IN A 192.0.2.3"), nil, nil))
	if _, ok := c.Stale(nil, reqs[10], 30); !ok {
		t.Error("n10, expired but inside the stale window and recently hit, was evicted")
	}
	if get(t, c, reqs[11]) != nil {
		t.Error("n11, never hit, survived while n10 was the alternative")
	}
}

func TestLookupAndStaleAllocateNothing(t *testing.T) {
	c, clk := newCache(Config{Size: 100, StaleWindow: time.Hour, Prefetch: true})
	r := request(t, "a.example.", dns.TypeA, true, false)
	c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, "a.example. 60 IN A 192.0.2.1"), nil, nil))
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(200, func() { c.Lookup(buf, r) }); n != 0 {
		t.Errorf("Lookup: %.1f allocs", n)
	}
	clk.Advance(2 * time.Minute)
	if n := testing.AllocsPerRun(200, func() { c.Stale(buf, r, 30) }); n != 0 {
		t.Errorf("Stale: %.1f allocs", n)
	}
}
