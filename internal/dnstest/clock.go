package dnstest

import (
	"sync"
	"time"
)

// Clock is a time source that moves only when told, for the injectable now funcs of
// stub/cache (Config.Now), stub/upstream (Config.Now) and stub/server (through its cache): pass
// its Now method. It keeps TTL countdown, idle expiry and stall detection out of the hands of
// a slow machine. It is safe for concurrent use, and Now does not allocate (the cache hit path
// is measured at 0 allocations with it).
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock that reads start until Advance moves it. The monotonic reading of
// start is dropped, so that times from the clock compare by wall time alone.
func NewClock(start time.Time) *Clock { return &Clock{t: start.Round(0)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock by d (backwards when d < 0).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
