package querylog

import (
	"fmt"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/podns/podns/stub/wire"
)

// Source says where an answer came from: the value of the line's cache field, and of the label
// cache of podns_request_duration_seconds (every Source but Prefetch, which answers no client).
type Source uint8

const (
	Hit       Source = iota // a fresh cache entry (positive, negative or a cached SERVFAIL)
	Miss                    // the upstream's reply to this query's own upstream query
	Stale                   // an expired cache entry (RFC 8767): the upstreams failed or were too slow
	Coalesced               // the reply to an identical query already upstream (PODNS_COALESCE)
	Filtered                // NODATA made up by PODNS_AAAA=filter
	Error                   // the stub's own error reply: FORMERR, NOTIMP, BADVERS, or SERVFAIL when no upstream answered, too many misses were waiting, or a panic
	Prefetch                // an upstream query the stub sent on its own to keep the cache warm; no client waits
	NumSources
)

var sourceNames = [NumSources]string{"hit", "miss", "stale", "coalesced", "filtered", "error", "prefetch"}

func (s Source) String() string { return sourceNames[s] }

// Protocols of Entry.Proto.
const (
	ProtoNone = iota // a prefetch: no client
	ProtoUDP
	ProtoTCP
)

var protoNames = [...]string{ProtoNone: "", ProtoUDP: "udp", ProtoTCP: "tcp"}

// Entry is one answer, as the server saw it.
type Entry struct {
	// Query is the client's query as received (the prefetch's own query for Prefetch): the
	// line's id, type and name are read from it, and only when a line is written.
	Query []byte
	// Remote is the client's address and port; invalid for a prefetch.
	Remote netip.AddrPort
	Proto  int // ProtoUDP, ProtoTCP or ProtoNone
	// Rcode is the answer's rcode, extended rcodes included (BADVERS is 16).
	Rcode int
	// Size is the answer's length in octets as sent (after truncation): CoreDNS's rsize.
	Size     int
	Duration time.Duration // from reading the query to sending the answer
	Source   Source
	// Upstream is the upstream whose reply was used (or, when every upstream tried replied
	// SERVFAIL/REFUSED/NOTIMP, the last that replied); "" when none replied or none was asked.
	Upstream string
	// Attempts is how many upstream servers this answer's upstream query tried (each within
	// PODNS_UPSTREAM_TIMEOUT); 0 when none was asked. A coalesced answer reports its leader's.
	Attempts int
}

// Config configures a Log.
type Config struct {
	// Mode is the mode at start (PODNS_QUERY_LOG). Default Off.
	Mode Mode
	// Rate is the most lines written per second, at most Rate of them at once (the burst);
	// lines over it are dropped and counted (PODNS_QUERY_LOG_RATE). Default 100.
	Rate int
	// Logger gets the lines, at info level whatever its own level: the mode decides what is
	// logged. The zero Logger writes nothing.
	Logger zerolog.Logger
	// SummaryInterval is how often a line says how many lines were dropped since the last
	// such line, when any were. Default 10s.
	SummaryInterval time.Duration
	// Now is the clock of the rate limit. Default time.Now.
	Now func() time.Time
}

// Log writes the query log. It is safe for concurrent use. A nil *Log logs nothing.
type Log struct {
	mode  atomic.Int64 // Mode.v
	log   zerolog.Logger
	now   func() time.Time
	epoch time.Time // the rate limit's time origin (monotonic when Now is time.Now)
	rate  int
	// The rate limit is GCRA (the generic cell rate algorithm, a token bucket without a
	// refill timer): tat is the theoretical arrival time of the next line, in ns since epoch.
	// A line is allowed when, once it is counted, tat is at most burst ahead of now.
	period, burst int64 // ns per line; ns of lines that may go out at once
	tat           atomic.Int64
	dropped       atomic.Int64 // since the last summary line
	droppedAll    atomic.Int64 // since New

	summaryInterval time.Duration
	stop            chan struct{}
	done            chan struct{}
	closeOnce       sync.Once
}

// New returns a Log and starts its summary timer; Close stops it.
func New(cfg Config) *Log {
	if cfg.Rate <= 0 {
		cfg.Rate = 100
	}
	if cfg.SummaryInterval <= 0 {
		cfg.SummaryInterval = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	l := &Log{
		log:             cfg.Logger.Level(zerolog.InfoLevel),
		now:             cfg.Now,
		rate:            cfg.Rate,
		period:          int64(time.Second) / int64(cfg.Rate),
		summaryInterval: cfg.SummaryInterval,
		stop:            make(chan struct{}),
		done:            make(chan struct{}),
	}
	l.burst = l.period * int64(cfg.Rate) // one second's worth
	l.epoch = l.now()
	l.mode.Store(cfg.Mode.v)
	go l.summaries()
	return l
}

// Close stops the summary timer, after one last summary line if lines were dropped since the
// previous one. The Log still takes lines afterwards.
func (l *Log) Close() {
	if l == nil {
		return
	}
	l.closeOnce.Do(func() {
		close(l.stop)
		<-l.done
	})
}

func (l *Log) summaries() {
	defer close(l.done)
	t := time.NewTicker(l.summaryInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.summarize()
		case <-l.stop:
			l.summarize()
			return
		}
	}
}

// summarize writes how many lines were dropped since the last summary, if any were.
func (l *Log) summarize() {
	n := l.dropped.Swap(0)
	if n == 0 {
		return
	}
	l.log.Warn().Int64("dropped", n).Int("rate", l.rate).
		Msgf("%d query log lines dropped (over PODNS_QUERY_LOG_RATE=%d lines per second)", n, l.rate)
}

// Mode returns the current mode; Off for a nil Log.
func (l *Log) Mode() Mode {
	if l == nil {
		return Off
	}
	return Mode{v: l.mode.Load()}
}

// On reports whether the mode is anything but Off: the one check the cache-hit path makes
// before it builds an Entry (one atomic load).
func (l *Log) On() bool { return l != nil && l.mode.Load() != 0 }

// SetMode switches to m and logs the change with the old mode, the new one and by (who asked:
// the admin endpoint and its client, for instance). Setting the current mode again is logged
// too: the line confirms what the operator asked for.
func (l *Log) SetMode(m Mode, by string) {
	old := Mode{v: l.mode.Swap(m.v)}
	l.log.Warn().Str("old", old.String()).Str("new", m.String()).Str("by", by).Msg("query log mode changed")
}

// Wants reports whether the current mode selects an answer with this rcode, source, duration and
// upstream attempt count. It allocates nothing and only reads the mode.
func (l *Log) Wants(rcode int, src Source, d time.Duration, attempts int) bool {
	switch v := l.mode.Load(); {
	case v == 0:
		return false
	case v == All.v:
		return true
	case v > 0:
		return d > time.Duration(v)
	}
	switch rcode {
	case dns.RcodeServerFailure, dns.RcodeRefused, dns.RcodeNotImplemented, dns.RcodeFormatError:
		return true
	}
	return src == Stale || src == Error || attempts > 1
}

// Record writes e's line if the mode selects it and the rate limit lets it through; a line the
// rate limit holds back is counted in podns_query_log_dropped_total and in the next summary.
// It allocates nothing when the mode does not select e.
func (l *Log) Record(e *Entry) {
	if l == nil || !l.Wants(e.Rcode, e.Source, e.Duration, e.Attempts) {
		return
	}
	if !l.allow() {
		l.dropped.Add(1)
		l.droppedAll.Add(1)
		droppedTotal.Inc()
		return
	}
	l.write(e)
}

// allow takes one line from the rate limit.
func (l *Log) allow() bool {
	now := int64(l.now().Sub(l.epoch))
	for {
		tat := l.tat.Load()
		next := max(tat, now) + l.period
		if next-now > l.burst {
			return false
		}
		if l.tat.CompareAndSwap(tat, next) {
			return true
		}
	}
}

func (l *Log) write(e *Entry) {
	ev := l.log.Info()
	if e.Remote.IsValid() {
		ev = ev.Str("remote", e.Remote.String())
	}
	var r wire.Request
	_ = r.Parse(e.Query) // an unparseable query still gets what could be read (its ID at least)
	if len(e.Query) >= wire.HeaderLen {
		ev = ev.Uint16("id", r.ID)
	}
	if r.QName != nil {
		var buf [4 * 255]byte // the longest name, every octet escaped as \DDD
		ev = ev.Str("type", typeString(r.QType)).Bytes("name", appendName(buf[:0], r.QName))
	}
	if p := protoNames[e.Proto]; p != "" {
		ev = ev.Str("proto", p)
	}
	ev = ev.Str("rcode", rcodeString(e.Rcode)).Int("size", e.Size).
		Float64("duration", e.Duration.Seconds()).Str("cache", e.Source.String())
	if e.Attempts > 0 {
		ev = ev.Str("upstream", e.Upstream).Int("attempts", e.Attempts)
	}
	ev.Msg("query")
}

func typeString(t uint16) string {
	if s, ok := dns.TypeToString[t]; ok {
		return s
	}
	return "TYPE" + strconv.Itoa(int(t)) // RFC 3597 §5
}

func rcodeString(rc int) string {
	if rc == dns.RcodeBadVers {
		return "BADVERS" // miekg/dns names 16 BADSIG, its TSIG meaning; in an OPT record it is BADVERS (RFC 6891 §9)
	}
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return fmt.Sprintf("RCODE%d", rc)
}

// appendName appends the wire-form name in presentation form (RFC 1035 §5.1): labels joined by
// dots, a trailing dot, "." and "\" escaped with a backslash, other octets outside printable
// ASCII as \DDD. The client's letter case is kept.
func appendName(dst, name []byte) []byte {
	if len(name) == 0 || name[0] == 0 {
		return append(dst, '.')
	}
	for i := 0; i < len(name) && name[i] != 0; {
		n := int(name[i])
		i++
		for _, c := range name[i:min(i+n, len(name))] {
			switch {
			case c == '.' || c == '\\' || c == '"' || c == '(' || c == ')' || c == ';' || c == '@' || c == '$':
				dst = append(dst, '\\', c)
			case c <= ' ' || c >= 0x7f:
				dst = append(dst, '\\', '0'+c/100, '0'+c/10%10, '0'+c%10)
			default:
				dst = append(dst, c)
			}
		}
		dst = append(dst, '.')
		i += n
	}
	return dst
}

var droppedTotal = prometheus.NewCounter(prometheus.CounterOpts{
	Namespace: "podns", Name: "query_log_dropped_total",
	Help: "Query log lines not written because of PODNS_QUERY_LOG_RATE.",
})

// Collectors returns the query log's metrics for registration.
func Collectors() []prometheus.Collector { return []prometheus.Collector{droppedTotal} }

// Rate returns the rate limit, lines per second.
func (l *Log) Rate() int { return l.rate }

// Dropped returns how many lines this Log dropped to the rate limit since New.
func (l *Log) Dropped() int64 { return l.droppedAll.Load() }
