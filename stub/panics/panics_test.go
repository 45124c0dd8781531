package panics

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
)

func record(r *Recorder, w Where) {
	defer func() { r.Record(w, recover()) }()
	panic("boom")
}

// One line per Where per LogInterval, the next one counting those held back; every panic is
// counted; the Wheres do not share a limit.
func TestRecorderCountsEveryPanicAndRateLimitsTheLog(t *testing.T) {
	var buf bytes.Buffer
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	r := &Recorder{Logger: zerolog.New(&buf), Now: clock.Now}
	base, baseTCP := testutil.ToFloat64(Counter(Miss)), testutil.ToFloat64(Counter(TCP))
	for range 3 {
		record(r, Miss)
	}
	record(r, TCP)
	if got := testutil.ToFloat64(Counter(Miss)) - base; got != 3 {
		t.Errorf("miss counted %v, want 3", got)
	}
	if got := testutil.ToFloat64(Counter(TCP)) - baseTCP; got != 1 {
		t.Errorf("tcp counted %v, want 1", got)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"where":"miss"`) || !strings.Contains(lines[1], `"where":"tcp"`) {
		t.Fatalf("lines %q: want one for miss, one for tcp", lines)
	}
	if !strings.Contains(lines[0], `"panic":"boom"`) || !strings.Contains(lines[0], "panics.record") {
		t.Errorf("line %q: want the value and the panicking frame", lines[0])
	}
	clock.Advance(LogInterval - time.Nanosecond)
	record(r, Miss)
	clock.Advance(time.Nanosecond)
	record(r, Miss)
	lines = strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], `"suppressed":3`) {
		t.Errorf("lines %q: want a third line counting 3 held back", lines)
	}
}

// The zero Recorder counts and writes nothing: servers built without New (tests, fuzzing) have one.
func TestZeroRecorder(t *testing.T) {
	var r Recorder
	base := testutil.ToFloat64(Counter(Probe))
	record(&r, Probe)
	if got := testutil.ToFloat64(Counter(Probe)) - base; got != 1 {
		t.Errorf("counted %v, want 1", got)
	}
}
