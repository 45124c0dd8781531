// Command demo is `make demo`: the 5-second DNS problem and podns's fix, measured on this
// machine. It simulates a Kubernetes node, two CoreDNS pods behind the DNS VIP and two
// application pods in network namespaces, drops a small share of the UDP queries to the VIP
// (standing in for the conntrack race), and runs real glibc and musl clients in a pod without
// podns and in one with it. It prints one before/after table and removes everything it
// created, also when interrupted. Needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

func main() {
	loss := flag.Float64("loss", 0.02, "probability that a UDP query to the DNS VIP is dropped, (0, 1]")
	lookups := flag.Int("lookups", 1000, "lookups per client type and mode, 1..100000")
	rate := flag.Int("rate", 100, "lookups started per second by each client, 1..10000")
	threads := flag.Int("threads", 64, "concurrent lookup threads per client, 1..512")
	flag.Parse()
	if *loss <= 0 || *loss > 1 || *lookups < 1 || *lookups > 100000 || *rate < 1 || *rate > 10000 || *threads < 1 || *threads > 512 {
		fmt.Fprintln(os.Stderr, "demo: -loss must be in (0, 1], -lookups in 1..100000, -rate in 1..10000, -threads in 1..512")
		os.Exit(2)
	}
	cfg := scenario.CompareConfig{Loss: *loss, Lookups: *lookups, Rate: *rate, Threads: *threads}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		if errors.Is(err, scenario.ErrNotRoot) {
			fmt.Fprintln(os.Stderr, "demo: make demo creates network namespaces, iptables rules and bind mounts; run it as root: sudo make demo")
		}
		os.Exit(1)
	}
}

func run(cfg scenario.CompareConfig) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env, err := scenario.Setup(ctx)
	if err != nil {
		return err
	}
	stop := env.CloseOnSignal()
	defer stop()
	defer func() {
		if err := env.Run.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "demo: teardown:", err)
		}
	}()

	fmt.Printf("podns demo: a pod's DNS path in network namespaces (run %s)\n", env.Run.ID)
	fmt.Printf("  cluster DNS VIP %s DNATed (iptables, like kube-proxy) to 2 CoreDNS backends\n", netsim.VIP)
	fmt.Printf("  %.3g%% of UDP queries to the VIP dropped, standing in for the conntrack race\n", cfg.Loss*100)
	fmt.Printf("  pod resolv.conf from the kubelet: ndots:5, 3 search domains, glibc/musl default timeouts\n")
	fmt.Printf("  %d getaddrinfo(AF_UNSPEC) lookups per row, %d/s, %d threads; short service and external names\n",
		cfg.Lookups, cfg.Rate, cfg.Threads)
	fmt.Printf("  baseline: the pod as the kubelet makes it; podns: initc + stub (127.0.0.1, TCP upstream)\n\n")
	start := time.Now()
	cmp, err := env.Compare(ctx, cfg)
	if err != nil {
		return err
	}
	rows := cmp.Rows
	dropped, err := cmp.Cluster.DroppedQueries(ctx)
	if err != nil {
		return err
	}
	fmt.Print(scenario.FormatTable(rows))
	fmt.Printf("\n%d UDP queries dropped on the way to the VIP; measured in %v.\n", dropped, time.Since(start).Round(time.Second))
	for _, r := range rows {
		if r.Stats.Wrong != 0 {
			return fmt.Errorf("%s %s: %d wrong answers, e.g. %v", r.Mode, r.Libc, r.Stats.Wrong, r.Stats.WrongExamples)
		}
	}
	return nil
}
