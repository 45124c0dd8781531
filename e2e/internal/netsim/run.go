// Package netsim builds the DNS path of a Kubernetes pod out of Linux network namespaces: a
// node that DNATs the cluster DNS VIP to two CoreDNS backends the way kube-proxy does, and pods
// whose /etc/resolv.conf is a per-pod file bind-mounted in a private mount namespace, as a
// container runtime does. It needs root.
//
// Everything one process creates belongs to a Run: names carry the run's ID, every process
// carries it in its environment, and Run.Close removes all of it. Nothing is sent from the
// root namespace and no namespace gets a default route, so no packet can leave the machine.
package netsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// NamePrefix starts the name of every network namespace netsim creates; it is followed by the
// owning process's PID, which lets a later run find and remove what a killed run left behind.
const NamePrefix = "podns-e2e-"

// MarkerEnv is set in the environment of every process a Run starts, to the run's ID, so that
// Close and Leftovers can find them and their descendants by scanning /proc.
const MarkerEnv = "PODNS_E2E_RUN"

// cmdTimeout bounds every short helper command (ip, iptables, sysctl).
const cmdTimeout = 20 * time.Second

// Run owns the namespaces, processes and files of one test binary or demo invocation.
type Run struct {
	// ID is "<pid>-<random hex>", unique per run; it is in every name the run creates.
	ID string
	// Dir holds config files, per-pod resolv.conf files, state dirs and process logs.
	Dir string

	short string // 6 hex chars used in interface names (IFNAMSIZ is 16)

	closeMu sync.Mutex // held for a whole Close, so a second caller waits for the first

	mu       sync.Mutex
	closed   bool
	netns    []string
	procs    []*Proc
	closers  []func()
	clusters int
}

// onClose registers fn to run at Close, before the processes are killed and the namespaces
// deleted (sockets the test process holds in a namespace, for example).
func (r *Run) onClose(fn func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closers = append(r.closers, fn)
}

// NewRun creates a run and its working directory under baseDir (os.TempDir() when empty).
// It first removes what earlier runs left behind when they were killed before their cleanup
// (their owner PID no longer exists).
func NewRun(baseDir string) (*Run, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("netsim needs root (network namespaces, iptables, mounts)")
	}
	if baseDir == "" {
		baseDir = os.TempDir()
	}
	SweepStale(baseDir)
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	short := hex.EncodeToString(b[:])
	r := &Run{ID: fmt.Sprintf("%d-%s", os.Getpid(), short), short: short}
	r.Dir = filepath.Join(baseDir, NamePrefix+r.ID)
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, err
	}
	return r, nil
}

// nsName is the name of a network namespace of this run.
func (r *Run) nsName(suffix string) string { return NamePrefix + r.ID + "-" + suffix }

// ifName is an interface name of this run: "pe" + 6 hex + tag, at most 15 bytes.
func (r *Run) ifName(tag string) string {
	n := "pe" + r.short + tag
	if len(n) > 15 {
		panic("netsim: interface name too long: " + n)
	}
	return n
}

// addNetns creates a named network namespace with its loopback up.
func (r *Run) addNetns(ctx context.Context, suffix string) (string, error) {
	name := r.nsName(suffix)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return "", errors.New("netsim: run is closed")
	}
	r.netns = append(r.netns, name)
	r.mu.Unlock()
	if err := runCmd(ctx, "ip", "netns", "add", name); err != nil {
		return "", err
	}
	return name, runCmd(ctx, "ip", "-n", name, "link", "set", "lo", "up")
}

// Close stops every process of the run (SIGKILL, by PID), deletes its namespaces and removes
// its directory. It is safe to call more than once and from a signal handler's goroutine:
// every call returns only once the teardown is complete.
func (r *Run) Close() error {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	r.mu.Lock()
	r.closed = true
	procs := append([]*Proc(nil), r.procs...)
	netns := append([]string(nil), r.netns...)
	closers := r.closers
	r.netns, r.closers = nil, nil
	r.mu.Unlock()

	for _, fn := range closers {
		fn()
	}

	var errs []error
	for _, p := range procs {
		if err := p.Kill(); err != nil {
			errs = append(errs, err)
		}
	}
	// Descendants that escaped the tracked processes (none are expected) carry the marker.
	for _, pid := range markedPIDs(r.ID) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	for _, ns := range netns {
		if _, err := os.Stat(filepath.Join("/run/netns", ns)); err != nil {
			continue
		}
		if err := runCmd(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(r.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Procs returns the processes the run has started, in order.
func (r *Run) Procs() []*Proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Proc(nil), r.procs...)
}

// Leftovers lists what of this run still exists: namespaces, interfaces in the root
// namespace, mounts, processes and files. Empty after a successful Close.
func (r *Run) Leftovers() []string {
	var left []string
	if out, err := exec.Command("ip", "netns", "list").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, r.ID) {
				left = append(left, "netns "+strings.Fields(line)[0])
			}
		}
	} else {
		left = append(left, "ip netns list: "+err.Error())
	}
	if out, err := exec.Command("ip", "-o", "link", "show").Output(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "pe"+r.short) {
				left = append(left, "link "+line)
			}
		}
	} else {
		left = append(left, "ip link: "+err.Error())
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, r.ID) {
				left = append(left, "mount "+line)
			}
		}
	}
	for _, pid := range markedPIDs(r.ID) {
		left = append(left, fmt.Sprintf("process %d (%s)", pid, procComm(pid)))
	}
	r.mu.Lock()
	procs := append([]*Proc(nil), r.procs...)
	r.mu.Unlock()
	for _, p := range procs {
		if !p.Exited() {
			left = append(left, fmt.Sprintf("process %d (%s) not reaped", p.PID(), p.Name))
		}
	}
	if _, err := os.Stat(r.Dir); err == nil {
		left = append(left, "dir "+r.Dir)
	}
	return left
}

var staleNS = regexp.MustCompile(`^` + regexp.QuoteMeta(NamePrefix) + `(\d+)-[0-9a-f]+`)

// SweepStale removes namespaces, processes and directories of earlier runs whose owner
// process is gone (a run killed by a test timeout cannot run its cleanup). Runs of live
// processes, including parallel ones, are left alone.
func SweepStale(baseDir string) {
	dead := func(pid string) bool {
		n, err := strconv.Atoi(pid)
		if err != nil || n == os.Getpid() {
			return false
		}
		return syscall.Kill(n, 0) == syscall.ESRCH
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	for _, pid := range markedPIDs("") {
		run := procMarker(pid)
		if owner, _, ok := strings.Cut(run, "-"); ok && dead(owner) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if ents, err := os.ReadDir("/run/netns"); err == nil {
		for _, e := range ents {
			if m := staleNS.FindStringSubmatch(e.Name()); m != nil && dead(m[1]) {
				_ = runCmd(ctx, "ip", "netns", "del", e.Name())
			}
		}
	}
	if ents, err := os.ReadDir(baseDir); err == nil {
		for _, e := range ents {
			if m := staleNS.FindStringSubmatch(e.Name()); m != nil && dead(m[1]) {
				_ = os.RemoveAll(filepath.Join(baseDir, e.Name()))
			}
		}
	}
}

// markedPIDs returns the processes whose environment carries MarkerEnv=id (any id when id is
// empty).
func markedPIDs(id string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		m := procMarker(pid)
		if m != "" && (id == "" || m == id) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procMarker returns the value of MarkerEnv in a process's environment, or "".
func procMarker(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return ""
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte(MarkerEnv+"=")); ok {
			return string(v)
		}
	}
	return ""
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// runCmd runs a short helper command and returns its output in the error when it fails.
func runCmd(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// inNetns returns argv that runs argv inside a named network namespace without touching the
// mount namespace (unlike `ip netns exec`).
func inNetns(ns string, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + filepath.Join("/run/netns", ns), "--"}, argv...)
}

// baseEnv is the environment of every process the run starts: a fixed PATH and the run marker.
// Nothing is inherited, so no RES_OPTIONS, LOCALDOMAIN or HOSTALIASES of the caller can change
// how the clients resolve.
func (r *Run) baseEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", MarkerEnv + "=" + r.ID}, extra...)
}

// Proc is a long-running process started by a Run.
type Proc struct {
	// Name says what the process is in errors and logs ("coredns be1", "stub pod0").
	Name string
	// LogPath holds the process's stdout and stderr unless the caller took stdout.
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start launches argv as a tracked process. The child gets SIGKILL if the run's process dies
// (Pdeathsig), so even a killed test binary leaves no process behind. If stdout is non-nil it
// receives the process's stdout; otherwise stdout and stderr go to a log file in Run.Dir.
func (r *Run) start(name string, env []string, stdout *os.File, argv ...string) (*Proc, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("netsim: run is closed")
	}
	p := &Proc{Name: name, done: make(chan struct{})}
	p.LogPath = filepath.Join(r.Dir, "log", fmt.Sprintf("%02d-%s.log", len(r.procs), strings.ReplaceAll(name, " ", "-")))
	if err := os.MkdirAll(filepath.Dir(p.LogPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(argv[0], argv[1:]...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if stdout != nil {
		p.cmd.Stdout = stdout
	}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r.procs = append(r.procs, p)
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process ID (nsenter and unshare exec, so it is the PID of the program itself).
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is the process's exit error; valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Kill sends SIGKILL and waits until the process is reaped.
func (p *Proc) Kill() error { return p.Signal(syscall.SIGKILL, 10*time.Second) }

// Signal sends sig and waits up to wait for the process to exit.
func (p *Proc) Signal(sig syscall.Signal, wait time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("%s (pid %d) did not exit %v after %v", p.Name, p.PID(), wait, sig)
	}
}

// Log returns the tail of the process's log file, for error messages.
func (p *Proc) Log() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return ""
	}
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// waitLine reads r until a line equal to want, EOF, or the deadline.
func waitLine(f *os.File, want string, timeout time.Duration) error {
	_ = f.SetReadDeadline(time.Now().Add(timeout))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == want {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return errors.New("exited before signalling readiness")
}
