package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name, stat string
		want       float64
		wantErr    bool
	}{
		{"plain", "123 (stub) S 1 123 123 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 1000 0 0", 3.0, false},
		{"name with spaces and parens", "7 (a) b (c) R 1 7 7 0 -1 0 0 0 0 0 10 20 0 0 20 0 1 0 1 0 0", 0.3, false},
		{"no paren", "123 stub S 1", 0, true},
		{"truncated", "123 (stub) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 2 0 0 20 0 1 0 1 0 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.stat, 100)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseDnsperf(t *testing.T) {
	out := `Statistics:

  Queries sent:         400000
  Queries completed:    399990 (100.00%)
  Queries lost:         10 (0.00%)

  Response codes:       NOERROR 399990 (100.00%)
  Average packet size:  request 34, response 50
  Run time (s):         4.000123
  Queries per second:   99995.5
`
	got, err := parseDnsperf(out)
	if err != nil {
		t.Fatal(err)
	}
	want := perfResult{Sent: 400000, Completed: 399990, Lost: 10, QPS: 99995.5, RunSeconds: 4.000123,
		NoError: 399990, Rcodes: "NOERROR 399990 (100.00%)"}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	got, err = parseDnsperf(strings.Replace(out, "NOERROR 399990 (100.00%)", "NOERROR 5 (0.00%), NXDOMAIN 399985 (100.00%)", 1))
	if err != nil || got.NoError != 5 {
		t.Errorf("mixed rcodes: NoError = %v, %v; want 5", got.NoError, err)
	}
	if _, err := parseDnsperf("[Status] Command line: dnsperf\nError: could not open file\n"); err == nil {
		t.Error("a failed run: want an error")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1000; i >= 1; i-- { // unsorted on purpose
		ds = append(ds, time.Duration(i)*time.Microsecond)
	}
	for _, tt := range []struct{ q, want float64 }{{0.5, 500}, {0.99, 990}, {0.999, 999}, {1, 1000}, {0, 1}} {
		if got := percentile(ds, tt.q); got != tt.want {
			t.Errorf("p%v = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := percentile(nil, 0.5); !math.IsNaN(got) {
		t.Errorf("no samples: got %v, want NaN", got)
	}
}

func TestSummarize(t *testing.T) {
	s := summarize([]float64{5, math.NaN(), 1, 3})
	if s.median != 3 || s.min != 1 || s.max != 5 || s.n != 3 {
		t.Errorf("got %+v, want median 3, min 1, max 5, n 3", s)
	}
	s = summarize([]float64{4, 2})
	if s.median != 3 {
		t.Errorf("even count: median %v, want 3", s.median)
	}
	if s := summarize(nil); s.n != 0 || !math.IsNaN(s.median) {
		t.Errorf("empty: got %+v", s)
	}
}

func TestMustLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.11:53": true, "[::1]:53": true, "10.0.0.1:53": false, "8.8.8.8:53": false} {
		if _, err := mustLoopback(addr); (err == nil) != ok {
			t.Errorf("%s: err = %v, want ok=%v", addr, err, ok)
		}
	}
}

func TestCheckTargets(t *testing.T) {
	med := func(v float64) stat { return stat{median: v, min: v, max: v, n: 1} }
	res := map[string]map[string]stat{
		"podns":   {mQPerCPU: med(200000), mP50: med(30), mRSSIdle: med(7 << 20), mBytesPerEntry: med(300), mFirstAnswer: med(5)},
		"coredns": {mQPerCPU: med(40000), mP50: med(80)},
		"dnsmasq": {mQPerCPU: med(150000), mP50: med(35)},
		"unbound": {mQPerCPU: med(210000), mP50: med(25)},
	}
	got := map[string]string{}
	for _, c := range checkTargets(res) {
		got[c.name] = c.verdict
	}
	want := map[string]string{
		"hit q/CPU-s ≥ 1.0× best of dnsmasq, unbound": "not met",
		"hit q/CPU-s ≥ 4× CoreDNS":                    "met",
		"p50 at fixed rate ≤ best peer":               "not met",
		"idle RSS ≤ 8 MiB":                            "met",
		"bytes per cached entry ≤ 330":                "met",
		"first answer ≤ 20 ms after exec":             "met",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	delete(res, "unbound")
	delete(res, "dnsmasq")
	for _, c := range checkTargets(res) {
		if c.name == "hit q/CPU-s ≥ 1.0× best of dnsmasq, unbound" && c.verdict != "n/a" {
			t.Errorf("without dnsmasq and unbound: %q, want n/a", c.verdict)
		}
	}
}

// responder answers DNS queries on loopback UDP with an empty NOERROR reply that keeps the
// query's ID and question; with dropEvery > 0 it ignores every dropEvery-th query.
func responder(t *testing.T, dropEvery int) string {
	t.Helper()
	var n atomic.Int64
	return dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		if dropEvery > 0 && n.Add(1)%int64(dropEvery) == 0 {
			return nil
		}
		return new(dns.Msg).SetReply(q)
	}), dnstest.UDPOnly())
}

func TestLoadgen(t *testing.T) {
	names := filepath.Join(t.TempDir(), "names.txt")
	if err := os.WriteFile(names, []byte("a.bench.test A\nb.bench.test A\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		dropEvery    int
		wantReceived int
	}{
		{"all answered", 0, 200},
		{"every 4th dropped", 4, 150},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := responder(t, tt.dropEvery)
			var out bytes.Buffer
			err := loadgenMain([]string{"-server", addr, "-names", names, "-rate", "500", "-duration", "400ms", "-timeout", "2s"}, &out)
			if err != nil {
				t.Fatal(err)
			}
			var r rateResult
			if err := json.Unmarshal(out.Bytes(), &r); err != nil {
				t.Fatalf("%v: %q", err, out.String())
			}
			// 200 queries fit in any socket buffer, so even a stalled machine loses none.
			if r.Sent != 200 || r.Received != tt.wantReceived {
				t.Errorf("sent %d received %d, want 200 and %d", r.Sent, r.Received, tt.wantReceived)
			}
			if !(r.P50us > 0 && r.P50us <= r.P99us && r.P99us <= r.P999us && r.P999us < 2e6) {
				t.Errorf("percentiles not ordered or out of range: %+v", r)
			}
			// 200 queries at 500 q/s are paced over about 0.4 s, not sent at once.
			if r.Seconds < 0.35 {
				t.Errorf("sent in %.3f s, want paced over ~0.4 s", r.Seconds)
			}
		})
	}
	if err := loadgenMain([]string{"-server", "192.0.2.1:53", "-names", names}, io.Discard); err == nil {
		t.Error("a non-loopback server: want an error")
	}
}

func TestFirstAnswer(t *testing.T) {
	addr := responder(t, 0)
	d, err := firstAnswer(addr, "a.bench.test", time.Now(), time.Second, nil)
	if err != nil || d <= 0 || d > time.Second {
		t.Errorf("answering server: %v, %v", d, err)
	}
	// A bound socket that never answers.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	start := time.Now()
	if _, err := firstAnswer(pc.LocalAddr().String(), "a.bench.test", start, 50*time.Millisecond, nil); err == nil {
		t.Error("silent server: want an error")
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("silent server: gave up after %v, want about the 50 ms limit", el)
	}
	// A server that has exited: give up at once, not at the limit.
	died := make(chan struct{})
	close(died)
	start = time.Now()
	if _, err := firstAnswer(pc.LocalAddr().String(), "a.bench.test", start, 10*time.Second, died); err == nil {
		t.Error("exited server: want an error")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("exited server: gave up after %v, want at once", el)
	}
}

func TestPromValue(t *testing.T) {
	text := "# HELP go_memstats_mallocs_total Total number of heap objects allocated.\n" +
		"# TYPE go_memstats_mallocs_total counter\n" +
		"go_memstats_mallocs_total_extra 7\n" +
		"go_memstats_mallocs_total 1.234567e+06\n"
	if got := promValue(text, "go_memstats_mallocs_total"); got != 1234567 {
		t.Errorf("got %v, want 1234567", got)
	}
	if got := promValue(text, "go_memstats_frees_total"); !math.IsNaN(got) {
		t.Errorf("absent metric: got %v, want NaN", got)
	}
}

func TestParseSchedstat(t *testing.T) {
	if got, err := parseSchedstat("362659725 10519109 171\n"); err != nil || got != 362659725 {
		t.Errorf("got %v, %v; want 362659725", got, err)
	}
	for _, bad := range []string{"", "1 2", "x 2 3", "1 2 3 4"} {
		if _, err := parseSchedstat(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	// This process's own threads: a positive, non-decreasing total.
	a, err := cpuNanos(os.Getpid())
	if err != nil || a <= 0 {
		t.Fatalf("cpuNanos(self) = %v, %v", a, err)
	}
	for x := 0; x < 1e6; x++ {
		_ = x * x
	}
	if b, err := cpuNanos(os.Getpid()); err != nil || b < a {
		t.Errorf("cpuNanos went from %v to %v (%v)", a, b, err)
	}
}

// uniqueNames asks a different, well-formed name for every index, in the zone given.
func TestUniqueNames(t *testing.T) {
	src, err := uniqueNames("r.slow.test.")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 512)
	seen := map[string]bool{}
	for _, i := range []int{0, 1, 9, 10, 12345678, 99999999} {
		var m dns.Msg
		if err := m.Unpack(src(i, out)); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
		name := m.Question[0].Name
		if want := fmt.Sprintf("r%08d.slow.test.", i); name != want || m.Question[0].Qtype != dns.TypeA || !m.RecursionDesired {
			t.Errorf("query %d: %s %s rd=%v, want %s A rd", i, name, dns.TypeToString[m.Question[0].Qtype], m.RecursionDesired, want)
		}
		if seen[name] {
			t.Errorf("query %d: %s asked twice", i, name)
		}
		seen[name] = true
	}
	for _, bad := range []string{"slow", "", strings.Repeat("x", 60) + ".test."} {
		if _, err := uniqueNames(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

// The fixed-rate mode from several sockets and the closed-loop mode both get every reply back
// to its query, count the unanswered ones as lost, and ask unique names when told to.
func TestLoadgenModes(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	addr := dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		mu.Lock()
		asked[q.Question[0].Name]++
		mu.Unlock()
		return new(dns.Msg).SetReply(q)
	}), dnstest.UDPOnly())
	run := func(args ...string) rateResult {
		t.Helper()
		var out bytes.Buffer
		if err := loadgenMain(append([]string{"-server", addr, "-timeout", "2s"}, args...), &out); err != nil {
			t.Fatal(err)
		}
		var r rateResult
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("%v: %q", err, out.String())
		}
		return r
	}
	r := run("-unique", "r.slow.test.", "-rate", "500", "-duration", "400ms", "-sockets", "3")
	if r.Sent != 200 || r.Received != 200 {
		t.Errorf("fixed rate, 3 sockets: sent %d received %d, want 200 and 200", r.Sent, r.Received)
	}
	if !(r.P50us > 0 && r.P50us <= r.P99us && r.QPS > 0) {
		t.Errorf("fixed rate: %+v", r)
	}
	r = run("-unique", "c.miss.test.", "-clients", "4", "-duration", "300ms")
	if r.Sent == 0 || r.Received != r.Sent {
		t.Errorf("closed loop: sent %d received %d, want all answered", r.Sent, r.Received)
	}
	if !(r.P50us > 0 && r.P50us <= r.P99us && r.LagP99us == 0) {
		t.Errorf("closed loop: %+v", r)
	}
	if got := r.QPS * r.Seconds; math.Abs(got-float64(r.Received)) > 1 {
		t.Errorf("closed loop: qps %v × %v s = %v, want the %d received", r.QPS, r.Seconds, got, r.Received)
	}
	mu.Lock()
	defer mu.Unlock()
	for name, n := range asked {
		if n != 1 {
			t.Errorf("%s asked %d times, want every name once", name, n)
		}
	}
	if len(asked) != 200+r.Sent {
		t.Errorf("%d distinct names asked, want %d", len(asked), 200+r.Sent)
	}
	for _, bad := range [][]string{
		{"-names", "x", "-unique", "a.test."}, // both
		{},                                    // neither
		{"-unique", "a.test.", "-sockets", "0"},
		{"-unique", "a.test.", "-clients", "-1"},
	} {
		if err := loadgenMain(append([]string{"-server", addr}, bad...), io.Discard); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestParseOptionsPhases(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, ph := range allPhases {
		if !o.has(ph) {
			t.Errorf("default: phase %s off", ph)
		}
	}
	if o.missRate != 2000 || o.missDelay != time.Millisecond || o.missSockets != 10 || o.missClients != 10 {
		t.Errorf("default miss settings: %+v", o)
	}
	o, err = parseOptions([]string{"-phases", "missrate, MissConc", "-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.has(phMissRate) || !o.has(phMissConc) || o.has(phHit) || o.has(phMiss) || o.has(phStartup) || o.has(phRate) {
		t.Errorf("-phases missrate,missconc: %v", o.phases)
	}
	if o.missRateDur != 2*time.Second || o.missConcDur != 2*time.Second {
		t.Errorf("-quick: miss runs %v and %v, want 2s", o.missRateDur, o.missConcDur)
	}
	for _, bad := range [][]string{
		{"-phases", "missrate,nope"},
		{"-miss-rate", "50"},
		{"-miss-delay", "1s"},
		{"-miss-sockets", "0"},
		{"-miss-clients", "101"},
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

func TestUpstreamCorefileSlowZone(t *testing.T) {
	cf := upstreamCorefile("/d", 5353, time.Millisecond)
	for _, want := range []string{"slow.test.:5353 {", "erratic {", "drop 0", "delay 1 1ms", "miss.test.:5353 {", "bench.test.:5353 {"} {
		if !strings.Contains(cf, want) {
			t.Errorf("Corefile lacks %q:\n%s", want, cf)
		}
	}
	// No delay: erratic still must not drop (its default is every other query).
	if cf := upstreamCorefile("/d", 5353, 0); !strings.Contains(cf, "drop 0") || strings.Contains(cf, "delay") {
		t.Errorf("no delay:\n%s", cf)
	}
}

// The miss checks compare podns with the best peer, with the factors of issue 12, and are left
// out when podns's phase did not run.
func TestCheckTargetsMisses(t *testing.T) {
	med := func(v float64) stat { return stat{median: v, min: v, max: v, n: 1} }
	res := map[string]map[string]stat{
		"podns":   {mMissRateP50: med(1500), mMissRateP99: med(3500), mMissRateQPerCPU: med(9000), mMissConcP50: med(700), mMissConcQPerCPU: med(25000)},
		"coredns": {mMissRateP50: med(1600), mMissRateP99: med(5000), mMissRateQPerCPU: med(4000), mMissConcP50: med(650), mMissConcQPerCPU: med(12000)},
		"dnsmasq": {mMissRateP50: med(1700), mMissRateP99: med(3000), mMissRateQPerCPU: med(10000), mMissConcP50: med(900), mMissConcQPerCPU: med(21000)},
	}
	got := map[string]check{}
	for _, c := range checkTargets(res) {
		got[c.name] = c
	}
	for name, want := range map[string]string{
		"miss p50 at fixed rate ≤ 1.0× best peer":       "met",     // 1500 vs coredns 1600
		"miss p99 at fixed rate ≤ 1.2× best peer":       "met",     // 3500 vs dnsmasq 3000: 1.17×
		"miss q/CPU-s at fixed rate ≥ best peer":        "not met", // 9000 vs dnsmasq 10000
		"miss p50, concurrent clients ≤ 1.0× best peer": "not met", // 700 vs coredns 650
		"miss q/CPU-s, concurrent clients ≥ best peer":  "met",
	} {
		if got[name].verdict != want {
			t.Errorf("%s: %+v, want %s", name, got[name], want)
		}
	}
	if r := got["miss p99 at fixed rate ≤ 1.2× best peer"].reference; r != "dnsmasq 3000 µs" {
		t.Errorf("p99 reference %q, want the best peer, dnsmasq 3000 µs", r)
	}
	for _, c := range checkTargets(map[string]map[string]stat{"podns": {mQPerCPU: med(1)}, "dnsmasq": res["dnsmasq"]}) {
		if strings.HasPrefix(c.name, "miss") {
			t.Errorf("podns's miss phases not run: %q listed", c.name)
		}
	}
}

func TestProgress(t *testing.T) {
	got := progress(map[string]float64{mMissRateP50: 1500, mMissRateP99: 3210, mMissConcP50: 700})
	if want := "miss p50/p99 1500/3210 µs, concurrent miss p50 700 µs"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := progress(nil); got != "done" {
		t.Errorf("nothing measured: %q", got)
	}
}

// The fixed-rate hit runs at 2,000 and 200 q/s and the idle phase are phases of their own, with
// durations of their own that -quick shortens.
func TestParseOptionsLowRatesAndIdle(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, ph := range []string{phRate2000, phRate200, phIdle} {
		if !o.has(ph) {
			t.Errorf("default: phase %s off", ph)
		}
	}
	if o.lowRateDur != 8*time.Second || o.idleCPUDur != time.Minute {
		t.Errorf("defaults: low-rate runs %v, idle %v; want 8s and 1m", o.lowRateDur, o.idleCPUDur)
	}
	o, err = parseOptions([]string{"-phases", "rate200,idle", "-quick"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.has(phRate200) || !o.has(phIdle) || o.has(phRate2000) || o.has(phRate) || o.has(phHit) {
		t.Errorf("-phases rate200,idle: %v", o.phases)
	}
	if o.lowRateDur != 3*time.Second || o.idleCPUDur != 10*time.Second {
		t.Errorf("-quick: low-rate runs %v, idle %v; want 3s and 10s", o.lowRateDur, o.idleCPUDur)
	}
	// -quick shortens only what the command line leaves at its default, whichever comes first.
	for _, args := range [][]string{
		{"-quick", "-rounds", "5", "-miss-rate-duration", "10s"},
		{"-rounds", "5", "-miss-rate-duration", "10s", "-quick"},
	} {
		o, err = parseOptions(args, io.Discard)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if o.rounds != 5 || o.missRateDur != 10*time.Second || o.missConcDur != 2*time.Second || o.hitDur != 2*time.Second || o.missNames != 20000 {
			t.Errorf("%v: rounds %d, miss runs %v and %v, hit %v, %d names; want 5 rounds, 10s, and -quick's 2s, 2s, 20000",
				args, o.rounds, o.missRateDur, o.missConcDur, o.hitDur, o.missNames)
		}
	}
	o, err = parseOptions([]string{"-idle-cpu-duration", "5s", "-low-rate-duration", "20s"}, io.Discard)
	if err != nil || o.idleCPUDur != 5*time.Second || o.lowRateDur != 20*time.Second {
		t.Errorf("explicit durations: %v, %+v", err, o)
	}
	for _, bad := range [][]string{
		{"-idle-cpu-duration", "500ms"},
		{"-idle-cpu-duration", "11m"},
		{"-low-rate-duration", "0s"},
		{"-low-rate-duration", "2m"},
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	// Every fixed-rate run fills its own keys, and every key is a row of the table.
	rows := map[string]bool{}
	for _, m := range metrics {
		rows[m.key] = true
	}
	seen := map[string]string{}
	for _, hr := range hitRates {
		k := hr.keys
		for _, key := range []string{k.p50, k.p99, k.p999, k.lost, k.lag, k.cpu, k.wakeups} {
			if key == "" {
				continue
			}
			if !rows[key] {
				t.Errorf("%s: key %s is not a row of the table", hr.phase, key)
			}
			if other, ok := seen[key]; ok {
				t.Errorf("key %s filled by both %s and %s", key, other, hr.phase)
			}
			seen[key] = hr.phase
		}
	}
	if r := hitRates[1].rate(o); hitRates[1].phase != phRate2000 || r != 2000 {
		t.Errorf("rate2000 runs at %d q/s", r)
	}
	if r := hitRates[2].rate(o); hitRates[2].phase != phRate200 || r != 200 {
		t.Errorf("rate200 runs at %d q/s", r)
	}
}

func TestParseSchedstatLine(t *testing.T) {
	got, err := parseSchedstatLine("362659725 10519109 171\n")
	if err != nil || got != (schedStat{onCPU: 362659725, slices: 171}) {
		t.Errorf("got %+v, %v; want 362659725 ns in 171 slices", got, err)
	}
	for _, bad := range []string{"1 2 x", "1 2", "1 2 -3"} {
		if _, err := parseSchedstatLine(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	// This process: its threads have run, and were switched in at least once each.
	s, err := schedstat(os.Getpid())
	if err != nil || s.onCPU <= 0 || s.slices < 1 {
		t.Errorf("schedstat(self) = %+v, %v", s, err)
	}
}

// CPU per hit at 2,000 and 200 q/s is checked against the best (lowest) peer with issue 17's
// factor 1.2; the idle check wants no tick at all; both are left out when podns's phase did not
// run.
func TestCheckTargetsRatesAndIdle(t *testing.T) {
	med := func(v float64) stat { return stat{median: v, min: v, max: v, n: 1} }
	res := map[string]map[string]stat{
		"podns":   {mR2kCPU: med(4.7), mR200CPU: med(12), mIdleTicks: med(0)},
		"coredns": {mR2kCPU: med(9), mR200CPU: med(20), mIdleTicks: med(1)},
		"dnsmasq": {mR2kCPU: med(4.0), mR200CPU: med(9.9), mIdleTicks: med(0)},
		"unbound": {mR2kCPU: med(4.2), mR200CPU: med(10.5), mIdleTicks: med(0)},
	}
	got := map[string]check{}
	for _, c := range checkTargets(res) {
		got[c.name] = c
	}
	for name, want := range map[string]struct{ verdict, ref, ratio string }{
		"CPU per hit at 2,000 q/s ≤ 1.2× best peer": {"met", "dnsmasq 4.00 s/100k", "1.18×"},
		"CPU per hit at 200 q/s ≤ 1.2× best peer":   {"not met", "dnsmasq 9.90 s/100k", "1.21×"},
		"idle: no CPU tick without queries":         {"met", "0 ticks", "–"},
	} {
		if c := got[name]; c.verdict != want.verdict || c.reference != want.ref || c.ratio != want.ratio {
			t.Errorf("%s: %+v, want %+v", name, c, want)
		}
	}
	res["podns"][mIdleTicks] = med(1)
	for _, c := range checkTargets(res) {
		if c.name == "idle: no CPU tick without queries" && c.verdict != "not met" {
			t.Errorf("one tick while idle: %+v, want not met", c)
		}
	}
	for _, c := range checkTargets(map[string]map[string]stat{"podns": {mQPerCPU: med(1)}, "dnsmasq": res["dnsmasq"]}) {
		if strings.HasPrefix(c.name, "CPU per hit") || strings.HasPrefix(c.name, "idle:") {
			t.Errorf("podns's rate and idle phases not run: %q listed", c.name)
		}
	}
}

// The table's last column is podns ÷ the best peer on each row: the lowest for ↓ rows, the
// highest for ↑ rows, nothing for diagnostic rows or without a second peer.
func TestWriteTableBestPeer(t *testing.T) {
	med := func(v float64) stat { return stat{median: v, min: v, max: v, n: 1} }
	res := map[string]map[string]stat{
		"podns":   {mR200CPU: med(12), mQPerCPU: med(100000), mR200Wakeups: med(0.9)},
		"dnsmasq": {mR200CPU: med(10), mQPerCPU: med(80000), mR200Wakeups: med(0.8)},
		"unbound": {mR200CPU: med(15), mQPerCPU: med(125000), mR200Wakeups: med(0.7)},
	}
	var w strings.Builder
	writeTable(&w, []string{"podns", "dnsmasq", "unbound"}, res)
	lines := strings.Split(w.String(), "\n")
	if !strings.HasSuffix(lines[0], "| podns/best peer |") {
		t.Errorf("header: %s", lines[0])
	}
	want := map[string]string{
		"CPU s per 100k hits at 200 q/s":   "| 1.20× dnsmasq |",
		"cache-hit queries per CPU-second": "| 0.80× unbound |",
		"  threads switched in per query":  "|  |",
	}
	for label, suffix := range want {
		found := false
		for _, l := range lines {
			if strings.HasPrefix(l, "| "+label+" |") {
				found = true
				if !strings.HasSuffix(l, suffix) {
					t.Errorf("%s: %s, want it to end %q", label, l, suffix)
				}
			}
		}
		if !found {
			t.Errorf("no row %q in\n%s", label, w.String())
		}
	}
	w.Reset()
	writeTable(&w, []string{"podns", "dnsmasq"}, res)
	if strings.Contains(w.String(), "best peer") {
		t.Errorf("one peer: no best-peer column wanted\n%s", w.String())
	}
}

// The relay (the Go floor of a miss) runs only when named, only in the miss latency phases, and
// is a column with its ratio but never the best peer, even where its value is the best.
func TestRelayTarget(t *testing.T) {
	o, err := parseOptions(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(o.targets, relayTarget) {
		t.Errorf("default targets %v: the relay only when named", o.targets)
	}
	o, err = parseOptions([]string{"-targets", "relay,unbound,podns"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"podns", "unbound", "relay"}; !slices.Equal(o.targets, want) {
		t.Errorf("-targets relay,unbound,podns: %v, want %v", o.targets, want)
	}
	if got := o.forTarget("podns"); got != o {
		t.Error("podns: forTarget changed the options")
	}
	r := o.forTarget(relayTarget)
	for _, ph := range allPhases {
		if want := ph == phMissRate || ph == phMissConc; r.has(ph) != want {
			t.Errorf("relay: phase %s is %v, want %v", ph, r.has(ph), want)
		}
	}
	if !o.has(phHit) {
		t.Error("forTarget changed the caller's phases")
	}
	o, _ = parseOptions([]string{"-phases", "missrate"}, io.Discard)
	if r := o.forTarget(relayTarget); !r.has(phMissRate) || r.has(phMissConc) {
		t.Errorf("-phases missrate: relay phases %v", r.phases)
	}

	med := func(v float64) stat { return stat{median: v, min: v, max: v, n: 1} }
	res := map[string]map[string]stat{
		"podns":   {mMissRateQPerCPU: med(6000)},
		"dnsmasq": {mMissRateQPerCPU: med(8000)},
		"unbound": {mMissRateQPerCPU: med(7500)},
		"relay":   {mMissRateQPerCPU: med(12000)},
	}
	var w strings.Builder
	writeTable(&w, []string{"podns", "dnsmasq", "unbound", "relay"}, res)
	row := ""
	for _, l := range strings.Split(w.String(), "\n") {
		if strings.HasPrefix(l, "| cache-miss queries per CPU-second (fixed rate) |") {
			row = l
		}
	}
	if !strings.Contains(row, "| 0.50× |") || !strings.HasSuffix(row, "| 0.75× dnsmasq |") {
		t.Errorf("row %q: want podns/relay 0.50× and the best peer dnsmasq (0.75×)", row)
	}
	for _, c := range checkTargets(res) {
		if strings.Contains(c.reference, "relay") {
			t.Errorf("check %q uses the relay as its reference", c.name)
		}
	}

	// Named with phases it does not run, it is not started (no all-"–" column): a one-line
	// notice names the phases it runs in, and alone it is an error.
	for _, tc := range []struct {
		phases  string
		targets []string // nil: an error
		notice  bool
	}{
		{"hit", nil, true},
		{"idle,startup", nil, true},
		{"missconc", []string{"relay"}, false},
	} {
		var stderr strings.Builder
		o, err := parseOptions([]string{"-targets", "relay", "-phases", tc.phases}, &stderr)
		if tc.targets == nil {
			if err == nil || !strings.Contains(err.Error(), "relay") || !strings.Contains(err.Error(), tc.phases) {
				t.Errorf("-targets relay -phases %s: err %v, want one naming relay and %s", tc.phases, err, tc.phases)
			}
		} else if err != nil || !slices.Equal(o.targets, tc.targets) {
			t.Errorf("-targets relay -phases %s: %v, %v; want %v", tc.phases, o, err, tc.targets)
		}
		if want := "SKIPPED relay: it runs only in phases missrate, missconc, and -phases selects none of them\n"; tc.notice != (stderr.String() == want) || !tc.notice && stderr.Len() > 0 {
			t.Errorf("-targets relay -phases %s: stderr %q, notice wanted: %v", tc.phases, stderr.String(), tc.notice)
		}
	}
	// relay-udp is the relay forwarding over UDP: the same program, its own column after relay's.
	o, err = parseOptions([]string{"-targets", "relay-udp,dnsmasq,relay,podns"}, io.Discard)
	if err != nil || !slices.Equal(o.targets, []string{"podns", "dnsmasq", "relay", "relay-udp"}) {
		t.Errorf("-targets relay-udp,dnsmasq,relay,podns: %v, %v", o, err)
	}
	for target, proto := range map[string]string{relayTarget: "tcp", relayUDPTarget: "udp"} {
		l, err := specs[target].config("bin", t.TempDir(), netip.MustParseAddrPort("127.0.0.15:53"), netip.MustParseAddrPort("127.0.0.10:53"), 0)
		if err != nil || !slices.Contains(l.args, "-upstream-proto") || l.args[len(l.args)-1] != proto {
			t.Errorf("%s: launch %+v, %v; want -upstream-proto %s", target, l, err, proto)
		}
		if !specs[target].reference || !strings.HasSuffix(specs[target].source, proto) {
			t.Errorf("%s: spec %+v, want a reference built with -upstream-proto %s", target, specs[target], proto)
		}
	}

	var stderr strings.Builder
	o, err = parseOptions([]string{"-targets", "podns,relay", "-phases", "hit"}, &stderr)
	if err != nil || !slices.Equal(o.targets, []string{"podns"}) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("-targets podns,relay -phases hit: %v, %v, stderr %q; want podns alone and one notice", o, err, stderr.String())
	}
}

// What makes the relay a reference and a miss-only target is its spec, not its name: every
// target, and three hypothetical ones (a second reference, a peer with every phase, a peer with
// a few), gets each rule from its spec's phases and reference fields.
func TestTargetSpecRules(t *testing.T) {
	specs["floor2"] = targetSpec{name: "floor2", phases: []string{phMissConc}, reference: true}
	specs["peer2"] = targetSpec{name: "peer2"}
	specs["peer3"] = targetSpec{name: "peer3", phases: []string{phHit, phMissConc}}
	t.Cleanup(func() { delete(specs, "floor2"); delete(specs, "peer2"); delete(specs, "peer3") })
	if !specs[relayTarget].reference || specs[relayTarget].phases == nil {
		t.Fatalf("relay spec %+v: want a reference with its own phases", specs[relayTarget])
	}

	o, err := parseOptions(nil, io.Discard) // every phase
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "server")
	if err := os.WriteFile(bin, make([]byte, 1234), 0o755); err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(maps.Keys(specs))
	bins := map[string]string{}
	for _, n := range names {
		bins[n] = bin
	}
	idle, sizes := idleTargets(names), binarySizes(names, bins)

	// Every reference has the best value of the row and peer2 the best of the peers: the best
	// peer must still be peer2.
	med := func(v float64) stat { return stat{median: v, min: v, max: v, n: 1} }
	res := map[string]map[string]stat{}
	for _, n := range names {
		res[n] = map[string]stat{mMissConcQPerCPU: med(7000)}
		if specs[n].reference {
			res[n][mMissConcQPerCPU] = med(12000)
		}
	}
	res["podns"][mMissConcQPerCPU], res["peer2"][mMissConcQPerCPU] = med(6000), med(8000)
	table := []string{"podns"}
	for _, n := range names {
		if n != "podns" {
			table = append(table, n)
		}
	}
	var w strings.Builder
	writeTable(&w, table, res)
	if !strings.Contains(w.String(), "| 0.75× peer2 |\n") {
		t.Errorf("best peer: want peer2 (0.75×), never a reference\n%s", w.String())
	}

	footprint := []string{mRSSIdle, mRSSIdleSized, mRSSHit, mRSS100k, mBytesPerEntry, mBytesFill, mBytesPrealloc, mBinary, mImage}
	for _, n := range names {
		s := specs[n]
		ft := o.forTarget(n)
		for _, ph := range allPhases {
			if want := s.phases == nil || slices.Contains(s.phases, ph); ft.has(ph) != want {
				t.Errorf("%s: phase %s runs: %v, want %v", n, ph, ft.has(ph), want)
			}
		}
		if want := s.phases == nil || slices.Contains(s.phases, phIdle); slices.Contains(idle, n) != want {
			t.Errorf("%s: in the idle run: %v, want %v", n, !want, want)
		}
		if size, ok := sizes[n]; ok == s.reference || ok && size != 1234 {
			t.Errorf("%s (reference %v): binary size %v, %v", n, s.reference, size, ok)
		}
		for _, m := range footprint {
			if s.reports(m) == s.reference {
				t.Errorf("%s (reference %v): reports %s: %v", n, s.reference, m, s.reports(m))
			}
		}
		if !s.reports(mMissConcQPerCPU) {
			t.Errorf("%s: a miss CPU figure is reported by every target", n)
		}
		if v := version(n, filepath.Join(t.TempDir(), "absent")); strings.HasPrefix(v, "built from ") != s.reference {
			t.Errorf("%s (reference %v): version %q", n, s.reference, v)
		}
		if s.reference && n != "floor2" {
			// The version line says which tree it was built from: that tree must exist.
			pkg, _, _ := strings.Cut(s.source, " ")
			if _, err := os.Stat(filepath.Join(strings.TrimPrefix(pkg, "e2e/bench/"), "main.go")); err != nil {
				t.Errorf("%s: a reference is built from %s: %v", n, s.source, err)
			}
		}
	}
}

func TestProgressLowRates(t *testing.T) {
	got := progress(map[string]float64{mP50: 101, mR2kCPU: 4.5, mR200CPU: 9.75})
	if want := "p50 101 µs, 4.50 CPU s/100k at 2k q/s, 9.75 CPU s/100k at 200 q/s"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
