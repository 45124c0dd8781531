package upstream

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
)

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
		servers []string
	}{
		{name: "no servers", cfg: Config{}, wantErr: "no servers"},
		// Host names cannot reach New any more: stub/config.ParseUpstream refuses them.
		{name: "no address", cfg: Config{Servers: []netip.AddrPort{{}}}, wantErr: "no address"},
		{name: "port zero", cfg: Config{Servers: servers(t, "10.0.0.10:0")}, wantErr: "port must be"},
		{name: "bad protocol", cfg: Config{Servers: servers(t, "10.0.0.10:53"), Protocol: "tls"}, wantErr: "want tcp or udp"},
		{name: "negative timeout", cfg: Config{Servers: servers(t, "10.0.0.10:53"), Timeout: -1}, wantErr: "timeout"},
		{name: "negative idle", cfg: Config{Servers: servers(t, "10.0.0.10:53"), IdleTimeout: -1}, wantErr: "idle timeout"},
		{name: "negative max fails", cfg: Config{Servers: servers(t, "10.0.0.10:53"), MaxFails: -1}, wantErr: "max fails"},
		{name: "negative probe interval", cfg: Config{Servers: servers(t, "10.0.0.10:53"), ProbeInterval: -1}, wantErr: "probe interval"},
		{name: "negative probe max", cfg: Config{Servers: servers(t, "10.0.0.10:53"), ProbeMaxInterval: -1}, wantErr: "probe max interval"},
		{name: "probe max below interval", cfg: Config{Servers: servers(t, "10.0.0.10:53"), ProbeInterval: 2 * time.Second,
			ProbeMaxInterval: time.Second}, wantErr: "at least the probe interval"},
		{name: "probe name label too long", cfg: Config{Servers: servers(t, "10.0.0.10:53"),
			ProbeName: strings.Repeat("a", 64) + ".example."}, wantErr: "probe name"},
		{name: "probe name empty label", cfg: Config{Servers: servers(t, "10.0.0.10:53"), ProbeName: "a..b"}, wantErr: "probe name"},
		{name: "every bad server named", cfg: Config{Servers: servers(t, "10.0.0.11:0", "10.0.0.10:53", "10.0.0.12:0")}, wantErr: `"10.0.0.12:0"`},
		{name: "mapped and duplicates", cfg: Config{Servers: servers(t, "10.0.0.10:53", "[fd00::a]:5353", "[::ffff:10.0.0.10]:53", "[::1]:53")},
			servers: []string{"10.0.0.10:53", "[fd00::a]:5353", "[::1]:53"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("New: err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if got := strings.Join(f.Servers(), " "); got != strings.Join(tc.servers, " ") {
				t.Errorf("servers %q, want %q", got, tc.servers)
			}
			if f.cfg.Timeout != defaultTimeout || f.cfg.IdleTimeout != defaultIdleTimeout || f.cfg.Protocol != "tcp" ||
				f.cfg.MaxFails != 1 || f.cfg.ProbeInterval != 500*time.Millisecond ||
				f.cfg.ProbeMaxInterval != 15*time.Second || f.cfg.ProbeName != "." {
				t.Errorf("defaults not applied: %+v", f.cfg)
			}
		})
	}
}

func TestNewHealthSettings(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cfg           Config
		wantMax       time.Duration
		wantProbeName string
	}{
		{name: "interval above the default cap raises it", cfg: Config{ProbeInterval: 20 * time.Second},
			wantMax: 20 * time.Second, wantProbeName: "."},
		{name: "trailing dot added", cfg: Config{ProbeName: "kubernetes.default.svc.cluster.local"},
			wantMax: defaultProbeMaxInterval, wantProbeName: "kubernetes.default.svc.cluster.local."},
		{name: "equal interval and cap", cfg: Config{ProbeInterval: time.Second, ProbeMaxInterval: time.Second},
			wantMax: time.Second, wantProbeName: "."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Servers = servers(t, "10.0.0.10:53")
			f := newForwarder(t, tc.cfg)
			if f.cfg.ProbeMaxInterval != tc.wantMax || f.cfg.ProbeName != tc.wantProbeName {
				t.Errorf("probe max %v name %q, want %v %q", f.cfg.ProbeMaxInterval, f.cfg.ProbeName, tc.wantMax, tc.wantProbeName)
			}
			m := new(dns.Msg)
			if err := m.Unpack(f.probeWire[2:]); err != nil || m.Question[0].Name != tc.wantProbeName ||
				m.Question[0].Qtype != dns.TypeNS || !m.RecursionDesired {
				t.Errorf("probe query %v (%v)", m, err)
			}
		})
	}
}

func TestExchangeRejectsBadQuery(t *testing.T) {
	f := newForwarder(t, Config{Servers: servers(t, dnstest.FreeAddr(t))})
	two := query(qname(1))
	two.Question = append(two.Question, two.Question[0])
	for _, q := range []*dns.Msg{nil, new(dns.Msg), two} {
		if _, err := f.Exchange(context.Background(), q); err == nil || !strings.Contains(err.Error(), "exactly one question") {
			t.Errorf("Exchange(%v): err %v", q, err)
		}
	}
}

// Pipelining: the server reads all N queries before answering any and answers in reverse
// order. Every reply must reach its own query, all over one connection.
func TestPipeliningReverseOrder(t *testing.T) {
	const n = 30
	ids := make(chan map[uint16]bool, 1)
	srv := startTCP(t, func(_ int, c net.Conn) {
		var qs []*dns.Msg
		seen := map[uint16]bool{}
		for len(qs) < n {
			q, err := readMsg(c)
			if err != nil {
				return
			}
			seen[q.Id] = true
			qs = append(qs, q)
		}
		ids <- seen
		for i := len(qs) - 1; i >= 0; i-- {
			writeMsg(c, answer(qs[i], nameIndex(qs[i])))
		}
		serveAll(c)
	})
	// The frozen clock keeps stall detection from spreading the queries over connections.
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Now: dnstest.NewClock(time.Now()).Now})
	replies, errs := exchangeAll(f, n)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("q%d: %v", i, errs[i])
		}
		checkAnswer(t, replies[i], i)
	}
	if got := srv.accepted.Load(); got != 1 {
		t.Errorf("%d connections, want 1", got)
	}
	if seen := wait(t, "query IDs", ids); len(seen) != n {
		t.Errorf("%d distinct IDs among %d queries in flight on one connection", len(seen), n)
	}
}

// A server that closes idle connections (CoreDNS after 10s): the next query goes out on a new
// connection and succeeds.
func TestServerClosesIdleConnection(t *testing.T) {
	closed := make(chan struct{}, 4)
	srv := startTCP(t, func(_ int, c net.Conn) {
		defer func() { closed <- struct{}{} }()
		for {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			q, err := readMsg(c)
			if err != nil {
				return
			}
			writeMsg(c, answer(q, nameIndex(q)))
		}
	})
	f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
	for i := range 3 {
		r, err := f.Exchange(context.Background(), query(qname(i)))
		if err != nil {
			t.Fatalf("q%d: %v", i, err)
		}
		checkAnswer(t, r, i)
		wait(t, "the server's idle close", closed)
	}
	if got := srv.accepted.Load(); got != 3 {
		t.Errorf("%d connections, want 3 (one per idle close)", got)
	}
}

// The stub closes idle connections itself, before the server would: by its timer, and, when
// the clock says a connection is stale, before ever sending on it.
func TestStubClosesIdleConnection(t *testing.T) {
	t.Run("timer", func(t *testing.T) {
		eof := make(chan struct{}, 1)
		srv := startTCP(t, func(_ int, c net.Conn) { serveAll(c); eof <- struct{}{} })
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), IdleTimeout: 100 * time.Millisecond})
		open := f.peers[0].m.open
		start := time.Now()
		if _, err := f.Exchange(context.Background(), query(qname(1))); err != nil {
			t.Fatal(err)
		}
		wait(t, "the stub to close the idle connection", eof)
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("closed after %v, before IdleTimeout", d)
		}
		waitFor(t, "open connections to drop to 0", func() bool { return metric(open) == 0 })
	})
	t.Run("clock", func(t *testing.T) {
		clock := dnstest.NewClock(time.Now())
		eof := make(chan int, 2)
		srv := startTCP(t, func(n int, c net.Conn) { serveAll(c); eof <- n })
		f := newForwarder(t, Config{Servers: servers(t, srv.addr), IdleTimeout: time.Hour, Now: clock.Now})
		if _, err := f.Exchange(context.Background(), query(qname(1))); err != nil {
			t.Fatal(err)
		}
		clock.Advance(59 * time.Minute)
		if _, err := f.Exchange(context.Background(), query(qname(2))); err != nil {
			t.Fatal(err)
		}
		if got := srv.accepted.Load(); got != 1 {
			t.Fatalf("%d connections before IdleTimeout, want 1", got)
		}
		clock.Advance(time.Hour)
		if _, err := f.Exchange(context.Background(), query(qname(3))); err != nil {
			t.Fatal(err)
		}
		if got := srv.accepted.Load(); got != 2 {
			t.Errorf("%d connections, want 2: a stale connection must not be reused", got)
		}
		if n := wait(t, "the stale connection to close", eof); n != 1 {
			t.Errorf("connection %d closed, want the stale first one", n)
		}
	})
}

// A stock miekg/dns server closes a connection after MaxTCPQueries queries, dropping the
// pipelined queries it has not read (a reset). None may be lost, and the closes are not
// server failures.
func TestServerQueryLimit(t *testing.T) {
	for _, limit := range []int{1, 5, 128} {
		t.Run(strconv.Itoa(limit), func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			startDNS(t, &dns.Server{Listener: l, MaxTCPQueries: limit, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
				w.WriteMsg(answer(q, nameIndex(q)))
			})})
			f := newForwarder(t, Config{Servers: servers(t, l.Addr().String()), Timeout: 5 * time.Second})
			m := f.peers[0].m
			netErrs, timeouts := metric(m.errNetwork), metric(m.errTimeout)

			const n = 200
			replies, errs := exchangeAll(f, n)
			lost := 0
			for i := range n {
				if errs[i] != nil {
					lost++
					t.Errorf("q%d: %v", i, errs[i])
					continue
				}
				checkAnswer(t, replies[i], i)
			}
			if lost > 0 {
				t.Fatalf("%d of %d queries lost", lost, n)
			}
			if metric(m.errNetwork) != netErrs || metric(m.errTimeout) != timeouts {
				t.Error("server-side connection closes counted as server failures")
			}
			f.peers[0].mu.Lock()
			b := f.peers[0].budget
			f.peers[0].mu.Unlock()
			// Replies the server wrote but had not sent when it reset the connection are lost
			// with it (and re-sent), so the learned budget may fall short, never exceed.
			if b < 0 || b > limit {
				t.Errorf("learned %d queries per connection, want 1..%d (or none)", b, limit)
			}
			t.Logf("reconnects %v, re-sent queries %v, learned budget %d", metric(m.reconnects), metric(m.errClosed), b)
		})
	}
}

// The server reads queries and closes the connection without answering (a restart, a
// rollout): those queries are re-sent on a new connection and answered.
func TestServerClosesWithQueriesInFlight(t *testing.T) {
	const n = 10
	srv := startTCP(t, func(k int, c net.Conn) {
		if k == 1 {
			for range n {
				if _, err := readMsg(c); err != nil {
					return
				}
			}
			return // close with n queries unanswered
		}
		serveAll(c)
	})
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Now: dnstest.NewClock(time.Now()).Now})
	m := f.peers[0].m
	reconnects, closed, netErrs := metric(m.reconnects), metric(m.errClosed), metric(m.errNetwork)
	replies, errs := exchangeAll(f, n)
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("q%d: %v", i, errs[i])
		}
		checkAnswer(t, replies[i], i)
	}
	if got := srv.accepted.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
	if d := metric(m.reconnects) - reconnects; d != 1 {
		t.Errorf("reconnects +%v, want +1", d)
	}
	if d := metric(m.errClosed) - closed; d != n {
		t.Errorf("errors{closed} +%v, want +%d", d, n)
	}
	if metric(m.errNetwork) != netErrs {
		t.Error("a server-side close counted as a network failure")
	}
	if b := f.peers[0].budget; b != 0 {
		t.Errorf("learned a budget of %d from a close with no replies", b)
	}
}

// A silent server: the attempt times out after Timeout and the next server answers; when all
// are silent Exchange fails after about one Timeout per server.
func TestFailover(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			silentEOF := make(chan struct{}, 4)
			silent := func() string {
				if proto == "udp" {
					return startUDP(t, func(pc net.PacketConn) {
						buf := make([]byte, 512)
						for {
							if _, _, err := pc.ReadFrom(buf); err != nil {
								return
							}
						}
					})
				}
				return startTCP(t, func(_ int, c net.Conn) {
					for {
						if _, err := readMsg(c); err != nil {
							silentEOF <- struct{}{}
							return
						}
					}
				}).addr
			}
			dead := silent()
			good := startDNSBoth(t, false)

			f := newForwarder(t, Config{Servers: servers(t, dead, good), Protocol: proto, Timeout: timeout})
			timeouts := metric(f.peers[0].m.errTimeout)
			start := time.Now()
			r, err := f.Exchange(context.Background(), query(qname(7)))
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			checkAnswer(t, r, 7)
			if elapsed < timeout || elapsed > timeout+700*time.Millisecond {
				t.Errorf("failover took %v, want about %v", elapsed, timeout)
			}
			if d := metric(f.peers[0].m.errTimeout) - timeouts; d != 1 {
				t.Errorf("errors{timeout} of the silent server +%v, want +1", d)
			}
			if proto == "tcp" {
				// A connection that answered nothing since the query went out is dropped, so
				// the next query does not queue behind a dead one.
				wait(t, "the stub to drop the silent connection", silentEOF)
			}

			all := newForwarder(t, Config{Servers: servers(t, dead, silent()), Protocol: proto, Timeout: timeout})
			start = time.Now()
			r, err = all.Exchange(context.Background(), query(qname(8)))
			elapsed = time.Since(start)
			if err == nil || r != nil {
				t.Fatalf("all servers silent: got %v, %v", r, err)
			}
			if !isTimeout(err) {
				t.Errorf("err %v, want a timeout", err)
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, dead) {
				t.Errorf("error %q: want one line naming each server", msg)
			}
			if elapsed < 2*timeout || elapsed > 2*timeout+700*time.Millisecond {
				t.Errorf("failing took %v, want about %v", elapsed, 2*timeout)
			}
		})
	}
}

// A refused connection fails the attempt at once, not after Timeout.
func TestRefusedFailsOverAtOnce(t *testing.T) {
	good := startDNSBoth(t, false)
	refused := dnstest.FreeAddr(t)
	f := newForwarder(t, Config{Servers: servers(t, refused, good), Timeout: 5 * time.Second})
	netErrs := metric(f.peers[0].m.errNetwork)
	start := time.Now()
	r, err := f.Exchange(context.Background(), query(qname(3)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 3)
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	if d := metric(f.peers[0].m.errNetwork) - netErrs; d != 1 {
		t.Errorf("errors{network} +%v, want +1", d)
	}
}

// startDNSBoth serves UDP and TCP on one loopback port with miekg/dns; with truncate, every
// UDP reply is truncated (TC, no records) and only TCP carries the answer.
func startDNSBoth(t testing.TB, truncate bool) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		r := answer(q, nameIndex(q))
		if _, udp := w.RemoteAddr().(*net.UDPAddr); udp && truncate {
			r.Answer, r.Truncated = nil, true
		}
		w.WriteMsg(r)
	})
	return dnstest.Serve(t, h)
}

func TestUDPTruncatedRetriesOverTCP(t *testing.T) {
	addr := startDNSBoth(t, true)
	f := newForwarder(t, Config{Servers: servers(t, addr), Protocol: "udp"})
	m := f.peers[0].m
	udpQ, tcpQ := metric(m.queriesUDP), metric(m.queriesTCP)
	r, err := f.Exchange(context.Background(), query(qname(9)))
	if err != nil {
		t.Fatal(err)
	}
	if r.Truncated {
		t.Error("returned the truncated reply")
	}
	checkAnswer(t, r, 9)
	if metric(m.queriesUDP)-udpQ != 1 || metric(m.queriesTCP)-tcpQ != 1 {
		t.Errorf("queries udp +%v tcp +%v, want +1 each", metric(m.queriesUDP)-udpQ, metric(m.queriesTCP)-tcpQ)
	}
}

// badReplies are replies that must never be taken for an answer to q.
func badReplies(q *dns.Msg) []*dns.Msg {
	wrongID := answer(q, 66)
	wrongID.Id = q.Id + 1
	wrongName := answer(q, 66)
	wrongName.Question[0].Name = "other.example."
	wrongType := answer(q, 66)
	wrongType.Question[0].Qtype = dns.TypeAAAA
	wrongClass := answer(q, 66)
	wrongClass.Question[0].Qclass = dns.ClassCHAOS
	echo := q.Copy() // a query, not a response
	noQuestion := answer(q, 66)
	noQuestion.Question = nil
	return []*dns.Msg{wrongID, wrongName, wrongType, wrongClass, echo, noQuestion}
}

func TestBadRepliesIgnored(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, proto := range []string{"tcp", "udp"} {
		for _, thenGood := range []bool{true, false} {
			name := proto + "/then-nothing"
			if thenGood {
				name = proto + "/then-good"
			}
			t.Run(name, func(t *testing.T) {
				var addr string
				// The good reply differs from the bad ones only in ID/question; its name is
				// upper-cased to prove the match ignores case.
				good := func(q *dns.Msg) *dns.Msg {
					r := answer(q, nameIndex(q))
					r.Question[0].Name = strings.ToUpper(r.Question[0].Name)
					return r
				}
				if proto == "tcp" {
					addr = startTCP(t, func(_ int, c net.Conn) {
						for {
							q, err := readMsg(c)
							if err != nil {
								return
							}
							for _, b := range badReplies(q) {
								writeMsg(c, b)
							}
							if thenGood {
								writeMsg(c, good(q))
							}
						}
					}).addr
				} else {
					addr = startUDP(t, func(pc net.PacketConn) {
						buf := make([]byte, 512)
						for {
							n, from, err := pc.ReadFrom(buf)
							if err != nil {
								return
							}
							q := new(dns.Msg)
							if q.Unpack(buf[:n]) != nil {
								continue
							}
							for _, b := range badReplies(q) {
								p, _ := b.Pack()
								pc.WriteTo(p, from)
							}
							// The right reply from the wrong port: the socket must not see it.
							if other, err := net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
								p, _ := good(q).Pack()
								other.WriteTo(p, from)
								other.Close()
							}
							if thenGood {
								p, _ := good(q).Pack()
								pc.WriteTo(p, from)
							}
						}
					})
				}
				f := newForwarder(t, Config{Servers: servers(t, addr), Protocol: proto, Timeout: timeout})
				bad := f.peers[0].m.errBadReply
				before := metric(bad)
				r, err := f.Exchange(context.Background(), query(qname(5)))
				if thenGood {
					if err != nil {
						t.Fatal(err)
					}
					checkAnswer(t, r, 5)
				} else if err == nil || !isTimeout(err) {
					t.Fatalf("got %v, %v; want a timeout", r, err)
				}
				if d := metric(bad) - before; d != float64(len(badReplies(query(qname(5))))) {
					t.Errorf("errors{bad_reply} +%v, want +%d", d, len(badReplies(query(qname(5)))))
				}
			})
		}
	}
}

// Upstream IDs are random, never the client's, and vary from query to query.
func TestUpstreamIDs(t *testing.T) {
	const n = 40
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			var mu sync.Mutex
			ids := map[uint16]int{}
			record := func(q *dns.Msg) {
				mu.Lock()
				ids[q.Id]++
				mu.Unlock()
			}
			var addr string
			if proto == "tcp" {
				addr = startTCP(t, func(_ int, c net.Conn) {
					for {
						q, err := readMsg(c)
						if err != nil {
							return
						}
						record(q)
						writeMsg(c, answer(q, nameIndex(q)))
					}
				}).addr
			} else {
				addr = startUDP(t, func(pc net.PacketConn) {
					buf := make([]byte, 512)
					for {
						n, from, err := pc.ReadFrom(buf)
						if err != nil {
							return
						}
						q := new(dns.Msg)
						if q.Unpack(buf[:n]) == nil {
							record(q)
							p, _ := answer(q, nameIndex(q)).Pack()
							pc.WriteTo(p, from)
						}
					}
				})
			}
			f := newForwarder(t, Config{Servers: servers(t, addr), Protocol: proto})
			for i := range n {
				r, err := f.Exchange(context.Background(), query(qname(i)))
				if err != nil {
					t.Fatal(err)
				}
				checkAnswer(t, r, i)
			}
			mu.Lock()
			defer mu.Unlock()
			if ids[clientID] > 0 {
				t.Errorf("the client's ID went upstream %d times", ids[clientID])
			}
			// 40 draws from 65536 collide with probability ~1%; 3 collisions is ~1e-6.
			if len(ids) < n-2 {
				t.Errorf("%d distinct IDs in %d queries", len(ids), n)
			}
		})
	}
}

// Close with queries in flight: they return promptly with ErrClosed; later calls fail at once.
func TestCloseWithQueriesInFlight(t *testing.T) {
	const n = 10
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			received := make(chan struct{}, n)
			var addr string
			if proto == "tcp" {
				addr = startTCP(t, func(_ int, c net.Conn) {
					for {
						if _, err := readMsg(c); err != nil {
							return
						}
						received <- struct{}{}
					}
				}).addr
			} else {
				addr = startUDP(t, func(pc net.PacketConn) {
					buf := make([]byte, 512)
					for {
						if _, _, err := pc.ReadFrom(buf); err != nil {
							return
						}
						received <- struct{}{}
					}
				})
			}
			f, err := New(Config{Servers: servers(t, addr), Protocol: proto, Timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			errs := make(chan error, n)
			for i := range n {
				go func() {
					_, err := f.Exchange(context.Background(), query(qname(i)))
					errs <- err
				}()
			}
			for range n {
				wait(t, "the queries to reach the server", received)
			}
			start := time.Now()
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			for range n {
				if err := wait(t, "Exchange to return", errs); !errors.Is(err, ErrClosed) {
					t.Errorf("err %v, want ErrClosed", err)
				}
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("in-flight Exchanges took %v to return after Close", d)
			}
			if _, err := f.Exchange(context.Background(), query(qname(1))); !errors.Is(err, ErrClosed) {
				t.Errorf("Exchange after Close: %v, want ErrClosed", err)
			}
			if got := metric(f.peers[0].m.open); got != 0 {
				t.Errorf("%v connections open after Close", got)
			}
		})
	}
}

func TestContextCancels(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			received := make(chan struct{}, 1)
			var addr string
			if proto == "tcp" {
				addr = startTCP(t, func(_ int, c net.Conn) {
					for {
						if _, err := readMsg(c); err != nil {
							return
						}
						received <- struct{}{}
					}
				}).addr
			} else {
				addr = startUDP(t, func(pc net.PacketConn) {
					buf := make([]byte, 512)
					for {
						if _, _, err := pc.ReadFrom(buf); err != nil {
							return
						}
						received <- struct{}{}
					}
				})
			}
			// The second server must not be tried once the caller gave up.
			f := newForwarder(t, Config{Servers: servers(t, addr, dnstest.FreeAddr(t)), Protocol: proto, Timeout: time.Minute})
			next := f.peers[1].m
			tried := metric(next.queriesTCP) + metric(next.queriesUDP)
			ctx, cancel := context.WithCancel(context.Background())
			errc := make(chan error, 1)
			go func() { _, err := f.Exchange(ctx, query(qname(1))); errc <- err }()
			wait(t, "the query to reach the server", received)
			cancel()
			if err := wait(t, "Exchange to return", errc); !errors.Is(err, context.Canceled) {
				t.Errorf("err %v, want context.Canceled", err)
			}
			if metric(next.queriesTCP)+metric(next.queriesUDP) != tried {
				t.Errorf("the next server was tried after cancellation")
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	srv := startTCP(t, func(_ int, c net.Conn) { serveAll(c) })
	f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
	m := f.peers[0].m
	q0, h0 := metric(m.queriesTCP), histCount(t, m.duration)
	for i := range 3 {
		if _, err := f.Exchange(context.Background(), query(qname(i))); err != nil {
			t.Fatal(err)
		}
	}
	if d := metric(m.queriesTCP) - q0; d != 3 {
		t.Errorf("queries{tcp} +%v, want +3", d)
	}
	if d := histCount(t, m.duration) - h0; d != 3 {
		t.Errorf("duration samples +%d, want +3", d)
	}
	if got := metric(m.open); got != 1 {
		t.Errorf("open connections %v, want 1", got)
	}
	if got := metric(queriesTotal.WithLabelValues(srv.addr, "tcp")); got != metric(m.queriesTCP) {
		t.Errorf("series not labelled upstream=%q", srv.addr)
	}
	if len(Collectors()) != 11 {
		t.Errorf("%d collectors", len(Collectors()))
	}
	f.Close()
	if got := metric(m.open); got != 0 {
		t.Errorf("open connections %v after Close, want 0", got)
	}
}

// Failures are logged at most once per server per 10s, with the number suppressed.
func TestFailureLogRateLimited(t *testing.T) {
	clock := dnstest.NewClock(time.Now())
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := zerolog.New(zerolog.SyncWriter(lockedWriter{&mu, &buf}))
	f := newForwarder(t, Config{Servers: servers(t, dnstest.FreeAddr(t)), Logger: logger,
		Now: clock.Now})
	fail := func(k int) {
		for range k {
			if _, err := f.Exchange(context.Background(), query(qname(1))); err == nil {
				t.Fatal("query to a refused port succeeded")
			}
		}
	}
	// The server also goes down (one line of its own, see TestHealthLogs); only the
	// failure lines are counted here.
	lines := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var l []string
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			if strings.Contains(line, "upstream query failed") {
				l = append(l, line)
			}
		}
		return l
	}
	fail(5)
	if l := lines(); len(l) != 1 {
		t.Fatalf("%d log lines for 5 failures within 10s, want 1: %q", len(l), l)
	}
	clock.Advance(11 * time.Second)
	fail(1)
	l := lines()
	if len(l) != 2 || !strings.Contains(l[1], `"suppressed":4`) {
		t.Errorf("want a second line counting 4 suppressed failures, got %q", l)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// A close after a few answers that was a one-off (a restart, not a per-connection limit)
// must not leave the stub opening a connection every few queries: a connection that carried
// the learned budget and was not closed by the server resets it.
func TestLearnedBudgetResets(t *testing.T) {
	srv := startTCP(t, func(k int, c net.Conn) {
		if k == 1 {
			var qs []*dns.Msg
			for range 4 {
				q, err := readMsg(c)
				if err != nil {
					return
				}
				qs = append(qs, q)
			}
			writeMsg(c, answer(qs[0], nameIndex(qs[0])))
			writeMsg(c, answer(qs[1], nameIndex(qs[1])))
			return // "restart" with two queries unanswered
		}
		serveAll(c)
	})
	clock := dnstest.NewClock(time.Now())
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), IdleTimeout: 100 * time.Millisecond, Now: clock.Now})
	budget := func() int {
		p := f.peers[0]
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.budget
	}
	replies, errs := exchangeAll(f, 4)
	for i := range 4 {
		if errs[i] != nil {
			t.Fatalf("q%d: %v", i, errs[i])
		}
		checkAnswer(t, replies[i], i)
	}
	if b := budget(); b != 2 {
		t.Fatalf("budget %d after a close following 2 answers, want 2", b)
	}
	clock.Advance(time.Second) // the retired connection is now idle past IdleTimeout
	waitFor(t, "the budget to reset after an idle close by the stub", func() bool { return budget() == 0 })
	accepted := srv.accepted.Load()
	for i := range 5 {
		if _, err := f.Exchange(context.Background(), query(qname(i))); err != nil {
			t.Fatal(err)
		}
	}
	if got := srv.accepted.Load() - accepted; got != 1 {
		t.Errorf("%d connections for 5 queries after the reset, want 1", got)
	}
}

// A serial server (miekg/dns, CoreDNS) holding a slow query blocks its connection: once no
// reply has come for stallAfter, new queries go out on another connection instead of queueing
// behind it.
func TestStalledConnectionPassedOver(t *testing.T) {
	release := make(chan struct{})
	slowRead := make(chan struct{}, 1)
	srv := startTCP(t, func(_ int, c net.Conn) {
		for { // one query at a time, like miekg/dns
			q, err := readMsg(c)
			if err != nil {
				return
			}
			if q.Question[0].Name == qname(0) {
				slowRead <- struct{}{}
				select {
				case <-release:
				case <-time.After(10 * time.Second):
				}
			}
			writeMsg(c, answer(q, nameIndex(q)))
		}
	})
	clock := dnstest.NewClock(time.Now())
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Now: clock.Now, Timeout: 10 * time.Second})
	slow := make(chan error, 1)
	go func() {
		r, err := f.Exchange(context.Background(), query(qname(0)))
		if err == nil && (len(r.Answer) != 1 || r.Answer[0].Header().Name != qname(0)) {
			err = errors.New("wrong answer to the slow query")
		}
		slow <- err
	}()
	wait(t, "the slow query to reach the server", slowRead)
	clock.Advance(stallAfter)
	for i := 1; i <= 3; i++ {
		r, err := f.Exchange(context.Background(), query(qname(i)))
		if err != nil {
			t.Fatal(err)
		}
		checkAnswer(t, r, i)
	}
	if got := srv.accepted.Load(); got != 2 {
		t.Errorf("%d connections, want 2: one stalled, one serving", got)
	}
	close(release)
	if err := wait(t, "the slow query", slow); err != nil {
		t.Fatal(err)
	}
}

// At maxConns connections, stalled ones take queries again rather than opening more.
func TestStalledConnectionsCapped(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	read := make(chan struct{}, maxConns+1)
	srv := startTCP(t, func(_ int, c net.Conn) {
		for {
			q, err := readMsg(c)
			if err != nil {
				return
			}
			read <- struct{}{}
			select {
			case <-release:
			case <-time.After(10 * time.Second):
			}
			writeMsg(c, answer(q, nameIndex(q)))
		}
	})
	clock := dnstest.NewClock(time.Now())
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Now: clock.Now, Timeout: 10 * time.Second})
	for i := range maxConns {
		go f.Exchange(context.Background(), query(qname(i)))
		wait(t, "the query to reach the server", read)
		clock.Advance(stallAfter) // every connection so far is stalled
	}
	go f.Exchange(context.Background(), query(qname(maxConns)))
	p := f.peers[0]
	conns := func() (n, pending int) {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.mu.Lock()
			pending += len(c.pending)
			c.mu.Unlock()
		}
		return len(p.conns), pending
	}
	waitFor(t, "the last query to be registered", func() bool { _, p := conns(); return p == maxConns+1 })
	if n, _ := conns(); n != maxConns {
		t.Errorf("%d connections, want the cap %d", n, maxConns)
	}
	if got := srv.accepted.Load(); got != maxConns {
		t.Errorf("server accepted %d connections, want %d", got, maxConns)
	}
}

// heldServer is a serial server (one query at a time per connection, like miekg/dns) that holds
// every query until release is closed; read gets one value per query it has read.
func heldServer(t *testing.T) (srv *tcpServer, read chan struct{}, release chan struct{}) {
	read, release = make(chan struct{}, 4*maxConns), make(chan struct{})
	srv = startTCP(t, func(_ int, c net.Conn) {
		for {
			q, err := readMsg(c)
			if err != nil {
				return
			}
			read <- struct{}{}
			<-release
			writeMsg(c, answer(q, nameIndex(q)))
		}
	})
	// Registered after startTCP's, so it runs before the server waits for its handlers.
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	return srv, read, release
}

// pendingPerConn returns the number of queries outstanding on each of p's connections.
func pendingPerConn(p *peer) []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for _, c := range p.conns {
		c.mu.Lock()
		out = append(out, len(c.pending))
		c.mu.Unlock()
	}
	return out
}

// Concurrent queries to a serial server (miekg/dns, CoreDNS) never queue behind each other below
// maxConns: each goes on a connection of its own, so the server reads every one of them while
// it holds the first. Pipelined on one connection, it would read only the first.
func TestConcurrentQueriesSpreadOverConnections(t *testing.T) {
	srv, read, release := heldServer(t)
	clock := dnstest.NewClock(time.Now())
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Now: clock.Now, Timeout: 10 * time.Second})
	const n = 4
	errs := make(chan error, n)
	for i := range n {
		go func() {
			r, err := f.Exchange(context.Background(), query(qname(i)))
			if err == nil && (len(r.Answer) != 1 || r.Answer[0].Header().Name != qname(i)) {
				err = errors.New("wrong answer to " + qname(i) + ": " + r.String())
			}
			errs <- err
		}()
		wait(t, "the query to reach the server", read)
		clock.Advance(time.Nanosecond) // the query just sent is now outstanding: busy
	}
	if got := srv.accepted.Load(); got != n {
		t.Errorf("server accepted %d connections for %d concurrent queries, want %d", got, n, n)
	}
	close(release)
	for range n {
		if err := wait(t, "a reply", errs); err != nil {
			t.Error(err)
		}
	}
	// Answered, the connections are idle: the next query reuses one.
	if _, err := f.Exchange(context.Background(), query(qname(n))); err != nil {
		t.Fatal(err)
	}
	if got := srv.accepted.Load(); got != n {
		t.Errorf("server accepted %d connections after a query to idle ones, want still %d", got, n)
	}
}

// At maxConns busy connections, a query queues on the connection with the fewest outstanding:
// the queries beyond the cap spread one per connection instead of piling onto the first.
func TestBusyConnectionsCappedLeastLoaded(t *testing.T) {
	srv, read, _ := heldServer(t)
	clock := dnstest.NewClock(time.Now())
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Now: clock.Now, Timeout: 10 * time.Second})
	for i := range maxConns {
		go f.Exchange(context.Background(), query(qname(i)))
		wait(t, "the query to reach the server", read)
		clock.Advance(time.Nanosecond)
	}
	p := f.peers[0]
	total := func() (n int) {
		for _, k := range pendingPerConn(p) {
			n += k
		}
		return n
	}
	for i := maxConns; i < 2*maxConns; i++ {
		go f.Exchange(context.Background(), query(qname(i)))
		waitFor(t, "the query to be registered", func() bool { return total() == i+1 })
		clock.Advance(time.Nanosecond)
	}
	got := pendingPerConn(p)
	if len(got) != maxConns {
		t.Fatalf("%d connections, want the cap %d", len(got), maxConns)
	}
	for i, k := range got {
		if k != 2 {
			t.Errorf("connection %d has %d queries outstanding, want 2 on each: %v", i, k, got)
			break
		}
	}
}

// failingConn fails its first write the way a reset connection does, while its read side
// stays open: the stub must not wait for a reply that cannot come.
type failingConn struct {
	net.Conn
	failed atomic.Bool
}

func (c *failingConn) Write(p []byte) (int, error) {
	if c.failed.CompareAndSwap(false, true) {
		return 0, syscall.EPIPE
	}
	return c.Conn.Write(p)
}

func TestWriteFailureResends(t *testing.T) {
	srv := startTCP(t, func(_ int, c net.Conn) { serveAll(c) })
	f := newForwarder(t, Config{Servers: servers(t, srv.addr), Timeout: 2 * time.Second})
	var dials atomic.Int32
	dial := f.dialTCP
	f.dialTCP = func(ctx context.Context, addr string) (net.Conn, error) {
		nc, err := dial(ctx, addr)
		if err != nil || dials.Add(1) > 1 {
			return nc, err
		}
		return &failingConn{Conn: nc}, nil
	}
	m := f.peers[0].m
	netErrs, reconnects := metric(m.errNetwork), metric(m.reconnects)
	start := time.Now()
	r, err := f.Exchange(context.Background(), query(qname(4)))
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 4)
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v: the broken connection was waited on", d)
	}
	if got := srv.accepted.Load(); got != 2 {
		t.Errorf("%d connections, want 2", got)
	}
	if metric(m.errNetwork) != netErrs {
		t.Error("a failed write counted as a failed attempt")
	}
	if d := metric(m.reconnects) - reconnects; d != 1 {
		t.Errorf("reconnects +%v, want +1", d)
	}
}

// Exchange only reads its query: miekg/dns's Pack would rewrite the OPT record's extended-rcode
// bits (here set to a value the header's rcode does not produce), and a caller sharing the
// message with other goroutines (the stub's search-path prefetch copies it) would race with
// that write.
func TestExchangeDoesNotWriteTheQuery(t *testing.T) {
	addr := dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg { return answer(q, 1) }))
	f := newForwarder(t, Config{Servers: servers(t, addr)})
	q := dnstest.Msg(qname(1), dns.TypeA, dnstest.EDNS(1232, true), dnstest.ID(clientID))
	opt := q.IsEdns0()
	opt.Hdr.Ttl |= 0xff << 24 // extended rcode bits, which Pack would reset from q.Rcode
	before := q.String()
	r, err := f.Exchange(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	checkAnswer(t, r, 1)
	if after := q.String(); after != before || q.IsEdns0() != opt || opt.Hdr.Ttl>>24 != 0xff {
		t.Errorf("Exchange changed its query:\nbefore %s\nafter  %s", before, after)
	}
}
