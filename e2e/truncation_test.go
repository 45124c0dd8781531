package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

// TestBigAnswer (issue 12 item 0): a headless Service with 40 A records, about 680 octets, more
// than fits a UDP reply to a client without EDNS. CoreDNS sends such a client TC=1 with the
// records that fit; glibc retries over TCP and gets all 40, static musl 1.2.3 (no TCP fallback)
// uses the records it got. Through podns both must resolve it as they do without it: glibc all
// 40 addresses, musl at least as many as CoreDNS gave it, each one served. A plain UDP query to
// the stub gets TC=1 with records, over TCP all of them.
func TestBigAnswer(t *testing.T) {
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	base, err := env.Pod(ctx, c, scenario.Baseline)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := env.Pod(ctx, c, scenario.Podns)
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, r := range netsim.Records() {
		if r.FQDN == netsim.BigName {
			served = r.Addrs()
		}
	}
	if len(served) != netsim.BigRecords {
		t.Fatalf("%s serves %d addresses, want %d", netsim.BigName, len(served), netsim.BigRecords)
	}

	// getaddrinfo first, while the stub's cache is cold: the first lookup of each libc may be the
	// miss. A subtest each, so that one part failing does not hide the other.
	t.Run("getaddrinfo", func(t *testing.T) {
		// The short name, as an application in namespace alpha writes it: with ndots:5 the first
		// search domain gives the FQDN at once.
		short := strings.TrimSuffix(netsim.BigName, "."+netsim.PodNamespace+".svc.cluster.local")
		got := map[string]int{} // "mode libc" → fewest addresses a lookup returned
		for _, m := range []struct {
			mode string
			pod  *netsim.Pod
		}{{"baseline", base}, {"podns", pod}} {
			for libc, rs := range bothLibcs(t, ctx, env, m.pod, lookup.Options{Threads: 1, Lookups: 5, Names: []string{short}}) {
				key := m.mode + " " + string(libc)
				if len(rs) != 5 {
					t.Errorf("%s: %d lookups, want 5", key, len(rs))
				}
				got[key] = netsim.BigRecords + 1
				for _, r := range rs {
					got[key] = min(got[key], len(r.Addrs))
					if !r.OK() || len(r.Addrs) == 0 {
						t.Errorf("%s: getaddrinfo(%s) = %s %v, want the served addresses", key, short, r.Status, r.Addrs)
						continue
					}
					for _, a := range r.Addrs {
						if !slices.Contains(served, a) {
							t.Errorf("%s: getaddrinfo(%s) returned %s, which is not served", key, short, a)
						}
					}
					if libc == lookup.Glibc && !slices.Equal(r.Addrs, served) {
						t.Errorf("%s: getaddrinfo(%s) returned %d addresses, want all %d (glibc retries over TCP)",
							key, short, len(r.Addrs), len(served))
					}
				}
				t.Logf("%s: fewest addresses in a lookup %d of %d", key, got[key], netsim.BigRecords)
			}
		}
		if got["podns musl"] < got["baseline musl"] {
			t.Errorf("musl through podns got %d addresses, without podns %d: podns answers worse", got["podns musl"], got["baseline musl"])
		}
	})
	// A fresh podns pod, so the first query is a miss and the second a hit.
	queried, err := env.Pod(ctx, c, scenario.Podns)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("queries", func(t *testing.T) {
		// What a UDP client without EDNS gets, from CoreDNS through the VIP and from the stub (a
		// miss, then a hit).
		for _, q := range []struct {
			pod           *netsim.Pod
			server, round string
		}{
			{base, netsim.VIP + ":53", "CoreDNS"},
			{queried, "127.0.0.1:53", "podns miss"},
			{queried, "127.0.0.1:53", "podns hit"},
		} {
			r, err := netsim.Query(q.pod.NS, "udp", q.server, netsim.BigName, dns.TypeA, 2*time.Second)
			if err != nil {
				t.Fatalf("%s: UDP query: %v", q.round, err)
			}
			t.Logf("%s: UDP without EDNS: TC=%v, %d of %d A records", q.round, r.Truncated, len(r.Answer), netsim.BigRecords)
			if !r.Truncated || len(r.Answer) == 0 || len(r.Answer) >= netsim.BigRecords || r.Rcode != dns.RcodeSuccess {
				t.Errorf("%s: UDP reply rcode %d TC=%v with %d answers; want NOERROR, TC=1 and the records that fit",
					q.round, r.Rcode, r.Truncated, len(r.Answer))
			}
			r, err = netsim.Query(q.pod.NS, "tcp", q.server, netsim.BigName, dns.TypeA, 2*time.Second)
			if err != nil {
				t.Fatalf("%s: TCP query: %v", q.round, err)
			}
			if r.Truncated || len(r.Answer) != netsim.BigRecords {
				t.Errorf("%s: TCP reply TC=%v with %d answers, want all %d", q.round, r.Truncated, len(r.Answer), netsim.BigRecords)
			}
		}

	})
}
