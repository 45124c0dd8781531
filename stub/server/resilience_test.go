package server

import (
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCoalescingBurstSendsOneUpstreamQuery(t *testing.T) {
	const n = 1000
	for _, coalesce := range []bool{true, false} {
		fwd := &fakeForwarder{answer: records(1), gate: make(chan struct{})}
		_, addr := startServer(t, fwd, func(c *Config) { c.Coalesce = coalesce; c.MaxInflight = 2 * n })
		base := testutil.ToFloat64(coalescedTotal)
		// waiting is how many of the queries sent so far are held: at the upstream gate, or
		// waiting on the one query that is.
		waiting := func() int {
			return int(fwd.calls.Load()) + int(testutil.ToFloat64(coalescedTotal)-base)
		}
		conns := make([]*dns.Conn, n)
		for i := range conns {
			c, err := dns.Dial("udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns[i] = c
			m := new(dns.Msg)
			m.SetQuestion("Burst.Example.", dns.TypeA)
			if err := c.WriteMsg(m); err != nil {
				t.Fatal(err)
			}
			if i%100 == 99 { // pace by the server's progress so no datagram overflows its buffer
				waitFor(t, func() bool { return waiting() == i+1 })
			}
		}
		close(fwd.gate)
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				r, err := c.ReadMsg()
				if err != nil || len(r.Answer) != 1 || r.Question[0].Name != "Burst.Example." {
					t.Errorf("coalesce=%v: reply %v, %v", coalesce, r, err)
				}
			}()
		}
		wg.Wait()
		calls := fwd.calls.Load()
		if coalesce && calls != 1 {
			t.Errorf("coalescing on: %d upstream queries for %d identical concurrent misses, want 1", calls, n)
		}
		if !coalesce && calls != n {
			t.Errorf("coalescing off: %d upstream queries, want %d", calls, n)
		}
	}
}

// musl may send a lookup's A and AAAA queries with the same ID from one socket and takes the
// first reply with that ID. The A query is a miss (slow), the AAAA a hit (fast): the A reply
// must still leave first.
func TestSameIDRepliesLeaveInArrivalOrder(t *testing.T) {
	for _, ordered := range []bool{true, false} {
		fwd := &fakeForwarder{answer: records(1)}
		_, addr := startServer(t, fwd, func(c *Config) { c.OrderSameID = ordered })
		query(t, "udp", addr, "musl.example.", dns.TypeAAAA, 0) // AAAA now cached (NXDOMAIN+SOA)
		fwd.hold()

		c, err := dns.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			m := new(dns.Msg)
			m.SetQuestion("musl.example.", qt)
			m.Id = 4242
			if err := c.WriteMsg(m); err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, func() bool { return fwd.calls.Load() == 2 }) // the A query is at the upstream
		if !ordered {
			// Without ordering the hit overtakes the miss: proof that the test can tell.
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if r, err := c.ReadMsg(); err != nil || r.Question[0].Qtype != dns.TypeAAAA {
				t.Fatalf("ordering off: first reply %v, %v; want the AAAA hit first", r, err)
			}
			fwd.release()
			continue
		}
		// The AAAA reply is held: nothing arrives while the A query is upstream.
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if r, err := c.ReadMsg(); err == nil {
			t.Fatalf("got %s reply while the A query was still upstream", dns.TypeToString[r.Question[0].Qtype])
		}
		fwd.release()
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		for _, want := range []uint16{dns.TypeA, dns.TypeAAAA} {
			r, err := c.ReadMsg()
			if err != nil || r.Question[0].Qtype != want || r.Id != 4242 {
				t.Fatalf("reply %v, %v; want %s next", r, err, dns.TypeToString[want])
			}
		}
		if n := testutil.ToFloat64(sameIDHeldTotal); n < 1 {
			t.Errorf("podns_same_id_held_total = %v", n)
		}
	}
}

func TestAAAAFilterAnswersNoData(t *testing.T) {
	fwd := &fakeForwarder{answer: records(1)}
	_, addr := startServer(t, fwd, func(c *Config) { c.FilterAAAA = true })
	for _, proto := range []string{"udp", "tcp"} {
		for _, edns := range []int{0, 1232} {
			r := query(t, proto, addr, "V6.Example.", dns.TypeAAAA, edns)
			if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 || r.Question[0].Name != "V6.Example." {
				t.Fatalf("%s edns=%d: want NOERROR, no answer, one SOA; got %v", proto, edns, r)
			}
			soa, ok := r.Ns[0].(*dns.SOA)
			if !ok || soa.Minttl != filteredTTL || soa.Hdr.Ttl != filteredTTL {
				t.Errorf("authority %v, want an SOA with TTL and MINIMUM %d", r.Ns[0], filteredTTL)
			}
			if (edns > 0) != (r.IsEdns0() != nil) {
				t.Errorf("OPT echo wrong for edns=%d", edns)
			}
		}
	}
	if fwd.calls.Load() != 0 {
		t.Errorf("AAAA went upstream %d times", fwd.calls.Load())
	}
	if r := query(t, "udp", addr, "v4.example.", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Errorf("A affected by the filter: %v", r)
	}
}
