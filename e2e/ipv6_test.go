package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

// TestIPv6 (issue 12 item 7) is the upstream path of an IPv6 cluster: the node DNATs the DNS
// VIP fd00:10:96::a with ip6tables (kube-proxy's rules) over two CoreDNS backends on IPv6
// addresses, and the pods are IPv6-only: no IPv4 address but loopback's, whose kubelet
// resolv.conf says `nameserver fd00:10:96::a`. initc rewrites it to `nameserver 127.0.0.1` (lo
// has 127.0.0.1 in every network namespace, as in a real IPv6-only pod), and the stub forwards
// to [fd00:10:96::a]:53 read from the saved file. With glibc and musl clients it must resolve
// (A and AAAA of cluster names, an external name), cache (a second lookup is all hits, no
// miss), and fail over — a dead first nameserver and one backend down — within the bounds of
// the IPv4 cases (TestDeadFirstNameserver, TestBackendDown).
func TestIPv6(t *testing.T) {
	env, ctx := setup(t)
	c, err := env.Run.NewClusterWith(ctx, env.CoreDNS, netsim.ClusterConfig{IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	if c.VIP != netsim.VIP6 {
		t.Fatalf("IPv6 cluster VIP %s, want %s", c.VIP, netsim.VIP6)
	}
	upstream := fmt.Sprintf(`upstream="[%s]:53"`, netsim.VIP6)
	base, err := env.Pod(ctx, c, scenario.Baseline)
	if err != nil {
		t.Fatal(err)
	}
	pod := podnsPod(t, ctx, env, c, nil)
	var names []string
	want := map[string][]string{}
	for _, l := range netsim.IPv6Lookups() {
		names = append(names, l.Name)
		want[l.Name] = l.Want
	}

	t.Run("PodView", func(t *testing.T) {
		for _, p := range []*netsim.Pod{base, pod} {
			checkIPv6Only(t, ctx, p)
		}
		for _, ns := range []string{c.Node, c.Backends[0].NS, c.Backends[1].NS, base.NS, pod.NS} {
			for _, family := range []string{"-4", "-6"} {
				out, err := exec.CommandContext(ctx, "ip", "-n", ns, family, "route", "show", "default").CombinedOutput()
				if err != nil || len(strings.TrimSpace(string(out))) != 0 {
					t.Errorf("namespace %s: ip %s default route %q (%v); want none", ns, family, out, err)
				}
			}
		}
		kubelet := netsim.KubeletResolvConf(netsim.PodNamespace, []string{netsim.VIP6})
		if got, _ := os.ReadFile(filepath.Join(base.PauseRoot(), "etc/resolv.conf")); string(got) != kubelet {
			t.Errorf("baseline pod sees /etc/resolv.conf:\n%s\nwant the kubelet's:\n%s", got, kubelet)
		}
		seen, err := os.ReadFile(filepath.Join(pod.PauseRoot(), "etc/resolv.conf"))
		if err != nil {
			t.Fatal(err)
		}
		var nameservers []string
		for _, line := range strings.Split(string(seen), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "nameserver" {
				nameservers = append(nameservers, f[1])
			}
		}
		if len(nameservers) != 1 || nameservers[0] != "127.0.0.1" {
			t.Errorf("after initc the pod's resolv.conf names %v, want only 127.0.0.1:\n%s", nameservers, seen)
		}
		if saved, err := os.ReadFile(filepath.Join(pod.StateDir, "upstream.conf")); err != nil || string(saved) != kubelet {
			t.Errorf("upstream.conf = %q, %v; want the kubelet's file byte for byte", saved, err)
		}
		// The stub took its upstream from upstream.conf and found it alive at startup.
		m := scrape(t, pod)
		if v := m.Sum("podns_upstream_healthy", upstream); v != 1 {
			t.Errorf("podns_upstream_healthy{%s} = %v, want 1", upstream, v)
		}
		if v := m.Sum("podns_upstream_probes_total", upstream, `result="alive"`); v < 1 {
			t.Errorf("podns_upstream_probes_total{%s,result=\"alive\"} = %v, want >= 1 (the startup probe)", upstream, v)
		}
	})

	t.Run("Resolves", func(t *testing.T) {
		// The upstream given as PODNS_UPSTREAMS in the bracketed form, and over UDP.
		env6 := podnsPod(t, ctx, env, c, []string{"PODNS_UPSTREAMS=[" + netsim.VIP6 + "]:53"})
		udp6 := podnsPod(t, ctx, env, c, []string{"PODNS_UPSTREAMS=" + netsim.VIP6, "PODNS_UPSTREAM_PROTOCOL=udp"})
		// The stub on ::1 instead of 127.0.0.1 (initc's PODNS_NAMESERVER, the stub's PODNS_LISTEN).
		lo6, err := c.NewPod(ctx, netsim.PodConfig{})
		if err != nil {
			t.Fatal(err)
		}
		if err := lo6.RunInit(ctx, env.Initc, "PODNS_NAMESERVER=::1"); err != nil {
			t.Fatal(err)
		}
		if _, err := lo6.StartStub(ctx, env.Stub, "PODNS_LISTEN=[::1]:53"); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(filepath.Join(lo6.PauseRoot(), "etc/resolv.conf")); !strings.Contains(string(got), "\nnameserver ::1\n") {
			t.Errorf("with PODNS_NAMESERVER=::1 the pod's resolv.conf is\n%s\nwant nameserver ::1", got)
		}
		pods := map[string]*netsim.Pod{"baseline": base, "podns": pod, "podns [v6]:53": env6, "podns udp": udp6, "podns on ::1": lo6}
		results := runClients(t, ctx, env, pods, lookup.Options{Threads: 4, Lookups: 10 * len(names), Names: names})
		if t.Failed() {
			return
		}
		for key, res := range results {
			s := lookup.Summarize(res, want)
			t.Logf("IPv6 %-20s lookups %d failures %d partial %d wrong %d p50 %v max %v", key, s.Lookups, s.Failures, s.Partial, s.Wrong, ms(s.P50), ms(s.Max))
			if s.Lookups != 10*len(names) || s.Failures+s.Partial+s.Wrong != 0 {
				t.Errorf("%s: %d lookups, %d failed, %d partial, %d wrong (%v); want %d, all correct",
					key, s.Lookups, s.Failures, s.Partial, s.Wrong, s.WrongExamples, 10*len(names))
			}
		}
		for key, p := range map[string]*netsim.Pod{"podns": pod, "podns [v6]:53": env6, "podns udp": udp6} {
			proto := `protocol="tcp"`
			if p == udp6 {
				proto = `protocol="udp"`
			}
			if v := scrape(t, p).Sum("podns_upstream_queries_total", upstream, proto); v < 1 {
				t.Errorf("%s: podns_upstream_queries_total{%s,%s} = %v; want the misses sent there", key, upstream, proto, v)
			}
		}
		// Each question as a client asks it, over UDP and TCP to the stub: an A and an AAAA
		// record of the dual-stack Service, NODATA for the A question of the IPv6-only one.
		for _, q := range []struct {
			name  string
			qtype uint16
			want  []string
		}{
			{"dual.alpha.svc.cluster.local", dns.TypeA, []string{"10.96.1.20"}},
			{"dual.alpha.svc.cluster.local", dns.TypeAAAA, []string{"fd00:10:96::1:20"}},
			{"web6.alpha.svc.cluster.local", dns.TypeAAAA, []string{"fd00:10:96::1:10"}},
			{"web6.alpha.svc.cluster.local", dns.TypeA, nil},
		} {
			for _, network := range []string{"udp", "tcp"} {
				r, err := netsim.Query(pod.NS, network, "127.0.0.1:53", q.name, q.qtype, 2*time.Second)
				if err != nil {
					t.Errorf("%s %s over %s: %v", q.name, dns.TypeToString[q.qtype], network, err)
					continue
				}
				if got := answerAddrs(r); r.Rcode != dns.RcodeSuccess || strings.Join(got, ",") != strings.Join(q.want, ",") {
					t.Errorf("%s %s over %s: %s %v, want NOERROR %v", q.name, dns.TypeToString[q.qtype], network, dns.RcodeToString[r.Rcode], got, q.want)
				}
			}
		}
	})

	t.Run("Caches", func(t *testing.T) {
		// A fresh pod, so that its first lookup is a miss. getaddrinfo asks A and AAAA: the first
		// lookup misses both (sent to [VIP6]:53), the second of either libc is two hits, no miss
		// and nothing sent upstream for it.
		p := podnsPod(t, ctx, env, c, nil)
		const name = "dual"
		before := scrape(t, p)
		for i, libc := range []lookup.Libc{lookup.Glibc, lookup.Glibc, lookup.Musl} {
			res, err := env.RunClient(ctx, p, libc, lookup.Options{Threads: 1, Lookups: 1, Names: []string{name}})
			if err != nil {
				t.Fatal(err)
			}
			after := scrape(t, p)
			misses := after.Sum("podns_cache_misses_total") - before.Sum("podns_cache_misses_total")
			hits := after.Sum("podns_cache_hits_total") - before.Sum("podns_cache_hits_total")
			sent := after.Sum("podns_upstream_queries_total", upstream) - before.Sum("podns_upstream_queries_total", upstream)
			t.Logf("lookup %d (%s) of %s: %s %v in %v; cache misses +%v, hits +%v, upstream queries +%v",
				i+1, libc, name, res[0].Status, res[0].Addrs, ms(res[0].Latency()), misses, hits, sent)
			if len(res) != 1 || !res[0].OK() || strings.Join(res[0].Addrs, ",") != strings.Join(want[name], ",") {
				t.Errorf("lookup %d (%s) of %s: %v, want %v", i+1, libc, name, res, want[name])
			}
			if i == 0 && (misses < 2 || sent < 2) {
				t.Errorf("first lookup: cache misses +%v, upstream queries +%v; want the A and AAAA misses sent upstream", misses, sent)
			}
			if i > 0 && (misses != 0 || hits < 2) {
				t.Errorf("lookup %d (%s): cache misses +%v, hits +%v; want 0 misses and the A and AAAA hits", i+1, libc, misses, hits)
			}
			before = after
		}
	})

	t.Run("DeadFirstNameserver", func(t *testing.T) {
		// As TestDeadFirstNameserver: the first nameserver is black-holed at the node — no reply
		// and no ICMPv6 error, checked here — and no podns lookup may fail or take over 1 s.
		p := podnsPod(t, ctx, env, c, nil, netsim.DeadNameserver6, netsim.VIP6)
		dead := net.JoinHostPort(netsim.DeadNameserver6, "53")
		var ne net.Error
		if _, err := netsim.Query(p.NS, "udp", dead, "dual.alpha.svc.cluster.local", dns.TypeA, 300*time.Millisecond); !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("a query to %s answered or failed at once (%v); want a timeout: the fault does not bite", dead, err)
		}
		m := scrape(t, p)
		if v := m.Sum("podns_upstream_healthy", `upstream="`+"["+netsim.DeadNameserver6+`]:53"`); v != 0 {
			t.Errorf("podns_upstream_healthy of the dead nameserver = %v, want 0 (found dead by the startup probe)", v)
		}
		res := runClients(t, ctx, env, map[string]*netsim.Pod{"podns": p},
			lookup.Options{Threads: 16, Lookups: 40 * len(names), Names: names, Timeout: 90 * time.Second})
		if t.Failed() {
			return
		}
		for key, rs := range res {
			s := lookup.Summarize(rs, want)
			t.Logf("IPv6 dead first nameserver, %-12s lookups %4d failures %3d partial %2d over 1s %3d p50 %-8v p99 %-8v max %v",
				key, s.Lookups, s.Failures, s.Partial, s.Over1s, ms(s.P50), ms(s.P99), ms(s.Max))
			if s.Lookups != 40*len(names) || s.Wrong+s.Over1s+s.Failures+s.Partial != 0 {
				t.Errorf("%s: %d lookups, %d over 1 s, %d failures, %d partial, %d wrong (%v); want %d, none slow or wrong",
					key, s.Lookups, s.Over1s, s.Failures, s.Partial, s.Wrong, s.WrongExamples, 40*len(names))
			}
		}
	})

	t.Run("LinkLocalZone", func(t *testing.T) {
		// An upstream that only a zone makes reachable: a DNS server on the node (CoreDNS in the
		// node's namespace, as NodeLocal DNSCache runs) at the node's link-local address on the
		// pod's link, written fe80::…%<pod interface> — bracketed with TCP, bare with UDP.
		if err := c.StartNodeDNS(ctx); err != nil {
			t.Fatal(err)
		}
		pods := map[string]*netsim.Pod{}
		labels := map[string]string{}
		for _, m := range []struct{ key, protocol string }{{"podns [fe80::%if]:53 tcp", "tcp"}, {"podns fe80::%if udp", "udp"}} {
			p, err := c.NewPod(ctx, netsim.PodConfig{})
			if err != nil {
				t.Fatal(err)
			}
			ll, err := p.NodeLinkLocal(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ups := ll.String()
			if m.protocol == "tcp" {
				ups = "[" + ups + "]:53"
			}
			if err := p.RunInit(ctx, env.Initc); err != nil {
				t.Fatal(err)
			}
			if _, err := p.StartStub(ctx, env.Stub, "PODNS_UPSTREAMS="+ups, "PODNS_UPSTREAM_PROTOCOL="+m.protocol); err != nil {
				t.Fatal(err)
			}
			pods[m.key] = p
			labels[m.key] = fmt.Sprintf(`upstream="[%s]:53",protocol=%q`, ll, m.protocol)
		}
		res := runClients(t, ctx, env, pods, lookup.Options{Threads: 4, Lookups: 10 * len(names), Names: names})
		if t.Failed() {
			return
		}
		for key, rs := range res {
			s := lookup.Summarize(rs, want)
			t.Logf("IPv6 %-28s lookups %d failures %d partial %d wrong %d p50 %v max %v", key, s.Lookups, s.Failures, s.Partial, s.Wrong, ms(s.P50), ms(s.Max))
			if s.Lookups != 10*len(names) || s.Failures+s.Partial+s.Wrong != 0 {
				t.Errorf("%s: %d lookups, %d failed, %d partial, %d wrong (%v); want %d, all correct",
					key, s.Lookups, s.Failures, s.Partial, s.Wrong, s.WrongExamples, 10*len(names))
			}
		}
		for key, p := range pods {
			// The label, as the stub prints it, has the zone: the series must exist and count.
			up, proto, _ := strings.Cut(labels[key], ",")
			if v := scrape(t, p).Sum("podns_upstream_queries_total", up, proto); v < 1 {
				t.Errorf("%s: podns_upstream_queries_total{%s} = %v; want the misses sent there", key, labels[key], v)
			}
		}
	})

	// Last: the backend stays down for the rest of the test.
	t.Run("BackendDown", func(t *testing.T) {
		// As TestBackendDown: backend 2 hangs (CoreDNS killed, its port 53 dropped) while the
		// VIP's DNAT still sends it half of all new flows. Checked first: backend 1 answers,
		// backend 2 does not. A fresh pod, so that its lookups start with misses.
		if err := c.StopBackend(ctx, 1); err != nil {
			t.Fatal(err)
		}
		for i, b := range c.Backends {
			_, err := netsim.Query(c.Node, "udp", net.JoinHostPort(b.Addr, "53"), "dual.alpha.svc.cluster.local", dns.TypeA, 300*time.Millisecond)
			if (err == nil) != (i == 0) {
				t.Fatalf("backend %d (%s): query error %v; want an answer from backend 1 only", i+1, b.Addr, err)
			}
		}
		dropped, err := c.BackendDrops(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		p := podnsPod(t, ctx, env, c, nil)
		res := runClients(t, ctx, env, map[string]*netsim.Pod{"podns": p},
			lookup.Options{Threads: 16, Lookups: 40 * len(names), Names: names, Timeout: 90 * time.Second})
		if t.Failed() {
			return
		}
		// Whether the stub's connections met the dead backend is up to the DNAT's coin (each
		// new flow goes to either backend at random): logged, so that a run's figures can be read.
		drops, err := c.BackendDrops(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("IPv6 one backend down: backend 2 dropped %d packets from the pod (startup probe, connection attempts)", drops-dropped)
		for key, rs := range res {
			s := lookup.Summarize(rs, want)
			t.Logf("IPv6 one backend down, %-12s lookups %4d failures %3d partial %2d over 1s %3d p50 %-8v p99 %-8v max %v",
				key, s.Lookups, s.Failures, s.Partial, s.Over1s, ms(s.P50), ms(s.P99), ms(s.Max))
			if s.Wrong != 0 {
				t.Errorf("%s: %d wrong answers: %v", key, s.Wrong, s.WrongExamples)
			}
			if s.Lookups != 40*len(names) || s.Failures == s.Lookups {
				t.Errorf("%s: %d lookups, %d failed; want %d, not all failed", key, s.Lookups, s.Failures, 40*len(names))
			}
		}
	})
}

// checkIPv6Only asserts what an IPv6-only pod's network namespace holds: IPv4 only on
// loopback (127.0.0.1/8), ::1 on loopback, and the pod's IPv6 address on its interface.
func checkIPv6Only(t *testing.T, ctx context.Context, p *netsim.Pod) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "ip", "-n", p.NS, "-o", "addr", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("ip -o addr show in %s: %v: %s", p.NS, err, out)
	}
	var v4, v6lo, podIP []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		dev, family, addr := f[1], f[2], f[3]
		switch {
		case family == "inet":
			v4 = append(v4, dev+" "+addr)
		case family == "inet6" && dev == "lo":
			v6lo = append(v6lo, addr)
		case family == "inet6" && strings.HasPrefix(addr, p.IP+"/"):
			podIP = append(podIP, dev+" "+addr)
		}
	}
	if strings.Join(v4, ";") != "lo 127.0.0.1/8" {
		t.Errorf("pod %s: IPv4 addresses %v, want only lo 127.0.0.1/8\n%s", p.NS, v4, out)
	}
	if strings.Join(v6lo, ";") != "::1/128" {
		t.Errorf("pod %s: IPv6 on lo %v, want ::1/128\n%s", p.NS, v6lo, out)
	}
	if len(podIP) != 1 || strings.HasPrefix(podIP[0], "lo ") {
		t.Errorf("pod %s: pod IP %s on %v, want it on the pod's interface\n%s", p.NS, p.IP, podIP, out)
	}
}

// answerAddrs lists the A and AAAA addresses in r's answer section, in order.
func answerAddrs(r *dns.Msg) []string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, v.A.String())
		case *dns.AAAA:
			out = append(out, v.AAAA.String())
		}
	}
	return out
}
