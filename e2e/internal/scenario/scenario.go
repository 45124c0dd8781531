// Package scenario is what the e2e tests and `make demo` share: finding the binaries, setting
// up pods with and without podns, running the lookup clients in them and printing the
// before/after table.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/podns/podns/e2e/internal/lookup"
	"github.com/podns/podns/e2e/internal/netsim"
)

// Env is a run with everything it drives located or built.
type Env struct {
	Run *netsim.Run
	// Root is the module root (the directory with go.mod).
	Root string
	// CoreDNS, Stub and Initc are binary paths.
	CoreDNS, Stub, Initc string
	// Clients are the lookup client binaries.
	Clients lookup.Clients
}

// ErrNotRoot is returned by Setup when the process is not root.
var ErrNotRoot = errors.New("needs root: network namespaces, iptables and bind mounts")

// FindRoot walks up from the working directory to the podns module root.
func FindRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/podns/podns\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("podns module root (go.mod) not found above the working directory")
		}
		dir = parent
	}
}

// Setup checks for root, locates coredns (on PATH), bin/stub and bin/initc (or those in
// $PODNS_E2E_BIN), starts a run and
// builds the clients into it. The caller must Close the returned Env's Run.
func Setup(ctx context.Context) (*Env, error) {
	if os.Geteuid() != 0 {
		return nil, ErrNotRoot
	}
	root, err := FindRoot()
	if err != nil {
		return nil, err
	}
	e := &Env{Root: root}
	if e.CoreDNS, err = exec.LookPath("coredns"); err != nil {
		return nil, errors.New("coredns not found on PATH: run make tools (installs the pinned CoreDNS into .tools/bin)")
	}
	bin := os.Getenv("PODNS_E2E_BIN")
	if bin == "" {
		bin = filepath.Join(root, "bin")
	}
	e.Stub, e.Initc = filepath.Join(bin, "stub"), filepath.Join(bin, "initc")
	for _, b := range []string{e.Stub, e.Initc} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%s missing: run make build", b)
		}
	}
	if e.Run, err = netsim.NewRun(""); err != nil {
		return nil, err
	}
	e.Clients, err = lookup.Build(ctx, filepath.Join(root, "e2e", "clients", "lookup.c"), e.Run.Dir)
	if err != nil {
		_ = e.Run.Close()
		return nil, err
	}
	return e, nil
}

// Mode says whether a pod runs podns.
type Mode string

// The two ways a pod resolves.
const (
	// Baseline is a pod as the kubelet makes it: resolv.conf points at the DNS VIP.
	Baseline Mode = "baseline"
	// Podns is the same pod with initc run first and the stub as sidecar.
	Podns Mode = "podns"
)

// Pod creates a pod in mode with the given kubelet nameservers (default: the VIP). In Podns
// mode initc rewrites its resolv.conf and the stub is started and ready.
func (e *Env) Pod(ctx context.Context, c *netsim.Cluster, mode Mode, nameservers ...string) (*netsim.Pod, error) {
	p, err := c.NewPod(ctx, netsim.PodConfig{Nameservers: nameservers})
	if err != nil {
		return nil, err
	}
	if mode == Podns {
		if err := p.RunInit(ctx, e.Initc); err != nil {
			return nil, err
		}
		if _, err := p.StartStub(ctx, e.Stub); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Names returns the names Lookups resolves and the answer each must get.
func Names() ([]string, map[string][]string) {
	var names []string
	want := map[string][]string{}
	for _, l := range netsim.Lookups() {
		names = append(names, l.Name)
		want[l.Name] = l.Want
	}
	return names, want
}

// RunClient runs the libc client in the pod and returns its lookups.
func (e *Env) RunClient(ctx context.Context, p *netsim.Pod, libc lookup.Libc, o lookup.Options) ([]lookup.Result, error) {
	if o.Timeout == 0 {
		o.Timeout = 2 * time.Minute
	}
	if len(o.Names) == 0 {
		o.Names, _ = Names()
	}
	out := filepath.Join(p.Dir(), fmt.Sprintf("lookup-%s-%d.out", libc, time.Now().UnixNano()))
	proc, err := p.Start("lookup-"+string(libc), out, nil, append([]string{e.Clients[libc]}, o.Args()...)...)
	if err != nil {
		return nil, err
	}
	select {
	case <-proc.Done():
	case <-ctx.Done():
		_ = proc.Kill()
		return nil, ctx.Err()
	case <-time.After(o.Timeout):
		_ = proc.Kill()
		return nil, fmt.Errorf("%s client still running after %v", libc, o.Timeout)
	}
	if proc.Err() != nil {
		return nil, fmt.Errorf("%s client: %w\n%s", libc, proc.Err(), proc.Log())
	}
	return lookup.ReadResults(out)
}

// Row is one line of the before/after table.
type Row struct {
	Mode  Mode
	Libc  lookup.Libc
	Stats lookup.Stats
	// Results are the raw lookups behind Stats.
	Results []lookup.Result
}

// CompareConfig shapes a before/after comparison.
type CompareConfig struct {
	// Loss is the UDP loss probability toward the VIP. Default 0.02.
	Loss float64
	// Lookups per client type and mode. Default 1000.
	Lookups int
	// Rate is the lookups per second each client starts. Default 100. Both modes get the
	// same offered load, so their latencies compare; the podns rows take Lookups/Rate
	// seconds, the baseline rows that plus their stalls.
	Rate int
	// Threads per client. Default 64: enough that the baseline's stalled lookups (about
	// Rate x 10 % x 5 s at once) do not hold up the schedule much.
	Threads int
}

// Comparison is the outcome of Compare.
type Comparison struct {
	// Rows in the order baseline glibc, podns glibc, baseline musl, podns musl.
	Rows []Row
	// Cluster, with the loss rule still installed, and the two pods, for inspection.
	Cluster         *netsim.Cluster
	Baseline, Podns *netsim.Pod
}

// Compare builds a cluster with emulated UDP loss, a baseline pod and a podns pod, and runs
// the glibc and musl clients in each.
func (e *Env) Compare(ctx context.Context, cfg CompareConfig) (*Comparison, error) {
	if cfg.Loss == 0 {
		cfg.Loss = 0.02
	}
	if cfg.Lookups == 0 {
		cfg.Lookups = 1000
	}
	if cfg.Rate == 0 {
		cfg.Rate = 100
	}
	if cfg.Threads == 0 {
		cfg.Threads = 64
	}
	c, err := e.Run.NewCluster(ctx, e.CoreDNS)
	if err != nil {
		return nil, err
	}
	cmp := &Comparison{Cluster: c}
	if cmp.Baseline, err = e.Pod(ctx, c, Baseline); err != nil {
		return cmp, err
	}
	if cmp.Podns, err = e.Pod(ctx, c, Podns); err != nil {
		return cmp, err
	}
	pods := map[Mode]*netsim.Pod{Baseline: cmp.Baseline, Podns: cmp.Podns}
	// The loss starts after setup: the podns pod's stub is ready, its cache is cold.
	if err := c.SetUDPLoss(ctx, cfg.Loss); err != nil {
		return cmp, err
	}
	names, want := Names()
	cmp.Rows = []Row{{Mode: Baseline, Libc: lookup.Glibc}, {Mode: Podns, Libc: lookup.Glibc},
		{Mode: Baseline, Libc: lookup.Musl}, {Mode: Podns, Libc: lookup.Musl}}
	errs := make([]error, len(cmp.Rows))
	// One mode at a time, glibc and musl together: on a small machine the two modes'
	// load would otherwise blur each other's latencies. podns first, as the baseline's
	// stalls make it the long one.
	for _, mode := range []Mode{Podns, Baseline} {
		var wg sync.WaitGroup
		for i := range cmp.Rows {
			row := &cmp.Rows[i]
			if row.Mode != mode {
				continue
			}
			wg.Go(func() {
				res, err := e.RunClient(ctx, pods[row.Mode], row.Libc,
					lookup.Options{Threads: cfg.Threads, Lookups: cfg.Lookups, Rate: cfg.Rate, Names: names})
				if err != nil {
					errs[i] = fmt.Errorf("%s %s: %w", row.Mode, row.Libc, err)
					return
				}
				row.Results = res
				row.Stats = lookup.Summarize(res, want)
			})
		}
		wg.Wait()
	}
	return cmp, errors.Join(errs...)
}

// FormatTable renders rows as the demo's table. "partial" counts answers missing some of the
// served addresses (a lost AAAA reply); wrong answers are an error, not a column.
func FormatTable(rows []Row) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tlibc\tlookups\tfailures\tpartial\tp50\tp99\tmax\tover 1s\t")
	for _, r := range rows {
		s := r.Stats
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t\n", r.Mode, r.Libc, s.Lookups, s.Failures, s.Partial,
			FormatDuration(s.P50), FormatDuration(s.P99), FormatDuration(s.Max), s.Over1s)
	}
	tw.Flush()
	return b.String()
}

// FormatDuration prints a latency with a unit that suits it: 0.4ms, 12ms, 5.01s.
func FormatDuration(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// CloseOnSignal tears the run down and exits with status 130 when SIGINT or SIGTERM arrives,
// so an interrupted demo or test leaves nothing behind. The returned stop undoes it.
func (e *Env) CloseOnSignal() (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-ch:
			fmt.Fprintf(os.Stderr, "\n%v: removing namespaces and processes of run %s\n", sig, e.Run.ID)
			if err := e.Run.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "teardown:", err)
			}
			os.Exit(130)
		case <-done:
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
