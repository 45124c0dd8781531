package main

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// perfResult is the part of dnsperf's summary the benchmark uses.
type perfResult struct {
	Sent, Completed, Lost float64
	QPS                   float64
	RunSeconds            float64
	// NoError counts NOERROR answers; Rcodes is dnsperf's "Response codes" line as printed.
	NoError float64
	Rcodes  string
}

var (
	rcodeLine = regexp.MustCompile(`(?m)^\s*Response codes:\s*(.*)$`)
	noError   = regexp.MustCompile(`NOERROR (\d+)`)
)

var perfFields = map[string]*regexp.Regexp{
	"sent":      regexp.MustCompile(`(?m)^\s*Queries sent:\s+(\d+)`),
	"completed": regexp.MustCompile(`(?m)^\s*Queries completed:\s+(\d+)`),
	"lost":      regexp.MustCompile(`(?m)^\s*Queries lost:\s+(\d+)`),
	"qps":       regexp.MustCompile(`(?m)^\s*Queries per second:\s+([0-9.]+)`),
	"run":       regexp.MustCompile(`(?m)^\s*Run time \(s\):\s+([0-9.]+)`),
}

// parseDnsperf reads dnsperf's end-of-run statistics.
func parseDnsperf(out string) (perfResult, error) {
	v := map[string]float64{}
	for k, re := range perfFields {
		m := re.FindStringSubmatch(out)
		if m == nil {
			return perfResult{}, fmt.Errorf("dnsperf output has no %q line", k)
		}
		f, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return perfResult{}, fmt.Errorf("dnsperf %s: %w", k, err)
		}
		v[k] = f
	}
	r := perfResult{Sent: v["sent"], Completed: v["completed"], Lost: v["lost"], QPS: v["qps"], RunSeconds: v["run"]}
	if m := rcodeLine.FindStringSubmatch(out); m != nil {
		r.Rcodes = strings.TrimSpace(m[1])
		if n := noError.FindStringSubmatch(m[1]); n != nil {
			r.NoError, _ = strconv.ParseFloat(n[1], 64)
		}
	}
	return r, nil
}
