//go:build unix

package dnstest

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is the process's user+system CPU time (getrusage(2), RUSAGE_SELF). Benchmarks report
// it per op because wall-clock ns/op is meaningless on a machine shared with other jobs. It
// fails the benchmark when getrusage does.
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
