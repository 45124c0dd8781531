package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// The bounds of the end-of-run checks, against the first sample (taken after the prefill filled
// the cache and the warm-up, with the load stopped and the stub settled, as the last one is).
const (
	// goroutineSlack: with no load the stub holds a fixed set of goroutines (listeners, HTTP,
	// timers) plus, per upstream connection still pooled, its reader. The samples are taken
	// after the pool's idle timeout, so the difference is the pool's state (at most a few
	// connections per upstream that have not yet hit their idle timer) — 2 upstreams × up to 4.
	goroutineSlack = 8
	// fdSlack: one FD per pooled upstream connection, same reasoning; plus one for a scrape
	// connection the HTTP server has not yet closed.
	fdSlack = 9
	// rssSlackFrac and rssSlackBytes: the cache is full at both samples, so what remains is the
	// Go heap's own cycle (GOGC=100: the heap may reach twice the live data between
	// collections) and pages the allocator has not yet returned to the kernel.
	rssSlackFrac  = 0.25
	rssSlackBytes = 4 << 20
)

// recorder classifies each finished lookup by whether it overlapped a fault window and keeps
// the counts.
type recorder struct {
	mu      sync.Mutex
	windows []window
	// [0]: lookups that overlapped no fault window; [1]: those that overlapped one.
	counts  [2][nKinds][nOutcomes]int64
	over1s  [2]int64
	maxDur  [2]time.Duration
	durOut  []float32 // seconds, lookups outside windows, for percentiles
	failOut []lookup  // the first failures outside windows
	slowOut []lookup  // the slowest lookups outside windows, slowest first
	// slowAfter counts the lookups outside windows that took over 1 s by how long after the
	// end of the last fault they started (slowAfterBounds); slowOneAttempt those of them that
	// sent a single attempt, whose own deadline is 1 s: only a stall of the load generator
	// itself (CPU starvation) makes such a lookup take over 1 s.
	slowAfter      [len(slowAfterBounds) + 1]int64
	slowOneAttempt int64
	lastAlive      time.Time // see alive
	iv             interval
}

// slowAfterBounds are the buckets of recorder.slowAfter: started within 1 s of a fault's
// end, within 3 s, within 10 s, later (or before any fault).
var slowAfterBounds = [...]time.Duration{time.Second, 3 * time.Second, 10 * time.Second}

// slowKept is how many of the slowest lookups outside fault windows the report lists.
const slowKept = 15

// interval is one row of the time series: the lookups that ended in it.
type interval struct {
	lookups, failedOut, failedIn, over1s int64
	inFault                              bool // a fault window overlapped the interval
}

type seriesRow struct {
	interval
	sample
	err string
}

func newRecorder() *recorder { return &recorder{} }

func (r *recorder) openWindow(f faultSpec) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windows = append(r.windows, window{faultSpec: f, start: time.Now()})
	r.iv.inFault = true
	return len(r.windows) - 1
}

func (r *recorder) closeWindow(i int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.windows[i].end = time.Now()
}

// overlapping is the index of the latest window that [start, end] meets, -1 if none; an open
// window (end zero) lasts until now.
func overlapping(ws []window, start, end time.Time) int {
	best := -1
	for i, w := range ws {
		if (w.end.IsZero() || !w.end.Before(start)) && !w.start.After(end) {
			if best < 0 || w.start.After(ws[best].start) {
				best = i
			}
		}
	}
	return best
}

// hostStall is the window kind of a stall of the soak process itself.
var hostStall = faultSpec{"host-stall", "soak process"}

// stallThreshold is the longest the soak process may go unscheduled before the time counts as
// a host stall: half the resolver's 1 s attempt.
const stallThreshold = 500 * time.Millisecond

// alive notes that the soak process ran at now. A gap over stallThreshold since the last note
// is recorded as a host-stall window: the load generator and the fault proxies both live in
// this process, so while it is not scheduled (the host's CPUs starved by other work) the
// upstreams are as good as black-holed and the lookups' own clocks run late, through no fault
// of the stub. Called by a 50 ms ticker and by every lookup as it is recorded, so that a
// lookup recorded right after a stall, before the ticker runs, is classified with it.
func (r *recorder) alive(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.aliveLocked(now)
}

func (r *recorder) aliveLocked(now time.Time) {
	if !r.lastAlive.IsZero() && now.Sub(r.lastAlive) > stallThreshold {
		r.windows = append(r.windows, window{faultSpec: hostStall, start: r.lastAlive, end: now})
	}
	if now.After(r.lastAlive) {
		r.lastAlive = now
	}
}

func (r *recorder) add(l lookup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.aliveLocked(time.Now())
	in := 0
	wi := overlapping(r.windows, l.start, l.end)
	if wi >= 0 {
		in = 1
		r.windows[wi].lookups++
		if l.outcome != oOK {
			r.windows[wi].failed++
		}
		if l.end.Sub(l.start) > time.Second {
			r.windows[wi].over1s++
		}
	}
	r.counts[in][l.kind][l.outcome]++
	d := l.end.Sub(l.start)
	if d > time.Second {
		r.over1s[in]++
		if in == 0 {
			r.slowAfter[afterBucket(r.windows, l.start)]++
			if l.attempts == 1 {
				r.slowOneAttempt++
			}
		}
		r.iv.over1s++
	}
	r.maxDur[in] = max(r.maxDur[in], d)
	r.iv.lookups++
	if l.outcome != oOK {
		if in == 1 {
			r.iv.failedIn++
		} else {
			r.iv.failedOut++
			if len(r.failOut) < 50 {
				r.failOut = append(r.failOut, l)
			}
		}
	}
	if in == 0 {
		r.durOut = append(r.durOut, float32(d.Seconds()))
		if len(r.slowOut) < slowKept || d > r.slowOut[len(r.slowOut)-1].end.Sub(r.slowOut[len(r.slowOut)-1].start) {
			i := sort.Search(len(r.slowOut), func(i int) bool { return r.slowOut[i].end.Sub(r.slowOut[i].start) < d })
			r.slowOut = slices.Insert(r.slowOut, i, l)
			if len(r.slowOut) > slowKept {
				r.slowOut = r.slowOut[:slowKept]
			}
		}
	}
}

// afterBucket is the slowAfterBounds bucket of a lookup outside windows that started at t.
func afterBucket(ws []window, t time.Time) int {
	var last time.Time
	for _, w := range ws {
		if !w.end.IsZero() && !w.end.After(t) && w.end.After(last) {
			last = w.end
		}
	}
	if !last.IsZero() {
		for b, bound := range slowAfterBounds {
			if t.Sub(last) < bound {
				return b
			}
		}
	}
	return len(slowAfterBounds)
}

// takeInterval returns the counts since the last call and starts a new interval.
func (r *recorder) takeInterval() seriesRow {
	r.mu.Lock()
	defer r.mu.Unlock()
	row := seriesRow{interval: r.iv}
	open := len(r.windows) > 0 && r.windows[len(r.windows)-1].end.IsZero()
	r.iv = interval{inFault: open}
	return row
}

// result is everything one soak measured.
type result struct {
	cfg                config
	started, ended     time.Time
	loadStart, loadEnd string
	stubPID            int
	alive              bool   // the stub was still running at the end (the one started)
	cleanExit          bool   // it exited 0 on SIGTERM after the soak
	exit               string // its exit status
	stubLog            string // the end of its log
	stubMetrics        string // its /metrics at the end
	first, last        sample
	skipped            int64 // lookups the generator could not start (too many in flight)

	mu     sync.Mutex
	series []seriesRow

	windows []window
	counts  [2][nKinds][nOutcomes]int64
	over1s  [2]int64
	maxDur  [2]time.Duration
	durOut  []float32
	failOut []lookup
	slowOut []lookup
	// see recorder
	slowAfter      [len(slowAfterBounds) + 1]int64
	slowOneAttempt int64
	stall          stallStats
	garbage        garbageStats
	cuts           int64
	dropped        int64
}

func (res *result) collect(s *soak) {
	r := s.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	res.windows = slices.Clone(r.windows)
	res.counts, res.over1s, res.maxDur = r.counts, r.over1s, r.maxDur
	res.durOut, res.failOut, res.slowOut = r.durOut, r.failOut, r.slowOut
	res.slowAfter, res.slowOneAttempt = r.slowAfter, r.slowOneAttempt
	for _, p := range s.proxies {
		res.cuts += p.cuts.Load()
		res.dropped += p.dropped.Load()
	}
}

func (res *result) total(in int) (n, failed int64, by [nOutcomes]int64) {
	for k := range nKinds {
		for o := range nOutcomes {
			v := res.counts[in][k][o]
			n += v
			by[o] += v
			if outcome(o) != oOK {
				failed += v
			}
		}
	}
	return
}

// check is one target of the soak and whether the run met it.
type check struct {
	name, start, end, target string
	ok                       bool
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func (res *result) checks() []check {
	_, failedOut, _ := res.total(0)
	var cs []check
	cs = append(cs, check{"failed lookups outside fault windows and host stalls", "", strconv.FormatInt(failedOut, 10), "0", failedOut == 0})
	cs = append(cs, check{"stub alive at the end (same PID)", strconv.Itoa(res.stubPID), map[bool]string{true: "alive", false: "exited"}[res.alive], "alive", res.alive})
	if !res.alive {
		return cs
	}
	rssMax := res.first.rss*(1+rssSlackFrac) + rssSlackBytes
	cs = append(cs,
		check{"RSS", mib(res.first.rss), mib(res.last.rss), "≤ " + mib(rssMax), res.last.rss <= rssMax},
		check{"goroutines", fmt.Sprint(res.first.goroutines), fmt.Sprint(res.last.goroutines), fmt.Sprintf("≤ start + %d", goroutineSlack), res.last.goroutines <= res.first.goroutines+goroutineSlack},
		check{"open FDs", strconv.Itoa(res.first.fds), strconv.Itoa(res.last.fds), fmt.Sprintf("≤ start + %d", fdSlack), res.last.fds <= res.first.fds+fdSlack},
	)
	nc := res.stall.notClosed.Load()
	cs = append(cs, check{"stalled TCP clients the stub never closed", "", strconv.FormatInt(nc, 10), "0", nc == 0})
	res.garbage.mu.Lock()
	wrong := len(res.garbage.badNameWrong)
	res.garbage.mu.Unlock()
	cs = append(cs, check{"malformed queries answered other than FORMERR", "", strconv.Itoa(wrong), "0", wrong == 0})
	return cs
}

func failedChecks(cs []check) []string {
	var out []string
	for _, c := range cs {
		if !c.ok {
			out = append(out, fmt.Sprintf("%s: %s (target %s)", c.name, c.end, c.target))
		}
	}
	return out
}

func quantile(ds []float32, q float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return float64(s[max(0, min(i, len(s)-1))])
}

// summary is the short table printed at the end and put at the top of the results file.
func (res *result) summary(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "figure\tstart\tend\ttarget\tverdict")
	for _, c := range res.checks() {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.name, c.start, c.end, c.target, map[bool]string{true: "met", false: "NOT MET"}[c.ok])
	}
	nOut, fOut, _ := res.total(0)
	nIn, fIn, _ := res.total(1)
	fmt.Fprintf(tw, "lookups outside fault windows\t\t%d\t\t\n", nOut)
	fmt.Fprintf(tw, "lookups overlapping a fault or host stall\t\t%d (%d failed)\t(reported)\t\n", nIn, fIn)
	var stalls int
	var stalled time.Duration
	for _, w := range res.windows {
		if w.faultSpec == hostStall {
			stalls++
			stalled += w.end.Sub(w.start)
		}
	}
	fmt.Fprintf(tw, "host stalls over %v (soak process not run)\t\t%d, %v in all\t(reported)\t\n", stallThreshold, stalls, stalled.Round(time.Millisecond))
	fmt.Fprintf(tw, "lookups over 1 s, outside / inside\t\t%d / %d\t(reported)\t\n", res.over1s[0], res.over1s[1])
	fmt.Fprintf(tw, "p99 / max outside fault windows\t\t%.1f ms / %.0f ms\t(reported)\t\n", quantile(res.durOut, 0.99)*1000, res.maxDur[0].Seconds()*1000)
	_ = fOut
	tw.Flush()
}

// markdown writes the results file.
func (res *result) markdown(w io.Writer) {
	c := res.cfg
	fmt.Fprintf(w, "# podns soak, %s\n\n", res.started.Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "Faulted phase %v (whole run %v), %d lookups/s, prefill %d names, warm-up %v; faults %v each with %v of load between; restart down %v; slow %v, mild slow %v; %d stalled TCP clients; %d garbage packets/s. Load average at start %s, at end %s (%d CPUs).\n\n",
		c.duration, res.ended.Sub(res.started).Round(time.Second), c.rate, c.prefill, c.warmup, c.faultLen, c.gap, c.restartDown, c.slowDelay, c.mildDelay, c.stallers, c.garbageRate, res.loadStart, res.loadEnd, numCPU())
	fmt.Fprintf(w, "```\n")
	res.summary(w)
	fmt.Fprintf(w, "```\n\nStub exit after SIGTERM: %s.\n\n", res.exit)

	fmt.Fprintf(w, "## Lookups by kind\n\nA lookup is what a libc resolver does with `timeout:1 attempts:3`: up to three 1 s attempts over UDP, TCP after a truncated reply. It fails on SERVFAIL, on no answer after the third attempt, or on an answer other than the zone's (rcode or records).\n\n")
	fmt.Fprintf(w, "| kind | share | outside: lookups | outside: failed | inside: lookups | inside: failed (servfail/timeout/wrong/error) |\n|---|---|---|---|---|---|\n")
	for k := range nKinds {
		var n [2]int64
		var f [2][nOutcomes]int64
		for in := range 2 {
			for o := range nOutcomes {
				n[in] += res.counts[in][k][o]
				f[in][o] = res.counts[in][k][o]
			}
		}
		failed := func(in int) int64 { return n[in] - f[in][oOK] }
		fmt.Fprintf(w, "| %s | %d %% | %d | %d | %d | %d (%d/%d/%d/%d) |\n", kind(k), mix[k], n[0], failed(0), n[1], failed(1), f[1][oServfail], f[1][oTimeout], f[1][oWrong], f[1][oError])
	}
	fmt.Fprintf(w, "\nLookups over 1 s: %d outside fault windows, %d inside. Longest: %v outside, %v inside. Latency outside fault windows: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms. Lookups the generator could not start (4096 in flight): %d.\n\n",
		res.over1s[0], res.over1s[1], res.maxDur[0].Round(time.Millisecond), res.maxDur[1].Round(time.Millisecond),
		quantile(res.durOut, 0.5)*1000, quantile(res.durOut, 0.99)*1000, quantile(res.durOut, 0.999)*1000, res.skipped)

	fmt.Fprintf(w, "Lookups over 1 s outside fault windows, by when they started: within 1 s of a fault's end %d, 1-3 s after %d, 3-10 s after %d, later %d. Of them, %d sent one attempt only (its deadline is 1 s): the load generator itself was stalled (CPU starvation), not the stub.\n\n",
		res.slowAfter[0], res.slowAfter[1], res.slowAfter[2], res.slowAfter[3], res.slowOneAttempt)
	fmt.Fprintf(w, "## Fault windows\n\nA lookup that overlaps several windows is counted in the latest.\n\n| fault | upstream | windows | total time | longest | lookups | failed | over 1 s |\n|---|---|---|---|---|---|---|---|\n")
	type agg struct {
		n                      int
		total, max             time.Duration
		lookups, failed, over1 int64
	}
	byFault := map[faultSpec]*agg{}
	for _, wd := range res.windows {
		a := byFault[wd.faultSpec]
		if a == nil {
			a = &agg{}
			byFault[wd.faultSpec] = a
		}
		d := wd.end.Sub(wd.start)
		a.n++
		a.total += d
		a.max = max(a.max, d)
		a.lookups += wd.lookups
		a.failed += wd.failed
		a.over1 += wd.over1s
	}
	for _, f := range append(slices.Clone(faultLoop), hostStall) {
		if a := byFault[f]; a != nil {
			fmt.Fprintf(w, "| %s | %s | %d | %v | %v | %d | %d | %d |\n", f.fault, f.target, a.n, a.total.Round(time.Millisecond), a.max.Round(time.Millisecond), a.lookups, a.failed, a.over1)
		}
	}
	fmt.Fprintf(w, "\nA host stall is a time over %v in which the soak process (load generator and fault proxies) was not run: the host's CPUs were taken by other work. Upstream A is the stub's first (preferred) upstream. TCP connections cut by the proxy: %d; messages black-holed: %d.\n\n", stallThreshold, res.cuts, res.dropped)

	fmt.Fprintf(w, "## Failed lookups outside fault windows\n\n")
	if len(res.failOut) == 0 {
		fmt.Fprintf(w, "None.\n\n")
	} else {
		fmt.Fprintf(w, "| start (s) | took | kind | name | outcome | detail | nearest window |\n|---|---|---|---|---|---|---|\n")
		for _, l := range res.failOut {
			fmt.Fprintf(w, "| %.3f | %v | %s | %s | %s | %s | %s |\n", l.start.Sub(res.started).Seconds(), l.end.Sub(l.start).Round(time.Millisecond), l.kind, l.name, l.outcome, l.detail, res.nearest(l))
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintf(w, "## Slowest lookups outside fault windows\n\n| start (s) | took | kind | name | attempts | nearest window |\n|---|---|---|---|---|---|\n")
	for _, l := range res.slowOut {
		fmt.Fprintf(w, "| %.3f | %v | %s | %s | %d | %s |\n", l.start.Sub(res.started).Seconds(), l.end.Sub(l.start).Round(time.Millisecond), l.kind, l.name, l.attempts, res.nearest(l))
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "## Stalled TCP clients and garbage\n\n")
	fmt.Fprintf(w, "Stalled TCP clients (partial length prefix, or a prefix and part of a message): %d opened, %d closed by the stub (longest wait %v), %d never closed within %v.\n\n",
		res.stall.opened.Load(), res.stall.closedByStub.Load(), time.Duration(res.stall.maxWaitNs.Load()).Round(time.Millisecond), res.stall.notClosed.Load(), stallHold)
	res.garbage.mu.Lock()
	fmt.Fprintf(w, "Random bytes: %s. Malformed queries (unreadable name): %s.\n", fmtCounts(res.garbage.random), fmtCounts(res.garbage.badName))
	for _, s := range res.garbage.badNameWrong {
		fmt.Fprintf(w, "- %s\n", s)
	}
	res.garbage.mu.Unlock()
	fmt.Fprintln(w)

	fmt.Fprintf(w, "## Stub counters at the end\n\n")
	for _, name := range []string{"podns_cache_stale_served_total", "podns_upstream_reconnects_total", "podns_upstream_errors_total", "podns_overload_total", "podns_dropped_total", "podns_coalesced_total", "podns_cache_entries", "podns_cache_evictions_total"} {
		fmt.Fprintf(w, "- `%s` %s\n", name, sumMetric(res.stubMetrics, name))
	}
	fmt.Fprintf(w, "\nTime series (every %v): the `.tsv` file next to this one.\n", c.sampleEvery)
}

// nearest describes the fault window closest in time to l.
func (res *result) nearest(l lookup) string {
	best, bestD := -1, time.Duration(math.MaxInt64)
	for i, w := range res.windows {
		var d time.Duration
		switch {
		case l.end.Before(w.start):
			d = w.start.Sub(l.end)
		case l.start.After(w.end):
			d = l.start.Sub(w.end)
		}
		if d < bestD {
			best, bestD = i, d
		}
	}
	if best < 0 {
		return "none"
	}
	w := res.windows[best]
	rel := "before"
	if l.start.After(w.end) {
		rel = "after"
	}
	return fmt.Sprintf("%s %s, %v %s", w.fault, w.target, bestD.Round(time.Millisecond), rel)
}

func fmtCounts(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none sent"
	}
	return strings.Join(parts, ", ")
}

// sumMetric sums every series of the metric name (all label sets), "n/a" when absent.
func sumMetric(text, name string) string {
	sum, found := 0.0, false
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest == "" || (rest[0] != ' ' && rest[0] != '{')) {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum += v
			found = true
		}
	}
	if !found {
		return "n/a"
	}
	return strconv.FormatFloat(sum, 'f', -1, 64)
}

// tsv writes the time series.
func (res *result) tsv(w io.Writer) {
	fmt.Fprintln(w, "t_s\tlookups\tfailed_outside\tfailed_inside\tover_1s\tin_fault\trss_mib\theap_inuse_mib\tgoroutines\tfds\terror")
	res.mu.Lock()
	defer res.mu.Unlock()
	for _, r := range res.series {
		fmt.Fprintf(w, "%.0f\t%d\t%d\t%d\t%d\t%t\t%.1f\t%.1f\t%.0f\t%d\t%s\n", r.at.Sub(res.started).Seconds(), r.lookups, r.failedOut, r.failedIn, r.over1s, r.inFault, r.rss/(1<<20), r.heapInuse/(1<<20), r.goroutines, r.fds, r.err)
	}
}

// writeFiles writes <dir>/<date>.md and .tsv and returns the markdown's path.
func (res *result) writeFiles(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	base := filepath.Join(dir, res.started.Format("2006-01-02T15-04-05"))
	var md, ts strings.Builder
	res.markdown(&md)
	res.tsv(&ts)
	if err := os.WriteFile(base+".md", []byte(md.String()), 0o644); err != nil {
		return "", err
	}
	return base + ".md", os.WriteFile(base+".tsv", []byte(ts.String()), 0o644)
}
