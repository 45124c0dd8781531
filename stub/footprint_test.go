package main

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

// footprintBin runs TestBytesPerCachedEntry against a binary built elsewhere (an older commit,
// for a before/after comparison) instead of building this package.
var footprintBin = flag.String("footprint.bin", "", "stub binary for TestBytesPerCachedEntry (default: build this package)")

// footprintEnv adds variables to the stub's environment in TestBytesPerCachedEntry (e.g. GOGC=50
// to compare GC settings); comma-separated NAME=value.
var footprintEnv = flag.String("footprint.env", "", "extra NAME=value,… for the stub in TestBytesPerCachedEntry")

// Figures of the peer benchmark's miss run (e2e/bench), which TestBytesPerCachedEntry repeats.
const (
	benchMissNames = 100_000
	benchHitNames  = 1000
	// benchSized is the cache size the benchmark gives every target for its runs: room for
	// every name of both runs, so that the miss run measures memory, not eviction.
	benchSized = 2 * (benchMissNames + benchHitNames)
	// bytesPerEntryTarget is issue 17's target for the benchmark's bytes per cached entry.
	bytesPerEntryTarget = 330
)

// TestBytesPerCachedEntry measures, on the real binary, what the peer benchmark reports as
// "bytes per cached entry" and holds it to issue 17's target. Method (e2e/bench/README.md, miss
// run): start the stub with the default cache size and read its RSS once it answers; start it
// again sized for the benchmark (202,000 entries) and read its RSS; send 100,000 unique names,
// each a miss the upstream answers with one A record (TTL 3600, as the benchmark's template
// zone), and read its RSS again. Bytes per entry = (RSS after − RSS sized) ÷ names answered +
// (RSS sized − RSS default) ÷ (202,000 − 10,000): what storing an entry added plus what its slot
// of capacity cost at start. It also logs the stub's CPU time per 100,000 misses and its
// proportional and private memory (/proc/PID/smaps_rollup) before and after.
func TestBytesPerCachedEntry(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: two starts of the stub and 100,000 misses")
	}
	bin := *footprintBin
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "stub")
		if out, err := exec.Command("go", "build", "-trimpath", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("build: %v\n%s", err, out)
		}
	}
	up := footprintUpstream(t)

	idle := startFootprintStub(t, bin, up, 0)
	rssIdle := smapsRollup(t, idle.pid)["Rss"]
	idle.stop()

	s := startFootprintStub(t, bin, up, benchSized)
	before := smapsRollup(t, s.pid)
	cpu0 := procCPU(t, s.pid)
	answered := sendUniqueNames(t, s.addr, benchMissNames)
	cpu1 := procCPU(t, s.pid)
	after := smapsRollup(t, s.pid)

	if answered < benchMissNames*99/100 {
		t.Fatalf("only %d of %d names answered", answered, benchMissNames)
	}
	fill := float64(after["Rss"]-before["Rss"]) / float64(answered)
	prealloc := max(0, float64(before["Rss"]-rssIdle)) / float64(benchSized-10000)
	perEntry := fill + prealloc
	t.Logf("RSS idle %d KiB (default size), %d KiB (sized), %d KiB after %d names answered",
		rssIdle>>10, before["Rss"]>>10, after["Rss"]>>10, answered)
	t.Logf("bytes per cached entry %.0f (stored when filled %.0f + per slot of capacity %.1f); target ≤ %d",
		perEntry, fill, prealloc, bytesPerEntryTarget)
	t.Logf("PSS %d → %d KiB, private (USS) %d → %d KiB: %.0f B per entry private",
		before["Pss"]>>10, after["Pss"]>>10, before.private()>>10, after.private()>>10,
		float64(after.private()-before.private())/float64(answered))
	t.Logf("stub CPU %.2f s per 100k misses", (cpu1-cpu0).Seconds()*100000/float64(answered))
	if perEntry > bytesPerEntryTarget {
		t.Errorf("%.0f bytes per cached entry, target ≤ %d", perEntry, bytesPerEntryTarget)
	}
}

// footprintUpstream answers every A question as the benchmark's template zone does: one A
// record, TTL 3600.
func footprintUpstream(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 3600}, A: net.IPv4(10, 255, 0, 1)}}
		_ = w.WriteMsg(m)
	})
	return dnstest.Serve(t, h, dnstest.TCPOnly())
}

type footprintStub struct {
	pid  int
	addr string
	stop func()
}

// startFootprintStub starts bin with a clean environment, as the benchmark does (no GOGC,
// GOMEMLIMIT or PODNS_* from the caller), cacheSize entries (0: the default), and returns once
// its /readyz says ready. stop kills it and waits for it.
func startFootprintStub(t *testing.T, bin, up string, cacheSize int) footprintStub {
	t.Helper()
	dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "PODNS_LISTEN=" + dnsAddr, "PODNS_UPSTREAMS=" + up,
		"PODNS_HTTP_LISTEN=" + httpAddr, "PODNS_LOG_LEVEL=warn", "PODNS_STATE_DIR=" + t.TempDir()}
	if cacheSize > 0 {
		cmd.Env = append(cmd.Env, "PODNS_CACHE_SIZE="+strconv.Itoa(cacheSize))
	}
	if *footprintEnv != "" {
		cmd.Env = append(cmd.Env, strings.Split(*footprintEnv, ",")...)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan int, 1)
	go func() { _ = cmd.Wait(); exited <- cmd.ProcessState.ExitCode() }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-exited
		})
	}
	t.Cleanup(stop)
	waitReady(t, "http://"+httpAddr+"/readyz", exited)
	return footprintStub{pid: cmd.Process.Pid, addr: dnsAddr, stop: stop}
}

// sendUniqueNames asks addr for n distinct names (u0000000.miss.test. …, the benchmark's
// shape), 64 at a time, and returns how many were answered.
func sendUniqueNames(t *testing.T, addr string, n int) int {
	t.Helper()
	_, answered := floodUnique(t, addr, "u0000000.miss.test.", n, time.Time{})
	return answered
}

// rollup is /proc/PID/smaps_rollup: field name → bytes.
type rollup map[string]int64

// private is the process's unique set size: pages no other process maps.
func (r rollup) private() int64 { return r["Private_Clean"] + r["Private_Dirty"] }

func smapsRollup(t *testing.T, pid int) rollup {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		t.Fatal(err)
	}
	r := rollup{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(v, " kB") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, " kB")), 10, 64)
		if err != nil {
			t.Fatalf("smaps_rollup: %q: %v", line, err)
		}
		r[k] = n << 10
	}
	if r["Rss"] == 0 {
		t.Fatalf("smaps_rollup without Rss:\n%s", b)
	}
	return r
}

// procCPU is the process's user+system CPU time, all threads (/proc/PID/stat fields 14 and 15,
// in clock ticks of 1/100 s on Linux).
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; the fields after it follow its ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
