package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/wire"
)

// fakeForwarder answers from a function and counts calls; gate, when set, holds every exchange
// until it is closed.
type fakeForwarder struct {
	calls  atomic.Int64
	gate   chan struct{}
	answer func(q *dns.Msg) (*dns.Msg, error)
	mu     sync.Mutex // guards gate, asked and a change of answer once the server runs
	asked  []string   // question names, in order
	down   atomic.Bool
}

// Healthy lets a test say every upstream is down (the stub then serves stale at once).
func (f *fakeForwarder) Healthy() bool { return !f.down.Load() }

// MaxExchangeTime bounds a miss; the held exchanges of the tests end well before it.
func (f *fakeForwarder) MaxExchangeTime() time.Duration { return 5 * time.Second }

func (f *fakeForwarder) names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.asked...)
}

// hold makes every later exchange wait until release.
func (f *fakeForwarder) hold() {
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeForwarder) release() {
	f.mu.Lock()
	close(f.gate)
	f.mu.Unlock()
}

// ExchangeWire is Exchange on packed messages, as the server calls it; the tests' answer
// functions work on dns.Msg. A reply that does not pack is an error, as a reply the upstream
// package cannot read is. Replies are packed without name compression unless the answer
// function asks for it, as CoreDNS sends them over TCP.
func (f *fakeForwarder) ExchangeWire(ctx context.Context, query []byte) ([]byte, error) {
	q := new(dns.Msg)
	if err := q.Unpack(query); err != nil {
		return nil, err
	}
	r, err := f.Exchange(ctx, q)
	if err != nil || r == nil {
		return nil, err
	}
	return r.Copy().Pack() // Pack writes to the OPT record: tests may share r between calls
}

func (f *fakeForwarder) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	f.calls.Add(1)
	f.mu.Lock()
	gate, answer := f.gate, f.answer
	f.asked = append(f.asked, q.Question[0].Name)
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return answer(q)
}

// records answers A questions with n addresses (TTL 300) and everything else with NXDOMAIN+SOA.
func records(n int) func(q *dns.Msg) (*dns.Msg, error) {
	return func(q *dns.Msg) (*dns.Msg, error) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.RecursionAvailable = true
		qq := q.Question[0]
		if qq.Qtype != dns.TypeA {
			m.Rcode = dns.RcodeNameError
			soa, _ := dns.NewRR("example. 60 IN SOA ns.example. host.example. 1 7200 3600 1209600 30")
			m.Ns = []dns.RR{soa}
			return m, nil
		}
		for i := range n {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: strings.ToLower(qq.Name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 300},
				A:   net.IPv4(10, 0, byte(i/250), byte(i%250+1)),
			})
		}
		return m, nil
	}
}

func startServer(t testing.TB, fwd Forwarder, mod func(*Config)) (*Server, string) {
	t.Helper()
	return startServerWith(t, fwd, mod, nil)
}

// startServerWith is startServer with prep run on the server before it starts, for the fields
// that in-package tests set (testHook, panicLog).
func startServerWith(t testing.TB, fwd Forwarder, mod func(*Config), prep func(*Server)) (*Server, string) {
	t.Helper()
	cfg := Config{
		Listen:    []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Cache:     cache.New(cache.Config{Size: 1000}),
		Forwarder: fwd,
		Logger:    zerolog.Nop(),
	}
	if mod != nil {
		mod(&cfg)
	}
	// UDP and TCP must share the port; port 0 gives them different ones, so pick a free UDP
	// port and retry if TCP happens to have it taken.
	var s *Server
	for try := 0; ; try++ {
		cfg.Listen = []netip.AddrPort{netip.MustParseAddrPort(dnstest.FreeAddr(t))}
		var err error
		s, err = New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if prep != nil {
			prep(s)
		}
		if err = s.Start(); err == nil {
			break
		}
		if try == 20 {
			t.Fatalf("start: %v", err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return s, s.Addrs()[0].String()
}

func query(t *testing.T, proto, addr, name string, qtype uint16, edns int) *dns.Msg {
	t.Helper()
	var opts []dnstest.MsgOption
	if edns > 0 {
		opts = append(opts, dnstest.EDNS(uint16(edns), false))
	}
	return dnstest.Exchange(t, proto, addr, dnstest.Msg(name, qtype, opts...))
}

func TestMissThenHitEchoesCaseAndCountsTTLDown(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	fwd := &fakeForwarder{answer: records(1)}
	_, addr := startServer(t, fwd, func(c *Config) { c.Cache = cache.New(cache.Config{Size: 100, Now: clock.Now}) })

	for _, proto := range []string{"udp", "tcp"} {
		r := query(t, proto, addr, "WwW.ExAmPle.", dns.TypeA, 0)
		if r.Question[0].Name != "WwW.ExAmPle." {
			t.Errorf("%s: question %q, want the client's case", proto, r.Question[0].Name)
		}
		if len(r.Answer) != 1 || r.Rcode != dns.RcodeSuccess || !r.RecursionDesired {
			t.Fatalf("%s: bad reply %v", proto, r)
		}
	}
	if got := fwd.calls.Load(); got != 1 {
		t.Fatalf("upstream asked %d times, want 1 (second query is a hit)", got)
	}
	clock.Advance(100 * time.Second)
	r := query(t, "udp", addr, "www.example.", dns.TypeA, 0)
	if ttl := r.Answer[0].Header().Ttl; ttl != 200 {
		t.Errorf("TTL after 100s = %d, want 200", ttl)
	}
	if r.Question[0].Name != "www.example." {
		t.Errorf("hit question %q", r.Question[0].Name)
	}
}

func TestNegativeAnswerCached(t *testing.T) {
	fwd := &fakeForwarder{answer: records(1)}
	_, addr := startServer(t, fwd, nil)
	for range 3 {
		r := query(t, "udp", addr, "nope.example.", dns.TypeAAAA, 0)
		if r.Rcode != dns.RcodeNameError || len(r.Ns) != 1 {
			t.Fatalf("want NXDOMAIN with SOA, got %v", r)
		}
	}
	if got := fwd.calls.Load(); got != 1 {
		t.Fatalf("upstream asked %d times, want 1", got)
	}
}

func TestEDNSEchoedOnlyToClientsThatSentIt(t *testing.T) {
	_, addr := startServer(t, &fakeForwarder{answer: records(1)}, nil)
	for _, hit := range []string{"miss", "hit"} {
		if r := query(t, "udp", addr, "a.example.", dns.TypeA, 0); r.IsEdns0() != nil {
			t.Errorf("%s: OPT sent to a client without EDNS", hit)
		}
		r := query(t, "udp", addr, "b.example.", dns.TypeA, 1232)
		if opt := r.IsEdns0(); opt == nil || opt.UDPSize() != wire.DefaultUDPSize {
			t.Errorf("%s: OPT = %v, want one advertising %d", hit, opt, wire.DefaultUDPSize)
		}
	}
}

func TestTruncationFitsClientSize(t *testing.T) {
	// 60 A records are ~1 KB: more than 512 bytes, less than 4096.
	_, addr := startServer(t, &fakeForwarder{answer: records(60)}, nil)
	for _, round := range []string{"miss", "hit"} {
		r := query(t, "udp", addr, "big.example.", dns.TypeA, 0)
		if want := fitsUDP(t, records(60), "big.example.", 512, false); !r.Truncated || len(r.Answer) != want {
			t.Errorf("%s: plain UDP client got TC=%v with %d answers, want TC=1 and the %d that fit", round, r.Truncated, len(r.Answer), want)
		}
		m := new(dns.Msg)
		m.SetQuestion("big.example.", dns.TypeA)
		buf, _ := m.Pack()
		if n := udpRoundTrip(t, addr, buf); n > 512 {
			t.Errorf("%s: %d bytes to a client without EDNS, limit 512", round, n)
		}
		if r := query(t, "tcp", addr, "big.example.", dns.TypeA, 0); r.Truncated || len(r.Answer) != 60 {
			t.Errorf("%s: TCP got TC=%v with %d answers, want all 60", round, r.Truncated, len(r.Answer))
		}
		if r := query(t, "udp", addr, "big.example.", dns.TypeA, 4096); r.Truncated || len(r.Answer) != 60 {
			t.Errorf("%s: EDNS 4096 client got TC=%v with %d answers, want all 60", round, r.Truncated, len(r.Answer))
		}
	}
}

// fitsUDP is how many answer records of the upstream's reply to name fit a UDP client of size
// octets, by miekg/dns's Msg.Truncate: what CoreDNS sends such a client.
func fitsUDP(t *testing.T, answer func(*dns.Msg) (*dns.Msg, error), name string, size int, edns bool) int {
	t.Helper()
	q := dnstest.Msg(name, dns.TypeA)
	m, err := answer(q)
	if err != nil {
		t.Fatal(err)
	}
	m.Compress = true
	if edns {
		m.SetEdns0(wire.DefaultUDPSize, false)
	}
	m.Truncate(size)
	if !m.Truncated {
		t.Fatalf("the reply to %s fits %d octets: nothing to truncate", name, size)
	}
	return len(m.Answer)
}

// A headless Service's 40 A records (issue 12 item 0), cached or not, over UDP to a client
// without EDNS or with a small one: TC=1 and every record that fits, the upstream's first ones
// in order, so a musl client before 1.2.4 (no TCP fallback) resolves as it did against CoreDNS.
// Over TCP: all 40. The test upstream sends its reply uncompressed, as CoreDNS does over TCP
// (1,226 octets for 40 A records, measured with kdig): the stub must still give the client the
// records CoreDNS's own compressed UDP reply would carry (30 in 512 octets), not the 17 that fit
// uncompressed.
func TestTruncatedUDPReplyKeepsTheRecordsThatFit(t *testing.T) {
	const name = "big.alpha.svc.cluster.local."
	fwd := &fakeForwarder{answer: records(40)}
	_, addr := startServer(t, fwd, nil)
	full, _ := records(40)(dnstest.Msg(name, dns.TypeA))
	for _, round := range []string{"miss", "hit"} {
		for _, edns := range []int{0, 512, 600} {
			size := max(edns, 512)
			want := fitsUDP(t, records(40), name, size, edns > 0)
			if want == 0 || want == 40 {
				t.Fatalf("EDNS %d: %d of 40 records fit, not a partial answer", edns, want)
			}
			m := dnstest.Msg(name, dns.TypeA)
			if edns > 0 {
				m.SetEdns0(uint16(edns), false)
			}
			pkt, _ := m.Pack()
			resp := udpReply(t, addr, pkt)
			if len(resp) > size {
				t.Errorf("%s, EDNS %d: %d octets, limit %d", round, edns, len(resp), size)
			}
			var r dns.Msg
			if err := r.Unpack(resp); err != nil {
				t.Fatalf("%s, EDNS %d: reply does not unpack: %v", round, edns, err)
			}
			if !r.Truncated || r.Rcode != dns.RcodeSuccess || len(r.Answer) != want {
				t.Errorf("%s, EDNS %d: TC=%v rcode %d with %d answers, want TC=1 NOERROR and the %d that fit",
					round, edns, r.Truncated, r.Rcode, len(r.Answer), want)
			}
			for i, rr := range r.Answer {
				if rr.String() != full.Answer[i].String() {
					t.Errorf("%s, EDNS %d: answer %d = %v, want %v", round, edns, i, rr, full.Answer[i])
				}
			}
			if o := r.IsEdns0(); (o != nil) != (edns > 0) || len(r.Ns) != 0 || len(r.Extra) != min(edns, 1) {
				t.Errorf("%s, EDNS %d: authority %v, additional %v: want only an OPT iff the client sent one", round, edns, r.Ns, r.Extra)
			}
		}
		if r := query(t, "tcp", addr, name, dns.TypeA, 0); r.Truncated || len(r.Answer) != 40 {
			t.Errorf("%s: TCP got TC=%v with %d answers, want all 40", round, r.Truncated, len(r.Answer))
		}
	}
	if got := fwd.calls.Load(); got != 1 {
		t.Errorf("upstream asked %d times, want 1: every later query is a hit", got)
	}
}

func udpRoundTrip(t *testing.T, addr string, pkt []byte) int {
	t.Helper()
	return len(udpReply(t, addr, pkt))
}

// udpReply sends pkt over UDP to addr and returns the datagram that comes back, whole.
func udpReply(t *testing.T, addr string, pkt []byte) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestBadInput(t *testing.T) {
	fwd := &fakeForwarder{answer: records(1)}
	_, addr := startServer(t, fwd, nil)
	good := new(dns.Msg)
	good.SetQuestion("ok.example.", dns.TypeA)
	two := good.Copy()
	two.Question = append(two.Question, dns.Question{Name: "x.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	notify := good.Copy()
	notify.Opcode = dns.OpcodeNotify
	goodWire, _ := good.Pack()
	twoWire, _ := two.Pack()
	notifyWire, _ := notify.Pack()
	garbage := append(append([]byte(nil), goodWire...), 0xde, 0xad, 0xbe, 0xef)
	headerOnlyJunk := append(append([]byte(nil), goodWire[:12]...), 0xff, 0xff, 0xff)
	tests := []struct {
		name  string
		pkt   []byte
		rcode int // -1: no reply expected
	}{
		{"two questions", twoWire, dns.RcodeFormatError},
		{"garbage after the question", garbage, dns.RcodeFormatError},
		{"unreadable question", headerOnlyJunk, dns.RcodeFormatError},
		{"NOTIFY opcode", notifyWire, dns.RcodeNotImplemented},
		{"shorter than a header", goodWire[:7], -1},
		{"a response", func() []byte { b := append([]byte(nil), goodWire...); b[2] |= 0x80; return b }(), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, proto := range []string{"udp", "tcp"} {
				resp, err := rawExchange(proto, addr, tt.pkt)
				if tt.rcode < 0 {
					if err == nil {
						t.Errorf("%s: got a reply %x, want none", proto, resp)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", proto, err)
				}
				var m dns.Msg
				if err := m.Unpack(resp); err != nil {
					t.Fatalf("%s: reply does not unpack: %v", proto, err)
				}
				if m.Rcode != tt.rcode || m.Id != binary.BigEndian.Uint16(tt.pkt) {
					t.Errorf("%s: rcode %s id %d, want %s id %d", proto, dns.RcodeToString[m.Rcode], m.Id,
						dns.RcodeToString[tt.rcode], binary.BigEndian.Uint16(tt.pkt))
				}
			}
		})
	}
	// Still serving after all that.
	if r := query(t, "udp", addr, "ok.example.", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Fatalf("server wedged: %v", r)
	}
}

// rawExchange sends pkt and waits briefly for one reply.
func rawExchange(proto, addr string, pkt []byte) ([]byte, error) {
	c, err := net.Dial(proto, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 65535)
	if proto == "udp" {
		if _, err := c.Write(pkt); err != nil {
			return nil, err
		}
		n, err := c.Read(buf)
		return buf[:n], err
	}
	out := binary.BigEndian.AppendUint16(nil, uint16(len(pkt)))
	if _, err := c.Write(append(out, pkt...)); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint16(l[:])
	_, err = io.ReadFull(c, buf[:n])
	return buf[:n], err
}

func TestUpstreamFailureIsServfail(t *testing.T) {
	fwd := &fakeForwarder{answer: func(*dns.Msg) (*dns.Msg, error) { return nil, errors.New("all upstreams failed") }}
	_, addr := startServer(t, fwd, nil)
	for _, proto := range []string{"udp", "tcp"} {
		if r := query(t, proto, addr, "x.example.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s: rcode %s, want SERVFAIL", proto, dns.RcodeToString[r.Rcode])
		}
	}
}

func TestOverloadAnswersServfailAtOnce(t *testing.T) {
	fwd := &fakeForwarder{answer: records(1), gate: make(chan struct{})}
	_, addr := startServer(t, fwd, func(c *Config) { c.MaxInflight = 1 })
	// The first miss holds the only slot.
	first := make(chan *dns.Msg, 1)
	go func() {
		c := &dns.Client{Timeout: 5 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("slow.example.", dns.TypeA)
		r, _, _ := c.Exchange(m, addr)
		first <- r
	}()
	waitFor(t, func() bool { return fwd.calls.Load() == 1 })
	if r := query(t, "udp", addr, "other.example.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("second miss: %s, want SERVFAIL while the slot is taken", dns.RcodeToString[r.Rcode])
	}
	close(fwd.gate)
	if r := <-first; r == nil || len(r.Answer) != 1 {
		t.Errorf("first miss not answered: %v", r)
	}
}

// Past MaxInflight a miss that still has an answer in the stale window gets it (RFC 8767), not
// SERVFAIL: the soak found SERVFAILs for just-expired names on a starved host.
func TestOverloadServesStale(t *testing.T) {
	clock := dnstest.NewClock(time.Unix(1_700_000_000, 0))
	fwd := &fakeForwarder{answer: records(1)}
	s, addr := startServer(t, fwd, func(c *Config) {
		c.MaxInflight = 1
		c.Cache = cache.New(cache.Config{Size: 100, StaleWindow: time.Hour, Now: clock.Now})
	})
	query(t, "udp", addr, "cached.example.", dns.TypeA, 0) // cached, TTL 300
	// The miss gives its slot back after its reply left: wait for that, or the next miss finds
	// the slot still taken.
	waitFor(t, func() bool { return len(s.inflight) == 0 })
	clock.Advance(10 * time.Minute)
	fwd.hold()
	first := make(chan *dns.Msg, 1)
	go func() {
		c := &dns.Client{Timeout: 5 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("slow.example.", dns.TypeA)
		r, _, _ := c.Exchange(m, addr)
		first <- r
	}()
	waitFor(t, func() bool { return fwd.calls.Load() == 2 }) // the only slot is taken
	overloads := testutil.ToFloat64(overloadTotal)
	r := query(t, "udp", addr, "cached.example.", dns.TypeA, 0)
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].Header().Ttl != staleTTL {
		t.Errorf("expired name past MaxInflight: %v, want the stale answer (TTL %d)", r, staleTTL)
	}
	if r := query(t, "udp", addr, "never.example.", dns.TypeA, 0); r.Rcode != dns.RcodeServerFailure {
		t.Errorf("new name past MaxInflight: %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if got := testutil.ToFloat64(overloadTotal) - overloads; got != 2 {
		t.Errorf("podns_overload_total rose by %v, want 2", got)
	}
	if n := fwd.calls.Load(); n != 2 {
		t.Errorf("upstream asked %d times, want 2: an overloaded miss sends nothing", n)
	}
	fwd.release()
	if r := <-first; r == nil || len(r.Answer) != 1 {
		t.Errorf("first miss not answered: %v", r)
	}
}

func TestTCPPipelinedQueriesAllAnswered(t *testing.T) {
	_, addr := startServer(t, &fakeForwarder{answer: records(1)}, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	const n = 20
	var out []byte
	for i := range n {
		m := new(dns.Msg)
		m.SetQuestion(fmt.Sprintf("p%d.example.", i), dns.TypeA)
		m.Id = uint16(i + 1)
		b, _ := m.Pack()
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	if _, err := c.Write(out); err != nil { // all at once: the server must not answer one at a time
		t.Fatal(err)
	}
	seen := map[uint16]string{}
	for range n {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatalf("after %d replies: %v", len(seen), err)
		}
		buf := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		var m dns.Msg
		if err := m.Unpack(buf); err != nil {
			t.Fatal(err)
		}
		seen[m.Id] = m.Question[0].Name
	}
	for i := range n {
		if want := fmt.Sprintf("p%d.example.", i); seen[uint16(i+1)] != want {
			t.Errorf("id %d answered with %q, want %q", i+1, seen[uint16(i+1)], want)
		}
	}
}

func TestTCPIdleAndSlowClientsCutOffOthersServed(t *testing.T) {
	_, addr := startServer(t, &fakeForwarder{answer: records(1)}, func(c *Config) {
		c.TCPIdleTimeout = 300 * time.Millisecond
	})
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte{0, 40, 0x12}); err != nil { // promises 40 bytes, sends 1
		t.Fatal(err)
	}
	// Meanwhile a well-behaved client is served.
	if r := query(t, "tcp", addr, "ok.example.", dns.TypeA, 0); len(r.Answer) != 1 {
		t.Fatalf("good client not served: %v", r)
	}
	for name, c := range map[string]net.Conn{"idle": idle, "slow": slow} {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		start := time.Now()
		_, err := c.Read(make([]byte, 1))
		if !errors.Is(err, io.EOF) {
			t.Errorf("%s client: read %v, want EOF (closed by the server)", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s client cut off after %v", name, d)
		}
	}
}

func TestTCPMaxConns(t *testing.T) {
	_, addr := startServer(t, &fakeForwarder{answer: records(1)}, func(c *Config) { c.TCPMaxConns = 1 })
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// Prove the first connection holds its slot by getting an answer on it.
	m := new(dns.Msg)
	m.SetQuestion("a.example.", dns.TypeA)
	dc := &dns.Conn{Conn: first}
	if err := dc.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	second, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := second.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("connection over the limit: read %v, want EOF", err)
	}
}

func TestShutdownFinishesInflightMisses(t *testing.T) {
	fwd := &fakeForwarder{answer: records(1), gate: make(chan struct{})}
	s, addr := startServer(t, fwd, nil)
	got := make(chan *dns.Msg, 2)
	for _, proto := range []string{"udp", "tcp"} {
		go func() {
			c := &dns.Client{Net: proto, Timeout: 5 * time.Second}
			m := new(dns.Msg)
			m.SetQuestion(proto+".example.", dns.TypeA)
			r, _, _ := c.Exchange(m, addr)
			got <- r
		}()
	}
	waitFor(t, func() bool { return fwd.calls.Load() == 2 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	waitFor(t, func() bool { return !s.Ready() })
	close(fwd.gate)
	for range 2 {
		if r := <-got; r == nil || len(r.Answer) != 1 {
			t.Errorf("in-flight query lost during shutdown: %v", r)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := rawExchange("udp", addr, []byte{1}); err == nil {
		t.Error("still answering after Shutdown")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
