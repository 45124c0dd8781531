//go:build linux

package main

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
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
	only := dnstest.TCPOnly()
	if proto == "udp" {
		only = dnstest.UDPOnly()
	}
	upAddr := dnstest.Serve(t, mux.ServeDNS, only)
	defer close(release) // a slow query still waiting must not hold up the server's shutdown

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
		if _, err := c.Write(dnstest.Query(name, dns.TypeA, dnstest.ID(id))); err != nil {
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
	release <- struct{}{}
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

// udpUpstream is a UDP upstream on loopback that answers each query as answer says: the
// datagrams to send back, in order (none: the query is dropped).
func udpUpstream(t *testing.T, answer func(q *dns.Msg) [][]byte) string {
	return dnstest.Serve(t, func(w dns.ResponseWriter, q *dns.Msg) {
		for _, d := range answer(q) {
			w.Write(d)
		}
	}, dnstest.UDPOnly())
}

// reply is the upstream's packed answer to q.
func reply(t *testing.T, q *dns.Msg) []byte {
	m := new(dns.Msg)
	m.SetReply(q)
	rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 192.0.2.7")
	m.Answer = append(m.Answer, rr)
	b, err := m.Pack()
	if err != nil {
		t.Error(err)
	}
	return b
}

// startRelay serves a relay over UDP to upstream on loopback and returns it and a client
// socket; wait, when not zero, replaces udpWait, and readerDone is the relay's test hook.
func startRelay(t *testing.T, upstream string, wait time.Duration, readerDone func()) (*relay, *net.UDPConn) {
	t.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	r, err := newRelay(pc, upstream, true)
	if err != nil {
		t.Fatal(err)
	}
	if wait != 0 {
		r.udpWait = wait
	}
	r.readerDone = readerDone
	return r, clientOf(t, r, pc)
}

// clientOf starts r serving pc (closed at the test's end) and returns a client socket for it.
func clientOf(t *testing.T, r *relay, pc *net.UDPConn) *net.UDPConn {
	t.Helper()
	done := make(chan struct{})
	go func() { r.serve(); close(done) }()
	t.Cleanup(func() { pc.Close(); <-done })
	c, err := net.DialUDP("udp", nil, pc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ask sends name with id from c and returns the reply, or nil when none came within wait.
func ask(t *testing.T, c *net.UDPConn, name string, id uint16, wait time.Duration) *dns.Msg {
	t.Helper()
	if _, err := c.Write(dnstest.Query(name, dns.TypeA, dnstest.ID(id))); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(wait))
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(buf[:n]); err != nil {
		t.Fatal(err)
	}
	return m
}

// Over UDP a datagram stands alone: a stray one too short for a header is skipped, and the real
// reply after it still reaches the client (over TCP such a frame means the stream lost its
// framing).
func TestRelayUDPSkipsShortDatagram(t *testing.T) {
	up := udpUpstream(t, func(q *dns.Msg) [][]byte { return [][]byte{{1, 2, 3}, reply(t, q)} })
	_, c := startRelay(t, up, 0, nil)
	if m := ask(t, c, "short.example.", 0x5151, 5*time.Second); m == nil || m.Id != 0x5151 || len(m.Answer) != 1 {
		t.Fatalf("reply %v, want the answer after the stray datagram", m)
	}
}

// A duplicated reply (UDP duplicates datagrams; TCP does not) answers nothing: the socket goes
// back to the idle pool once, so two later queries never share it (the second would take the
// first's reply slot, and the first would lose its answer).
func TestRelayUDPDuplicateReplyIdlesOnce(t *testing.T) {
	up := udpUpstream(t, func(q *dns.Msg) [][]byte { b := reply(t, q); return [][]byte{b, b} })
	r, c := startRelay(t, up, 0, nil)
	if m := ask(t, c, "twice.example.", 0x6161, 5*time.Second); m == nil || m.Id != 0x6161 {
		t.Fatalf("reply %v, want ID 0x6161", m)
	}
	// The duplicate comes right behind the reply: a second query on that socket (the only
	// one) is answered only if the reader skipped it and went back to waiting.
	if m := ask(t, c, "next.example.", 0x6262, 5*time.Second); m == nil || m.Id != 0x6262 || m.Question[0].Name != "next.example." {
		t.Fatalf("second reply %v, want next.example. with ID 0x6262", m)
	}
	// 0 while the reader is between the client's reply and the pool, 1 after: never 2.
	if n := len(r.idle); n > 1 {
		t.Errorf("%d idle sockets after two queries on one, want at most 1: a duplicate reply made it idle twice", n)
	}
}

// A query the upstream drops does not keep its socket and reader for the rest of the run: after
// udpWait the socket is closed, and the next query is answered on another one.
func TestRelayUDPDropsSilentSocket(t *testing.T) {
	up := udpUpstream(t, func(q *dns.Msg) [][]byte {
		if strings.HasPrefix(q.Question[0].Name, "drop.") {
			return nil
		}
		return [][]byte{reply(t, q)}
	})
	ended := make(chan struct{}, 1)
	_, c := startRelay(t, up, 50*time.Millisecond, func() { ended <- struct{}{} })
	if m := ask(t, c, "drop.example.", 0x7171, 20*time.Millisecond); m != nil {
		t.Fatalf("reply %v to a dropped query", m)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the silent socket's reader did not end")
	}
	if m := ask(t, c, "after.example.", 0x7272, 5*time.Second); m == nil || m.Id != 0x7272 {
		t.Fatalf("reply %v, want the next query answered", m)
	}
}
