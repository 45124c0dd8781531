package e2e

// The e2e cases of issue 6 (stub resilience): serve stale, prefetch, coalescing, search-path
// prefetch, the AAAA filter and musl-safe replies. The dead-first-nameserver case is
// TestDeadFirstNameserver in e2e_test.go. TestServeStale takes its cluster's DNS down for a
// minute, so it has a cluster of its own; the other cases share one (TestStubResilience). Both
// run in parallel with each other (and after the serial tests), which keeps the suite's wall
// time at about the minute of the stale window plus the serial tests.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
	"github.com/podns/podns/internal/dnstest"
)

// staleWindow is how long TestServeStale keeps every cluster DNS backend down: the issue's
// minute, about the length of a CoreDNS rollout or a crash loop's first restarts.
const staleWindow = 60 * time.Second

// podnsPod creates a pod with podns (initc, then the stub with stubEnv added to the suite's
// settings) whose kubelet file names nameservers (default: the VIP).
func podnsPod(t *testing.T, ctx context.Context, env *scenario.Env, c *netsim.Cluster, stubEnv []string, nameservers ...string) *netsim.Pod {
	t.Helper()
	p, err := c.NewPod(ctx, netsim.PodConfig{Nameservers: nameservers})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.RunInit(ctx, env.Initc); err != nil {
		t.Fatal(err)
	}
	if _, err := p.StartStub(ctx, env.Stub, stubEnv...); err != nil {
		t.Fatal(err)
	}
	return p
}

func scrape(t *testing.T, p *netsim.Pod) netsim.Metrics {
	t.Helper()
	m, err := p.StubMetrics()
	if err != nil {
		t.Fatalf("scraping the stub's /metrics in %s: %v", p.NS, err)
	}
	return m
}

// bothLibcs runs the glibc and musl clients in p at the same time with o.
func bothLibcs(t *testing.T, ctx context.Context, env *scenario.Env, p *netsim.Pod, o lookup.Options) map[lookup.Libc][]lookup.Result {
	t.Helper()
	out := map[lookup.Libc][]lookup.Result{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
		wg.Go(func() {
			res, err := env.RunClient(ctx, p, libc, o)
			if err != nil {
				t.Errorf("%s: %v", libc, err)
				return
			}
			mu.Lock()
			out[libc] = res
			mu.Unlock()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// dialStub opens a UDP socket inside the pod's network namespace connected to the stub.
func dialStub(t *testing.T, p *netsim.Pod) *net.UDPConn {
	t.Helper()
	var conn net.Conn
	err := netsim.Do(p.NS, func() error {
		var err error
		conn, err = net.Dial("udp", "127.0.0.1:53")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn.(*net.UDPConn)
}

// readReply reads one DNS message from conn before the deadline.
func readReply(conn *net.UDPConn, deadline time.Time) (*dns.Msg, error) {
	_ = conn.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		return nil, err
	}
	return m, nil
}

func latencies(res []lookup.Result) []time.Duration {
	out := make([]time.Duration, 0, len(res))
	for _, r := range res {
		out = append(out, r.Latency())
	}
	return out
}

func ms(d time.Duration) string { return scenario.FormatDuration(d) }

// TestServeStale is issue 6 item 1 (RFC 8767): a pod resolves every name once, the entries
// expire (the stub caps TTLs to 1 s here), and then every cluster DNS backend is down for
// staleWindow while glibc and musl keep looking the names up. Every lookup must succeed, with
// exactly the served addresses, in under 100 ms, and the stub must have served stale answers.
// On this shared 2-core machine the scheduler alone sometimes stalls everything for 50-300 ms;
// a lookup over 100 ms is excused only if a stall of the test process overlapped it (at most
// 5 % of lookups), and none may take a second (a resolver retry).
//
// The backends go down the way a rollout or a crash loop takes them: CoreDNS is gone and its
// port is closed, so the upstream refuses (RST, ICMP unreachable) — what kube-proxy's REJECT
// for a Service without endpoints looks like too. A second, shorter phase then leaves the
// backends black-holed instead (a hung node: no answer at all) and requires no failure and no
// lookup over a second; its latency is recorded (the stub waits PODNS_STALE_TIMEOUT, 300 ms,
// before answering stale until it knows the upstreams are down).
func TestServeStale(t *testing.T) {
	t.Parallel()
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	pod := podnsPod(t, ctx, env, c, []string{"PODNS_CACHE_MAX_TTL=1s", "PODNS_CACHE_NEG_MAX_TTL=1s"})
	names, want := scenario.Names()
	warm := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 1, Lookups: len(names), Names: names})
	for libc, res := range warm {
		if s := lookup.Summarize(res, want); s.Failures+s.Partial+s.Wrong != 0 {
			t.Fatalf("%s: warming lookups: %d failed, %d partial, %d wrong (%v)", libc, s.Failures, s.Partial, s.Wrong, s.WrongExamples)
		}
	}
	warmedAt := time.Now()
	for i := range c.Backends {
		if err := c.KillBackend(i); err != nil {
			t.Fatal(err)
		}
	}
	// Every entry is capped to 1 s, so it has expired once a second has passed since the
	// last warming lookup; nothing signals expiry, the clock is the signal.
	time.Sleep(time.Until(warmedAt.Add(1100 * time.Millisecond)))
	if r, err := netsim.Query(pod.NS, "udp", netsim.VIP+":53", "web.alpha.svc.cluster.local", dns.TypeA, 500*time.Millisecond); err == nil {
		t.Fatalf("the cluster DNS still answers (%s) after both backends were killed", dns.RcodeToString[r.Rcode])
	}
	before := scrape(t, pod)

	const rate = 10 // lookups per second per client: 600 per libc over the minute
	stalls := watchStalls(t)
	phase1 := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 4, Duration: staleWindow, Rate: rate, Names: names, Timeout: staleWindow + time.Minute})
	machine := stalls()
	after := scrape(t, pod)
	stale := after.Sum("podns_cache_stale_served_total") - before.Sum("podns_cache_stale_served_total")
	upErrs := after.Sum("podns_upstream_errors_total") - before.Sum("podns_upstream_errors_total")
	for _, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
		s := lookup.Summarize(phase1[libc], want)
		t.Logf("serve stale, backends refusing for %v, %-5s lookups %d failures %d partial %d wrong %d p50 %s p99 %s max %s",
			staleWindow, libc, s.Lookups, s.Failures, s.Partial, s.Wrong, ms(s.P50), ms(s.P99), ms(s.Max))
		if least := int(staleWindow.Seconds()*rate) * 8 / 10; s.Lookups < least {
			t.Errorf("%s: %d lookups during the outage, want at least %d", libc, s.Lookups, least)
		}
		if s.Failures+s.Partial+s.Wrong != 0 {
			t.Errorf("%s: %d failures, %d partial, %d wrong answers (%v) with stale answers at hand; want none",
				libc, s.Failures, s.Partial, s.Wrong, s.WrongExamples)
		}
		if s.Max >= time.Second {
			t.Errorf("%s: slowest lookup took %v: a resolver timeout (1 s) was waited out", libc, s.Max)
		}
		// Every lookup under 100 ms, except one that overlapped a moment when the machine
		// itself stalled (the suite's own goroutine woke over 20 ms late); those are counted
		// and may not be more than 5 %.
		var excused, slow int
		for _, r := range phase1[libc] {
			if r.Latency() < 100*time.Millisecond {
				continue
			}
			if machine.overlaps(r.Start, r.End) {
				excused++
				continue
			}
			slow++
			if slow <= 5 {
				t.Errorf("%s: lookup of %s took %v at +%v, while the machine did not stall; want under 100 ms",
					libc, r.Name, r.Latency(), r.Start.Sub(phase1[libc][0].Start).Round(time.Millisecond))
			}
		}
		t.Logf("serve stale, %-5s %d lookups of 100 ms or more overlapped a machine stall (%d stalls over 20 ms, longest %s), %d did not",
			libc, excused, len(machine), ms(machine.longest()), slow)
		if slow > 0 {
			t.Errorf("%s: %d lookups of 100 ms or more outside machine stalls", libc, slow)
		}
		if excused > s.Lookups/20 {
			t.Errorf("%s: %d of %d lookups took 100 ms or more (during machine stalls); want at most 5 %%", libc, excused, s.Lookups)
		}
	}
	t.Logf("serve stale: %v stale answers, %v upstream errors during the outage", stale, upErrs)
	if stale == 0 {
		t.Errorf("podns_cache_stale_served_total did not rise: nothing was served stale")
	}
	if t.Failed() {
		return
	}

	// Phase 2: the backends stop answering at all (a hung node).
	for i := range c.Backends {
		if err := c.StopBackend(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	phase2 := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 4, Duration: 10 * time.Second, Rate: rate, Names: names, Timeout: time.Minute})
	for _, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
		s := lookup.Summarize(phase2[libc], want)
		t.Logf("serve stale, backends black-holed for 10s, %-5s lookups %d failures %d partial %d wrong %d p50 %s p99 %s max %s over 1s %d",
			libc, s.Lookups, s.Failures, s.Partial, s.Wrong, ms(s.P50), ms(s.P99), ms(s.Max), s.Over1s)
		if s.Failures+s.Partial+s.Wrong+s.Over1s != 0 {
			t.Errorf("%s, black-holed backends: %d failures, %d partial, %d wrong answers (%v), %d over 1 s; want none",
				libc, s.Failures, s.Partial, s.Wrong, s.WrongExamples, s.Over1s)
		}
	}
}

// TestStubResilience runs the other cases of issue 6 on one shared cluster, each in its own
// pods: the AAAA filter (item 6) with the upstream fast; prefetch (2) with every query to the
// cluster DNS delayed 300 ms; musl-safe replies (7) with it delayed upstreamDelay; search-path
// prefetch (5) with 150 ms; coalescing (3) with 200 ms, so that the whole burst arrives while the
// first query is upstream.
func TestStubResilience(t *testing.T) {
	t.Parallel()
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	const upstreamDelay = 50 * time.Millisecond

	t.Run("AAAAFilter", func(t *testing.T) { testAAAAFilter(t, ctx, env, c) })
	// Prefetch is judged by its metrics; a lookup's latency backs them up only if a miss
	// costs clearly more than the stalls a loaded 2-core machine shows (up to ~70 ms).
	if err := c.SetUpstreamDelay(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Run("Prefetch", func(t *testing.T) { testPrefetch(t, ctx, env, c, 300*time.Millisecond) })
	if err := c.SetUpstreamDelay(ctx, upstreamDelay); err != nil {
		t.Fatal(err)
	}
	t.Run("MuslSafeReplies", func(t *testing.T) { testMuslSafe(t, ctx, env, c) })
	// Two round trips against three are 100 ms against 150 ms at 50 ms, closer than the stalls
	// a loaded 2-core machine adds to one lookup; at 150 ms the same count is 300 against 450.
	if err := c.SetUpstreamDelay(ctx, 150*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Run("SearchPrefetch", func(t *testing.T) { testSearchPrefetch(t, ctx, env, c, 150*time.Millisecond) })
	if err := c.SetUpstreamDelay(ctx, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	t.Run("Coalescing", func(t *testing.T) { testCoalescing(t, ctx, env, c, 200*time.Millisecond) })
}

// testAAAAFilter: with PODNS_AAAA=filter, getaddrinfo(AF_UNSPEC) of a name with A and AAAA
// records succeeds with only the IPv4 address (glibc and musl), the AAAA question itself gets
// NODATA (NOERROR, no answer, an SOA), never NXDOMAIN; without the filter both addresses come back.
func testAAAAFilter(t *testing.T, ctx context.Context, env *scenario.Env, c *netsim.Cluster) {
	const name = "www.example.test"
	var rec netsim.Record
	for _, r := range netsim.Records() {
		if r.FQDN == name {
			rec = r
		}
	}
	filtered := podnsPod(t, ctx, env, c, []string{"PODNS_AAAA=filter"})
	passed := podnsPod(t, ctx, env, c, nil)
	for _, tc := range []struct {
		mode string
		pod  *netsim.Pod
		want []string
	}{
		{"filter", filtered, rec.A},
		{"pass", passed, rec.Addrs()},
	} {
		before := scrape(t, tc.pod)
		res := bothLibcs(t, ctx, env, tc.pod, lookup.Options{Threads: 1, Lookups: 5, Names: []string{name}})
		for libc, rs := range res {
			for _, r := range rs {
				if !r.OK() || !slices.Equal(r.Addrs, tc.want) {
					t.Errorf("PODNS_AAAA=%s, %s: getaddrinfo(%s) = %s %v, want ok %v", tc.mode, libc, name, r.Status, r.Addrs, tc.want)
				}
			}
			t.Logf("PODNS_AAAA=%s, %s: %d lookups of %s, first answer %v, max %s", tc.mode, libc, len(rs), name, rs[0].Addrs, ms(slices.Max(latencies(rs))))
		}
		filteredN := scrape(t, tc.pod).Sum("podns_aaaa_filtered_total") - before.Sum("podns_aaaa_filtered_total")
		if tc.mode == "filter" && filteredN < 10 {
			t.Errorf("PODNS_AAAA=filter: podns_aaaa_filtered_total rose by %v over 10 lookups, want at least 10", filteredN)
		}
		if tc.mode == "pass" && filteredN != 0 {
			t.Errorf("PODNS_AAAA=pass: podns_aaaa_filtered_total rose by %v", filteredN)
		}
	}
	m, err := netsim.Query(filtered.NS, "udp", "127.0.0.1:53", name, dns.TypeAAAA, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	soa := len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 || !soa {
		t.Errorf("PODNS_AAAA=filter: AAAA %s answered %s with %d answers, authority %v; want NOERROR, no answer, one SOA",
			name, dns.RcodeToString[m.Rcode], len(m.Answer), m.Ns)
	}
}

// testPrefetch: a name whose entries live 3 s (PODNS_CACHE_MAX_TTL / NEG_MAX_TTL), looked up
// continuously for 10 s by glibc and musl, never costs a miss after the first lookup: the
// stub refreshes it before it expires (podns_prefetch_total{reason="expiry"} rises, the cache
// misses do not), so with the cluster DNS delay away no lookup takes that long.
func testPrefetch(t *testing.T, ctx context.Context, env *scenario.Env, c *netsim.Cluster, delay time.Duration) {
	pod := podnsPod(t, ctx, env, c, []string{"PODNS_CACHE_MAX_TTL=3s", "PODNS_CACHE_NEG_MAX_TTL=3s"})
	names, want := []string{"web"}, map[string][]string{}
	_, all := scenario.Names()
	want["web"] = all["web"]
	// The first lookup is the miss that fills the cache (and a second one makes it "hit twice").
	bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 1, Lookups: 2, Names: names})
	before := scrape(t, pod)
	const run, rate = 10 * time.Second, 20
	res := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 2, Duration: run, Rate: rate, Names: names})
	after := scrape(t, pod)
	prefetched := after.Sum("podns_prefetch_total", `reason="expiry"`) - before.Sum("podns_prefetch_total", `reason="expiry"`)
	misses := after.Sum("podns_cache_misses_total") - before.Sum("podns_cache_misses_total")
	hits := after.Sum("podns_cache_hits_total") - before.Sum("podns_cache_hits_total")
	t.Logf("prefetch, TTL 3s, %v of lookups of %q: %v expiry prefetches, %v cache misses, %v hits", run, names[0], prefetched, misses, hits)
	for libc, rs := range res {
		s := lookup.Summarize(rs, want)
		t.Logf("prefetch, %-5s lookups %d failures %d p50 %s p99 %s max %s", libc, s.Lookups, s.Failures, ms(s.P50), ms(s.P99), ms(s.Max))
		if s.Lookups < int(run.Seconds()*rate)*8/10 || s.Failures+s.Partial+s.Wrong != 0 {
			t.Errorf("%s: %d lookups, %d failed, %d partial, %d wrong (%v)", libc, s.Lookups, s.Failures, s.Partial, s.Wrong, s.WrongExamples)
		}
		if s.Max >= delay {
			t.Errorf("%s: a lookup took %v, as long as an upstream round trip (%v): an entry expired before it was refreshed", libc, s.Max, delay)
		}
	}
	// 10 s of a 3 s TTL: each of the two questions (A and AAAA) expires at least 3 times.
	if prefetched < 4 {
		t.Errorf("podns_prefetch_total{reason=\"expiry\"} rose by %v, want at least 4", prefetched)
	}
	if misses != 0 {
		t.Errorf("podns_cache_misses_total rose by %v while the name was prefetched, want 0", misses)
	}
}

// testMuslSafe: a client sends an A query (a miss: the cluster DNS is 50 ms away) and then an
// AAAA query (a hit, primed first) for the same name with the same ID from one socket, as
// musl does. With PODNS_ORDER_SAME_ID on (the default) the first reply must be the A reply;
// with it off the AAAA reply overtakes, which is the bug the ordering prevents (and shows that
// the test exercises it).
func testMuslSafe(t *testing.T, ctx context.Context, env *scenario.Env, c *netsim.Cluster) {
	const trials = 5
	for i, mode := range []string{"on", "off"} {
		pod := podnsPod(t, ctx, env, c, []string{"PODNS_ORDER_SAME_ID=" + mode})
		conn := dialStub(t, pod)
		aFirst := 0
		for k := range trials {
			name := netsim.ColdName(i*trials + k)
			deadline := time.Now().Add(3 * time.Second)
			if _, err := conn.Write(dnstest.Query(dns.Fqdn(name), dns.TypeAAAA, dnstest.ID(uint16(1000+k)))); err != nil {
				t.Fatal(err)
			}
			if m, err := readReply(conn, deadline); err != nil || m.Id != uint16(1000+k) || len(m.Answer) == 0 {
				t.Fatalf("priming AAAA %s: %v %v", name, m, err)
			}
			id := uint16(2000 + k)
			sent := time.Now()
			for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
				if _, err := conn.Write(dnstest.Query(dns.Fqdn(name), qt, dnstest.ID(id))); err != nil {
					t.Fatal(err)
				}
			}
			var order []string
			var firstAfter time.Duration
			for range 2 {
				m, err := readReply(conn, deadline)
				if err != nil {
					t.Fatalf("ORDER_SAME_ID=%s, %s: %d of 2 replies, then %v", mode, name, len(order), err)
				}
				if m.Id != id || len(m.Question) != 1 || len(m.Answer) == 0 {
					t.Fatalf("ORDER_SAME_ID=%s: unexpected reply %v", mode, m)
				}
				if order == nil {
					firstAfter = time.Since(sent)
				}
				order = append(order, dns.TypeToString[m.Question[0].Qtype])
			}
			if order[0] == "A" {
				aFirst++
			}
			t.Logf("PODNS_ORDER_SAME_ID=%s, %s: replies in order %v, first after %s", mode, name, order, ms(firstAfter))
		}
		t.Logf("PODNS_ORDER_SAME_ID=%s: the A reply came first in %d of %d same-ID pairs", mode, aFirst, trials)
		held := scrape(t, pod).Sum("podns_same_id_held_total")
		switch mode {
		case "on":
			if aFirst != trials {
				t.Errorf("PODNS_ORDER_SAME_ID=on: the AAAA reply overtook the A reply in %d of %d pairs; musl would take it as the A answer", trials-aFirst, trials)
			}
			if held < trials {
				t.Errorf("PODNS_ORDER_SAME_ID=on: podns_same_id_held_total = %v, want at least %d", held, trials)
			}
		case "off":
			if aFirst == trials {
				t.Errorf("PODNS_ORDER_SAME_ID=off: the A reply still came first every time; the test does not exercise the race")
			}
		}
	}
}

// testSearchPrefetch: the first lookup of an external name from a pod with ndots:5 walks the
// search list (three NXDOMAINs, then the answer). With every cluster DNS reply delay late, it
// costs two upstream round trips with PODNS_SEARCH_PREFETCH on (the first step's, then the
// stub asks for every later candidate at once, once the first step's NXDOMAIN says the walk
// goes on) and about four with it off. Each lookup is of a name nobody has asked for (a cold
// cache); the medians of 5 per libc and mode are asserted.
func testSearchPrefetch(t *testing.T, ctx context.Context, env *scenario.Env, c *netsim.Cluster, delay time.Duration) {
	const perLibc = 5
	for _, mode := range []string{"on", "off"} {
		pod := podnsPod(t, ctx, env, c, []string{"PODNS_SEARCH_PREFETCH=" + mode})
		for li, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
			var names []string
			want := map[string][]string{}
			for k := range perLibc {
				n := netsim.ColdName(10 + li*perLibc + k)
				names = append(names, n)
			}
			for _, r := range netsim.Records() {
				want[r.FQDN] = r.Addrs()
			}
			// Open the stub's upstream connection first (its handshake is a round trip too),
			// with a question no lookup below asks.
			if _, err := netsim.Query(pod.NS, "udp", "127.0.0.1:53", "api.example.test", dns.TypeA, 2*time.Second); err != nil {
				t.Fatal(err)
			}
			res, err := env.RunClient(ctx, pod, libc, lookup.Options{Threads: 1, Lookups: perLibc, Names: names})
			if err != nil {
				t.Fatal(err)
			}
			s := lookup.Summarize(res, want)
			lat := latencies(res)
			var parts []string
			for _, d := range lat {
				parts = append(parts, ms(d))
			}
			t.Logf("search prefetch %-3s, %-5s first lookups of cold external names, upstream %v away: %s (median %s)",
				mode, libc, delay, strings.Join(parts, " "), ms(s.P50))
			if s.Failures+s.Partial+s.Wrong != 0 {
				t.Errorf("%s %s: %d failed, %d partial, %d wrong (%v)", mode, libc, s.Failures, s.Partial, s.Wrong, s.WrongExamples)
			}
			switch mode {
			case "on":
				// Two round trips, never a third: the first step's, then every later
				// candidate's at once (the last step a hit or joined).
				if limit := delay * 3; s.P50 >= limit {
					t.Errorf("PODNS_SEARCH_PREFETCH=on, %s: median first lookup %v, want under %v (two round trips, not three)", libc, s.P50, limit)
				}
			case "off":
				if limit := delay * 3; s.P50 <= limit {
					t.Errorf("PODNS_SEARCH_PREFETCH=off, %s: median first lookup %v, want over %v (about four round trips)", libc, s.P50, limit)
				}
			}
		}
	}
}

// testCoalescing: a burst of 1,000 queries for two distinct questions (A and AAAA of one name,
// interleaved, distinct IDs, from one socket) sent while the cluster DNS is 200 ms away costs exactly one
// upstream query per question; the other 998 wait for those (podns_coalesced_total).
func testCoalescing(t *testing.T, ctx context.Context, env *scenario.Env, c *netsim.Cluster, delay time.Duration) {
	pod := podnsPod(t, ctx, env, c, nil)
	conn := dialStub(t, pod)
	// The 998 coalesced replies leave the stub at once when the upstream answers: more than a
	// default receive buffer (208 KiB) holds, so the client's is made large enough.
	if err := forceRcvbuf(conn, 8<<20); err != nil {
		t.Fatal(err)
	}
	// Warm the upstream connection with a question the burst does not ask.
	if _, err := netsim.Query(pod.NS, "udp", "127.0.0.1:53", "api.example.test", dns.TypeA, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	const burst = 1000
	name := netsim.ColdName(30)
	before := scrape(t, pod)
	replies := make(chan error, 1)
	got := map[uint16]bool{}
	go func() {
		deadline := time.Now().Add(5 * time.Second)
		for len(got) < burst {
			m, err := readReply(conn, deadline)
			if err != nil {
				replies <- err
				return
			}
			if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
				replies <- fmt.Errorf("reply %d: %s with %d answers", m.Id, dns.RcodeToString[m.Rcode], len(m.Answer))
				return
			}
			got[m.Id] = true
		}
		replies <- nil
	}()
	start := time.Now()
	for i := range burst {
		qt := dns.TypeA
		if i%2 == 1 {
			qt = dns.TypeAAAA
		}
		if _, err := conn.Write(dnstest.Query(dns.Fqdn(name), qt, dnstest.ID(uint16(i+1)))); err != nil {
			t.Fatal(err)
		}
	}
	sendTime := time.Since(start)
	err := <-replies
	overflow, _ := pod.UDPRcvbufErrors()
	if err != nil {
		t.Fatalf("burst of %d: %d replies, then %v (pod UDP RcvbufErrors %d)", burst, len(got), err, overflow)
	}
	after := scrape(t, pod)
	upstream := after.Sum("podns_upstream_queries_total") - before.Sum("podns_upstream_queries_total")
	coalesced := after.Sum("podns_coalesced_total") - before.Sum("podns_coalesced_total")
	hits := after.Sum("podns_cache_hits_total") - before.Sum("podns_cache_hits_total")
	t.Logf("coalescing: %d queries (2 questions) sent in %s, all answered in %s; upstream queries +%v, coalesced +%v, cache hits +%v; pod UDP RcvbufErrors %d",
		burst, ms(sendTime), ms(time.Since(start)), upstream, coalesced, hits, overflow)
	if upstream != 2 {
		t.Errorf("podns_upstream_queries_total rose by %v for 2 distinct questions, want 2", upstream)
	}
	if coalesced+hits != burst-2 {
		t.Errorf("coalesced %v + cache hits %v = %v, want %d (every query but the 2 upstream ones)", coalesced, hits, coalesced+hits, burst-2)
	}
	// Sent well inside the delay, every query but the two first finds its question upstream.
	if sendTime < delay/2 && coalesced != burst-2 {
		t.Errorf("podns_coalesced_total rose by %v, want %d: the burst was sent in %v, inside the %v upstream delay", coalesced, burst-2, sendTime, delay)
	}
}

// forceRcvbuf sets conn's receive buffer to n bytes, past net.core.rmem_max (root).
func forceRcvbuf(conn *net.UDPConn, n int) error {
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	return serr
}

// stallWindows are intervals in which a goroutine that asked to sleep 5 ms woke more than
// 20 ms late: the machine, not the system under test, was not running anything promptly.
type stallWindows [][2]time.Time

func (w stallWindows) overlaps(start, end time.Time) bool {
	for _, s := range w {
		if start.Before(s[1]) && end.After(s[0]) {
			return true
		}
	}
	return false
}

func (w stallWindows) longest() time.Duration {
	var l time.Duration
	for _, s := range w {
		l = max(l, s[1].Sub(s[0]))
	}
	return l
}

// watchStalls records the machine's scheduling stalls until the returned function is called;
// it returns them.
func watchStalls(t *testing.T) func() stallWindows {
	var mu sync.Mutex
	var w stallWindows
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				now := time.Now()
				if now.Sub(last) > 25*time.Millisecond {
					mu.Lock()
					w = append(w, [2]time.Time{last, now})
					mu.Unlock()
				}
				last = now
			}
		}
	}()
	var once sync.Once
	get := func() stallWindows {
		once.Do(func() { close(stop); <-done })
		mu.Lock()
		defer mu.Unlock()
		return w
	}
	t.Cleanup(func() { get() })
	return get
}
