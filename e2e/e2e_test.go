// Package e2e runs a pod's DNS path in network namespaces — kube-proxy DNAT of the DNS VIP to
// two real CoreDNS backends, a pod whose resolv.conf is bind-mounted as a container runtime
// does, real glibc and musl clients — and shows what podns changes under injected faults.
// The tests need root; see README.md.
package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

// setup starts a run for one test and registers its teardown, followed by the check that
// nothing of the run is left (namespaces, links, mounts, processes, files), pass or fail.
func setup(t *testing.T) (*scenario.Env, context.Context) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces, iptables and bind mounts")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	env, err := scenario.Setup(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	stop := env.CloseOnSignal()
	t.Cleanup(func() {
		cancel()
		stop()
		if t.Failed() {
			for _, p := range env.Run.Procs() {
				if strings.HasPrefix(p.Name, "stub") || strings.HasPrefix(p.Name, "coredns") || strings.HasPrefix(p.Name, "initc") {
					t.Logf("log of %s (pid %d):\n%s", p.Name, p.PID(), p.Log())
				}
			}
		}
		if err := env.Run.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
		if left := env.Run.Leftovers(); len(left) > 0 {
			t.Errorf("left behind after teardown:\n%s", strings.Join(left, "\n"))
		}
	})
	return env, ctx
}

func runClients(t *testing.T, ctx context.Context, env *scenario.Env, pods map[string]*netsim.Pod, o lookup.Options) map[string][]lookup.Result {
	t.Helper()
	var mu sync.Mutex
	out := map[string][]lookup.Result{}
	var wg sync.WaitGroup
	for key, p := range pods {
		for _, libc := range []lookup.Libc{lookup.Glibc, lookup.Musl} {
			wg.Go(func() {
				res, err := env.RunClient(ctx, p, libc, o)
				if err != nil {
					t.Errorf("%s %s: %v", key, libc, err)
					return
				}
				mu.Lock()
				out[key+" "+string(libc)] = res
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// TestPodView checks the simulation itself and initc's effect in it: the kubelet file is what
// the pod sees at /etc/resolv.conf, initc rewrites it in place through the bind mount without
// touching the host's file, no namespace has a default route, and every lookup of every name
// gets exactly the served records, with and without podns, with glibc and musl.
func TestPodView(t *testing.T) {
	env, ctx := setup(t)
	hostBefore, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		t.Fatal(err)
	}
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	base, err := env.Pod(ctx, c, scenario.Baseline)
	if err != nil {
		t.Fatal(err)
	}
	kubelet := netsim.KubeletResolvConf(netsim.PodNamespace, []string{netsim.VIP})
	if got, _ := os.ReadFile(filepath.Join(base.PauseRoot(), "etc/resolv.conf")); string(got) != kubelet {
		t.Fatalf("baseline pod sees /etc/resolv.conf:\n%s\nwant the kubelet's:\n%s", got, kubelet)
	}

	pod, err := env.Pod(ctx, c, scenario.Podns)
	if err != nil {
		t.Fatal(err)
	}
	seen, err := os.ReadFile(filepath.Join(pod.PauseRoot(), "etc/resolv.conf"))
	if err != nil {
		t.Fatal(err)
	}
	file, _ := os.ReadFile(pod.ResolvConf)
	if !bytes.Equal(seen, file) {
		t.Errorf("pod sees\n%s\nbut its bind-mounted file holds\n%s", seen, file)
	}
	if !strings.Contains(string(seen), "nameserver 127.0.0.1\n") || strings.Contains(string(seen), netsim.VIP) {
		t.Errorf("after initc the pod's resolv.conf should name only 127.0.0.1:\n%s", seen)
	}
	if !strings.Contains(string(seen), "search alpha.svc.cluster.local svc.cluster.local cluster.local") {
		t.Errorf("initc dropped the search list:\n%s", seen)
	}
	if saved, err := os.ReadFile(filepath.Join(pod.StateDir, "upstream.conf")); err != nil || string(saved) != kubelet {
		t.Errorf("upstream.conf = %q, %v; want the kubelet's file byte for byte", saved, err)
	}
	if hostAfter, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(hostBefore, hostAfter) {
		t.Errorf("the host's /etc/resolv.conf changed")
	}
	for _, ns := range []string{c.Node, c.Backends[0].NS, c.Backends[1].NS, base.NS, pod.NS} {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "route", "show", "default").CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("namespace %s: default route %q (%v); want none", ns, out, err)
		}
	}

	names, want := scenario.Names()
	results := runClients(t, ctx, env, map[string]*netsim.Pod{"baseline": base, "podns": pod},
		lookup.Options{Threads: 8, Lookups: 20 * len(names)})
	if t.Failed() {
		return
	}
	for key, res := range results {
		s := lookup.Summarize(res, want)
		t.Logf("%-14s lookups %d failures %d partial %d wrong %d p50 %v max %v", key, s.Lookups, s.Failures, s.Partial, s.Wrong, s.P50, s.Max)
		if s.Lookups != 20*len(names) || s.Failures != 0 || s.Partial != 0 || s.Wrong != 0 {
			t.Errorf("%s: %d lookups, %d failed, %d partial, %d wrong (%v); want %d, all correct",
				key, s.Lookups, s.Failures, s.Partial, s.Wrong, s.WrongExamples, 20*len(names))
		}
	}
}

// TestUDPLoss is the 5-second problem and its fix: with 2 % of UDP queries to the VIP dropped
// (the conntrack race, emulated), lookups without podns stall for a resolver timeout; with
// podns none of glibc's or musl's takes over a second and none fails.
func TestUDPLoss(t *testing.T) {
	env, ctx := setup(t)
	cmp, err := env.Compare(ctx, scenario.CompareConfig{Loss: 0.02, Lookups: 1000, Rate: 100, Threads: 64})
	if err != nil {
		t.Fatal(err)
	}
	dropped, err := cmp.Cluster.DroppedQueries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Queries lost in the podns pod itself: the stub's socket buffer overflowing.
	overflow, err := cmp.Podns.UDPRcvbufErrors()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("P=0.02 UDP loss toward %s, %d queries dropped; podns pod UDP RcvbufErrors %d\n%s",
		netsim.VIP, dropped, overflow, scenario.FormatTable(cmp.Rows))
	if dropped == 0 {
		t.Errorf("the loss rule dropped nothing")
	}
	for _, r := range cmp.Rows {
		s := r.Stats
		if s.Lookups < 1000 {
			t.Errorf("%s %s: %d lookups, want >= 1000", r.Mode, r.Libc, s.Lookups)
		}
		if s.Wrong != 0 {
			t.Errorf("%s %s: %d wrong answers: %v", r.Mode, r.Libc, s.Wrong, s.WrongExamples)
		}
		switch r.Mode {
		case scenario.Baseline:
			if s.Over1s == 0 {
				t.Errorf("baseline %s: no lookup over 1 s: the injected loss did not bite", r.Libc)
			}
		case scenario.Podns:
			if s.Over1s != 0 || s.Failures != 0 || s.Partial != 0 {
				t.Errorf("podns %s: %d lookups over 1 s, %d failures, %d partial answers (%v); want none",
					r.Libc, s.Over1s, s.Failures, s.Partial, s.WrongExamples)
			}
		}
	}
}

// TestDeadFirstNameserver puts a black-holed nameserver first in the kubelet's file. Without
// podns glibc waits out its timeout on it for every query. With podns (issue 6 item 4: the
// stub health-tracks its upstreams, probes them all in parallel at start and skips a dead one)
// no glibc or musl lookup may take over a second or fail — including each client's first
// lookup, which starts right after the stub is ready, when nothing has been learnt from traffic.
func TestDeadFirstNameserver(t *testing.T) {
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	base, err := env.Pod(ctx, c, scenario.Baseline, netsim.DeadNameserver, netsim.VIP)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := env.Pod(ctx, c, scenario.Podns, netsim.DeadNameserver, netsim.VIP)
	if err != nil {
		t.Fatal(err)
	}
	names, want := scenario.Names()
	var wg sync.WaitGroup
	var baseRes, podRes map[string][]lookup.Result
	wg.Go(func() {
		// Each baseline lookup costs 5-20 s, so one per name and thread is enough to show it.
		baseRes = runClients(t, ctx, env, map[string]*netsim.Pod{"baseline": base},
			lookup.Options{Threads: len(names), Lookups: len(names), Timeout: 90 * time.Second})
	})
	wg.Go(func() {
		podRes = runClients(t, ctx, env, map[string]*netsim.Pod{"podns": pod},
			lookup.Options{Threads: 16, Lookups: 40 * len(names), Timeout: 90 * time.Second})
	})
	wg.Wait()
	if t.Failed() {
		return
	}
	for key, res := range merge(baseRes, podRes) {
		s := lookup.Summarize(res, want)
		t.Logf("dead first nameserver, %-14s lookups %4d failures %3d partial %2d over 1s %3d p50 %-8v p99 %-8v max %v",
			key, s.Lookups, s.Failures, s.Partial, s.Over1s, scenario.FormatDuration(s.P50), scenario.FormatDuration(s.P99), scenario.FormatDuration(s.Max))
		if s.Wrong != 0 {
			t.Errorf("%s: %d wrong answers: %v", key, s.Wrong, s.WrongExamples)
		}
		if key == "baseline glibc" && s.Over1s == 0 {
			t.Errorf("baseline glibc: no lookup over 1 s: the dead nameserver did not bite")
		}
		if strings.HasPrefix(key, "podns") {
			first := res[0]
			for _, r := range res {
				if r.Start.Before(first.Start) {
					first = r
				}
			}
			t.Logf("dead first nameserver, %-14s first lookup (%s) %s in %s", key, first.Name, first.Status, scenario.FormatDuration(first.Latency()))
			if s.Over1s != 0 || s.Failures != 0 || s.Partial != 0 {
				t.Errorf("%s: %d lookups over 1 s, %d failures, %d partial answers (first lookup %s in %v); want none",
					key, s.Over1s, s.Failures, s.Partial, first.Status, first.Latency())
			}
		}
	}
}

// TestBackendDown takes one of the two CoreDNS backends down silently while its endpoint stays
// in the DNAT rules. Answers must stay correct; the figures record how often each mode stalls.
func TestBackendDown(t *testing.T) {
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
	if err := c.StopBackend(ctx, 1); err != nil {
		t.Fatal(err)
	}
	names, want := scenario.Names()
	var wg sync.WaitGroup
	var baseRes, podRes map[string][]lookup.Result
	wg.Go(func() {
		baseRes = runClients(t, ctx, env, map[string]*netsim.Pod{"baseline": base},
			lookup.Options{Threads: 2 * len(names), Lookups: 2 * len(names), Timeout: 90 * time.Second})
	})
	wg.Go(func() {
		podRes = runClients(t, ctx, env, map[string]*netsim.Pod{"podns": pod},
			lookup.Options{Threads: 16, Lookups: 40 * len(names), Timeout: 90 * time.Second})
	})
	wg.Wait()
	if t.Failed() {
		return
	}
	for key, res := range merge(baseRes, podRes) {
		s := lookup.Summarize(res, want)
		t.Logf("one backend down, %-14s lookups %4d failures %3d partial %2d over 1s %3d p50 %-8v p99 %-8v max %v",
			key, s.Lookups, s.Failures, s.Partial, s.Over1s, scenario.FormatDuration(s.P50), scenario.FormatDuration(s.P99), scenario.FormatDuration(s.Max))
		if s.Wrong != 0 {
			t.Errorf("%s: %d wrong answers: %v", key, s.Wrong, s.WrongExamples)
		}
		if key == "baseline glibc" && s.Over1s == 0 {
			t.Errorf("baseline glibc: no lookup over 1 s: the dead backend did not bite")
		}
		if strings.HasPrefix(key, "podns") && s.Failures == s.Lookups {
			t.Errorf("%s: every lookup failed", key)
		}
	}
}

// TestStubKilled SIGKILLs the stub while clients are resolving and restarts it half a second
// later, as the kubelet restarts a sidecar. Lookups may fail only while it is down: every failed lookup must
// overlap the window from the kill to the restarted stub's readiness (a partial answer counts
// as a failure), and lookups after it succeed again.
func TestStubKilled(t *testing.T) {
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := env.Pod(ctx, c, scenario.Podns)
	if err != nil {
		t.Fatal(err)
	}
	_, want := scenario.Names()
	const (
		runFor       = 5 * time.Second
		restartDelay = 500 * time.Millisecond
	)
	started := time.Now()
	var results map[string][]lookup.Result
	done := make(chan struct{})
	go func() {
		defer close(done)
		results = runClients(t, ctx, env, map[string]*netsim.Pod{"podns": pod},
			lookup.Options{Threads: 4, Duration: runFor, Timeout: 60 * time.Second})
	}()

	// Kill a third of the way in, once the clients have been resolving for a while.
	select {
	case <-time.After(runFor / 3):
	case <-done:
		t.Fatal("clients finished before the stub was killed")
	}
	killedAt := time.Now()
	if err := pod.Stub().Kill(); err != nil {
		t.Fatal(err)
	}
	// The kubelet needs a moment to notice the exit and recreate the container; without
	// this the stub is back in tens of milliseconds and the outage is too short to see.
	time.Sleep(restartDelay)
	if _, err := pod.StartStub(ctx, env.Stub); err != nil {
		t.Fatal(err)
	}
	readyAt := time.Now()
	<-done
	if t.Failed() {
		return
	}
	if time.Since(started) < runFor {
		t.Fatalf("clients ran %v, want at least %v", time.Since(started), runFor)
	}
	down := readyAt.Sub(killedAt)
	for key, res := range results {
		s := lookup.Summarize(res, want)
		var firstFail, lastFail time.Time
		after, during := 0, 0
		for _, r := range res {
			if r.Start.After(readyAt) && r.OK() {
				after++
			}
			if !r.End.Before(killedAt) && !r.Start.After(readyAt) {
				during++
			}
			if r.OK() && slices.Equal(r.Addrs, want[r.Name]) {
				continue
			}
			if firstFail.IsZero() || r.Start.Before(firstFail) {
				firstFail = r.Start
			}
			if r.End.After(lastFail) {
				lastFail = r.End
			}
			if r.End.Before(killedAt) || r.Start.After(readyAt) {
				t.Errorf("%s: lookup of %s failed (%s %v) at %v..%v, outside the down window %v..%v",
					key, r.Name, r.Status, r.Addrs, r.Start.Sub(killedAt), r.End.Sub(killedAt), time.Duration(0), down)
			}
		}
		window := time.Duration(0)
		if !firstFail.IsZero() {
			window = lastFail.Sub(firstFail)
		}
		t.Logf("stub SIGKILL+restart, %s: down (kill to ready) %d ms; lookups %d, %d overlapping the outage, failed %d within a %d ms window, partial %d, over 1s %d, max %v; %d ok after restart",
			key, down.Milliseconds(), s.Lookups, during, s.Failures, window.Milliseconds(), s.Partial, s.Over1s, scenario.FormatDuration(s.Max), after)
		if during == 0 {
			t.Errorf("%s: no lookup overlapped the outage; the test exercised nothing", key)
		}
		if s.Wrong != 0 {
			t.Errorf("%s: %d wrong answers: %v", key, s.Wrong, s.WrongExamples)
		}
		if after == 0 {
			t.Errorf("%s: no successful lookup started after the restarted stub was ready", key)
		}
	}
}

func merge(ms ...map[string][]lookup.Result) map[string][]lookup.Result {
	out := map[string][]lookup.Result{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
