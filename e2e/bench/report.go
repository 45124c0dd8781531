package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strings"
)

// Metric keys, as they appear in the TSV.
const (
	mQPerCPU         = "hit_q_per_cpu_s"
	mHitQPS          = "hit_qps"
	mHitLost         = "hit_lost"
	mAllocsPerHit    = "go_allocs_per_hit"
	mP50             = "p50_us"
	mP99             = "p99_us"
	mP999            = "p999_us"
	mRateLost        = "rate_lost"
	mGenLag          = "gen_lag_p99_us"
	mCPUPer100k      = "cpu_s_per_100k"
	mWakeups         = "wakeups_per_q"
	mR2kP50          = "r2000_p50_us"
	mR2kP99          = "r2000_p99_us"
	mR2kLost         = "r2000_lost"
	mR2kLag          = "r2000_gen_lag_p99_us"
	mR2kCPU          = "r2000_cpu_s_per_100k"
	mR2kWakeups      = "r2000_wakeups_per_q"
	mR200P50         = "r200_p50_us"
	mR200P99         = "r200_p99_us"
	mR200Lost        = "r200_lost"
	mR200Lag         = "r200_gen_lag_p99_us"
	mR200CPU         = "r200_cpu_s_per_100k"
	mR200Wakeups     = "r200_wakeups_per_q"
	mIdleTicks       = "idle_cpu_ticks"
	mIdleCPUms       = "idle_cpu_ms"
	mIdleWakeups     = "idle_wakeups"
	mMissRateP50     = "miss_rate_p50_us"
	mMissRateP99     = "miss_rate_p99_us"
	mMissRateLost    = "miss_rate_lost"
	mMissRateLag     = "miss_rate_gen_lag_p99_us"
	mMissRateQPerCPU = "miss_rate_q_per_cpu_s"
	mMissConcP50     = "miss_conc_p50_us"
	mMissConcP99     = "miss_conc_p99_us"
	mMissConcQPS     = "miss_conc_qps"
	mMissConcLost    = "miss_conc_lost"
	mMissConcQPerCPU = "miss_conc_q_per_cpu_s"
	mMissQPS         = "miss_qps"
	mMissLost        = "miss_lost"
	mRSSIdle         = "rss_idle_bytes"
	mRSSIdleSized    = "rss_idle_sized_bytes"
	mRSSHit          = "rss_after_hit_bytes"
	mRSS100k         = "rss_after_100k_bytes"
	mBytesPerEntry   = "bytes_per_entry"
	mBytesFill       = "bytes_fill_per_entry"
	mBytesPrealloc   = "bytes_prealloc_per_slot"
	mFirstAnswer     = "first_answer_ms"
	mBinary          = "binary_bytes"
	mImage           = "image_bytes"
)

// metric describes one row of the table.
type metric struct {
	key, label string
	// better is "↑" (higher is better), "↓" or "" (information, no ratio).
	better string
	format func(float64) string
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case math.IsNaN(v):
		return "–"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func kilo(v float64) string {
	if math.IsNaN(v) || math.Abs(v) < 10000 {
		return num(v)
	}
	return num(v/1000) + "k"
}

func mib(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return num(v/(1<<20)) + " MiB"
}

var metrics = []metric{
	{mQPerCPU, "cache-hit queries per CPU-second", "↑", kilo},
	{mHitQPS, "cache-hit q/s at saturation", "↑", kilo},
	{mHitLost, "  lost in the hit run", "", num},
	{mAllocsPerHit, "  Go heap allocations per hit (go_memstats_mallocs_total)", "", num},
	{mP50, "latency p50 at fixed rate (µs)", "↓", num},
	{mP99, "latency p99 (µs)", "↓", num},
	{mP999, "latency p99.9 (µs)", "↓", num},
	{mRateLost, "  lost at fixed rate", "", num},
	{mGenLag, "  generator lag p99 (µs)", "", num},
	{mCPUPer100k, "CPU s per 100k queries (fixed rate)", "↓", num},
	{mWakeups, "  threads switched in per query", "", num},
	{mR2kCPU, "CPU s per 100k hits at 2,000 q/s", "↓", num},
	{mR2kP50, "latency p50 at 2,000 q/s (µs)", "↓", num},
	{mR2kP99, "latency p99 at 2,000 q/s (µs)", "↓", num},
	{mR2kLost, "  lost at 2,000 q/s", "", num},
	{mR2kLag, "  generator lag p99 (µs)", "", num},
	{mR2kWakeups, "  threads switched in per query", "", num},
	{mR200CPU, "CPU s per 100k hits at 200 q/s", "↓", num},
	{mR200P50, "latency p50 at 200 q/s (µs)", "↓", num},
	{mR200P99, "latency p99 at 200 q/s (µs)", "↓", num},
	{mR200Lost, "  lost at 200 q/s", "", num},
	{mR200Lag, "  generator lag p99 (µs)", "", num},
	{mR200Wakeups, "  threads switched in per query", "", num},
	{mIdleTicks, "CPU ticks while idle (no query, -idle-cpu-duration)", "↓", num},
	{mIdleCPUms, "  CPU ms while idle (schedstat)", "", num},
	{mIdleWakeups, "  threads switched in while idle", "", num},
	{mMissRateP50, "cache-miss latency p50 at fixed rate, upstream delayed (µs)", "↓", num},
	{mMissRateP99, "cache-miss latency p99 at fixed rate (µs)", "↓", num},
	{mMissRateLost, "  lost in the fixed-rate miss run", "", num},
	{mMissRateLag, "  generator lag p99 (µs)", "", num},
	{mMissRateQPerCPU, "cache-miss queries per CPU-second (fixed rate)", "↑", kilo},
	{mMissConcP50, "cache-miss latency p50, concurrent clients (µs)", "↓", num},
	{mMissConcP99, "cache-miss latency p99, concurrent clients (µs)", "↓", num},
	{mMissConcQPS, "cache-miss q/s, concurrent clients", "↑", kilo},
	{mMissConcLost, "  lost in the concurrent miss run", "", num},
	{mMissConcQPerCPU, "cache-miss queries per CPU-second (concurrent clients)", "↑", kilo},
	{mMissQPS, "cache-miss q/s (unique names)", "↑", kilo},
	{mMissLost, "  lost in the miss run", "", num},
	{mRSSIdle, "RSS idle (default cache size)", "↓", mib},
	{mRSSIdleSized, "RSS idle (cache sized for the miss run)", "↓", mib},
	{mRSSHit, "RSS after the hit run", "↓", mib},
	{mRSS100k, "RSS after the miss run", "↓", mib},
	{mBytesPerEntry, "bytes per cached entry", "↓", num},
	{mBytesFill, "  of which stored when filled", "", num},
	{mBytesPrealloc, "  of which per slot of capacity, at start", "", num},
	{mFirstAnswer, "exec to first answer (ms)", "↓", num},
	{mBinary, "binary size", "↓", mib},
	{mImage, "image size", "↓", mib},
}

// stat is the summary of one metric over the rounds.
type stat struct {
	median, min, max float64
	n                int
}

// summarize ignores NaN (a measurement that could not be taken).
func summarize(vs []float64) stat {
	var ok []float64
	for _, v := range vs {
		if !math.IsNaN(v) {
			ok = append(ok, v)
		}
	}
	if len(ok) == 0 {
		return stat{median: math.NaN(), min: math.NaN(), max: math.NaN()}
	}
	sort.Float64s(ok)
	s := stat{min: ok[0], max: ok[len(ok)-1], n: len(ok)}
	if h := len(ok) / 2; len(ok)%2 == 1 {
		s.median = ok[h]
	} else {
		s.median = (ok[h-1] + ok[h]) / 2
	}
	return s
}

func (s stat) cell(f func(float64) string) string {
	switch {
	case s.n == 0:
		return "–"
	case s.n == 1 || s.min == s.max:
		return f(s.median)
	default:
		return fmt.Sprintf("%s [%s–%s]", f(s.median), f(s.min), f(s.max))
	}
}

// median returns the median of key for target, NaN when absent.
func median(res map[string]map[string]stat, target, key string) float64 {
	if s, ok := res[target][key]; ok && s.n > 0 {
		return s.median
	}
	return math.NaN()
}

// bestPeer is the best median of key among peers (the highest when higherBetter, else the
// lowest) and whose it is; NaN and "" when no peer has it.
func bestPeer(res map[string]map[string]stat, key string, higherBetter bool, peers ...string) (float64, string) {
	v, who := math.NaN(), ""
	for _, p := range peers {
		m := median(res, p, key)
		if math.IsNaN(m) {
			continue
		}
		if math.IsNaN(v) || (higherBetter && m > v) || (!higherBetter && m < v) {
			v, who = m, p
		}
	}
	return v, who
}

// writeTable writes the main table: one row per metric, one column per target, then podns's
// ratio to each peer (podns ÷ peer, medians) and, with more than one peer, to the best of them
// on that row.
func writeTable(w io.Writer, targets []string, res map[string]map[string]stat) {
	hdr := []string{"metric", ""}
	hdr = append(hdr, targets...)
	var others, peers []string // a reference is a column and a ratio, never a peer
	for _, t := range targets {
		if t != "podns" {
			others = append(others, t)
			hdr = append(hdr, "podns/"+t)
			if !specs[t].reference {
				peers = append(peers, t)
			}
		}
	}
	withBest := len(peers) > 1 && slices.Contains(targets, "podns")
	if withBest {
		hdr = append(hdr, "podns/best peer")
	}
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(hdr, " | "), strings.Repeat("---|", len(hdr)))
	for _, m := range metrics {
		row := []string{m.label, m.better}
		any := false
		for _, t := range targets {
			s := res[t][m.key]
			any = any || s.n > 0
			row = append(row, s.cell(m.format))
		}
		if !any {
			continue
		}
		for _, p := range others {
			r := median(res, "podns", m.key) / median(res, p, m.key)
			if m.better == "" || math.IsNaN(r) || math.IsInf(r, 0) {
				row = append(row, "")
			} else {
				row = append(row, fmt.Sprintf("%.2f×", r))
			}
		}
		if withBest {
			cell := ""
			if m.better != "" {
				if v, who := bestPeer(res, m.key, m.better == "↑", peers...); who != "" {
					if r := median(res, "podns", m.key) / v; !math.IsNaN(r) && !math.IsInf(r, 0) {
						cell = fmt.Sprintf("%.2f× %s", r, who)
					}
				}
			}
			row = append(row, cell)
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
}

// check is one target of issue 7 or issue 12 (misses) with its verdict.
type check struct {
	name, podns, reference, ratio, verdict string
}

// checkTargets evaluates issue 7's targets and issue 12's miss targets on the medians. A target
// whose metric was not measured (its phase not run, or its peers skipped) is n/a.
func checkTargets(res map[string]map[string]stat) []check {
	var out []check
	cmp := func(name string, p, ref float64, refLabel string, factor float64, higherBetter bool, f func(float64) string) {
		if math.IsNaN(p) {
			return // its phase did not run (or failed every round): nothing to check
		}
		c := check{name: name, podns: f(p), reference: refLabel, verdict: "n/a", ratio: "–"}
		if math.IsNaN(ref) {
			c.reference = "– (peer not run)"
		}
		if !math.IsNaN(p) && !math.IsNaN(ref) && ref != 0 {
			r := p / ref
			c.ratio = fmt.Sprintf("%.2f×", r)
			if (higherBetter && r >= factor) || (!higherBetter && r <= factor) {
				c.verdict = "met"
			} else {
				c.verdict = "not met"
			}
		}
		out = append(out, c)
	}
	best := func(key string, higher bool, peers ...string) (float64, string) {
		return bestPeer(res, key, higher, peers...)
	}
	p := func(key string) float64 { return median(res, "podns", key) }

	v, who := best(mQPerCPU, true, "dnsmasq", "unbound")
	cmp("hit q/CPU-s ≥ 1.0× best of dnsmasq, unbound", p(mQPerCPU), v, who+" "+kilo(v), 1.0, true, kilo)
	v = median(res, "coredns", mQPerCPU)
	cmp("hit q/CPU-s ≥ 4× CoreDNS", p(mQPerCPU), v, "coredns "+kilo(v), 4.0, true, kilo)
	v, who = best(mP50, false, "coredns", "dnsmasq", "unbound")
	cmp("p50 at fixed rate ≤ best peer", p(mP50), v, who+" "+num(v)+" µs", 1.0, false, func(x float64) string { return num(x) + " µs" })
	us := func(x float64) string { return num(x) + " µs" }
	v, who = best(mMissRateP50, false, "coredns", "dnsmasq", "unbound")
	cmp("miss p50 at fixed rate ≤ 1.0× best peer", p(mMissRateP50), v, who+" "+us(v), 1.0, false, us)
	v, who = best(mMissRateP99, false, "coredns", "dnsmasq", "unbound")
	cmp("miss p99 at fixed rate ≤ 1.2× best peer", p(mMissRateP99), v, who+" "+us(v), 1.2, false, us)
	v, who = best(mMissRateQPerCPU, true, "coredns", "dnsmasq", "unbound")
	cmp("miss q/CPU-s at fixed rate ≥ best peer", p(mMissRateQPerCPU), v, who+" "+kilo(v), 1.0, true, kilo)
	v, who = best(mMissConcP50, false, "coredns", "dnsmasq", "unbound")
	cmp("miss p50, concurrent clients ≤ 1.0× best peer", p(mMissConcP50), v, who+" "+us(v), 1.0, false, us)
	v, who = best(mMissConcQPerCPU, true, "coredns", "dnsmasq", "unbound")
	cmp("miss q/CPU-s, concurrent clients ≥ best peer", p(mMissConcQPerCPU), v, who+" "+kilo(v), 1.0, true, kilo)
	// Issue 17: CPU per query at the rates pods really see, and an idle stub that stays idle.
	for _, c := range []struct{ key, rate string }{{mR2kCPU, "2,000"}, {mR200CPU, "200"}} {
		v, who = best(c.key, false, "coredns", "dnsmasq", "unbound")
		cmp("CPU per hit at "+c.rate+" q/s ≤ 1.2× best peer", p(c.key), v, who+" "+num(v)+" s/100k", 1.2, false,
			func(x float64) string { return num(x) + " s/100k" })
	}
	if t := p(mIdleTicks); !math.IsNaN(t) {
		c := check{name: "idle: no CPU tick without queries", podns: num(t) + " ticks", reference: "0 ticks", ratio: "–", verdict: "met"}
		if t > 0 {
			c.verdict = "not met"
		}
		out = append(out, c)
	}
	cmp("idle RSS ≤ 8 MiB", p(mRSSIdle), 8<<20, "8 MiB", 1.0, false, mib)
	cmp("bytes per cached entry ≤ 330", p(mBytesPerEntry), 330, "330", 1.0, false, num)
	cmp("first answer ≤ 20 ms after exec", p(mFirstAnswer), 20, "20 ms", 1.0, false, func(x float64) string { return num(x) + " ms" })
	return out
}

func writeChecks(w io.Writer, cs []check) {
	fmt.Fprintln(w, "| target (issues 7, 12, 17) | podns | reference | ratio | verdict |\n|---|---|---|---|---|")
	for _, c := range cs {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", c.name, c.podns, c.reference, c.ratio, c.verdict)
	}
}

// progress is the one-line summary of a target turn: the headline figure of each phase run.
func progress(v map[string]float64) string {
	var parts []string
	add := func(key, format string, f func(float64) string) {
		if x, ok := v[key]; ok {
			parts = append(parts, fmt.Sprintf(format, f(x)))
		}
	}
	add(mQPerCPU, "%s hit q/CPU-s", kilo)
	add(mP50, "p50 %s µs", num)
	add(mR2kCPU, "%s CPU s/100k at 2k q/s", num)
	add(mR200CPU, "%s CPU s/100k at 200 q/s", num)
	add(mMissRateP50, "miss p50/p99 %s", num)
	if x, ok := v[mMissRateP99]; ok {
		parts[len(parts)-1] += "/" + num(x) + " µs"
	}
	add(mMissConcP50, "concurrent miss p50 %s µs", num)
	add(mMissQPS, "miss %s q/s", kilo)
	if len(parts) == 0 {
		return "done"
	}
	return strings.Join(parts, ", ")
}
