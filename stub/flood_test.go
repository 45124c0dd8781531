package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

const dnsHeaderLen = 12

// memoryLimitMiB is the stub's memory limit in the Kustomize component
// (injector-manifests/components/podns-common/injector-values.yaml).
const memoryLimitMiB = 64

// TestFloodOfUniqueNamesStaysUnderMemoryLimit sends 1,000,000 distinct names through the real
// binary, with its default configuration, to an upstream that answers every one, and checks the
// process's peak RSS. Every name is a miss and a cache insert: what must stay bounded is the
// cache (PODNS_CACHE_SIZE entries), the misses in flight and everything they allocate.
func TestFloodOfUniqueNamesStaysUnderMemoryLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the flood takes about a minute")
	}
	bin := filepath.Join(t.TempDir(), "stub")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	up := floodUpstream(t)
	dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "PODNS_LISTEN="+dnsAddr, "PODNS_UPSTREAMS="+up, "PODNS_HTTP_LISTEN="+httpAddr, "PODNS_LOG_LEVEL=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan int, 1)
	go func() { _ = cmd.Wait(); exited <- cmd.ProcessState.ExitCode() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	waitReady(t, "http://"+httpAddr+"/readyz", exited)

	const total = 1_000_000
	deadline := time.Now().Add(8 * time.Minute) // a bound on a starved machine, not a speed check
	sent, answered := floodUnique(t, dnsAddr, "n0000000.flood.example.", total, deadline)
	if time.Now().After(deadline) {
		t.Fatalf("flood did not finish in time: %d of %d sent", sent, total)
	}
	hwm := vmHWMKiB(t, cmd.Process.Pid)
	t.Logf("%d names sent, %d answered; peak RSS %.1f MiB (limit %d MiB)", total, answered, float64(hwm)/1024, memoryLimitMiB)
	if answered < total*99/100 {
		t.Errorf("only %d of %d answered", answered, total)
	}
	if hwm >= memoryLimitMiB*1024 {
		t.Errorf("peak RSS %d KiB reaches the component's %d MiB memory limit", hwm, memoryLimitMiB)
	}
}

// floodUnique asks addr for n distinct names over UDP, 64 queries at a time, until all were
// sent or deadline (zero: none) passed, and returns how many were sent and answered. name is the
// first name; its first label must be a letter and 7 digits, rewritten for each query: one
// packet per worker, so that the load generator is not what limits a test under -race.
func floodUnique(t *testing.T, addr, name string, n int, deadline time.Time) (sent, answered int) {
	t.Helper()
	const workers = 64
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("udp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			pkt, _ := m.Pack()
			digits := pkt[dnsHeaderLen+2 : dnsHeaderLen+9]
			buf := make([]byte, 512)
			for {
				i := next.Add(1)
				if i > int64(n) || (!deadline.IsZero() && time.Now().After(deadline)) {
					return
				}
				for d, k := len(digits)-1, i; d >= 0; d, k = d-1, k/10 {
					digits[d] = byte('0' + k%10)
				}
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				if _, err := c.Write(pkt); err != nil {
					continue
				}
				if _, err := c.Read(buf); err == nil {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(min(next.Load(), int64(n))), int(ok.Load())
}

// floodUpstream answers every A question with one address, over TCP (the stub's default).
func floodUpstream(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(10, 9, 8, 7)}}
		_ = w.WriteMsg(m)
	})
	return dnstest.Serve(t, h, dnstest.TCPOnly()) // no limit of queries per connection
}

func vmHWMKiB(t *testing.T, pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
