//go:build linux

// Command relay is the peer benchmark's floor for a cache miss in Go: the least work a Go
// program can do to forward a client's UDP query over one pooled TCP connection and send the
// reply back. It has no cache, parses nothing but the ID, allocates nothing per query, and makes
// its system calls raw, as the stub's miss path does (raw.go).
// It is not a DNS server anyone should run: over TCP a reply that never comes keeps its
// connection busy for good, and a lost connection loses its query; over UDP, where a lost
// datagram is routine, a socket whose reply does not come within udpWait is closed.
//
// The benchmark runs it as the target "relay" in the miss phases only (e2e/bench/README.md):
// its CPU per miss is what any Go forwarder with a TCP upstream pays at least (the runtime's
// network poller, scheduler and system calls), against which podns's own cost per miss is read.
// As the target "relay-udp" (-upstream-proto udp) it forwards over UDP instead, one connected
// socket per query in flight, as dnsmasq forwards: the two side by side show what the TCP
// upstream itself costs per miss, apart from Go and from podns.
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// upConn is one upstream TCP connection with at most one query in flight: CoreDNS, like every
// miekg/dns server, answers the queries of one connection one after another, so a second query
// would wait for the first one's upstream delay. An idle connection is reused. Over UDP it is
// one connected socket, with one query in flight too: the reply comes back to the socket that
// asked, so it needs no table of queries.
type upConn struct {
	c      net.Conn
	rd, wr *rawSock    // reads (its reader) and writes (serve): each has its own state
	dead   atomic.Bool // its reader ended (the upstream closed it): never reused
	mu     sync.Mutex
	client netip.AddrPort // who asked the query in flight
	id     uint16         // the client's own ID
	busy   bool           // a query is in flight: only its reply, once, makes uc idle again
}

type relay struct {
	pc       *net.UDPConn
	in, out  *rawSock // the UDP socket's reads (serve) and writes (the connections' readers)
	outMu    sync.Mutex
	upstream string
	udp      bool          // forward over UDP (-upstream-proto udp), not TCP
	udpWait  time.Duration // how long a UDP socket waits for its reply before it is closed
	idle     chan *upConn  // connections with no query in flight
	// readerDone, when set (tests), is called when a connection's reader ends.
	readerDone func()
}

// udpWait is how long a UDP query waits for its reply: the load generators count a query
// unanswered after a second, so by then the client has given it up too.
const udpWait = time.Second

// maxIdle bounds the idle connections kept; the ones past it are closed.
const maxIdle = 256

func main() {
	listen := flag.String("listen", "", "UDP address to serve, ip:port")
	upstream := flag.String("upstream", "", "DNS server to forward to, ip:port")
	proto := flag.String("upstream-proto", "tcp", "how to forward: tcp, or udp")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "relay: unexpected arguments %q: it takes flags only\n", flag.Args())
		os.Exit(2)
	}
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "relay: -listen %q: want ip:port: %v\n", *listen, err)
		os.Exit(2)
	}
	if _, err := netip.ParseAddrPort(*upstream); err != nil {
		fmt.Fprintf(os.Stderr, "relay: -upstream %q: want ip:port: %v\n", *upstream, err)
		os.Exit(2)
	}
	if *proto != "tcp" && *proto != "udp" {
		fmt.Fprintf(os.Stderr, "relay: -upstream-proto %q: want tcp or udp\n", *proto)
		os.Exit(2)
	}
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		os.Exit(1)
	}
	r, err := newRelay(pc, *upstream, *proto == "udp")
	if err == nil {
		err = r.serve()
	}
	fmt.Fprintln(os.Stderr, "relay:", err)
	os.Exit(1)
}

// newRelay returns a relay serving pc and forwarding to upstream (ip:port), over UDP when udp
// is set, else over TCP.
func newRelay(pc *net.UDPConn, upstream string, udp bool) (*relay, error) {
	r := &relay{pc: pc, upstream: upstream, udp: udp, udpWait: udpWait, idle: make(chan *upConn, maxIdle)}
	var err error
	if r.in, err = newRawSock(pc); err == nil {
		r.out, err = newRawSock(pc)
	}
	return r, err
}

// serve reads queries and writes each to an idle upstream connection, or a new one (over UDP: a
// connected socket). It returns when the UDP socket fails (is closed).
func (r *relay) serve() error {
	buf := make([]byte, 2+65535)
	for {
		n, err := r.in.do(opRecvFrom, buf[2:])
		client := r.in.peer
		if err != nil {
			return err
		}
		if n < 12 {
			continue
		}
		var uc *upConn
		select {
		case uc = <-r.idle:
			if uc.dead.Load() {
				uc = nil // closed by the upstream while idle (CoreDNS after 10 s): dial anew
			}
		default:
		}
		if uc == nil {
			network := "tcp"
			if r.udp {
				network = "udp"
			}
			c, err := net.Dial(network, r.upstream)
			if err != nil {
				fmt.Fprintln(os.Stderr, "relay:", err)
				continue // the client retries, as it would after a lost datagram
			}
			uc = &upConn{c: c}
			if uc.rd, err = newRawSock(c.(syscall.Conn)); err == nil {
				uc.wr, err = newRawSock(c.(syscall.Conn))
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, "relay:", err)
				c.Close()
				continue
			}
			go r.readReplies(uc)
		}
		uc.mu.Lock()
		uc.client, uc.id, uc.busy = client, binary.BigEndian.Uint16(buf[2:]), true
		uc.mu.Unlock()
		msg := buf[:2+n] // TCP: the length prefix, then the message (RFC 1035 section 4.2.2)
		if r.udp {
			msg = buf[2 : 2+n]
			// The reader blocks in the runtime's poller, which honours the deadline: a lost
			// datagram ends the socket, not a goroutine and a descriptor kept for the whole run.
			uc.c.SetReadDeadline(time.Now().Add(r.udpWait))
		}
		binary.BigEndian.PutUint16(buf, uint16(n))
		if w, err := uc.wr.do(opWrite, msg); err != nil || w != len(msg) { // a short write: give the connection up
			uc.c.Close() // its reader ends
		}
	}
}

// readReplies sends each reply on uc back to the client that asked, then makes uc idle again.
// A reply with another ID, or a second one to the same query (a duplicated datagram), is
// skipped: only the reply to the query in flight makes uc idle, once. Over UDP a reply is one
// datagram, and one too short for a header is skipped too (over TCP it means the stream lost
// its framing, and the connection ends).
func (r *relay) readReplies(uc *upConn) {
	if r.readerDone != nil {
		defer r.readerDone()
	}
	defer uc.c.Close()
	defer uc.dead.Store(true)
	frame := make([]byte, 2+65535)
	buf := frame[2:]
	for {
		have, n := 0, -1 // n: the message's length once its prefix is in
		if r.udp {
			m, err := uc.rd.do(opRead, buf)
			if err != nil {
				return // closed, or no reply within udpWait
			}
			if m < 12 {
				continue
			}
			have, n = 2+m, m
		}
		for n < 0 || have < 2+n {
			m, err := uc.rd.do(opRead, frame[have:])
			if err != nil || m == 0 {
				return
			}
			have += m
			if n < 0 && have >= 2 {
				n = int(binary.BigEndian.Uint16(frame))
			}
		}
		if have != 2+n || n < 12 {
			return // one query in flight: nothing may follow its reply
		}
		uc.mu.Lock()
		client, answers := uc.client, uc.busy && binary.BigEndian.Uint16(buf) == uc.id
		if answers {
			uc.busy = false
		}
		uc.mu.Unlock()
		if !answers {
			continue
		}
		r.outMu.Lock()
		r.out.peer = client
		r.out.do(opSendTo, buf[:n])
		r.outMu.Unlock()
		select {
		case r.idle <- uc:
		default:
			return // enough idle connections
		}
	}
}
