package upstream

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

// startCoreDNS runs the pinned CoreDNS (`make tools` puts it on PATH) on a loopback port with
// the given Corefile body (PORT is replaced) and returns "127.0.0.1:port". It serves only test
// zones: nothing is forwarded anywhere.
func startCoreDNS(t *testing.T, corefile string) string {
	t.Helper()
	bin, err := exec.LookPath("coredns")
	if err != nil {
		t.Skip("coredns not on PATH (make tools installs it into .tools/bin):", err)
	}
	addr := dnstest.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "Corefile")
	body := []byte(fmt.Sprintf(corefile, port, port))
	if err := os.WriteFile(conf, body, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-conf", conf)
	cmd.Dir = t.TempDir()
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	c := &dns.Client{Net: "tcp", Timeout: 200 * time.Millisecond}
	waitFor(t, "CoreDNS to answer", func() bool {
		_, _, err := c.Exchange(query(qname(1)), addr)
		return err == nil
	})
	return addr
}

// coreFile serves qN.example. from a template and delays every query under slow.example. by
// 100ms (erratic), standing in for forwards to an external resolver.
const coreFile = `example.:%[1]s {
	bind 127.0.0.1
	template IN A example {
		match "^q([0-9]+)\.example\.$"
		answer "{{ .Name }} 60 IN A 192.0.2.1"
	}
}
slow.example.:%[2]s {
	bind 127.0.0.1
	erratic {
		drop 0
		delay 1 100ms
	}
}
`

func percentile(d []time.Duration, p float64) time.Duration {
	slices.Sort(d)
	return d[int(float64(len(d)-1)*p)]
}

// Against a real CoreDNS: many concurrent misses over the pool, none lost.
func TestCoreDNSConcurrent(t *testing.T) {
	addr := startCoreDNS(t, coreFile)
	f := newForwarder(t, Config{Servers: servers(t, addr)})
	const workers, per = 50, 40
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				name := qname(w*per + i)
				start := time.Now()
				r, err := f.Exchange(context.Background(), query(name))
				d := time.Since(start)
				if err != nil || len(r.Answer) != 1 || r.Answer[0].Header().Name != name || r.Id != clientID {
					t.Errorf("%s: %v %v", name, r, err)
					return
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	m := f.peers[0].m
	t.Logf("%d queries, %d workers: p50 %v p99 %v; %v connections open, %v reconnects",
		len(lat), workers, percentile(lat, .5), percentile(lat, .99), metric(m.open), metric(m.reconnects))
}

// CoreDNS answers one TCP connection's queries one after the other. With a 100ms "forward"
// started every 100ms beside a steady stream of fast queries, the fast queries must not queue
// behind the slow ones: a connection with a query outstanding is passed over for an idle or a
// new one, and at the cap one silent for stallAfter is passed over for one that answers. "Off"
// is plain pipelining on one connection.
func TestCoreDNSSlowQueriesDoNotBlock(t *testing.T) {
	addr := startCoreDNS(t, coreFile)
	run := func(stall, busy time.Duration) (p50, p99 time.Duration, conns float64) {
		f := newForwarder(t, Config{Servers: servers(t, addr), Timeout: 5 * time.Second})
		f.stallAfter, f.busyAfter = stall, busy
		var mu sync.Mutex
		var fast []time.Duration
		var wg sync.WaitGroup
		send := func(name string) {
			defer wg.Done()
			start := time.Now()
			if _, err := f.Exchange(context.Background(), query(name)); err != nil {
				t.Error(err)
				return
			}
			if name[0] == 'q' {
				mu.Lock()
				fast = append(fast, time.Since(start))
				mu.Unlock()
			}
		}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := range 300 { // open loop: arrivals do not wait for replies, like a pod's threads
			wg.Add(1)
			if i%20 == 0 {
				go send(fmt.Sprintf("s%d.slow.example.", i))
			} else {
				go send(qname(i))
			}
			<-tick.C
		}
		wg.Wait()
		return percentile(fast, .5), percentile(fast, .99), metric(f.peers[0].m.open)
	}
	off50, off99, offConns := run(time.Hour, time.Hour)
	on50, on99, onConns := run(stallAfter, busyAfter)
	t.Logf("fast queries beside 100ms ones: stall avoidance off: p50 %v p99 %v (%v conns); on: p50 %v p99 %v (%v conns)",
		off50, off99, offConns, on50, on99, onConns)
	if on50 >= off50/2 {
		t.Errorf("stall avoidance did not help: p50 %v with, %v without", on50, off50)
	}
}

// The field case against a real CoreDNS: a dead nameserver first, CoreDNS second. CoreDNS has no
// zone for the root, so the default probe (". NS") gets REFUSED, which proves it alive. Without
// ProbeAll the first lookup pays the dead server's timeout; after it, no lookup does, and the
// dead server sees only the probe.
func TestCoreDNSDeadFirst(t *testing.T) {
	addr := startCoreDNS(t, coreFile)
	protos(t, func(t *testing.T, proto string) {
		const timeout = time.Second
		dead := startScripted(t, proto, silentReply)
		lookups := func(f *Forwarder, n int) (first, p99, max time.Duration) {
			var lat []time.Duration
			for i := range n {
				start := time.Now()
				r, err := f.Exchange(context.Background(), query(qname(i)))
				if err != nil || len(r.Answer) != 1 {
					t.Fatalf("q%d: %v %v", i, r, err)
				}
				lat = append(lat, time.Since(start))
			}
			first = lat[0]
			return first, percentile(lat, .99), slices.Max(lat)
		}

		cold := newForwarder(t, Config{Servers: servers(t, dead.addr, addr), Protocol: proto, Timeout: timeout})
		cold.probeWait = noProbes
		coldFirst, _, _ := lookups(cold, 1)
		if coldFirst < timeout {
			t.Errorf("without ProbeAll the first lookup took %v, expected the dead server's timeout", coldFirst)
		}
		cold.Close()
		before := dead.received.Load()

		f := newForwarder(t, Config{Servers: servers(t, dead.addr, addr), Protocol: proto, Timeout: timeout})
		f.probeWait = noProbes
		start := time.Now()
		res := f.ProbeAll(context.Background())
		probeTime := time.Since(start)
		if res[0].Up || !res[1].Up {
			t.Fatalf("ProbeAll: %+v", res)
		}
		first, p99, worst := lookups(f, 200)
		if worst > timeout/2 {
			t.Errorf("a lookup took %v after ProbeAll", worst)
		}
		waitFor(t, "the probe to reach the dead server", func() bool { return dead.received.Load() == before+1 })
		t.Logf("dead server first: without ProbeAll first lookup %v; ProbeAll %v (CoreDNS RTT %v); then first %v, p99 %v, max %v over 200",
			coldFirst.Round(time.Millisecond), probeTime.Round(time.Millisecond), res[1].RTT, first, p99, worst)
	})
}
