package upstream

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// Benchmarks against a stock miekg/dns server on loopback: what one cache miss costs the stub
// over a kept-alive pipelined connection, over UDP, and, for comparison, over a fresh TCP
// connection per query (what a forwarder without a pool pays).
// parallelism × GOMAXPROCS concurrent misses: a burst of lookups (A and AAAA, search-list
// expansions) from a pod's application.
const parallelism = 8

func benchExchange(b *testing.B, proto string) {
	addr := startDNSBoth(b, false)
	f, err := New(Config{Servers: servers(b, addr), Protocol: proto})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		q := query(qname(1))
		for pb.Next() {
			if _, err := f.Exchange(context.Background(), q); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkExchangeTCP(b *testing.B) { benchExchange(b, "tcp") }
func BenchmarkExchangeUDP(b *testing.B) { benchExchange(b, "udp") }

func BenchmarkFreshTCPConnPerQuery(b *testing.B) {
	addr := startDNSBoth(b, false)
	c := &dns.Client{Net: "tcp"}
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		q := query(qname(1))
		for pb.Next() {
			if _, _, err := c.Exchange(q, addr); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// One miss at a time: the latency a lone lookup pays, kept-alive versus a fresh connection.
func BenchmarkLatencyTCPKeptAlive(b *testing.B) {
	f, err := New(Config{Servers: servers(b, startDNSBoth(b, false))})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	q := query(qname(1))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Exchange(context.Background(), q); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLatencyTCPFreshConn(b *testing.B) {
	addr := startDNSBoth(b, false)
	c := &dns.Client{Net: "tcp"}
	q := query(qname(1))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.Exchange(q, addr); err != nil {
			b.Fatal(err)
		}
	}
}

// A miss while the first server is down: the dead server is skipped, never waited for.
func BenchmarkExchangeFirstDown(b *testing.B) {
	addr := startDNSBoth(b, false)
	f, err := New(Config{Servers: servers(b, "127.0.0.1:1", addr)})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.probeWait = noProbes
	f.peers[0].markDown(errTimeout)
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		q := query(qname(1))
		for pb.Next() {
			if _, err := f.Exchange(context.Background(), q); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
