package cache

import (
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/wire"
)

// client is what a query says about the AD bit it wants back: AD set (RFC 6840 §5.7), EDNS with
// DO (RFC 3225), and CD.
type client struct{ ad, edns, do, cd bool }

func (k client) request(t testing.TB, name string) *wire.Request {
	t.Helper()
	opts := []dnstest.MsgOption{dnstest.CD(k.cd), func(m *dns.Msg) { m.AuthenticatedData = k.ad }}
	if k.edns {
		opts = append(opts, dnstest.EDNS(1232, k.do))
	}
	r := new(wire.Request)
	if err := r.Parse(dnstest.Query(name, dns.TypeA, opts...)); err != nil {
		t.Fatal(err)
	}
	return r
}

// signed is the upstream's reply to r with the AD bit it chose, as the stub stores it: the stub
// asks every upstream query with AD=1, so the bit is the upstream's verdict, not an echo of r's.
func signed(t testing.TB, r *wire.Request, ad bool) *dns.Msg {
	t.Helper()
	m := reply(t, r, dns.RcodeSuccess, rrs(t, "signed.example. 60 IN A 192.0.2.1"), nil, nil)
	m.AuthenticatedData = ad
	return m
}

// adOf serves r from c and returns the AD bit of the answer; it fails on a miss.
func adOf(t testing.TB, c *Cache, r *wire.Request) bool {
	t.Helper()
	m := get(t, c, r)
	if m == nil {
		t.Fatalf("miss for AD=%v DO=%v CD=%v", r.AD, r.DO, r.CD)
	}
	return m.AuthenticatedData
}

// The AD bit a client gets from one entry is stored AD && (client AD || client DO) (RFC 6840
// §5.7–5.8), whoever filled the entry: the same entry answers a client that asked for AD with
// it and one that did not without it, in either order.
func TestADServedByTheClientsRequestNotTheFillers(t *testing.T) {
	const name = "signed.example."
	plain, asks := client{}, client{ad: true}
	ednsNoDO := client{edns: true}
	for _, tc := range []struct {
		name   string
		filler client
		stored bool // the upstream's AD for the stub's query (which always asks)
		want   map[client]bool
	}{
		// Order (a): an AD=1 client fills, an AD=0 client without DO hits.
		{"AD=1 client fills", asks, true, map[client]bool{plain: false, asks: true}},
		// Order (b): an AD=0 client fills, an AD=1 client hits.
		{"AD=0 client fills", plain, true, map[client]bool{asks: true, plain: false}},
		// An upstream that does not validate never sets AD, whoever asks.
		{"upstream never sets AD", asks, false, map[client]bool{asks: false, plain: false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newCache(DefaultConfig())
			fill := tc.filler.request(t, name)
			c.Set(fill, signed(t, fill, tc.stored))
			for k, want := range tc.want {
				if got := adOf(t, c, k.request(t, name)); got != want {
					t.Errorf("client AD=%v: served AD=%v, want %v", k.ad, got, want)
				}
			}
			// EDNS without DO shares the entry (DO is the key, not EDNS) and asks for nothing.
			if got := adOf(t, c, ednsNoDO.request(t, name)); got {
				t.Error("client with EDNS, DO=0, AD=0 was served AD=1")
			}
			if c.Len() != 1 {
				t.Errorf("Len = %d, want 1: AD is not part of the key", c.Len())
			}
		})
	}
}

// DO=1 asks for AD as well as AD=1 does (RFC 6840 §5.8: a resolver sets AD for a DO query too),
// so a DO client gets the stored AD with or without its own AD bit.
func TestADServedToDOClients(t *testing.T) {
	const name = "signed.example."
	for _, stored := range []bool{true, false} {
		c, _ := newCache(DefaultConfig())
		fill := client{edns: true, do: true}.request(t, name)
		c.Set(fill, signed(t, fill, stored))
		for _, k := range []client{{edns: true, do: true}, {ad: true, edns: true, do: true}} {
			if got := adOf(t, c, k.request(t, name)); got != stored {
				t.Errorf("stored AD=%v, DO client with AD=%v: served AD=%v", stored, k.ad, got)
			}
		}
	}
}

// CD=1 is its own entry: an upstream answers it without validating (AD=0, RFC 4035 §3.2.2), and
// that must not clear the AD of the CD=0 entry, nor the reverse.
func TestADOfCDEntryIsSeparate(t *testing.T) {
	const name = "signed.example."
	c, _ := newCache(DefaultConfig())
	checked := client{ad: true}.request(t, name)
	unchecked := client{ad: true, cd: true}.request(t, name)
	c.Set(checked, signed(t, checked, true))
	c.Set(unchecked, signed(t, unchecked, false))
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2 (CD is part of the key)", c.Len())
	}
	if !adOf(t, c, client{ad: true}.request(t, name)) {
		t.Error("CD=0 client: AD=0, want the CD=0 entry's AD=1")
	}
	if adOf(t, c, client{ad: true, cd: true}.request(t, name)) {
		t.Error("CD=1 client: AD=1, want the CD=1 entry's AD=0")
	}
}

// A stale answer (RFC 8767) follows the same rule as a fresh one.
func TestStaleAnswerFollowsTheADRule(t *testing.T) {
	const name = "signed.example."
	c, clk := newCache(Config{Size: 100, StaleWindow: time.Hour})
	fill := client{ad: true}.request(t, name)
	c.Set(fill, signed(t, fill, true))
	clk.Advance(61 * time.Second)
	for _, k := range []client{{}, {ad: true}} {
		b, ok := c.Stale(nil, k.request(t, name), 30)
		if !ok {
			t.Fatal("not served stale")
		}
		if got := wire.IsAuthentic(b); got != k.ad {
			t.Errorf("stale answer to AD=%v: AD=%v", k.ad, got)
		}
	}
}

// The AD patch is part of the hit path, which allocates nothing.
func TestADHitAllocatesNothing(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	fill := client{ad: true}.request(t, "signed.example.")
	c.Set(fill, signed(t, fill, true))
	dst := make([]byte, 0, 512)
	for _, k := range []client{{}, {ad: true}} {
		r := k.request(t, "Signed.Example.")
		if n := testing.AllocsPerRun(1000, func() { dst, _ = c.Get(dst[:0], r) }); n != 0 {
			t.Errorf("AD=%v: %.1f allocations per hit, want 0", k.ad, n)
		}
		if got := wire.IsAuthentic(dst); got != k.ad {
			t.Errorf("AD=%v: served AD=%v", k.ad, got)
		}
	}
}
