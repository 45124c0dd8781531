// Package proc starts, stops and measures the processes the peer benchmark (e2e/bench) and the
// soak (e2e/soak) run: every process is registered in a Set so that it is stopped by PID and
// reaped whatever happens (an error, a signal, a panic in a measurement), and the end of a run can
// assert that nothing is left.
package proc

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Proc is one started process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	log  string // combined stdout/stderr
	done chan struct{}
	err  error // cmd.Wait's result, valid after done is closed
}

// Set tracks every process started, for the clean-up and the "nothing left running" check.
type Set struct {
	mu    sync.Mutex
	procs []*Proc
}

// Options says how Start runs a process.
type Options struct {
	// CPU pins the process to one CPU when ≥ 0. The affinity is set on the forking thread and
	// inherited by the child, instead of going through taskset, so that an exec-to-first-answer
	// time measures the program itself and not an extra exec. -1: not pinned.
	CPU int
	// AppendLog appends to logPath instead of truncating it (a restarted process keeps one log).
	AppendLog bool
}

// Start execs path with exactly env as its environment, its output to logPath, its working
// directory logPath's. Should this program be killed outright (no clean-up), the kernel kills the
// child (Pdeathsig).
func (s *Set) Start(name, logPath, path string, args, env []string, o Options) (*Proc, error) {
	flags := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if o.AppendLog {
		flags = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	logf, err := os.OpenFile(logPath, flags, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(logPath)
	// The death signal follows the forking thread; when pinning, that thread is locked below and
	// returned to the runtime's pool afterwards, never exited.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if o.CPU >= 0 {
		err = startPinned(cmd, o.CPU)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// startPinned starts cmd from a thread pinned to cpu, then restores the thread's affinity.
func startPinned(cmd *exec.Cmd, cpu int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, pin unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	pin.Set(cpu)
	if err := unix.SchedSetaffinity(0, &pin); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	err := cmd.Start()
	// Restore before unlocking: the thread goes back to the runtime's pool.
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil {
		// This thread stays pinned; harmless for correctness, but say so.
		fmt.Fprintf(os.Stderr, "proc: restoring CPU affinity: %v\n", rerr)
	}
	return err
}

// PID is the process's PID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has ended and been reaped.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error (nil for exit 0); valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// ProcessState is the ended process's state; valid once Done is closed.
func (p *Proc) ProcessState() *os.ProcessState { return p.cmd.ProcessState }

// Exited reports whether the process has ended (and been reaped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL and waits until the process is reaped.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop sends SIGTERM, then SIGKILL after 3 s, and waits until the process is reaped.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	p.Kill()
}

// Tail is the last 2,000 bytes of the process's log, for error messages.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Len is how many processes were started through s.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.procs)
}

// StopAll stops every process still running.
func (s *Set) StopAll() {
	s.mu.Lock()
	procs := append([]*Proc(nil), s.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		p.Stop()
	}
}

// AssertNoneRunning returns an error naming every started process that has not been reaped.
func (s *Set) AssertNoneRunning() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var left []string
	for _, p := range s.procs {
		if !p.Exited() {
			left = append(left, fmt.Sprintf("%s (pid %d)", p.Name, p.PID()))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("still running: %s", strings.Join(left, ", "))
	}
	return nil
}

// FreePort returns a port free for both UDP and TCP on addr at the time of the call. Another
// process could take it before it is used; the callers bind at once.
func FreePort(addr netip.Addr) (netip.AddrPort, error) {
	for range 20 {
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
		if err != nil {
			return netip.AddrPort{}, err
		}
		ap := l.Addr().(*net.TCPAddr).AddrPort()
		u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		l.Close()
		if err == nil {
			u.Close()
			return ap, nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("no port free for UDP and TCP on %s", addr)
}

// ParseVmRSS reads the VmRSS line of /proc/<pid>/status, in bytes.
func ParseVmRSS(status string) (float64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("unexpected VmRSS line %q", line)
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("unexpected VmRSS line %q: %w", line, err)
			}
			return float64(kb) * 1024, nil
		}
	}
	return 0, errors.New("no VmRSS line in /proc status")
}
