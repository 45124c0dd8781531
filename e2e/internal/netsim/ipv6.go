package netsim

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Addresses of an IPv6 cluster (ClusterConfig.IPv6), those of kind's IPv6 clusters: service
// CIDR fd00:10:96::/112, pod CIDR fd00:10:244::/56, the DNS Service at fd00:10:96::a. Unique
// local addresses (RFC 4193), so nothing in them can be routed off the machine even by mistake.
const (
	// VIP6 is the kube-dns ClusterIP of an IPv6 cluster.
	VIP6 = "fd00:10:96::a"
	// DeadNameserver6 is inside the IPv6 service CIDR with no service behind it: black-holed at
	// the node, no ICMPv6 error, like DeadNameserver.
	DeadNameserver6 = "fd00:10:96::63"
	// ServiceCIDR6 is routed from pods to the node and black-holed there unless DNATed.
	ServiceCIDR6 = "fd00:10:96::/112"
	podCIDR6     = "fd00:10:244::/56"
)

// ClusterConfig shapes a cluster made with NewClusterWith. The zero value is NewCluster's.
type ClusterConfig struct {
	// IPv6 makes every address of the cluster IPv6 (ULA, no default route anywhere): the node
	// DNATs VIP6 with ip6tables over two backends with IPv6 addresses, and pods are IPv6-only
	// (their one address is IPv6; loopback has 127.0.0.1 and ::1 as in every namespace). The
	// kubelet's resolv.conf of such a pod names VIP6. SetUDPLoss and DroppedQueries are
	// IPv4-only.
	IPv6 bool
}

func errIPv4Only(what string) error {
	return fmt.Errorf("netsim: %s is implemented for IPv4 clusters only", what)
}

// restoreTool is the iptables-restore of the cluster's address family.
func (c *Cluster) restoreTool() string {
	if c.IPv6 {
		return "ip6tables-restore"
	}
	return "iptables-restore"
}

// nodeSteps6 makes the node an IPv6 router for the pods and black-holes the IPv6 service CIDR
// (blackhole routes drop silently in IPv6 too: no ICMPv6 unreachable).
func (c *Cluster) nodeSteps6() [][]string {
	return [][]string{
		inNetns(c.Node, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"),
		{"ip", "-n", c.Node, "-6", "route", "add", "blackhole", ServiceCIDR6},
	}
}

// dnat6 is dnat for VIP6: kube-proxy's ip6tables rules, the same chains, the backends' IPv6
// addresses as [addr]:53.
func (c *Cluster) dnat6(ctx context.Context) error {
	var b strings.Builder
	b.WriteString("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-DNS - [0:0]\n:KUBE-SEP-DNS1 - [0:0]\n:KUBE-SEP-DNS2 - [0:0]\n")
	b.WriteString("-A PREROUTING -j KUBE-SERVICES\n")
	for _, proto := range []string{"udp", "tcp"} {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s/128 -p %s -m %s --dport 53 -j KUBE-SVC-DNS\n", VIP6, proto, proto)
	}
	b.WriteString("-A KUBE-SVC-DNS -m statistic --mode random --probability 0.5 -j KUBE-SEP-DNS1\n")
	b.WriteString("-A KUBE-SVC-DNS -j KUBE-SEP-DNS2\n")
	for i, be := range c.Backends {
		for _, proto := range []string{"udp", "tcp"} {
			fmt.Fprintf(&b, "-A KUBE-SEP-DNS%d -p %s -m %s -j DNAT --to-destination [%s]:53\n", i+1, proto, proto, be.Addr)
		}
	}
	b.WriteString("COMMIT\n")
	return c.restore(ctx, "ip6tables-restore", c.Node, b.String())
}

// link6 is link for IPv6 addresses (with prefix length). Duplicate address detection is off
// on both ends — accept_dad=0 on each interface before it comes up (its link-local address) and
// nodad on each address — because a new address is otherwise "tentative", unusable, for about
// a second (RFC 4862 §5.4). It returns once both interfaces have carrier and no address of
// either is tentative, polled from the kernel's own state rather than slept for.
func (c *Cluster) link6(ctx context.Context, ns, tag, nodeAddr, peerAddr, dst string) error {
	nodeIf, peerIf := c.run.ifName(tag), c.run.ifName(tag+"x")
	gw, _, _ := strings.Cut(nodeAddr, "/")
	noDAD := func(netns, ifname string) []string {
		return inNetns(netns, "sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/"+ifname+"/accept_dad")
	}
	steps := [][]string{
		{"ip", "-n", c.Node, "link", "add", nodeIf, "type", "veth", "peer", "name", peerIf, "netns", ns},
		noDAD(c.Node, nodeIf),
		noDAD(ns, peerIf),
		{"ip", "-n", c.Node, "addr", "add", nodeAddr, "dev", nodeIf, "nodad"},
		{"ip", "-n", ns, "addr", "add", peerAddr, "dev", peerIf, "nodad"},
		{"ip", "-n", c.Node, "link", "set", nodeIf, "up"},
		{"ip", "-n", ns, "link", "set", peerIf, "up"},
		{"ip", "-n", ns, "-6", "route", "add", dst, "via", gw},
	}
	for _, s := range steps {
		if err := runCmd(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	for _, e := range [][2]string{{c.Node, nodeIf}, {ns, peerIf}} {
		if err := waitIPv6Ready(ctx, e[0], e[1]); err != nil {
			return err
		}
	}
	return nil
}

// waitIPv6Ready polls interface ifname in namespace ns until it has carrier (LOWER_UP) and none
// of its IPv6 addresses is tentative. An address whose duplicate detection failed is an error
// at once.
func waitIPv6Ready(ctx context.Context, ns, ifname string) error {
	return poll(ctx, readyTimeout, 5*time.Millisecond, func() error {
		out, err := exec.CommandContext(ctx, "ip", "-n", ns, "-6", "addr", "show", "dev", ifname).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip -6 addr show dev %s in %s: %w: %s", ifname, ns, err, out)
		}
		return ipv6Ready(string(out))
	})
}

// ipv6Ready reads `ip -6 addr show dev X`: nil once the link has carrier and no address is
// tentative; a permanent error when an address failed duplicate detection.
func ipv6Ready(out string) error {
	first, _, _ := strings.Cut(out, "\n")
	switch {
	case strings.Contains(out, "dadfailed"):
		return permanent{fmt.Errorf("duplicate address detection failed:\n%s", out)}
	case !strings.Contains(first, "LOWER_UP"):
		return errors.New("no carrier yet: " + first)
	case strings.Contains(out, "tentative"):
		return fmt.Errorf("address still tentative:\n%s", out)
	case !strings.Contains(out, "inet6 "):
		return fmt.Errorf("no IPv6 address:\n%s", out)
	}
	return nil
}

// BackendDrops returns how many packets to port 53 backend i has dropped since StopBackend took
// it down: the queries and connection attempts the VIP's DNAT still sent it.
func (c *Cluster) BackendDrops(ctx context.Context, i int) (int, error) {
	tool := "iptables"
	if c.IPv6 {
		tool = "ip6tables"
	}
	argv := inNetns(c.Backends[i].NS, tool, "-t", "filter", "-L", "INPUT", "-v", "-x", "-n")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s -L: %w: %s", tool, err, out)
	}
	n := 0
	for _, m := range dropCounter.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n, nil
}

// StartNodeDNS runs CoreDNS with the backends' Corefile in the node's own network namespace,
// listening on every node address, port 53 — a node-local DNS server as NodeLocal DNSCache runs
// one (hostNetwork) — and waits until it answers on the node's loopback. The DNAT of the VIP is
// unaffected: it rewrites only packets to the VIP.
func (c *Cluster) StartNodeDNS(ctx context.Context) error {
	p, err := c.run.start(fmt.Sprintf("coredns c%d node", c.idx), c.run.baseEnv(), nil, inNetns(c.Node, c.coredns, "-conf", c.conf)...)
	if err != nil {
		return err
	}
	lo := "127.0.0.1:53"
	if c.IPv6 {
		lo = "[::1]:53"
	}
	return poll(ctx, readyTimeout, 50*time.Millisecond, func() error {
		select {
		case <-p.Done():
			return permanent{fmt.Errorf("node coredns exited: %v\n%s", p.Err(), p.Log())}
		default:
		}
		_, err := Query(c.Node, "udp", lo, "web.alpha.svc.cluster.local", dns.TypeA, 500*time.Millisecond)
		return err
	})
}

// NodeLinkLocal returns the IPv6 link-local address of the node's end of the pod's veth: the
// pod reaches it only through its own interface, so it is written with the zone Iface
// (fe80::…%<Iface>).
func (p *Pod) NodeLinkLocal(ctx context.Context) (netip.Addr, error) {
	out, err := exec.CommandContext(ctx, "ip", "-n", p.c.Node, "-6", "-o", "addr", "show", "dev", p.nodeIf, "scope", "link").CombinedOutput()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("ip -6 addr show dev %s: %w: %s", p.nodeIf, err, out)
	}
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "inet6" {
			pfx, err := netip.ParsePrefix(f[i+1])
			if err != nil {
				return netip.Addr{}, err
			}
			return pfx.Addr().WithZone(p.Iface), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no link-local address on %s:\n%s", p.nodeIf, out)
}
