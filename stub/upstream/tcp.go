package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/wire"
)

// errConnLost is delivered to the queries in flight on a connection that died under them (the
// server closed or reset it, a write failed, or the stub gave up on an unresponsive one). Such
// queries are re-sent on a new connection: a server closing its end is routine, not a failure.
var errConnLost = errors.New("connection lost")

// killHow says who ended a connection, which decides what it counts as.
type killHow int

const (
	killLocal killHow = iota // the stub: Close, idle expiry, unresponsive
	killWrite                // a write failed: the server closed or reset the connection
	killRead                 // the reader saw EOF or an error: the server closed or reset it
)

// call is one query registered on one connection.
type call struct {
	id uint16
	// q is the query's question in wire form (name, QTYPE, QCLASS), a slice of its frame: a
	// reply must carry it (see matches).
	q    []byte
	sent time.Time   // when it was written; a connection silent since then is unresponsive
	done chan result // capacity 1; exactly one send per registration that was not cancelled
}

// result is a packed reply, the caller's own, or the error that ended the query.
type result struct {
	msg []byte
	err error
}

// conn is one pipelined TCP connection. Its goroutine dials, then reads and demultiplexes
// replies by ID and question; the Exchanges write their own queries.
type conn struct {
	p     *peer
	ready chan struct{} // closed when the dial ended; nc is set unless it failed
	nc    net.Conn
	io    *rawIO     // raw reads and writes of nc (rawio_linux.go); nil: nc's own
	wmu   sync.Mutex // one frame at a time

	mu         sync.Mutex
	pending    map[uint16]*call
	assigned   int       // queries ever registered, against the server's budget
	answered   int       // replies delivered
	dead       bool      // killed: no registrations, pending already failed
	retired    bool      // takes no new queries; closed by the server or by idle expiry
	overBudget bool      // retired because it carried the server's learned budget
	lastActive time.Time // p.f.now(): last registration or reply
	lastRead   time.Time // wall clock of the last reply
	// lastProgress (p.f.now()) is the last reply, or when the first of the outstanding
	// queries was registered: how long the connection has kept its queries waiting.
	lastProgress time.Time
	idle         *time.Timer
}

// acquire registers cl on a connection with room, opening one when none has any.
//
// Servers built on miekg/dns (CoreDNS among them) answer the queries of one TCP connection one
// after the other, so a query sent behind another waits for it: behind a fast one, a round
// trip; behind a slow one (a forward to an external resolver), all of it. A query therefore goes
// on a connection with nothing outstanding (see busyAfter) and, when every open connection is
// busy and fewer than maxConns are open, on a new one: concurrent misses are as fast as single
// ones, as with CoreDNS's own forward plugin (one query per connection at a time). At the cap
// it queues on the connection with the fewest queries outstanding, one that has answered within
// stallAfter if there is one.
func (p *peer) acquire(cl *call) (*conn, error) {
	now := p.f.now()
	var expired []*conn
	defer func() {
		for _, c := range expired {
			c.kill(errConnLost, killLocal)
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f.closed.Load() {
		return nil, ErrClosed
	}
	for {
		usable := 0
		var least *conn // the best busy connection to queue on at the cap
		leastPending, leastStalled := 0, false
		for _, c := range p.conns {
			r, pending := c.register(cl, now, p.budget, false)
			switch r {
			case regOK:
				return c, nil
			case regExpired:
				expired = append(expired, c)
			case regFull:
				usable++
			case regBusy, regStalled:
				usable++
				stalled := r == regStalled
				if least == nil || (leastStalled && !stalled) || (leastStalled == stalled && pending < leastPending) {
					least, leastPending, leastStalled = c, pending, stalled
				}
			}
		}
		if usable < maxConns || least == nil {
			break
		}
		if r, _ := least.register(cl, now, p.budget, true); r == regOK {
			return least, nil
		}
		// It died or used up the server's budget meanwhile, and takes no more queries: look
		// again. Each round leaves one connection fewer to choose from.
	}
	c := &conn{p: p, ready: make(chan struct{}), pending: make(map[uint16]*call)}
	c.register(cl, now, p.budget, true)
	p.conns = append(p.conns, c)
	p.f.wg.Add(1)
	go c.run()
	return c, nil
}

// regResult says why register did or did not take a query.
type regResult int

const (
	regOK       regResult = iota
	regUnusable           // dead or retired
	regExpired            // idle past IdleTimeout; retired now, the caller closes it
	regFull               // maxInflight queries outstanding
	regStalled            // queries outstanding, no reply for stallAfter
	regBusy               // queries outstanding for longer than busyAfter
)

// register adds cl to c if c has room: with queue false, only if nothing on c would make cl
// wait (regBusy, regStalled otherwise); with queue true, behind whatever is outstanding. It also
// returns how many queries c has outstanding. An idle-expired connection is retired here, under
// its lock, so that nothing registers before the caller closes it: the stub must never send on a
// connection the server may be closing for idleness.
func (c *conn) register(cl *call, now time.Time, budget int, queue bool) (regResult, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pending := len(c.pending)
	if c.dead || c.retired {
		return regUnusable, pending
	}
	if pending >= maxInflight {
		return regFull, pending
	}
	if c.nc != nil && pending == 0 && now.Sub(c.lastActive) >= c.p.f.cfg.IdleTimeout {
		c.retired = true
		return regExpired, pending
	}
	if !queue && pending > 0 {
		if c.nc != nil && now.Sub(c.lastProgress) >= c.p.f.stallAfter {
			return regStalled, pending
		}
		if now.Sub(c.lastProgress) > c.p.f.busyAfter {
			return regBusy, pending
		}
	}
	if budget > 0 && c.assigned >= budget {
		c.retired, c.overBudget = true, true
		return regUnusable, pending
	}
	id := randID()
	for c.pending[id] != nil { // at most maxInflight of 65536 taken: ends at once
		id = randID()
	}
	cl.id = id
	if pending == 0 {
		c.lastProgress = now
	}
	c.pending[id] = cl
	c.assigned++
	c.lastActive = now
	if budget > 0 && c.assigned >= budget {
		c.retired, c.overBudget = true, true
	}
	return regOK, pending + 1
}

// cancel withdraws cl from c. false means a result was already delivered or is on its way.
func (c *conn) cancel(cl *call) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending[cl.id] != cl {
		return false
	}
	delete(c.pending, cl.id)
	c.lastActive = c.p.f.now()
	return true
}

// run dials, then reads replies until the connection dies. A panic (in the dial, or while a
// reply is decoded) ends the connection as a loss does: its queries are re-sent on another
// connection, none is left waiting, and the next query that needs a connection dials one.
func (c *conn) run() {
	p := c.p
	defer p.f.wg.Done()
	defer p.remove(c)
	defer func() {
		if v := recover(); v != nil {
			p.f.panicLog.Record(panics.Upstream, v)
			c.kill(fmt.Errorf("%w: %w", errConnLost, errPanicked), killLocal)
		}
	}()
	ctx, cancel := context.WithTimeout(p.f.ctx, p.f.cfg.Timeout)
	nc, err := p.f.dialTCP(ctx, p.addr)
	cancel()
	err = c.connected(nc, err)
	close(c.ready)
	if err != nil {
		if !errors.Is(err, ErrClosed) && p.f.ctx.Err() != nil {
			err = ErrClosed
		}
		c.kill(err, killLocal)
		return
	}
	p.m.open.Inc()
	defer p.m.open.Dec()

	var rd io.Reader = nc
	if c.io != nil {
		rd = c.io
	}
	br := bufio.NewReader(rd)
	var lb [2]byte
	for {
		if _, err = io.ReadFull(br, lb[:]); err != nil {
			break
		}
		buf := make([]byte, int(lb[0])<<8|int(lb[1]))
		if _, err = io.ReadFull(br, buf); err != nil {
			break
		}
		c.deliver(buf)
	}
	c.kill(fmt.Errorf("%w: %v", errConnLost, err), killRead)
}

// connected records the dial's outcome and returns the dial's error, or ErrClosed when c was
// killed while dialing. The lock is released by a defer: a panic here must not leave it held,
// or run's recovery could not kill c.
func (c *conn) connected(nc net.Conn, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil && c.dead {
		nc.Close() // killed (Close) while dialing
		err = ErrClosed
	}
	if err == nil {
		c.nc = nc
		c.io = newRawIO(nc)
		c.lastActive = c.p.f.now()
		c.lastProgress = c.lastActive // the wait so far was the dial, not the server
		c.idle = time.AfterFunc(c.p.f.cfg.IdleTimeout, c.idleCheck)
	}
	return err
}

// deliver hands a reply, buf (owned by the query it answers), to that query; anything else, a
// reply that is not well-formed or answers no pending query, is dropped and counted.
func (c *conn) deliver(buf []byte) {
	c.p.f.hook("reader")
	if !wellFormed(buf) {
		c.p.m.errBadReply.Inc()
		return
	}
	cl := c.take(buf)
	if cl == nil {
		c.p.m.errBadReply.Inc()
		return
	}
	cl.done <- result{msg: buf}
}

// take withdraws and returns the query msg answers, or nil when none does. The lock is released
// by a defer, as in connected.
func (c *conn) take(msg []byte) *call {
	if len(msg) < wire.HeaderLen {
		return nil
	}
	id := wire.ID(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := c.pending[id]
	if cl == nil || !matches(msg, id, cl.q) {
		return nil
	}
	delete(c.pending, id)
	c.answered++
	c.lastActive = c.p.f.now()
	c.lastProgress = c.lastActive
	c.lastRead = time.Now()
	return cl
}

// kill closes c and fails its queries with err. It reports whether this call did it.
func (c *conn) kill(err error, how killHow) bool {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return false
	}
	c.dead = true
	pending := c.pending
	c.pending = nil
	answered := c.answered
	if c.idle != nil {
		c.idle.Stop()
	}
	nc := c.nc
	c.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	p := c.p
	if how != killLocal && len(pending) > 0 {
		p.m.reconnects.Inc()
		p.m.errClosed.Add(float64(len(pending)))
		// Learn the server's per-connection query limit before the queries are re-sent, so
		// they spread over connections the server will serve to the end. Only the reader
		// knows how many replies really arrived before the close.
		if how == killRead && answered > 0 {
			p.setBudget(answered)
		}
	}
	for _, cl := range pending {
		cl.done <- result{err: err}
	}
	return true
}

// idleCheck closes c once it has had nothing in flight for IdleTimeout, and otherwise re-arms
// for the remaining time: one timer per connection, never reset per query.
//
// It runs on a timer's goroutine of its own; a panic there closes c, as the reader's does.
func (c *conn) idleCheck() {
	defer func() {
		if v := recover(); v != nil {
			c.p.f.panicLog.Record(panics.Upstream, v)
			c.kill(fmt.Errorf("%w: %w", errConnLost, errPanicked), killLocal)
		}
	}()
	idleTimeout := c.p.f.cfg.IdleTimeout
	now := c.p.f.now() // outside the lock: the clock is the caller's, and may panic
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	idleFor := now.Sub(c.lastActive)
	if len(c.pending) == 0 && idleFor >= idleTimeout {
		c.retired = true
		overBudget := c.overBudget
		c.mu.Unlock()
		if c.kill(errConnLost, killLocal) && overBudget {
			// The server did not close a connection that carried the learned budget: the
			// limit was a guess from a restart or a cut, not a real per-connection limit.
			c.p.setBudget(0)
		}
		return
	}
	wait := idleTimeout - idleFor
	if len(c.pending) > 0 || wait <= 0 {
		wait = idleTimeout
	}
	c.idle.Reset(wait)
	c.mu.Unlock()
}

func (p *peer) setBudget(n int) {
	p.mu.Lock()
	old := p.budget
	p.budget = n
	p.mu.Unlock()
	if old != n {
		p.f.cfg.Logger.Debug().Str("upstream", p.addr).Int("queries_per_connection", n).
			Msg("upstream per-connection query limit changed (0 = none)")
	}
}

func (p *peer) remove(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.conns {
		if x == c {
			p.conns = slices.Delete(p.conns, i, i+1) // zeroes the freed slot for the GC
			return
		}
	}
}

// write sends one framed query.
func (c *conn) write(b []byte, deadline time.Time) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.nc.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if c.io != nil {
		_, err := c.io.Write(b)
		return err
	}
	_, err := c.nc.Write(b)
	return err
}

// writeFailed handles a failed write. A reset or closed connection is left to the reader:
// replies the server sent before closing are still in the socket's receive buffer, and only
// the reader can count them (the server's per-connection limit) and hand them over. A write
// that timed out leaves a partial frame behind, so the connection is closed at once.
func (c *conn) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.kill(fmt.Errorf("%w: %v", errConnLost, err), killWrite)
		return
	}
	c.mu.Lock()
	c.retired = true
	c.mu.Unlock()
	// The reader wakes with the reset. The deadline covers a socket whose read side stays
	// open: replies sent before the failure are already in the receive buffer, so a short
	// grace loses none, and the queries get their re-send well within the attempt.
	c.nc.SetReadDeadline(time.Now().Add(min(writeFailGrace, c.p.f.cfg.Timeout/4)))
}

// viaTCP sends the query over a pooled connection and waits for its reply, re-sending it
// on a new connection (at most maxResends times) when the connection dies under it.
func (p *peer) viaTCP(qs *queryState, deadline time.Time) ([]byte, error) {
	cl := &qs.call
	timeout := qs.armTimer(deadline)
	done := p.f.ctx.Done()
	for resends := 0; ; resends++ {
		cl.sent = time.Time{}
		c, err := p.acquire(cl)
		if err != nil {
			return nil, err
		}
		var res result
		got := false
		select {
		case <-c.ready:
		case res = <-cl.done: // the dial failed, or Close
			got = true
		case <-timeout:
			return p.giveUp(c, cl, errTimeout)
		case <-qs.ctx.Done():
			return p.giveUp(c, cl, qs.ctx.Err())
		case <-done:
			return p.giveUp(c, cl, ErrClosed)
		}
		if !got {
			// c.nc is nil when the dial failed: the failure is on its way to cl.done.
			if c.nc != nil {
				qs.setID(cl.id)
				cl.sent = time.Now()
				if err := c.write(qs.frame, deadline); err != nil {
					c.writeFailed(err)
				}
			}
			select {
			case res = <-cl.done:
			case <-timeout:
				return p.giveUp(c, cl, errTimeout)
			case <-qs.ctx.Done():
				return p.giveUp(c, cl, qs.ctx.Err())
			case <-done:
				return p.giveUp(c, cl, ErrClosed)
			}
		}
		if res.err == nil {
			return res.msg, nil
		}
		if !errors.Is(res.err, errConnLost) || resends >= maxResends {
			return nil, fmt.Errorf("%s: %w", p.addr, res.err)
		}
	}
}

// giveUp withdraws cl after a timeout or cancellation. A reply that raced in is still taken.
// A connection that stayed silent since the query was written is closed: a server that
// answers nothing must not keep swallowing the next queries.
func (p *peer) giveUp(c *conn, cl *call, why error) ([]byte, error) {
	if !c.cancel(cl) {
		if res := <-cl.done; res.err == nil {
			return res.msg, nil
		}
	} else if why == errTimeout {
		c.mu.Lock()
		silent := c.nc != nil && !cl.sent.IsZero() && c.lastRead.Before(cl.sent)
		c.mu.Unlock()
		if silent {
			c.kill(errConnLost, killLocal)
		}
	}
	if errors.Is(why, ErrClosed) {
		return nil, ErrClosed
	}
	if errors.Is(why, context.Canceled) || errors.Is(why, context.DeadlineExceeded) {
		return nil, why
	}
	return nil, fmt.Errorf("%s: %w after %v", p.addr, why, p.f.cfg.Timeout)
}
