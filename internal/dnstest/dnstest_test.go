package dnstest

import (
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestFreeAddrIsBindableForUDPAndTCP(t *testing.T) {
	addr := FreeAddr(t)
	if ip := net.ParseIP(mustHost(t, addr)); !ip.IsLoopback() {
		t.Fatalf("%s is not loopback", addr)
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("UDP %s: %v", addr, err)
	}
	defer pc.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("TCP %s: %v", addr, err)
	}
	l.Close()
}

func mustHost(t *testing.T, addr string) string {
	t.Helper()
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func answerA(q *dns.Msg) *dns.Msg {
	r := new(dns.Msg).SetReply(q)
	rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.1")
	r.Answer = []dns.RR{rr}
	return r
}

func TestServeAnswersUDPAndTCPOnOnePort(t *testing.T) {
	var n atomic.Int32
	addr := Serve(t, Reply(func(q *dns.Msg) *dns.Msg { n.Add(1); return answerA(q) }))
	for _, proto := range []string{"udp", "tcp"} {
		r := Exchange(t, proto, addr, Msg("a.example.", dns.TypeA))
		if len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Errorf("%s: %v", proto, r)
		}
	}
	if n.Load() != 2 {
		t.Errorf("handler ran %d times, want 2", n.Load())
	}
}

func TestServeOneProtocol(t *testing.T) {
	for _, tt := range []struct {
		opt      ServeOption
		up, down string
	}{{UDPOnly(), "udp", "tcp"}, {TCPOnly(), "tcp", "udp"}} {
		t.Run(tt.up, func(t *testing.T) {
			addr := Serve(t, Reply(answerA), tt.opt)
			Exchange(t, tt.up, addr, Msg("a.example.", dns.TypeA))
			c := &dns.Client{Net: tt.down, Timeout: 200 * time.Millisecond}
			if r, _, err := c.Exchange(Msg("a.example.", dns.TypeA), addr); err == nil {
				t.Errorf("%s answered on a %s-only server: %v", tt.down, tt.up, r)
			}
		})
	}
}

// A silent server over TCP keeps the connection open and reads the next query on it.
func TestSilentTCPKeepsReading(t *testing.T) {
	seen := make(chan string, 2)
	addr := Serve(t, func(_ dns.ResponseWriter, q *dns.Msg) { seen <- q.Question[0].Name }, TCPOnly())
	c, err := dns.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"one.example.", "two.example."} {
		if err := c.WriteMsg(Msg(name, dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-seen:
			if got != name {
				t.Fatalf("server read %s, want %s", got, name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("server did not read %s", name)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if r, err := c.ReadMsg(); err == nil {
		t.Errorf("a silent server answered: %v", r)
	}
}

func TestClock(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := NewClock(start)
	// Stable: without Advance the fake clock does not move, however often it is read.
	if first, second := c.Now(), c.Now(); !first.Equal(start) || first != second {
		t.Fatalf("Now = %v then %v, want %v twice", first, second, start)
	}
	c.Advance(90 * time.Second)
	if got := c.Now().Sub(start); got != 90*time.Second {
		t.Errorf("after Advance(90s): %v later", got)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = c.Now() }); allocs != 0 {
		t.Errorf("Now allocates %v times", allocs)
	}
	if real := NewClock(time.Now()).Now(); real.String() != real.Round(0).String() {
		t.Errorf("monotonic reading kept: %v", real)
	}
}

func TestQueryRoundTrips(t *testing.T) {
	pkt := Query("MiXeD.example.", dns.TypeAAAA, ID(0xBEEF), EDNS(1232, true), CD(true))
	m := new(dns.Msg)
	if err := m.Unpack(pkt); err != nil {
		t.Fatal(err)
	}
	q := m.Question[0]
	if m.Id != 0xBEEF || !m.RecursionDesired || !m.CheckingDisabled || q.Name != "MiXeD.example." || q.Qtype != dns.TypeAAAA || q.Qclass != dns.ClassINET {
		t.Errorf("unpacked %v", m)
	}
	if opt := m.IsEdns0(); opt == nil || opt.UDPSize() != 1232 || !opt.Do() {
		t.Errorf("OPT %v, want 1232 with DO", opt)
	}
	plain := new(dns.Msg)
	if err := plain.Unpack(Query("example.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if plain.IsEdns0() != nil || plain.CheckingDisabled {
		t.Errorf("no options gave %v", plain)
	}
}

func TestQueryPanicsOnBadName(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic for a 64-octet label")
		}
	}()
	Query(strings.Repeat("a", 64)+".example.", dns.TypeA)
}

func TestCPUTimeMoves(t *testing.T) {
	start := CPUTime(t)
	if start == 0 {
		t.Skip("no getrusage on this platform")
	}
	for deadline := time.Now().Add(5 * time.Second); CPUTime(t) == start; {
		if time.Now().After(deadline) {
			t.Fatal("5 s of busy loop did not move the CPU time")
		}
	}
}
