package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

// TestUDPOnlyPolicy (issue 12 item 6): an egress NetworkPolicy that allows DNS over UDP only.
// The node drops (then, in a second pod, rejects) every TCP packet from the pods to port 53,
// after the VIP's DNAT, before the pods start — the policy exists when the workload is deployed.
// The stub's default TCP upstream would fail every miss; with the UDP fallback, glibc and musl
// resolve every name over a bounded run, the stub logs its one warn line, and the metrics show
// the switch. The rule's counter proves the stub's TCP was in fact stopped. A third phase
// applies the reject to a running pod. A drop applied to a running pod is not a case here:
// the stub learns of it only from a timed-out attempt, and lookups fail over (or get stale
// answers) until the down upstream's probe finds UDP answering (docs/manual.md: NetworkPolicy).
func TestUDPOnlyPolicy(t *testing.T) {
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	names, want := scenario.Names()
	for _, tc := range []struct{ name, action string }{
		{"dropped", netsim.Drop},
		{"rejected", netsim.Reject},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.BlockTCPDNS(ctx, tc.action); err != nil {
				t.Fatal(err)
			}
			blocked0, err := c.BlockedTCPPackets(ctx)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			pod := podnsPod(t, ctx, env, c, nil)
			ready := time.Since(start)
			res := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 4, Duration: 5 * time.Second, Rate: 40, Names: names})
			checkFallback(t, ctx, c, pod, tc.name, res, want, 100, blocked0)
			t.Logf("TCP/53 %s: ready after %s", tc.name, ms(ready))
		})
	}

	// A policy applied to a running pod whose stub holds a TCP connection: a reject resets it,
	// the re-sent query's connection is refused, and the same attempt asks over UDP. Every
	// lookup is of a name the stub has not cached, so each one is a miss.
	t.Run("rejected mid-run", func(t *testing.T) {
		if err := c.BlockTCPDNS(ctx, ""); err != nil {
			t.Fatal(err)
		}
		pod := podnsPod(t, ctx, env, c, nil)
		warm := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 1, Lookups: 1, Names: names[:1]})
		for libc, rs := range warm {
			if s := lookup.Summarize(rs, want); s.Failures != 0 {
				t.Fatalf("%s: the lookup before the policy failed", libc)
			}
		}
		if scrape(t, pod).Sum("podns_upstream_open_connections") < 1 {
			t.Fatal("no upstream TCP connection open before the policy")
		}
		if err := c.BlockTCPDNS(ctx, netsim.Reject); err != nil {
			t.Fatal(err)
		}
		blocked0, err := c.BlockedTCPPackets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var cold []string
		coldWant := map[string][]string{}
		for _, r := range netsim.Records() {
			if strings.HasPrefix(r.FQDN, "cold") {
				cold = append(cold, r.FQDN)
				coldWant[r.FQDN] = r.Addrs()
			}
		}
		res := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 4, Lookups: len(cold), Names: cold})
		checkFallback(t, ctx, c, pod, "rejected mid-run", res, coldWant, len(cold), blocked0)
	})
}

// checkFallback checks a phase of TestUDPOnlyPolicy: no failed lookup, at least `least`
// lookups per libc, the fallback in the metrics and once in the stub's log, and TCP packets stopped by
// the rule since it counted blocked0.
func checkFallback(t *testing.T, ctx context.Context, c *netsim.Cluster, pod *netsim.Pod, phase string,
	res map[lookup.Libc][]lookup.Result, want map[string][]string, least int, blocked0 int) {
	t.Helper()
	for _, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
		s := lookup.Summarize(res[libc], want)
		t.Logf("TCP/53 %s: %-5s lookups %d failures %d partial %d wrong %d p50 %s p99 %s max %s",
			phase, libc, s.Lookups, s.Failures, s.Partial, s.Wrong, ms(s.P50), ms(s.P99), ms(s.Max))
		if s.Lookups < least {
			t.Errorf("%s: %d lookups, want at least %d", libc, s.Lookups, least)
		}
		if s.Failures+s.Partial+s.Wrong != 0 {
			t.Errorf("%s: %d failures, %d partial, %d wrong (%v); want none", libc, s.Failures, s.Partial, s.Wrong, s.WrongExamples)
		}
	}
	m := scrape(t, pod)
	fallbacks := m.Sum("podns_upstream_protocol_fallback_total")
	overUDP := m.Sum("podns_upstream_protocol", `protocol="udp"`)
	overTCP := m.Sum("podns_upstream_protocol", `protocol="tcp"`)
	udpQueries := m.Sum("podns_upstream_queries_total", `protocol="udp"`)
	t.Logf("TCP/53 %s: fallbacks %v, protocol gauges tcp %v udp %v, UDP queries %v", phase, fallbacks, overTCP, overUDP, udpQueries)
	if fallbacks < 1 || overUDP != 1 || overTCP != 0 || udpQueries < 1 {
		t.Errorf("metrics: protocol_fallback_total %v, protocol tcp %v udp %v, udp queries %v; want ≥ 1, 0, 1, ≥ 1",
			fallbacks, overTCP, overUDP, udpQueries)
	}
	log := pod.Stub().Log()
	if n := strings.Count(log, "answers over UDP but not over TCP"); n != 1 {
		t.Errorf("%d fallback lines in the stub's log, want 1:\n%s", n, log)
	}
	if !strings.Contains(log, "docs/manual.md#networkpolicy") {
		t.Errorf("the fallback line does not point to the manual's NetworkPolicy section:\n%s", log)
	}
	blocked, err := c.BlockedTCPPackets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if blocked == blocked0 {
		t.Error("the rule stopped no TCP packet: the stub never tried TCP, the test proves nothing")
	}
}
