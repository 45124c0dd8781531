package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/wire"
)

// Health tracking. A node image once shipped a stale nameserver first in resolv.conf, and every
// lookup that tried it stalled for the whole timeout. A server whose attempts fail (no reply
// within Timeout, or the connection refused or unreachable) is therefore marked down after
// MaxFails consecutive failures and skipped while any server is up; one goroutine probes it in
// the background, with growing pauses, until it answers. Any reply, whatever its RCODE, proves a
// server alive: SERVFAIL and REFUSED are answers, not silence.

const (
	defaultMaxFails         = 1
	defaultProbeInterval    = 500 * time.Millisecond
	defaultProbeMaxInterval = 15 * time.Second
	defaultProbeName        = "."
)

// health is one server's liveness state.
type health struct {
	// down is read without the lock on every Exchange; it changes only under mu.
	down atomic.Bool
	// dirty is set while fails > 0 or the server is down, so that a successful attempt on a
	// healthy server takes no lock.
	dirty atomic.Bool
	// lastReply is when the server last gave a valid reply (f.mono): a timeout while the
	// server answered other queries is a slow query on a live server, not a dead server.
	lastReply atomic.Int64

	mu        sync.Mutex
	fails     int       // consecutive failed attempts
	downSince time.Time // f.now() when marked down; orders down servers when all are down
	probing   bool      // the prober goroutine runs
	closed    bool      // Close has begun: start no prober
	log       limiter   // up/down lines
	// loggedDown is set while the last up/down line written said "down": the next "up again"
	// line is then written whatever the limiter says, so that the log's last word on a server
	// is never a state it left. A flapping server still gets at most a down and an up line per
	// limiter interval: the downs are what the limiter holds back.
	loggedDown bool
}

// ProbeResult is the outcome of probing one server (see ProbeAll).
type ProbeResult struct {
	// Server is the normalised address, as in Servers and the metrics' upstream label.
	Server string
	// Up reports that the server answered the probe (any RCODE) within the bound.
	Up bool
	// RTT is the time from sending the probe to the reply when Up.
	RTT time.Duration
	// Err says why the server is down when !Up.
	Err error
	// Protocol is what the server's queries go over after the probe: "tcp", or "udp" in udp
	// mode and when the server answered over UDP only (the UDP fallback).
	Protocol string
}

// ProbeAll probes every server in parallel, marks the ones that answer up and the silent ones
// down (starting their background probers), and returns one result per server in the order of
// Servers. Each probe is bounded by Config.Timeout and by ctx. Call it before the stub reports
// ready, so that even the first lookup avoids a dead server. In tcp mode each probe goes over
// TCP and UDP at once: a server that answers over UDP only is up, and used over UDP from the
// first lookup on (fallback.go).
func (f *Forwarder) ProbeAll(ctx context.Context) []ProbeResult {
	res := make([]ProbeResult, len(f.peers))
	var wg sync.WaitGroup
	for i, p := range f.peers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if v := recover(); v != nil { // outside the probe: the markUp or markDown after it
					p.f.panicLog.Record(panics.Probe, v)
				}
			}()
			rtt, err := p.probeSafely(ctx, byStartupProbe)
			res[i] = ProbeResult{Server: p.addr, Up: err == nil, RTT: rtt, Err: err, Protocol: p.protocol()}
			switch {
			case err == nil:
				p.m.probesAlive.Inc()
				p.probeReplied()
				p.markUp(byStartupProbe)
			case errors.Is(err, ErrClosed):
			default:
				p.m.probesDead.Inc()
				p.noteError(probeReason, err)
				p.markDown(err)
			}
		}()
	}
	wg.Wait()
	return res
}

// order returns the servers one Exchange tries, in order: the servers that are up, in the
// configured order, or, when none is up, every server, the most recently healthy first (a server
// that failed a moment ago is likelier to answer than one silent for minutes).
func (f *Forwarder) order() []*peer {
	if f.downCount.Load() == 0 {
		return f.peers
	}
	up := make([]*peer, 0, len(f.peers))
	var down []*peer
	for _, p := range f.peers {
		if p.h.down.Load() {
			down = append(down, p)
		} else {
			up = append(up, p)
		}
	}
	if len(up) > 0 {
		for _, p := range down {
			p.m.skipped.Inc()
		}
		return up
	}
	since := make(map[*peer]time.Time, len(down))
	for _, p := range down {
		p.h.mu.Lock()
		since[p] = p.h.downSince
		p.h.mu.Unlock()
	}
	slices.SortStableFunc(down, func(a, b *peer) int { return since[b].Compare(since[a]) })
	return down
}

// replied records a valid reply that arrived at at (f.mono): the server is alive.
func (p *peer) replied(at int64) {
	p.h.lastReply.Store(at)
	if p.h.dirty.Load() {
		p.markUp(byReply)
	}
}

// probeReplied records a probe's reply as the server's last reply: a reply is a reply, and
// `stub status` said LAST REPLY never right after the start-up probe was answered.
func (p *peer) probeReplied() { p.h.lastReply.Store(p.f.mono()) }

// failed records a failed attempt that started at start (f.mono). A timeout does not count when
// the server gave another valid reply since the attempt began: it is alive, the query was slow.
func (p *peer) failed(err error, start int64, timeout bool) {
	if timeout && p.h.lastReply.Load() > start {
		return
	}
	p.h.mu.Lock()
	p.h.fails++
	p.h.dirty.Store(true)
	n := p.h.fails
	p.h.mu.Unlock()
	if n >= p.f.cfg.MaxFails {
		p.markDown(err)
	}
}

// markDown takes s out of rotation and starts its prober, unless it is down already.
func (p *peer) markDown(err error) {
	f := p.f
	now := f.now()
	p.h.mu.Lock()
	p.h.dirty.Store(true)
	if p.h.down.Load() {
		p.h.mu.Unlock()
		return
	}
	p.h.down.Store(true)
	p.h.downSince = now
	f.downCount.Add(1)
	p.m.healthy.Set(0)
	p.m.markedDown.Inc()
	if !p.h.probing && !p.h.closed {
		p.h.probing = true
		f.wg.Add(1)
		go p.probeLoop()
	}
	ok, suppressed := p.h.log.allow(now)
	if ok {
		p.h.loggedDown = true
	}
	p.h.mu.Unlock()
	if ok {
		// What order does with it from now on: skipped while another server is up; tried anyway
		// (the most recently marked down first) while every server is down.
		msg := "upstream down: skipped while another server is up, probed in the background"
		switch {
		case len(f.peers) == 1:
			msg = "upstream down: still tried (it is the only one), probed in the background"
		case int(f.downCount.Load()) == len(f.peers):
			msg = "upstream down, and so is every other: all still tried, the most recently marked down first, probed in the background"
		}
		f.cfg.Logger.Warn().Str("upstream", p.addr).Err(err).Int("suppressed", suppressed).Msg(msg)
	}
}

// What brought a server back: the value of the field "by" of the log line.
const (
	byProbe        = "probe" // its background prober, which ends with this call
	byStartupProbe = "startup probe"
	byReply        = "reply"
)

// markUp puts s back into rotation and forgets its failures.
func (p *peer) markUp(how string) {
	f := p.f
	now := f.now()
	p.h.mu.Lock()
	if how == byProbe {
		p.h.probing = false
	}
	p.h.fails = 0
	p.h.dirty.Store(false)
	if !p.h.down.Load() {
		p.h.mu.Unlock()
		return
	}
	p.h.down.Store(false)
	downFor := now.Sub(p.h.downSince)
	f.downCount.Add(-1)
	p.m.healthy.Set(1)
	ok, suppressed := true, 0
	if !p.h.loggedDown {
		ok, suppressed = p.h.log.allow(now)
	}
	p.h.loggedDown = false
	p.h.mu.Unlock()
	if ok {
		f.cfg.Logger.Info().Str("upstream", p.addr).Str("by", how).Float64("down_for", downFor.Seconds()).
			Int("suppressed", suppressed).Msg("upstream up again")
	}
}

// probeLoop probes a down server, waiting ProbeInterval before the first probe and twice as
// long after each failed one, up to ProbeMaxInterval, until the server answers, a reply to an
// ordinary query brings it back, or Close.
func (p *peer) probeLoop() {
	f := p.f
	defer f.wg.Done()
	interval := f.cfg.ProbeInterval
	for {
		select {
		case <-f.probeWait(interval):
		case <-f.ctx.Done():
			p.stopProbing()
			return
		}
		p.h.mu.Lock()
		if !p.h.down.Load() {
			// An ordinary query got a reply meanwhile. Deciding under the lock means a
			// markDown racing this exit sees probing still set, or starts a new prober.
			p.h.probing = false
			p.h.mu.Unlock()
			return
		}
		p.h.mu.Unlock()
		_, err := p.probeSafely(f.ctx, byProbe)
		switch {
		case errors.Is(err, ErrClosed):
			p.stopProbing()
			return
		case err == nil:
			p.m.probesAlive.Inc()
			p.probeReplied()
			p.markUp(byProbe)
		default:
			p.m.probesDead.Inc()
			p.noteError(probeReason, err)
		}
		if f.probeDone != nil {
			f.probeDone(p.addr, interval, err)
		}
		if err == nil {
			return
		}
		interval = min(2*interval, f.cfg.ProbeMaxInterval)
	}
}

func (p *peer) stopProbing() {
	p.h.mu.Lock()
	p.h.probing = false
	p.h.mu.Unlock()
}

// probeSafely is probe with a panic contained: it is recorded and the probe counts as failed,
// so that the prober goes on (with its back-off) instead of dying and leaving the server down for
// good, and a startup probe reports the server down instead of ending the process.
func (p *peer) probeSafely(ctx context.Context, by string) (rtt time.Duration, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.f.panicLog.Record(panics.Probe, v)
			rtt, err = 0, fmt.Errorf("%s: probe: %w", p.addr, errPanicked)
		}
	}()
	p.f.hook("probe")
	if p.f.udp {
		return p.probeOver(ctx, true)
	}
	return p.probeBoth(ctx, by) // TCP, or UDP when only UDP answers (fallback.go)
}

// probeOver sends the probe query (ProbeName NS IN, recursion desired, as CoreDNS's forward
// health check does) over UDP or TCP on a connection of its own, and waits for any reply
// carrying its ID, whatever the RCODE. It is bounded by Config.Timeout and ctx, and aborted by
// Close. A UDP probe that gets a truncated reply has its answer: the server is alive.
func (p *peer) probeOver(ctx context.Context, udp bool) (time.Duration, error) {
	f := p.f
	if f.closed.Load() {
		return 0, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	defer context.AfterFunc(f.ctx, cancel)()

	id := randID()
	framed := append([]byte(nil), f.probeWire...) // TCP length prefix, then the query
	wire.SetID(framed[2:], id)
	start := time.Now()
	var nc net.Conn
	var err error
	if udp {
		var d net.Dialer
		nc, err = d.DialContext(ctx, "udp", p.addr)
	} else {
		nc, err = f.dialTCP(ctx, p.addr)
	}
	if err != nil {
		return 0, p.probeErr(ctx, err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	defer context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo) })()

	if udp {
		_, err = nc.Write(framed[2:])
	} else {
		_, err = nc.Write(framed)
	}
	if err != nil {
		return 0, p.probeErr(ctx, err)
	}
	buf := make([]byte, dns.MaxMsgSize)
	for { // ends at ctx's deadline at the latest
		var msg []byte
		if udp {
			n, err := nc.Read(buf)
			if err != nil {
				return 0, p.probeErr(ctx, err)
			}
			msg = buf[:n]
		} else {
			var lb [2]byte
			if _, err := io.ReadFull(nc, lb[:]); err != nil {
				return 0, p.probeErr(ctx, err)
			}
			msg = buf[:int(lb[0])<<8|int(lb[1])]
			if _, err := io.ReadFull(nc, msg); err != nil {
				return 0, p.probeErr(ctx, err)
			}
		}
		// The header is enough: a response with the probe's ID is a live server.
		if len(msg) >= wire.HeaderLen && wire.ID(msg) == id && wire.IsResponse(msg) {
			return time.Since(start), nil
		}
	}
}

func (p *peer) probeErr(ctx context.Context, err error) error {
	switch {
	case p.f.ctx.Err() != nil:
		return ErrClosed
	case errors.Is(ctx.Err(), context.Canceled):
		return fmt.Errorf("%s: probe: %w", p.addr, ctx.Err())
	case ctx.Err() != nil, errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		// The socket deadline and ctx's timer end the same wait; either may come first.
		return fmt.Errorf("%s: probe: %w", p.addr, errTimeout)
	}
	return fmt.Errorf("%s: probe: %w", p.addr, err)
}

// packProbe builds the probe query with a zero ID and a TCP length prefix.
func packProbe(name string) ([]byte, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeNS)
	m.Id = 0
	b, err := m.Pack()
	if err != nil {
		return nil, err
	}
	return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...), nil
}

// defaultProbeWait waits d plus up to a tenth more, so that the stubs of pods started together
// do not probe a dead server in lockstep.
func defaultProbeWait(d time.Duration) <-chan time.Time {
	return time.After(d + rand.N(d/10+1))
}

// limiter lets through at most one log line per logInterval and counts the ones it held back.
type limiter struct {
	last       time.Time
	suppressed int
}

// allow reports whether a line may be written now and how many were held back before it. The
// caller holds the lock that guards l.
func (l *limiter) allow(now time.Time) (bool, int) {
	if !l.last.IsZero() && now.Sub(l.last) < logInterval {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed, l.last = 0, now
	return true, n
}

// Healthy reports whether at least one server is believed up. The server answers from stale cache
// entries at once when none is, instead of waiting for attempts that are known to fail.
func (f *Forwarder) Healthy() bool { return int(f.downCount.Load()) < len(f.peers) }
