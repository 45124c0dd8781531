package main

import (
	"math"
	"strings"
	"testing"
	"time"
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

func TestParseVmRSS(t *testing.T) {
	got, err := parseVmRSS("Name:\tstub\nVmHWM:\t 9000 kB\nVmRSS:\t    6144 kB\nRssAnon:\t 1 kB\n")
	if err != nil || got != 6144*1024 {
		t.Fatalf("got %v, %v; want %v", got, err, 6144*1024)
	}
	if _, err := parseVmRSS("Name:\tkthreadd\n"); err == nil {
		t.Error("no VmRSS line: want an error")
	}
	if _, err := parseVmRSS("VmRSS:\t 12 MB\n"); err == nil {
		t.Error("unknown unit: want an error")
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
