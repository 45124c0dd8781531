//go:build !unix

package dnstest

import (
	"testing"
	"time"
)

// CPUTime is 0 where getrusage(2) does not exist: cpu-ns/op then reads 0.
func CPUTime(testing.TB) time.Duration { return 0 }
