package cache

import (
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestEntriesStatesAndKinds: every variant of a name, in key order, with the state its age gives
// it and the kind its reply is.
func TestEntriesStatesAndKinds(t *testing.T) {
	c, clk := newCache(Config{Size: 100, StaleWindow: time.Minute, ServfailTTL: 20 * time.Second})
	soa := rrs(t, "example. 600 IN SOA ns. host. 1 2 3 4 10")
	a := request(t, "www.example.", dns.TypeA, false, false)
	c.Set(a, reply(t, a, dns.RcodeSuccess, rrs(t, "www.example. 30 IN A 10.0.0.1"), nil, nil))
	aDO := request(t, "WWW.example.", dns.TypeA, true, false)
	c.Set(aDO, reply(t, aDO, dns.RcodeSuccess, rrs(t, "www.example. 100 IN A 10.0.0.1"), nil, nil))
	aaaa := request(t, "www.example.", dns.TypeAAAA, false, false)
	c.Set(aaaa, reply(t, aaaa, dns.RcodeSuccess, nil, soa, nil))
	mx := request(t, "www.example.", dns.TypeMX, false, true)
	c.Set(mx, reply(t, mx, dns.RcodeServerFailure, nil, nil, nil))
	other := request(t, "nx.example.", dns.TypeA, false, false)
	c.Set(other, reply(t, other, dns.RcodeNameError, nil, soa, nil))
	c.Get(nil, aDO)

	clk.Advance(40 * time.Second) // A expired 10 s ago (stale); the SERVFAIL expired (never stale)
	got := c.Entries("www.EXAMPLE", 0)
	want := []struct {
		qtype   uint16
		do, cd  bool
		state   State
		kind    Kind
		ttlLeft time.Duration
		stale   time.Duration
		hits    uint64
	}{
		{dns.TypeA, false, false, Stale, Answer, -10 * time.Second, 50 * time.Second, 0},
		{dns.TypeA, true, false, Fresh, Answer, 60 * time.Second, 0, 1},
		{dns.TypeMX, false, true, Expired, Servfail, -20 * time.Second, 0, 0},
		{dns.TypeAAAA, false, false, Expired, NoData, -30 * time.Second, 30 * time.Second, 0},
	}
	// NODATA lives min(SOA TTL, MINIMUM) = 10 s: expired 30 s ago, still servable stale.
	want[3].state = Stale
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Name != "www.example." || g.Type != w.qtype || g.Class != dns.ClassINET || g.DO != w.do || g.CD != w.cd ||
			g.State != w.state || g.Kind != w.kind || g.TTLLeft != w.ttlLeft || g.StaleLeft != w.stale || g.Hits != w.hits {
			t.Errorf("entry %d: %+v, want %+v", i, g, w)
		}
	}
	if r := got[0].Records; len(r) != 1 || r[0] != "www.example.\t30\tIN\tA\t10.0.0.1" {
		t.Errorf("records of A: %q", r)
	}
	if r := got[3].Records; len(r) != 1 || r[0] != "example.\t10\tIN\tSOA\tns. host. 1 2 3 4 10" {
		t.Errorf("records of NODATA: %q, want the SOA with the negative TTL", r)
	}
	if e := c.Entries("nx.example", 0); len(e) != 1 || e[0].Kind != NXDomain {
		t.Errorf("nx.example: %+v", e)
	}
	if e := c.Entries("www.example.", 2); len(e) != 2 {
		t.Errorf("limit 2: %d entries", len(e))
	}
	for _, name := range []string{"example.", "ww.example.", "", "not a..name"} {
		if e := c.Entries(name, 0); len(e) != 0 {
			t.Errorf("%q: %+v", name, e)
		}
	}
	clk.Advance(time.Hour)
	if e := c.Entries("www.example.", 1); e[0].State != Expired || e[0].StaleLeft != 0 {
		t.Errorf("past the stale window: %+v", e[0])
	}
}

func TestTopAndStats(t *testing.T) {
	c, _ := newCache(Config{Size: 1000})
	s0 := c.Stats()
	for i := range 200 {
		r := request(t, fmt.Sprintf("n%d.example.", i), dns.TypeA, false, false)
		c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, fmt.Sprintf("n%d.example. 60 IN A 10.0.0.1", i)), nil, nil))
		for range i % 50 {
			c.Get(nil, r)
		}
	}
	top := c.Top(10)
	if len(top) != 10 {
		t.Fatalf("%d entries, want 10", len(top))
	}
	// 49 hits: n49, n99, n149, n199 (ties by name in wire order, which for one length is text order).
	for i, want := range []struct {
		name string
		hits uint64
	}{{"n49.example.", 49}, {"n99.example.", 49}, {"n149.example.", 49}, {"n199.example.", 49}, {"n48.example.", 48}} {
		if top[i].Name != want.name || top[i].Hits != want.hits {
			t.Errorf("top[%d] = %s %d hits, want %s %d", i, top[i].Name, top[i].Hits, want.name, want.hits)
		}
	}
	if n := len(c.Top(1000)); n != 200 {
		t.Errorf("Top(1000) of 200: %d", n)
	}
	s := c.Stats()
	if s.Entries != 200 || s.Capacity != 1000 || s.Bytes <= 0 || s.Hits-s0.Hits != 200*49/2 {
		t.Errorf("stats %+v (hits before %d)", s, s0.Hits)
	}
}
