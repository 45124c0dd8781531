package upstream

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/panics"
)

// panicAt returns a test hook that panics at stage while *left is positive, one panic per call.
func panicAt(stage string, left *atomic.Int32) func(string) {
	return func(s string) {
		if s == stage && left.Add(-1) >= 0 {
			panic("injected panic at " + s)
		}
	}
}

// panicLog captures a forwarder's log; lines returns its panic lines for where.
type panicLog struct{ dnstest.LogBuffer }

func (l *panicLog) logger() zerolog.Logger { return zerolog.New(&l.LogBuffer) }

func (l *panicLog) lines(where string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, `"where":"`+where+`"`) && strings.Contains(line, `"panic":"injected panic`) {
			out = append(out, line)
		}
	}
	return out
}

func panicCount(w panics.Where) float64 { return metric(panics.Counter(w)) }

// A panic in a connection's reader ends that connection as a loss does: every query in flight
// on it is re-sent on a new connection and answered, and the next query is served as usual.
func TestPanicInReaderResendsInflightQueries(t *testing.T) {
	srv := startTCP(t, func(_ int, c net.Conn) { serveAll(c) })
	var left atomic.Int32
	logs := &panicLog{}
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Logger: logs.logger()})
	f.testHook = panicAt("reader", &left)
	f.stallAfter, f.busyAfter = time.Hour, time.Hour // one connection carries all the queries
	base := panicCount(panics.Upstream)
	left.Store(1)
	replies, errs := exchangeAll(f, 20)
	for i := range replies {
		if errs[i] != nil {
			t.Fatalf("q%d: %v", i, errs[i])
		}
		checkAnswer(t, replies[i], i)
	}
	if got := panicCount(panics.Upstream) - base; got != 1 {
		t.Errorf("podns_panics_total{where=\"upstream\"} rose by %v, want 1", got)
	}
	if n := srv.accepted.Load(); n < 2 {
		t.Errorf("%d connections, want a second one for the re-sent queries", n)
	}
	if l := logs.lines("upstream"); len(l) != 1 || !strings.Contains(l[0], "upstream.(*conn).deliver") {
		t.Errorf("want one panic line whose stack shows the reader: %q", l)
	}
	r, err := f.Exchange(context.Background(), query(qname(30)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 30)
}

// A reply that panics the reader every time (a poison reply) fails its query at once, after the
// bounded re-sends: it never waits out the timeout. The log holds one line for the burst.
func TestPoisonReplyFailsFastAndLogsOnce(t *testing.T) {
	srv := startTCP(t, func(_ int, c net.Conn) { serveAll(c) })
	var left atomic.Int32
	logs := &panicLog{}
	clock := dnstest.NewClock(time.Now())
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Timeout: 5 * time.Second, Logger: logs.logger(),
		Now: clock.Now})
	f.testHook = panicAt("reader", &left)
	base := panicCount(panics.Upstream)
	left.Store(1 + maxResends)
	start := time.Now()
	_, err := f.Exchange(context.Background(), query(qname(1)))
	if !errors.Is(err, errPanicked) || !errors.Is(err, errConnLost) {
		t.Fatalf("error %v, want the connection lost to a panic", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("failed after %v: it waited for the timeout", d)
	}
	if got := panicCount(panics.Upstream) - base; got != 1+maxResends {
		t.Errorf("podns_panics_total{where=\"upstream\"} rose by %v, want %d", got, 1+maxResends)
	}
	if l := logs.lines("upstream"); len(l) != 1 {
		t.Errorf("%d panic lines for %d panics within the interval, want 1", len(l), 1+maxResends)
	}
	clock.Advance(panics.LogInterval)
	left.Store(1)
	r, err := f.Exchange(context.Background(), query(qname(2))) // the panic costs a re-send
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 2)
	l := logs.lines("upstream")
	if len(l) != 2 || !strings.Contains(l[1], `"suppressed":2`) {
		t.Errorf("after the interval: %q, want a second line counting 2 held back", l)
	}
}

// A probe that panics counts as a failed probe: a startup probe reports the server down, and a
// background prober goes on probing (it does not die and leave the server down for good).
func TestPanicInProbe(t *testing.T) {
	srv := startScripted(t, "tcp", goodReply)
	var left atomic.Int32
	logs := &panicLog{}
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Logger: logs.logger()})
	f.testHook = panicAt("probe", &left)
	pd := driveProbes(f)
	base := panicCount(panics.Probe)

	left.Store(2) // the startup probe, then the first background probe
	res := f.ProbeAll(context.Background())
	if res[0].Up || !errors.Is(res[0].Err, errPanicked) {
		t.Fatalf("startup probe %+v, want down by a panic", res[0])
	}
	if f.Healthy() {
		t.Fatal("server up after a panicked startup probe")
	}
	wait(t, "the first pause", pd.waits)
	pd.fire <- time.Now()
	if err := wait(t, "the first background probe", pd.done); !errors.Is(err, errPanicked) {
		t.Fatalf("first background probe: %v, want the panic", err)
	}
	wait(t, "the second pause", pd.waits)
	pd.fire <- time.Now()
	if err := wait(t, "the second background probe", pd.done); err != nil {
		t.Fatalf("second background probe: %v", err)
	}
	if !f.Healthy() {
		t.Error("server still down after a probe it answered")
	}
	if got := panicCount(panics.Probe) - base; got != 2 {
		t.Errorf("podns_panics_total{where=\"probe\"} rose by %v, want 2", got)
	}
	if l := logs.lines("probe"); len(l) != 1 || !strings.Contains(l[0], "probeSafely") {
		t.Errorf("want one line (rate-limited) whose stack shows the probe: %q", l)
	}
}
