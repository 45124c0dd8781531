// Package lookup builds the e2e suite's C lookup client for glibc and musl, runs it in a
// simulated pod, and turns its per-lookup output into results and statistics.
package lookup

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Libc names a C library the client is built against.
type Libc string

// The two C library resolvers the suite exercises.
const (
	Glibc Libc = "glibc"
	Musl  Libc = "musl"
)

// Clients maps each C library to the path of a client binary built against it.
type Clients map[Libc]string

// Build compiles src (e2e/clients/lookup.c) into outDir twice: dynamically against glibc with
// gcc, and statically against musl with musl-gcc.
func Build(ctx context.Context, src, outDir string) (Clients, error) {
	out := Clients{Glibc: filepath.Join(outDir, "lookup-glibc"), Musl: filepath.Join(outDir, "lookup-musl")}
	builds := []struct {
		cc, pkg string
		args    []string
	}{
		{"gcc", "gcc libc6-dev", []string{"-O2", "-Wall", "-pthread", "-o", out[Glibc], src}},
		{"musl-gcc", "musl-tools", []string{"-static", "-O2", "-Wall", "-o", out[Musl], src, "-lpthread"}},
	}
	for _, b := range builds {
		if _, err := exec.LookPath(b.cc); err != nil {
			return nil, fmt.Errorf("%s not found: install %s (apt-get install %s)", b.cc, b.pkg, b.pkg)
		}
		if o, err := exec.CommandContext(ctx, b.cc, b.args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("%s %s: %w: %s", b.cc, strings.Join(b.args, " "), err, o)
		}
	}
	return out, nil
}

// Result is one lookup as the client reported it.
type Result struct {
	Seq  int
	Name string
	// Start and End are wall-clock times taken around getaddrinfo.
	Start, End time.Time
	// Status is "ok" or the EAI_* error name.
	Status string
	// Addrs is the sorted, de-duplicated address list (empty on failure).
	Addrs []string
}

// Latency is how long getaddrinfo took.
func (r Result) Latency() time.Duration { return r.End.Sub(r.Start) }

// OK reports whether getaddrinfo succeeded.
func (r Result) OK() bool { return r.Status == "ok" }

// Parse reads the client's output: one tab-separated line per lookup,
// "seq name start_ns end_ns status addrs".
func Parse(rd io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(rd)
	line := 0
	for sc.Scan() {
		line++
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 6 {
			return nil, fmt.Errorf("line %d: want 6 tab-separated fields, got %d: %q", line, len(f), sc.Text())
		}
		seq, err1 := strconv.Atoi(f[0])
		start, err2 := strconv.ParseInt(f[2], 10, 64)
		end, err3 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || end < start || f[4] == "" {
			return nil, fmt.Errorf("line %d: malformed: %q", line, sc.Text())
		}
		r := Result{Seq: seq, Name: f[1], Start: time.Unix(0, start), End: time.Unix(0, end), Status: f[4]}
		if f[5] != "-" {
			r.Addrs = strings.Split(f[5], ",")
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// Stats summarizes a set of lookups.
type Stats struct {
	Lookups int
	// Failures are lookups getaddrinfo returned an error for.
	Failures int
	// Partial are successful lookups that returned some but not all of the served addresses:
	// glibc does this when the AAAA reply of a lookup is lost but the A reply arrived.
	Partial int
	// Wrong are successful lookups that returned an address not served for the name, or
	// none at all.
	Wrong int
	// Over1s counts lookups that took more than one second, failed or not.
	Over1s        int
	P50, P99, Max time.Duration
	// WrongExamples holds up to five partial or wrong answers, for error messages.
	WrongExamples []string
}

// Summarize computes Stats; want maps each looked-up name to its sorted expected addresses.
// Percentiles are nearest-rank over all lookups, failed ones included (a failure after a
// timeout is as slow for the application as a late answer).
func Summarize(results []Result, want map[string][]string) Stats {
	s := Stats{Lookups: len(results)}
	lat := make([]time.Duration, 0, len(results))
	for _, r := range results {
		lat = append(lat, r.Latency())
		if r.Latency() > time.Second {
			s.Over1s++
		}
		if !r.OK() {
			s.Failures++
			continue
		}
		w := want[r.Name]
		if slices.Equal(r.Addrs, w) {
			continue
		}
		if subset(r.Addrs, w) {
			s.Partial++
		} else {
			s.Wrong++
		}
		if len(s.WrongExamples) < 5 {
			s.WrongExamples = append(s.WrongExamples, fmt.Sprintf("%s -> %v, want %v", r.Name, r.Addrs, w))
		}
	}
	slices.Sort(lat)
	s.P50, s.P99 = Percentile(lat, 50), Percentile(lat, 99)
	if len(lat) > 0 {
		s.Max = lat[len(lat)-1]
	}
	return s
}

// subset reports whether got is a non-empty proper subset of want.
func subset(got, want []string) bool {
	if len(got) == 0 || len(got) >= len(want) {
		return false
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			return false
		}
	}
	return true
}

// Percentile returns the nearest-rank p-th percentile of sorted durations (0 when empty).
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(float64(len(sorted))*p/100 + 0.999999999)
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// Options says how a client run is shaped.
type Options struct {
	// Threads doing lookups concurrently. Default 32.
	Threads int
	// Lookups in total, names taken round-robin. Ignored when Duration is set.
	Lookups int
	// Duration, when non-zero, keeps every thread looking up until it has passed.
	Duration time.Duration
	// Rate paces the client: lookup i starts no earlier than i/Rate seconds in. 0 = unpaced.
	Rate int
	// Names to look up.
	Names []string
	// Timeout kills the client if it runs longer. Default 2 minutes.
	Timeout time.Duration
}

// Args renders the client's command-line arguments.
func (o Options) Args() []string {
	threads := o.Threads
	if threads == 0 {
		threads = 32
	}
	args := []string{"-t", strconv.Itoa(threads)}
	if o.Duration > 0 {
		args = append(args, "-d", strconv.FormatInt(o.Duration.Milliseconds(), 10))
	} else {
		args = append(args, "-n", strconv.Itoa(o.Lookups))
	}
	if o.Rate > 0 {
		args = append(args, "-r", strconv.Itoa(o.Rate))
	}
	return append(args, o.Names...)
}

// ReadResults parses the client output file at path.
func ReadResults(path string) ([]Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}
