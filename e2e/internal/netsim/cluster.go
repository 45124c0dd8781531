package netsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Addresses of the simulated cluster. They exist only inside the run's namespaces.
const (
	// VIP is the kube-dns ClusterIP the kubelet writes into every pod's resolv.conf.
	VIP = "10.96.0.10"
	// DeadNameserver is inside the service CIDR but has no service behind it: the node
	// black-holes it, so queries to it vanish without an ICMP error, like a stale nameserver.
	DeadNameserver = "10.96.0.99"
	// ServiceCIDR is routed from pods to the node and black-holed there unless DNATed.
	ServiceCIDR = "10.96.0.0/12"
	podCIDR     = "10.244.0.0/16"
)

// readyTimeout bounds how long a CoreDNS backend or a stub may take to become ready.
const readyTimeout = 30 * time.Second

// Cluster is a node namespace with the DNS VIP DNATed, kube-proxy style, over two CoreDNS
// backend namespaces.
type Cluster struct {
	// Node is the name of the node's network namespace (routing, DNAT, faults).
	Node string
	// Backends are the cluster DNS pods.
	Backends []*Backend
	// VIP is the cluster DNS ClusterIP pods are given: VIP, or VIP6 in an IPv6 cluster.
	VIP string
	// IPv6 is set for a cluster made with ClusterConfig.IPv6: every address in it is IPv6.
	IPv6 bool

	run     *Run
	idx     int
	pods    int
	coredns string
	conf    string // the backends' Corefile

	delayMu sync.Mutex   // guards delayOn
	delayOn bool         // the delaying proxies run and port 53 is redirected to them
	delay   atomic.Int64 // nanoseconds each query waits in a delaying proxy
}

// Backend is one cluster DNS pod running real CoreDNS.
type Backend struct {
	// NS is the backend's network namespace.
	NS string
	// Addr is the backend pod IP (port 53).
	Addr string

	proc *Proc
	argv []string
}

// NewCluster builds a node and two CoreDNS backends serving Records, and waits until both
// answer. coredns is the path of the CoreDNS binary.
func (r *Run) NewCluster(ctx context.Context, coredns string) (*Cluster, error) {
	return r.NewClusterWith(ctx, coredns, ClusterConfig{})
}

// NewClusterWith is NewCluster with the address family and other choices in cfg.
func (r *Run) NewClusterWith(ctx context.Context, coredns string, cfg ClusterConfig) (*Cluster, error) {
	r.mu.Lock()
	idx := r.clusters
	r.clusters++
	r.mu.Unlock()
	if idx > 99 {
		return nil, errors.New("netsim: at most 100 clusters per run")
	}
	c := &Cluster{run: r, idx: idx, coredns: coredns, VIP: VIP, IPv6: cfg.IPv6}
	if c.IPv6 {
		c.VIP = VIP6
	}
	node, err := r.addNetns(ctx, fmt.Sprintf("c%d-node", idx))
	if err != nil {
		return nil, err
	}
	c.Node = node
	steps := [][]string{
		// /proc/sys/net belongs to the writer's namespace; sh rather than sysctl, which
		// minimal images lack.
		inNetns(node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"),
		// The service CIDR is not reachable except through the DNAT rules, so a query to an
		// address without a service is silently lost, as on a real node.
		{"ip", "-n", node, "route", "add", "blackhole", ServiceCIDR},
	}
	if c.IPv6 {
		steps = c.nodeSteps6()
	}
	for _, s := range steps {
		if err := runCmd(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}

	dir := filepath.Join(r.Dir, fmt.Sprintf("c%d", idx))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for origin, text := range zoneFiles() {
		if err := os.WriteFile(filepath.Join(dir, origin+".zone"), []byte(text), 0o644); err != nil {
			return nil, err
		}
	}
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile(dir)), 0o644); err != nil {
		return nil, err
	}
	c.conf = conf

	for i := 1; i <= 2; i++ {
		ns, err := r.addNetns(ctx, fmt.Sprintf("c%d-be%d", idx, i))
		if err != nil {
			return nil, err
		}
		b := &Backend{NS: ns, Addr: fmt.Sprintf("10.100.%d.2", i)}
		gw := fmt.Sprintf("10.100.%d.1", i)
		link := func() error {
			return c.link(ctx, ns, fmt.Sprintf("%02db%d", idx, i), gw+"/24", b.Addr+"/24", podCIDR)
		}
		if c.IPv6 {
			b.Addr, gw = fmt.Sprintf("fd00:10:100:%d::2", i), fmt.Sprintf("fd00:10:100:%d::1", i)
			link = func() error {
				return c.link6(ctx, ns, fmt.Sprintf("%02db%d", idx, i), gw+"/64", b.Addr+"/64", podCIDR6)
			}
		}
		if err := link(); err != nil {
			return nil, err
		}
		c.Backends = append(c.Backends, b)
	}
	dnat := c.dnat
	if c.IPv6 {
		dnat = c.dnat6
	}
	if err := dnat(ctx); err != nil {
		return nil, err
	}
	for i, b := range c.Backends {
		b.argv = inNetns(b.NS, coredns, "-conf", conf)
		if err := c.startBackend(ctx, i); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// link connects namespace ns to the node with a veth pair: nodeAddr on the node side,
// peerAddr on the other, and a route from ns to dst via the node. The pair is created inside
// the namespaces, so it never appears in the root namespace.
func (c *Cluster) link(ctx context.Context, ns, tag, nodeAddr, peerAddr, dst string) error {
	nodeIf, peerIf := c.run.ifName(tag), c.run.ifName(tag+"x")
	gw, _, _ := strings.Cut(nodeAddr, "/")
	steps := [][]string{
		{"ip", "-n", c.Node, "link", "add", nodeIf, "type", "veth", "peer", "name", peerIf, "netns", ns},
		{"ip", "-n", c.Node, "addr", "add", nodeAddr, "dev", nodeIf},
		{"ip", "-n", ns, "addr", "add", peerAddr, "dev", peerIf},
		{"ip", "-n", c.Node, "link", "set", nodeIf, "up"},
		{"ip", "-n", ns, "link", "set", peerIf, "up"},
		{"ip", "-n", ns, "route", "add", dst, "via", gw},
	}
	for _, s := range steps {
		if err := runCmd(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// dnat installs kube-proxy's iptables-mode rules for the DNS service: the VIP, UDP and TCP
// port 53, spread at random over the two endpoints.
func (c *Cluster) dnat(ctx context.Context) error {
	var b strings.Builder
	b.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-DNS - [0:0]\n:KUBE-SEP-DNS1 - [0:0]\n:KUBE-SEP-DNS2 - [0:0]\n")
	b.WriteString("-A PREROUTING -j KUBE-SERVICES\n")
	for _, proto := range []string{"udp", "tcp"} {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/32 -p %s -m %s --dport 53 -j KUBE-SVC-DNS\n", VIP, proto, proto)
	}
	b.WriteString("-A KUBE-SVC-DNS -m statistic --mode random --probability 0.5 -j KUBE-SEP-DNS1\n")
	b.WriteString("-A KUBE-SVC-DNS -j KUBE-SEP-DNS2\n")
	for i, be := range c.Backends {
		for _, proto := range []string{"udp", "tcp"} {
			fmt.Fprintf(&b, "-A KUBE-SEP-DNS%d -p %s -m %s -j DNAT --to-destination %s:53\n", i+1, proto, proto, be.Addr)
		}
	}
	b.WriteString("COMMIT\n")
	return c.iptablesRestore(ctx, c.Node, b.String())
}

func (c *Cluster) iptablesRestore(ctx context.Context, ns, rules string) error {
	return c.restore(ctx, "iptables-restore", ns, rules)
}

// restore loads rules into namespace ns with tool: iptables-restore or ip6tables-restore.
func (c *Cluster) restore(ctx context.Context, tool, ns, rules string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	argv := inNetns(ns, tool, "--noflush")
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s in %s: %w: %s\nrules:\n%s", tool, ns, err, out, rules)
	}
	return nil
}

func (c *Cluster) startBackend(ctx context.Context, i int) error {
	b := c.Backends[i]
	p, err := c.run.start(fmt.Sprintf("coredns c%d be%d", c.idx, i+1), c.run.baseEnv(), nil, b.argv...)
	if err != nil {
		return err
	}
	b.proc = p
	err = poll(ctx, readyTimeout, 50*time.Millisecond, func() error {
		select {
		case <-p.Done():
			return permanent{fmt.Errorf("coredns exited: %v\n%s", p.Err(), p.Log())}
		default:
		}
		m, err := Query(c.Node, "udp", net.JoinHostPort(b.Addr, "53"), "web.alpha.svc.cluster.local", dns.TypeA, 500*time.Millisecond)
		if err != nil {
			return err
		}
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) == 0 {
			return fmt.Errorf("coredns answered %s with %d records", dns.RcodeToString[m.Rcode], len(m.Answer))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("coredns backend %s not ready: %w", b.Addr, err)
	}
	return nil
}

// SetUDPLoss drops queries to the VIP at random with probability p (UDP only; TCP is
// untouched), standing in for the conntrack insert race that loses one of the parallel A/AAAA
// packets on affected kernels. This kernel resolves the clash, so the loss is emulated in the
// node's raw table, before conntrack and DNAT. p = 0 removes the rule.
func (c *Cluster) SetUDPLoss(ctx context.Context, p float64) error {
	if c.IPv6 {
		return errIPv4Only("SetUDPLoss")
	}
	if p < 0 || p > 1 {
		return fmt.Errorf("loss probability %v outside [0, 1]", p)
	}
	rules := "*raw\n:PODNS-LOSS - [0:0]\n-F PODNS-LOSS\n"
	if p > 0 {
		rules += fmt.Sprintf("-A PODNS-LOSS -m statistic --mode random --probability %s -j DROP\n", strconv.FormatFloat(p, 'f', -1, 64))
	}
	rules += "COMMIT\n"
	if err := c.iptablesRestore(ctx, c.Node, rules); err != nil {
		return err
	}
	// Hook the chain in once.
	check := inNetns(c.Node, "iptables", "-t", "raw", "-C", "PREROUTING", "-d", VIP+"/32", "-p", "udp", "--dport", "53", "-j", "PODNS-LOSS")
	if exec.CommandContext(ctx, check[0], check[1:]...).Run() == nil {
		return nil
	}
	add := inNetns(c.Node, "iptables", "-t", "raw", "-A", "PREROUTING", "-d", VIP+"/32", "-p", "udp", "--dport", "53", "-j", "PODNS-LOSS")
	return runCmd(ctx, add[0], add[1:]...)
}

var dropCounter = regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+DROP\b`)

// DroppedQueries returns how many UDP queries the loss rule has dropped so far.
func (c *Cluster) DroppedQueries(ctx context.Context) (int, error) {
	if c.IPv6 {
		return 0, errIPv4Only("DroppedQueries")
	}
	argv := inNetns(c.Node, "iptables", "-t", "raw", "-L", "PODNS-LOSS", "-v", "-x", "-n")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("iptables -L: %w: %s", err, out)
	}
	n := 0
	for _, m := range dropCounter.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n, nil
}

// StopBackend takes backend i down hard: CoreDNS is killed and the backend drops everything
// sent to port 53 without answering, like a hung node whose endpoint is still in the service.
func (c *Cluster) StopBackend(ctx context.Context, i int) error {
	b := c.Backends[i]
	if err := b.proc.Kill(); err != nil {
		return err
	}
	rules := "*filter\n-A INPUT -p udp --dport 53 -j DROP\n-A INPUT -p tcp --dport 53 -j DROP\nCOMMIT\n"
	return c.restore(ctx, c.restoreTool(), b.NS, rules)
}

// KillBackend kills backend i's CoreDNS and leaves the backend otherwise up: its port 53 is
// closed, so a TCP connection is refused (RST) and a UDP query gets ICMP port unreachable —
// a cluster DNS pod that crashed, or kube-proxy rejecting a Service with no endpoints left.
// Unlike StopBackend, a client learns at once that the server is not there.
func (c *Cluster) KillBackend(i int) error { return c.Backends[i].proc.Kill() }
