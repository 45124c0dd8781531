package cache

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/wire"
)

func newCache(cfg Config) (*Cache, *dnstest.Clock) {
	clk := dnstest.NewClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	cfg.Now = clk.Now
	return New(cfg), clk
}

// request parses a query the way the server would.
func request(t testing.TB, name string, qtype uint16, do, cd bool) *wire.Request {
	t.Helper()
	r := new(wire.Request)
	if err := r.Parse(dnstest.Query(name, qtype, dnstest.CD(cd), dnstest.EDNS(1232, do))); err != nil {
		t.Fatal(err)
	}
	return r
}

func rr(t testing.TB, s string) dns.RR {
	t.Helper()
	x, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func rrs(t testing.TB, ss ...string) []dns.RR {
	var out []dns.RR
	for _, s := range ss {
		out = append(out, rr(t, s))
	}
	return out
}

// reply builds an upstream reply to r with the given sections, including an
// OPT record as upstreams send one.
func reply(t testing.TB, r *wire.Request, rcode int, answer, ns, extra []dns.RR) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	if err := q.Unpack(r.Packet); err != nil {
		t.Fatal(err)
	}
	m := new(dns.Msg)
	m.SetRcode(q, rcode)
	m.Authoritative = true
	m.RecursionAvailable = true
	m.Answer, m.Ns, m.Extra = answer, ns, extra
	m.SetEdns0(1232, r.DO)
	return m
}

// get serves r from c and unpacks the answer; nil on a miss.
func get(t testing.TB, c *Cache, r *wire.Request) *dns.Msg {
	t.Helper()
	b, ok := c.Get(nil, r)
	if !ok {
		if len(b) != 0 {
			t.Fatalf("miss appended %d bytes", len(b))
		}
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(b); err != nil {
		t.Fatalf("served answer does not unpack: %v", err)
	}
	if m.Id != r.ID || m.RecursionDesired != r.RD || m.CheckingDisabled != r.CD || !m.Response || m.Authoritative {
		t.Errorf("header not patched: %+v for request %+v", m.MsgHdr, r)
	}
	if len(m.Question) != 1 || m.Question[0].Qtype != r.QType || m.Question[0].Qclass != r.QClass {
		t.Fatalf("question = %v", m.Question)
	}
	if got := packName(t, m.Question[0].Name); got != string(r.QName) {
		t.Errorf("question name %q, client sent %q", m.Question[0].Name, r.QName)
	}
	if m.IsEdns0() != nil {
		t.Error("served answer carries an OPT record; the server adds its own")
	}
	return m
}

func packName(t testing.TB, name string) string {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(name, buf, 0, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// sameRRs compares record lists by presentation form, names folded to lower
// case (DNS names are case-insensitive; the client's case is echoed).
func sameRRs(t testing.TB, what string, got []dns.RR, want ...string) {
	t.Helper()
	var g, w []string
	for _, x := range got {
		g = append(g, strings.ToLower(x.String()))
	}
	for _, s := range want {
		w = append(w, strings.ToLower(rr(t, s).String()))
	}
	if strings.Join(g, "\n") != strings.Join(w, "\n") {
		t.Errorf("%s:\n got  %q\n want %q", what, g, w)
	}
}

func TestHitServesStoredAnswer(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	r := request(t, "www.example.com.", dns.TypeA, false, false)
	if get(t, c, r) != nil {
		t.Fatal("hit on an empty cache")
	}
	up := reply(t, r, dns.RcodeSuccess,
		rrs(t, "www.example.com. 300 IN CNAME web.example.com.", "web.example.com. 60 IN A 192.0.2.1", "web.example.com. 60 IN A 192.0.2.2"),
		rrs(t, "example.com. 600 IN NS ns1.example.com."),
		rrs(t, "ns1.example.com. 900 IN A 192.0.2.53"))
	before := up.String()
	c.Set(r, up)
	if up.String() != before {
		t.Errorf("Set modified the caller's message:\n%s\n---\n%s", before, up.String())
	}
	if c.Len() != 1 {
		t.Fatalf("Len = %d, want 1", c.Len())
	}
	hits := testutil.ToFloat64(hitsTotal)
	for i := range 3 {
		r2 := request(t, "www.example.com.", dns.TypeA, false, false)
		r2.RD = i%2 == 0
		m := get(t, c, r2)
		if m == nil {
			t.Fatal("miss after Set")
		}
		if m.Rcode != dns.RcodeSuccess || !m.RecursionAvailable {
			t.Errorf("rcode %d ra %v", m.Rcode, m.RecursionAvailable)
		}
		sameRRs(t, "answer", m.Answer, "www.example.com. 300 IN CNAME web.example.com.", "web.example.com. 60 IN A 192.0.2.1", "web.example.com. 60 IN A 192.0.2.2")
		sameRRs(t, "authority", m.Ns, "example.com. 600 IN NS ns1.example.com.")
		sameRRs(t, "additional", m.Extra, "ns1.example.com. 900 IN A 192.0.2.53")
	}
	if got := testutil.ToFloat64(hitsTotal) - hits; got != 3 {
		t.Errorf("hits counter rose by %v, want 3", got)
	}
}

func TestGetAppendsToDst(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	r := request(t, "example.com.", dns.TypeA, false, false)
	c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, "example.com. 60 IN A 192.0.2.1"), nil, nil))
	out, ok := c.Get([]byte("xx"), r)
	if !ok || string(out[:2]) != "xx" {
		t.Fatalf("ok=%v prefix=%q", ok, out[:2])
	}
	var m dns.Msg
	if err := m.Unpack(out[2:]); err != nil || m.Id != r.ID {
		t.Fatalf("unpack: %v, id %d", err, m.Id)
	}
}

func TestTTLCountdownAndExpiry(t *testing.T) {
	c, clk := newCache(DefaultConfig())
	r := request(t, "example.com.", dns.TypeA, false, false)
	c.Set(r, reply(t, r, dns.RcodeSuccess,
		rrs(t, "example.com. 100 IN CNAME a.example.net.", "a.example.net. 30 IN A 192.0.2.1"), nil, nil))
	steps := []struct {
		advance time.Duration
		hit     bool
		cname   int
		a       int
	}{
		{0, true, 100, 30},
		{999 * time.Millisecond, true, 100, 30}, // under a second: nothing to subtract yet
		{time.Millisecond, true, 99, 29},
		{19 * time.Second, true, 80, 10},
		{9*time.Second + 999*time.Millisecond, true, 71, 1}, // the last served TTL is 1, never 0
		{time.Millisecond, false, 0, 0},                     // 30 s: expired
		{time.Hour, false, 0, 0},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		m := get(t, c, r)
		if (m != nil) != s.hit {
			t.Fatalf("step %d: hit = %v, want %v", i, m != nil, s.hit)
		}
		if m != nil {
			sameRRs(t, fmt.Sprintf("step %d", i), m.Answer,
				fmt.Sprintf("example.com. %d IN CNAME a.example.net.", s.cname),
				fmt.Sprintf("a.example.net. %d IN A 192.0.2.1", s.a))
		}
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d: expired entries stay until evicted (for serve-stale)", c.Len())
	}
	// A fresh Set replaces the expired entry in place.
	c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, "example.com. 50 IN A 192.0.2.9"), nil, nil))
	m := get(t, c, r)
	if m == nil || c.Len() != 1 {
		t.Fatalf("replacement: hit %v Len %d", m != nil, c.Len())
	}
	sameRRs(t, "replaced", m.Answer, "example.com. 50 IN A 192.0.2.9")
}

func TestNegativeTTL(t *testing.T) {
	const soaFmt = "example.com. %d IN SOA ns1.example.com. admin.example.com. 1 7200 900 1209600 %d"
	tests := []struct {
		name         string
		cfg          Config
		rcode        int
		answer       []string
		soaTTL, min  int
		wantTTL      int // served SOA TTL and lifetime
		wantLifetime int
	}{
		{"NXDOMAIN: SOA MINIMUM lower", Config{}, dns.RcodeNameError, nil, 3600, 20, 20, 20},
		{"NXDOMAIN: SOA TTL lower", Config{}, dns.RcodeNameError, nil, 15, 25, 15, 15},
		{"NXDOMAIN: capped by NegMaxTTL", Config{NegMaxTTL: 10 * time.Second}, dns.RcodeNameError, nil, 3600, 300, 10, 10},
		{"NXDOMAIN: default NegMaxTTL 30s", Config{}, dns.RcodeNameError, nil, 3600, 300, 30, 30},
		{"NXDOMAIN: MinTTL raises", Config{MinTTL: 5 * time.Second}, dns.RcodeNameError, nil, 3600, 2, 5, 5},
		{"NODATA", Config{}, dns.RcodeSuccess, nil, 600, 12, 12, 12},
		{"NODATA after CNAME", Config{}, dns.RcodeSuccess, []string{"www.example.com. 8 IN CNAME example.com."}, 600, 12, 12, 8},
		{"NXDOMAIN after CNAME", Config{}, dns.RcodeNameError, []string{"www.example.com. 300 IN CNAME gone.example.com."}, 600, 12, 12, 12},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, clk := newCache(tt.cfg)
			r := request(t, "www.example.com.", dns.TypeAAAA, false, false)
			soa := fmt.Sprintf(soaFmt, tt.soaTTL, tt.min)
			c.Set(r, reply(t, r, tt.rcode, rrs(t, tt.answer...), rrs(t, soa), nil))
			m := get(t, c, r)
			if m == nil {
				t.Fatal("negative answer not cached")
			}
			if m.Rcode != tt.rcode {
				t.Errorf("rcode %d, want %d", m.Rcode, tt.rcode)
			}
			sameRRs(t, "authority", m.Ns, fmt.Sprintf(soaFmt, tt.wantTTL, tt.min))
			clk.Advance(time.Duration(tt.wantLifetime)*time.Second - time.Nanosecond)
			if get(t, c, r) == nil {
				t.Fatalf("expired before %ds", tt.wantLifetime)
			}
			clk.Advance(time.Nanosecond)
			if get(t, c, r) != nil {
				t.Fatalf("still served at %ds", tt.wantLifetime)
			}
		})
	}
}

func TestPositiveTTLCaps(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ttl  int
		want int
	}{
		{"kept", Config{}, 300, 300},
		{"default MaxTTL 1h", Config{}, 86400, 3600},
		{"MaxTTL", Config{MaxTTL: time.Minute}, 300, 60},
		{"MinTTL raises", Config{MinTTL: 30 * time.Second}, 5, 30},
		{"MinTTL raises 0", Config{MinTTL: 10 * time.Second}, 0, 10},
		{"MaxTTL wins over MinTTL", Config{MinTTL: time.Hour, MaxTTL: time.Minute}, 5, 60},
		{"TTL with top bit set is 0", Config{MinTTL: 7 * time.Second}, 1 << 31, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, clk := newCache(tt.cfg)
			r := request(t, "example.com.", dns.TypeA, false, false)
			a := rr(t, "example.com. 0 IN A 192.0.2.1")
			a.Header().Ttl = uint32(tt.ttl)
			c.Set(r, reply(t, r, dns.RcodeSuccess, []dns.RR{a}, nil, nil))
			m := get(t, c, r)
			if m == nil {
				t.Fatal("not cached")
			}
			sameRRs(t, "answer", m.Answer, fmt.Sprintf("example.com. %d IN A 192.0.2.1", tt.want))
			clk.Advance(time.Duration(tt.want) * time.Second)
			if get(t, c, r) != nil {
				t.Errorf("served after %ds", tt.want)
			}
		})
	}
}

func TestServfail(t *testing.T) {
	for _, ttl := range []time.Duration{5 * time.Second, 1500 * time.Millisecond} {
		t.Run(ttl.String(), func(t *testing.T) {
			c, clk := newCache(Config{ServfailTTL: ttl})
			r := request(t, "broken.example.", dns.TypeA, false, false)
			c.Set(r, reply(t, r, dns.RcodeServerFailure, nil, nil, nil))
			m := get(t, c, r)
			if m == nil || m.Rcode != dns.RcodeServerFailure {
				t.Fatalf("SERVFAIL not served from cache: %v", m)
			}
			clk.Advance(ttl - time.Millisecond)
			if get(t, c, r) == nil {
				t.Fatal("SERVFAIL dropped before ServfailTTL")
			}
			clk.Advance(time.Millisecond)
			if get(t, c, r) != nil {
				t.Fatal("SERVFAIL kept past ServfailTTL")
			}
		})
	}
	c, _ := newCache(Config{}) // ServfailTTL 0: never cached
	r := request(t, "broken.example.", dns.TypeA, false, false)
	c.Set(r, reply(t, r, dns.RcodeServerFailure, nil, nil, nil))
	if c.Len() != 0 {
		t.Error("SERVFAIL cached with ServfailTTL 0")
	}
}

func TestNeverCached(t *testing.T) {
	soa := "example.com. 300 IN SOA ns1.example.com. admin.example.com. 1 7200 900 1209600 60"
	a := "example.com. 300 IN A 192.0.2.1"
	tests := []struct {
		name string
		msg  func(t *testing.T, r *wire.Request) *dns.Msg
	}{
		{"truncated", func(t *testing.T, r *wire.Request) *dns.Msg {
			m := reply(t, r, dns.RcodeSuccess, rrs(t, a), nil, nil)
			m.Truncated = true
			return m
		}},
		{"other name", func(t *testing.T, r *wire.Request) *dns.Msg {
			m := reply(t, r, dns.RcodeSuccess, rrs(t, a), nil, nil)
			m.Question[0].Name = "example.org."
			return m
		}},
		{"same-length other name", func(t *testing.T, r *wire.Request) *dns.Msg {
			m := reply(t, r, dns.RcodeSuccess, rrs(t, a), nil, nil)
			m.Question[0].Name = "exbmple.com."
			return m
		}},
		{"other type", func(t *testing.T, r *wire.Request) *dns.Msg {
			m := reply(t, r, dns.RcodeSuccess, rrs(t, a), nil, nil)
			m.Question[0].Qtype = dns.TypeAAAA
			return m
		}},
		{"other class", func(t *testing.T, r *wire.Request) *dns.Msg {
			m := reply(t, r, dns.RcodeSuccess, rrs(t, a), nil, nil)
			m.Question[0].Qclass = dns.ClassCHAOS
			return m
		}},
		{"no question", func(t *testing.T, r *wire.Request) *dns.Msg {
			m := reply(t, r, dns.RcodeSuccess, rrs(t, a), nil, nil)
			m.Question = nil
			return m
		}},
		{"REFUSED", func(t *testing.T, r *wire.Request) *dns.Msg {
			return reply(t, r, dns.RcodeRefused, nil, rrs(t, soa), nil)
		}},
		{"FORMERR", func(t *testing.T, r *wire.Request) *dns.Msg { return reply(t, r, dns.RcodeFormatError, nil, nil, nil) }},
		{"NOTIMP", func(t *testing.T, r *wire.Request) *dns.Msg {
			return reply(t, r, dns.RcodeNotImplemented, nil, nil, nil)
		}},
		{"NXDOMAIN without SOA", func(t *testing.T, r *wire.Request) *dns.Msg { return reply(t, r, dns.RcodeNameError, nil, nil, nil) }},
		{"NODATA without SOA (referral)", func(t *testing.T, r *wire.Request) *dns.Msg {
			return reply(t, r, dns.RcodeSuccess, nil, rrs(t, "example.com. 300 IN NS ns1.example.com."), nil)
		}},
		{"TTL 0 answer", func(t *testing.T, r *wire.Request) *dns.Msg {
			return reply(t, r, dns.RcodeSuccess, rrs(t, "example.com. 0 IN A 192.0.2.1", a), nil, nil)
		}},
		{"TTL 0 additional", func(t *testing.T, r *wire.Request) *dns.Msg {
			return reply(t, r, dns.RcodeSuccess, rrs(t, a), nil, rrs(t, "ns.example.com. 0 IN A 192.0.2.2"))
		}},
		{"negative with SOA MINIMUM 0", func(t *testing.T, r *wire.Request) *dns.Msg {
			return reply(t, r, dns.RcodeNameError, nil, rrs(t, strings.Replace(soa, " 60", " 0", 1)), nil)
		}},
		{"SERVFAIL with ServfailTTL 0", func(t *testing.T, r *wire.Request) *dns.Msg {
			return reply(t, r, dns.RcodeServerFailure, nil, nil, nil)
		}},
		{"nil", func(t *testing.T, r *wire.Request) *dns.Msg { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newCache(Config{})
			r := request(t, "example.com.", dns.TypeA, false, false)
			inserts := testutil.ToFloat64(insertsTotal)
			c.Set(r, tt.msg(t, r))
			if c.Len() != 0 || get(t, c, r) != nil {
				t.Errorf("cached (Len %d)", c.Len())
			}
			if testutil.ToFloat64(insertsTotal) != inserts {
				t.Error("inserts counter moved")
			}
		})
	}
}

// A query in any case is answered from the entry, and the answer carries the
// client's spelling of the name (0x20-style clients check it).
func TestCaseFolding(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	stored := request(t, "example.com.", dns.TypeA, false, false)
	up := reply(t, stored, dns.RcodeSuccess, rrs(t, "example.com. 60 IN A 192.0.2.1"), nil, nil)
	up.Question[0].Name = "EXAMPLE.com." // upstreams may echo another case
	c.Set(stored, up)
	for _, name := range []string{"ExAmPlE.com.", "example.com.", "EXAMPLE.COM."} {
		r := request(t, name, dns.TypeA, false, false)
		m := get(t, c, r) // get checks the question bytes equal the client's
		if m == nil {
			t.Fatalf("%s: miss", name)
		}
		if m.Question[0].Name != name {
			t.Errorf("question %q, want %q", m.Question[0].Name, name)
		}
		sameRRs(t, name, m.Answer, "example.com. 60 IN A 192.0.2.1")
	}
	// Storing under a mixed-case request serves lowercase queries too.
	mixed := request(t, "Mixed.Example.", dns.TypeTXT, false, false)
	c.Set(mixed, reply(t, mixed, dns.RcodeSuccess, rrs(t, `mixed.example. 60 IN TXT "hi"`), nil, nil))
	if get(t, c, request(t, "mixed.example.", dns.TypeTXT, false, false)) == nil {
		t.Error("entry stored from a mixed-case query is not found in lower case")
	}
	if c.Len() != 2 {
		t.Errorf("Len = %d, want 2 (case variants share one entry)", c.Len())
	}
}

func TestDOAndCDAreSeparateEntries(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	const name = "signed.example."
	for _, k := range []struct{ do, cd bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		r := request(t, name, dns.TypeA, k.do, k.cd)
		if get(t, c, r) != nil {
			t.Fatalf("do=%v cd=%v: served another variant's entry", k.do, k.cd)
		}
		a := fmt.Sprintf("signed.example. 60 IN TXT \"do=%v cd=%v\"", k.do, k.cd)
		c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, "signed.example. 60 IN A 192.0.2.1", a), nil, nil))
	}
	for _, k := range []struct{ do, cd bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		m := get(t, c, request(t, name, dns.TypeA, k.do, k.cd))
		if m == nil {
			t.Fatalf("do=%v cd=%v: miss", k.do, k.cd)
		}
		sameRRs(t, "answer", m.Answer, "signed.example. 60 IN A 192.0.2.1", fmt.Sprintf("signed.example. 60 IN TXT \"do=%v cd=%v\"", k.do, k.cd))
	}
	if c.Len() != 4 {
		t.Errorf("Len = %d, want 4", c.Len())
	}
}

// Under pressure from a stream of one-off names, CLOCK must keep the entry
// that keeps being hit.
func TestEvictionKeepsHotEntry(t *testing.T) {
	const size = 64
	c, _ := newCache(Config{Size: size})
	hot := request(t, "hot.example.", dns.TypeA, false, false)
	c.Set(hot, reply(t, hot, dns.RcodeSuccess, rrs(t, "hot.example. 300 IN A 192.0.2.1"), nil, nil))
	evictions := testutil.ToFloat64(evictionsTotal)
	const cold = 1000
	firstCold := request(t, "cold0.example.", dns.TypeA, false, false)
	for i := range cold {
		r := request(t, fmt.Sprintf("cold%d.example.", i), dns.TypeA, false, false)
		c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, fmt.Sprintf("cold%d.example. 300 IN A 192.0.2.2", i)), nil, nil))
		if get(t, c, hot) == nil {
			t.Fatalf("hot entry evicted after %d cold inserts", i+1)
		}
		if n := c.Len(); n > size {
			t.Fatalf("Len %d exceeds Size %d", n, size)
		}
	}
	if c.Len() != size {
		t.Errorf("Len = %d, want %d", c.Len(), size)
	}
	if got := testutil.ToFloat64(evictionsTotal) - evictions; got != cold+1-size {
		t.Errorf("evictions rose by %v, want %d", got, cold+1-size)
	}
	if get(t, c, firstCold) != nil {
		t.Error("the oldest cold entry survived")
	}
}

// When the hand meets an expired entry it evicts it even if it was hit once:
// stale data goes before live data.
func TestEvictionPrefersExpired(t *testing.T) {
	const size = 64
	c, clk := newCache(Config{Size: size})
	reqs := make([]*wire.Request, size)
	for i := range reqs {
		reqs[i] = request(t, fmt.Sprintf("n%d.example.", i), dns.TypeA, false, false)
		ttl := 3600
		if i == 10 {
			ttl = 10
		}
		c.Set(reqs[i], reply(t, reqs[i], dns.RcodeSuccess, rrs(t, fmt.Sprintf("n%d.example. %d IN A 192.0.2.1", i, ttl)), nil, nil))
	}
	for i := 0; i <= 10; i++ { // give 0..10 their second chance
		if get(t, c, reqs[i]) == nil {
			t.Fatalf("n%d: miss", i)
		}
	}
	clk.Advance(20 * time.Second) // n10 expires
	extra := request(t, "new.example.", dns.TypeA, false, false)
	c.Set(extra, reply(t, extra, dns.RcodeSuccess, rrs(t, "new.example. 60 IN A 192.0.2.3"), nil, nil))
	if get(t, c, extra) == nil || c.Len() != size {
		t.Fatalf("new entry missing or Len %d", c.Len())
	}
	for i := range reqs {
		if live := get(t, c, reqs[i]) != nil; live == (i == 10) {
			t.Errorf("n%d live = %v", i, live)
		}
	}
	c.shards[0].mu.RLock()
	defer c.shards[0].mu.RUnlock()
	for _, e := range c.shards[0].ring {
		if string(e.name()) == "\x03n10\x07example\x00" {
			t.Error("expired n10 kept while live n11 was the alternative")
		}
	}
}

func TestShardPadding(t *testing.T) {
	if n := unsafe.Sizeof(shard{}); n%64 != 0 {
		t.Errorf("shard is %d bytes; keep it a multiple of the 64-byte cache line", n)
	}
}

func TestSizeBoundAcrossShards(t *testing.T) {
	c, _ := newCache(Config{Size: 1000})
	if len(c.shards) < 2 {
		t.Fatalf("%d shards; the test wants several", len(c.shards))
	}
	for i := range 3000 {
		r := request(t, fmt.Sprintf("h%d.example.", i), dns.TypeA, false, false)
		c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, fmt.Sprintf("h%d.example. 60 IN A 192.0.2.1", i)), nil, nil))
	}
	if c.Len() != 1000 {
		t.Errorf("Len = %d, want exactly Size 1000", c.Len())
	}
}

// A hash collision must not serve another name's answer: the stored key is
// compared on every hit.
func TestHashCollisionIsAMiss(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	a := request(t, "a.example.", dns.TypeA, false, false)
	c.Set(a, reply(t, a, dns.RcodeSuccess, rrs(t, "a.example. 60 IN A 192.0.2.1"), nil, nil))
	var ea *entry
	for i := range c.shards {
		for _, e := range c.shards[i].ring {
			ea = e
		}
	}
	for _, b := range []*wire.Request{
		request(t, "b.example.", dns.TypeA, false, false),
		request(t, "a.example.", dns.TypeAAAA, false, false),
		request(t, "a.example.", dns.TypeA, true, false),
	} {
		var buf [maxName + 5]byte
		_, h := c.key(&buf, b.QName, b.QType, b.QClass, requestFlags(b))
		sh := c.shard(h)
		// Forge a collision: a copy of a.example.'s entry stored under b's hash.
		forged := newEntry(int(ea.msgLen), int(ea.ttls))
		copy(unsafe.Slice((*uint64)(unsafe.Pointer(forged)), entryWords(int(ea.msgLen), int(ea.ttls))),
			unsafe.Slice((*uint64)(unsafe.Pointer(ea)), entryWords(int(ea.msgLen), int(ea.ttls))))
		forged.hash = h
		sh.mu.Lock()
		if i := sh.slot(h); i >= 0 {
			sh.remove(i)
		}
		sh.ring = append(sh.ring, forged)
		sh.link(h, len(sh.ring)-1)
		sh.mu.Unlock()
		if get(t, c, b) != nil {
			t.Errorf("%q type %d served a.example.'s answer", b.QName, b.QType)
		}
	}
}

func TestOPTStripped(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	r := request(t, "example.com.", dns.TypeMX, true, false)
	up := reply(t, r, dns.RcodeSuccess, rrs(t, "example.com. 60 IN MX 10 mx.example.com."), nil,
		rrs(t, "mx.example.com. 60 IN A 192.0.2.25"))
	up.IsEdns0().Option = append(up.IsEdns0().Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: "abcd"})
	c.Set(r, up)
	m := get(t, c, r) // get fails on an OPT record
	if m == nil {
		t.Fatal("miss")
	}
	sameRRs(t, "additional", m.Extra, "mx.example.com. 60 IN A 192.0.2.25")
	if up.IsEdns0() == nil {
		t.Error("Set removed the caller's OPT record")
	}
}

func TestConcurrentGetSet(t *testing.T) {
	c, clk := newCache(Config{Size: 128, ServfailTTL: time.Second})
	const names = 400
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 0, 512)
			for range 3000 {
				i := rnd.IntN(names)
				r := request(t, fmt.Sprintf("c%d.Example.", i), dns.TypeA, i%3 == 0, false)
				var ok bool
				buf, ok = c.Get(buf[:0], r)
				if !ok {
					c.Set(r, reply(t, r, dns.RcodeSuccess, rrs(t, fmt.Sprintf("c%d.example. 30 IN A 10.0.%d.%d", i, i/256, i%256)), nil, nil))
					if g == 0 {
						clk.Advance(100 * time.Millisecond)
					}
					continue
				}
				var m dns.Msg
				if err := m.Unpack(buf); err != nil {
					t.Errorf("unpack: %v", err)
					return
				}
				want := fmt.Sprintf("10.0.%d.%d", i/256, i%256)
				if m.Id != r.ID || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != want {
					t.Errorf("c%d: got %v, want %s", i, m.Answer, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := c.Len(); n > 128 {
		t.Errorf("Len %d over Size", n)
	}
}

func TestGetHitAllocatesNothing(t *testing.T) {
	c, _ := newCache(DefaultConfig())
	stored := request(t, "www.example.com.", dns.TypeAAAA, true, false)
	c.Set(stored, reply(t, stored, dns.RcodeSuccess,
		rrs(t, "www.example.com. 300 IN CNAME example.com.", "example.com. 300 IN AAAA 2001:db8::1"), nil, nil))
	r := request(t, "WWW.Example.COM.", dns.TypeAAAA, true, false)
	dst := make([]byte, 0, 1232)
	allocs := testing.AllocsPerRun(1000, func() {
		var ok bool
		if dst, ok = c.Get(dst[:0], r); !ok {
			t.Fatal("miss")
		}
	})
	if allocs != 0 {
		t.Errorf("Get on a hit allocates %v times, want 0", allocs)
	}
	miss := request(t, "nope.example.com.", dns.TypeAAAA, true, false)
	if allocs := testing.AllocsPerRun(1000, func() { c.Get(dst[:0], miss) }); allocs != 0 {
		t.Errorf("Get on a miss allocates %v times, want 0", allocs)
	}
}

func benchCache(b *testing.B) (*Cache, *wire.Request) {
	c := New(DefaultConfig())
	stored := request(b, "www.example.com.", dns.TypeA, false, false)
	c.Set(stored, reply(b, stored, dns.RcodeSuccess,
		rrs(b, "www.example.com. 300 IN CNAME example.com.", "example.com. 300 IN A 192.0.2.1", "example.com. 300 IN A 192.0.2.2"), nil, nil))
	return c, request(b, "WWW.example.com.", dns.TypeA, false, false)
}

// reportCPU adds cpu-ns/op: the process's CPU time per op, which unlike
// ns/op does not grow when other jobs take the machine's cores.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(dnstest.CPUTime(b)-start)/float64(b.N), "cpu-ns/op")
}

func BenchmarkGetHit(b *testing.B) {
	c, r := benchCache(b)
	dst := make([]byte, 0, 1232)
	b.ReportAllocs()
	start := dnstest.CPUTime(b)
	for b.Loop() {
		var ok bool
		if dst, ok = c.Get(dst[:0], r); !ok {
			b.Fatal("miss")
		}
	}
	reportCPU(b, start)
}

func BenchmarkGetHitParallel(b *testing.B) {
	c, r := benchCache(b)
	b.ReportAllocs()
	start := dnstest.CPUTime(b)
	defer reportCPU(b, start)
	b.RunParallel(func(pb *testing.PB) {
		dst := make([]byte, 0, 1232)
		for pb.Next() {
			var ok bool
			if dst, ok = c.Get(dst[:0], r); !ok {
				b.Error("miss")
				return
			}
		}
	})
}

// BenchmarkParseGetHit is the whole hit path short of the socket: parse the
// query, serve from cache, add the OPT record.
func BenchmarkParseGetHit(b *testing.B) {
	c, r := benchCache(b)
	pkt := r.Packet
	var req wire.Request
	dst := make([]byte, 0, 1232)
	b.ReportAllocs()
	start := dnstest.CPUTime(b)
	for b.Loop() {
		if err := req.Parse(pkt); err != nil {
			b.Fatal(err)
		}
		var ok bool
		if dst, ok = c.Get(dst[:0], &req); !ok {
			b.Fatal("miss")
		}
		if req.HasEDNS {
			dst = wire.AppendOPT(dst, wire.DefaultUDPSize, req.DO)
		}
	}
	reportCPU(b, start)
}
