// Package dnstest holds the helpers the podns tests share: loopback DNS servers, a free-port
// finder, a settable clock, query builders and a CPU-time reader. It is for _test.go files
// only; every helper that starts something takes a testing.TB and stops it with t.Cleanup.
//
// It sits below the stub packages and imports none of them, so any package of the root
// module can use it.
package dnstest

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// tries bounds the search for a port free for both UDP and TCP: the kernel picks the UDP
// port, and another process may hold the same TCP port.
const tries = 20

// FreeAddr returns a 127.0.0.1:port address free for both UDP and TCP at the time of the
// call, for a listener that needs one port for both (a DNS server, RFC 7766 section 5). Nothing
// listens on it, so a TCP connection to it is refused. It fails the test when 20 tries find no
// such port.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	for range tries {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		u.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	tb.Fatal("dnstest: no loopback port free for both UDP and TCP")
	return ""
}

// ServeOption changes what Serve starts.
type ServeOption func(*serveConfig)

type serveConfig struct{ udp, tcp bool }

// UDPOnly makes Serve listen on UDP alone.
func UDPOnly() ServeOption { return func(c *serveConfig) { c.udp, c.tcp = true, false } }

// TCPOnly makes Serve listen on TCP alone.
func TCPOnly() ServeOption { return func(c *serveConfig) { c.udp, c.tcp = false, true } }

// Serve starts a miekg/dns server on 127.0.0.1, by default UDP and TCP on one port, and returns
// its ip:port once it accepts queries. The server stops when the test ends.
//
// A handler that writes nothing leaves the client waiting: over TCP the connection stays open
// and the next query on it is read. Unlike the miekg/dns defaults, the server never closes a
// TCP connection on its own (no read or idle timeout, no limit of queries per connection), so
// that a slow test machine cannot make it drop one. It reads UDP queries of up to 512 bytes
// (the miekg/dns default; a larger one is dropped). Queries run on goroutines of their own (UDP) or one at a time per connection (TCP).
//
// It fails the test when no port is free or a server cannot start.
func Serve(tb testing.TB, h dns.HandlerFunc, opts ...ServeOption) string {
	tb.Helper()
	cfg := serveConfig{udp: true, tcp: true}
	for _, o := range opts {
		o(&cfg)
	}
	var pc net.PacketConn
	var l net.Listener
	for try := 0; ; try++ {
		var err error
		if cfg.udp {
			if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
				tb.Fatal(err)
			}
		}
		if !cfg.tcp {
			break
		}
		addr := "127.0.0.1:0"
		if pc != nil {
			addr = pc.LocalAddr().String()
		}
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		if !cfg.udp || try == tries-1 {
			tb.Fatalf("dnstest: %v", err)
		}
		pc.Close()
	}

	var servers []*dns.Server
	never := func() time.Duration { return 24 * time.Hour }
	if pc != nil {
		servers = append(servers, &dns.Server{PacketConn: pc, Handler: h, ReadTimeout: 24 * time.Hour})
	}
	if l != nil {
		servers = append(servers, &dns.Server{Listener: l, Handler: h, ReadTimeout: 24 * time.Hour, IdleTimeout: never, MaxTCPQueries: -1})
	}
	var wg sync.WaitGroup
	for _, s := range servers {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		wg.Add(1)
		go func() { defer wg.Done(); errc <- s.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			tb.Fatalf("dnstest: %v", err)
		}
	}
	tb.Cleanup(func() {
		// Shutdown waits for the handlers still running: a handler a test leaves blocked
		// hangs the test here, where it shows.
		for _, s := range servers {
			_ = s.Shutdown()
		}
		wg.Wait()
	})
	if pc != nil {
		return pc.LocalAddr().String()
	}
	return l.Addr().String()
}

// Reply adapts a function that maps a query to its reply into a handler; a nil reply sends
// nothing (a silent server).
func Reply(respond func(q *dns.Msg) *dns.Msg) dns.HandlerFunc {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		if r := respond(q); r != nil {
			_ = w.WriteMsg(r)
		}
	}
}

// Silent is a handler that reads every query and answers none: a dead nameserver as a client
// sees it, for example behind a DNAT to a backend that is gone.
func Silent(dns.ResponseWriter, *dns.Msg) {}
