package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/podns/podns/e2e/internal/proc"
)

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

// cpuNanos is the process's CPU time in nanoseconds, all threads included (see schedstat).
func cpuNanos(pid int) (float64, error) {
	s, err := schedstat(pid)
	return s.onCPU, err
}

// schedStat is a process's scheduler accounting, summed over its threads.
type schedStat struct {
	// onCPU is the time on a CPU, in nanoseconds.
	onCPU float64
	// slices is how many times a thread was switched in ("timeslices"): about one per wake-up
	// of a thread that sleeps between packets.
	slices float64
}

// schedstat sums /proc/<pid>/task/*/schedstat: time on a CPU (first field, from the scheduler's
// own accounting) and timeslices run (third field). Unlike utime+stime, which are counted in
// 10 ms ticks, it resolves the few hundred milliseconds of CPU a fixed-rate run costs. A thread
// that exited between two readings takes its counts with it; the servers measured keep their
// threads.
func schedstat(pid int) (schedStat, error) {
	var sum schedStat
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return sum, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // the thread exited after ReadDir
		}
		if err != nil {
			return sum, err
		}
		s, err := parseSchedstatLine(string(b))
		if err != nil {
			return sum, err
		}
		sum.onCPU += s.onCPU
		sum.slices += s.slices
	}
	return sum, nil
}

// parseSchedstat reads the time on a CPU, in nanoseconds, from a schedstat line
// ("<on-CPU ns> <waiting ns> <timeslices>").
func parseSchedstat(line string) (float64, error) {
	s, err := parseSchedstatLine(line)
	return s.onCPU, err
}

// parseSchedstatLine reads a schedstat line: "<on-CPU ns> <waiting ns> <timeslices>".
func parseSchedstatLine(line string) (schedStat, error) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return schedStat{}, fmt.Errorf("malformed schedstat %q", line)
	}
	ns, err1 := strconv.ParseUint(f[0], 10, 64)
	n, err2 := strconv.ParseUint(f[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return schedStat{}, fmt.Errorf("malformed schedstat %q: %w", line, err)
	}
	return schedStat{onCPU: float64(ns), slices: float64(n)}, nil
}

// rssBytes is the process's resident set size (VmRSS).
func rssBytes(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return proc.ParseVmRSS(string(b))
}
