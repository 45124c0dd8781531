package netsim

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StubHTTP is where the pod's stub serves /readyz inside the pod's network namespace.
const StubHTTP = "127.0.0.1:9253"

// PodConfig describes a simulated pod.
type PodConfig struct {
	// Nameservers the kubelet writes into the pod's resolv.conf. Default: the cluster's VIP
	// (VIP, or VIP6 in an IPv6 cluster).
	Nameservers []string
}

// Pod is a pod's view of the world: its own network namespace, routed to the node, and a
// private mount namespace (held by a pause process) in which a per-pod file is bind-mounted on
// /etc/resolv.conf, the way a container runtime gives every container of a pod the kubelet's
// file. Everything run in the pod enters both namespaces.
type Pod struct {
	// NS is the pod's network namespace.
	NS string
	// IP is the pod's address (IPv6 in an IPv6 cluster, where the pod has no IPv4 address but
	// loopback's).
	IP string
	// ResolvConf is the per-pod file (the bind mount's source): what the kubelet wrote, and
	// what initc rewrites in place through the mount.
	ResolvConf string
	// StateDir stands in for the emptyDir shared by initc and the stub (PODNS_STATE_DIR).
	StateDir string
	// Iface is the pod's network interface (its end of the veth to the node), e.g. for an
	// IPv6 zone.
	Iface string

	c     *Cluster
	name  string
	dir   string
	pause *Proc
	stub  *Proc
	// stubEnv is the environment the stub was started with, for ExecStub.
	stubEnv []string
	// nodeIf is the node's end of the pod's veth.
	nodeIf string
}

// NewPod creates a pod attached to the node, with the kubelet's resolv.conf bind-mounted on
// /etc/resolv.conf in its mount namespace.
func (c *Cluster) NewPod(ctx context.Context, cfg PodConfig) (*Pod, error) {
	if len(cfg.Nameservers) == 0 {
		cfg.Nameservers = []string{c.VIP}
	}
	k := c.pods
	c.pods++
	if k > 99 {
		return nil, errors.New("netsim: at most 100 pods per cluster")
	}
	r := c.run
	p := &Pod{c: c, name: fmt.Sprintf("c%d-pod%d", c.idx, k), IP: fmt.Sprintf("10.244.%d.2", k)}
	ns, err := r.addNetns(ctx, p.name)
	if err != nil {
		return nil, err
	}
	p.NS = ns
	// Pods reach only the service CIDR (through the node); there is no default route.
	tag := fmt.Sprintf("%02dp%02d", c.idx, k)
	p.nodeIf, p.Iface = r.ifName(tag), r.ifName(tag+"x") // as link and link6 name them
	if c.IPv6 {
		// IPv6-only: the pod's one address is on the veth; lo keeps 127.0.0.1 and ::1.
		p.IP = netip.MustParseAddr(fmt.Sprintf("fd00:10:244:%d::2", k)).String() // canonical, as ip prints it
		err = c.link6(ctx, ns, tag, fmt.Sprintf("fd00:10:244:%d::1/64", k), p.IP+"/64", ServiceCIDR6)
	} else {
		err = c.link(ctx, ns, tag, fmt.Sprintf("10.244.%d.1/24", k), p.IP+"/24", ServiceCIDR)
	}
	if err != nil {
		return nil, err
	}

	p.dir = filepath.Join(r.Dir, p.name)
	p.ResolvConf = filepath.Join(p.dir, "resolv.conf")
	p.StateDir = filepath.Join(p.dir, "state")
	if err := os.MkdirAll(p.StateDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.ResolvConf, []byte(KubeletResolvConf(PodNamespace, cfg.Nameservers)), 0o644); err != nil {
		return nil, err
	}

	// The pause process owns the pod's mount namespace; it prints "ready" once the bind
	// mount is in place and then sleeps until it is killed. unshare makes the namespace's
	// mounts private, so the bind mount never propagates to the host.
	rd, wr, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	argv := inNetns(ns, "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", `mount --bind "$0" /etc/resolv.conf && echo ready && exec sleep infinity`, p.ResolvConf)
	p.pause, err = r.start("pause "+p.name, r.baseEnv(), wr, argv...)
	wr.Close()
	if err != nil {
		return nil, err
	}
	if err := waitLine(rd, "ready", readyTimeout); err != nil {
		return nil, fmt.Errorf("pod %s: pause: %w\n%s", p.name, err, p.pause.Log())
	}
	return p, nil
}

// Argv returns argv wrapped to run inside the pod (its network and mount namespaces).
func (p *Pod) Argv(argv ...string) []string {
	return append([]string{"nsenter", "--target", strconv.Itoa(p.pause.PID()), "--mount", "--net", "--"}, argv...)
}

// PauseRoot is the pod's root as seen from the host (/proc/<pause>/root): reading
// PauseRoot()+"/etc/resolv.conf" shows what the pod's processes see.
func (p *Pod) PauseRoot() string { return fmt.Sprintf("/proc/%d/root", p.pause.PID()) }

// RunInit runs initc in the pod, as the init container, with the pod's state dir, and waits
// for it to exit. env adds PODNS_* settings.
func (p *Pod) RunInit(ctx context.Context, initc string, env ...string) error {
	env = append([]string{"PODNS_STATE_DIR=" + p.StateDir}, env...)
	proc, err := p.c.run.start("initc "+p.name, p.c.run.baseEnv(env...), nil, p.Argv(initc)...)
	if err != nil {
		return err
	}
	select {
	case <-proc.Done():
	case <-ctx.Done():
		_ = proc.Kill()
		return ctx.Err()
	case <-time.After(readyTimeout):
		_ = proc.Kill()
		return fmt.Errorf("initc did not exit within %v\n%s", readyTimeout, proc.Log())
	}
	if proc.Err() != nil {
		return fmt.Errorf("initc: %w\n%s", proc.Err(), proc.Log())
	}
	return nil
}

// StartStub starts the stub in the pod, as the sidecar, and waits until its /readyz answers
// 200. env adds or overrides PODNS_* settings.
func (p *Pod) StartStub(ctx context.Context, stub string, env ...string) (*Proc, error) {
	env = append([]string{
		"PODNS_STATE_DIR=" + p.StateDir,
		"PODNS_LOG_FORMAT=console",
		"PODNS_HTTP_LISTEN=" + StubHTTP,
	}, env...)
	proc, err := p.c.run.start("stub "+p.name, p.c.run.baseEnv(env...), nil, p.Argv(stub)...)
	if err != nil {
		return nil, err
	}
	p.stub, p.stubEnv = proc, env
	err = poll(ctx, readyTimeout, 10*time.Millisecond, func() error {
		select {
		case <-proc.Done():
			return permanent{fmt.Errorf("stub exited: %v\n%s", proc.Err(), proc.Log())}
		default:
		}
		code, err := HTTPStatus(p.NS, StubHTTP, "/readyz", time.Second)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/readyz: %d", code)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("stub in %s not ready: %w", p.name, err)
	}
	return proc, nil
}

// ExecStub runs the stub binary with args in the pod with the environment the running stub was
// started with, as `kubectl exec POD -c podns-stub -- /stub args...` does, and waits for it
// (bounded by ctx). exit is the exit code; err is set only when it could not run or did not
// exit.
func (p *Pod) ExecStub(ctx context.Context, stub string, args ...string) (stdout, stderr string, exit int, err error) {
	if p.stub == nil {
		return "", "", 0, errors.New("netsim: ExecStub before StartStub")
	}
	argv := p.Argv(append([]string{stub}, args...)...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = p.c.run.baseEnv(p.stubEnv...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return out.String(), errOut.String(), ee.ExitCode(), nil
	}
	return out.String(), errOut.String(), 0, err
}

// Stub returns the stub started last, or nil.
func (p *Pod) Stub() *Proc { return p.stub }

// Start runs argv in the pod as a tracked process whose stdout goes to stdoutPath.
func (p *Pod) Start(name string, stdoutPath string, env []string, argv ...string) (*Proc, error) {
	f, err := os.Create(stdoutPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return p.c.run.start(name+" "+p.name, p.c.run.baseEnv(env...), f, p.Argv(argv...)...)
}

// Dir is a directory for the pod's files (client output).
func (p *Pod) Dir() string { return p.dir }

// UDPRcvbufErrors returns the pod namespace's count of UDP datagrams dropped because a
// socket's receive buffer was full: queries the stub never saw.
func (p *Pod) UDPRcvbufErrors() (int, error) {
	var b []byte
	err := Do(p.NS, func() error {
		var err error
		// thread-self: /proc/self/net would show the main thread's namespace.
		b, err = os.ReadFile("/proc/thread-self/net/snmp")
		return err
	})
	if err != nil {
		return 0, err
	}
	return snmpField(string(b), "Udp", "RcvbufErrors")
}

// snmpField finds a counter in /proc/net/snmp's pairs of header and value lines.
func snmpField(snmp, proto, field string) (int, error) {
	lines := strings.Split(snmp, "\n")
	for i := 0; i+1 < len(lines); i++ {
		h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(h) == 0 || h[0] != proto+":" || len(v) != len(h) || v[0] != proto+":" {
			continue
		}
		for j := range h {
			if h[j] == field {
				return strconv.Atoi(v[j])
			}
		}
	}
	return 0, fmt.Errorf("%s %s not found in /proc/net/snmp", proto, field)
}
