package upstream

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

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
			!strings.Contains(b.LastError, "passed over") || !b.LastErrorAt.Equal(clk.Now()) {
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

// TestMedianOfRecent: the median is of the last rttSamples round trips only.
func TestMedianOfRecent(t *testing.T) {
	var r recent
	if d, n := r.median(); d != 0 || n != 0 {
		t.Errorf("empty: %v of %d", d, n)
	}
	for _, ms := range []int{5, 1, 3} {
		r.observe(time.Duration(ms) * time.Millisecond)
	}
	if d, n := r.median(); d != 3*time.Millisecond || n != 3 {
		t.Errorf("5 1 3: %v of %d, want 3ms of 3", d, n)
	}
	for range rttSamples {
		r.observe(time.Second)
	}
	if d, n := r.median(); d != time.Second || n != rttSamples {
		t.Errorf("after %d of 1s: %v of %d", rttSamples, d, n)
	}
}
