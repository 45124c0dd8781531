// Package panics counts and logs the panics that the stub's serving goroutines recover from.
//
// No panic may end the process: one poison query, or a bug in a dependency, reachable from a
// goroutine that serves queries would otherwise take DNS away from the whole pod until the kubelet
// restarts the container (see docs/manual.md, "Panics"). Each goroutine that handles a query or a
// reply recovers at its boundary, answers SERVFAIL to the client still owed a reply, and hands the
// panic value to a Recorder, which counts it in podns_panics_total and logs it with its stack.
package panics

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Where names the kind of goroutine that recovered a panic: the value of the label "where" of
// podns_panics_total and of the field "where" of the log line.
type Where int

const (
	UDP      Where = iota // a UDP reader: the fast path (parse, cache hit) of one datagram
	TCP                   // a client TCP connection: the fast path of one message
	Miss                  // a client's cache miss, upstream query included
	Prefetch              // a prefetch or search-path prefetch: no client waits on it
	Upstream              // an upstream TCP connection's reader, or its idle timer
	Probe                 // an upstream liveness probe, at startup or of a down server
	numWhere
)

var whereNames = [numWhere]string{"udp", "tcp", "miss", "prefetch", "upstream", "probe"}

func (w Where) String() string { return whereNames[w] }

// LogInterval is the shortest gap between two log lines for one Where: a query that panics
// every time it is asked must not turn the log into a stream of stacks. The counter counts every
// panic; each line says how many were held back before it.
const LogInterval = 10 * time.Second

// Recorder counts and logs recovered panics. The zero value counts them and logs nothing; it is
// safe for concurrent use and must not be copied after first use.
type Recorder struct {
	// Logger gets one error line per panic, at most one per LogInterval per Where.
	Logger zerolog.Logger
	// Now is the clock of the rate limit. Default time.Now.
	Now func() time.Time

	mu      sync.Mutex
	limiter [numWhere]limiter
}

// Record counts the panic value v recovered at w and logs it, with the current goroutine's stack,
// unless a line for w went out less than LogInterval ago. Call it from the deferred function that
// called recover: the stack there still holds the frames that panicked.
func (r *Recorder) Record(w Where, v any) {
	counters[w].Inc()
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	r.mu.Lock()
	ok, suppressed := r.limiter[w].allow(now())
	r.mu.Unlock()
	if !ok {
		return
	}
	r.Logger.Error().Str("where", w.String()).Str("panic", fmt.Sprint(v)).Int("suppressed", suppressed).
		Str("stack", string(debug.Stack())).Msg("recovered from a panic; a client still owed a reply got SERVFAIL")
}

// limiter lets through at most one line per LogInterval and counts the ones it held back.
type limiter struct {
	last       time.Time
	suppressed int
}

// allow reports whether a line may be written now and how many were held back before it.
func (l *limiter) allow(now time.Time) (bool, int) {
	if !l.last.IsZero() && now.Sub(l.last) < LogInterval {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed, l.last = 0, now
	return true, n
}
