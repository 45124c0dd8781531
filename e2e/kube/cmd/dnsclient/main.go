// Command dnsclient is the application in the e2e pods: a static binary (no shell in its image)
// that resolves names with the pure-Go resolver, which reads the pod's /etc/resolv.conf like any
// libc would (nameservers, search, ndots, timeout, attempts), and reports what it saw as one JSON
// line so the driver can judge it.
//
//	dnsclient sleep                          print "started <unix ns>", run until SIGTERM (the pod's main process)
//	dnsclient lookup [-n N] NAME...          resolve each NAME N times; exit 1 on any failure
//	dnsclient loop -d 30s -i 20ms NAME...    resolve round-robin for a duration; report failures and stalls
//	dnsclient wait [-t 120s] NAME            until NAME resolves (an init container's wait-for-db)
//	dnsclient cat FILE                       print a file (the image has no cat)
//	dnsclient get URL                        HTTP GET, body to stdout (the stub's /metrics from the app)
//	dnsclient fill [-n 5000] [-c 8] SUFFIX   resolve n0.SUFFIX … n<N-1>.SUFFIX, C at a time (fills a cache)
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dnsclient sleep|lookup|loop|wait|cat|get ...")
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "sleep":
		// The realtime clock at the process's start, in ns: the driver runs on the node and reads
		// the same clock, so it can time the pod's start finer than the API's 1 s timestamps.
		fmt.Printf("started %d\n", time.Now().UnixNano())
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
		<-ch
	case "lookup":
		err = lookup(args)
	case "loop":
		err = loop(args)
	case "wait":
		err = wait(args)
	case "cat":
		var b []byte
		if len(args) != 1 {
			err = fmt.Errorf("cat FILE")
		} else if b, err = os.ReadFile(args[0]); err == nil {
			_, err = os.Stdout.Write(b)
		}
	case "get":
		err = get(args)
	case "fill":
		err = fill(args)
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsclient:", err)
		os.Exit(1)
	}
}

// resolve is one getaddrinfo-like lookup of A and AAAA through /etc/resolv.conf.
func resolve(name string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	_, err := net.DefaultResolver.LookupHost(ctx, name)
	return time.Since(start), err
}

func lookup(args []string) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	n := fs.Int("n", 1, "lookups per name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	failed := 0
	for _, name := range fs.Args() {
		for i := 0; i < *n; i++ {
			d, err := resolve(name)
			if err != nil {
				failed++
				fmt.Printf("FAIL %s %v (%s)\n", name, err, d)
				continue
			}
			fmt.Printf("OK %s %s\n", name, d.Round(time.Microsecond))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d lookups failed", failed)
	}
	return nil
}

// Summary is what loop prints: the driver decodes it.
type Summary struct {
	Lookups int     `json:"lookups"`
	Failed  int     `json:"failed"`
	Over1s  int     `json:"over_1s"`
	P50Ms   float64 `json:"p50_ms"`
	P99Ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// TrailingOK counts the successes after the last failure: a loop that recovered ends with many.
	TrailingOK int      `json:"trailing_ok"`
	Errors     []string `json:"errors,omitempty"`
	Duration   string   `json:"duration"`
}

func loop(args []string) error {
	fs := flag.NewFlagSet("loop", flag.ContinueOnError)
	dur := fs.Duration("d", 30*time.Second, "how long to loop")
	interval := fs.Duration("i", 20*time.Millisecond, "pause between lookups")
	max := fs.Int("max", 100000, "upper bound on lookups")
	if err := fs.Parse(args); err != nil {
		return err
	}
	names := fs.Args()
	if len(names) == 0 {
		return fmt.Errorf("loop: no names")
	}
	var s Summary
	var lat []time.Duration
	start := time.Now()
	for i := 0; i < *max && time.Since(start) < *dur; i++ {
		d, err := resolve(names[i%len(names)])
		s.Lookups++
		lat = append(lat, d)
		if d > time.Second {
			s.Over1s++
		}
		s.TrailingOK++
		if err != nil {
			s.Failed++
			s.TrailingOK = 0
			if len(s.Errors) < 10 {
				s.Errors = append(s.Errors, fmt.Sprintf("%s +%s: %v", names[i%len(names)], time.Since(start).Round(time.Millisecond), err))
			}
		}
		time.Sleep(*interval)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	if n := len(lat); n > 0 {
		s.P50Ms, s.P99Ms, s.MaxMs = ms(lat[n/2]), ms(lat[n*99/100]), ms(lat[n-1])
	}
	s.Duration = time.Since(start).Round(time.Millisecond).String()
	return json.NewEncoder(os.Stdout).Encode(s)
}

func wait(args []string) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	limit := fs.Duration("t", 120*time.Second, "give up after")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("wait NAME")
	}
	deadline := time.Now().Add(*limit)
	for {
		_, err := resolve(fs.Arg(0))
		if err == nil {
			fmt.Println("resolved", fs.Arg(0))
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(time.Second)
	}
}

func get(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("get URL")
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", args[0], resp.Status)
	}
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

// fill resolves N distinct names under SUFFIX (a wildcard in the test zone), C lookups at a time,
// and prints how many failed: each name leaves an A and an AAAA entry in the stub's cache.
func fill(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ContinueOnError)
	n := fs.Int("n", 5000, "names")
	c := fs.Int("c", 8, "lookups in flight")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("fill [-n N] [-c C] SUFFIX")
	}
	start := time.Now()
	next := make(chan int)
	fails := make(chan int, *c)
	for w := 0; w < *c; w++ {
		go func() {
			f := 0
			for i := range next {
				if _, err := resolve(fmt.Sprintf("n%d.%s", i, fs.Arg(0))); err != nil {
					f++
				}
			}
			fails <- f
		}()
	}
	for i := 0; i < *n; i++ {
		next <- i
	}
	close(next)
	failed := 0
	for w := 0; w < *c; w++ {
		failed += <-fails
	}
	fmt.Printf("filled %d names in %s, %d failed\n", *n, time.Since(start).Round(time.Millisecond), failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d lookups failed", failed, *n)
	}
	return nil
}
