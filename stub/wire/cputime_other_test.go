//go:build !unix

package wire

import (
	"testing"
	"time"
)

func cpuTime(testing.TB) time.Duration { return 0 }
