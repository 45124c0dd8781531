package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/podns/podns/internal/dnstest"
)

// clientID is the ID every test query carries; upstream IDs must never be it.
const clientID = 0xBEEF

// tcpServer is a raw loopback TCP server whose per-connection behaviour each test scripts.
type tcpServer struct {
	addr     string
	accepted atomic.Int32
	l        net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startTCP(t *testing.T, handle func(n int, c net.Conn)) *tcpServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tcpServer{addr: l.Addr().String(), l: l}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n := int(s.accepted.Add(1))
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				handle(n, c)
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		for _, c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// startUDP runs handle on a loopback UDP socket until the test ends.
func startUDP(t *testing.T, handle func(pc net.PacketConn)) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); handle(pc) }()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().String()
}

// startDNS runs a stock miekg/dns server on an existing listener or packet conn.
func startDNS(t testing.TB, srv *dns.Server) {
	t.Helper()
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	errc := make(chan error, 1)
	go func() { errc <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-errc:
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); <-errc })
}

func readMsg(c net.Conn) (*dns.Msg, error) {
	var lb [2]byte
	if _, err := io.ReadFull(c, lb[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(lb[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	return m, m.Unpack(buf)
}

func writeMsg(c net.Conn, m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
	return err
}

// answer replies to q with one A record whose last octet is n, so tests can tell replies apart.
func answer(q *dns.Msg, n int) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	r.Answer = append(r.Answer, &dns.A{
		Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
		A:   net.IPv4(192, 0, 2, byte(n)).To4(),
	})
	return r
}

// serveAll answers every query on c with answer(q, index from the name qN.example.).
func serveAll(c net.Conn) {
	for {
		q, err := readMsg(c)
		if err != nil {
			return
		}
		if writeMsg(c, answer(q, nameIndex(q))) != nil {
			return
		}
	}
}

// query is an A query for name with the ID clientID.
func query(name string) *dns.Msg { return dnstest.Msg(name, dns.TypeA, dnstest.ID(clientID)) }

func qname(i int) string { return "q" + strconv.Itoa(i) + ".example." }

func nameIndex(q *dns.Msg) int {
	n := q.Question[0].Name
	i, _ := strconv.Atoi(n[1 : len(n)-len(".example.")])
	return i
}

// checkAnswer fails unless r is the reply serveAll gives to qname(i), with the client's ID.
func checkAnswer(t *testing.T, r *dns.Msg, i int) {
	t.Helper()
	if r == nil {
		t.Fatalf("q%d: nil reply", i)
	}
	if r.Id != clientID {
		t.Errorf("q%d: reply ID %#x, want the client's %#x", i, r.Id, clientID)
	}
	if len(r.Answer) != 1 || r.Answer[0].Header().Name != qname(i) {
		t.Fatalf("q%d: wrong answer %v", i, r.Answer)
	}
	if a := r.Answer[0].(*dns.A).A; a[3] != byte(i) {
		t.Errorf("q%d: got the answer for q%d", i, a[3])
	}
}

func newForwarder(t *testing.T, cfg Config) *Forwarder {
	t.Helper()
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// exchangeAll runs n concurrent Exchanges of qname(0..n-1) and returns replies and errors.
func exchangeAll(f *Forwarder, n int) ([]*dns.Msg, []error) {
	replies, errs := make([]*dns.Msg, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			replies[i], errs[i] = f.Exchange(context.Background(), query(qname(i)))
		}()
	}
	wg.Wait()
	return replies, errs
}

// waitFor polls cond until it holds or the deadline passes; for states with no signal to
// wait on (a metric, a goroutine's exit).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wait receives from ch or fails the test after 5s.
func wait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// metric reads a counter or gauge series; tests compare deltas because ports (and so label
// values) may repeat across tests of one run.
func metric(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func histCount(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func isTimeout(err error) bool { return errors.Is(err, errTimeout) }
