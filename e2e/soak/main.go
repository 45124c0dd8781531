// Command soak is podns's hour of faults (issue 14, `make soak`): on loopback it runs the stub
// in front of two CoreDNS upstreams, each behind a fault proxy, sends it a steady mix of lookups
// (hits, misses, NXDOMAIN, big answers, TCP clients that stall, garbage packets) while the
// upstreams are restarted, black-holed, slowed and made to close connections in a loop, and
// reports failed lookups outside the fault windows, lookups over 1 s, and the stub's RSS,
// goroutines and open FDs at the start and the end. Results go to soak-results/ as markdown
// and TSV, and the summary is printed. See e2e/soak/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"
)

func main() {
	cfg, out, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := soakMain(ctx, cfg, out, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (config, string, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dur := os.Getenv("SOAK_DURATION")
	if dur == "" {
		dur = "1h"
	}
	d, err := time.ParseDuration(dur)
	if err != nil {
		return cfg, "", fmt.Errorf("SOAK_DURATION=%q: not a duration", dur)
	}
	cfg.duration = d
	fs.DurationVar(&cfg.duration, "duration", cfg.duration, "length of the faulted phase (default: $SOAK_DURATION, else 1h)")
	fs.DurationVar(&cfg.warmup, "warmup", 60*time.Second, "load without faults before the first sample")
	fs.IntVar(&cfg.rate, "rate", cfg.rate, "lookups per second (10..5000)")
	fs.DurationVar(&cfg.faultLen, "fault", cfg.faultLen, "length of each black-hole, slow and cut fault")
	fs.DurationVar(&cfg.gap, "gap", cfg.gap, "fault-free load between two faults")
	fs.StringVar(&cfg.stub, "stub", "bin/stub", "podns stub binary")
	fs.StringVar(&cfg.coredns, "coredns", "", "CoreDNS binary (default: coredns on PATH, else .tools/bin/coredns)")
	out := fs.String("out", "soak-results", "directory for the markdown and TSV results")
	if err := fs.Parse(args); err != nil {
		return cfg, "", err
	}
	if fs.NArg() > 0 {
		return cfg, "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.duration < 10*time.Second || cfg.duration > 48*time.Hour {
		return cfg, "", errors.New("duration out of range (10s..48h)")
	}
	if cfg.rate < 10 || cfg.rate > 5000 {
		return cfg, "", errors.New("-rate out of range (10..5000)")
	}
	return cfg, *out, nil
}

// defaultConfig is make soak's: one fault of each sort about every two minutes.
func defaultConfig() config {
	return config{
		duration:    time.Hour,
		warmup:      60 * time.Second,
		rate:        300,
		faultLen:    6 * time.Second,
		gap:         6 * time.Second,
		restartDown: time.Second,
		slowDelay:   3 * time.Second,
		mildDelay:   400 * time.Millisecond,
		stallers:    8,
		garbageRate: 20,
		prefill:     10500,
		sampleEvery: 10 * time.Second,
	}
}

// findCoreDNS is the CoreDNS binary: the flag's, else on PATH (make puts .tools/bin first),
// else .tools/bin/coredns under root.
func findCoreDNS(flagged, root string) (string, error) {
	if flagged != "" {
		return filepath.Abs(flagged)
	}
	if p, err := exec.LookPath("coredns"); err == nil {
		return filepath.Abs(p)
	}
	p := filepath.Join(root, ".tools", "bin", "coredns")
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("coredns not found on PATH or in .tools/bin: run make tools")
	}
	return filepath.Abs(p)
}

func soakMain(ctx context.Context, cfg config, out string, stdout io.Writer) error {
	var err error
	if cfg.coredns, err = findCoreDNS(cfg.coredns, "."); err != nil {
		return err
	}
	if cfg.stub, err = filepath.Abs(cfg.stub); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.stub); err != nil {
		return fmt.Errorf("%s missing: run make build", cfg.stub)
	}
	if cfg.dir, err = os.MkdirTemp("", "podns-soak-"); err != nil {
		return err
	}
	defer os.RemoveAll(cfg.dir)
	cfg.progress = stdout
	res, err := run(ctx, cfg)
	if err != nil {
		return err
	}
	path, err := res.writeFiles(out)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout)
	res.summary(stdout)
	fmt.Fprintf(stdout, "\nresults: %s (and .tsv)\n", path)
	if failed := failedChecks(res.checks()); len(failed) > 0 {
		return fmt.Errorf("targets not met: %v\nstub log:\n%s", failed, res.stubLog)
	}
	return nil
}

func numCPU() int { return runtime.NumCPU() }
