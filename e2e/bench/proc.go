package main

import (
	"errors"
	"fmt"
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

// proc is one process the benchmark started. Every proc is registered in a procSet so that it is
// killed by PID and reaped whatever happens (error, signal, panic in a measurement).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // combined stdout/stderr, for the error message when it dies early
	done chan struct{}
	err  error // cmd.Wait's result, valid after done is closed
}

// procSet tracks every process started, so that cleanup and the final "nothing left running"
// assertion can cover them all.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

// startPinned execs path on the given CPU. The affinity is set on the forking thread and
// inherited by the child, instead of going through taskset, so that the exec-to-first-answer
// time measures the program itself and not an extra exec.
func (s *procSet) startPinned(cpu int, name, logPath, path string, args, env []string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(logPath)
	// Should this program be killed outright (no cleanup), the kernel kills its children. The
	// signal follows the forking thread, which is locked below and returned to the runtime's
	// pool afterwards, never exited.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	runtime.LockOSThread()
	var old, pin unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("sched_getaffinity: %w", err)
	}
	pin.Set(cpu)
	if err := unix.SchedSetaffinity(0, &pin); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	err = cmd.Start()
	// Restore before unlocking: the thread goes back to the runtime's pool.
	rerr := unix.SchedSetaffinity(0, &old)
	runtime.UnlockOSThread()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	if rerr != nil {
		// This thread stays pinned; harmless for correctness, but say so.
		fmt.Fprintf(os.Stderr, "bench: restoring CPU affinity: %v\n", rerr)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// pid is the process's PID.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended (and been reaped).
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, then SIGKILL after 3 s, and waits until the process is reaped.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(3 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return strings.TrimSpace(string(b))
}

// stopAll stops every process still running.
func (s *procSet) stopAll() {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
}

// assertNoneRunning returns an error naming any started process that has not been reaped.
func (s *procSet) assertNoneRunning() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var left []string
	for _, p := range s.procs {
		if !p.exited() {
			left = append(left, fmt.Sprintf("%s (pid %d)", p.name, p.pid()))
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("still running: %s", strings.Join(left, ", "))
	}
	return nil
}

// clockTick is the unit of utime/stime in /proc/<pid>/stat (USER_HZ). It is 100 on every Linux
// architecture Go supports; getconf is asked once anyway.
var clockTick = func() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if v, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && v > 0 {
			return float64(v)
		}
	}
	return 100
}()

// cpuSeconds is the process's user+system CPU time, all threads included.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(string(b), clockTick)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a /proc/<pid>/stat line. The
// command name (field 2) may contain spaces and parentheses, so fields are counted from the
// last ')'.
func parseStatCPU(stat string, tick float64) (float64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat: no ')'")
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 13 {
		return 0, fmt.Errorf("malformed /proc stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("malformed /proc stat: %w", err)
	}
	return float64(ut+st) / tick, nil
}

// rssBytes is the process's resident set size (VmRSS).
func rssBytes(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmRSS(string(b))
}

// parseVmRSS reads the VmRSS line of /proc/<pid>/status, in bytes.
func parseVmRSS(status string) (float64, error) {
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
