// Package upstream sends the stub's cache misses to the cluster DNS (the nameservers of the
// kubelet's original resolv.conf, or PODNS_UPSTREAMS). By default it uses TCP on kept-alive,
// pipelined connections: UDP to the kube-dns VIP loses packets to the conntrack DNAT race, TCP
// does not, and a kept-alive connection makes a miss cost one round trip instead of a handshake
// (RFC 7766). Servers close TCP connections whenever they like (idle timeouts, per-connection
// query limits, restarts); a query in flight on such a connection is re-sent on a new one and
// never surfaces as a failure.
//
//	fwd, err := upstream.New(upstream.Config{Servers: []netip.AddrPort{
//		netip.MustParseAddrPort("10.0.0.99:53"), netip.MustParseAddrPort("10.96.0.10:53")}})
//	for _, r := range fwd.ProbeAll(ctx) { // before reporting ready: the first lookup skips dead servers
//		log.Info().Str("upstream", r.Server).Bool("up", r.Up).Err(r.Err).Msg("upstream probed")
//	}
//	reply, err := fwd.ExchangeWire(ctx, packed) // packed in, packed out; SERVFAIL the client when err != nil
//	msg, err := fwd.Exchange(ctx, query)        // the same with *dns.Msg (packs, unpacks)
//	fwd.Close()
//	registry.MustRegister(upstream.Collectors()...)
//
// API: New(Config) (*Forwarder, error) validates and does no I/O; (*Forwarder).ExchangeWire(ctx,
// query []byte) ([]byte, error), the miss path: a packed query (no TCP length prefix, only read)
// in, the packed reply (the caller's) out, no dns.Msg on the way; (*Forwarder).Exchange(ctx, q)
// (*dns.Msg in and out: packs q, calls ExchangeWire, unpacks the reply);
// (*Forwarder).ProbeAll(ctx) []ProbeResult (probe every server once, mark the silent ones down);
// (*Forwarder).Close(); (*Forwarder).Servers() (the normalised addresses); ErrClosed;
// ProbeResult{Server, Up, RTT, Err, Protocol}; (*Forwarder).Status() []ServerStatus (each
// server's health, protocol, median round trip and last error, for the stub's /debug/status);
// (*Forwarder).MaxExchangeTime(); IsTimeout(err); Collectors().
//
// # Configuration (upstream.Config)
//
//   - Servers — default: — (required); allowed: []netip.AddrPort, port 1–65535; meaning:
//     servers in order of preference. IPv4-mapped addresses count as IPv4; duplicates are
//     dropped. Host names never get here: stub/config refuses them (resolving them would ask
//     the stub itself) and adds port 53 to a bare IP. The normalised form
//     (Forwarder.Servers()) is the metrics label.
//   - Protocol — default: tcp; allowed: tcp, udp (case-insensitive); meaning: udp: one fresh
//     socket per query; a truncated reply is retried over TCP. tcp uses UDP for a server whose
//     TCP fails while it answers over UDP, see UDP fallback; there is no TCP-only mode
//   - Timeout — default: 2s; allowed: > 0; meaning: bounds one attempt at one server —
//     connection set-up, re-sends and reply — then the next server is tried
//   - IdleTimeout — default: 5s; allowed: > 0; keep it below the servers' own idle close
//     (CoreDNS: 10 s); meaning: a pooled TCP connection with nothing in flight for this long
//     is closed by the stub
//   - MaxFails — default: 1; allowed: ≥ 1; meaning: consecutive failed attempts (no reply
//     within Timeout, connection refused or unreachable) that mark a server down; see Dead
//     servers
//   - ProbeInterval — default: 500ms; allowed: > 0; meaning: pause before the first background
//     probe of a down server; doubles after each unanswered probe
//   - ProbeMaxInterval — default: 15s (or ProbeInterval if that is longer); allowed: ≥
//     ProbeInterval; meaning: cap of the pause between probes of a server that stays down
//   - ProbeName — default: .; allowed: a domain name (a trailing dot is added); meaning: name
//     of the probe query, type NS, class IN, recursion desired
//   - Logger — default: writes nothing; allowed: a zerolog.Logger; meaning: rate-limited
//     failure and up/down lines
//   - Now — default: time.Now; meaning: clock for idle expiry, stall detection, down times and
//     log rate limiting (tests)
//
// The stub binary sets them from PODNS_UPSTREAMS, PODNS_UPSTREAM_PROTOCOL, PODNS_UPSTREAM_TIMEOUT,
// PODNS_UPSTREAM_IDLE_TIMEOUT, PODNS_UPSTREAM_MAX_FAILS, PODNS_UPSTREAM_PROBE_INTERVAL,
// PODNS_UPSTREAM_PROBE_MAX_INTERVAL and PODNS_UPSTREAM_PROBE_NAME (stub/config); their defaults,
// ranges and meanings for operators are in the configuration reference (docs/configuration.md,
// section "stub"), and what they do in the stub's manual (docs/manual.md, section
// "dead-upstreams"). This comment is the package's API reference; the
// operator's view is the manual's.
//
// # What Exchange and ExchangeWire guarantee
//
//   - One question. A query without exactly one question is refused with an error; nothing is
//     sent. ExchangeWire also refuses, before sending, a query whose question name is
//     compressed, whose records do not parse to its last octet, that is larger than 65,535
//     octets, or that has an OPT record anywhere but last (it is cut off for a server that
//     rejects EDNS); Exchange puts the OPT last.
//   - Servers in order. Each server that is up gets one attempt of Timeout, in the configured
//     order; servers marked down are skipped (see Dead servers). The first valid reply wins. A
//     refused connection (or ICMP port unreachable in UDP mode) fails the attempt at once,
//     without waiting for Timeout. When every server failed, the error names each failure; the
//     caller answers SERVFAIL.
//   - SERVFAIL, NOTIMP and REFUSED move on. A valid reply with one of these RCODEs is passed
//     over and the next server is tried at once, as glibc's res_send does (its send_dg closes
//     the socket and moves to the next nameserver on exactly these three, unless called from
//     dig; any other RCODE is the answer). It counts as
//     errors{reason="servfail"|"notimp"|"refused"} and is logged with the failure lines, but
//     the server answered: it stays alive and first in the order. When every server tried
//     replied with one of them, the result is a SERVFAIL reply (the last server's own
//     SERVFAIL as it is, else one without records) with no error — glibc passes none of these
//     on either (all nameservers tried: res_send fails, res_query sets TRY_AGAIN, getaddrinfo
//     EAI_AGAIN). When some server gave no reply at all, the result is the error naming every
//     failure, the passed-over replies included. Every other RCODE (NOERROR, NXDOMAIN,
//     FORMERR, YXDOMAIN, …) is returned as it is.
//   - EDNS fallback (RFC 6891 §6.2.2, §7). A query carrying an OPT record that a server
//     answers with FORMERR or NOTIMP and no OPT is sent to it again without OPT, once, within
//     the same attempt and Timeout (errors{reason="edns"}). When that retry gets any other
//     RCODE, the server is remembered as EDNS-intolerant for 15 minutes (Unbound's default
//     infra-host-ttl, the lifetime of its per-server EDNS, RTT and lameness record): its
//     queries go without OPT at once, then EDNS is tried again. One warn line per window. A
//     FORMERR with OPT is the answer (the server understands EDNS), and a query rejected
//     without OPT as well is not held against EDNS. Without OPT a UDP reply is at most 512
//     bytes (RFC 1035 §4.2.1): a truncated one is retried over TCP, also without OPT. The
//     clock is Config.Now. The query without OPT is the query cut before its OPT record, with
//     ARCOUNT one less.
//   - Reply validation, on wire (no dns.Msg). A reply counts only if it is a response (QR set),
//     its ID is the upstream ID, QDCOUNT is 1, and its question matches the query's: the name
//     compared case-insensitively in ASCII, uncompressed (a reply's first name has nothing to
//     point to), type and class. It must also be well-formed: its records parse to exactly its
//     last octet, or, failing that, miekg/dns's Unpack takes it (the rule before replies were
//     read on wire; miekg accepts octets after the last record and header counts larger than
//     the records present). Anything else — wrong ID, other question, no or two questions, an
//     echoed query, a message that does not parse — is dropped, counted as bad_reply, and the
//     attempt keeps waiting for the real reply until Timeout. A reply the record walk takes
//     while miekg does not (an A record with 3 octets of RDATA) is taken: ExchangeWire returns
//     it, Exchange fails to unpack it and returns an error. The RCODE decisions (pass-over,
//     EDNS fallback) read the extended RCODE (RFC 6891 §6.1.3), as miekg's Msg.Rcode does. In
//     UDP mode the socket is connected, so the kernel drops datagrams from any other address
//     or port.
//   - IDs. The upstream ID is random for every send (math/rand/v2, the runtime's ChaCha8
//     generator seeded from the OS's cryptographic randomness), never the client's, and unique
//     among the queries in flight on a connection. The reply carries the client's ID again.
//     The query is not modified.
//   - Cancellation. ctx cancels the whole exchange (context.Canceled/DeadlineExceeded is in
//     the error chain). Close makes every exchange in flight return ErrClosed at once, and
//     every later one too.
//   - Allocations. An ExchangeWire over a kept-alive TCP connection allocates its reply and
//     nothing else (TestExchangeWireAllocs); over UDP it also pays for its fresh socket.
//
// # TCP: pooling, pipelining, re-sends
//
//   - Pool. Connections are opened on demand, one per server at first. Replies are matched by
//     ID and question in any order by one reader goroutine per connection. No goroutine per
//     query: the caller's goroutine writes its query and waits.
//   - One query per connection while there is room. Servers built on miekg/dns — CoreDNS among
//     them — answer one connection's queries one after the other, so a query sent behind
//     another waits for it: a round trip behind a fast one, all of it behind a slow one (a
//     forward to an external resolver). A query therefore goes on a connection with nothing
//     outstanding, and when every open connection has a query outstanding, on a new
//     connection, up to 8 per server — what CoreDNS's own forward plugin does (one query per
//     connection at a time). Idle connections close after IdleTimeout, so the pool shrinks
//     back after a burst. Measured with the peer benchmark (e2e/bench, 2,000 misses/s,
//     upstream +1 ms): queueing on one connection gave a median miss of 143 ms; one query per
//     connection, 1.6 ms, as CoreDNS (NodeLocal config).
//   - At the cap, queries are pipelined (RFC 7766 section 6.2.1.1), up to 100 in flight on one
//     connection (a full connection always gets a new one): a query goes on the connection
//     with the fewest outstanding, preferring one that has answered within 10 ms over a
//     stalled one.
//   - Server closes are not failures. Servers close TCP connections at will: CoreDNS after 10
//     s idle, a stock miekg/dns server after MaxTCPQueries (128 by default), any server on
//     restart. Queries in flight on a connection that died (EOF, reset, write error) are
//     re-sent on a fresh connection — at most 2 re-sends per query per attempt, all within the
//     attempt's Timeout. They count as errors{reason="closed"} and reconnects, not as a failed
//     attempt.
//   - Learned query limit. When a server closes a connection with queries in flight after
//     answering *n*, the stub takes *n* as the server's per-connection limit and puts at most
//     *n* queries on each new connection, so re-sent queries spread over connections the
//     server will serve to the end (200 concurrent misses against MaxTCPQueries 5: no query
//     lost). A connection that carried *n* queries and was not closed by the server (the close
//     was a restart, not a limit) resets the limit when it idles out.
//   - Idle connections are closed by the stub after IdleTimeout with nothing in flight
//     (checked by one timer per connection), and a connection the clock says is past
//     IdleTimeout is never sent on — the stub, not the server, ends idle connections, so no
//     query races a server's idle close.
//   - Unresponsive connections. When an attempt times out and the connection delivered no
//     reply since the query was written, the connection is closed; its other queries are
//     re-sent on a new one.
//
// # UDP mode
//
// Every query goes out from a fresh connected socket (a new random source port, so no two queries
// share a 5-tuple or conntrack entry) with a 64 KiB receive buffer. A reply with TC set is retried
// over TCP to the same server within the same attempt; in udp mode the truncated reply is never
// returned (if the TCP retry fails, the attempt fails and the next server is tried). A server used
// over UDP by the UDP fallback differs here: its truncated reply is returned.
//
// # UDP fallback
//
// Egress NetworkPolicies that allow UDP/53 and not TCP/53 are common; in tcp mode every query of
// such a pod would fail although the server answers over UDP. So, in tcp mode only:
//
//   - Detection. A probe — ProbeAll, and the background probe of a down server — sends the
//     probe query over TCP and over UDP side by side (the UDP probe runs alongside because a
//     dropped SYN makes the TCP probe last its whole bound, which at start is also the UDP
//     probe's). TCP answered: the server is used over TCP (ending a fallback). Only UDP
//     answered: the server is up and used over UDP. Neither: down, as before. And a TCP
//     attempt whose connection is refused at once (RST, ICMP port, host or net unreachable,
//     administratively prohibited: ECONNREFUSED, EHOSTUNREACH, ENETUNREACH, EACCES, EPERM from
//     the dial) is sent over UDP within the same attempt and Timeout; an answer switches the
//     server to UDP, a UDP failure fails the attempt as before (its error names both). A TCP
//     timeout is only a failed attempt: the server goes down (MaxFails) and its prober
//     decides, ProbeInterval later; a timeout alone never switches, because a slow or dead
//     server times out too.
//   - Startup. Against a server that drops TCP, ProbeAll returns at its bound (ctx or Timeout)
//     with the server up over UDP (ProbeResult.Protocol == "udp"), so the stub becomes ready
//     as it would with a dead server, and the first query goes over UDP.
//   - Over UDP a server is asked as in udp mode (fresh socket per query), except for
//     truncation: a truncated reply is retried over TCP for at most 250 ms (fallbackTCPWait; a
//     dropped SYN would otherwise hold every large answer for the whole Timeout, longer than
//     the client's timeout:1), and when that retry fails the truncated reply is returned (TC
//     set, the records that fit, the question; a reply that did not parse past its header
//     gets the question back) — what the client would have got from the server without podns.
//     No error is returned for it; the stub's cache never stores a truncated reply.
//   - Back to TCP. One goroutine per server over UDP checks TCP with a probe on a connection
//     of its own after 30 s, doubling after each failure up to 5 min (with the probers' random
//     tenth): a fixed policy is noticed within minutes, a policy that stays costs one refused
//     or dropped SYN per server per 5 minutes. When TCP answers (or a probe of the server,
//     down meanwhile, is answered over TCP), the server is used over TCP again. Close ends the
//     checker.
//   - Visible. Switching to UDP logs one warn line, upstream answers over UDP but not over
//     TCP: …, with upstream, tcp_error and what to change in the policy (allow TCP/53 to the
//     cluster DNS Service and its pods; the manual's NetworkPolicy section, docs/manual.md);
//     switching back logs one info line, upstream answers over TCP again: back to TCP, with by
//     (tcp check, probe, startup probe). Only changes are logged, so a server that stays on
//     UDP logs once. podns_upstream_protocol_fallback_total counts the switches to UDP and
//     podns_upstream_protocol{protocol} shows the protocol in use.
//
// # Dead servers
//
// A stale nameserver first in the kubelet's resolv.conf makes every lookup that tries it wait the
// whole Timeout. The forwarder notices a dead server and stops using it, from the very first
// lookup on when the binary calls ProbeAll before it reports ready.
//
//   - What fails an attempt. No valid reply within Timeout, a refused connection, ICMP
//     unreachable, or a TCP query whose re-sends ran out. Any reply, whatever its RCODE
//     (SERVFAIL, REFUSED, NXDOMAIN, FORMERR), proves the server alive and resets its count,
//     also when it sends the query on to the next server. A caller's cancellation and Close
//     count for nothing. A timeout during which the server gave a valid reply to another query
//     does not count either: the server is alive and that query was slow (a forward to an
//     external resolver), which skipping the server would not cure.
//   - Down. MaxFails consecutive failed attempts (default 1) mark a server down. One is enough
//     for a per-pod sidecar: every failed attempt costs a client the whole Timeout (longer
//     than the timeout:1 the init container writes, so glibc has already retried), the timeout
//     rule above keeps slow answers from counting, and a server marked down by mistake is back
//     within ProbeInterval (the probe is answered at once). With one server, or when every
//     server is down, marking changes nothing about which server is tried. In udp mode one
//     lost datagram is a timeout: with several servers and a lossy path, a MaxFails of 2–3
//     avoids needless switching.
//   - Skipped. An Exchange tries only the servers that are up, in the configured order. When
//     every server is down, it still tries them all, the most recently marked down first (a
//     server that failed a moment ago is likelier to answer than one silent for minutes),
//     rather than failing outright. An Exchange whose up servers all fail does not go on to
//     the down ones.
//   - Back. A down server comes back on its first valid reply: to a background probe, or to an
//     ordinary query when every server was down.
//   - Probes. One goroutine per down server (none for servers that are up) sends a probe query
//     — ProbeName (default .), type NS, class IN, RD set, like CoreDNS forward's health check
//     — on a connection (or socket) of its own, bounded by Timeout: over UDP in udp mode, over
//     TCP and UDP side by side in tcp mode (see UDP fallback). Any reply with the probe's ID
//     and QR set counts, even SERVFAIL or REFUSED (a CoreDNS with no zone for the root answers
//     REFUSED at once; a truncated UDP reply counts too). The first probe goes out
//     ProbeInterval after the server went down, the pause doubles after each unanswered probe
//     up to ProbeMaxInterval, and a random tenth is added to each pause so that pods started
//     together do not probe in step. The goroutine ends when the server is back, and Close
//     ends every prober at once, also one waiting on a probe. At the defaults a server that
//     stays dead receives one probe per ~15 s per pod.
//   - Probe name. A cluster DNS that cannot reach the internet may answer . NS only after its
//     own forward times out, slower than Timeout; the probe then fails although the server is
//     alive (queries still reach it when every server is down, but while another server is up
//     it stays skipped). In such clusters set ProbeName to a name the server answers itself,
//     e.g. kubernetes.default.svc.cluster.local..
//   - ProbeAll(ctx) probes every server in parallel, each probe bounded by Timeout and by ctx,
//     marks the ones that answered up and the silent ones down (whatever MaxFails; their
//     probers start), and returns one ProbeResult{Server, Up, RTT, Err} per server in the
//     order of Servers(). It returns as soon as every server answered, refused, or ran out of
//     time: with a dead server it takes Timeout (2 s) or the ctx bound, whichever is shorter.
//     A server still silent when ctx ends counts as down. Measured against a real CoreDNS on
//     loopback with a silent server first (TestCoreDNSDeadFirst, one run on a loaded 2-core
//     machine): without ProbeAll the first lookup took the full Timeout (1.0 s in the test);
//     after it, the first lookup took 0.7 ms, the slowest of 200 took 0.7 ms over TCP and 42
//     ms over UDP, and the dead server received nothing but the one probe.
//
// # Metrics
//
// All carry upstream="ip:port" (the normalised server address). Collectors are created
// unregistered; the binary registers upstream.Collectors().
//
//   - podns_upstream_queries_total — type: counter; labels: upstream, protocol (tcp, udp);
//     meaning: attempts sent to a server; a UDP attempt retried over TCP counts once for each
//     protocol; re-sends after a server close are not counted again
//   - podns_upstream_errors_total — type: counter; labels: upstream, reason; meaning: timeout:
//     an attempt got no valid reply within Timeout; network: an attempt failed otherwise
//     (refused, unreachable, re-sends exhausted); closed: a query was re-sent because its
//     connection died (not an attempt failure); bad_reply: a reply was dropped by validation;
//     servfail, notimp, refused: a reply with that RCODE was passed over and the next server
//     tried (not an attempt failure); edns: a query was rejected for its OPT record (FORMERR
//     or NOTIMP without OPT) and sent again without
//   - podns_upstream_duration_seconds — type: histogram; labels: upstream; meaning: time from
//     sending to a valid reply, successful attempts only (a passed-over reply is one; an EDNS
//     fallback counts from the first send); buckets 100 µs … 5 s
//   - podns_upstream_reconnects_total — type: counter; labels: upstream; meaning: connections
//     the server closed or reset with queries in flight (those queries were re-sent)
//   - podns_upstream_open_connections — type: gauge; labels: upstream; meaning: TCP
//     connections currently open
//   - podns_upstream_healthy — type: gauge; labels: upstream; meaning: 1 while the server is
//     up, 0 while it is marked down
//   - podns_upstream_marked_down_total — type: counter; labels: upstream; meaning: times the
//     server was marked down (flaps a scrape of the gauge misses)
//   - podns_upstream_skipped_total — type: counter; labels: upstream; meaning: queries that
//     did not try the server because it was down and another server was up: each one a timeout
//     no client waited for
//   - podns_upstream_probes_total — type: counter; labels: upstream, result (alive, dead);
//     meaning: probes, at startup (ProbeAll) and of down servers, one per probe whatever the
//     protocols it used; alive: any reply; dead: no reply, refused, unreachable
//   - podns_upstream_protocol — type: gauge; labels: upstream, protocol (tcp, udp); meaning: 1
//     for the protocol the server's queries go over now, 0 for the other: two series per
//     server
//   - podns_upstream_protocol_fallback_total — type: counter; labels: upstream; meaning:
//     switches of a server from TCP to UDP (UDP fallback)
//
// # Logs
//
// Attempt failures (timeout, network) are logged at warn, at most one line per server per 10 s,
// with suppressed counting the failures the line stands for — never one line per query. Changes of
// a learned per-connection limit are logged at debug.
//
// A server going down is logged at warn (upstream down: …, with the error that did it), coming
// back at info (upstream up again, with by: probe, startup probe or reply, and down_for). These
// lines too are limited to one per server per 10 s (a separate limit from the failure lines),
// suppressed counting the changes held back: for a flapping server the podns_upstream_healthy
// gauge, not the last line, is the current state.
//
// A switch of a server to UDP is logged at warn, a switch back to TCP at info, once per change
// (see UDP fallback); no rate limit is needed, the background check changes the state at most once
// per pause.
//
// # Not in this package
//
//   - Switching health tracking off: MaxFails has no "never" value (with one server it changes
//     nothing but the probes).
//   - Preferring the fastest server (CoreDNS policy): servers are used in the configured
//     order, like glibc.
package upstream
