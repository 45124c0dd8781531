package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

// restrictedResolvConf is what the kubelet writes from the dnsConfig the webhook's restricted
// mode gives a pod in namespace ns (dnsPolicy None): the stub first and alone, the kubelet's
// own search list, ndots:5 and initc's default PODNS_OPTIONS.
func restrictedResolvConf(ns string) string {
	return fmt.Sprintf("nameserver 127.0.0.1\nsearch %s.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:3\n", ns)
}

// restrictedPod is a pod of restricted mode: no initc (so no upstream.conf in the state dir),
// /etc/resolv.conf as restrictedResolvConf, the stub started with PODNS_UPSTREAMS and
// PODNS_READY_CHECK_NAME as the webhook sets them, plus stubEnv, in JSON log format. It does not
// wait for the stub to be ready.
func restrictedPod(t *testing.T, ctx context.Context, env *scenario.Env, c *netsim.Cluster, stubEnv ...string) (*netsim.Pod, *netsim.Proc) {
	t.Helper()
	p, err := c.NewPod(ctx, netsim.PodConfig{})
	if err != nil {
		t.Fatal(err)
	}
	// In place, as the bind mount's source: the pod's /etc/resolv.conf is this file.
	if err := os.WriteFile(p.ResolvConf, []byte(restrictedResolvConf(netsim.PodNamespace)), 0o644); err != nil {
		t.Fatal(err)
	}
	stubEnv = append([]string{
		"PODNS_STATE_DIR=" + p.StateDir, "PODNS_HTTP_LISTEN=" + netsim.StubHTTP, "PODNS_RESOLV_CONF=/etc/resolv.conf",
		"PODNS_UPSTREAMS=" + c.VIP, "PODNS_READY_CHECK_NAME=" + netsim.KubernetesService + ".",
	}, stubEnv...)
	proc, err := p.Start("stub", filepath.Join(p.Dir(), "stub.stdout"), stubEnv, env.Stub)
	if err != nil {
		t.Fatal(err)
	}
	return p, proc
}

// stubLines decodes the stub's JSON log lines for which keep is true.
func stubLines(t *testing.T, proc *netsim.Proc, keep func(map[string]any) bool) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(proc.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, l := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && keep(m) {
			out = append(out, m)
		}
	}
	return out
}

func message(prefix string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		msg, _ := m["message"].(string)
		return strings.HasPrefix(msg, prefix)
	}
}

// waitLog polls the stub's log until a line keep accepts appears, for at most 15 s (the stub
// logs it once; its timing is the stub's, not a signal this process can wait on).
func waitLog(t *testing.T, proc *netsim.Proc, what string, keep func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if ls := stubLines(t, proc, keep); len(ls) > 0 {
			return ls[0]
		}
		if proc.Exited() {
			t.Fatalf("stub exited (%v) before logging %s:\n%s", proc.Err(), what, proc.Log())
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s in the stub's log within 15s:\n%s", what, proc.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readyz(t *testing.T, p *netsim.Pod) int {
	t.Helper()
	code, err := netsim.HTTPStatus(p.NS, netsim.StubHTTP, "/readyz", time.Second)
	if err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	return code
}

// TestRestrictedMode (issue 15 item 2): a pod of the webhook's restricted mode has no initc.
// The stub runs with no upstream.conf and no state file, takes its upstream from PODNS_UPSTREAMS
// (the cluster DNS Service IP) and the search list and ndots from the pod's own
// /etc/resolv.conf (what the kubelet writes from the injected dnsConfig), and reports ready once
// kubernetes.default.svc.cluster.local resolves. glibc and musl then resolve service short
// names, names of other namespaces and external names through it. A wrong cluster domain or a
// wrong cluster DNS IP keeps /readyz at 503 with one log line naming what to fix.
func TestRestrictedMode(t *testing.T) {
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("resolves", func(t *testing.T) {
		pod, proc := restrictedPod(t, ctx, env, c)
		passed := waitLog(t, proc, "'ready check passed'", message("ready check passed"))
		if passed["ready_check_name"] != netsim.KubernetesService+"." {
			t.Errorf("ready check line %v", passed)
		}
		if code := readyz(t, pod); code != http.StatusOK {
			t.Fatalf("/readyz %d after the ready check passed", code)
		}
		if fails := stubLines(t, proc, message("ready check failed")); len(fails) != 0 {
			t.Errorf("ready check failures against the right cluster DNS: %v", fails)
		}
		serving := waitLog(t, proc, "the start line", message("podns stub serving"))
		want := map[string]any{
			"upstreams":       []any{c.VIP + ":53"},
			"upstreams_from":  "PODNS_UPSTREAMS",
			"search_prefetch": []any{netsim.PodNamespace + ".svc.cluster.local", "svc.cluster.local", "cluster.local"},
			"ndots":           float64(5),
		}
		for k, v := range want {
			if fmt.Sprint(serving[k]) != fmt.Sprint(v) {
				t.Errorf("start line %s = %v, want %v", k, serving[k], v)
			}
		}
		if seen, _ := os.ReadFile(filepath.Join(pod.PauseRoot(), "etc/resolv.conf")); string(seen) != restrictedResolvConf(netsim.PodNamespace) {
			t.Errorf("the pod sees /etc/resolv.conf:\n%s", seen)
		}

		names, want2 := scenario.Names()
		if !slices.Contains(names, "web") || !slices.Contains(names, "www.example.test") {
			t.Fatalf("the lookups lack a service short name or an external name: %v", names)
		}
		res := bothLibcs(t, ctx, env, pod, lookup.Options{Threads: 4, Lookups: 10 * len(names), Names: names})
		for _, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
			s := lookup.Summarize(res[libc], want2)
			t.Logf("restricted %-5s lookups %d failures %d partial %d wrong %d p50 %s max %s", libc, s.Lookups, s.Failures, s.Partial, s.Wrong, ms(s.P50), ms(s.Max))
			if s.Lookups != 10*len(names) || s.Failures+s.Partial+s.Wrong != 0 {
				t.Errorf("%s: %d lookups, %d failed, %d partial, %d wrong (%v); want %d, all correct",
					libc, s.Lookups, s.Failures, s.Partial, s.Wrong, s.WrongExamples, 10*len(names))
			}
		}
		// Through the stub: it counted every client query (the only nameserver is 127.0.0.1).
		if n := scrape(t, pod).Sum("podns_requests_total"); n < float64(2*10*len(names)) {
			t.Errorf("the stub counted %v requests for %d lookups", n, 2*10*len(names))
		}
		entries, err := os.ReadDir(pod.StateDir)
		if err != nil || len(entries) != 0 {
			t.Errorf("state dir holds %v (%v); restricted mode has no initc and no state file", entries, err)
		}
	})

	for _, tt := range []struct {
		name    string
		env     []string
		results []string // the failure's result, one of
		hint    string
	}{
		{"wrong cluster domain", []string{"PODNS_READY_CHECK_NAME=kubernetes.default.svc.example.test."}, []string{"NXDOMAIN"}, "cluster domain"},
		// No Service and no route at this address in the sim.
		{"wrong cluster DNS IP", []string{"PODNS_UPSTREAMS=10.96.0.99", "PODNS_UPSTREAM_TIMEOUT=300ms"}, []string{"timeout", "no reply"}, "PODNS_UPSTREAMS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			pod, proc := restrictedPod(t, ctx, env, c, tt.env...)
			fail := waitLog(t, proc, "'ready check failed'", message("ready check failed"))
			t.Logf("%s: %s (hint: %s)", tt.name, fail["message"], fail["hint"])
			if !slices.Contains(tt.results, fmt.Sprint(fail["result"])) || fail["level"] != "warn" ||
				!strings.Contains(fmt.Sprint(fail["hint"]), tt.hint) {
				t.Errorf("failure line %v; want result in %v, a hint naming %s", fail, tt.results, tt.hint)
			}
			for _, w := range []string{"PODNS_READY_CHECK_NAME=", "(from PODNS_UPSTREAMS)"} {
				if !strings.Contains(fmt.Sprint(fail["message"]), w) {
					t.Errorf("failure line lacks %q: %s", w, fail["message"])
				}
			}
			if code := readyz(t, pod); code != http.StatusServiceUnavailable {
				t.Errorf("/readyz %d with a failing ready check, want 503", code)
			}
		})
	}
}
