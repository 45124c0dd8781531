package server

import (
	"net"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

// BenchmarkUDPHitRoundTrip is one client asking one cached name over loopback UDP, one query at a
// time: every batch the reader gets holds one datagram, the case where timing a batch costs a hit
// the most (BenchmarkHitPathTimed/batch=1), here with the system calls around it.
func BenchmarkUDPHitRoundTrip(b *testing.B) {
	_, addr := startServer(b, &fakeForwarder{answer: records(1)}, nil)
	conn, err := net.Dial("udp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	pkt := dnstest.Query("hot.example.", dns.TypeA)
	buf := make([]byte, 512)
	roundTrip := func() {
		if _, err := conn.Write(pkt); err != nil {
			b.Fatal(err)
		}
		if _, err := conn.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = conn.SetDeadline(time.Now().Add(time.Hour))
	roundTrip() // fill the cache
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		roundTrip()
	}
}
