package upstream

import (
	"context"
	"io"
	"net"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// Benchmarks against a stock miekg/dns server on loopback: what one cache miss costs the stub
// over a kept-alive pipelined connection, over UDP, and, for comparison, over a fresh TCP
// connection per query (what a forwarder without a pool pays).
// parallelism × GOMAXPROCS concurrent misses: a burst of lookups (A and AAAA, search-list
// expansions) from a pod's application.
const parallelism = 8

// benchExchange runs exchange, Exchange or ExchangeWire on one forwarder, from parallelism
// goroutines per GOMAXPROCS.
func benchExchange(b *testing.B, proto string, exchange func(*Forwarder, *dns.Msg) func() error) {
	addr := startDNSBoth(b, false)
	f, err := New(Config{Servers: servers(b, addr), Protocol: proto})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.RunParallel(func(pb *testing.PB) {
		do := exchange(f, query(qname(1)))
		for pb.Next() {
			if err := do(); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// viaMsg and viaWire are the two APIs for benchExchange.
func viaMsg(f *Forwarder, q *dns.Msg) func() error {
	return func() error { _, err := f.Exchange(context.Background(), q); return err }
}

func viaWire(f *Forwarder, q *dns.Msg) func() error {
	w := packed(q)
	return func() error { _, err := f.ExchangeWire(context.Background(), w); return err }
}

func BenchmarkExchangeTCP(b *testing.B) { benchExchange(b, "tcp", viaMsg) }
func BenchmarkExchangeUDP(b *testing.B) { benchExchange(b, "udp", viaMsg) }

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

// startFixedTCP serves, on loopback TCP, the reply the stub expects to query (the same query
// every time), its ID patched per query, without allocating: the allocations AllocsPerRun counts
// in this process are then the stub's own.
func startFixedTCP(t testing.TB, query []byte) string {
	t.Helper()
	reply := goodWire(query)
	framed := append([]byte{byte(len(reply) >> 8), byte(len(reply))}, reply...)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				out := slices.Clone(framed)
				in := make([]byte, 2+dns.MaxMsgSize)
				for {
					if _, err := io.ReadFull(c, in[:2]); err != nil {
						return
					}
					n := int(in[0])<<8 | int(in[1])
					if _, err := io.ReadFull(c, in[2:2+n]); err != nil {
						return
					}
					copy(out[2:4], in[2:4]) // the upstream ID
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// maxWireAllocs bounds the allocations of one ExchangeWire of a plain query over a kept-alive
// TCP connection: the reply's buffer (measured: 1), and room for what the runtime's timers may
// take. Exchange took 11 before replies were read on wire (packQuery's frame, dns.Msg.Unpack);
// the race detector adds up to 2 (raceAllocs).
const maxWireAllocs = 2

// A miss's upstream exchange allocates (almost) nothing but its reply (issue 12 item 5).
func TestExchangeWireAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("measures allocations")
	}
	q := packed(query(qname(1)))
	f, err := New(Config{Servers: servers(t, startFixedTCP(t, q))})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx := context.Background()
	if _, err := f.ExchangeWire(ctx, q); err != nil { // dials; the pool warms up
		t.Fatal(err)
	}
	wireAllocs := testing.AllocsPerRun(200, func() {
		if _, err := f.ExchangeWire(ctx, q); err != nil {
			t.Fatal(err)
		}
	})
	m := query(qname(1))
	msgAllocs := testing.AllocsPerRun(200, func() {
		if _, err := f.Exchange(ctx, m); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations per exchange: ExchangeWire %.1f, Exchange %.1f", wireAllocs, msgAllocs)
	if wireAllocs > maxWireAllocs+raceAllocs {
		t.Errorf("ExchangeWire: %.1f allocations, want at most %d", wireAllocs, maxWireAllocs+raceAllocs)
	}
}

func BenchmarkExchangeWireTCP(b *testing.B) { benchExchange(b, "tcp", viaWire) }
func BenchmarkExchangeWireUDP(b *testing.B) { benchExchange(b, "udp", viaWire) }

// The stub's side of a miss alone: a server that allocates nothing, so allocs/op are the stub's.
func BenchmarkExchangeWireFixedServer(b *testing.B) {
	q := packed(query(qname(1)))
	f, err := New(Config{Servers: servers(b, startFixedTCP(b, q))})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.ExchangeWire(context.Background(), q); err != nil {
			b.Fatal(err)
		}
	}
}
