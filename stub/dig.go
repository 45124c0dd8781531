package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/stub/admin"
	"github.com/podns/podns/stub/config"
)

// digCmd is `stub dig NAME [TYPE] [+bypass-cache]`: one query through the stub's DNS listener
// (PODNS_LISTEN, as the pod's resolver asks it), or with +bypass-cache straight to the stub's
// upstreams as /debug/status lists them, each over the protocol the stub uses for it now.
//
// Where a reply through the stub came from is read from the cache itself, not marked in the
// reply (which would change the answer the pod's resolver gets): the entry for the question
// (type, class IN, no DO or CD, as this query asks) is fetched from /debug/cache before and
// after the query. An entry fresh before and stored at the same moment after served the reply;
// one stored anew (or none before) means the upstreams answered; an entry past its TTL before
// and unchanged after means a stale answer (the upstreams failed). When no entry answered, the
// reply itself and the upstream failures /debug/status recorded during the query say who made
// it (a SERVFAIL after no upstream answered is the stub's own) and why it was not cached (TTL 0,
// a negative answer without SOA, truncated, its rcode). Another query of the pod for the same
// name in between (a refresh by a miss or a prefetch) can blur it; the output says what it saw.
func digCmd(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	name, qtype, bypass, err := digArgs(args)
	if err != nil {
		return fail(stderr, "dig", err)
	}
	c, err := newClient(environ)
	if err != nil {
		return fail(stderr, "dig", err)
	}
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.SetEdns0(1232, false) // what glibc and musl do not send, but dig does: the whole answer over UDP
	fmt.Fprintf(stdout, "; <<>> stub dig %s <<>> %s %s\n", versionText(), dns.Fqdn(name), dns.Type(qtype))
	if bypass {
		return digUpstreams(ctx, c, q, stdout, stderr)
	}
	return digStub(ctx, c, q, stdout, stderr)
}

// digArgs parses NAME [TYPE] [+bypass-cache], in any order after NAME; TYPE defaults to A.
func digArgs(args []string) (name string, qtype uint16, bypass bool, err error) {
	const usage = "stub dig NAME [TYPE] [+bypass-cache]"
	qtype = dns.TypeA
	typed := false
	for _, a := range args {
		switch {
		case a == "+bypass-cache":
			bypass = true
		case strings.HasPrefix(a, "+") || strings.HasPrefix(a, "-"):
			return "", 0, false, fmt.Errorf("%w: %s: unknown option %q", errUsage, usage, a)
		case name == "":
			name = a
		case !typed:
			t, ok := parseType(a)
			if !ok {
				return "", 0, false, fmt.Errorf("%w: %s: unknown type %q", errUsage, usage, a)
			}
			qtype, typed = t, true
		default:
			return "", 0, false, fmt.Errorf("%w: %s: unexpected %q", errUsage, usage, a)
		}
	}
	if name == "" {
		return "", 0, false, fmt.Errorf("%w: %s: no name", errUsage, usage)
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return "", 0, false, fmt.Errorf("%w: %q is not a domain name", errUsage, name)
	}
	return name, qtype, bypass, nil
}

// digStub asks the stub and says where the reply came from.
func digStub(ctx context.Context, c *client, q *dns.Msg, stdout, stderr io.Writer) int {
	server := stubAddr(c.cfg.ListenAddrs())
	before, err := c.entry(ctx, &q.Question[0])
	if err != nil {
		return fail(stderr, "dig", err)
	}
	// Wall clock, as the upstreams' LastErrorAt: the failures at or after it are this query's
	// (or, rarely, another lookup's of the pod in the same moment).
	start := time.Now()
	r, proto, rtt, err := exchange(ctx, q, server, "udp")
	if err != nil {
		return fail(stderr, "dig", fmt.Errorf("no reply from the stub at %s (PODNS_LISTEN): %v", server, err))
	}
	after, err := c.entry(ctx, &q.Question[0])
	if err != nil {
		return fail(stderr, "dig", err)
	}
	var st admin.Status
	if err := c.get(ctx, admin.StatusPath, &st); err != nil {
		return fail(stderr, "dig", err)
	}
	rep := reply{msg: r, qtype: q.Question[0].Qtype, failures: failuresSince(st.Upstreams, start), cfg: c.cfg}
	fmt.Fprintf(stdout, ";; SERVER: %s (the stub, %s), %s\n", server, proto, roundRTT(rtt))
	fmt.Fprintf(stdout, ";; ANSWERED FROM: %s\n", origin(before, after, &rep))
	fmt.Fprintf(stdout, ";; TTL LEFT: %s\n\n", ttlLeft(r))
	fmt.Fprintln(stdout, r.String())
	return exitOK
}

// reply is what dig knows of the stub's reply besides the cache: the reply itself, the upstream
// failures /debug/status recorded while it was asked, and the configuration the stub runs with.
type reply struct {
	msg      *dns.Msg
	qtype    uint16
	failures []failure
	cfg      *config.Config
}

// failure is an upstream's last error, as /debug/status reports it.
type failure struct{ server, reason, err string }

// failuresSince is the upstreams' last errors recorded at or after start, probes aside (they
// run in the background, not for a query).
func failuresSince(ups []admin.Upstream, start time.Time) []failure {
	var out []failure
	for _, u := range ups {
		if u.LastErrorAt != nil && !u.LastErrorAt.Before(start) && u.LastErrorReason != "probe" {
			out = append(out, failure{u.Server, u.LastErrorReason, u.LastError})
		}
	}
	return out
}

// silent reports whether an upstream gave no reply (timeout, network): the forwarder then
// returns an error, and the stub makes the SERVFAIL itself (the query log's cache=error).
func (r *reply) silent() bool {
	for _, f := range r.failures {
		if f.reason == "timeout" || f.reason == "network" {
			return true
		}
	}
	return false
}

func (r *reply) failureText() string {
	parts := make([]string, len(r.failures))
	for i, f := range r.failures {
		parts[i] = f.server + ": " + f.reason
	}
	return strings.Join(parts, ", ")
}

// who says who made a reply that did not come from the cache: the stub itself (a SERVFAIL after
// an upstream gave no reply, or the AAAA filter's NODATA) or the upstreams.
func (r *reply) who() string {
	m := r.msg
	switch {
	case m.Rcode == dns.RcodeServerFailure && r.silent():
		return fmt.Sprintf("the stub itself: SERVFAIL, no upstream answered (%s; PODNS_UPSTREAM_TIMEOUT %s per attempt); the query log says cache=error", r.failureText(), r.cfg.UpstreamTimeout)
	case m.Rcode == dns.RcodeServerFailure && len(r.failures) > 0:
		return fmt.Sprintf("the upstreams (cache miss): every upstream tried passed the query over (%s): SERVFAIL", r.failureText())
	case m.Rcode == dns.RcodeServerFailure:
		return "the stub or an upstream (cache miss): SERVFAIL with no upstream failure recorded during the query (the stub also answers SERVFAIL at once with 1024 misses waiting, or after a recovered panic: see its log)"
	case r.qtype == dns.TypeAAAA && r.cfg.AAAA == "filter" && m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0:
		return "the stub itself (PODNS_AAAA=filter): NODATA, no upstream asked"
	}
	return "the upstreams (cache miss)"
}

// notCached says why the cache kept no entry for the reply, by the cache's own rules
// (stub/cache Set), most specific first.
func (r *reply) notCached() string {
	m := r.msg
	negative := m.Rcode == dns.RcodeNameError || (m.Rcode == dns.RcodeSuccess && !answersType(m, r.qtype))
	switch {
	case m.Rcode == dns.RcodeServerFailure && r.silent():
		return "the stub's own SERVFAIL is never cached: the next query asks the upstreams again"
	case r.qtype == dns.TypeAAAA && r.cfg.AAAA == "filter" && m.Rcode == dns.RcodeSuccess && len(m.Answer) == 0:
		return "the AAAA filter's answers are made for each query, not cached"
	case m.Truncated:
		return "the reply was truncated (TC=1); a truncated reply is never cached"
	case m.Rcode == dns.RcodeServerFailure && r.cfg.CacheServfailTTL <= 0:
		return "SERVFAIL, and PODNS_CACHE_SERVFAIL_TTL=0 caches none"
	case m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError && m.Rcode != dns.RcodeServerFailure:
		return fmt.Sprintf("rcode %s; only NOERROR, NXDOMAIN and SERVFAIL are cached", dns.RcodeToString[m.Rcode])
	case negative && !hasSOA(m):
		kind := "NODATA"
		if m.Rcode == dns.RcodeNameError {
			kind = "NXDOMAIN"
		}
		return kind + " without an SOA in the authority section: not cached (RFC 2308 §5)"
	case r.cfg.CacheMinTTL <= 0 && zeroTTL(m):
		return "a record with TTL 0 (RFC 1035 §3.2.1: use once, do not cache)"
	}
	return "no reason in the reply: the entry may have been evicted already (cache full: PODNS_CACHE_SIZE, or over its byte budget), or replaced by a lookup in between"
}

func answersType(m *dns.Msg, qtype uint16) bool {
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == qtype || qtype == dns.TypeANY {
			return true
		}
	}
	return false
}

func hasSOA(m *dns.Msg) bool {
	for _, rr := range m.Ns {
		if rr.Header().Rrtype == dns.TypeSOA {
			return true
		}
	}
	return false
}

func zeroTTL(m *dns.Msg) bool {
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype != dns.TypeOPT && rr.Header().Ttl == 0 {
				return true
			}
		}
	}
	return false
}

// origin says where the reply came from, comparing the question's cache entry before and after
// (nil: none, or the cache is off: enabled false), and, when the cache did not answer, who did
// and why the reply was not cached.
func origin(before, after *entryState, r *reply) string {
	if !after.enabled {
		if who := r.who(); who != "the upstreams (cache miss)" {
			return who + " (the cache is off)"
		}
		return "the upstreams (the cache is off)"
	}
	b, a := before.entry, after.entry
	switch {
	case a != nil && b != nil && b.Stored.Equal(a.Stored) && b.State == "fresh":
		return fmt.Sprintf("the cache (hit): entry stored %s ago, %d hits", roundDur(time.Since(a.Stored)), a.Hits)
	case a != nil && b != nil && b.Stored.Equal(a.Stored) && b.State == "stale":
		return "the cache, STALE (RFC 8767): the entry expired and the upstreams did not answer in time (PODNS_STALE_TIMEOUT)"
	case a != nil && b != nil && b.Stored.Equal(a.Stored):
		return fmt.Sprintf("%s; the expired entry was kept (state %s, %s): %s", r.who(), a.State, a.Kind, r.notCached())
	case a != nil:
		return fmt.Sprintf("the upstreams (cache miss); now cached: %s %s, fresh for %ds", a.State, a.Kind, a.TTLLeftSeconds)
	}
	return r.who() + "; not cached: " + r.notCached()
}

// entryState is the cache's entry for a question as /debug/cache shows it.
type entryState struct {
	enabled bool
	entry   *admin.Entry // nil: none
}

// entry fetches the cache entry this tool's query uses: q's type, class IN, no DO, no CD.
func (c *client) entry(ctx context.Context, q *dns.Question) (*entryState, error) {
	var rep admin.CacheReport
	if err := c.get(ctx, admin.CachePath+"?name="+url.QueryEscape(q.Name), &rep); err != nil {
		return nil, err
	}
	st := &entryState{enabled: rep.Enabled}
	for i, e := range rep.Entries {
		if e.Type == dns.TypeToString[q.Qtype] && e.Class == "IN" && !e.DO && !e.CD {
			st.entry = &rep.Entries[i]
		}
	}
	return st, nil
}

// digUpstreams asks the stub's upstreams directly, in the order the stub tries them (those up
// first), each over its current protocol, until one replies.
func digUpstreams(ctx context.Context, c *client, q *dns.Msg, stdout, stderr io.Writer) int {
	var st admin.Status
	if err := c.get(ctx, admin.StatusPath, &st); err != nil {
		return fail(stderr, "dig", err)
	}
	var ordered []admin.Upstream
	for _, up := range []bool{true, false} {
		for _, u := range st.Upstreams {
			if u.Up == up {
				ordered = append(ordered, u)
			}
		}
	}
	if len(ordered) == 0 {
		return fail(stderr, "dig", errors.New("the stub reports no upstreams"))
	}
	var failures []string
	for _, u := range ordered {
		r, proto, rtt, err := exchange(ctx, q, u.Server, u.Protocol)
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s over %s: %v", u.Server, u.Protocol, err))
			continue
		}
		for _, f := range failures {
			fmt.Fprintf(stdout, ";; no reply: %s\n", f)
		}
		fmt.Fprintf(stdout, ";; SERVER: %s (upstream, %s), %s\n", u.Server, proto, roundRTT(rtt))
		fmt.Fprintf(stdout, ";; ANSWERED FROM: the upstream, bypassing the cache (the cache is unchanged)\n")
		fmt.Fprintf(stdout, ";; TTL LEFT: %s\n\n", ttlLeft(r))
		fmt.Fprintln(stdout, r.String())
		return exitOK
	}
	return fail(stderr, "dig", fmt.Errorf("no upstream replied: %s", strings.Join(failures, "; ")))
}

// exchange sends q to server over proto ("udp" or "tcp"); a truncated UDP reply is asked again
// over TCP. It returns the protocol that gave the reply.
func exchange(ctx context.Context, q *dns.Msg, server, proto string) (*dns.Msg, string, time.Duration, error) {
	cl := &dns.Client{Net: proto, Timeout: toolTimeout}
	r, rtt, err := cl.ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated && proto == "udp" {
		proto = "tcp, after a truncated UDP reply"
		cl.Net = "tcp"
		r, rtt, err = cl.ExchangeContext(ctx, q, server)
	}
	return r, proto, rtt, err
}

// stubAddr is the stub's first DNS listener, a wildcard one reached on loopback.
func stubAddr(listen []netip.AddrPort) string {
	if len(listen) == 0 {
		return "127.0.0.1:53"
	}
	l := listen[0]
	a := l.Addr()
	switch {
	case a.Is4() && a.IsUnspecified():
		a = netip.MustParseAddr("127.0.0.1")
	case a.IsUnspecified():
		a = netip.IPv6Loopback()
	}
	return net.JoinHostPort(a.String(), fmt.Sprint(l.Port()))
}

// ttlLeft is the lowest TTL of the reply's records (the OPT record aside): how long a resolver
// may keep the answer.
func ttlLeft(r *dns.Msg) string {
	lowest := int64(-1)
	for _, sec := range [][]dns.RR{r.Answer, r.Ns, r.Extra} {
		for _, rr := range sec {
			if rr.Header().Rrtype == dns.TypeOPT {
				continue
			}
			if t := int64(rr.Header().Ttl); lowest < 0 || t < lowest {
				lowest = t
			}
		}
	}
	if lowest < 0 {
		return "- (no records)"
	}
	return fmt.Sprintf("%ds", lowest)
}

func roundRTT(d time.Duration) string { return d.Round(10 * time.Microsecond).String() }

func versionText() string { return version.Version }

// parseType reads a query type as dig does: a mnemonic (AAAA, any case), the RFC 3597 form
// TYPEnnn, or a bare number.
func parseType(a string) (uint16, bool) {
	if t, ok := dns.StringToType[strings.ToUpper(a)]; ok {
		return t, true
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(a), "TYPE"), 10, 16)
	return uint16(n), err == nil && n > 0
}
