package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one process the soak started: the stub or a CoreDNS upstream. Every proc is
// registered in a procSet so that it is killed by PID and reaped whatever happens.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // combined stdout/stderr
	done chan struct{}
	err  error // cmd.Wait's result, valid after done is closed
}

// procSet tracks every process started, for the cleanup and the "nothing left" check.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

// start execs path with a clean environment (PATH plus env: nothing from the caller's leaks in,
// no GOMAXPROCS, GOGC or PODNS_*), its output to logPath (appended: a restarted CoreDNS keeps
// one log).
func (s *procSet) start(name, logPath, path string, args, env []string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(path, args...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = filepath.Dir(logPath)
	// Should the soak itself be killed outright, the kernel kills its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits until the process is reaped: the restart fault, a crash as
// abrupt as an OOM kill or a node failure.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
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
	p.kill()
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

func (s *procSet) stopAll() {
	s.mu.Lock()
	procs := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
}

// assertNoneRunning names every started process that has not been reaped.
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

// freePort returns a port free for both UDP and TCP on addr at the time of the call.
func freePort(addr netip.Addr) (netip.AddrPort, error) {
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

// sample is the stub's resource use at one moment.
type sample struct {
	at         time.Time
	rss        float64 // bytes, VmRSS
	goroutines float64 // go_goroutines from /metrics
	fds        int     // entries of /proc/PID/fd
	// heapInuse is go_memstats_heap_inuse_bytes: with the RSS it tells the Go heap's cycle
	// (which moves it) from pages the runtime has not returned (which do not).
	heapInuse float64
}

// metricsClient never keeps a connection open: a kept-alive scrape connection would be an open
// FD and a goroutine in the stub, counted in the very figures it reads.
var metricsClient = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// takeSample reads the stub's VmRSS, open FDs and goroutines.
func takeSample(pid int, metricsURL string) (sample, error) {
	s := sample{at: time.Now()}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	if s.rss, err = parseVmRSS(string(b)); err != nil {
		return s, err
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, err
	}
	s.fds = len(fds)
	text, err := scrape(metricsURL)
	if err != nil {
		return s, err
	}
	if s.goroutines = promValue(text, "go_goroutines"); math.IsNaN(s.goroutines) {
		return s, errors.New("no go_goroutines in /metrics")
	}
	s.heapInuse = promValue(text, "go_memstats_heap_inuse_bytes")
	return s, nil
}

func scrape(url string) (string, error) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), nil
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

// promValue is the value of an unlabelled metric in Prometheus text format, NaN when absent.
func promValue(text, name string) float64 {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64); err == nil {
			return v
		}
	}
	return math.NaN()
}
