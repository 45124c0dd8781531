package main

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// mode is what a fault proxy does to the traffic between the stub and one upstream.
type mode int32

const (
	// pass forwards every message at once.
	pass mode = iota
	// blackhole drops every message both ways; TCP connections stay open and go silent, as
	// behind a firewall that drops packets (a user-space proxy cannot refuse the handshake the
	// kernel already completed).
	blackhole
	// slow holds every query for the proxy's delay before it reaches CoreDNS.
	slow
	// cut closes TCP connections mid-stream: of the queries that arrive, every other one closes
	// its connection at once (the query is lost in flight), the others have their reply cut after
	// half its bytes and the connection closed, as a server that crashes or is restarted does.
	cut
)

func (m mode) String() string {
	return [...]string{"pass", "blackhole", "slow", "cut"}[m]
}

// faultProxy sits between the stub and one CoreDNS upstream, UDP and TCP on one address, and
// injects the faults of the soak. TCP is proxied connection for connection (one connection to
// CoreDNS per stub connection, messages forwarded one by one), so that a CoreDNS restart closes
// the stub's connection as it would without the proxy.
type faultProxy struct {
	addr    netip.AddrPort // where the stub sends
	backend netip.AddrPort // CoreDNS
	mode    atomic.Int32
	delay   atomic.Int64 // nanoseconds, in slow mode
	cuts    atomic.Int64 // connections closed by the cut mode
	dropped atomic.Int64 // messages dropped by blackhole
	seq     atomic.Int64 // queries seen in cut mode, to alternate its two ways of cutting

	pc *net.UDPConn
	ln *net.TCPListener
	wg sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
}

// newFaultProxy listens on addr (UDP and TCP) and forwards to backend.
func newFaultProxy(addr, backend netip.AddrPort) (*faultProxy, error) {
	p := &faultProxy{addr: addr, backend: backend, conns: map[net.Conn]bool{}}
	var err error
	if p.pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr)); err != nil {
		return nil, err
	}
	if p.ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr)); err != nil {
		p.pc.Close()
		return nil, err
	}
	p.wg.Go(p.serveUDP)
	p.wg.Go(p.serveTCP)
	return p, nil
}

// set switches the proxy's mode; d is the delay of the slow mode. Connections already open
// follow the new mode from their next message on.
func (p *faultProxy) set(m mode, d time.Duration) {
	p.delay.Store(int64(d))
	p.mode.Store(int32(m))
}

func (p *faultProxy) current() mode { return mode(p.mode.Load()) }

// close stops the proxy and every connection it holds, and waits for its goroutines.
func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.pc.Close()
	p.ln.Close()
	p.wg.Wait()
}

// track registers c for close; false when the proxy is closing (c is then closed).
func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *faultProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *faultProxy) serveUDP() {
	for {
		buf := make([]byte, 65535)
		n, from, err := p.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if p.current() == blackhole {
			p.dropped.Add(1)
			continue
		}
		p.wg.Go(func() {
			if p.current() == slow {
				time.Sleep(time.Duration(p.delay.Load()))
			}
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(p.backend))
			if err != nil {
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
			r := make([]byte, 65535)
			m, err := c.Read(r)
			if err != nil {
				return
			}
			if p.current() == blackhole {
				p.dropped.Add(1)
				return
			}
			_, _ = p.pc.WriteToUDPAddrPort(r[:m], from)
		})
	}
}

func (p *faultProxy) serveTCP() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			continue
		}
		p.wg.Go(func() { p.proxyConn(c) })
	}
}

// proxyConn forwards one stub connection to its own CoreDNS connection until either side
// closes it or a fault does.
func (p *faultProxy) proxyConn(c net.Conn) {
	defer p.untrack(c)
	s, err := net.DialTimeout("tcp", p.backend.String(), time.Second)
	if err != nil {
		// CoreDNS is down (restart): the stub sees its connection closed at once.
		return
	}
	if !p.track(s) {
		return
	}
	defer p.untrack(s)
	var (
		wmu      sync.Mutex // serialises writes to the stub
		smu      sync.Mutex // serialises writes to CoreDNS (slow mode writes from goroutines)
		cutNext  atomic.Bool
		inflight sync.WaitGroup
	)
	closeBoth := func() { c.Close(); s.Close() }
	defer inflight.Wait()
	// CoreDNS → stub.
	inflight.Go(func() {
		defer closeBoth()
		for {
			msg, err := readFrame(s)
			if err != nil {
				return
			}
			switch {
			case p.current() == blackhole:
				p.dropped.Add(1)
				continue
			case cutNext.Load():
				p.cuts.Add(1)
				wmu.Lock()
				_, _ = c.Write(frame(msg)[:2+len(msg)/2])
				wmu.Unlock()
				return
			}
			wmu.Lock()
			_, err = c.Write(frame(msg))
			wmu.Unlock()
			if err != nil {
				return
			}
		}
	})
	// stub → CoreDNS.
	defer closeBoth()
	for {
		msg, err := readFrame(c)
		if err != nil {
			return
		}
		switch p.current() {
		case blackhole:
			p.dropped.Add(1)
			continue
		case cut:
			// Proxy-wide, not per connection: the stub re-sends on a new connection, whose
			// first query must not always meet the same fate.
			if p.seq.Add(1)%2 == 1 {
				p.cuts.Add(1)
				return
			}
			cutNext.Store(true)
		case slow:
			d := time.Duration(p.delay.Load())
			inflight.Go(func() {
				time.Sleep(d)
				smu.Lock()
				_, err := s.Write(frame(msg))
				smu.Unlock()
				if err != nil && !errors.Is(err, net.ErrClosed) {
					closeBoth()
				}
			})
			continue
		}
		smu.Lock()
		_, err = s.Write(frame(msg))
		smu.Unlock()
		if err != nil {
			return
		}
	}
}

// readFrame reads one length-prefixed DNS message (RFC 1035 section 4.2.2).
func readFrame(r io.Reader) ([]byte, error) {
	var l [2]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	msg := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, err
	}
	return msg, nil
}

func frame(msg []byte) []byte {
	return append(binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(msg)), uint16(len(msg))), msg...)
}
