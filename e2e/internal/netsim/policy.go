package netsim

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
)

var blockCounter = regexp.MustCompile(`(?m)^\s*(\d+)\s+\d+\s+(?:DROP|REJECT)\b`)

// TCP/53 actions of BlockTCPDNS.
const (
	// Drop loses TCP/53 packets without an answer, as Calico and Cilium do for traffic a
	// NetworkPolicy does not allow: a connection times out.
	Drop = "DROP"
	// Reject answers a SYN with a TCP reset: a connection is refused at once.
	Reject = "REJECT --reject-with tcp-reset"
)

// BlockTCPDNS stands in for an egress NetworkPolicy that allows DNS over UDP only: the node
// applies action (Drop or Reject) to TCP packets from the pods to port 53, in its filter
// table's FORWARD chain, so after kube-proxy's DNAT — on the CoreDNS pod's address, where
// policy plugins see it — whether the pod asked the VIP or a backend. UDP is untouched.
// action "" removes the rule.
func (c *Cluster) BlockTCPDNS(ctx context.Context, action string) error {
	rules := "*filter\n:PODNS-POLICY - [0:0]\n-F PODNS-POLICY\n"
	if action != "" {
		rules += fmt.Sprintf("-A PODNS-POLICY -p tcp --dport 53 -j %s\n", action)
	}
	rules += "COMMIT\n"
	if err := c.iptablesRestore(ctx, c.Node, rules); err != nil {
		return err
	}
	hook := []string{"FORWARD", "-s", podCIDR, "-p", "tcp", "--dport", "53", "-j", "PODNS-POLICY"}
	check := inNetns(c.Node, append([]string{"iptables", "-C"}, hook...)...)
	if exec.CommandContext(ctx, check[0], check[1:]...).Run() == nil {
		return nil
	}
	add := inNetns(c.Node, append([]string{"iptables", "-A"}, hook...)...)
	return runCmd(ctx, add[0], add[1:]...)
}

// BlockedTCPPackets returns how many packets BlockTCPDNS's rule has dropped or rejected so far.
func (c *Cluster) BlockedTCPPackets(ctx context.Context) (int, error) {
	argv := inNetns(c.Node, "iptables", "-L", "PODNS-POLICY", "-v", "-x", "-n")
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("iptables -L: %w: %s", err, out)
	}
	n := 0
	for _, m := range blockCounter.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.Atoi(m[1])
		n += v
	}
	return n, nil
}
