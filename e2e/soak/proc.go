package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/podns/podns/e2e/internal/proc"
)

// startClean execs path with a clean environment (PATH plus env: nothing from the caller's leaks
// in, no GOMAXPROCS, GOGC or PODNS_*), its output appended to logPath (a restarted CoreDNS keeps
// one log), not pinned to a CPU.
func startClean(s *proc.Set, name, logPath, path string, args, env []string) (*proc.Proc, error) {
	env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	return s.Start(name, logPath, path, args, env, proc.Options{CPU: -1, AppendLog: true})
}

// sample is the stub's resource use at one moment.
type sample struct {
	at         time.Time
	rss        float64 // bytes, VmRSS
	goroutines float64 // go_goroutines from /metrics
	fds        int     // entries of /proc/PID/fd
	// heapInuse is go_memstats_heap_inuse_bytes: with the RSS it tells the Go heap's cycle
	// (which moves it) from pages the runtime has not returned (which do not).
	heapInuse float64
}

// metricsClient never keeps a connection open: a kept-alive scrape connection would be an open
// FD and a goroutine in the stub, counted in the very figures it reads.
var metricsClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// takeSample reads the stub's VmRSS, open FDs and goroutines.
func takeSample(pid int, metricsURL string) (sample, error) {
	s := sample{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	if s.rss, err = proc.ParseVmRSS(string(b)); err != nil {
		return s, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	text, err := scrape(metricsURL)
	if err != nil {
		return s, err
	}
	if s.goroutines = promValue(text, "go_goroutines"); math.IsNaN(s.goroutines) {
		return s, errors.New("no go_goroutines in /metrics")
	}
	s.heapInuse = promValue(text, "go_memstats_heap_inuse_bytes")
	return s, nil
}

func scrape(url string) (string, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), nil
}

// promValue is the value of an unlabelled metric in Prometheus text format, NaN when absent.
func promValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
			return v
		}
	}
	return math.NaN()
}
