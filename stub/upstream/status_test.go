package upstream

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
)

// TestStatus: a server that passes a query over (SERVFAIL) and one that answers. Status
// reports the first's last error with its reason and time, the second's replies and their median.
func TestStatus(t *testing.T) {
	protos(t, func(t *testing.T, proto string) {
		bad, good := startScripted(t, proto, rcodeReply(dns.RcodeServerFailure)), startScripted(t, proto, goodReply)
		clk := dnstest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
		f := newForwarder(t, Config{Servers: servers(t, bad.addr, good.addr), Protocol: proto, Now: clk.Now})
		f.probeWait = noProbes
		for i := range 3 {
			r, err := f.Exchange(context.Background(), query(qname(i)))
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, r, i)
		}
		st := f.Status()
		if len(st) != 2 || st[0].Server != bad.addr || st[1].Server != good.addr {
			t.Fatalf("status %+v", st)
		}
		b, g := st[0], st[1]
		if !b.Up || b.Protocol != proto || b.Fallback || b.Samples != 3 || b.LastErrorReason != reasonServfail ||
			!strings.Contains(b.LastError, "passed over, next server tried") || !b.LastErrorAt.Equal(clk.Now()) {
			t.Errorf("the SERVFAIL server: %+v", b)
		}
		if !g.Up || g.Samples != 3 || g.RTTMedian <= 0 || g.LastReply.IsZero() || g.LastError != "" || !g.LastErrorAt.IsZero() {
			t.Errorf("the good server: %+v", g)
		}
	})
}

// TestStatusDown: a silent server is down after its failed attempt, with the timeout as its
// last error; its median has no samples.
func TestStatusDown(t *testing.T) {
	dead, good := startScripted(t, "udp", silentReply), startScripted(t, "udp", goodReply)
	f := newForwarder(t, Config{Servers: servers(t, dead.addr, good.addr), Protocol: "udp", Timeout: 100 * time.Millisecond})
	f.probeWait = noProbes
	if _, err := f.Exchange(context.Background(), query(qname(1))); err != nil {
		t.Fatal(err)
	}
	d := f.Status()[0]
	if d.Up || d.DownSince.IsZero() || d.Fails != 1 || d.Samples != 0 || d.RTTMedian != 0 || d.LastErrorReason != reasonTimeout {
		t.Errorf("the dead server: %+v", d)
	}
}

// TestMedianOfRecent: the median and the p99 are of the last rttSamples round trips only; the
// p99 shows the one slow round trip the median hides.
func TestMedianOfRecent(t *testing.T) {
	var r recent
	if d, p, n := r.quantiles(); d != 0 || p != 0 || n != 0 {
		t.Errorf("empty: %v, %v of %d", d, p, n)
	}
	for _, ms := range []int{5, 1, 3} {
		r.observe(time.Duration(ms) * time.Millisecond)
	}
	if d, p, n := r.quantiles(); d != 3*time.Millisecond || p != 5*time.Millisecond || n != 3 {
		t.Errorf("5 1 3: %v, %v of %d, want 3ms, 5ms of 3", d, p, n)
	}
	for range rttSamples {
		r.observe(time.Second)
	}
	if d, p, n := r.quantiles(); d != time.Second || p != time.Second || n != rttSamples {
		t.Errorf("after %d of 1s: %v, %v of %d", rttSamples, d, p, n)
	}
	for range rttSamples - 1 {
		r.observe(time.Millisecond)
	}
	r.observe(2 * time.Second)
	if d, p, n := r.quantiles(); d != time.Millisecond || p != 2*time.Second || n != rttSamples {
		t.Errorf("63 of 1ms and one of 2s: %v, %v of %d, want 1ms, 2s", d, p, n)
	}
}

// With one upstream (or the last of the order) a passed-over reply has no next server: the
// error says so instead of "next server tried" (a new-user trial's finding).
func TestStatusPassedOverLast(t *testing.T) {
	bad := startScripted(t, "udp", rcodeReply(dns.RcodeServerFailure))
	f := newForwarder(t, Config{Servers: servers(t, bad.addr), Protocol: "udp"})
	f.probeWait = noProbes
	r, err := f.Exchange(context.Background(), query(qname(1)))
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("Exchange: %v %v; want SERVFAIL", r, err)
	}
	if b := f.Status()[0]; !strings.Contains(b.LastError, "no other server left to try") || strings.Contains(b.LastError, "next server tried") {
		t.Errorf("last error %q: want no other server left to try", b.LastError)
	}
}

// A server whose start-up probe (or background probe) was answered has a last reply: `stub
// status` said LAST REPLY never right after the start-up probe was answered.
func TestStatusProbeReplyCounts(t *testing.T) {
	good := startScripted(t, "udp", goodReply)
	f := newForwarder(t, Config{Servers: servers(t, good.addr), Protocol: "udp"})
	f.probeWait = noProbes
	before := time.Now()
	if res := f.ProbeAll(context.Background()); !res[0].Up {
		t.Fatalf("probe: %+v", res[0])
	}
	if st := f.Status()[0]; st.LastReply.Before(before) {
		t.Errorf("last reply %v after an answered probe: want at or after %v", st.LastReply, before)
	}
}

// Every server down: the last one marked down says all are still tried, not "skipped while
// another server is up" (there is none).
func TestDownLineAllDown(t *testing.T) {
	a, b := startScripted(t, "udp", silentReply), startScripted(t, "udp", silentReply)
	var buf bytes.Buffer
	var mu sync.Mutex
	f := newForwarder(t, Config{Servers: servers(t, a.addr, b.addr), Protocol: "udp", Timeout: 50 * time.Millisecond,
		Logger: zerolog.New(zerolog.SyncWriter(lockedWriter{&mu, &buf}))})
	f.probeWait = noProbes
	if _, err := f.Exchange(context.Background(), query(qname(1))); err == nil {
		t.Fatal("Exchange with two silent servers: no error")
	}
	mu.Lock()
	l := buf.String()
	mu.Unlock()
	if strings.Count(l, "skipped while another server is up") != 1 || strings.Count(l, "and so is every other: all still tried") != 1 {
		t.Errorf("logs %s: want the first down line to say skipped, the second that all are still tried", l)
	}
}
