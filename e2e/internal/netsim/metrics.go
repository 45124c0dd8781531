package netsim

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// HTTPGet performs a GET of http://addr/path from inside namespace ns and returns the body of
// a 200 reply. Like HTTPStatus, the connection is made in the namespace.
func HTTPGet(ns, addr, path string, timeout time.Duration) ([]byte, error) {
	var conn net.Conn
	err := Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return body, nil
}

// Metrics is one scrape of a Prometheus text exposition: series (name plus its label set as
// printed, e.g. `podns_prefetch_total{reason="expiry"}`) to value.
type Metrics map[string]float64

// ParseMetrics reads the Prometheus text format: comments and blank lines are skipped, a
// sample line is `series value [timestamp]`.
func ParseMetrics(text []byte) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// The value follows the series; label values may hold spaces, so split after '}'.
		series, rest := line, ""
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], line[i:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics: no value in %q", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q: %w", line, err)
		}
		m[series] = v
	}
	return m, sc.Err()
}

// Sum adds up every series of metric name whose labels include each of labels (given as
// `key="value"`): Sum("podns_upstream_queries_total") is the total over all upstreams.
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		n, rest, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// StubMetrics scrapes the pod's stub's /metrics from inside the pod's network namespace.
func (p *Pod) StubMetrics() (Metrics, error) {
	b, err := HTTPGet(p.NS, StubHTTP, "/metrics", 5*time.Second)
	if err != nil {
		return nil, err
	}
	return ParseMetrics(b)
}
