package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/upstream"
)

// BenchmarkMissPath is the whole cache-miss path in one process: 10 clients, each on its own UDP
// socket, ask never-seen names one after the other through the server and the real TCP
// forwarder to a loopback upstream that answers at once. ns/op is wall time per miss with 10 in
// flight; cpu-ns/op and allocs/op count the whole process (the upstream's and the clients' share
// too, the same in every run): compare them between versions of the stub. The peer benchmark (e2e/bench, -phases missconc) measures the same
// against other servers.
func BenchmarkMissPath(b *testing.B) {
	up := dnstest.Serve(b, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		m := new(dns.Msg).SetReply(q)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(192, 0, 2, 1)}}
		return m
	}), dnstest.TCPOnly())
	fwd, err := upstream.New(upstream.Config{Servers: []netip.AddrPort{netip.MustParseAddrPort(up)}, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer fwd.Close()
	s, err := New(Config{
		Listen:      []netip.AddrPort{netip.MustParseAddrPort(dnstest.FreeAddr(b))},
		Cache:       cache.New(cache.Config{Size: 1 << 20}),
		Forwarder:   fwd,
		Coalesce:    true,
		OrderSameID: true,
		Logger:      zerolog.Nop(),
	})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	}()
	addr := net.UDPAddrFromAddrPort(s.Addrs()[0])
	const clients = 10
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	cpu0 := dnstest.CPUTime(b)
	b.ResetTimer()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialUDP("udp", nil, addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer conn.Close()
			buf := make([]byte, 512)
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				m := new(dns.Msg)
				m.SetQuestion(fmt.Sprintf("m%d-%d.bench.test.", c, i), dns.TypeA)
				m.Id = uint16(i)
				q, _ := m.Pack()
				if _, err := conn.Write(q); err != nil {
					b.Error(err)
					return
				}
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				for {
					n, err := conn.Read(buf)
					if err != nil {
						b.Error(err)
						return
					}
					if n >= 12 && binary.BigEndian.Uint16(buf) == m.Id {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(dnstest.CPUTime(b)-cpu0)/float64(b.N), "cpu-ns/op")
}
