// Package querylog is the stub's query log: one JSON line per answered query that the current
// mode selects, written through zerolog, at most PODNS_QUERY_LOG_RATE lines per second. The mode
// (PODNS_QUERY_LOG) changes while the stub runs, through the admin endpoint (PUT /debug/querylog),
// without a restart; every change is logged with who made it.
//
// The fields are the ones people grep CoreDNS's log plugin output for (remote, id, type, name,
// proto, rcode, size, duration) and podns's own: where the answer came from (cache), the upstream
// that answered and how many upstream attempts it took.
package querylog

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mode selects the answers that get a line. The zero Mode is Off.
type Mode struct {
	// v encodes the mode in one int64, so that the Log holds it in one atomic and the hit path
	// reads it with one load: 0 off, -1 errors, -2 all, > 0 slow with this threshold (ns).
	v int64
}

// The modes without a parameter; Slow makes the other.
var (
	// Off writes no line (the default).
	Off = Mode{}
	// Errors writes a line for answers with rcode SERVFAIL, REFUSED, NOTIMP or FORMERR, answers
	// the stub made up itself because it could not give a real one (cache=error: BADVERS,
	// SERVFAIL when no upstream answered), stale answers (RFC 8767), and answers that took more
	// than one upstream attempt (an upstream timed out, refused or was passed over first).
	Errors = Mode{v: -1}
	// All writes a line for every answer and every prefetch.
	All = Mode{v: -2}
)

// Slow returns the mode that writes a line for every answer that took longer than d (d > 0;
// ParseMode takes MinSlow to MaxSlow).
func Slow(d time.Duration) Mode { return Mode{v: int64(d)} }

// The bounds of slow:<duration>. Below a millisecond every miss is slow (a hit takes tens of
// µs): that is `all`. Above a minute nothing is: the stub gives up on a query after
// PODNS_UPSTREAM_TIMEOUT (at most 30 s) per upstream. A new-user trial's slow:1000000h was
// accepted and logged nothing.
const (
	MinSlow = time.Millisecond
	MaxSlow = time.Minute
)

// Allowed is the text of the allowed values, for errors and the variable's help.
const Allowed = "off, errors, slow:<duration> (1ms to 1m, e.g. slow:100ms), all"

// ParseMode parses "off", "errors", "all" or "slow:<duration>" (time.ParseDuration syntax,
// MinSlow to MaxSlow, e.g. slow:100ms). Surrounding white space is ignored, as in every PODNS_*
// value (envconfig.Load); nothing else is accepted. The error says what is wrong, not the value
// nor the allowed values (Allowed): callers add those.
func ParseMode(s string) (Mode, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "off":
		return Off, nil
	case "errors":
		return Errors, nil
	case "all":
		return All, nil
	}
	if rest, ok := strings.CutPrefix(s, "slow:"); ok {
		d, err := time.ParseDuration(rest)
		if err != nil || d <= 0 {
			return Off, errors.New("slow needs a duration above 0, e.g. slow:100ms")
		}
		if d < MinSlow || d > MaxSlow {
			return Off, fmt.Errorf("slow:%s out of range: 1ms to 1m", rest) // MinSlow, MaxSlow
		}
		return Slow(d), nil
	}
	return Off, errors.New("not a query log mode")
}

// String gives the mode in the form ParseMode reads: "off", "errors", "all" or "slow:100ms" (the
// duration as time.Duration prints it, so slow:1000ms comes back as slow:1s).
func (m Mode) String() string {
	switch {
	case m.v == 0:
		return "off"
	case m.v == -1:
		return "errors"
	case m.v == -2:
		return "all"
	}
	return "slow:" + time.Duration(m.v).String()
}

// SlowThreshold returns the threshold of a slow mode; ok is false for the other modes.
func (m Mode) SlowThreshold() (d time.Duration, ok bool) {
	if m.v > 0 {
		return time.Duration(m.v), true
	}
	return 0, false
}

// UnmarshalText parses the mode (ParseMode), for PODNS_QUERY_LOG and JSON.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := ParseMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}

// MarshalText gives String, for JSON.
func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }
