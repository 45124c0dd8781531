// Command bench is podns's peer benchmark (issue 7, `make bench`): on loopback it starts a fast
// upstream (CoreDNS serving a generated zone and a template zone) and, one at a time, each
// forwarder under test — podns's stub, CoreDNS with NodeLocal DNSCache's config, dnsmasq,
// unbound — and measures cache-hit efficiency, latency at a fixed rate, cache-miss throughput,
// memory and start-up time. Servers run on CPU 0, load generators on CPU 1. Results go to
// bench-results/ as markdown and TSV, and the table is printed. See e2e/bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podns/podns/e2e/internal/proc"
)

// options are the command-line knobs; defaults are in parseOptions.
type options struct {
	targets   []string
	rounds    int
	hitNames  int
	missNames int
	hitDur    time.Duration
	rate      int
	rateDur   time.Duration
	missLimit time.Duration
	idle      time.Duration
	out       string
	stub      string
	serverCPU int
	genCPU    int

	// phases selects the parts of a target turn that run (see allPhases).
	phases map[string]bool
	// The fixed-rate cache-miss run: never-seen names at missRate for missRateDur from
	// missSockets sockets, the upstream delaying each answer by missDelay.
	missRate    int
	missRateDur time.Duration
	missSockets int
	missDelay   time.Duration
	// The concurrent-miss run: missClients closed-loop clients for missConcDur, no delay.
	missClients int
	missConcDur time.Duration
	// The cache-hit runs at the rates pods really see (phases rate2000 and rate200), each this
	// long.
	lowRateDur time.Duration
	// idleCPUDur is how long every target sits with no query in the idle phase.
	idleCPUDur time.Duration
}

// Phases of a target turn, in the order they run; -phases selects some of them.
const (
	phIdle     = "idle"     // CPU with no query for -idle-cpu-duration, every target at once, per round
	phStartup  = "startup"  // exec to first answer and idle RSS at the default cache size
	phHit      = "hit"      // saturating cache-hit run
	phRate     = "rate"     // fixed-rate cache-hit latency run at -rate
	phRate2000 = "rate2000" // fixed-rate cache-hit run at 2,000 q/s: CPU per query, p50, p99
	phRate200  = "rate200"  // the same at 200 q/s
	phMissRate = "missrate" // fixed-rate cache-miss latency run, upstream delayed
	phMissConc = "missconc" // concurrent-client cache-miss run
	phMiss     = "miss"     // dnsperf cache-miss throughput run, and bytes per entry
)

var allPhases = []string{phIdle, phStartup, phHit, phRate, phRate2000, phRate200, phMissRate, phMissConc, phMiss}

// has reports whether phase ph runs.
func (o *options) has(ph string) bool { return o.phases[ph] }

// forTarget is o as target t runs it: only the phases of its spec.
func (o *options) forTarget(t string) *options {
	spec := specs[t]
	if spec.phases == nil {
		return o
	}
	c := *o
	c.phases = map[string]bool{}
	for _, ph := range spec.phases {
		c.phases[ph] = o.phases[ph]
	}
	return &c
}

// idleTargets are the targets that run the idle phase.
func idleTargets(targets []string) []string {
	return slices.DeleteFunc(slices.Clone(targets), func(t string) bool { return !specs[t].runs(phIdle) })
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "loadgen" {
		if err := loadgenMain(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		return
	}
	opts, err := parseOptions(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	targets := fs.String("targets", strings.Join(allTargets, ","), "comma-separated targets to run: podns, coredns, dnsmasq, unbound; also relay, the Go floor of a miss, and relay-udp, the same over UDP (miss phases only)")
	quick := fs.Bool("quick", false, "one round, 2 s runs, 20,000 miss names: for iterating on one target (flags given as well keep their values)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each round runs every target once, in a rotated order (1..20)")
	fs.IntVar(&o.hitNames, "hit-names", 1000, "names in the upstream zone, asked in the hit runs (1..50000)")
	fs.IntVar(&o.missNames, "miss-names", 100000, "unique names in the miss run, which also fills the cache for bytes per entry (1000..1000000)")
	fs.DurationVar(&o.hitDur, "hit-duration", 4*time.Second, "length of the saturating cache-hit run (1s..60s)")
	fs.IntVar(&o.rate, "rate", 5000, "fixed query rate of the latency run, q/s (100..100000)")
	fs.DurationVar(&o.rateDur, "rate-duration", 4*time.Second, "length of the fixed-rate run (1s..60s)")
	fs.DurationVar(&o.missLimit, "miss-limit", 15*time.Second, "time limit of the miss run (1s..120s)")
	fs.DurationVar(&o.idle, "idle", 500*time.Millisecond, "wait after the first answer before reading idle RSS (0..10s)")
	fs.StringVar(&o.out, "out", "bench-results", "directory for the markdown and TSV results")
	fs.StringVar(&o.stub, "stub", "bin/stub", "podns stub binary")
	fs.IntVar(&o.serverCPU, "server-cpu", 0, "CPU the server under test is pinned to")
	fs.IntVar(&o.genCPU, "gen-cpu", 1, "CPU the load generators and the upstream are pinned to")
	phases := fs.String("phases", strings.Join(allPhases, ","), "comma-separated phases of each target turn: "+strings.Join(allPhases, ", "))
	fs.IntVar(&o.missRate, "miss-rate", 2000, "fixed query rate of the cache-miss latency run, q/s (100..20000)")
	fs.DurationVar(&o.missRateDur, "miss-rate-duration", 4*time.Second, "length of the fixed-rate cache-miss run (1s..60s)")
	fs.IntVar(&o.missSockets, "miss-sockets", 10, "client sockets the fixed-rate cache-miss run sends from, in turn (1..100)")
	fs.DurationVar(&o.missDelay, "miss-delay", time.Millisecond, "delay the upstream adds to every answer of the fixed-rate cache-miss run (0..100ms)")
	fs.IntVar(&o.missClients, "miss-clients", 10, "closed-loop clients of the concurrent cache-miss run (1..100)")
	fs.DurationVar(&o.missConcDur, "miss-clients-duration", 3*time.Second, "length of the concurrent cache-miss run (1s..60s)")
	fs.DurationVar(&o.lowRateDur, "low-rate-duration", 8*time.Second, "length of each cache-hit run at 2,000 and 200 q/s (1s..60s)")
	fs.DurationVar(&o.idleCPUDur, "idle-cpu-duration", time.Minute, "how long the idle phase leaves every target without a query (1s..10m)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *quick {
		// -quick shortens what the command line leaves at its default: -quick -rounds 5 is five
		// short rounds, not one.
		given := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
		for name, v := range map[string]string{
			"rounds": "1", "hit-duration": "2s", "rate-duration": "2s", "miss-names": "20000",
			"miss-rate-duration": "2s", "miss-clients-duration": "2s", "low-rate-duration": "3s",
			"idle-cpu-duration": "10s",
		} {
			if !given[name] {
				if err := fs.Set(name, v); err != nil {
					return nil, err
				}
			}
		}
	}
	o.phases = map[string]bool{}
	for _, ph := range strings.Split(*phases, ",") {
		ph = strings.TrimSpace(strings.ToLower(ph))
		if !slices.Contains(allPhases, ph) {
			return nil, fmt.Errorf("-phases: unknown phase %q (want %s)", ph, strings.Join(allPhases, ", "))
		}
		o.phases[ph] = true
	}
	seen := map[string]bool{}
	for _, t := range strings.Split(*targets, ",") {
		t = strings.TrimSpace(strings.ToLower(t))
		if _, ok := specs[t]; !ok {
			return nil, fmt.Errorf("-targets: unknown target %q (want podns, coredns, dnsmasq, unbound, relay, relay-udp)", t)
		}
		if !seen[t] {
			seen[t] = true
		}
	}
	var skipped []string
	for _, t := range targetOrder { // keep the table's order whatever the flag's order
		if !seen[t] {
			continue
		}
		// Started, it would be measured in nothing: a column of "–" and a wasted start.
		if !slices.ContainsFunc(allPhases, o.forTarget(t).has) {
			fmt.Fprintf(stderr, "SKIPPED %s: it runs only in phases %s, and -phases selects none of them\n", t, strings.Join(specs[t].phases, ", "))
			skipped = append(skipped, t)
			continue
		}
		o.targets = append(o.targets, t)
	}
	if len(o.targets) == 0 {
		return nil, fmt.Errorf("-targets: none of %s runs in -phases %s", strings.Join(skipped, ", "), *phases)
	}
	for _, r := range []struct {
		name    string
		v, a, b int64
	}{
		{"-rounds", int64(o.rounds), 1, 20},
		{"-hit-names", int64(o.hitNames), 1, 50000},
		{"-miss-names", int64(o.missNames), 1000, 1000000},
		{"-hit-duration", int64(o.hitDur), int64(time.Second), int64(time.Minute)},
		{"-rate", int64(o.rate), 100, 100000},
		{"-rate-duration", int64(o.rateDur), int64(time.Second), int64(time.Minute)},
		{"-miss-limit", int64(o.missLimit), int64(time.Second), int64(2 * time.Minute)},
		{"-idle", int64(o.idle), 0, int64(10 * time.Second)},
		{"-miss-rate", int64(o.missRate), 100, 20000},
		{"-miss-rate-duration", int64(o.missRateDur), int64(time.Second), int64(time.Minute)},
		{"-miss-sockets", int64(o.missSockets), 1, 100},
		{"-miss-delay", int64(o.missDelay), 0, int64(100 * time.Millisecond)},
		{"-miss-clients", int64(o.missClients), 1, 100},
		{"-miss-clients-duration", int64(o.missConcDur), int64(time.Second), int64(time.Minute)},
		{"-low-rate-duration", int64(o.lowRateDur), int64(time.Second), int64(time.Minute)},
		{"-idle-cpu-duration", int64(o.idleCPUDur), int64(time.Second), int64(10 * time.Minute)},
	} {
		if r.v < r.a || r.v > r.b {
			return nil, fmt.Errorf("%s out of range", r.name)
		}
	}
	return o, nil
}

// bench holds what one invocation shares between targets and rounds.
type bench struct {
	opts     *options
	procs    *proc.Set
	tmp      string
	dnsperf  string
	self     string
	upstream netip.AddrPort
	hitNames []string
}

func run(ctx context.Context, o *options, stdout io.Writer) (err error) {
	started := time.Now()
	var cpus unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cpus); err != nil {
		return err
	}
	if !cpus.IsSet(o.serverCPU) || !cpus.IsSet(o.genCPU) || o.serverCPU == o.genCPU {
		return fmt.Errorf("need two distinct usable CPUs (-server-cpu %d, -gen-cpu %d; %d available)", o.serverCPU, o.genCPU, cpus.Count())
	}
	b := &bench{opts: o, procs: &proc.Set{}}
	if b.dnsperf, err = lookBin("dnsperf"); err != nil {
		return errors.New("dnsperf not found: apt-get install dnsperf")
	}
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	bins := map[string]string{}
	var targets []string
	for _, t := range o.targets {
		p, err := specs[t].find(o)
		if err != nil {
			fmt.Fprintf(stdout, "SKIPPED %s: %v\n", t, err)
			continue
		}
		if p, err = filepath.Abs(p); err != nil {
			return err
		}
		bins[t] = p
		targets = append(targets, t)
	}
	if len(targets) == 0 {
		return errors.New("no target can run")
	}
	corednsBin, err := specs["coredns"].find(o)
	if err != nil {
		return fmt.Errorf("the upstream needs CoreDNS: %w", err)
	}
	if corednsBin, err = filepath.Abs(corednsBin); err != nil {
		return err
	}

	if b.tmp, err = os.MkdirTemp("", "podns-bench-"); err != nil {
		return err
	}
	// Cleanup runs whatever happened: every process killed by PID and reaped, the temp dir
	// removed, and both asserted.
	defer func() {
		b.procs.StopAll()
		cerr := b.procs.AssertNoneRunning()
		if rerr := os.RemoveAll(b.tmp); rerr != nil {
			cerr = errors.Join(cerr, rerr)
		} else if _, serr := os.Stat(b.tmp); serr == nil {
			cerr = errors.Join(cerr, fmt.Errorf("temp dir %s still exists", b.tmp))
		}
		if cerr != nil {
			err = errors.Join(err, fmt.Errorf("cleanup: %w", cerr))
		} else {
			fmt.Fprintf(stdout, "cleanup: all %d processes started were stopped and reaped; temp dir removed\n", b.procs.Len())
		}
	}()
	if b.hitNames, err = writeZone(b.tmp, o.hitNames, o.missNames); err != nil {
		return err
	}
	if err := b.startUpstream(corednsBin); err != nil {
		return err
	}

	// raw[target][metric] has one value per round.
	raw := map[string]map[string][]float64{}
	var tsv strings.Builder
	stamp := started.UTC().Format("20060102T150405Z")
	tsv.WriteString("timestamp\tround\ttarget\tmetric\tvalue\n")
	var failures []string
	record := func(r int, t string, vals map[string]float64) {
		if raw[t] == nil {
			raw[t] = map[string][]float64{}
		}
		for _, m := range metrics {
			if v, ok := vals[m.key]; ok && specs[t].reports(m.key) {
				raw[t][m.key] = append(raw[t][m.key], v)
				fmt.Fprintf(&tsv, "%s\t%d\t%s\t%s\t%g\n", stamp, r+1, t, m.key, v)
			}
		}
	}
	for r := 0; r < o.rounds; r++ {
		if idle := idleTargets(targets); o.has(phIdle) && len(idle) > 0 {
			fmt.Fprintf(stdout, "round %d/%d: idle for %v (%s) ... ", r+1, o.rounds, o.idleCPUDur, strings.Join(idle, ", "))
			vals, err := b.runIdle(ctx, idle, bins, r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				fmt.Fprintf(stdout, "FAILED: %v\n", err)
				failures = append(failures, fmt.Sprintf("idle, round %d: %v", r+1, firstLine(err.Error())))
			} else {
				var parts []string
				for _, t := range idle {
					parts = append(parts, fmt.Sprintf("%s %s ticks", t, num(vals[t][mIdleTicks])))
					record(r, t, vals[t])
				}
				fmt.Fprintln(stdout, strings.Join(parts, ", "))
			}
		}
		// Rotate the order each round so that no target always runs right after the same one.
		for i := range targets {
			t := targets[(i+r)%len(targets)]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(stdout, "round %d/%d: %s ... ", r+1, o.rounds, t)
			vals, err := b.runTarget(ctx, t, bins[t], r)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				// One failed turn (a loaded machine can starve a server past a timeout) costs
				// that sample, not the whole run; the report lists it and the exit status is 1.
				fmt.Fprintf(stdout, "FAILED: %v\n", err)
				failures = append(failures, fmt.Sprintf("%s, round %d: %v", t, r+1, firstLine(err.Error())))
				continue
			}
			fmt.Fprintln(stdout, progress(vals))
			record(r, t, vals)
		}
	}
	// Sizes do not vary between rounds.
	for _, t := range targets {
		if raw[t] == nil {
			raw[t] = map[string][]float64{}
		}
	}
	for t, size := range binarySizes(targets, bins) {
		raw[t][mBinary] = []float64{size}
	}
	if img, ok := podnsImageSize(ctx); ok && raw["podns"] != nil {
		raw["podns"][mImage] = []float64{img}
	}
	res := map[string]map[string]stat{}
	for _, t := range targets {
		res[t] = map[string]stat{}
		for _, m := range metrics {
			k, vs := m.key, raw[t][m.key]
			if len(vs) == 0 {
				continue
			}
			s := summarize(vs)
			res[t][k] = s
			if k == mBinary || k == mImage {
				fmt.Fprintf(&tsv, "%s\t-\t%s\t%s\t%g\n", stamp, t, k, s.median)
			} else {
				fmt.Fprintf(&tsv, "%s\tmedian\t%s\t%s\t%g\n", stamp, t, k, s.median)
			}
		}
	}

	var md strings.Builder
	fmt.Fprintf(&md, "# podns peer benchmark, %s\n\n", started.UTC().Format(time.RFC3339))
	fmt.Fprintf(&md, "%s\n\n", b.describe(targets, bins))
	fmt.Fprintf(&md, "Medians of %d round(s), [min–max] when they differ; ratios are podns ÷ peer (medians).\n\n", o.rounds)
	writeTable(&md, targets, res)
	md.WriteString("\n")
	writeChecks(&md, checkTargets(res))
	for _, f := range failures {
		fmt.Fprintf(&md, "\nFAILED (sample missing): %s", f)
	}
	fmt.Fprintf(&md, "\nWall time: %s.\n", time.Since(started).Round(time.Second))

	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	mdPath := filepath.Join(o.out, "bench-"+stamp+".md")
	tsvPath := filepath.Join(o.out, "bench-"+stamp+".tsv")
	if err := os.WriteFile(mdPath, []byte(md.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(tsvPath, []byte(tsv.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\n%s\nwrote %s and %s\n", md.String(), mdPath, tsvPath)
	if len(failures) > 0 {
		return fmt.Errorf("%d target turn(s) failed; see above", len(failures))
	}
	return nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// describe is the environment line of the report: versions, CPUs, load.
func (b *bench) describe(targets []string, bins map[string]string) string {
	o := b.opts
	load := []string{"?", "?", "?"}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil && len(strings.Fields(string(b))) >= 3 {
		load = strings.Fields(string(b))[:3]
	}
	var vers []string
	for _, t := range targets {
		vers = append(vers, t+" "+version(t, bins[t]))
	}
	var ph []string
	for _, p := range allPhases {
		if o.has(p) {
			ph = append(ph, p)
		}
	}
	return fmt.Sprintf("Versions: %s. Server on CPU %d, load generators and upstream on CPU %d; %d CPUs online, "+
		"load average at the end %s. Phases: %s. Hit runs: %d names, dnsperf %v; fixed rate %d q/s for %v, "+
		"2,000 and 200 q/s for %v each; idle run %v, every target at once; "+
		"fixed-rate miss run: %d q/s for %v from %d sockets, unique names, upstream delay %v; "+
		"concurrent miss run: %d closed-loop clients for %v, unique names, no delay; miss run: %d unique names (limit %v).",
		strings.Join(vers, ", "), o.serverCPU, o.genCPU, runtime.NumCPU(), strings.Join(load, " "), strings.Join(ph, ","),
		o.hitNames, o.hitDur, o.rate, o.rateDur, o.lowRateDur, o.idleCPUDur, o.missRate, o.missRateDur, o.missSockets, o.missDelay,
		o.missClients, o.missConcDur, o.missNames, o.missLimit)
}

// binarySizes are the sizes in bytes of the targets' binaries that report one (not a
// reference's); a binary that cannot be read has none.
func binarySizes(targets []string, bins map[string]string) map[string]float64 {
	out := map[string]float64{}
	for _, t := range targets {
		if !specs[t].reports(mBinary) {
			continue
		}
		if st, err := os.Stat(bins[t]); err == nil {
			out[t] = float64(st.Size())
		}
	}
	return out
}

// version asks a binary for its version, best effort; a reference is not asked, it was built
// from this tree.
func version(target, bin string) string {
	if specs[target].reference {
		return "built from " + specs[target].source
	}
	arg := map[string]string{"podns": "-version", "coredns": "-version", "dnsmasq": "--version", "unbound": "-V"}[target]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, bin, arg).CombinedOutput()
	for _, line := range strings.Split(string(out), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			if len(line) > 40 {
				line = line[:40]
			}
			return line
		}
	}
	return "?"
}

// podnsImageSize is the size of a local podns stub image, if podman has one. It never builds
// or pulls.
func podnsImageSize(ctx context.Context) (float64, bool) {
	if _, err := exec.LookPath("podman"); err != nil {
		return 0, false
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "podman", "image", "ls", "--format", "json").Output()
	if err != nil {
		return 0, false
	}
	var imgs []struct {
		Names []string
		Size  float64
	}
	if json.Unmarshal(out, &imgs) != nil {
		return 0, false
	}
	for _, im := range imgs {
		for _, n := range im.Names {
			if strings.Contains(n, "podns/stub") {
				return im.Size, true
			}
		}
	}
	return 0, false
}

// startUpstream starts CoreDNS as the upstream on the generator's CPU and checks that it
// answers both zones.
func (b *bench) startUpstream(bin string) error {
	port, err := freePort(upstreamAddr)
	if err != nil {
		return err
	}
	b.upstream = netip.AddrPortFrom(upstreamAddr, uint16(port))
	dir := filepath.Join(b.tmp, "upstream")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(cf, []byte(upstreamCorefile(b.tmp, port, b.opts.missDelay)), 0o644); err != nil {
		return err
	}
	p, err := b.procs.Start("upstream coredns", filepath.Join(dir, "log"), bin, []string{"-conf", cf, "-quiet"}, cleanEnv(), proc.Options{CPU: b.opts.genCPU})
	if err != nil {
		return err
	}
	if _, err := firstAnswer(b.upstream.String(), b.hitNames[0], time.Now(), 10*time.Second, p.Done()); err != nil {
		return fmt.Errorf("upstream: %w\n%s", err, p.Tail())
	}
	if err := resolveAll(b.upstream.String(), []string{b.hitNames[len(b.hitNames)-1], "u0000000." + missZone, "check." + slowZone}); err != nil {
		return fmt.Errorf("upstream: %w\n%s", err, p.Tail())
	}
	return nil
}

// start starts target t with its config under dir, on its own address and a free port.
func (b *bench) start(t, bin, dir string, cacheSize int) (*proc.Proc, netip.AddrPort, launch, error) {
	var listen netip.AddrPort
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, listen, launch{}, err
	}
	port, err := freePort(targetAddrs[t])
	if err != nil {
		return nil, listen, launch{}, err
	}
	listen = netip.AddrPortFrom(targetAddrs[t], uint16(port))
	l, err := specs[t].config(bin, dir, listen, b.upstream, cacheSize)
	if err != nil {
		return nil, listen, l, err
	}
	p, err := b.procs.Start(t, filepath.Join(dir, "log"), l.path, l.args, l.env, proc.Options{CPU: b.opts.serverCPU})
	return p, listen, l, err
}

// startIdle starts t, measures the time from exec to its first answer and its RSS after the
// idle wait, and stops it.
func (b *bench) startIdle(ctx context.Context, t, bin, dir string, cacheSize int) (firstMs, rss float64, err error) {
	start := time.Now()
	p, listen, _, err := b.start(t, bin, dir, cacheSize)
	if err != nil {
		return 0, 0, err
	}
	defer p.Stop()
	fa, err := firstAnswer(listen.String(), b.hitNames[0], start, 10*time.Second, p.Done())
	if err != nil {
		return 0, 0, fmt.Errorf("first answer: %w\n%s", err, p.Tail())
	}
	if !sleepCtx(ctx, b.opts.idle) {
		return 0, 0, ctx.Err()
	}
	if rss, err = rssBytes(p.PID()); err != nil {
		return 0, 0, fmt.Errorf("RSS: %w\n%s", err, p.Tail())
	}
	return fa.Seconds() * 1000, rss, nil
}

// runTarget starts target t, measures it, and stops it. Every value is one round's.
func (b *bench) runTarget(ctx context.Context, t, bin string, round int) (map[string]float64, error) {
	o := b.opts.forTarget(t)
	dir := filepath.Join(b.tmp, fmt.Sprintf("%s-%d", t, round+1))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	v := map[string]float64{}
	if o.has(phStartup) {
		// Start-up and idle memory as deployed: the target's default cache size.
		first, idle, err := b.startIdle(ctx, t, bin, filepath.Join(dir, "default"), 0)
		if err != nil {
			return nil, err
		}
		v[mFirstAnswer], v[mRSSIdle] = first, idle
	}

	// Everything else with room for every name of both runs, so that the miss run measures
	// memory per entry, not eviction.
	sized := 2 * (o.missNames + o.hitNames)
	p, listen, l, err := b.start(t, bin, filepath.Join(dir, "sized"), sized)
	if err != nil {
		return nil, err
	}
	defer p.Stop()
	fail := func(what string, err error) (map[string]float64, error) {
		if p.Exited() {
			return nil, fmt.Errorf("%s: %v; %s exited: %v\n%s", what, err, t, p.Err(), p.Tail())
		}
		return nil, fmt.Errorf("%s: %v\n%s", what, err, p.Tail())
	}
	if _, err := firstAnswer(listen.String(), b.hitNames[0], time.Now(), 10*time.Second, p.Done()); err != nil {
		return fail("first answer", err)
	}
	pid := p.PID()
	if !sleepCtx(ctx, o.idle) {
		return nil, ctx.Err()
	}
	if specs[t].reports(mRSSIdleSized) {
		if v[mRSSIdleSized], err = rssBytes(pid); err != nil {
			return fail("RSS", err)
		}
	}
	if o.has(phHit) || o.has(phRate) || o.has(phRate2000) || o.has(phRate200) {
		if err := b.warm(ctx, listen); err != nil {
			return fail("warm-up", err)
		}
	}

	if o.has(phHit) {
		// Saturating cache-hit run: dnsperf's throughput, and the server's own CPU time for it.
		mallocs0 := goMallocs(l.metrics)
		cpu0, err := cpuSeconds(pid)
		if err != nil {
			return fail("CPU", err)
		}
		pr, err := b.runDnsperf(ctx, listen, "hits.txt", o.hitDur, "-l", secs(o.hitDur), "-q", "200", "-t", "1")
		if err != nil {
			return fail("hit run", err)
		}
		cpu1, err := cpuSeconds(pid)
		if err != nil {
			return fail("CPU", err)
		}
		v[mHitQPS], v[mHitLost] = pr.QPS, pr.Lost
		v[mQPerCPU] = ratio(pr.Completed, cpu1-cpu0)
		if l.metrics != "" {
			// Includes the one scrape between the two readings: a few thousand allocations
			// against hundreds of thousands of queries.
			v[mAllocsPerHit] = ratio(goMallocs(l.metrics)-mallocs0, pr.Completed)
		}
		if v[mRSSHit], err = rssBytes(pid); err != nil {
			return fail("RSS", err)
		}
	}

	for _, hr := range hitRates {
		if !o.has(hr.phase) {
			continue
		}
		// Fixed-rate cache hits: latency percentiles, CPU per 100k queries, and how often the
		// server's threads were switched in per query. Below saturation the CPU is mostly the
		// cost of waking up per packet, not of answering.
		rate, dur := hr.rate(o), o.lowRateDur
		if hr.phase == phRate {
			dur = o.rateDur
		}
		c0, err := schedstat(pid)
		if err != nil {
			return fail("CPU", err)
		}
		rr, err := b.runLoadgen(ctx, listen, dur, "-names", filepath.Join(b.tmp, "hits.txt"), "-rate", strconv.Itoa(rate))
		if err != nil {
			return fail(fmt.Sprintf("fixed-rate run at %d q/s", rate), err)
		}
		c1, err := schedstat(pid)
		if err != nil {
			return fail("CPU", err)
		}
		k := hr.keys
		v[k.p50], v[k.p99] = rr.P50us, rr.P99us
		if k.p999 != "" {
			v[k.p999] = rr.P999us
		}
		v[k.lost], v[k.lag] = float64(rr.Sent-rr.Received), rr.LagP99us
		v[k.cpu] = ratio((c1.onCPU-c0.onCPU)/1e9, float64(rr.Received)) * 100000
		v[k.wakeups] = ratio(c1.slices-c0.slices, float64(rr.Received))
	}

	if o.has(phMissRate) {
		// Fixed-rate cache misses, well under every target's saturation, through the delayed
		// zone: the latency a miss gets when the app is busy but the server is not.
		cpu0, err := cpuNanos(pid)
		if err != nil {
			return fail("CPU", err)
		}
		rr, err := b.runLoadgen(ctx, listen, o.missRateDur, "-unique", "r."+slowZone,
			"-rate", strconv.Itoa(o.missRate), "-sockets", strconv.Itoa(o.missSockets))
		if err != nil {
			return fail("fixed-rate miss run", err)
		}
		cpu1, err := cpuNanos(pid)
		if err != nil {
			return fail("CPU", err)
		}
		v[mMissRateP50], v[mMissRateP99] = rr.P50us, rr.P99us
		v[mMissRateLost], v[mMissRateLag] = float64(rr.Sent-rr.Received), rr.LagP99us
		v[mMissRateQPerCPU] = ratio(float64(rr.Received), (cpu1-cpu0)/1e9)
	}

	if o.has(phMissConc) {
		// Concurrent clients, each asking its next never-seen name as soon as the last one was
		// answered: an app resolving many new names at once (start-up, fan-out).
		cpu0, err := cpuNanos(pid)
		if err != nil {
			return fail("CPU", err)
		}
		rr, err := b.runLoadgen(ctx, listen, o.missConcDur, "-unique", "c."+missZone, "-clients", strconv.Itoa(o.missClients))
		if err != nil {
			return fail("concurrent miss run", err)
		}
		cpu1, err := cpuNanos(pid)
		if err != nil {
			return fail("CPU", err)
		}
		v[mMissConcP50], v[mMissConcP99] = rr.P50us, rr.P99us
		v[mMissConcQPS], v[mMissConcLost] = rr.QPS, float64(rr.Sent-rr.Received)
		v[mMissConcQPerCPU] = ratio(float64(rr.Received), (cpu1-cpu0)/1e9)
	}

	if o.has(phMiss) {
		// Miss run with unique names: throughput, and the memory those names take once cached.
		rssBefore, err := rssBytes(pid)
		if err != nil {
			return fail("RSS", err)
		}
		pr, err := b.runDnsperf(ctx, listen, "misses.txt", o.missLimit, "-n", "1", "-l", secs(o.missLimit), "-q", "200", "-t", "2")
		if err != nil {
			return fail("miss run", err)
		}
		v[mMissQPS], v[mMissLost] = pr.QPS, pr.Lost
		if v[mRSS100k], err = rssBytes(pid); err != nil {
			return fail("RSS", err)
		}
		// An entry costs what storing it added, plus what its slot of capacity cost before
		// anything was stored (all of it for dnsmasq, which allocates its cache at start).
		v[mBytesFill] = ratio(v[mRSS100k]-rssBefore, pr.Completed)
		v[mBytesPerEntry] = v[mBytesFill]
		if def := specs[t].defaultEntries; def > 0 && sized > def && o.has(phStartup) {
			v[mBytesPrealloc] = max(0, v[mRSSIdleSized]-v[mRSSIdle]) / float64(sized-def)
			v[mBytesPerEntry] += v[mBytesPrealloc]
		}
	}
	if p.Exited() {
		return fail("after the runs", errors.New("server died"))
	}
	return v, nil
}

// hitRate is one fixed-rate cache-hit run: its phase, its rate and the metric keys it fills.
type hitRate struct {
	phase string
	rate  func(*options) int
	keys  rateKeys
}

// rateKeys are the metrics of one fixed-rate cache-hit run; p999 may be empty (too few
// queries at a low rate for a 99.9th percentile that is not just the maximum).
type rateKeys struct{ p50, p99, p999, lost, lag, cpu, wakeups string }

// hitRates are the fixed-rate cache-hit runs, in the order they run: -rate (5,000 q/s), then the
// rates most pods see.
var hitRates = []hitRate{
	{phRate, func(o *options) int { return o.rate }, rateKeys{mP50, mP99, mP999, mRateLost, mGenLag, mCPUPer100k, mWakeups}},
	{phRate2000, func(*options) int { return 2000 }, rateKeys{mR2kP50, mR2kP99, "", mR2kLost, mR2kLag, mR2kCPU, mR2kWakeups}},
	{phRate200, func(*options) int { return 200 }, rateKeys{mR200P50, mR200P99, "", mR200Lost, mR200Lag, mR200CPU, mR200Wakeups}},
}

// runIdle starts every target at once as deployed (default cache size), waits for each one's
// first answer, then leaves them all without a query for -idle-cpu-duration and measures the
// CPU each used meanwhile: clock ticks of utime+stime (what `top` and the kubelet's CPU usage
// see), on-CPU time and times switched in (schedstat). Idle servers do not compete for CPU 0, so
// running them together costs one wait per round rather than one per target.
func (b *bench) runIdle(ctx context.Context, targets []string, bins map[string]string, round int) (map[string]map[string]float64, error) {
	type started struct {
		p      *proc.Proc
		listen netip.AddrPort
	}
	ps := map[string]started{}
	defer func() {
		for _, s := range ps {
			s.p.Stop()
		}
	}()
	for _, t := range targets {
		p, listen, _, err := b.start(t, bins[t], filepath.Join(b.tmp, fmt.Sprintf("%s-%d", t, round+1), "idle"), 0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t, err)
		}
		ps[t] = started{p, listen}
	}
	for _, t := range targets {
		s := ps[t]
		if _, err := firstAnswer(s.listen.String(), b.hitNames[0], time.Now(), 10*time.Second, s.p.Done()); err != nil {
			return nil, fmt.Errorf("%s: first answer: %w\n%s", t, err, s.p.Tail())
		}
	}
	// Let start-up work that follows the first answer (a deferred GC, a probe) settle first.
	if !sleepCtx(ctx, b.opts.idle) {
		return nil, ctx.Err()
	}
	type reading struct {
		ticks float64
		ss    schedStat
	}
	read := func(pid int) (reading, error) {
		cpu, err := cpuSeconds(pid)
		if err != nil {
			return reading{}, err
		}
		ss, err := schedstat(pid)
		return reading{cpu * clockTick, ss}, err
	}
	before := map[string]reading{}
	for _, t := range targets {
		r, err := read(ps[t].p.PID())
		if err != nil {
			return nil, fmt.Errorf("%s: CPU: %w", t, err)
		}
		before[t] = r
	}
	if !sleepCtx(ctx, b.opts.idleCPUDur) {
		return nil, ctx.Err()
	}
	out := map[string]map[string]float64{}
	for _, t := range targets {
		s := ps[t]
		if s.p.Exited() {
			return nil, fmt.Errorf("%s exited while idle: %v\n%s", t, s.p.Err(), s.p.Tail())
		}
		r, err := read(s.p.PID())
		if err != nil {
			return nil, fmt.Errorf("%s: CPU: %w", t, err)
		}
		r0 := before[t]
		out[t] = map[string]float64{
			mIdleTicks:   math.Round(r.ticks - r0.ticks),
			mIdleCPUms:   (r.ss.onCPU - r0.ss.onCPU) / 1e6,
			mIdleWakeups: r.ss.slices - r0.ss.slices,
		}
	}
	return out, nil
}

// goMallocs reads go_memstats_mallocs_total (heap objects allocated since start) from a Go
// server's Prometheus endpoint; NaN when unavailable.
func goMallocs(url string) float64 {
	if url == "" {
		return math.NaN()
	}
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return math.NaN()
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return math.NaN()
	}
	return promValue(string(body), "go_memstats_mallocs_total")
}

// promValue is the value of an unlabelled metric in Prometheus text format; NaN if absent.
func promValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
				return v
			}
		}
	}
	return math.NaN()
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return a / b
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// warm asks every hit name so that the hit runs find them cached. A pass can lose a query on
// a loaded machine (a forwarder drops what its socket buffer cannot hold), so it repeats until
// one pass loses none.
func (b *bench) warm(ctx context.Context, server netip.AddrPort) error {
	for pass := 0; pass < 3; pass++ {
		pr, err := b.runDnsperf(ctx, server, "hits.txt", 30*time.Second, "-n", "1", "-l", "30", "-q", "20", "-t", "5")
		if err != nil {
			return err
		}
		if pr.Lost == 0 && pr.Completed == float64(len(b.hitNames)) {
			return nil
		}
	}
	return fmt.Errorf("3 passes over the %d hit names each lost some", len(b.hitNames))
}

// runDnsperf runs dnsperf on the generator's CPU against server with one of the data files.
func (b *bench) runDnsperf(ctx context.Context, server netip.AddrPort, file string, limit time.Duration, extra ...string) (perfResult, error) {
	log := filepath.Join(b.tmp, "dnsperf.log")
	args := append([]string{
		"-s", server.Addr().String(), "-p", strconv.Itoa(int(server.Port())),
		"-d", filepath.Join(b.tmp, file),
		"-c", "4", "-T", "1",
	}, extra...)
	p, err := b.procs.Start("dnsperf", log, b.dnsperf, args, cleanEnv(), proc.Options{CPU: b.opts.genCPU})
	if err != nil {
		return perfResult{}, err
	}
	if err := waitCtx(ctx, p, limit+15*time.Second); err != nil {
		return perfResult{}, fmt.Errorf("dnsperf: %w\n%s", err, p.Tail())
	}
	out, err := os.ReadFile(log)
	if err != nil {
		return perfResult{}, err
	}
	r, err := parseDnsperf(string(out))
	if err != nil {
		return r, fmt.Errorf("%w\n%s", err, p.Tail())
	}
	if r.Completed == 0 {
		return r, fmt.Errorf("dnsperf: no query answered\n%s", p.Tail())
	}
	// Every name asked exists: any other rcode means the run measured an error path (e.g. a
	// server answering a special-use name locally), not the cache.
	if r.NoError != r.Completed {
		return r, fmt.Errorf("dnsperf: %v of %v answers were not NOERROR (%s)", r.Completed-r.NoError, r.Completed, r.Rcodes)
	}
	return r, nil
}

// runLoadgen runs this program's load generator (loadgenMain) on the generator's CPU with args
// (-server is added) for about dur.
func (b *bench) runLoadgen(ctx context.Context, server netip.AddrPort, dur time.Duration, args ...string) (rateResult, error) {
	log := filepath.Join(b.tmp, "loadgen.log")
	args = append([]string{"loadgen", "-server", server.String(), "-duration", dur.String()}, args...)
	p, err := b.procs.Start("loadgen", log, b.self, args, cleanEnv(), proc.Options{CPU: b.opts.genCPU})
	if err != nil {
		return rateResult{}, err
	}
	if err := waitCtx(ctx, p, dur+15*time.Second); err != nil {
		return rateResult{}, fmt.Errorf("loadgen: %w\n%s", err, p.Tail())
	}
	out, err := os.ReadFile(log)
	if err != nil {
		return rateResult{}, err
	}
	var r rateResult
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
		return r, fmt.Errorf("loadgen output: %w\n%s", err, p.Tail())
	}
	if r.Received == 0 {
		return r, errors.New("loadgen: no query answered")
	}
	return r, nil
}

// waitCtx waits for a load generator to finish, killing it on timeout or interrupt.
func waitCtx(ctx context.Context, p *proc.Proc, limit time.Duration) error {
	select {
	case <-ctx.Done():
		p.Stop()
		return ctx.Err()
	case <-p.Done():
		return p.Err()
	case <-time.After(limit):
		p.Stop()
		return fmt.Errorf("%s did not finish within %v; killed", p.Name, limit)
	}
}
