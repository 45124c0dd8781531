package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/stub/admin"
	"github.com/podns/podns/stub/config"
)

// mustMatch fails unless every pattern (a regexp) matches out.
func mustMatch(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("%s lacks %q:\n%s", what, p, out)
		}
	}
}

// answering is a loopback upstream (UDP and TCP) answering every A query with 10.1.2.3, TTL 60,
// and anything else NODATA without an SOA (which the cache does not keep).
func answering(t *testing.T) string {
	return dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q)
		if q.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Question[0].Name + " 60 IN A 10.1.2.3")
			m.Answer = []dns.RR{rr}
		}
		return m
	}))
}

func TestStatusSubcommand(t *testing.T) {
	good := answering(t)
	// dead serves TCP only, and the stub asks over UDP: refused, the startup probe marks it down.
	dead := dnstest.Serve(t, dnstest.Silent, dnstest.TCPOnly())
	s := startStub(t, map[string]string{
		"PODNS_UPSTREAMS": dead + "," + good, "PODNS_CACHE_SIZE": "500",
		"PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT": "300ms", "PODNS_UPSTREAM_PROTOCOL": "udp",
	})
	for range 3 {
		if r := s.query(t, "svc.example.", dns.TypeA); len(r.Answer) != 1 {
			t.Fatalf("no answer: %v", r)
		}
	}
	code, out, errOut := s.sub(t, "status")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	mustMatch(t, "status", out,
		`(?m)^podns stub `+regexp.QuoteMeta(version.Version)+` \(go1\.[^)]*\), up \S+ since \S+, ready \(ok\)$`,
		// the dead upstream: down since the probe, its error; the good one: up, UDP, a median of its one miss.
		`(?m)^  `+regexp.QuoteMeta(dead)+` +DOWN \S+ ago +udp +- +never +probe \S+ ago: .*connection refused$`,
		`(?m)^  `+regexp.QuoteMeta(good)+` +up +udp +\d+\.\d\dms / \d+\.\d\dms \(1\) +\S+ ago +-$`,
		// one miss, two hits.
		`(?m)^cache: 1 of 500 entries, [0-9.]+ MiB; hit ratio [0-9.]+% \(\d+ hits, \d+ misses\); \d+ stale answers served$`,
		`(?m)^  PODNS_CACHE_SIZE +500 +env$`,
		`(?m)^  PODNS_UPSTREAM_TIMEOUT +2s +default$`,
		`(?m)^  PODNS_UPSTREAMS +`+regexp.QuoteMeta(dead+","+good)+` +env$`,
		`(?m)^  upstreams +`+regexp.QuoteMeta(dead+","+good)+` +env$`,
		`(?m)^  search_prefetch +- +none$`,
	)

	// The same data as JSON.
	_, body, err := httpGet("http://" + s.http + admin.StatusPath)
	if err != nil {
		t.Fatal(err)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(st.Upstreams) != 2 || st.Upstreams[0].Up || st.Upstreams[0].LastErrorReason != "probe" || !st.Upstreams[1].Up ||
		st.Upstreams[1].LatencySamples != 1 || st.Upstreams[1].LatencyP50Seconds <= 0 ||
		st.Upstreams[1].LatencyP99Seconds != st.Upstreams[1].LatencyP50Seconds { // one sample: p99 is it
		t.Errorf("upstreams %+v", st.Upstreams)
	}
	if st.Cache.Entries != 1 || st.Cache.Capacity != 500 || st.Cache.Hits < 2 || st.Cache.HitRatio <= 0 {
		t.Errorf("cache %+v", st.Cache)
	}
}

func TestDigSubcommand(t *testing.T) {
	up := answering(t)
	s := startStub(t, map[string]string{"PODNS_UPSTREAMS": up})

	code, out, errOut := s.sub(t, "dig", "Web.Example", "a")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	mustMatch(t, "first dig", out,
		`(?m)^;; SERVER: `+regexp.QuoteMeta(s.dns)+` \(the stub, udp\), `,
		`(?m)^;; ANSWERED FROM: the upstreams \(cache miss\); now cached: fresh answer, fresh for 60s$`,
		`(?m)^;; TTL LEFT: 60s$`,
		`(?m)^;; opcode: QUERY, status: NOERROR, id: \d+$`,
		`(?m)^Web\.Example\.\s+60\s+IN\s+A\s+10\.1\.2\.3$`)

	code, out, _ = s.sub(t, "dig", "web.example.")
	if code != exitOK {
		t.Fatalf("second dig: exit %d", code)
	}
	mustMatch(t, "second dig", out, `(?m)^;; ANSWERED FROM: the cache \(hit\): entry stored \S+ ago, 1 hits$`, `(?m)^;; TTL LEFT: \d+s$`)

	// NODATA without an SOA: not cacheable.
	_, out, _ = s.sub(t, "dig", "web.example", "AAAA")
	mustMatch(t, "AAAA dig", out, `(?m)^;; ANSWERED FROM: the upstreams \(cache miss\); not cached: NODATA without an SOA in the authority section: not cached \(RFC 2308 §5\)$`, `(?m)^;; TTL LEFT: - \(no records\)$`)

	code, out, errOut = s.sub(t, "dig", "other.example", "+bypass-cache")
	if code != exitOK || errOut != "" {
		t.Fatalf("bypass: exit %d, stderr %q", code, errOut)
	}
	mustMatch(t, "dig +bypass-cache", out,
		`(?m)^;; SERVER: `+regexp.QuoteMeta(up)+` \(upstream, tcp\), `,
		`(?m)^;; ANSWERED FROM: the upstream, bypassing the cache`,
		`(?m)^other\.example\.\s+60\s+IN\s+A\s+10\.1\.2\.3$`)
	if _, out, _ := s.sub(t, "cache", "other.example"); !strings.Contains(out, "no cache entry for other.example.") {
		t.Errorf("+bypass-cache filled the cache:\n%s", out)
	}

	for _, args := range [][]string{{"dig"}, {"dig", "a.example", "NOTATYPE"}, {"dig", "a.example", "+trace"}, {"dig", "a.example", "A", "B"}} {
		if code, _, errOut := s.sub(t, args...); code != exitConfig || !strings.Contains(errOut, "stub dig NAME [TYPE] [+bypass-cache]") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestDigOrigin covers what dig says about the reply for each pair of cache states around it,
// and, when the cache did not answer, who made the reply and the actual reason it was not cached
// (a new-user trial read "the upstreams (cache miss)" on a SERVFAIL the stub made after a timeout,
// and a fixed list of guesses as the reason).
func TestDigOrigin(t *testing.T) {
	t0 := time.Now().Add(-time.Minute)
	t1 := time.Now()
	e := func(state string, stored time.Time) *admin.Entry {
		return &admin.Entry{State: state, Kind: "answer", Stored: stored, TTLLeftSeconds: 30, Hits: 4}
	}
	on := func(e *admin.Entry) *entryState { return &entryState{enabled: true, entry: e} }
	cfg, err := config.Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	noServfailCache, _ := config.Load(map[string]string{"PODNS_CACHE_SERVFAIL_TTL": "0s"})
	filter, _ := config.Load(map[string]string{"PODNS_AAAA": "filter"})
	minTTL, _ := config.Load(map[string]string{"PODNS_CACHE_MIN_TTL": "5s"})
	msg := func(qtype uint16, rcode int, rrs ...string) *dns.Msg {
		m := new(dns.Msg)
		m.SetQuestion("x.example.", qtype)
		m.Response, m.Rcode = true, rcode
		for _, s := range rrs {
			rr, err := dns.NewRR(s)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Header().Rrtype == dns.TypeSOA {
				m.Ns = append(m.Ns, rr)
			} else {
				m.Answer = append(m.Answer, rr)
			}
		}
		return m
	}
	const soa = "example. 60 IN SOA ns.example. h.example. 1 2 3 4 60"
	answer := &reply{msg: msg(dns.TypeA, dns.RcodeSuccess, "x.example. 60 IN A 10.0.0.1"), qtype: dns.TypeA, cfg: cfg}
	timedOut := []failure{{"10.96.0.10:53", "timeout", "read udp: i/o timeout"}}
	truncated := msg(dns.TypeA, dns.RcodeSuccess)
	truncated.Truncated = true
	for _, tt := range []struct {
		name          string
		before, after *entryState
		r             *reply
		want          string
	}{
		{"cache off", &entryState{}, &entryState{}, answer, "the upstreams (the cache is off)"},
		{"cache off, stub's SERVFAIL", &entryState{}, &entryState{}, &reply{msg: msg(dns.TypeA, dns.RcodeServerFailure), qtype: dns.TypeA, failures: timedOut, cfg: cfg},
			"the stub itself: SERVFAIL, no upstream answered (10.96.0.10:53: timeout; PODNS_UPSTREAM_TIMEOUT 2s per attempt); the query log says cache=error (the cache is off)"},
		{"hit", on(e("fresh", t0)), on(e("fresh", t0)), answer, "the cache (hit)"},
		{"stale", on(e("stale", t0)), on(e("stale", t0)), answer, "the cache, STALE"},
		{"miss, stored", on(nil), on(e("fresh", t1)), answer, "the upstreams (cache miss); now cached"},
		{"expired, refreshed", on(e("expired", t0)), on(e("fresh", t1)), answer, "the upstreams (cache miss); now cached"},
		{"expired, kept", on(e("expired", t0)), on(e("expired", t0)), answer, "the expired entry was kept"},
		{"expired, kept, stub's SERVFAIL", on(e("expired", t0)), on(e("expired", t0)), &reply{msg: msg(dns.TypeA, dns.RcodeServerFailure), qtype: dns.TypeA, failures: timedOut, cfg: cfg},
			"the stub itself: SERVFAIL, no upstream answered (10.96.0.10:53: timeout; PODNS_UPSTREAM_TIMEOUT 2s per attempt); the query log says cache=error; the expired entry was kept (state expired, answer): the stub's own SERVFAIL is never cached"},
		{"stub's SERVFAIL", on(nil), on(nil), &reply{msg: msg(dns.TypeA, dns.RcodeServerFailure), qtype: dns.TypeA, failures: timedOut, cfg: cfg},
			"the stub itself: SERVFAIL, no upstream answered (10.96.0.10:53: timeout; PODNS_UPSTREAM_TIMEOUT 2s per attempt); the query log says cache=error; not cached: the stub's own SERVFAIL is never cached"},
		{"upstreams' SERVFAIL, not cached", on(nil), on(nil), &reply{msg: msg(dns.TypeA, dns.RcodeServerFailure), qtype: dns.TypeA, failures: []failure{{"10.96.0.10:53", "servfail", "passed over"}}, cfg: noServfailCache},
			"the upstreams (cache miss): every upstream tried passed the query over (10.96.0.10:53: servfail): SERVFAIL; not cached: SERVFAIL, and PODNS_CACHE_SERVFAIL_TTL=0 caches none"},
		{"SERVFAIL, no failure seen", on(nil), on(nil), &reply{msg: msg(dns.TypeA, dns.RcodeServerFailure), qtype: dns.TypeA, cfg: cfg},
			"the stub or an upstream (cache miss): SERVFAIL with no upstream failure recorded"},
		{"NXDOMAIN without SOA", on(nil), on(nil), &reply{msg: msg(dns.TypeA, dns.RcodeNameError), qtype: dns.TypeA, cfg: cfg},
			"the upstreams (cache miss); not cached: NXDOMAIN without an SOA in the authority section: not cached (RFC 2308 §5)"},
		{"NODATA without SOA", on(nil), on(nil), &reply{msg: msg(dns.TypeAAAA, dns.RcodeSuccess), qtype: dns.TypeAAAA, cfg: cfg},
			"not cached: NODATA without an SOA"},
		{"AAAA filter", on(nil), on(nil), &reply{msg: msg(dns.TypeAAAA, dns.RcodeSuccess, soa), qtype: dns.TypeAAAA, cfg: filter},
			"the stub itself (PODNS_AAAA=filter): NODATA, no upstream asked; not cached: the AAAA filter's answers"},
		{"TTL 0", on(nil), on(nil), &reply{msg: msg(dns.TypeA, dns.RcodeSuccess, "x.example. 0 IN A 10.0.0.1"), qtype: dns.TypeA, cfg: cfg},
			"the upstreams (cache miss); not cached: a record with TTL 0"},
		{"TTL 0 raised by PODNS_CACHE_MIN_TTL", on(nil), on(nil), &reply{msg: msg(dns.TypeA, dns.RcodeSuccess, "x.example. 0 IN A 10.0.0.1"), qtype: dns.TypeA, cfg: minTTL},
			"not cached: no reason in the reply"},
		{"truncated", on(nil), on(nil), &reply{msg: truncated, qtype: dns.TypeA, cfg: cfg}, "not cached: the reply was truncated (TC=1)"},
		{"FORMERR", on(nil), on(nil), &reply{msg: msg(dns.TypeA, dns.RcodeFormatError), qtype: dns.TypeA, cfg: cfg},
			"not cached: rcode FORMERR; only NOERROR, NXDOMAIN and SERVFAIL are cached"},
	} {
		if got := origin(tt.before, tt.after, tt.r); !strings.Contains(got, tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

// A lookup whose only upstream never answers: dig says the stub made the SERVFAIL after the
// upstream's timeout, and that the stub's own SERVFAIL is not cached.
func TestDigStubServfail(t *testing.T) {
	silent := dnstest.Serve(t, dnstest.Silent)
	s := startStub(t, map[string]string{"PODNS_UPSTREAMS": silent, "PODNS_UPSTREAM_TIMEOUT": "100ms",
		"PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT": "0s", "PODNS_UPSTREAM_PROTOCOL": "udp"})
	code, out, errOut := s.sub(t, "dig", "x.slow.test")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	mustMatch(t, "dig", out,
		`(?m)^;; ANSWERED FROM: the stub itself: SERVFAIL, no upstream answered \(`+regexp.QuoteMeta(silent)+`: timeout; PODNS_UPSTREAM_TIMEOUT 100ms per attempt\); the query log says cache=error; not cached: the stub's own SERVFAIL is never cached`,
		`(?m)^;; opcode: QUERY, status: SERVFAIL, `)
}

func TestCacheSubcommand(t *testing.T) {
	s := startStub(t, map[string]string{"PODNS_UPSTREAMS": answering(t)})
	for i := range 4 {
		s.query(t, "hot.example.", dns.TypeA)
		if i < 2 {
			s.query(t, "warm.example.", dns.TypeA)
		}
	}
	s.query(t, "cold.example.", dns.TypeA)
	for range 3 { // a DO query has an entry of its own
		dnstest.Exchange(t, "udp", s.dns, dnstest.Msg("hot.example.", dns.TypeA, dnstest.EDNS(1232, true)))
	}

	code, out, errOut := s.sub(t, "cache")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	mustMatch(t, "cache", out,
		`(?m)^the 4 entries with the most hits \(of at most 20 asked\):$`,
		`(?m)^NAME +TYPE +CLASS +FLAGS +STATE +KIND +TTL LEFT +HITS\n`+
			`hot\.example\. +A +IN +- +fresh +answer +\d+s +3\n`+
			`hot\.example\. +A +IN +do +fresh +answer +\d+s +2\n`+
			`warm\.example\. +A +IN +- +fresh +answer +\d+s +1\n`+
			`cold\.example\. +A +IN +- +fresh +answer +\d+s +0\n$`)

	_, out, _ = s.sub(t, "cache", "-n", "1")
	if n := strings.Count(out, ".example."); n != 1 || !strings.Contains(out, "hot.example.") {
		t.Errorf("-n 1: %d entries:\n%s", n, out)
	}

	_, out, _ = s.sub(t, "cache", "HOT.example", "-n", "5")
	mustMatch(t, "cache NAME", out,
		`(?m)^hot\.example\. +A +IN +- +fresh +answer +\d+s +3$`,
		`(?m)^hot\.example\. +A +IN +do +fresh +answer +\d+s +2$`,
		`(?m)^A IN, rcode NOERROR \(TTLs as stored\):\n    hot\.example\. 60 IN A 10\.1\.2\.3`)
	if strings.Contains(out, "warm") {
		t.Errorf("cache NAME shows another name:\n%s", out)
	}
	if _, out, _ = s.sub(t, "cache", "nothere.example"); out != "no cache entry for nothere.example.\n" {
		t.Errorf("unknown name: %q", out)
	}
	for _, args := range [][]string{{"cache", "-n", "0"}, {"cache", "-n", "5000"}, {"cache", "a.example", "b.example"}, {"cache", "-x"}, {"cache", "bad..name"}} {
		if code, _, errOut := s.sub(t, args...); code != exitConfig || !strings.Contains(errOut, "stub cache") {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// A cached upstream SERVFAIL has no records: `stub cache NAME` prints its rcode, not an empty
// heading; the heading of an answer names its rcode too. A name given with surrounding space is
// the name (the same rule as the PODNS_* values).
func TestCacheSubcommandServfail(t *testing.T) {
	up := dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		return m
	}))
	s := startStub(t, map[string]string{"PODNS_UPSTREAMS": up})
	if r := s.query(t, "broken.example.", dns.TypeA); r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("rcode %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	code, out, errOut := s.sub(t, "cache", " broken.example ")
	if code != exitOK || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	mustMatch(t, "cache NAME", out,
		`(?m)^broken\.example\. +A +IN +- +fresh +servfail +\d+s +0$`,
		`(?m)^A IN, rcode SERVFAIL \(the upstream's, kept PODNS_CACHE_SERVFAIL_TTL\) \(TTLs as stored\):\n    \(no records\)$`)
}

// TestSubcommandsWithoutStub: no stub listening, the admin endpoint off, or bound to an address
// that is not loopback: one line saying so, exit 1.
func TestSubcommandsWithoutStub(t *testing.T) {
	for _, tt := range []struct {
		name, listen, want string
	}{
		{"nothing listening", dnstest.FreeAddr(t), "cannot reach the stub's admin endpoint at "},
		{"admin off", "off", "the admin endpoint is off (PODNS_HTTP_LISTEN=off)"},
		{"not on loopback", "10.9.8.7:9253", "PODNS_HTTP_LISTEN=10.9.8.7:9253 listens on no loopback address"},
	} {
		for _, args := range [][]string{{"status"}, {"dig", "a.example"}, {"cache"}, {"querylog", "all"}} {
			var errOut bytes.Buffer
			code := run(context.Background(), args, map[string]string{"PODNS_HTTP_LISTEN": tt.listen}, io.Discard, &errOut)
			lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
			if code != exitFail || len(lines) != 1 || !strings.HasPrefix(lines[0], "stub "+args[0]+": ") || !strings.Contains(lines[0], tt.want) {
				t.Errorf("%s, %q: exit %d, stderr %q; want 1 and one line with %q", tt.name, args, code, errOut.String(), tt.want)
			}
		}
	}
}

// TestDebugPathsOnLoopbackOnly: the stub's own listener on loopback answers /debug/; the
// handler's refusal off loopback is tested in stub/admin.
func TestDebugPathsOnLoopbackOnly(t *testing.T) {
	s := startStub(t, map[string]string{"PODNS_UPSTREAMS": answering(t)})
	for _, p := range []string{admin.StatusPath, admin.CachePath, admin.CachePath + "?name=a.example"} {
		if code, body, err := httpGet("http://" + s.http + p); err != nil || code != http.StatusOK || !json.Valid([]byte(body)) {
			t.Errorf("%s: %d %v %q", p, code, err, body)
		}
	}
}

func TestQueryLogSubcommand(t *testing.T) {
	s := startStub(t, map[string]string{"PODNS_UPSTREAMS": answering(t), "PODNS_QUERY_LOG_RATE": "50"})
	if code, out, errOut := s.sub(t, "querylog"); code != exitOK || out != "query log: off (at most 50 lines/s; 0 dropped)\n" {
		t.Fatalf("querylog: exit %d, %q, stderr %q", code, out, errOut)
	}
	if code, out, errOut := s.sub(t, "querylog", "slow:20ms"); code != exitOK || out != "query log: off → slow:20ms\n" {
		t.Fatalf("querylog slow:20ms: exit %d, %q, stderr %q", code, out, errOut)
	}
	if _, out, _ := s.sub(t, "status"); !strings.Contains(out, "\nquery log: slow:20ms\n") {
		t.Errorf("status after the switch:\n%s", out)
	}
	if !strings.Contains(s.logs.String(), `"by":"PUT /debug/querylog from 127.0.0.1:`) || !strings.Contains(s.logs.String(), `(stub querylog)"`) {
		t.Errorf("no change line naming the subcommand:\n%s", s.logs.String())
	}
	// A bad mode is a bad command line (exit 2, as the README says), found before the stub is asked.
	if code, _, errOut := s.sub(t, "querylog", "verbose"); code != exitConfig || !strings.Contains(errOut, `"verbose": not a query log mode`) || !strings.Contains(errOut, "allowed: off, errors") {
		t.Errorf("a bad mode: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := s.sub(t, "querylog", "all", "errors"); code != exitConfig || !strings.Contains(errOut, "stub querylog [") {
		t.Errorf("two modes: exit %d, stderr %q", code, errOut)
	}
	if code, _, errOut := s.sub(t, "querylog", "slow:1000000h"); code != exitConfig || !strings.Contains(errOut, "out of range: 1ms to 1m") {
		t.Errorf("slow out of range: exit %d, stderr %q", code, errOut)
	}
	// Surrounding white space is ignored, as in PODNS_QUERY_LOG (one rule for both).
	if code, out, errOut := s.sub(t, "querylog", " errors\t"); code != exitOK || out != "query log: slow:20ms → errors\n" {
		t.Errorf("querylog with spaces: exit %d, %q, stderr %q", code, out, errOut)
	}
}

// dig's TYPE is read as dig reads it: a mnemonic in any case, TYPEnnn (RFC 3597) or a number.
func TestDigTypes(t *testing.T) {
	for _, tc := range []struct {
		arg  string
		want uint16
		ok   bool
	}{
		{"aaaa", dns.TypeAAAA, true}, {"TYPE65", 65, true}, {"type65", 65, true}, {"28", dns.TypeAAAA, true},
		{"TYPE65534", 65534, true}, {"TYPE0", 0, false}, {"TYPE70000", 0, false}, {"AAAAA", 0, false},
	} {
		_, got, _, err := digArgs([]string{"example.com", tc.arg})
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("%q: type %d, err %v; want %d, ok %v", tc.arg, got, err, tc.want, tc.ok)
		}
	}
}
