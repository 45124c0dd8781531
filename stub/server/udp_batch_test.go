package server

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestUDPOverIPv6(t *testing.T) {
	if l, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	} else {
		l.Close()
	}
	fwd := &fakeForwarder{answer: records(1)}
	s, err := New(Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("[::1]:0")}, Forwarder: fwd})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())
	addr := s.Addrs()[0].String()
	for range 2 { // miss, then the batched hit path
		if r := query(t, "udp", addr, "v6.example.", dns.TypeA, 0); len(r.Answer) != 1 {
			t.Fatalf("reply %v", r)
		}
	}
}

func TestOversizedDatagramDropped(t *testing.T) {
	_, addr := startServer(t, &fakeForwarder{answer: records(1)}, nil)
	m := new(dns.Msg)
	m.SetQuestion("big.example.", dns.TypeA)
	pkt, _ := m.Pack()
	pkt = append(pkt, make([]byte, 5000)...) // longer than any query has reason to be
	if resp, err := rawExchange("udp", addr, pkt); err == nil {
		t.Fatalf("got a reply %x to a truncated read", resp)
	}
	if r := query(t, "udp", addr, "ok.example.", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Fatalf("not serving after the oversized datagram: %v", r)
	}
}

// A burst from many clients is read and answered in batches: every client must get its own
// reply (right ID, right name, right address).
func TestBurstFromManyClientsEachGetsItsOwnReply(t *testing.T) {
	_, addr := startServer(t, &fakeForwarder{answer: records(1)}, nil)
	const clients, names = 200, 20
	for i := range names {
		query(t, "udp", addr, fmt.Sprintf("n%d.example.", i), dns.TypeA, 0) // warm: the burst is hits
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := dns.Dial("udp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			m := new(dns.Msg)
			name := fmt.Sprintf("n%d.example.", c%names)
			m.SetQuestion(name, dns.TypeA)
			m.Id = uint16(c)
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if err := conn.WriteMsg(m); err != nil {
				t.Error(err)
				return
			}
			r, err := conn.ReadMsg()
			if err != nil || r.Id != uint16(c) || r.Question[0].Name != name || len(r.Answer) != 1 {
				t.Errorf("client %d: %v %v", c, r, err)
			}
		}()
	}
	wg.Wait()
}

// The hit path allocates nothing end to end, sockets included: not just answer(), but the reader
// loop and its system calls. Measured across the whole process while a raw client (which
// allocates nothing itself) sends cache hits.
func TestUDPHitsAllocateNothingEndToEnd(t *testing.T) {
	_, addr := startServer(t, &fakeForwarder{answer: records(1)}, nil)
	query(t, "udp", addr, "hot.example.", dns.TypeA, 0) // fill the cache
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion("hot.example.", dns.TypeA)
	pkt, _ := m.Pack()
	buf := make([]byte, 512)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip := func() {
		if _, err := conn.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 { // warm: buffers, counters, the poller
		roundTrip()
	}
	const n = 2000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		roundTrip()
	}
	runtime.ReadMemStats(&after)
	if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.05 {
		t.Errorf("%.2f heap allocations per cache hit over UDP, want 0", per)
	}
}
