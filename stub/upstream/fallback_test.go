package upstream

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
)

// Issue 12 item 6: a NetworkPolicy that allows UDP/53 only. The server below answers over UDP;
// its TCP port is either closed (a REJECT: the connection is refused at once) or a listener
// whose accept queue is full (a DROP: the SYN is lost and the connection times out).

const fallbackLine = "answers over UDP but not over TCP"

// logBuf collects a forwarder's log lines.
type logBuf struct{ dnstest.LogBuffer }

func (l *logBuf) logger() zerolog.Logger { return zerolog.New(&l.LogBuffer) }

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

// udpAt serves respond over UDP on addr and counts the queries.
func udpAt(t *testing.T, addr string, respond func(q *dns.Msg) *dns.Msg) *atomic.Int32 {
	t.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return udpOn(t, pc, respond)
}

// udpOn serves respond over UDP on pc and counts the queries.
func udpOn(t *testing.T, pc net.PacketConn, respond func(q *dns.Msg) *dns.Msg) *atomic.Int32 {
	t.Helper()
	var n atomic.Int32
	startDNS(t, &dns.Server{PacketConn: pc, Handler: dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		n.Add(1)
		return respond(q)
	})})
	return &n
}

// tcpAt serves respond over TCP on addr and counts the queries.
func tcpAt(t *testing.T, addr string, respond func(q *dns.Msg) *dns.Msg) *atomic.Int32 {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	startDNS(t, &dns.Server{Listener: l, Handler: dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		n.Add(1)
		return respond(q)
	})})
	return &n
}

// droppingTCP returns a loopback address whose TCP listener never accepts and whose accept
// queue is full, so that Linux drops every further SYN: a connection to it times out, as
// one through a policy that drops TCP does. Nothing is sent off the host.
//
// The UDP port of the same number is bound too (pc), so that the caller can serve UDP there: the
// kernel picks the TCP port, and another process may hold the UDP one (the trial of 2026-12-01
// saw "address already in use"); then another TCP port is tried, up to 20 times.
func droppingTCP(t *testing.T) (addr string, pc net.PacketConn) {
	t.Helper()
	for range 20 {
		addr = droppingTCPOnce(t)
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			return addr, pc
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	t.Fatal("no loopback port free for both TCP and UDP in 20 tries")
	return "", nil
}

func droppingTCPOnce(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	// Backlog 0: one connection fills the accept queue.
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return addr
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 8 {
			t.Fatal("the listener's accept queue never filled")
		}
	}
}

func udpOnlyServer(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	addr := dnstest.FreeAddr(t) // nothing listens on TCP: refused
	return addr, udpAt(t, addr, goodReply)
}

// tcpFailing is the two ways TCP to a server fails while UDP answers (a NetworkPolicy that allows
// UDP only): refused, nothing listening on TCP, and dropped (droppingTCP). serve starts respond
// over UDP and returns the address and the UDP query count.
func tcpFailing(respond func(q *dns.Msg) *dns.Msg) []struct {
	name  string
	serve func(t *testing.T) (string, *atomic.Int32)
} {
	return []struct {
		name  string
		serve func(t *testing.T) (string, *atomic.Int32)
	}{
		{"refused", func(t *testing.T) (string, *atomic.Int32) {
			addr := dnstest.FreeAddr(t) // nothing listens on TCP: refused
			return addr, udpAt(t, addr, respond)
		}},
		{"dropped", func(t *testing.T) (string, *atomic.Int32) {
			addr, pc := droppingTCP(t)
			return addr, udpOn(t, pc, respond)
		}},
	}
}

// checkFellBack checks the fallback's metrics, its one warn line and the protocol gauge.
func checkFellBack(t *testing.T, p *peer, fallbacks0 float64, logs *logBuf) {
	t.Helper()
	if d := metric(p.m.fallbacks) - fallbacks0; d != 1 {
		t.Errorf("protocol_fallback_total +%v, want +1", d)
	}
	if metric(p.m.protoUDP) != 1 || metric(p.m.protoTCP) != 0 {
		t.Errorf("protocol gauges tcp %v udp %v, want 0 1", metric(p.m.protoTCP), metric(p.m.protoUDP))
	}
	if n := logs.count(fallbackLine); n != 1 {
		t.Errorf("%d fallback lines, want 1; logs:\n%s", n, logs)
	}
	if l := logs.String(); !strings.Contains(l, `"level":"warn"`) || !strings.Contains(l, "TCP port 53") ||
		!strings.Contains(l, "docs/manual.md#networkpolicy") || !strings.Contains(l, p.addr) {
		t.Errorf("fallback line %q: want a warn line naming the upstream, TCP port 53 and the manual's NetworkPolicy section", l)
	}
	if p.protocol() != "udp" {
		t.Errorf("protocol %q, want udp", p.protocol())
	}
}

// TCP refused, UDP answering, no startup probe: every miss resolves, the first one over UDP
// within its attempt, and the switch is counted and logged once.
func TestFallbackRefusedTCP(t *testing.T) {
	addr, udpQueries := udpOnlyServer(t)
	var logs logBuf
	f := newForwarder(t, Config{Servers: servers(t, addr), Logger: logs.logger()})
	f.probeWait = noProbes
	p := f.peers[0]
	fallbacks0, downs0 := metric(p.m.fallbacks), metric(p.m.markedDown)

	replies, errs := exchangeAll(f, 20)
	for i := range replies {
		if errs[i] != nil {
			t.Fatalf("q%d: %v", i, errs[i])
		}
		checkAnswer(t, replies[i], i)
	}
	checkFellBack(t, p, fallbacks0, &logs)
	if d := metric(p.m.markedDown) - downs0; d != 0 {
		t.Errorf("marked down %v times: a server that answers over UDP is up", d)
	}
	// Later misses go over UDP at once: no TCP attempt is counted.
	tcp0, udp0 := metric(p.m.queriesTCP), udpQueries.Load()
	for i := range 5 {
		r, err := f.Exchange(context.Background(), query(qname(i)))
		if err != nil {
			t.Fatal(err)
		}
		checkAnswer(t, r, i)
	}
	if d := metric(p.m.queriesTCP) - tcp0; d != 0 {
		t.Errorf("queries{tcp} +%v after the fallback, want +0", d)
	}
	if d := udpQueries.Load() - udp0; d != 5 {
		t.Errorf("the server got %d UDP queries for 5 misses", d)
	}
	if n := logs.count(fallbackLine); n != 1 {
		t.Errorf("%d fallback lines after more misses, want still 1", n)
	}
}

// TCP timing out (SYN dropped), UDP answering: the startup probe finds it, reports the server
// up over UDP within its bound, and the first miss already goes over UDP.
func TestFallbackStartupProbe(t *testing.T) {
	for _, tc := range tcpFailing(goodReply) {
		t.Run(tc.name, func(t *testing.T) {
			addr, udpQueries := tc.serve(t)
			var logs logBuf
			const bound = 500 * time.Millisecond
			f := newForwarder(t, Config{Servers: servers(t, addr), Logger: logs.logger()})
			f.probeWait = noProbes
			p := f.peers[0]
			fallbacks0 := metric(p.m.fallbacks)
			ctx, cancel := context.WithTimeout(context.Background(), bound)
			defer cancel()
			start := time.Now()
			res := f.ProbeAll(ctx)
			if d := time.Since(start); d > bound+time.Second {
				t.Errorf("ProbeAll took %v, not bounded by its ctx (%v)", d, bound)
			}
			if len(res) != 1 || !res[0].Up || res[0].Protocol != "udp" || res[0].Err != nil {
				t.Fatalf("ProbeAll = %+v, want up over udp", res)
			}
			if metric(p.m.healthy) != 1 || !f.Healthy() {
				t.Error("the server is not healthy after answering the probe over UDP")
			}
			checkFellBack(t, p, fallbacks0, &logs)
			if !strings.Contains(logs.String(), "tcp_error") {
				t.Errorf("fallback line %q does not say what TCP did", logs.String())
			}

			tcp0, udp0 := metric(p.m.queriesTCP), udpQueries.Load()
			start = time.Now()
			r, err := f.Exchange(context.Background(), query(qname(7)))
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, r, 7)
			if d := time.Since(start); d > time.Second {
				t.Errorf("the first miss took %v: it waited for TCP", d)
			}
			if metric(p.m.queriesTCP) != tcp0 || udpQueries.Load() != udp0+1 {
				t.Errorf("the first miss did not go straight to UDP")
			}
		})
	}
}

// TCP timing out mid-run, no startup probe: the attempt fails (a timeout is all the stub
// sees), the server goes down, and its prober finds that UDP answers: up again over UDP.
func TestFallbackAfterTimeout(t *testing.T) {
	addr, pc := droppingTCP(t)
	udpOn(t, pc, goodReply)
	var logs logBuf
	f := newForwarder(t, Config{Servers: servers(t, addr), Logger: logs.logger(), Timeout: 300 * time.Millisecond})
	d := driveProbes(f)
	p := f.peers[0]
	fallbacks0 := metric(p.m.fallbacks)
	// The dial's own timeout or the attempt's may end it first: either way, it failed.
	if _, err := f.Exchange(context.Background(), query(qname(1))); err == nil {
		t.Fatal("first miss succeeded over a TCP connection that cannot open")
	}
	if logs.count(fallbackLine) != 0 || p.protocol() != "tcp" {
		t.Fatal("fell back on a timeout alone, without hearing from UDP")
	}
	wait(t, "the prober's pause", d.waits)
	d.fire <- time.Now()
	if err := wait(t, "the probe", d.done); err != nil {
		t.Fatalf("probe: %v, want the UDP answer", err)
	}
	if p.h.down.Load() {
		t.Error("still down after the probe was answered over UDP")
	}
	checkFellBack(t, p, fallbacks0, &logs)
	r, err := f.Exchange(context.Background(), query(qname(2)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 2)
}

// When UDP fails as well, the server is down, not a policy case: no fallback, the usual failover.
func TestNoFallbackWhenUDPFailsToo(t *testing.T) {
	dead := dnstest.FreeAddr(t) // refuses TCP and UDP
	good := startScripted(t, "tcp", goodReply)
	var logs logBuf
	f := newForwarder(t, Config{Servers: servers(t, dead, good.addr), Logger: logs.logger()})
	f.probeWait = noProbes
	p := f.peers[0]
	fallbacks0 := metric(p.m.fallbacks)
	r, err := f.Exchange(context.Background(), query(qname(3)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 3)
	res := f.ProbeAll(context.Background())
	if res[0].Up || res[0].Protocol != "tcp" || !res[1].Up {
		t.Errorf("ProbeAll = %+v, want the dead server down (tcp), the good one up", res)
	}
	if !p.h.down.Load() || metric(p.m.fallbacks) != fallbacks0 || logs.count(fallbackLine) != 0 || p.protocol() != "tcp" {
		t.Errorf("a server silent on both protocols: down %v, fallbacks +%v, protocol %s; want down, none, tcp",
			p.h.down.Load(), metric(p.m.fallbacks)-fallbacks0, p.protocol())
	}
}

// A truncated UDP reply from a server used over UDP is retried over TCP; when that fails too
// the client gets the truncated reply, TC set, with the records that fit, as it would have
// without podns — promptly, also when TCP is dropped.
func TestFallbackTruncatedAnswer(t *testing.T) {
	truncated := func(q *dns.Msg) *dns.Msg {
		if q.Question[0].Qtype == dns.TypeNS {
			return new(dns.Msg).SetReply(q)
		}
		r := answer(q, 9)
		r.Truncated = true
		return r
	}
	for _, tc := range tcpFailing(truncated) {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := tc.serve(t)
			const timeout = 2 * time.Second
			f := newForwarder(t, Config{Servers: servers(t, addr), Timeout: timeout})
			f.probeWait = noProbes
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if res := f.ProbeAll(ctx); !res[0].Up || res[0].Protocol != "udp" {
				t.Fatalf("ProbeAll = %+v, want up over udp", res)
			}
			p := f.peers[0]
			tcp0 := metric(p.m.queriesTCP)
			start := time.Now()
			r, err := f.Exchange(context.Background(), query("big.example."))
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Truncated || r.Rcode != dns.RcodeSuccess || r.Id != clientID || len(r.Answer) != 1 ||
				len(r.Question) != 1 || r.Question[0].Name != "big.example." {
				t.Errorf("reply %v: want the truncated UDP reply (TC, NOERROR, its record, the question, the client's ID)", r)
			}
			if d := metric(p.m.queriesTCP) - tcp0; d != 1 {
				t.Errorf("queries{tcp} +%v, want +1: the TCP retry", d)
			}
			if elapsed > fallbackTCPWait+timeout/4 {
				t.Errorf("took %v: the TCP retry was not bounded by %v", elapsed, fallbackTCPWait)
			}
		})
	}
}

// When TCP to the server works again, the background check switches it back, once; while TCP
// still fails, the checks back off.
func TestFallbackBackToTCP(t *testing.T) {
	addr, _ := udpOnlyServer(t)
	var logs logBuf
	f := newForwarder(t, Config{Servers: servers(t, addr), Logger: logs.logger()})
	checks := make(chan error, 4)
	waits := make(chan time.Duration, 4)
	fire := make(chan time.Time)
	f.probeWait = func(d time.Duration) <-chan time.Time { waits <- d; return fire }
	f.recheckDone = func(_ string, _ time.Duration, err error) { checks <- err }
	p := f.peers[0]
	if res := f.ProbeAll(context.Background()); !res[0].Up || res[0].Protocol != "udp" {
		t.Fatalf("ProbeAll = %+v, want up over udp", res)
	}

	if w := wait(t, "the first check's pause", waits); w != tcpRecheckFirst {
		t.Errorf("first pause %v, want %v", w, tcpRecheckFirst)
	}
	fire <- time.Now()
	if err := wait(t, "a TCP check", checks); err == nil {
		t.Fatal("the TCP check succeeded with nothing listening on TCP")
	}
	if w := wait(t, "the second check's pause", waits); w != 2*tcpRecheckFirst {
		t.Errorf("second pause %v, want %v", w, 2*tcpRecheckFirst)
	}
	if p.protocol() != "udp" {
		t.Fatal("back to TCP after a failed check")
	}

	tcpQueries := tcpAt(t, addr, goodReply)
	fire <- time.Now()
	if err := wait(t, "a TCP check", checks); err != nil {
		t.Fatalf("TCP check: %v, want an answer", err)
	}
	if p.protocol() != "tcp" || metric(p.m.protoTCP) != 1 || metric(p.m.protoUDP) != 0 {
		t.Errorf("protocol %s, gauges tcp %v udp %v; want tcp 1 0", p.protocol(), metric(p.m.protoTCP), metric(p.m.protoUDP))
	}
	if n := logs.count("back to TCP"); n != 1 {
		t.Errorf("%d back-to-TCP lines, want 1; logs:\n%s", n, logs.String())
	}
	n0 := tcpQueries.Load()
	r, err := f.Exchange(context.Background(), query(qname(4)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 4)
	if tcpQueries.Load() != n0+1 {
		t.Error("the miss after the switch back did not go over TCP")
	}
	waitFor(t, "the checker to end", func() bool {
		p.h.mu.Lock()
		defer p.h.mu.Unlock()
		return !p.fb.rechecking
	})
	if n := logs.count(fallbackLine); n != 1 {
		t.Errorf("%d fallback lines, want 1", n)
	}
}

// udp mode never falls back (it is UDP already), and its gauge says udp from the start.
func TestProtocolGaugeUDPMode(t *testing.T) {
	addr, _ := udpOnlyServer(t)
	f := newForwarder(t, Config{Servers: servers(t, addr), Protocol: "udp"})
	f.probeWait = noProbes
	p := f.peers[0]
	fallbacks0 := metric(p.m.fallbacks)
	if metric(p.m.protoUDP) != 1 || metric(p.m.protoTCP) != 0 {
		t.Errorf("udp mode gauges tcp %v udp %v, want 0 1", metric(p.m.protoTCP), metric(p.m.protoUDP))
	}
	if res := f.ProbeAll(context.Background()); !res[0].Up || res[0].Protocol != "udp" {
		t.Errorf("ProbeAll = %+v", res)
	}
	if _, err := f.Exchange(context.Background(), query(qname(1))); err != nil {
		t.Fatal(err)
	}
	if metric(p.m.fallbacks) != fallbacks0 {
		t.Error("udp mode counted a fallback")
	}
}

// Close ends the TCP checker.
func TestCloseStopsRecheck(t *testing.T) {
	addr, _ := udpOnlyServer(t)
	f, err := New(Config{Servers: servers(t, addr)})
	if err != nil {
		t.Fatal(err)
	}
	f.probeWait = func(time.Duration) <-chan time.Time { return nil }
	f.ProbeAll(context.Background())
	p := f.peers[0]
	p.h.mu.Lock()
	running := p.fb.rechecking
	p.h.mu.Unlock()
	if !running {
		t.Fatal("no TCP checker after the fallback")
	}
	f.Close() // waits for f.wg: hangs here if the checker does not end
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	if p.fb.rechecking {
		t.Error("checker still marked running after Close")
	}
}
