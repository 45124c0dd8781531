package main

import (
	"bytes"
	"context"
	"io"
	"math"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"

	"github.com/podns/podns/e2e/internal/proc"

	"github.com/podns/podns/e2e/internal/scenario"
)

// TestSoak is the shortened soak CI runs (make test): the whole fault loop once, at a lower
// rate than make soak's (the load generator runs under -race here), with every target of the
// long run asserted.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the shortened soak takes about 3 minutes")
	}
	root, err := scenario.FindRoot()
	if err != nil {
		t.Fatal(err)
	}
	coredns, err := findCoreDNS("", root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// The stub of this tree, not a bin/stub that may be older.
	stub := filepath.Join(dir, "stub")
	// go test puts its own toolchain first on PATH.
	build := exec.Command("go", "build", "-o", stub, "./stub")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the stub: %v\n%s", err, out)
	}
	cfg := defaultConfig()
	cfg.duration, cfg.warmup = 90*time.Second, 15*time.Second
	cfg.faultLen, cfg.gap = 5*time.Second, 4*time.Second
	cfg.rate = 200
	cfg.stub, cfg.coredns, cfg.dir = stub, coredns, dir
	cfg.progress = logWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	res, err := run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var sum bytes.Buffer
	res.summary(&sum)
	t.Logf("summary:\n%s", sum.String())
	for _, f := range failedChecks(res.checks()) {
		t.Errorf("target not met: %s", f)
	}
	// The faults and the hostile clients must have happened, or the figures prove nothing.
	seen := map[faultSpec]bool{}
	for _, w := range res.windows {
		seen[w.faultSpec] = true
	}
	for _, f := range faultLoop {
		if !seen[f] {
			t.Errorf("fault %s %s never applied", f.fault, f.target)
		}
	}
	if nOut, _, _ := res.total(0); nOut < int64(cfg.rate)*30 {
		t.Errorf("only %d lookups outside fault windows", nOut)
	}
	if res.cuts == 0 || res.dropped == 0 {
		t.Errorf("proxy: %d connections cut, %d messages black-holed; want both > 0", res.cuts, res.dropped)
	}
	if res.stall.closedByStub.Load() == 0 {
		t.Error("no stalled TCP client was closed by the stub")
	}
	if res.garbage.badName["FORMERR"] == 0 {
		t.Errorf("malformed queries: %v; want FORMERR answers", res.garbage.badName)
	}
	if !res.cleanExit {
		t.Errorf("stub exit after SIGTERM: %s, want 0", res.exit)
	}
	if t.Failed() {
		var md strings.Builder
		res.markdown(&md)
		t.Logf("results:\n%s\nstub log:\n%s", md.String(), res.stubLog)
	}
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestOverlapping(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ws := []window{{start: at(10), end: at(15)}, {start: at(20), end: at(25)}, {start: at(30)}}
	for _, tt := range []struct {
		start, end float64
		want       int
	}{
		{0, 9, -1},
		{9, 10, 0},     // ends as the first window starts
		{12, 13, 0},    // inside
		{14, 21, 1},    // spans two: the latest
		{15.5, 19, -1}, // between
		{25, 26, 1},    // starts as the second ends
		{26, 29, -1},
		{29, 31, 2}, // into the open window
		{40, 41, 2}, // the open window lasts until now
	} {
		if got := overlapping(ws, at(tt.start), at(tt.end)); got != tt.want {
			t.Errorf("[%v, %v]: %d, want %d", tt.start, tt.end, got, tt.want)
		}
	}
	if got := overlapping(nil, at(0), at(1)); got != -1 {
		t.Errorf("no windows: %d", got)
	}
}

func TestHostStallIsAWindow(t *testing.T) {
	r := newRecorder()
	t0 := time.Now().Add(-10 * time.Second)
	r.alive(t0)
	r.alive(t0.Add(100 * time.Millisecond)) // on time: no window
	if len(r.windows) != 0 {
		t.Fatalf("windows %+v after a 100 ms gap", r.windows)
	}
	r.alive(t0.Add(2 * time.Second)) // 1.9 s unscheduled
	if len(r.windows) != 1 || r.windows[0].faultSpec != hostStall {
		t.Fatalf("windows %+v, want one host stall", r.windows)
	}
	// A lookup that failed across the stall is not counted as a failure outside windows.
	r.add(lookup{kind: kHit, start: t0.Add(time.Second), end: t0.Add(4 * time.Second), outcome: oTimeout})
	if r.counts[1][kHit][oTimeout] != 1 || len(r.failOut) != 0 {
		t.Errorf("counts %v, failures outside %d; want it inside", r.counts[1][kHit], len(r.failOut))
	}
}

func TestRecorderCounts(t *testing.T) {
	r := newRecorder()
	t0 := time.Now()
	r.add(lookup{kind: kHit, start: t0, end: t0.Add(time.Millisecond)})
	w := r.openWindow(faultSpec{"blackhole", "A"})
	r.add(lookup{kind: kMiss, start: t0, end: time.Now().Add(2 * time.Second), outcome: oTimeout})
	r.closeWindow(w)
	late := time.Now().Add(time.Second)
	r.add(lookup{kind: kMiss, start: late, end: late.Add(1500 * time.Millisecond), outcome: oServfail})
	if r.counts[0][kHit][oOK] != 1 || r.counts[1][kMiss][oTimeout] != 1 || r.counts[0][kMiss][oServfail] != 1 {
		t.Errorf("counts %v", r.counts)
	}
	if r.over1s != [2]int64{1, 1} {
		t.Errorf("over 1 s: %v, want [1 1]", r.over1s)
	}
	if len(r.failOut) != 1 || r.failOut[0].outcome != oServfail {
		t.Errorf("failures outside: %+v", r.failOut)
	}
	if r.windows[0].lookups != 1 || r.windows[0].failed != 1 || r.windows[0].over1s != 1 {
		t.Errorf("window counts %+v", r.windows[0])
	}
	if r.slowAfter != [4]int64{0, 1, 0, 0} || r.slowOneAttempt != 0 {
		t.Errorf("slow outside by distance %v, one attempt %d; want [0 1 0 0] and 0", r.slowAfter, r.slowOneAttempt)
	}
	if len(r.slowOut) != 2 || r.slowOut[0].kind != kMiss {
		t.Errorf("slowest outside: %+v", r.slowOut)
	}
	row := r.takeInterval()
	if row.lookups != 3 || row.failedOut != 1 || row.failedIn != 1 || !row.inFault {
		t.Errorf("interval %+v", row.interval)
	}
	if row := r.takeInterval(); row.lookups != 0 || row.inFault {
		t.Errorf("second interval %+v, want empty and fault-free", row.interval)
	}
}

func TestVerify(t *testing.T) {
	reply := func(rcode int, rrs ...string) *dns.Msg {
		m := new(dns.Msg)
		m.Rcode = rcode
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatal(err)
			}
			m.Answer = append(m.Answer, rr)
		}
		return m
	}
	big := make([]string, bigRecords)
	for i := range big {
		big[i] = "big.soak.test. 10 IN A 10.1.0.1"
	}
	for _, tt := range []struct {
		name string
		k    kind
		q    string
		r    *dns.Msg
		want outcome
	}{
		{"hit", kHit, "h007.soak.test.", reply(0, "h007.soak.test. 10 IN A 10.0.0.7"), oOK},
		{"hit, other address", kHit, "h007.soak.test.", reply(0, "h007.soak.test. 10 IN A 10.0.0.8"), oWrong},
		{"hit, nothing", kHit, "h007.soak.test.", reply(0), oWrong},
		{"servfail", kHit, "h007.soak.test.", reply(dns.RcodeServerFailure), oServfail},
		{"aaaa nodata", kAAAA, "h007.soak.test.", reply(0), oOK},
		{"nxdomain", kNX, "nx1.soak.test.", reply(dns.RcodeNameError), oOK},
		{"nxdomain answered noerror", kNXRepeat, "nxr01.soak.test.", reply(0, "nxr01.soak.test. 1 IN A 10.9.9.9"), oWrong},
		{"miss", kMiss, "u1.miss.soak.test.", reply(0, "u1.miss.soak.test. 30 IN A 10.9.9.9"), oOK},
		{"miss refused", kMiss, "u1.miss.soak.test.", reply(dns.RcodeRefused), oWrong},
		{"big", kBig, "big.soak.test.", reply(0, big...), oOK},
		{"big, cut short", kBig, "big.soak.test.", reply(0, big[:39]...), oWrong},
	} {
		if got, detail := verify(tt.k, tt.q, tt.r); got != tt.want {
			t.Errorf("%s: %s (%s), want %s", tt.name, got, detail, tt.want)
		}
	}
}

func TestZoneFileParses(t *testing.T) {
	zp := dns.NewZoneParser(strings.NewReader(zoneFileText()), zone, "")
	var a, big, wild int
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if rr.Header().Rrtype == dns.TypeA {
			a++
			switch rr.Header().Name {
			case "big." + zone:
				big++
			case "*.miss." + zone:
				wild++
			}
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatal(err)
	}
	if big != bigRecords || wild != 1 || a != hitNames+bigRecords+2 {
		t.Errorf("A records: %d (big %d, wildcard %d)", a, big, wild)
	}
	// The big answer must be truncated for a client without EDNS (512 bytes), or the lookups of
	// kind big never exercise the TCP retry.
	m := new(dns.Msg).SetQuestion("big."+zone, dns.TypeA)
	for i := range bigRecords {
		rr, _ := dns.NewRR("big.soak.test. 10 IN A 10.1.0." + string(rune('0'+i%10)))
		m.Answer = append(m.Answer, rr)
	}
	if n := m.Len(); n <= 512 {
		t.Errorf("big answer is %d bytes, want over 512", n)
	}
}

// backendServer answers every A query with 10.0.0.1 over UDP and TCP on loopback.
func backendServer(t *testing.T) netip.AddrPort {
	addr := dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg).SetReply(q)
		rr, _ := dns.NewRR(q.Question[0].Name + " 10 IN A 10.0.0.1")
		r.Answer = append(r.Answer, rr)
		return r
	}))
	return netip.MustParseAddrPort(addr)
}

func newTestProxy(t *testing.T) *faultProxy {
	t.Helper()
	ap, err := proc.FreePort(netip.MustParseAddr("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := newFaultProxy(ap, backendServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.close)
	return p
}

func exchange(t *testing.T, proto string, addr netip.AddrPort, timeout time.Duration) (*dns.Msg, time.Duration, error) {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: timeout}
	r, rtt, err := c.Exchange(new(dns.Msg).SetQuestion("a.soak.test.", dns.TypeA), addr.String())
	return r, rtt, err
}

func TestFaultProxyModes(t *testing.T) {
	p := newTestProxy(t)
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			p.set(pass, 0)
			if r, _, err := exchange(t, proto, p.addr, 2*time.Second); err != nil || len(r.Answer) != 1 {
				t.Fatalf("pass: %v %v", r, err)
			}
			p.set(blackhole, 0)
			before := p.dropped.Load()
			if _, _, err := exchange(t, proto, p.addr, 300*time.Millisecond); !isTimeout(err) {
				t.Errorf("blackhole: %v, want a timeout", err)
			}
			if p.dropped.Load() == before {
				t.Error("blackhole: nothing counted as dropped")
			}
			p.set(slow, 300*time.Millisecond)
			if _, rtt, err := exchange(t, proto, p.addr, 3*time.Second); err != nil || rtt < 300*time.Millisecond {
				t.Errorf("slow: rtt %v, %v; want ≥ 300ms", rtt, err)
			}
			p.set(pass, 0)
			if _, rtt, err := exchange(t, proto, p.addr, 2*time.Second); err != nil || rtt > time.Second {
				t.Errorf("pass again: rtt %v, %v", rtt, err)
			}
		})
	}
}

// TestFaultProxyCut checks both ways of cutting: the connection closed as the query arrives,
// and the reply cut after half its bytes, each time with the connection closed.
func TestFaultProxyCut(t *testing.T) {
	p := newTestProxy(t)
	p.set(cut, 0)
	q, _ := new(dns.Msg).SetQuestion("a.soak.test.", dns.TypeA).Pack()
	for i := range 4 {
		c, err := net.Dial("tcp", p.addr.String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := c.Write(frame(q)); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil {
			t.Fatalf("connection %d: %v, want it closed by the proxy", i, err)
		}
		// Either nothing or a partial message: never a whole reply.
		if len(got) >= 2 && len(got)-2 >= int(got[0])<<8|int(got[1]) {
			t.Errorf("connection %d: a whole reply (%d bytes) came through", i, len(got))
		}
	}
	if p.cuts.Load() != 4 {
		t.Errorf("cuts %d, want 4", p.cuts.Load())
	}
}

func TestMetrics(t *testing.T) {
	text := "# TYPE go_goroutines gauge\ngo_goroutines 12\ngo_goroutines_extra 3\n" +
		"podns_dropped_total{reason=\"unparseable\"} 5\npodns_dropped_total{reason=\"tcp_limit\"} 2\n"
	if v := promValue(text, "go_goroutines"); v != 12 {
		t.Errorf("go_goroutines %v", v)
	}
	if v := promValue(text, "go_threads"); !math.IsNaN(v) {
		t.Errorf("absent: %v, want NaN", v)
	}
	if v := sumMetric(text, "podns_dropped_total"); v != "7" {
		t.Errorf("sum %q, want 7", v)
	}
	if v := sumMetric(text, "podns_dropped"); v != "n/a" {
		t.Errorf("prefix of another name: %q, want n/a", v)
	}
}
