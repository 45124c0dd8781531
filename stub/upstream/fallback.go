package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/wire"
)

// UDP fallback. Many clusters' "allow DNS" egress NetworkPolicies open UDP/53 and not TCP/53;
// with the default TCP transport every miss of such a pod would fail, although the cluster DNS
// answers it over UDP. A server whose TCP is refused or times out while it answers over UDP is
// therefore used over UDP until a background TCP check succeeds.
//
// The decision is made where both protocols are tried side by side: the probes (ProbeAll at
// start, and the prober of a down server, see probe) and an attempt whose TCP connection was
// refused at once (refusedFast), which is retried over UDP within the same attempt. A TCP
// attempt that times out counts against the server as before (health.go); the prober that
// starts when it goes down then finds whether UDP still answers. When UDP fails too the server
// is down, and the usual failover applies.

const (
	// tcpRecheckFirst is the pause before the first background TCP check of a server used over
	// UDP; the pause doubles after each failed check up to tcpRecheckMax. A policy that is
	// fixed is noticed within minutes; a policy that stays costs one dropped or refused SYN
	// per server per tcpRecheckMax (policy engines that log denied flows log that one).
	tcpRecheckFirst = 30 * time.Second
	tcpRecheckMax   = 5 * time.Minute
	// fallbackTCPWait bounds the TCP retry of a truncated UDP reply from a server used over UDP
	// because its TCP failed: a policy that drops TCP would otherwise make every large answer
	// wait the whole Timeout, longer than the timeout:1 initc writes for the client, which
	// would re-send meanwhile. A cluster DNS a few hops away that takes TCP at all answers
	// over it within milliseconds.
	fallbackTCPWait = 250 * time.Millisecond
)

// fallback is a server's protocol state in tcp mode.
type fallback struct {
	// on is set while the server's queries go over UDP although Config.Protocol is tcp.
	on atomic.Bool
	// rechecking: the TCP check goroutine runs. Guarded by the peer's h.mu, like
	// health.probing, so that Close and a switch to UDP agree on whether it was started.
	rechecking bool
}

// overUDP reports whether p's queries go over UDP: udp mode, or the fallback.
func (p *peer) overUDP() bool { return p.f.udp || p.fb.on.Load() }

// protocol names the protocol p's queries go over, as in the metrics' protocol label.
func (p *peer) protocol() string {
	if p.overUDP() {
		return "udp"
	}
	return "tcp"
}

// useUDP switches p to UDP after tcpErr, when it answered over UDP: one warn line, the counter,
// the gauge, and the background TCP check. Nothing happens in udp mode or when p already
// falls back.
func (p *peer) useUDP(tcpErr error) {
	f := p.f
	if f.udp || !p.fb.on.CompareAndSwap(false, true) {
		return
	}
	p.m.fallbacks.Inc()
	p.m.protoTCP.Set(0)
	p.m.protoUDP.Set(1)
	f.cfg.Logger.Warn().Str("upstream", p.addr).AnErr("tcp_error", tcpErr).
		Msg("upstream answers over UDP but not over TCP: sending its queries over UDP, retrying TCP in the background. " +
			"A NetworkPolicy probably allows UDP port 53 only: allow TCP port 53 as well, to the cluster DNS Service and its pods " +
			"(https://github.com/podns/podns/blob/main/docs/manual.md#networkpolicy)")
	p.h.mu.Lock()
	start := !p.fb.rechecking && !p.h.closed
	if start {
		p.fb.rechecking = true
		f.wg.Add(1)
	}
	p.h.mu.Unlock()
	if start {
		go p.recheckLoop()
	}
}

// useTCP switches p back to TCP after a TCP probe or check was answered; one info line.
func (p *peer) useTCP(by string) {
	if !p.fb.on.CompareAndSwap(true, false) {
		return
	}
	p.m.protoUDP.Set(0)
	p.m.protoTCP.Set(1)
	p.f.cfg.Logger.Info().Str("upstream", p.addr).Str("by", by).Msg("upstream answers over TCP again: back to TCP")
}

// recheckLoop checks TCP to a server used over UDP, after tcpRecheckFirst and then twice as
// long after each failure up to tcpRecheckMax, until TCP answers, the fallback ends otherwise
// (a probe of the down server found TCP working), or Close.
func (p *peer) recheckLoop() {
	f := p.f
	defer f.wg.Done()
	defer func() {
		p.h.mu.Lock()
		p.fb.rechecking = false
		p.h.mu.Unlock()
	}()
	interval := tcpRecheckFirst
	for {
		select {
		case <-f.probeWait(interval):
		case <-f.ctx.Done():
			return
		}
		if !p.fb.on.Load() {
			return
		}
		_, err := p.probeOverSafely(f.ctx, false)
		if errors.Is(err, ErrClosed) {
			return
		}
		if err == nil {
			p.useTCP(byRecheck)
		}
		if f.recheckDone != nil {
			f.recheckDone(p.addr, interval, err)
		}
		if err == nil {
			return
		}
		interval = min(2*interval, tcpRecheckMax)
	}
}

// byRecheck: the background TCP check brought a server back to TCP (the log line's "by").
const byRecheck = "tcp check"

// probeOverSafely is probeOver with a panic contained, as in probeSafely.
func (p *peer) probeOverSafely(ctx context.Context, udp bool) (rtt time.Duration, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.f.panicLog.Record(panics.Probe, v)
			rtt, err = 0, fmt.Errorf("%s: probe: %w", p.addr, errPanicked)
		}
	}()
	return p.probeOver(ctx, udp)
}

// probeBoth probes p over TCP and UDP at once (tcp mode) and decides the protocol: TCP when it
// answered (ending a fallback), UDP when only UDP answered (starting one). The UDP probe runs
// alongside rather than after the TCP one because a policy that drops TCP makes the TCP probe
// wait its whole bound, which at start is also the bound of the UDP probe.
func (p *peer) probeBoth(ctx context.Context, by string) (time.Duration, error) {
	type outcome struct {
		rtt time.Duration
		err error
	}
	udp := make(chan outcome, 1)
	go func() {
		rtt, err := p.probeOverSafely(ctx, true)
		udp <- outcome{rtt, err}
	}()
	rtt, err := p.probeOver(ctx, false)
	u := <-udp
	switch {
	case err == nil:
		p.useTCP(by)
		return rtt, nil
	case errors.Is(err, ErrClosed), errors.Is(u.err, ErrClosed):
		return 0, ErrClosed
	case u.err == nil:
		p.useUDP(err)
		return u.rtt, nil
	}
	return 0, err
}

// refusedFast reports whether err, a failed TCP attempt, failed at once for a reason a
// NetworkPolicy gives: the connection was refused (a REJECT with a TCP reset, or ICMP port
// unreachable) or the network was unreachable (ICMP host or net unreachable, administratively
// prohibited). Such an attempt has time left to ask the same server over UDP. A dropped SYN
// is a timeout and is left to the probes.
func refusedFast(err error) bool {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM)
}

// truncatedAnswer is the reply a client gets when a server used over UDP sent a truncated reply
// and the TCP retry failed: that reply, TC set, as the client would have had it without podns.
// A reply too short to parse past its header (see truncatedHeader) gets the question back,
// q in wire form.
func truncatedAnswer(r, q []byte) []byte {
	if wire.Count(r, wire.Question) != 0 {
		return r
	}
	m := make([]byte, 0, wire.HeaderLen+len(q))
	m = append(m, r[:wire.HeaderLen]...)
	m[4], m[5] = 0, 1 // QDCOUNT
	clear(m[6:wire.HeaderLen])
	return append(m, q...)
}
