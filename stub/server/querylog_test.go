package server

import (
	"math"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/upstream"
)

// linesWith returns the logged lines whose message is msg.
func (b *logBuf) linesWith(t *testing.T, msg string) []map[string]any {
	t.Helper()
	return b.Records(t, dnstest.Message(msg))
}

// observed returns how many answers podns_request_duration_seconds counted for cache=src.
func observed(t *testing.T, src querylog.Source) uint64 {
	t.Helper()
	return requestDuration.count(src)
}

// snapshot holds the histogram's count per label.
type snapshot [querylog.Prefetch]uint64

func histogram(t *testing.T) (s snapshot) {
	for i := range s {
		s[i] = observed(t, querylog.Source(i))
	}
	return s
}

// upstreamRig is a loopback upstream behind the real forwarder: A questions get one address
// (TTL 300), unless failing (SERVFAIL); names in hold wait for release.
type upstreamRig struct {
	addr    string
	mu      sync.Mutex
	failing bool
	held    chan struct{} // closed when a held query arrived
	release chan struct{}
	holdFor string
}

func newUpstreamRig(t *testing.T) (*upstreamRig, *upstream.Forwarder) {
	u := &upstreamRig{}
	u.addr = dnstest.Serve(t, dnstest.Reply(u.reply))
	fwd, err := upstream.New(upstream.Config{Servers: []netip.AddrPort{netip.MustParseAddrPort(u.addr)}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Close() })
	return u, fwd
}

func (u *upstreamRig) reply(q *dns.Msg) *dns.Msg {
	u.mu.Lock()
	failing, holdFor, held, release := u.failing, u.holdFor, u.held, u.release
	u.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	if failing {
		m.Rcode = dns.RcodeServerFailure
		return m
	}
	if q.Question[0].Name == holdFor {
		close(held)
		<-release
	}
	if q.Question[0].Qtype == dns.TypeA {
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300}, A: net.IPv4(10, 0, 0, 1)}}
	}
	return m
}

// hold makes the next query for name wait; the returned channel is closed once it arrived.
func (u *upstreamRig) hold(name string) (arrived <-chan struct{}, release func()) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.holdFor, u.held, u.release = name, make(chan struct{}), make(chan struct{})
	return u.held, func() { close(u.release) }
}

func (u *upstreamRig) fail(on bool) {
	u.mu.Lock()
	u.failing = on
	u.mu.Unlock()
}

// Every kind of answer through a real server and the real forwarder on loopback: the query log's
// line and the histogram's label.
func TestQueryLogLinesAndHistogram(t *testing.T) {
	up, fwd := newUpstreamRig(t)
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	out := &logBuf{}
	ql := querylog.New(querylog.Config{Mode: querylog.All, Rate: 100000, Logger: zerolog.New(out)})
	t.Cleanup(ql.Close)
	_, addr := startServer(t, fwd, func(c *Config) {
		c.Cache = cache.New(cache.Config{Size: 100, StaleWindow: time.Hour, Now: clock.Now})
		c.StaleTimeout = 2 * time.Second
		c.FilterAAAA = true
		c.Coalesce = true
		c.QueryLog = ql
	})

	// One client socket per step, so the line's remote can be checked.
	ask := func(proto string, m *dns.Msg) (*dns.Msg, string) {
		t.Helper()
		c := &dns.Client{Net: proto, Timeout: 5 * time.Second}
		conn, err := c.Dial(addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		r, _, err := c.ExchangeWithConn(m, conn)
		if err != nil {
			t.Fatal(err)
		}
		return r, conn.LocalAddr().String()
	}
	var want []map[string]any
	step := func(name, proto string, m *dns.Msg, src querylog.Source, rcode string, upstream bool) {
		t.Helper()
		before := histogram(t)
		_, remote := ask(proto, m)
		line := map[string]any{"remote": remote, "id": float64(m.Id), "type": dns.TypeToString[m.Question[0].Qtype],
			"name": m.Question[0].Name, "proto": proto, "rcode": rcode, "cache": src.String()}
		if upstream {
			line["upstream"], line["attempts"] = up.addr, 1.0
		}
		want = append(want, line)
		waitFor(t, func() bool { return len(out.linesWith(t, "query")) == len(want) })
		after := histogram(t)
		for i := range after {
			if d := after[i] - before[i]; (querylog.Source(i) == src) != (d == 1) || d > 1 {
				t.Errorf("%s: podns_request_duration_seconds{cache=%q} counted %d", name, querylog.Source(i), d)
			}
		}
	}
	step("miss", "udp", dnstest.Msg("Svc.Example.", dns.TypeA, dnstest.ID(101)), querylog.Miss, "NOERROR", true)
	step("hit", "udp", dnstest.Msg("svc.example.", dns.TypeA, dnstest.ID(102)), querylog.Hit, "NOERROR", false)
	step("hit over TCP", "tcp", dnstest.Msg("svc.example.", dns.TypeA, dnstest.ID(103)), querylog.Hit, "NOERROR", false)
	step("filtered", "udp", dnstest.Msg("svc.example.", dns.TypeAAAA, dnstest.ID(104)), querylog.Filtered, "NOERROR", false)
	badvers := dnstest.Msg("svc.example.", dns.TypeA, dnstest.ID(105), dnstest.EDNS(1232, false))
	badvers.IsEdns0().SetVersion(1)
	step("BADVERS", "udp", badvers, querylog.Error, "BADVERS", false)

	clock.Advance(10 * time.Minute) // svc.example. expired, inside the stale window
	up.fail(true)
	step("stale", "udp", dnstest.Msg("svc.example.", dns.TypeA, dnstest.ID(106)), querylog.Stale, "NOERROR", true)
	step("upstream SERVFAIL, nothing stale", "udp", dnstest.Msg("new.example.", dns.TypeA, dnstest.ID(107)), querylog.Miss, "SERVFAIL", true)
	up.fail(false)

	// Coalesced: the second query for a name arrives while the first is upstream.
	arrived, release := up.hold("co.example.")
	coalesced := testutil.ToFloat64(coalescedTotal)
	before := histogram(t)
	var wg sync.WaitGroup
	remotes := make([]string, 2)
	for i := range 2 {
		if i == 1 {
			<-arrived
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, remotes[i] = ask("udp", dnstest.Msg("co.example.", dns.TypeA, dnstest.ID(uint16(200+i))))
		}()
		if i == 1 {
			waitFor(t, func() bool { return testutil.ToFloat64(coalescedTotal) == coalesced+1 })
			release()
		}
	}
	wg.Wait()
	for i, src := range []querylog.Source{querylog.Miss, querylog.Coalesced} {
		want = append(want, map[string]any{"remote": remotes[i], "id": float64(200 + i), "type": "A", "name": "co.example.", "proto": "udp",
			"rcode": "NOERROR", "cache": src.String(), "upstream": up.addr, "attempts": 1.0})
	}
	waitFor(t, func() bool { return len(out.linesWith(t, "query")) == len(want) })
	after := histogram(t)
	if after[querylog.Miss]-before[querylog.Miss] != 1 || after[querylog.Coalesced]-before[querylog.Coalesced] != 1 {
		t.Errorf("coalesced pair: histogram miss +%d, coalesced +%d; want +1 each",
			after[querylog.Miss]-before[querylog.Miss], after[querylog.Coalesced]-before[querylog.Coalesced])
	}

	got := out.linesWith(t, "query")
	// The coalesced pair's lines come in either order.
	if n := len(got); n >= 2 && got[n-2]["cache"] == "coalesced" {
		got[n-2], got[n-1] = got[n-1], got[n-2]
	}
	for i, w := range want {
		g := got[i]
		for k, v := range w {
			if g[k] != v {
				t.Errorf("line %d (%s): %s = %v, want %v", i, w["cache"], k, g[k], v)
			}
		}
		for _, k := range []string{"upstream", "attempts"} {
			if _, ok := w[k]; !ok && g[k] != nil {
				t.Errorf("line %d (%s): %s = %v, want none (no upstream query)", i, w["cache"], k, g[k])
			}
		}
		if d, ok := g["duration"].(float64); !ok || d <= 0 || d > 5 {
			t.Errorf("line %d (%s): duration %v, want seconds in (0, 5]", i, w["cache"], g["duration"])
		}
		if s, ok := g["size"].(float64); !ok || s < 12 {
			t.Errorf("line %d (%s): size %v", i, w["cache"], g["size"])
		}
	}
}

// "all" under a flood of hits writes at most the rate limit's lines (the burst, then the rate)
// and counts every other one as dropped: the log cannot take the pod's CPU with it.
func TestQueryLogFloodIsRateLimited(t *testing.T) {
	out := &logBuf{}
	const rate = 20
	ql := querylog.New(querylog.Config{Mode: querylog.Off, Rate: rate, Logger: zerolog.New(out), SummaryInterval: time.Hour})
	t.Cleanup(ql.Close)
	srv, addr := startServer(t, &fakeForwarder{answer: records(1)}, func(c *Config) { c.QueryLog = ql })
	query(t, "udp", addr, "hot.example.", dns.TypeA, 0) // fill the cache, not logged
	// The miss is offered to the log just after its reply left, and its worker leaves the misses'
	// group only after that: waiting for the group, not for the miss's histogram count (observed
	// before the offer), keeps its line out of the "all" that follows (it was one line too many,
	// and the wait below never ended, once in a CI run).
	srv.misses.Wait()
	conn, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pkt := dnstest.Query("hot.example.", dns.TypeA)
	buf := make([]byte, 512)
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))

	metric := testutil.ToFloat64(droppedLines())
	ql.SetMode(querylog.All, "test")
	start := time.Now()
	const n = 2000
	for range n {
		if _, err := conn.Write(pkt); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	// The reader times and logs a batch right after sending it: the last lines may trail the replies.
	waitFor(t, func() bool { return int64(len(out.linesWith(t, "query")))+ql.Dropped() == n })
	elapsed := time.Since(start)
	lines := len(out.linesWith(t, "query"))
	if limit := rate + int(elapsed.Seconds()*rate) + 1; lines > limit {
		t.Errorf("%d queries in %v: %d lines, want at most %d (burst %d + %d/s)", n, elapsed, lines, limit, rate, rate)
	}
	if lines < rate {
		t.Errorf("%d lines, want at least the burst (%d)", lines, rate)
	}
	if got := testutil.ToFloat64(droppedLines()) - metric; got != float64(n-lines) {
		t.Errorf("podns_query_log_dropped_total rose by %v, want %d", got, n-lines)
	}
	t.Logf("%d hits in %v: %d lines, %d dropped", n, elapsed.Round(time.Millisecond), lines, ql.Dropped())
}

// droppedLines is podns_query_log_dropped_total.
func droppedLines() prometheus.Collector { return querylog.Collectors()[0] }

// A query log that is off, or in a mode that does not select hits, costs the hit path no
// allocation, sockets included (TestUDPHitsAllocateNothingEndToEnd without a query log).
func TestUDPHitsAllocateNothingWithQueryLog(t *testing.T) {
	for _, mode := range []querylog.Mode{querylog.Off, querylog.Errors, querylog.Slow(time.Second)} {
		ql := querylog.New(querylog.Config{Mode: mode, Logger: zerolog.Nop()})
		t.Cleanup(ql.Close)
		_, addr := startServer(t, &fakeForwarder{answer: records(1)}, func(c *Config) { c.QueryLog = ql })
		query(t, "udp", addr, "hot.example.", dns.TypeA, 0)
		conn, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		pkt := dnstest.Query("hot.example.", dns.TypeA)
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
		for range 100 {
			roundTrip()
		}
		const n = 2000
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range n {
			roundTrip()
		}
		runtime.ReadMemStats(&after)
		conn.Close()
		if per := float64(after.Mallocs-before.Mallocs) / n; per > 0.05 {
			t.Errorf("query log %v: %.2f heap allocations per cache hit over UDP, want 0", mode, per)
		}
	}
}

// podns_request_duration_seconds as Prometheus reads it: one series per source but prefetch,
// cumulative buckets in seconds, n answers of one duration counted at once.
func TestRequestDurationHistogram(t *testing.T) {
	h := newDurationHistogram(requestDuration.desc)
	h.observe(querylog.Hit, 30*time.Microsecond, 5) // a batch of 5 hits
	h.observe(querylog.Hit, 50*time.Microsecond, 1) // on a bound: counted in it (le)
	h.observe(querylog.Hit, 3*time.Millisecond, 1)
	h.observe(querylog.Miss, 10*time.Second, 1) // past the last bound: +Inf only
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "podns_request_duration_seconds" {
		t.Fatalf("gathered %v", mfs)
	}
	series := map[string]*dto.Histogram{}
	for _, m := range mfs[0].GetMetric() {
		series[m.GetLabel()[0].GetValue()] = m.GetHistogram()
	}
	var names []string
	for src := range querylog.Prefetch {
		names = append(names, src.String())
	}
	if len(series) != len(names) {
		t.Errorf("series %v, want one per source but prefetch: %v", series, names)
	}
	hit := series["hit"]
	if hit.GetSampleCount() != 7 || math.Abs(hit.GetSampleSum()-(5*30e-6+50e-6+3e-3)) > 1e-12 {
		t.Errorf("hit: count %d sum %v", hit.GetSampleCount(), hit.GetSampleSum())
	}
	for _, b := range hit.GetBucket() {
		want := uint64(7)
		switch {
		case b.GetUpperBound() < 50e-6:
			want = 0
		case b.GetUpperBound() < 0.005:
			want = 6
		}
		if b.GetCumulativeCount() != want {
			t.Errorf("hit: le=%v holds %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), want)
		}
	}
	miss := series["miss"]
	if miss.GetSampleCount() != 1 || miss.GetSampleSum() != 10 || miss.GetBucket()[len(miss.GetBucket())-1].GetCumulativeCount() != 0 {
		t.Errorf("miss: %v", miss)
	}
	if n := len(hit.GetBucket()); n != len(requestBuckets) || hit.GetBucket()[0].GetUpperBound() != 50e-6 || hit.GetBucket()[n-1].GetUpperBound() != 5 {
		t.Errorf("buckets %v, want 50µs to 5s", hit.GetBucket())
	}
}
