package querylog

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
)

// lines collects a logger's output.
type lines struct{ dnstest.LogBuffer }

// with returns the decoded lines whose message is msg.
func (l *lines) with(t *testing.T, msg string) []map[string]any {
	t.Helper()
	return l.Records(t, dnstest.Message(msg))
}

func newLog(t *testing.T, cfg Config) (*Log, *lines) {
	t.Helper()
	out := &lines{}
	cfg.Logger = zerolog.New(out)
	l := New(cfg)
	t.Cleanup(l.Close)
	return l, out
}

func TestWantsByMode(t *testing.T) {
	type answer struct {
		name     string
		rcode    int
		src      Source
		d        time.Duration
		attempts int
	}
	var (
		hit        = answer{"hit", dns.RcodeSuccess, Hit, 30 * time.Microsecond, 0}
		nxdomain   = answer{"NXDOMAIN miss", dns.RcodeNameError, Miss, 2 * time.Millisecond, 1}
		slowMiss   = answer{"slow miss", dns.RcodeSuccess, Miss, 300 * time.Millisecond, 1}
		servfail   = answer{"upstream SERVFAIL", dns.RcodeServerFailure, Miss, time.Millisecond, 2}
		cachedFail = answer{"cached SERVFAIL", dns.RcodeServerFailure, Hit, 20 * time.Microsecond, 0}
		refused    = answer{"REFUSED", dns.RcodeRefused, Miss, time.Millisecond, 1}
		formerr    = answer{"FORMERR", dns.RcodeFormatError, Error, 10 * time.Microsecond, 0}
		badvers    = answer{"BADVERS", dns.RcodeBadVers, Error, 10 * time.Microsecond, 0}
		timeout    = answer{"no upstream answered", dns.RcodeServerFailure, Error, 2 * time.Second, 2}
		stale      = answer{"stale", dns.RcodeSuccess, Stale, 300 * time.Millisecond, 1}
		failover   = answer{"second upstream answered", dns.RcodeSuccess, Miss, 2 * time.Second, 2}
		filtered   = answer{"filtered", dns.RcodeSuccess, Filtered, 10 * time.Microsecond, 0}
		prefetch   = answer{"prefetch", dns.RcodeSuccess, Prefetch, 5 * time.Millisecond, 1}
		coalesced  = answer{"coalesced", dns.RcodeSuccess, Coalesced, 5 * time.Millisecond, 1}
		every      = []answer{hit, nxdomain, slowMiss, servfail, cachedFail, refused, formerr, badvers, timeout, stale, failover, filtered, prefetch, coalesced}
	)
	for _, tt := range []struct {
		mode Mode
		want []answer
	}{
		{Off, nil},
		{Errors, []answer{servfail, cachedFail, refused, formerr, badvers, timeout, stale, failover}},
		{Slow(100 * time.Millisecond), []answer{slowMiss, timeout, stale, failover}},
		{Slow(time.Millisecond), []answer{nxdomain, slowMiss, timeout, stale, failover, prefetch, coalesced}},
		{All, every},
	} {
		l, _ := newLog(t, Config{Mode: tt.mode})
		for _, a := range every {
			want := false
			for _, w := range tt.want {
				want = want || w == a
			}
			if got := l.Wants(a.rcode, a.src, a.d, a.attempts); got != want {
				t.Errorf("mode %v, %s: logged %v, want %v", tt.mode, a.name, got, want)
			}
		}
	}
}

func query(t *testing.T, name string, qtype uint16, id uint16) []byte {
	t.Helper()
	return dnstest.Query(name, qtype, dnstest.ID(id))
}

func TestLineFields(t *testing.T) {
	l, out := newLog(t, Config{Mode: All})
	l.Record(&Entry{
		Query: query(t, "Www.Example.", dns.TypeAAAA, 4242), Remote: netip.MustParseAddrPort("127.0.0.1:40000"),
		Proto: ProtoUDP, Rcode: dns.RcodeSuccess, Size: 120, Duration: 1500 * time.Microsecond, Source: Miss,
		Upstream: "10.96.0.10:53", Attempts: 2,
	})
	l.Record(&Entry{Query: query(t, "cdn.example.", dns.TypeHTTPS, 7), Rcode: dns.RcodeServerFailure, Duration: time.Second, Source: Prefetch, Attempts: 1})
	l.Record(&Entry{Query: []byte{0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3}, Remote: netip.MustParseAddrPort("[::1]:5353"), Proto: ProtoTCP,
		Rcode: dns.RcodeBadVers, Size: 23, Source: Error})
	got := out.with(t, "query")
	if len(got) != 3 {
		t.Fatalf("%d lines, want 3: %v", len(got), got)
	}
	want := []map[string]any{
		{"level": "info", "remote": "127.0.0.1:40000", "id": 4242.0, "type": "AAAA", "name": "Www.Example.", "proto": "udp", "rcode": "NOERROR",
			"size": 120.0, "duration": 0.0015, "cache": "miss", "upstream": "10.96.0.10:53", "attempts": 2.0, "message": "query"},
		// A prefetch has no client, and no upstream replied: upstream is empty, attempts says how many were tried.
		{"level": "info", "id": 7.0, "type": "HTTPS", "name": "cdn.example.", "rcode": "SERVFAIL", "size": 0.0, "duration": 1.0,
			"cache": "prefetch", "upstream": "", "attempts": 1.0, "message": "query"},
		// The question did not parse: what could be read.
		{"level": "info", "remote": "[::1]:5353", "id": 9.0, "proto": "tcp", "rcode": "BADVERS", "size": 23.0, "duration": 0.0, "cache": "error", "message": "query"},
	}
	for i := range want {
		if !equal(got[i], want[i]) {
			t.Errorf("line %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

func equal(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestNamePresentation(t *testing.T) {
	for _, tt := range []struct {
		wire []byte
		want string
	}{
		{[]byte{0}, "."},
		{[]byte{3, 'W', 'w', 'W', 0}, "WwW."},
		{[]byte{3, 'a', '.', 'b', 1, '\\', 0}, `a\.b.\\.`},
		{[]byte{2, ' ', 0xff, 1, 'x', 0}, `\032\255.x.`},
	} {
		if got := string(appendName(nil, tt.wire)); got != tt.want {
			t.Errorf("appendName(%v) = %q, want %q", tt.wire, got, tt.want)
		}
	}
}

// PODNS_LOG_LEVEL=error must not silence a query log someone switched on.
func TestLinesIgnoreTheLogLevel(t *testing.T) {
	out := &lines{}
	l := New(Config{Mode: All, Logger: zerolog.New(out).Level(zerolog.ErrorLevel)})
	defer l.Close()
	l.Record(&Entry{Query: query(t, "a.example.", dns.TypeA, 1), Source: Hit})
	if n := len(out.with(t, "query")); n != 1 {
		t.Errorf("%d query lines at log level error, want 1", n)
	}
}

// A flood in mode all: at most Rate lines at once and Rate a second after that; every other
// line is counted, in Dropped, in podns_query_log_dropped_total and in the summary line.
func TestRateLimit(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	const rate = 50
	l, out := newLog(t, Config{Mode: All, Rate: rate, Now: clock.Now, SummaryInterval: time.Hour})
	metric := testutil.ToFloat64(droppedTotal)
	e := &Entry{Query: query(t, "flood.example.", dns.TypeA, 1), Source: Hit}
	for range 1000 {
		l.Record(e)
	}
	if n := len(out.with(t, "query")); n != rate {
		t.Errorf("1000 at once: %d lines, want the burst, %d", n, rate)
	}
	clock.Advance(100 * time.Millisecond) // room for rate/10 more
	for range 100 {
		l.Record(e)
	}
	lines := len(out.with(t, "query"))
	if lines != rate+rate/10 {
		t.Errorf("100 more after 100ms: %d lines in all, want %d", lines, rate+rate/10)
	}
	dropped := 1100 - lines
	if got := l.Dropped(); got != int64(dropped) {
		t.Errorf("Dropped = %d, want %d", got, dropped)
	}
	if got := testutil.ToFloat64(droppedTotal) - metric; got != float64(dropped) {
		t.Errorf("podns_query_log_dropped_total rose by %v, want %d", got, dropped)
	}
	l.Close() // the last summary
	sum := out.with(t, "1045 query log lines dropped (over PODNS_QUERY_LOG_RATE=50 lines per second)")
	if len(sum) != 1 || sum[0]["dropped"] != float64(dropped) || sum[0]["level"] != "warn" {
		t.Errorf("summary lines %v, want one with dropped=%d", sum, dropped)
	}
}

func TestSummaryIsPeriodic(t *testing.T) {
	l, out := newLog(t, Config{Mode: All, Rate: 1, SummaryInterval: 10 * time.Millisecond})
	e := &Entry{Query: query(t, "flood.example.", dns.TypeA, 1), Source: Hit}
	for range 3 {
		l.Record(e)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(out.with(t, "2 query log lines dropped (over PODNS_QUERY_LOG_RATE=1 lines per second)")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no summary line within 10s at a 10ms interval")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Close()
	if n := len(out.with(t, "2 query log lines dropped (over PODNS_QUERY_LOG_RATE=1 lines per second)")); n != 1 {
		t.Errorf("%d summaries of the same 2 drops, want 1", n)
	}
}

func TestSetModeLogsTheChange(t *testing.T) {
	l, out := newLog(t, Config{})
	e := &Entry{Query: query(t, "a.example.", dns.TypeA, 1), Source: Hit}
	l.Record(e)
	l.SetMode(Slow(50*time.Millisecond), "test")
	if l.Mode() != Slow(50*time.Millisecond) || !l.On() {
		t.Fatalf("mode %v after SetMode", l.Mode())
	}
	l.SetMode(All, "someone else")
	l.Record(e)
	l.SetMode(Off, "test")
	l.Record(e)
	changes := out.with(t, "query log mode changed")
	want := [][3]string{{"off", "slow:50ms", "test"}, {"slow:50ms", "all", "someone else"}, {"all", "off", "test"}}
	if len(changes) != len(want) {
		t.Fatalf("change lines %v, want %d", changes, len(want))
	}
	for i, w := range want {
		if c := changes[i]; c["old"] != w[0] || c["new"] != w[1] || c["by"] != w[2] {
			t.Errorf("change %d: %v, want old=%s new=%s by=%s", i, c, w[0], w[1], w[2])
		}
	}
	if n := len(out.with(t, "query")); n != 1 {
		t.Errorf("%d query lines, want 1 (the one while all)", n)
	}
}

func TestNilLogIsOff(t *testing.T) {
	var l *Log
	if l.On() || l.Mode() != Off {
		t.Error("a nil Log is on")
	}
	l.Record(&Entry{Source: Error})
	l.Close()
}

// Modes that select by rcode or time cost a hit nothing when they do not select it; the server
// builds Entries only once On, so errors and slow modes keep the hit path allocation-free.
func TestRecordAllocatesNothingWhenNotSelected(t *testing.T) {
	for _, m := range []Mode{Off, Errors, Slow(time.Second)} {
		l, _ := newLog(t, Config{Mode: m})
		e := Entry{Query: query(t, "hot.example.", dns.TypeA, 1), Remote: netip.MustParseAddrPort("127.0.0.1:1"), Proto: ProtoUDP,
			Size: 60, Duration: 20 * time.Microsecond, Source: Hit}
		if allocs := testing.AllocsPerRun(1000, func() { l.Record(&e) }); allocs != 0 {
			t.Errorf("mode %v: %.1f allocations per unselected answer, want 0", m, allocs)
		}
	}
}
