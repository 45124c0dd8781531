package netsim

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// backendMetricsPort is where each CoreDNS backend serves its Prometheus metrics once
// EnableBackendMetrics has run, inside its own namespace (CoreDNS's default port).
const backendMetricsPort = 9153

// ColdServices is how many short Service names (ColdService(0) … ColdService(ColdServices-1))
// the cluster serves in the pods' own namespace, each with one A record and no AAAA, as a
// ClusterIP Service in an IPv4 cluster. No standard client run looks them up, so a test can be
// sure its lookup of one is the first (a cold cache at the stub).
const ColdServices = 40

// ColdService returns the i-th cold short Service name, "coldsvc<i>", as an app in the pod
// types it (the first search domain completes it).
func ColdService(i int) string { return fmt.Sprintf("coldsvc%d", i) }

// coldServiceRecords are the records of the ColdServices names.
func coldServiceRecords() []Record {
	out := make([]Record, 0, ColdServices)
	for i := range ColdServices {
		out = append(out, Record{FQDN: ColdService(i) + "." + PodNamespace + ".svc.cluster.local",
			A: []string{fmt.Sprintf("10.96.3.%d", 10+i)}})
	}
	return out
}

// EnableBackendMetrics restarts every CoreDNS backend with the prometheus plugin in each of its
// server blocks, so that BackendQueries can count the queries the cluster DNS answers. Call it
// before creating pods: the restart resets the connections open to the backends.
func (c *Cluster) EnableBackendMetrics(ctx context.Context) error {
	dir := filepath.Join(c.run.Dir, fmt.Sprintf("c%d", c.idx))
	conf := filepath.Join(dir, "Corefile.metrics")
	text := strings.ReplaceAll(corefile(dir), "    errors\n", fmt.Sprintf("    errors\n    prometheus :%d\n", backendMetricsPort))
	if !strings.Contains(text, "prometheus") {
		return fmt.Errorf("netsim: no server block to add the prometheus plugin to:\n%s", text)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		return err
	}
	for i, b := range c.Backends {
		if err := b.proc.Kill(); err != nil {
			return err
		}
		b.argv = inNetns(b.NS, c.coredns, "-conf", conf)
		if err := c.startBackend(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

// BackendQueries returns how many DNS queries the cluster DNS backends have received so far,
// over both and every zone, protocol and type: the sum of CoreDNS's coredns_dns_requests_total
// (which also counts the queries for names outside its zones, refused). It needs
// EnableBackendMetrics; the backends' own readiness checks count too, so compare two readings.
func (c *Cluster) BackendQueries() (float64, error) {
	var sum float64
	for _, b := range c.Backends {
		body, err := HTTPGet(c.Node, fmt.Sprintf("%s:%d", b.Addr, backendMetricsPort), "/metrics", 5*time.Second)
		if err != nil {
			return 0, fmt.Errorf("metrics of backend %s: %w", b.Addr, err)
		}
		m, err := ParseMetrics(body)
		if err != nil {
			return 0, err
		}
		sum += m.Sum("coredns_dns_requests_total")
	}
	return sum, nil
}
