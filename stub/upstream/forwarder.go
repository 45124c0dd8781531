package upstream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

const (
	defaultTimeout     = 2 * time.Second
	defaultIdleTimeout = 5 * time.Second

	// maxInflight bounds the queries outstanding on one TCP connection; beyond it another
	// connection is opened. It keeps the pending map and the ID search small; keeping queries
	// from queueing behind each other is busyAfter's and stallAfter's job.
	maxInflight = 100
	// busyAfter is how long a connection's outstanding queries may have waited for a reply
	// before a new query goes to another connection (an idle one, or a new one below
	// maxConns) rather than queue behind them. 0: any outstanding query makes it busy. A
	// serial server (miekg/dns, CoreDNS) answers one query per connection at a time, so a
	// query queued behind another pays the other's whole wait: measured with the peer
	// benchmark (e2e/bench) at 2,000 misses/s and a 1 ms upstream delay, pipelining kept
	// queries queued for a median 143 ms.
	busyAfter = 0
	// stallAfter is how long a connection may keep queries outstanding without any reply
	// before it counts as stalled: at the maxConns cap, a query queues on a connection that
	// has answered within stallAfter when there is one. A cluster DNS answers from its cache in
	// well under a millisecond; a reply that takes longer is a forward to an external
	// resolver, and a serial server holds every later query on that connection.
	stallAfter = 10 * time.Millisecond
	// maxConns is how many connections per server may be opened to avoid busy ones; at the
	// cap, busy connections take queries again (pipelining, RFC 7766 section 6.2.1.1). Full
	// connections (maxInflight) always get a new one.
	maxConns = 8
	// maxResends bounds how often one query is re-sent within one attempt because the
	// connection it was on died (server close, reset, write error, unresponsive).
	maxResends = 2
	// writeFailGrace is how long the reader of a connection whose write failed may still
	// drain replies before the connection is given up.
	writeFailGrace = 100 * time.Millisecond
	// logInterval is the shortest gap between two failure lines for one server.
	logInterval = 10 * time.Second
)

// ErrClosed is returned by Exchange and ExchangeWire once Close has been called.
var ErrClosed = errors.New("upstream: forwarder closed")

// errTimeout marks an attempt that got no valid reply within Config.Timeout.
var errTimeout = errors.New("timeout")

// IsTimeout reports whether err, from Exchange or ExchangeWire, includes an attempt that got no valid reply
// within Config.Timeout (rather than a refused connection or an unreachable network).
func IsTimeout(err error) bool { return errors.Is(err, errTimeout) }

// Config configures a Forwarder. Zero values take the documented defaults.
type Config struct {
	// Servers are the upstream servers in order of preference. IPv4-mapped IPv6 addresses are
	// taken as IPv4; duplicates are dropped; port 0 is refused. Required.
	Servers []netip.AddrPort
	// Protocol is "tcp" (default) or "udp". In udp mode a truncated reply is retried over TCP.
	// In tcp mode a server whose TCP is refused or times out while it answers over UDP (a
	// NetworkPolicy that allows UDP port 53 only) is used over UDP until TCP to it works again,
	// checked in the background (fallback.go); there is no TCP-only mode, because failing every
	// query is never better than asking over UDP, the protocol the pod used without podns.
	Protocol string
	// Timeout bounds one attempt at one server, including connection set-up and re-sends;
	// then the next server is tried. Default 2s; must be positive.
	Timeout time.Duration
	// IdleTimeout closes a pooled TCP connection that has had no query outstanding for this
	// long. Keep it below the servers' own idle timeout (CoreDNS: 10s) so that the stub, not
	// the server, closes idle connections. Default 5s; must be positive.
	IdleTimeout time.Duration
	// MaxFails is how many consecutive failed attempts (no reply within Timeout, connection
	// refused or unreachable) mark a server down. Any reply, whatever its RCODE, is a success.
	// Default 1: every failed attempt costs a client the whole Timeout, a probe brings a
	// wrongly marked server back within ProbeInterval, and a timeout while the server answered
	// other queries does not count. Must be at least 1.
	MaxFails int
	// ProbeInterval is the pause before the first background probe of a down server; it doubles
	// after each unanswered probe, up to ProbeMaxInterval. Default 500ms; must be positive.
	ProbeInterval time.Duration
	// ProbeMaxInterval caps the pause between probes of a server that stays down. Default 15s;
	// must be at least ProbeInterval.
	ProbeMaxInterval time.Duration
	// ProbeName is the name of the probe query (type NS, class IN, recursion desired). Any
	// reply proves the server alive. Default "." (the root, as CoreDNS's forward health check);
	// a cluster DNS that cannot reach the internet answers the root slowly, so set a name it
	// answers itself, such as "kubernetes.default.svc.cluster.local.". A trailing dot is added.
	ProbeName string
	// Logger receives rate-limited failure and up/down lines. The zero Logger writes nothing.
	Logger zerolog.Logger
	// Now is the clock for idle expiry, down times and log rate limiting. Default time.Now.
	Now func() time.Time
}

// Forwarder sends queries to the upstream servers. It is safe for concurrent use.
type Forwarder struct {
	cfg   Config
	udp   bool
	peers []*peer
	now   func() time.Time
	// stallAfter and busyAfter are the constants of those names; tests turn stall avoidance and
	// spreading over connections off with them.
	stallAfter, busyAfter time.Duration
	// queryStates holds finished exchanges' queryStates for reuse (peer.go, release). The
	// forwarder's own, not the package's: no package-level mutable state.
	queryStates sync.Pool

	// dialTCP opens upstream connections; tests inject faults with it.
	dialTCP func(ctx context.Context, addr string) (net.Conn, error)

	// ctx is cancelled by Close: it aborts dials and UDP reads, and its Done channel
	// releases every Exchange waiting for a reply.
	ctx    context.Context
	cancel context.CancelFunc
	closed atomic.Bool
	wg     sync.WaitGroup // connection and prober goroutines

	// downCount is the number of servers marked down; 0 keeps Exchange on the fast path.
	downCount atomic.Int32
	// probeWire is the packed probe query with a TCP length prefix and a zero ID.
	probeWire []byte
	// epoch anchors mono, a monotonic clock for ordering replies against attempts.
	epoch time.Time
	// probeWait returns a channel that fires after a prober's pause; tests drive it.
	probeWait func(time.Duration) <-chan time.Time
	// probeDone, when set, is told of every background probe (tests).
	probeDone func(addr string, interval time.Duration, err error)
	// recheckDone, when set, is told of every background TCP check of a server used over UDP
	// (tests); its pauses come from probeWait too.
	recheckDone func(addr string, interval time.Duration, err error)
	// panicLog counts and logs the panics the connection readers and probes recover from.
	panicLog panics.Recorder
	// testHook, when set (tests), is called at each stage a test may panic at: "reader" (a reply
	// arrived on a TCP connection) and "probe".
	testHook func(stage string)
}

// errPanicked is what the queries of a connection whose goroutine panicked, and a probe that
// panicked, fail with.
var errPanicked = errors.New("panic")

// hook calls testHook; nil in production.
func (f *Forwarder) hook(stage string) {
	if f.testHook != nil {
		f.testHook(stage)
	}
}

// mono is the time since New on the monotonic clock, in nanoseconds.
func (f *Forwarder) mono() int64 { return int64(time.Since(f.epoch)) }

// New validates cfg and returns a Forwarder. It does no network I/O: connections are opened
// by the first Exchange that needs them.
func New(cfg Config) (*Forwarder, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("upstream: no servers configured")
	}
	filled, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	f := &Forwarder{cfg: filled, udp: filled.Protocol == "udp"}
	pw, err := packProbe(f.cfg.ProbeName)
	if err != nil {
		return nil, fmt.Errorf("upstream: probe name %q: %v", cfg.ProbeName, err)
	}
	f.probeWire = pw
	f.probeWait = defaultProbeWait
	f.epoch = time.Now()
	f.stallAfter, f.busyAfter = stallAfter, busyAfter
	var d net.Dialer
	f.dialTCP = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	f.now = cfg.Now
	if f.now == nil {
		f.now = time.Now
	}
	f.panicLog.Logger, f.panicLog.Now = cfg.Logger, f.now
	seen := make(map[netip.AddrPort]bool)
	bad := &multierror.Error{ErrorFormat: oneLine}
	for _, s := range cfg.Servers {
		ap, err := checkServer(s)
		if err != nil {
			bad = multierror.Append(bad, err)
			continue
		}
		if seen[ap] {
			continue
		}
		seen[ap] = true
		f.peers = append(f.peers, newPeer(f, ap))
	}
	if bad.Len() > 0 {
		return nil, fmt.Errorf("upstream: bad servers: %w", bad)
	}
	f.cfg.Servers = make([]netip.AddrPort, len(f.peers))
	for i, p := range f.peers {
		f.cfg.Servers[i] = p.ap
		p.m.healthy.Set(1) // only once New succeeds: a refused config leaves no series behind
		if f.udp {
			p.m.protoUDP.Set(1)
			p.m.protoTCP.Set(0)
		} else {
			p.m.protoTCP.Set(1)
			p.m.protoUDP.Set(0)
		}
	}
	f.ctx, f.cancel = context.WithCancel(context.Background())
	return f, nil
}

// withDefaults returns c with every zero field set to its documented default, or an error naming
// the first field that is out of range. Servers are checked by New.
func (c Config) withDefaults() (Config, error) {
	switch strings.ToLower(c.Protocol) {
	case "", "tcp":
		c.Protocol = "tcp"
	case "udp":
		c.Protocol = "udp"
	default:
		return c, fmt.Errorf("upstream: protocol %q: want tcp or udp", c.Protocol)
	}
	var err error
	if c.Timeout, err = durationOr("timeout", c.Timeout, defaultTimeout); err != nil {
		return c, err
	}
	if c.IdleTimeout, err = durationOr("idle timeout", c.IdleTimeout, defaultIdleTimeout); err != nil {
		return c, err
	}
	switch {
	case c.MaxFails < 0:
		return c, fmt.Errorf("upstream: max fails %d: must be at least 1", c.MaxFails)
	case c.MaxFails == 0:
		c.MaxFails = defaultMaxFails
	}
	if c.ProbeInterval, err = durationOr("probe interval", c.ProbeInterval, defaultProbeInterval); err != nil {
		return c, err
	}
	if c.ProbeMaxInterval, err = durationOr("probe max interval", c.ProbeMaxInterval, max(defaultProbeMaxInterval, c.ProbeInterval)); err != nil {
		return c, err
	}
	if c.ProbeMaxInterval < c.ProbeInterval {
		return c, fmt.Errorf("upstream: probe max interval %v: must be at least the probe interval %v",
			c.ProbeMaxInterval, c.ProbeInterval)
	}
	given := c.ProbeName
	if c.ProbeName == "" {
		c.ProbeName = defaultProbeName
	}
	c.ProbeName = dns.Fqdn(c.ProbeName)
	if _, ok := dns.IsDomainName(c.ProbeName); !ok {
		return c, fmt.Errorf("upstream: probe name %q: not a domain name", given)
	}
	return c, nil
}

// durationOr returns v, or def when v is 0; a negative v is an error naming the field.
func durationOr(name string, v, def time.Duration) (time.Duration, error) {
	switch {
	case v < 0:
		return 0, fmt.Errorf("upstream: %s %v: must be positive", name, v)
	case v == 0:
		return def, nil
	}
	return v, nil
}

// checkServer refuses the zero AddrPort and port 0, and takes IPv4-mapped addresses as IPv4.
func checkServer(ap netip.AddrPort) (netip.AddrPort, error) {
	if !ap.Addr().IsValid() {
		return netip.AddrPort{}, errors.New("server with no address")
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("server %q: port must be 1-65535", ap)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// Servers returns the normalised server addresses, in order; they are the values of the
// metrics' upstream label.
func (f *Forwarder) Servers() []string {
	out := make([]string, len(f.peers))
	for i, p := range f.peers {
		out[i] = p.addr
	}
	return out
}

// MaxExchangeTime is the longest one Exchange can take: each server tried once, Config.Timeout
// each, plus 500 ms for the last attempt's reply to arrive and be handed back. The stub's whole-
// miss deadline and its shutdown drain are derived from it, so a miss is never cut off while an
// attempt could still succeed.
func (f *Forwarder) MaxExchangeTime() time.Duration {
	return time.Duration(len(f.peers))*f.cfg.Timeout + 500*time.Millisecond
}

// Exchange is ExchangeWire for a query and reply in miekg/dns form: q is packed (exactly one
// question; an OPT record is sent as the last additional record), exchanged, and the reply
// unpacked. Its errors are ExchangeWire's, and an error when the chosen reply, accepted on wire
// (see ExchangeWire), does not unpack.
//
// q is only read, never written, so the caller may go on reading it (copying it, packing
// its own copies) on other goroutines while Exchange runs; it must not change q until
// Exchange returns.
func (f *Forwarder) Exchange(ctx context.Context, q *dns.Msg) (*dns.Msg, error) {
	if q == nil || len(q.Question) != 1 {
		return nil, errors.New("upstream: query must have exactly one question")
	}
	if f.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	qs := f.getQueryState()
	framed, err := packQuery(q, qs.buf)
	if err != nil {
		qs.release()
		return nil, fmt.Errorf("upstream: packing query: %w", err)
	}
	r, err := f.exchangeFramed(ctx, qs, framed)
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	if err := m.Unpack(r); err != nil {
		return nil, fmt.Errorf("upstream: unpacking the reply: %w", err)
	}
	return m, nil
}

// ExchangeWire forwards query and returns the first valid reply that is an answer, packed,
// with query's ID. query is one packed DNS message without a TCP length prefix, of at most
// 65,535 octets: a header with QDCOUNT 1, an uncompressed question name, and records that parse
// to its last octet, with at most one OPT record (RFC 6891 section 6.1.1), which must be the last
// additional record. Anything else is an error before any send. query is only read, and not
// kept: the caller may reuse it once ExchangeWire returns. The reply is the caller's.
//
// Upstream query IDs are random (RFC 5452), never the client's. A reply counts only if it is a
// response (QR set) with the upstream ID, QDCOUNT 1, and the query's question: the same name
// compared case-insensitively in ASCII (RFC 4343), uncompressed (the first name of a message
// has nothing to point to), and the same QTYPE and QCLASS. It must also be well-formed: its
// records parse to exactly its last octet, or, failing that, miekg/dns unpacks it (miekg
// accepts trailing octets and header counts larger than the records present). Other replies
// are dropped, counted in podns_upstream_errors_total{reason="bad_reply"}, and the wait goes on.
//
// Each server is tried in order with Config.Timeout per attempt. A reply with RCODE SERVFAIL,
// NOTIMP or REFUSED (the extended RCODE, RFC 6891 section 6.1.3) is passed over, as glibc's
// res_send does, and the next server is tried; when every server tried replied so, the result
// is a SERVFAIL reply (see serverFailure), and when some server gave no reply at all, an
// error. The error names every failure. ctx cancels the whole exchange; after Close the error
// is ErrClosed. When ctx carries a querylog.Upstream, ExchangeWire counts its attempts there
// and names the server whose reply it returns.
//
// A query carrying an OPT record that a server answers with FORMERR or NOTIMP and no OPT is
// sent to it again without OPT within the same attempt, and the server is remembered as
// EDNS-intolerant for ednsMemory (RFC 6891 sections 6.2.2 and 7; see peer.attempt). A
// truncated UDP reply (TC) is asked again over TCP (see peer.send).
func (f *Forwarder) ExchangeWire(ctx context.Context, query []byte) ([]byte, error) {
	if f.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	if len(query) > dns.MaxMsgSize {
		return nil, fmt.Errorf("upstream: query of %d bytes is too large", len(query))
	}
	qs := f.getQueryState()
	// One buffer carries the TCP length prefix and the message; the ID bytes [2:4] are
	// rewritten for every send, UDP sends framed[2:]. It is the pooled state's: no allocation.
	framed := append(qs.buf[:0], byte(len(query)>>8), byte(len(query)))
	framed = append(framed, query...)
	return f.exchangeFramed(ctx, qs, framed)
}

// exchangeFramed checks the query in framed (TCP length prefix, then the message), prepares
// qs with it and runs the exchange. It releases qs.
func (f *Forwarder) exchangeFramed(ctx context.Context, qs *queryState, framed []byte) ([]byte, error) {
	qEnd, optOff, err := parseQuery(framed[2:])
	if err != nil {
		qs.buf = framed
		qs.release()
		return nil, err
	}
	qs.ctx, qs.frame, qs.ednsFrame, qs.buf = ctx, framed, framed, framed
	qs.edns, qs.optOff, qs.qid = optOff > 0, optOff, wire.ID(framed[2:])
	qs.call.q = framed[2+wire.HeaderLen : 2+qEnd : 2+qEnd]
	r, err := f.exchange(ctx, qs)
	qs.release() // not reached on a panic: that state is left to the GC, not reused
	return r, err
}

// parseQuery checks that query is one ExchangeWire takes and returns the end of its question
// and the offset of its OPT record, 0 when it has none.
func parseQuery(query []byte) (qEnd, optOff int, err error) {
	if len(query) < wire.HeaderLen {
		return 0, 0, fmt.Errorf("upstream: query of %d bytes is shorter than a header", len(query))
	}
	if wire.Count(query, wire.Question) != 1 {
		return 0, 0, errors.New("upstream: query must have exactly one question")
	}
	end, ok := wire.PlainNameEnd(query, wire.HeaderLen)
	if !ok || end+4 > len(query) {
		return 0, 0, errors.New("upstream: query has a malformed or compressed question")
	}
	it := wire.Records(query)
	for it.Next() {
		rr := it.RR()
		if optOff > 0 {
			return 0, 0, errors.New("upstream: query has a record after its OPT record")
		}
		if rr.Section == wire.Additional && rr.Type == wire.TypeOPT {
			optOff = rr.Off
		}
	}
	if it.Err() != nil || it.Offset() != len(query) {
		return 0, 0, errors.New("upstream: query is malformed")
	}
	return end + 4, optOff, nil
}

// exchange is ExchangeWire's tries, server after server, with qs prepared.
func (f *Forwarder) exchange(ctx context.Context, qs *queryState) ([]byte, error) {
	var failed *multierror.Error // made on the first failure: most exchanges have none
	var rejected []byte          // the last reply that made the stub try the next server
	silent := false              // some server gave no reply at all
	trace := querylog.UpstreamFrom(ctx)
	order := f.order()
	for i, p := range order {
		if trace != nil {
			trace.Attempts++
		}
		r, err := p.attempt(qs)
		if err == nil {
			if trace != nil {
				trace.Server = p.addr
			}
			rcode := wire.ExtendedRcode(r)
			if reason := passOverReason(rcode); reason != "" {
				p.passedOver(reason, i == len(order)-1)
				rejected = r
				failed = appendFailure(failed, fmt.Errorf("%s: %s", p.addr, dns.RcodeToString[rcode]))
				continue
			}
			wire.SetID(r, qs.qid)
			return r, nil
		}
		if errors.Is(err, ErrClosed) || ctx.Err() != nil {
			if ctx.Err() != nil && !errors.Is(err, ErrClosed) {
				return nil, fmt.Errorf("upstream: %w", ctx.Err())
			}
			return nil, err
		}
		silent = true
		failed = appendFailure(failed, err)
	}
	if rejected != nil && !silent {
		return serverFailure(qs.ednsFrame[2:], qs.qid, qs.call.q, rejected), nil
	}
	return nil, fmt.Errorf("upstream: all servers failed: %w", appendFailure(failed))
}

// appendFailure adds errs to failed, made in the forwarder's one-line format when nil.
func appendFailure(failed *multierror.Error, errs ...error) *multierror.Error {
	if failed == nil {
		failed = &multierror.Error{ErrorFormat: oneLine}
	}
	return multierror.Append(failed, errs...)
}

// passOverReason returns the podns_upstream_errors_total reason for a reply whose RCODE makes
// the stub try the next server, or "" for a reply that is the answer. The set is glibc's:
// res_send.c's send_dg closes the socket and moves on to the next nameserver on SERVFAIL,
// NOTIMP and REFUSED, and hands every other RCODE (NOERROR, NXDOMAIN, FORMERR, ...) to the
// caller as the answer. Extended RCODEs (RFC 6891 section 6.1.3) are not in the set.
func passOverReason(rcode int) string {
	switch rcode {
	case dns.RcodeServerFailure:
		return reasonServfail
	case dns.RcodeNotImplemented:
		return reasonNotimp
	case dns.RcodeRefused:
		return reasonRefused
	}
	return ""
}

// serverFailure is what ExchangeWire returns when every server it tried replied, and every
// reply was one the stub passes over: SERVFAIL, with the query's ID. glibc passes none of these
// RCODEs on either: when res_send has tried every nameserver it returns -1 (errno ETIMEDOUT once
// a server was reached), res_query turns that into TRY_AGAIN and getaddrinfo into EAI_AGAIN, the
// same outcome a SERVFAIL from the stub gives. A client never sees an upstream's REFUSED or
// NOTIMP: musl, which (unlike glibc) takes REFUSED as a permanent EAI_FAIL, would otherwise fail
// a name that another upstream resolves a moment later. The last SERVFAIL reply is returned as
// it is (its EDNS options, e.g. extended errors, stay); any other is replaced by a SERVFAIL
// without records: query's opcode, question, and, for a standard query, its RD and CD flags (as
// miekg/dns's SetReply), and last's RA. qid is the query's own ID (query's ID field holds the
// upstream ID of the last send); question is query's question (name, type, class).
func serverFailure(query []byte, qid uint16, question, last []byte) []byte {
	if wire.ExtendedRcode(last) == dns.RcodeServerFailure {
		wire.SetID(last, qid)
		return last
	}
	const (
		qr       = 1 << 15
		opcode   = 0xF << 11
		rd, ra   = 1 << 8, 1 << 7
		cd       = 1 << 4
		servfail = dns.RcodeServerFailure
	)
	qf := binary.BigEndian.Uint16(query[2:])
	flags := qr | qf&opcode | servfail
	if qf&opcode == dns.OpcodeQuery<<11 {
		flags |= qf & (rd | cd)
	}
	flags |= binary.BigEndian.Uint16(last[2:]) & ra
	m := make([]byte, wire.HeaderLen, wire.HeaderLen+len(question))
	binary.BigEndian.PutUint16(m, qid)
	binary.BigEndian.PutUint16(m[2:], flags)
	binary.BigEndian.PutUint16(m[4:], 1) // QDCOUNT
	return append(m, question...)
}

// packQuery packs q without writing to it, behind a 2-byte TCP length prefix, into dst's
// storage when it has room. miekg/dns's Pack writes the message's rcode into its OPT record
// (OPT.SetExtendedRcode, RFC 6891 section 6.1.3) even when the value does not change, so q's OPT
// is replaced by a copy in a shallow copy of q; the rest of q is only read. The copy of the OPT
// is shallow too: Pack writes only its header. The OPT goes last in the additional section,
// where ExchangeWire wants it (it cuts it off for a server that rejects EDNS). A query of one
// question and an OPT (every miss) packs with one allocation, the scratch, when dst is large
// enough (issue 12 item 5).
func packQuery(q *dns.Msg, dst []byte) ([]byte, error) {
	var sc struct {
		m     dns.Msg
		opt   dns.OPT
		extra [2]dns.RR
	}
	p := &sc // one allocation: Pack's receiver escapes
	p.m = *q
	if opt := q.IsEdns0(); opt != nil {
		p.opt = *opt
		extra := p.extra[:0]
		if len(q.Extra) > len(p.extra) {
			extra = make([]dns.RR, 0, len(q.Extra))
		}
		for _, rr := range q.Extra {
			if rr != opt {
				extra = append(extra, rr)
			}
		}
		p.m.Extra = append(extra, &p.opt)
	}
	// PackBuffer packs into the buffer it is given when it has room for the uncompressed
	// message and one byte more.
	need := 2 + p.m.Len() + 1
	buf := dst[:0]
	if cap(buf) < need {
		buf = make([]byte, need)
	}
	buf = buf[:need]
	b, err := p.m.PackBuffer(buf[2:])
	if err != nil {
		return nil, err
	}
	if len(b) > 0 && &b[0] != &buf[2] { // Pack made its own buffer after all
		buf = append(buf[:2], b...)
	}
	buf = buf[:2+len(b)]
	buf[0], buf[1] = byte(len(b)>>8), byte(len(b))
	return buf, nil
}

// oneLine is the multierror format of the forwarder's errors: every failure on one line, so
// that the message stays a single log field.
func oneLine(errs []error) string {
	parts := make([]string, len(errs))
	for i, err := range errs {
		parts[i] = err.Error()
	}
	return strings.Join(parts, "; ")
}

// Close closes every pooled connection. Exchanges in flight return ErrClosed promptly, later
// ones at once. Close waits for the connection goroutines to end.
func (f *Forwarder) Close() error {
	if !f.closed.CompareAndSwap(false, true) {
		return nil
	}
	f.cancel()
	for _, p := range f.peers {
		p.mu.Lock()
		conns := append([]*conn(nil), p.conns...)
		p.mu.Unlock()
		for _, c := range conns {
			c.kill(ErrClosed, killLocal)
		}
		// Under h.mu: a markDown either started its prober (and added it to wg) before,
		// or sees closed and starts none, so no wg.Add races the Wait below.
		p.h.mu.Lock()
		p.h.closed = true
		p.h.mu.Unlock()
	}
	f.wg.Wait()
	return nil
}
