package cache

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// serviceName is a Kubernetes Service name of 35 octets in wire form, the smallest common name
// the cache holds.
func serviceName(i int) string { return fmt.Sprintf("svc%05d.team-a.svc.cluster.local.", i) }

// fill stores n replies with records A records each, for distinct names, and returns the
// packed size of the last one as stored.
func fill(t testing.TB, c *Cache, n, records int) {
	t.Helper()
	for i := range n {
		name := serviceName(i)
		r := request(t, name, dns.TypeA, false, false)
		var ans []dns.RR
		for j := range records {
			ans = append(ans, &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: []byte{10, 0, byte(j >> 8), byte(j)}})
		}
		c.Set(r, reply(t, r, dns.RcodeSuccess, ans, nil, nil))
	}
}

// storedLen is the packed length of the first entry fill stored that c still holds.
func storedLen(t testing.TB, c *Cache) int {
	for i := range 1000 {
		if b, ok := c.Get(nil, request(t, serviceName(i), dns.TypeA, false, false)); ok {
			return len(b)
		}
	}
	t.Fatal("none of the first names is cached")
	return 0
}

// TestFootprintMatchesAccounting measures what the byte budget's cost model (SlotBytes,
// EntryBytes) must bound: the Go heap a full cache holds, per entry, for the smallest common
// reply (one A record for a 35-octet Service name) and for a large one (40 A records, ~700
// octets). Method: a GC, HeapAlloc; New and fill N entries with the runtime memory limit set as
// the stub sets it under a 64 MiB container limit; a GC, HeapAlloc again; the difference over
// the entries held. The model must not under-count (the budget would then let the heap exceed it) nor
// over-count by more than a quarter (the fit check would refuse sizes that fit).
func TestFootprintMatchesAccounting(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(58 << 20))
	for _, tt := range []struct {
		name       string
		n, records int
	}{
		{"one A record", 20000, 1},
		{"40 A records", 4000, 40},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			c := New(Config{Size: tt.n})
			fill(t, c, tt.n, tt.records)
			runtime.GC()
			runtime.ReadMemStats(&after)
			// Shards fill unevenly: a few entries were evicted, their slots are counted anyway.
			if c.Len() < tt.n*9/10 {
				t.Fatalf("Len %d of %d", c.Len(), tt.n)
			}
			measured := float64(after.HeapAlloc-before.HeapAlloc) / float64(c.Len())
			accounted := float64(c.Bytes()) / float64(c.Len())
			t.Logf("%s: reply %d octets; measured %.0f B per entry, accounted %.0f B", tt.name, storedLen(t, c), measured, accounted)
			// HeapAlloc is the whole process's: allocations of the runtime and the test
			// framework between the two reads (timers, metric collectors, a goroutine's first
			// stack) move it by a few KiB either way, ~1 B per one-record entry, which the
			// model need not carry. noise allows that much and no more.
			const noise = 32 << 10
			if float64(after.HeapAlloc-before.HeapAlloc) > float64(c.Bytes())+noise {
				t.Errorf("the heap holds %.0f B per entry, the budget accounts only %.0f B (+%d B of measurement noise in all)", measured, accounted, noise)
			}
			if measured < 0.75*accounted {
				t.Errorf("the budget accounts %.0f B per entry, the heap holds only %.0f B: too pessimistic", accounted, measured)
			}
			runtime.KeepAlive(c)
		})
	}
}

// TestSmallEntryBytesIsTheMeasuredSmallReply: the figure the stub's fit check uses is what the
// cost model gives for the small reply of TestFootprintMatchesAccounting.
func TestSmallEntryBytesIsTheMeasuredSmallReply(t *testing.T) {
	c := New(Config{Size: 64})
	fill(t, c, 1, 1)
	if got, want := int64(SmallEntryBytes), SlotBytes+EntryBytes(storedLen(t, c), 1); got != want {
		t.Errorf("SmallEntryBytes = %d, the model gives %d for the stored reply of %d octets", got, want, storedLen(t, c))
	}
}

// TestByteBudgetBoundsFootprint: a flood of large replies stops at the byte budget, well below
// Size entries, evicting old entries; the newest stays served.
func TestByteBudgetBoundsFootprint(t *testing.T) {
	const budget, n = 2 << 20, 8000
	c := New(Config{Size: n, MaxBytes: budget})
	before := evictions()
	fill(t, c, n, 40)
	if b := c.Bytes(); b > budget {
		t.Errorf("cache accounts %d bytes, budget %d", b, budget)
	}
	if b := c.Bytes(); b < budget*3/4 {
		t.Errorf("cache accounts %d bytes, budget %d: the budget is not used", b, budget)
	}
	if c.Len() >= n/2 {
		t.Errorf("%d entries of ~1 KiB in a 2 MiB budget", c.Len())
	}
	if evictions()-before < float64(n-c.Len()) {
		t.Errorf("evictions %v for %d inserts and %d entries left", evictions()-before, n, c.Len())
	}
	if _, ok := c.Get(nil, request(t, serviceName(n-1), dns.TypeA, false, false)); !ok {
		t.Error("the newest entry is not served")
	}
	// Entries are accounted when replaced, too: replacing every survivor with a small reply
	// frees the difference.
	big := c.Bytes()
	for i := range n {
		r := request(t, serviceName(i), dns.TypeA, false, false)
		if c.Fresh(r) {
			c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, serviceName(i)+" 300 IN A 10.0.0.1"), nil, nil))
		}
	}
	if c.Bytes() >= big {
		t.Errorf("replacing large replies by small ones left %d bytes accounted (was %d)", c.Bytes(), big)
	}
}

// TestReplyLargerThanShareNotCached: a reply that alone exceeds a shard's share of the budget
// is not stored (it would evict the whole shard and still not fit).
func TestReplyLargerThanShareNotCached(t *testing.T) {
	c := New(Config{Size: 64, MaxBytes: 64*SlotBytes + 512})
	fill(t, c, 1, 40)
	if c.Len() != 0 {
		t.Errorf("a ~1 KiB reply was cached in a 512-byte budget")
	}
	fill(t, c, 1, 1)
	if c.Len() != 1 {
		t.Errorf("a small reply was not cached in a 512-byte budget")
	}
}

func evictions() float64 { return testutil.ToFloat64(evictionsTotal) }
