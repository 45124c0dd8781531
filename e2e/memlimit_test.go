package e2e

// Issue 14 item 2 in the namespace suite: the real stub, in a pod, inside a cgroup v1 memory
// limit the test creates, under a flood of unique names. It must read the limit, fit its cache
// to it and stay under it: never OOM-killed, still answering.

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/e2e/internal/netsim"
)

const (
	memcgRoot  = "/sys/fs/cgroup/memory"
	memcgLimit = 32 << 20
	// floodCacheSize is the largest PODNS_CACHE_SIZE the stub accepts under memcgLimit: the
	// count alone would let the cache hold more than its byte budget (negative answers with
	// an SOA are larger than the fit check's smallest entry), so the byte budget must evict.
	floodCacheSize = 80043
)

// TestMemoryLimitFlood runs the stub in a memory cgroup v1 limited to 32 MiB and floods it
// with up to 150,000 unique names (NXDOMAIN from the cluster DNS, each cached with its SOA) for
// at most 30 s. Asserted: the stub logged the cgroup's limit; it was never OOM-killed (the same
// process is alive, memory.oom_control shows no kill and no OOM) and its peak usage
// (memory.max_usage_in_bytes) stayed below the limit; the byte budget evicted before the entry
// count was reached; it still answers.
func TestMemoryLimitFlood(t *testing.T) {
	if _, err := os.Stat(filepath.Join(memcgRoot, "memory.limit_in_bytes")); err != nil {
		if os.Geteuid() == 0 {
			t.Skipf("needs a cgroup v1 memory controller at %s: %v", memcgRoot, err)
		}
	}
	env, ctx := setup(t) // skips when not root
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	pod, err := c.NewPod(ctx, netsim.PodConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pod.RunInit(ctx, env.Initc); err != nil {
		t.Fatal(err)
	}

	cg := filepath.Join(memcgRoot, "podns-e2e-"+env.Run.ID+"-memlimit")
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	writeCg(t, cg, "memory.limit_in_bytes", strconv.Itoa(memcgLimit))
	// The stub joins the cgroup before it execs: the wrapper writes its own PID, then becomes
	// the stub, so the limit covers the stub's whole life and its PID is the wrapper's.
	wrapper := filepath.Join(pod.Dir(), "stub-in-memcg")
	script := fmt.Sprintf("#!/bin/sh\necho $$ > %s/cgroup.procs || exit 1\nexec %s \"$@\"\n", cg, env.Stub)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	stub, err := pod.StartStub(ctx, wrapper, "PODNS_CACHE_SIZE="+strconv.Itoa(floodCacheSize), "PODNS_LOG_LEVEL=info")
	// Registered after setup's teardown, so it runs first: the cgroup can only be removed once
	// the stub has left it, i.e. exited.
	t.Cleanup(func() {
		if stub != nil {
			_ = stub.Kill()
		}
		if err := os.Remove(cg); err != nil {
			t.Errorf("removing the cgroup: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if procs := readCg(t, cg, "cgroup.procs"); strings.TrimSpace(procs) != strconv.Itoa(stub.PID()) {
		t.Fatalf("cgroup.procs = %q, want the stub's PID %d", procs, stub.PID())
	}
	// The console log colours keys and values: compare without the escape sequences. The start
	// line may still be on its way through the log pipe when the stub reports ready.
	logged := func() (string, bool) {
		log := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(stub.Log(), "")
		return log, strings.Contains(log, " memory_limit="+strconv.Itoa(memcgLimit)+" ") &&
			strings.Contains(log, " memory_limit_from="+cg+"/memory.limit_in_bytes ") &&
			strings.Contains(log, " go_memory_limit_from=cgroup ")
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		log, ok := logged()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stub did not log the cgroup's limit within 5 s:\n%s", log)
		}
	}

	const total, workers, maxFlood = 150_000, 32, 30 * time.Second
	var next, answered atomic.Int64
	deadline := time.Now().Add(maxFlood)
	var wg sync.WaitGroup
	for w := range workers {
		var conn net.Conn
		if err := netsim.Do(pod.NS, func() error {
			var err error
			conn, err = net.Dial("udp", "127.0.0.1:53")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer conn.Close()
			m := new(dns.Msg)
			buf := make([]byte, 1500)
			for {
				i := next.Add(1)
				if i > total || time.Now().After(deadline) {
					return
				}
				m.SetQuestion(fmt.Sprintf("flood%07d-w%02d.example.test.", i, w), dns.TypeA)
				pkt, _ := m.Pack()
				_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := conn.Write(pkt); err != nil {
					continue
				}
				if _, err := conn.Read(buf); err == nil {
					answered.Add(1)
				}
			}
		})
	}
	wg.Wait()
	sent := min(next.Load()-workers, total)

	select {
	case <-stub.Done():
		t.Fatalf("the stub exited during the flood (%v):\n%s", stub.Err(), stub.Log())
	default:
	}
	peak, _ := strconv.ParseInt(strings.TrimSpace(readCg(t, cg, "memory.max_usage_in_bytes")), 10, 64)
	oom := readCg(t, cg, "memory.oom_control")
	met := scrape(t, pod)
	t.Logf("%d names sent, %d answered; cgroup peak %.1f MiB of %d MiB, failcnt %s; cache %v entries, %v evictions; oom_control: %s",
		sent, answered.Load(), float64(peak)/(1<<20), memcgLimit>>20, strings.TrimSpace(readCg(t, cg, "memory.failcnt")),
		met.Sum("podns_cache_entries"), met.Sum("podns_cache_evictions_total"), strings.Join(strings.Fields(oom), " "))
	if v := oomField(t, oom, "oom_kill"); v != 0 {
		t.Errorf("memory.oom_control: oom_kill %d", v)
	}
	if v := oomField(t, oom, "under_oom"); v != 0 {
		t.Errorf("memory.oom_control: under_oom %d", v)
	}
	if peak <= 0 || peak >= memcgLimit {
		t.Errorf("peak usage %d bytes, limit %d", peak, memcgLimit)
	}
	if answered.Load() < 50_000 {
		t.Errorf("only %d names answered: too few to fill the cache's budget", answered.Load())
	}
	if e, ev := met.Sum("podns_cache_entries"), met.Sum("podns_cache_evictions_total"); ev == 0 || e >= floodCacheSize {
		t.Errorf("cache: %v entries, %v evictions; want the byte budget to evict below %d entries", e, ev, floodCacheSize)
	}
	r, err := netsim.Query(pod.NS, "udp", "127.0.0.1:53", "www.example.test.", dns.TypeA, 2*time.Second)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
		t.Errorf("after the flood, www.example.test: %v, %v", r, err)
	}
}

func writeCg(t *testing.T, cg, file, value string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cg, file), []byte(value), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readCg(t *testing.T, cg, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cg, file))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// oomField reads one "key value" line of memory.oom_control; a key the kernel does not write
// (oom_kill before Linux 4.13) reads as 0.
func oomField(t *testing.T, oom, key string) int64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(oom))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), " "); ok && k == key {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("memory.oom_control %s: %q", key, v)
			}
			return n
		}
	}
	return 0
}
