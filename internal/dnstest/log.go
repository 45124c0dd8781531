package dnstest

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// LogBuffer collects a zerolog logger's output in a test. It is safe for the many goroutines a
// server logs from. The zero value is ready to use.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Records decodes the JSON lines written so far, in order, and returns those keep accepts (keep
// nil: all). A line that is not JSON fails the test.
func (b *LogBuffer) Records(tb testing.TB, keep func(map[string]any) bool) []map[string]any {
	tb.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			tb.Fatalf("log line %q: %v", l, err)
		}
		if keep == nil || keep(m) {
			out = append(out, m)
		}
	}
	return out
}

// Message returns a Records filter for the lines whose message is msg.
func Message(msg string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["message"] == msg }
}
