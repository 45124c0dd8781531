package server

import (
	"context"
	"sync/atomic"
	"time"
)

// A miss's upstream query runs under a context whose deadline is the forwarder's
// MaxExchangeTime from the miss's start, so that no miss outlives it (a forwarder that hangs, a
// coalesced waiter whose leader does). A context.WithTimeout per miss cost four allocations and
// a timer started and stopped on every miss, a tenth of the miss path's allocations (issue 12
// item 5). Misses that start within missSlot of each other share one context instead: it ends
// no sooner than MaxExchangeTime after any of them started, and at most missSlot later. Nothing
// cancels it early: a miss that is answered just stops waiting on it.

// missSlot is how much later than MaxExchangeTime a miss's context may end: one context (and
// one timer) per missSlot of misses.
const missSlot = 100 * time.Millisecond

// sharedDeadline is the context the misses of one slot share, and its deadline.
type sharedDeadline struct {
	ctx    context.Context
	cancel context.CancelFunc // never called early; kept so that the deadline's timer is owned
	until  time.Time
}

// missContexts hands out the shared contexts.
type missContexts struct {
	cur atomic.Pointer[sharedDeadline]
}

// get returns a context that ends no sooner than d from now and no later than d+missSlot.
func (m *missContexts) get(d time.Duration) context.Context {
	now := time.Now()
	need := now.Add(d)
	if c := m.cur.Load(); c != nil && !c.until.Before(need) && c.until.Sub(need) <= missSlot {
		return c.ctx
	}
	until := need.Add(missSlot)
	c := &sharedDeadline{until: until}
	c.ctx, c.cancel = context.WithDeadline(context.Background(), until)
	m.cur.Store(c) // a racing miss's context is just as good: each covers its own miss
	return c.ctx
}
