// Package server answers DNS on the pod's loopback: UDP and TCP listeners, the cache-hit fast path
// (no message unpacking, no allocation) and the miss path through the upstream forwarder.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
)

// Forwarder is what the server needs of the upstreams; *upstream.Forwarder implements it (stub's
// main checks that at compile time).
type Forwarder interface {
	// ExchangeWire sends query, a packed query of one question, upstream and returns the
	// reply, packed, with the query's ID; the caller owns the reply. It must only read query:
	// the server goes on reading it (the search-path prefetch copies it) while ExchangeWire
	// runs. The miss path stays in wire form end to end (issue 12 item 5).
	ExchangeWire(ctx context.Context, query []byte) ([]byte, error)
	// Healthy reports whether any upstream is believed up. While none is, a miss that has a
	// stale answer gets it at once and sends nothing upstream.
	Healthy() bool
	// MaxExchangeTime is the longest one Exchange can take (every upstream attempt); it bounds
	// one miss end to end.
	MaxExchangeTime() time.Duration
}

// Config configures a Server.
type Config struct {
	// Listen is every address served, UDP and TCP on each.
	Listen []netip.AddrPort
	// Cache answers repeated questions; nil disables caching.
	Cache *cache.Cache
	// Forwarder answers misses; required.
	Forwarder Forwarder
	// TCPIdleTimeout closes a client TCP connection that sends nothing, or only part of a
	// message, for this long. Default 10s.
	TCPIdleTimeout time.Duration
	// TCPMaxConns bounds concurrent client TCP connections. Default 256.
	TCPMaxConns int
	// MaxInflight bounds cache misses waiting on the upstreams at once; more are answered SERVFAIL
	// at once rather than queued without bound. Default 1024.
	MaxInflight int
	// Coalesce makes identical concurrent misses share one upstream query.
	Coalesce bool
	// OrderSameID sends replies to one client socket and query ID in the order the queries
	// arrived (musl can reuse an ID for a lookup's A and AAAA queries).
	OrderSameID bool
	// FilterAAAA answers every AAAA question with NODATA, without asking upstream: for IPv4-only
	// pods whose apps would otherwise try IPv6 addresses they cannot reach.
	FilterAAAA bool
	// StaleTimeout is how long a miss that has a stale answer waits for the upstream. 0: at once.
	// Stale answers (RFC 8767) are served when the upstreams fail or are slower than this, from
	// expired cache entries inside the cache's StaleWindow; a window of 0 turns them off.
	StaleTimeout time.Duration
	// StaleFastWindow: after the upstreams failed to answer a stale-eligible miss in time, misses
	// with a stale answer get it at once for this long. Default 5s.
	StaleFastWindow time.Duration
	// Search and Ndots are the pod's search list and ndots, for the search-path prefetch; an
	// empty Search turns it off. The stub takes them from the pod's live resolv.conf, and what
	// that lacks from the saved upstream.conf (stub/config SearchPath).
	Search []string
	Ndots  int
	Logger zerolog.Logger
	// QueryLog gets every answer (and prefetch) for the query log; nil: no query log. Its mode
	// may change while the server runs.
	QueryLog *querylog.Log
}

// udpReadBuffer is the receive buffer asked for on each UDP socket.
const udpReadBuffer = 4 << 20

// maxMsg is the largest DNS message (TCP length prefix is 16 bits).
const maxMsg = 65535

// Server serves DNS. Create with New, then Start; Shutdown drains it.
type Server struct {
	cfg      Config
	log      zerolog.Logger
	udp      []*net.UDPConn
	tcp      []*net.TCPListener
	tcpSlots chan struct{}  // one token per open client TCP connection
	inflight chan struct{}  // one token per miss waiting on the upstreams
	wg       sync.WaitGroup // every goroutine the server started
	misses   sync.WaitGroup // misses in progress: Shutdown waits for them before closing sockets
	closing  atomic.Bool
	ready    atomic.Bool
	connsMu  sync.Mutex
	conns    map[net.Conn]struct{}
	flights  flights
	order    replyOrder
	perAddr  []int // UDP sockets per listen address
	// staleFast holds, in Unix nanoseconds, until when stale-eligible misses are answered stale
	// at once (see resolve).
	staleFast atomic.Int64
	// panicLog counts and logs the panics the serving goroutines recover from (see panic.go).
	panicLog panics.Recorder
	// missJobs hands a miss to an idle miss worker (missWorker); unbuffered, so a send succeeds
	// only while one is waiting. missIdle counts the idle workers, at most maxIdle.
	missJobs chan missJob
	missIdle atomic.Int32
	maxIdle  int
	// missCtx gives each miss's upstream query its deadline (deadline.go).
	missCtx missContexts
	// workers counts the miss workers: Shutdown waits for them after the readers (wg), which
	// are the only ones that start them.
	workers sync.WaitGroup
	// stop is closed by Shutdown: the idle miss workers end.
	stop     chan struct{}
	stopOnce sync.Once
	// testHook, when set (in-package tests only), is called at each stage of handling a query,
	// with the stage's name, so that a test can panic there.
	testHook func(stage string)
}

// New checks cfg and fills its defaults. It binds nothing.
func New(cfg Config) (*Server, error) {
	if cfg.Forwarder == nil {
		return nil, errors.New("server: no forwarder")
	}
	if len(cfg.Listen) == 0 {
		return nil, errors.New("server: no listen address")
	}
	if cfg.TCPIdleTimeout <= 0 {
		cfg.TCPIdleTimeout = 10 * time.Second
	}
	if cfg.TCPMaxConns <= 0 {
		cfg.TCPMaxConns = 256
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 1024
	}
	if cfg.StaleFastWindow <= 0 {
		cfg.StaleFastWindow = 5 * time.Second
	}
	return &Server{
		cfg:      cfg,
		log:      cfg.Logger,
		panicLog: panics.Recorder{Logger: cfg.Logger},
		tcpSlots: make(chan struct{}, cfg.TCPMaxConns),
		inflight: make(chan struct{}, cfg.MaxInflight),
		conns:    map[net.Conn]struct{}{},
		missJobs: make(chan missJob),
		maxIdle:  maxIdleWorkersPerProc * runtime.GOMAXPROCS(0),
		stop:     make(chan struct{}),
	}, nil
}

// Start binds every listener (all or none) and starts serving.
func (s *Server) Start() error {
	// One UDP socket and one reader goroutine per CPU the container may use (GOMAXPROCS follows
	// its CPU limit), sharing the address through SO_REUSEPORT.
	readers := 1
	if reusePortSupported {
		readers = max(1, runtime.GOMAXPROCS(0))
	}
	lc := net.ListenConfig{Control: reusePort}
	var perAddr []int // UDP sockets per address, for Addrs
	for _, ap := range s.cfg.Listen {
		addr := ap.String()
		for i := range readers {
			pc, err := lc.ListenPacket(context.Background(), "udp", addr)
			if err != nil {
				s.closeListeners()
				return fmt.Errorf("listen udp %s: %w", ap, err)
			}
			u := pc.(*net.UDPConn)
			// A burst of lookups from many app threads lands at once; the kernel's default
			// receive buffer (about 200 KiB) drops part of it. Ask for more; the kernel caps
			// the request at net.core.rmem_max.
			_ = u.SetReadBuffer(udpReadBuffer)
			if i == 0 {
				addr = u.LocalAddr().String() // port 0: the others join the port the first got
			}
			s.udp = append(s.udp, u)
		}
		perAddr = append(perAddr, readers)
		t, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("listen tcp %s: %w", ap, err)
		}
		s.tcp = append(s.tcp, t)
	}
	s.perAddr = perAddr
	for _, u := range s.udp {
		s.wg.Add(1)
		go s.serveUDPBatch(u)
	}
	for _, t := range s.tcp {
		s.wg.Add(1)
		go s.acceptTCP(t)
	}
	s.ready.Store(true)
	return nil
}

// Addrs returns the bound UDP addresses (the TCP ones have the same ports), for tests that
// listen on port 0.
func (s *Server) Addrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(s.perAddr))
	i := 0
	for _, n := range s.perAddr {
		out = append(out, s.udp[i].LocalAddr().(*net.UDPAddr).AddrPort())
		i += n
	}
	return out
}

// TCPAddrs returns the bound TCP addresses.
func (s *Server) TCPAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(s.tcp))
	for _, t := range s.tcp {
		out = append(out, t.Addr().(*net.TCPAddr).AddrPort())
	}
	return out
}

// Ready reports whether every listener is bound and serving.
func (s *Server) Ready() bool { return s.ready.Load() && !s.closing.Load() }

// Shutdown stops reading new queries, lets the misses in flight finish (or ctx end), then
// closes every socket. Replies to in-flight queries still go out: UDP sockets stay open for
// writing until the misses are done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.stopOnce.Do(func() { close(s.stop) })
	now := time.Now()
	for _, u := range s.udp {
		_ = u.SetReadDeadline(now) // wakes the readers; the socket stays writable
	}
	for _, t := range s.tcp {
		_ = t.Close()
	}
	s.connsMu.Lock()
	for c := range s.conns {
		_ = c.SetReadDeadline(now) // the connection finishes its in-flight queries, then closes
	}
	s.connsMu.Unlock()

	done := make(chan struct{})
	go func() { s.misses.Wait(); s.wg.Wait(); s.workers.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("shutdown: %w with queries still in flight", ctx.Err())
	}
	s.closeListeners()
	s.connsMu.Lock()
	for c := range s.conns {
		_ = c.Close()
	}
	s.connsMu.Unlock()
	return err
}

func (s *Server) closeListeners() {
	for _, u := range s.udp {
		_ = u.Close()
	}
	for _, t := range s.tcp {
		_ = t.Close()
	}
}
