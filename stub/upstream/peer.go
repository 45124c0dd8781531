package upstream

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// queryState is the state of one Exchange call, shared by its attempts.
type queryState struct {
	f     *Forwarder
	ctx   context.Context
	frame []byte
	call  call // reused by every send: registered with at most one connection at a time
	timer *time.Timer
}

// armTimer makes qs.timer fire at deadline; the timer is created on first use because UDP
// attempts rely on socket deadlines instead.
func (qs *queryState) armTimer(deadline time.Time) <-chan time.Time {
	d := time.Until(deadline)
	if qs.timer == nil {
		qs.timer = time.NewTimer(d)
	} else {
		qs.timer.Reset(d) // Go ≥1.23 timers: no stale value survives Reset
	}
	return qs.timer.C
}

func (qs *queryState) stopTimer() {
	if qs.timer != nil {
		qs.timer.Stop()
	}
}

// setID writes id, the upstream ID of the next send (see randID), into the query's frame.
func (qs *queryState) setID(id uint16) {
	wire.SetID(qs.frame[2:], id)
}

// randID returns a random upstream query ID. math/rand/v2's top-level functions use the
// runtime's ChaCha8 generator, seeded from the OS's cryptographic randomness: IDs are
// unpredictable to an off-path spoofer (RFC 5452) and cost no lock.
func randID() uint16 { return uint16(rand.Uint32()) }

// peer is one upstream server: its TCP pool, health, metrics and log limiter.
type peer struct {
	f       *Forwarder
	addr    string // normalised "ip:port", the metrics label
	ap      netip.AddrPort
	udpAddr *net.UDPAddr
	m       peerMetrics

	mu    sync.Mutex
	conns []*conn // open or dialing; retired and dead ones stay until their goroutine ends
	// budget is the number of queries one connection may carry, learned from a server that
	// closed a connection with queries in flight after answering that many (a miekg/dns
	// server's MaxTCPQueries, 128 by default). 0 means no limit is known.
	budget int

	h health

	logMu sync.Mutex
	log   limiter // failure lines
}

func newPeer(f *Forwarder, ap netip.AddrPort) *peer {
	addr := ap.String()
	return &peer{f: f, addr: addr, ap: ap, udpAddr: net.UDPAddrFromAddrPort(ap), m: newPeerMetrics(addr)}
}

// attempt tries one server once, within Config.Timeout.
func (p *peer) attempt(qs *queryState) (*dns.Msg, error) {
	start := time.Now()
	startMono := p.f.mono()
	deadline := start.Add(p.f.cfg.Timeout)
	var r *dns.Msg
	var err error
	if p.f.udp {
		p.m.queriesUDP.Inc()
		r, err = p.viaUDP(qs, deadline)
		if err == nil && r.Truncated {
			p.m.queriesTCP.Inc()
			r, err = p.viaTCP(qs, deadline)
		}
	} else {
		p.m.queriesTCP.Inc()
		r, err = p.viaTCP(qs, deadline)
	}
	if err == nil {
		elapsed := time.Since(start)
		p.m.duration.Observe(elapsed.Seconds())
		p.replied(startMono + int64(elapsed))
		return r, nil
	}
	switch {
	case errors.Is(err, ErrClosed), qs.ctx.Err() != nil:
		// Not the server's fault.
	case errors.Is(err, errTimeout):
		p.m.errTimeout.Inc()
		p.logFailure(reasonTimeout, err)
		p.failed(err, startMono, true)
	default:
		p.m.errNetwork.Inc()
		p.logFailure(reasonNetwork, err)
		p.failed(err, startMono, false)
	}
	return nil, err
}

// logFailure logs at most one line per server per logInterval, carrying the number of
// failures it stood for, so that a dead server does not turn every query into a log line.
func (p *peer) logFailure(reason string, err error) {
	now := p.f.now()
	p.logMu.Lock()
	ok, suppressed := p.log.allow(now)
	p.logMu.Unlock()
	if !ok {
		return
	}
	p.f.cfg.Logger.Warn().Str("upstream", p.addr).Str("reason", reason).Err(err).
		Int("suppressed", suppressed).Msg("upstream query failed")
}

// matches reports whether m is a response to question q. Names compare case-insensitively in
// ASCII only, as DNS does (RFC 4343).
func matches(m *dns.Msg, q *dns.Question) bool {
	if !m.Response || len(m.Question) != 1 {
		return false
	}
	a := &m.Question[0]
	return a.Qtype == q.Qtype && a.Qclass == q.Qclass && wire.EqualFoldName(a.Name, q.Name)
}
