package e2e

// Issue 12 item 4: the search-path prefetch must send the cluster DNS nothing the pod's own
// resolver would not have sent. Counted where it costs, at the CoreDNS backends.

import (
	"context"
	"testing"
	"time"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

// TestSearchPrefetchUpstreamLoad: a cold workload of unique names, half short Service names
// that exist in the pod's own namespace (found at the first step of the ndots:5 walk: A and
// AAAA, 2 queries) and half external names (the whole walk: 4 steps × A and AAAA, 8 queries),
// looked up by real glibc and musl clients, once from a pod without podns and once from a pod
// with it (PODNS_SEARCH_PREFETCH on, the default), in the same cluster. The queries the
// CoreDNS backends receive with podns must be no more than without (ratio ≤ 1.0); on a warm
// repeat of the same names, far fewer (< 0.5).
func TestSearchPrefetchUpstreamLoad(t *testing.T) {
	t.Parallel()
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.EnableBackendMetrics(ctx); err != nil {
		t.Fatal(err)
	}
	base, err := env.Pod(ctx, c, scenario.Baseline)
	if err != nil {
		t.Fatal(err)
	}
	pod := podnsPod(t, ctx, env, c, nil)

	const perKind = 10 // names of each kind per libc
	names := map[lookup.Libc][]string{}
	want := map[string][]string{}
	for _, r := range netsim.Records() {
		want[r.FQDN] = r.Addrs()
	}
	for li, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
		for k := range perKind {
			i := li*perKind + k
			svc, ext := netsim.ColdService(i), netsim.ColdName(i)
			want[svc] = want[svc+"."+netsim.PodNamespace+".svc.cluster.local"]
			names[libc] = append(names[libc], svc, ext)
		}
	}
	// What the clients send without podns: 2 queries per Service name, 8 per external name.
	const expected = perKind*2 + perKind*8

	// queries runs libc's workload in p, alone, and returns how many queries the backends got.
	queries := func(p *netsim.Pod, libc lookup.Libc) float64 {
		t.Helper()
		before, err := c.BackendQueries()
		if err != nil {
			t.Fatal(err)
		}
		res, err := env.RunClient(ctx, p, libc, lookup.Options{Threads: 1, Lookups: len(names[libc]), Names: names[libc]})
		if err != nil {
			t.Fatal(err)
		}
		if s := lookup.Summarize(res, want); s.Failures+s.Partial+s.Wrong != 0 {
			t.Fatalf("%s: %d failed, %d partial, %d wrong (%v)", libc, s.Failures, s.Partial, s.Wrong, s.WrongExamples)
		}
		if p == pod {
			// Speculative queries for candidates the client never asked may still be on
			// their way when it is done.
			stubIdle(t, ctx, p)
		}
		after, err := c.BackendQueries()
		if err != nil {
			t.Fatal(err)
		}
		return after - before
	}

	for _, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
		var counts [2][2]float64 // [cold, warm][baseline, podns]
		for round := range 2 {
			counts[round][0] = queries(base, libc)
			counts[round][1] = queries(pod, libc)
		}
		cold, warm := counts[0][1]/counts[0][0], counts[1][1]/counts[1][0]
		t.Logf("%-5s %d lookups (%d short Service names, %d external names), queries at the cluster DNS: cold baseline %v, podns %v (ratio %.2f); warm baseline %v, podns %v (ratio %.2f)",
			libc, len(names[libc]), perKind, perKind, counts[0][0], counts[0][1], cold, counts[1][0], counts[1][1], warm)
		if counts[0][0] != expected {
			t.Errorf("%s baseline: %v queries at the cluster DNS, want %d: the workload is not what it says", libc, counts[0][0], expected)
		}
		if cold > 1.0 {
			t.Errorf("%s cold: podns sent the cluster DNS %v queries, the pod without it %v (ratio %.2f), want ≤ 1.0",
				libc, counts[0][1], counts[0][0], cold)
		}
		if warm >= 0.5 {
			t.Errorf("%s warm: podns sent the cluster DNS %v queries, the pod without it %v (ratio %.2f), want < 0.5",
				libc, counts[1][1], counts[1][0], warm)
		}
	}
}

// stubIdle waits until p's stub has an answer for every query it sent upstream
// (podns_upstream_queries_total equals the replies counted in podns_upstream_duration_seconds),
// so that a count taken at the backends afterwards includes the stub's speculative queries.
func stubIdle(t *testing.T, ctx context.Context, p *netsim.Pod) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		m := scrape(t, p)
		sent, answered := m.Sum("podns_upstream_queries_total"), m.Sum("podns_upstream_duration_seconds_count")
		if sent == answered {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the stub sent %v upstream queries and has %v replies after 10 s", sent, answered)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}
