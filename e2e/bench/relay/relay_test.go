//go:build linux

package main

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The relay must forward faithfully, or the floor it gives the benchmark is a floor of nothing:
// each client gets the upstream's reply under its own ID, and a query whose upstream answer is
// slow does not hold up the next one (it goes on a connection of its own, as the stub's would).
// The same holds over UDP (relay-udp), each query from a socket of its own.
func TestRelayForwards(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) { testRelayForwards(t, proto) })
	}
}

func testRelayForwards(t *testing.T, proto string) {
	release := make(chan struct{})
	mux := dns.NewServeMux()
	mux.HandleFunc(".", func(w dns.ResponseWriter, q *dns.Msg) {
		if w.RemoteAddr().Network() != proto {
			t.Errorf("upstream query over %s, want %s", w.RemoteAddr().Network(), proto)
		}
		if strings.HasPrefix(q.Question[0].Name, "slow.") {
			<-release
		}
		m := new(dns.Msg)
		m.SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.7")
		m.Answer = append(m.Answer, rr)
		w.WriteMsg(m)
	})
	srv := &dns.Server{Handler: mux}
	var upAddr string
	if proto == "tcp" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener, upAddr = ln, ln.Addr().String()
	} else {
		upc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv.PacketConn, upAddr = upc, upc.LocalAddr().String()
	}
	go srv.ActivateAndServe()
	defer srv.Shutdown()

	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRelay(pc, upAddr, proto == "udp")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.serve() }()

	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(name string, id uint16) {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		q.Id = id
		b, _ := q.Pack()
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() *dns.Msg {
		buf := make([]byte, 512)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no reply: %v", err)
		}
		m := new(dns.Msg)
		if err := m.Unpack(buf[:n]); err != nil {
			t.Fatal(err)
		}
		return m
	}
	send("slow.example.", 0x1111)
	send("fast.example.", 0x2222) // the slow query's connection is busy: a second one answers
	m := recv()
	if m.Id != 0x2222 || m.Question[0].Name != "fast.example." || len(m.Answer) != 1 {
		t.Fatalf("first reply: %v, want fast.example. with ID 0x2222", m)
	}
	close(release)
	if m = recv(); m.Id != 0x1111 || m.Question[0].Name != "slow.example." || len(m.Answer) != 1 {
		t.Fatalf("second reply: %v, want slow.example. with ID 0x1111", m)
	}
	send("again.example.", 0x3333) // an idle connection is reused
	if m = recv(); m.Id != 0x3333 || len(m.Answer) != 1 {
		t.Fatalf("third reply: %v", m)
	}
	if n := len(r.idle); n < 1 || n > 2 {
		t.Errorf("%d idle connections, want 1 or 2 (two were opened)", n)
	}
	// Two clients with the same ID at once: each gets its own answer, not the other's.
	c2, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	q := new(dns.Msg)
	q.SetQuestion("other.example.", dns.TypeA)
	q.Id = 0x4444
	b, _ := q.Pack()
	if _, err := c2.Write(b); err != nil {
		t.Fatal(err)
	}
	send("mine.example.", 0x4444)
	if m = recv(); m.Id != 0x4444 || m.Question[0].Name != "mine.example." {
		t.Fatalf("first client got %v, want its own mine.example.", m)
	}
	buf := make([]byte, 512)
	c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c2.Read(buf)
	if err != nil {
		t.Fatalf("second client: no reply: %v", err)
	}
	if err := m.Unpack(buf[:n]); err != nil || m.Id != 0x4444 || m.Question[0].Name != "other.example." {
		t.Fatalf("second client got %v (%v), want its own other.example.", m, err)
	}
	pc.Close()
	select {
	case err := <-served:
		if err == nil {
			t.Error("serve returned nil after its socket closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after its socket closed")
	}
}
