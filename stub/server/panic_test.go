package server

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/panics"
)

// injector panics at one stage, as many times as it is armed for.
type injector struct {
	stage string
	left  atomic.Int32
}

func (in *injector) hook(stage string) {
	if stage == in.stage && in.left.Add(-1) >= 0 {
		panic("injected panic at " + stage)
	}
}

// logBuf collects log lines; the server writes from many goroutines.
type logBuf struct{ dnstest.LogBuffer }

// panicLines returns the panic lines logged for where.
func (b *logBuf) panicLines(t *testing.T, where string) []map[string]any {
	t.Helper()
	return b.Records(t, func(m map[string]any) bool { return m["where"] == where && m["panic"] != nil })
}

// panicRig is a running server whose hook panics at one stage and whose panic log is captured.
type panicRig struct {
	s     *Server
	addr  string
	in    *injector
	log   *logBuf
	clock *dnstest.Clock
	fwd   *fakeForwarder
}

func startPanicRig(t *testing.T, stage string, mod func(*Config)) *panicRig {
	t.Helper()
	rig := &panicRig{in: &injector{stage: stage}, log: &logBuf{}, clock: dnstest.NewClock(time.Unix(1_700_000_000, 0)),
		fwd: &fakeForwarder{answer: records(1)}}
	rig.s, rig.addr = startServerWith(t, rig.fwd, mod, func(s *Server) {
		s.testHook = rig.in.hook
		s.panicLog = panics.Recorder{Logger: zerolog.New(rig.log), Now: rig.clock.Now}
	})
	return rig
}

// checkOneLine asserts one panic line for where, carrying the panic value and a stack frame of
// the server, and returns it.
func (rig *panicRig) checkOneLine(t *testing.T, where string) map[string]any {
	t.Helper()
	lines := rig.log.panicLines(t, where)
	if len(lines) != 1 {
		t.Fatalf("%d panic lines for %s, want 1: %v", len(lines), where, lines)
	}
	l := lines[0]
	if p, _ := l["panic"].(string); !strings.Contains(p, "injected panic") {
		t.Errorf("panic field %q", l["panic"])
	}
	if st, _ := l["stack"].(string); !strings.Contains(st, "stub/server.(*Server).") {
		t.Errorf("no server frame in the stack:\n%s", st)
	}
	if l["level"] != "error" {
		t.Errorf("level %v, want error", l["level"])
	}
	return l
}

func counted(w panics.Where) float64 { return testutil.ToFloat64(panics.Counter(w)) }

func wantServFail(t *testing.T, r *dns.Msg, name string) {
	t.Helper()
	if r.Rcode != dns.RcodeServerFailure || len(r.Question) != 1 || r.Question[0].Name != name {
		t.Fatalf("reply %v, want SERVFAIL for %s", r, name)
	}
}

func wantAnswer(t *testing.T, r *dns.Msg) {
	t.Helper()
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("reply %v, want one answer", r)
	}
}

// A panic on a client path (reader, TCP connection, miss) costs that query a SERVFAIL; the
// next query on the same path is answered.
func TestPanicCostsOneAnswer(t *testing.T) {
	tests := []struct {
		stage, proto string
		where        panics.Where
		hit          bool // the query is a cache hit (the reader's fast path)
	}{
		{"batch", "udp", panics.UDP, true},
		{"batch", "udp", panics.UDP, false},
		{"tcp", "tcp", panics.TCP, true},
		{"miss", "udp", panics.Miss, false},
		{"miss", "tcp", panics.Miss, false},
		{"fetch", "udp", panics.Miss, false},
		{"leader", "udp", panics.Miss, false},
	}
	for _, tt := range tests {
		name := tt.stage + "/" + tt.proto
		if tt.hit {
			name += "/hit"
		}
		t.Run(name, func(t *testing.T) {
			rig := startPanicRig(t, tt.stage, func(c *Config) { c.Coalesce = true })
			if tt.hit {
				wantAnswer(t, query(t, tt.proto, rig.addr, "p.example.", dns.TypeA, 0))
			}
			base := counted(tt.where)
			rig.in.left.Store(1)
			wantServFail(t, query(t, tt.proto, rig.addr, "p.example.", dns.TypeA, 0), "p.example.")
			if got := counted(tt.where) - base; got != 1 {
				t.Errorf("podns_panics_total{where=%q} rose by %v, want 1", tt.where, got)
			}
			rig.checkOneLine(t, tt.where.String())
			wantAnswer(t, query(t, tt.proto, rig.addr, "p.example.", dns.TypeA, 0))
			wantAnswer(t, query(t, tt.proto, rig.addr, "q.example.", dns.TypeA, 0))
		})
	}
}

// A TCP connection survives a panic in one of its messages: the SERVFAIL and the next answer
// come on the same connection.
func TestPanicKeepsTheTCPConnection(t *testing.T) {
	rig := startPanicRig(t, "tcp", nil)
	c, err := dns.Dial("tcp", rig.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	ask := func(name string) *dns.Msg {
		t.Helper()
		r, _, err := (&dns.Client{Net: "tcp"}).ExchangeWithConn(dnstest.Msg(name, dns.TypeA), c)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	rig.in.left.Store(1)
	wantServFail(t, ask("t.example."), "t.example.")
	wantAnswer(t, ask("t.example."))
	wantAnswer(t, ask("u.example."))
}

// The plain reader (where recvmmsg is not available) contains a panic as the batched one does.
func TestPanicInPlainUDPReader(t *testing.T) {
	in := &injector{stage: "udp"}
	logs := &logBuf{}
	s, err := New(Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Cache: cache.New(cache.Config{Size: 100}), Forwarder: &fakeForwarder{answer: records(1)}})
	if err != nil {
		t.Fatal(err)
	}
	s.testHook = in.hook
	s.panicLog.Logger = zerolog.New(logs)
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s.udp = []*net.UDPConn{conn}
	s.wg.Add(1)
	go s.serveUDP(conn)
	t.Cleanup(func() {
		s.closing.Store(true)
		_ = conn.Close()
		s.wg.Wait()
	})
	addr := conn.LocalAddr().String()
	wantAnswer(t, query(t, "udp", addr, "plain.example.", dns.TypeA, 0)) // miss
	wantAnswer(t, query(t, "udp", addr, "plain.example.", dns.TypeA, 0)) // hit
	base := counted(panics.UDP)
	in.left.Store(1)
	wantServFail(t, query(t, "udp", addr, "plain.example.", dns.TypeA, 0), "plain.example.")
	if got := counted(panics.UDP) - base; got != 1 {
		t.Errorf("podns_panics_total{where=\"udp\"} rose by %v, want 1", got)
	}
	if n := len(logs.panicLines(t, "udp")); n != 1 {
		t.Errorf("%d panic lines, want 1", n)
	}
	wantAnswer(t, query(t, "udp", addr, "plain.example.", dns.TypeA, 0))
}

// The waiters of a coalesced query whose leader panicked in the forwarder each get SERVFAIL at
// once (none waits for the miss deadline), and the next identical miss starts a flight of its own.
func TestPanicInCoalescedLeaderFailsEveryWaiter(t *testing.T) {
	const n = 20
	var armed atomic.Bool
	fwd := &fakeForwarder{answer: func(q *dns.Msg) (*dns.Msg, error) {
		if armed.CompareAndSwap(true, false) {
			panic("injected panic in the forwarder")
		}
		return records(1)(q)
	}}
	logs := &logBuf{}
	_, addr := startServerWith(t, fwd, func(c *Config) { c.Coalesce = true }, func(s *Server) {
		s.panicLog.Logger = zerolog.New(logs)
	})
	fwd.hold()
	armed.Store(true)
	base, coalescedBase := counted(panics.Miss), testutil.ToFloat64(coalescedTotal)
	conns := make([]*dns.Conn, n)
	for i := range conns {
		c, err := dns.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		if err := c.WriteMsg(dnstest.Msg("Flight.Example.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool {
		return fwd.calls.Load() == 1 && testutil.ToFloat64(coalescedTotal)-coalescedBase == n-1
	})
	start := time.Now()
	fwd.release()
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		r, err := c.ReadMsg()
		if err != nil {
			t.Fatal(err)
		}
		wantServFail(t, r, "Flight.Example.")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("waiters answered after %v: they waited for the deadline, not the panic", d)
	}
	if got := counted(panics.Miss) - base; got != 1 {
		t.Errorf("podns_panics_total{where=\"miss\"} rose by %v, want 1 (the leader)", got)
	}
	if l := logs.panicLines(t, "miss"); len(l) != 1 || !strings.Contains(l[0]["stack"].(string), "fakeForwarder") {
		t.Errorf("want one line whose stack shows the forwarder: %v", l)
	}
	wantAnswer(t, query(t, "udp", addr, "flight.example.", dns.TypeA, 0))
	if got := fwd.calls.Load(); got != 2 {
		t.Errorf("%d upstream queries, want 2: the next miss must not join the dead flight", got)
	}
}

// A miss that panics releases its place in the same-ID order: a later reply to the same client
// socket and ID is not held behind it for good.
func TestPanicReleasesTheSameIDOrder(t *testing.T) {
	rig := startPanicRig(t, "miss", func(c *Config) { c.OrderSameID = true })
	query(t, "udp", rig.addr, "musl.example.", dns.TypeAAAA, 0) // AAAA now cached
	c, err := dns.Dial("udp", rig.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	rig.in.left.Store(1)
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if err := c.WriteMsg(dnstest.Msg("musl.example.", qt, dnstest.ID(7))); err != nil {
			t.Fatal(err)
		}
	}
	var got []uint16
	for range 2 {
		r, err := c.ReadMsg()
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, r.Question[0].Qtype)
		if r.Question[0].Qtype == dns.TypeA && r.Rcode != dns.RcodeServerFailure {
			t.Errorf("A reply %v, want SERVFAIL", r)
		}
	}
	if got[0] != dns.TypeA {
		t.Errorf("reply order %v, want the A (SERVFAIL) first", got)
	}
	waitFor(t, func() bool { return rig.s.order.active.Load() == 0 })
}

// A panic in a prefetch reaches no client: the hit that triggered it and the queries after it
// are answered.
func TestPanicInPrefetchIsInvisible(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	rig := startPanicRig(t, "prefetch", func(c *Config) {
		c.Cache = cache.New(cache.Config{Size: 100, Prefetch: true, Now: clock.Now})
	})
	for range 3 {
		wantAnswer(t, query(t, "udp", rig.addr, "hot.example.", dns.TypeA, 0)) // miss, then two hits
	}
	base := counted(panics.Prefetch)
	rig.in.left.Store(1)
	clock.Advance(280 * time.Second) // the last tenth of a 300 s TTL: this hit prefetches
	wantAnswer(t, query(t, "udp", rig.addr, "hot.example.", dns.TypeA, 0))
	// The line is written after the count: wait for it, not for the counter.
	waitFor(t, func() bool { return len(rig.log.panicLines(t, "prefetch")) > 0 })
	if got := counted(panics.Prefetch) - base; got != 1 {
		t.Errorf("podns_panics_total{where=\"prefetch\"} rose by %v, want 1", got)
	}
	rig.checkOneLine(t, "prefetch")
	wantAnswer(t, query(t, "udp", rig.addr, "hot.example.", dns.TypeA, 0))
	if got := rig.fwd.calls.Load(); got != 1 {
		t.Errorf("%d upstream queries, want 1: the prefetch panicked before asking", got)
	}
}

// A panic in the search-path prefetch costs the prefetch, not the client's own answer.
func TestPanicInSearchPrefetchIsInvisible(t *testing.T) {
	rig := startPanicRig(t, "search", func(c *Config) {
		c.Search = []string{"ns.svc.cluster.local", "svc.cluster.local"}
		c.Ndots = 5
	})
	rig.fwd.mu.Lock()
	rig.fwd.answer = walkAnswers // the first steps below are NXDOMAIN: the walk goes on
	rig.fwd.mu.Unlock()
	base := counted(panics.Prefetch)
	rig.in.left.Store(1)
	if r := query(t, "udp", rig.addr, "www.ns.svc.cluster.local.", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Fatalf("the client's own answer: %v, want NXDOMAIN", r)
	}
	waitFor(t, func() bool { return counted(panics.Prefetch)-base >= 1 })
	if got := counted(panics.Prefetch) - base; got != 1 {
		t.Errorf("podns_panics_total{where=\"prefetch\"} rose by %v, want 1", got)
	}
	rig.checkOneLine(t, "prefetch")
	// The next walk prefetches as usual.
	if r := query(t, "udp", rig.addr, "api.ns.svc.cluster.local.", dns.TypeA, 0); r.Rcode != dns.RcodeNameError {
		t.Fatalf("the next client's answer: %v, want NXDOMAIN", r)
	}
	waitFor(t, func() bool { return slicesContain(rig.fwd.names(), "api.svc.cluster.local.") })
}

func slicesContain(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// A query that panics every time must not turn the log into a stream of stacks: one line per
// 10 s per where, the next one saying how many were held back; the counter counts them all.
func TestPanicLogIsRateLimited(t *testing.T) {
	rig := startPanicRig(t, "batch", nil)
	base := counted(panics.UDP)
	rig.in.left.Store(2)
	for range 2 {
		wantServFail(t, query(t, "udp", rig.addr, "r.example.", dns.TypeA, 0), "r.example.")
	}
	if got := counted(panics.UDP) - base; got != 2 {
		t.Errorf("podns_panics_total{where=\"udp\"} rose by %v, want 2", got)
	}
	if l := rig.checkOneLine(t, "udp"); l["suppressed"] != 0.0 {
		t.Errorf("first line: suppressed %v, want 0", l["suppressed"])
	}
	rig.clock.Advance(panics.LogInterval)
	rig.in.left.Store(1)
	wantServFail(t, query(t, "udp", rig.addr, "r.example.", dns.TypeA, 0), "r.example.")
	lines := rig.log.panicLines(t, "udp")
	if len(lines) != 2 || lines[1]["suppressed"] != 1.0 {
		t.Fatalf("after the interval: lines %v, want a second one with suppressed 1", lines)
	}
	wantAnswer(t, query(t, "udp", rig.addr, "r.example.", dns.TypeA, 0))
}
