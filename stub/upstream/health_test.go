package upstream

import (
	"bytes"
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
)

// scripted is a loopback DNS server (TCP or UDP) that answers each query with respond(q), or
// not at all when respond returns nil, and counts what it received.
type scripted struct {
	addr     string
	received atomic.Int32 // queries, probes included
	probes   atomic.Int32 // ". NS" queries among them
}

func startScripted(t *testing.T, proto string, respond func(q *dns.Msg) *dns.Msg) *scripted {
	t.Helper()
	s := &scripted{}
	only := dnstest.TCPOnly()
	if proto == "udp" {
		only = dnstest.UDPOnly()
	}
	s.addr = dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		s.received.Add(1)
		if q.Question[0].Qtype == dns.TypeNS {
			s.probes.Add(1)
		}
		return respond(q)
	}), only)
	return s
}

func silentReply(*dns.Msg) *dns.Msg { return nil }

// goodReply answers qN.example. as serveAll does, and anything else (probes) with NOERROR.
func goodReply(q *dns.Msg) *dns.Msg {
	if !strings.HasSuffix(q.Question[0].Name, ".example.") {
		return new(dns.Msg).SetReply(q)
	}
	return answer(q, nameIndex(q))
}

func rcodeReply(rcode int) func(q *dns.Msg) *dns.Msg {
	return func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetRcode(q, rcode)
		return r
	}
}

// noProbes keeps background probers waiting until Close, for tests about other things.
func noProbes(time.Duration) <-chan time.Time { return nil }

// probeDriver replaces the probers' pauses and reports each background probe, so that tests
// step through the backoff without sleeping.
type probeDriver struct {
	waits chan time.Duration // the pause each prober asked for
	fire  chan time.Time     // ends one pause
	done  chan error         // each background probe's outcome
}

func driveProbes(f *Forwarder) *probeDriver {
	d := &probeDriver{waits: make(chan time.Duration, 16), fire: make(chan time.Time), done: make(chan error, 16)}
	f.probeWait = func(p time.Duration) <-chan time.Time { d.waits <- p; return d.fire }
	f.probeDone = func(_ string, _ time.Duration, err error) { d.done <- err }
	return d
}

func protos(t *testing.T, run func(t *testing.T, proto string)) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) { run(t, proto) })
	}
}

// The field case: a dead nameserver first. After ProbeAll, even the first lookup goes straight
// to the second server, and the dead one sees nothing but the probe.
func TestProbeAllDeadFirst(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		const timeout = 2 * time.Second
		dead := startScripted(t, proto, silentReply) // TCP: accepts, reads, never answers
		good := startScripted(t, proto, goodReply)
		f := newForwarder(t, Config{Servers: servers(t, dead.addr, good.addr), Protocol: proto, Timeout: timeout})
		f.probeWait = noProbes
		downs := metric(f.peers[0].m.markedDown)

		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		res := f.ProbeAll(ctx)
		if d := time.Since(start); d > timeout/2 {
			t.Errorf("ProbeAll took %v: not bounded by its ctx", d)
		}
		if len(res) != 2 || res[0].Server != dead.addr || res[0].Up || res[0].Err == nil ||
			res[1].Server != good.addr || !res[1].Up || res[1].Err != nil || res[1].RTT <= 0 {
			t.Fatalf("ProbeAll = %+v, want %s down, %s up", res, dead.addr, good.addr)
		}
		if !isTimeout(res[0].Err) || !strings.Contains(res[0].Err.Error(), dead.addr) {
			t.Errorf("dead server's error %q: want a timeout naming it", res[0].Err)
		}
		waitFor(t, "the probe to reach the dead server", func() bool { return dead.received.Load() == 1 })
		if metric(f.peers[0].m.healthy) != 0 || metric(f.peers[1].m.healthy) != 1 {
			t.Errorf("healthy gauges %v, %v; want 0, 1", metric(f.peers[0].m.healthy), metric(f.peers[1].m.healthy))
		}
		if d := metric(f.peers[0].m.markedDown) - downs; d != 1 {
			t.Errorf("marked_down +%v, want +1", d)
		}

		skipped := metric(f.peers[0].m.skipped)
		tried := metric(f.peers[0].m.queriesTCP) + metric(f.peers[0].m.queriesUDP)
		start = time.Now()
		r, err := f.Exchange(context.Background(), query(qname(5)))
		elapsed := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		checkAnswer(t, r, 5)
		if elapsed > timeout/10 {
			t.Errorf("first lookup took %v: it waited for the dead server", elapsed)
		}
		if n := dead.received.Load(); n != 1 {
			t.Errorf("the dead server received %d messages, want only the probe", n)
		}
		if metric(f.peers[0].m.queriesTCP)+metric(f.peers[0].m.queriesUDP) != tried {
			t.Errorf("an attempt was counted for the dead server")
		}
		if d := metric(f.peers[0].m.skipped) - skipped; d != 1 {
			t.Errorf("skipped +%v, want +1", d)
		}
	})
}

// A server that dies mid-run is marked down after MaxFails failed attempts and skipped; the
// background prober backs off while it stays silent and restores it once it answers.
func TestServerDiesAndComesBack(t *testing.T) {
	for _, maxFails := range []int{1, 3} {
		t.Run(strings.Repeat("I", maxFails), func(t *testing.T) {
			const timeout = 200 * time.Millisecond
			var mute atomic.Bool
			flaky := startScripted(t, "tcp", func(q *dns.Msg) *dns.Msg {
				if mute.Load() {
					return nil
				}
				return goodReply(q)
			})
			good := startScripted(t, "tcp", goodReply)
			f := newForwarder(t, Config{Servers: servers(t, flaky.addr, good.addr), Timeout: timeout,
				MaxFails: maxFails, ProbeInterval: 100 * time.Millisecond, ProbeMaxInterval: 300 * time.Millisecond})
			pd := driveProbes(f)
			m := f.peers[0].m
			exchange := func(i int) time.Duration {
				t.Helper()
				start := time.Now()
				r, err := f.Exchange(context.Background(), query(qname(i)))
				if err != nil {
					t.Fatalf("q%d: %v", i, err)
				}
				checkAnswer(t, r, i)
				return time.Since(start)
			}
			tried := func() float64 { return metric(m.queriesTCP) }

			t0, downs, probesDead, probesAlive := tried(), metric(m.markedDown), metric(m.probesDead), metric(m.probesAlive)
			exchange(1)
			if tried()-t0 != 1 {
				t.Fatal("the first server was not tried first")
			}
			mute.Store(true)
			for i := range maxFails {
				if d := exchange(10 + i); d < timeout {
					t.Errorf("failed attempt %d took %v, want the timeout %v", i+1, d, timeout)
				}
				if i < maxFails-1 && metric(m.healthy) != 1 {
					t.Errorf("down after %d of %d failures", i+1, maxFails)
				}
			}
			if metric(m.healthy) != 0 || metric(m.markedDown)-downs != 1 {
				t.Fatalf("after %d failures: healthy %v, marked_down +%v; want 0, +1", maxFails,
					metric(m.healthy), metric(m.markedDown)-downs)
			}
			t1, received := tried(), flaky.received.Load()
			if d := exchange(20); d >= timeout {
				t.Errorf("query with the first server down took %v: it waited for it", d)
			}
			if tried() != t1 || flaky.received.Load() != received {
				t.Error("a down server was sent a query while another was up")
			}

			// Backoff: 100ms, 200ms, then capped at 300ms while the server stays silent.
			for _, want := range []time.Duration{100, 200} {
				if got := wait(t, "the prober's pause", pd.waits); got != want*time.Millisecond {
					t.Errorf("pause %v, want %v", got, want*time.Millisecond)
				}
				pd.fire <- time.Now()
				if err := wait(t, "a probe", pd.done); err == nil {
					t.Fatal("a probe of a silent server succeeded")
				}
			}
			if got := wait(t, "the prober's pause", pd.waits); got != 300*time.Millisecond {
				t.Errorf("pause %v, want the cap 300ms", got)
			}
			if metric(m.healthy) != 0 || metric(m.probesDead)-probesDead != 2 {
				t.Errorf("healthy %v, probes{dead} +%v; want 0, +2", metric(m.healthy), metric(m.probesDead)-probesDead)
			}

			mute.Store(false)
			pd.fire <- time.Now()
			if err := wait(t, "a probe", pd.done); err != nil {
				t.Fatalf("probe of a live server: %v", err)
			}
			if metric(m.healthy) != 1 || metric(m.probesAlive)-probesAlive != 1 {
				t.Errorf("after the probe answered: healthy %v, probes{alive} +%v; want 1, +1",
					metric(m.healthy), metric(m.probesAlive)-probesAlive)
			}
			t2 := tried()
			exchange(30)
			if tried()-t2 != 1 {
				t.Error("the restored server was not tried first")
			}
			select {
			case d := <-pd.waits:
				t.Errorf("the prober went on (pause %v) after the server came back", d)
			default:
			}
		})
	}
}

// A reply to an ordinary query restores a down server at once, and its prober ends without
// probing.
func TestReplyRestoresDownServer(t *testing.T) {
	srv := startScripted(t, "tcp", goodReply)
	f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
	pd := driveProbes(f)
	p := f.peers[0]
	p.markDown(errors.New("test"))
	wait(t, "the prober's pause", pd.waits)
	r, err := f.Exchange(context.Background(), query(qname(2)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 2)
	if metric(p.m.healthy) != 1 || p.h.down.Load() || f.downCount.Load() != 0 {
		t.Fatal("a reply did not restore the server")
	}
	pd.fire <- time.Now()
	waitFor(t, "the prober to end", func() bool {
		p.h.mu.Lock()
		defer p.h.mu.Unlock()
		return !p.h.probing
	})
	if srv.probes.Load() != 0 {
		t.Errorf("%d probes sent to a server that was up again", srv.probes.Load())
	}
}

// With every server down, Exchange still tries them all rather than failing outright.
func TestAllServersDown(t *testing.T) {
	const timeout = 200 * time.Millisecond
	a := startScripted(t, "tcp", silentReply)
	b := startScripted(t, "tcp", silentReply)
	f := newForwarder(t, Config{Servers: servers(t, a.addr, b.addr), Timeout: timeout})
	f.probeWait = noProbes
	for _, r := range f.ProbeAll(context.Background()) {
		if r.Up {
			t.Fatalf("%s up", r.Server)
		}
	}
	start := time.Now()
	r, err := f.Exchange(context.Background(), query(qname(1)))
	elapsed := time.Since(start)
	if err == nil || r != nil {
		t.Fatalf("got %v, %v", r, err)
	}
	if !isTimeout(err) || !strings.Contains(err.Error(), a.addr) || !strings.Contains(err.Error(), b.addr) {
		t.Errorf("err %q: want a timeout naming both servers", err)
	}
	if elapsed < 2*timeout {
		t.Errorf("failed after %v: not every server had its attempt of %v", elapsed, timeout)
	}
	waitFor(t, "both servers to get the query", func() bool {
		return a.received.Load()-a.probes.Load() == 1 && b.received.Load()-b.probes.Load() == 1
	})
}

// When every server is down, the one that went down last is tried first; while one is up, only
// the up ones are tried, in the configured order.
func TestOrder(t *testing.T) {
	clock := dnstest.NewClock(time.Now())
	addrs := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"}
	for _, tc := range []struct {
		name string
		down []int // marked down in this order, a second apart
		want []int
	}{
		{name: "all up", want: []int{0, 1, 2}},
		{name: "first down", down: []int{0}, want: []int{1, 2}},
		{name: "two down", down: []int{2, 0}, want: []int{1}},
		{name: "all down, latest first", down: []int{1, 2, 0}, want: []int{0, 2, 1}},
		{name: "all down, other order", down: []int{0, 1, 2}, want: []int{2, 1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newForwarder(t, Config{Servers: servers(t, addrs...), Now: clock.Now})
			f.probeWait = noProbes
			for _, i := range tc.down {
				clock.Advance(time.Second)
				f.peers[i].markDown(errors.New("test"))
			}
			var got []int
			for _, p := range f.order() {
				for i, x := range f.peers {
					if p == x {
						got = append(got, i)
					}
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("order %v, want %v", got, tc.want)
			}
		})
	}
}

// SERVFAIL, NOTIMP and REFUSED are replies: a server giving them is alive, to probes and to
// queries, although each query then goes on to the next server (issue 12 item 1).
func TestRcodeRepliesKeepServerUp(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		for _, rcode := range []int{dns.RcodeServerFailure, dns.RcodeNotImplemented, dns.RcodeRefused} {
			t.Run(dns.RcodeToString[rcode], func(t *testing.T) {
				srv := startScripted(t, proto, rcodeReply(rcode))
				other := startScripted(t, proto, goodReply)
				f := newForwarder(t, Config{Servers: servers(t, srv.addr, other.addr), Protocol: proto})
				f.probeWait = noProbes
				p := f.peers[0]
				downs := metric(p.m.markedDown)
				if res := f.ProbeAll(context.Background()); !res[0].Up {
					t.Fatalf("a server answering %s probed as down: %v", dns.RcodeToString[rcode], res[0].Err)
				}
				for i := range 3 {
					r, err := f.Exchange(context.Background(), query(qname(i)))
					if err != nil {
						t.Fatal(err)
					}
					checkAnswer(t, r, i)
				}
				if metric(p.m.healthy) != 1 || metric(p.m.markedDown) != downs || p.h.dirty.Load() || !f.Healthy() {
					t.Error("replies with an error RCODE counted against the server")
				}
				if n := srv.received.Load() - srv.probes.Load(); n != 3 {
					t.Errorf("the first server got %d queries, want 3: it stays first in the order", n)
				}
				if n := other.received.Load() - other.probes.Load(); n != 3 {
					t.Errorf("the second server got %d queries, want 3", n)
				}
			})
		}
	})
}

// A timeout while the server answered other queries is a slow query on a live server, not a
// dead server.
func TestSlowQueryDoesNotMarkDown(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		const timeout = 300 * time.Millisecond
		slowSeen := make(chan struct{}, 1)
		srv := startScripted(t, proto, func(q *dns.Msg) *dns.Msg {
			if q.Question[0].Name == "slow.example." {
				slowSeen <- struct{}{}
				return nil
			}
			return goodReply(q)
		})
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), Protocol: proto, Timeout: timeout})
		f.probeWait = noProbes
		errc := make(chan error, 1)
		go func() { _, err := f.Exchange(context.Background(), query("slow.example.")); errc <- err }()
		wait(t, "the slow query to reach the server", slowSeen)
		r, err := f.Exchange(context.Background(), query(qname(4)))
		if err != nil {
			t.Fatal(err)
		}
		checkAnswer(t, r, 4)
		if err := wait(t, "the slow query to time out", errc); !isTimeout(err) {
			t.Fatalf("slow query: %v, want a timeout", err)
		}
		if metric(f.peers[0].m.healthy) != 1 {
			t.Error("marked down for a slow query while it answered others")
		}
		// Without another reply in between, the same timeout marks it down.
		go func() { _, err := f.Exchange(context.Background(), query("slow.example.")); errc <- err }()
		wait(t, "the slow query to reach the server", slowSeen)
		wait(t, "the slow query to time out", errc)
		if metric(f.peers[0].m.healthy) != 0 {
			t.Error("a silent server was not marked down")
		}
	})
}

// Close ends every prober, those pausing and those waiting on a probe, at once.
func TestCloseStopsProbers(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		silent := startScripted(t, proto, silentReply)
		refused := dnstest.FreeAddr(t)
		before := runtime.NumGoroutine()
		f, err := New(Config{Servers: servers(t, silent.addr, refused), Protocol: proto, Timeout: time.Minute,
			ProbeInterval: time.Millisecond, ProbeMaxInterval: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		var probes atomic.Int32
		f.probeDone = func(string, time.Duration, error) { probes.Add(1) }
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		res := f.ProbeAll(ctx)
		if res[0].Up || res[1].Up {
			t.Fatalf("ProbeAll: %+v", res)
		}
		// The silent server's prober is stuck in a probe with a minute to go; the refused
		// one's keeps probing and pausing.
		waitFor(t, "the silent server's background probe", func() bool { return silent.probes.Load() == 2 })
		waitFor(t, "the refused server's background probes", func() bool { return probes.Load() >= 3 })
		probing := func() (n int) {
			for _, p := range f.peers {
				p.h.mu.Lock()
				if p.h.probing {
					n++
				}
				p.h.mu.Unlock()
			}
			return n
		}
		if n := probing(); n != 2 {
			t.Fatalf("%d probers running, want 2", n)
		}
		start := time.Now()
		f.Close()
		if d := time.Since(start); d > time.Second {
			t.Errorf("Close took %v", d)
		}
		after := probes.Load()
		waitFor(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
		if n := probing(); n != 0 {
			t.Errorf("%d probers still marked running after Close", n)
		}
		if probes.Load() != after {
			t.Error("a prober probed after Close")
		}
	})
}

// One line when a server goes down and one when it comes back, rate-limited per server; the
// line that says it is back is never held back after a down line was written, so that the log's
// last word is the server's state (a new-user trial saw "down" as the last line of a server that
// had been up again for minutes).
func TestHealthLogs(t *testing.T) {
	clock := dnstest.NewClock(time.Now())
	var buf bytes.Buffer
	var mu sync.Mutex
	f := newForwarder(t, Config{Servers: servers(t, "127.0.0.1:1"), Now: clock.Now,
		Logger: zerolog.New(zerolog.SyncWriter(lockedWriter{&mu, &buf}))})
	f.probeWait = noProbes
	p := f.peers[0]
	lines := func() string {
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
	p.markDown(errors.New("boom"))
	clock.Advance(time.Second)
	p.markUp("reply")
	if l := lines(); strings.Count(l, "upstream down") != 1 || !strings.Contains(l, "boom") || strings.Count(l, "up again") != 1 {
		t.Errorf("logs %q: want one down line naming the error and one up line", l)
	}
	// Every duration in the stub's logs is in seconds, as the query log's duration is.
	if l := lines(); !strings.Contains(l, `"down_for":1,`) {
		t.Errorf("logs %q: want down_for in seconds (1)", l)
	}
	for range 3 { // flapping within the interval: no lines
		p.markDown(errors.New("boom"))
		p.markUp("reply")
	}
	clock.Advance(logInterval)
	p.markDown(errors.New("again"))
	l := lines()
	if strings.Count(l, "\n") != 3 || !strings.Contains(l, `"suppressed":6`) {
		t.Errorf("logs %q: want a third line counting 6 held-back changes", l)
	}
	clock.Advance(logInterval)
	p.markUp("probe")
	if l := lines(); !strings.Contains(l, "up again") || !strings.Contains(l, `"by":"probe"`) {
		t.Errorf("logs %q: want an up line", l)
	}
}
