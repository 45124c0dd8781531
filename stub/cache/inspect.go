package cache

import (
	"cmp"
	"slices"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/podns/podns/stub/wire"
)

// Inspection, for `stub cache`, `stub status` and /debug/cache: what a person asks of the cache
// while it serves. Reading never holds a shard's lock for more than a copy of that shard's
// entry pointers (entries are immutable once published), so a hit waits at most that long.

// Stats is the cache's size and its counters since the process started.
type Stats struct {
	Entries  int   // held, expired ones included until evicted
	Capacity int   // Config.Size
	Bytes    int64 // accounted heap (see Bytes)
	MaxBytes int64 // Config.MaxBytes; 0 = bounded by Capacity only
	// Hits, Misses and Stale are podns_cache_hits_total, podns_cache_misses_total and
	// podns_cache_stale_served_total: process-wide (a binary has one cache).
	Hits, Misses, Stale uint64
}

// Stats returns the cache's size and counters.
func (c *Cache) Stats() Stats {
	s := Stats{Bytes: c.Bytes(), MaxBytes: c.maxBytes, Hits: count(hitsTotal), Misses: count(missesTotal), Stale: count(staleTotal)}
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		s.Entries += len(sh.m)
		s.Capacity += sh.cap
		sh.mu.RUnlock()
	}
	return s
}

// count reads a counter's value.
func count(c prometheus.Counter) uint64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return uint64(m.GetCounter().GetValue())
}

// State is where an entry stands in its life.
type State string

// Entry states: Fresh is served to clients; Stale expired within Config.StaleWindow and is
// served only when the upstreams fail (RFC 8767); Expired is past both, held until evicted.
const (
	Fresh   State = "fresh"
	Stale   State = "stale"
	Expired State = "expired"
)

// Kind is what an entry's reply says.
type Kind string

// Entry kinds: an Answer (NOERROR with answer records), NXDOMAIN or NODATA (negative, RFC
// 2308: NOERROR without an answer for the type), or an upstream SERVFAIL (kept
// Config.ServfailTTL, never served stale).
const (
	Answer   Kind = "answer"
	NXDomain Kind = "nxdomain"
	NoData   Kind = "nodata"
	Servfail Kind = "servfail"
)

// EntryInfo describes one cached reply.
type EntryInfo struct {
	Name   string // question name, lowercased, fully qualified
	Type   uint16
	Class  uint16
	DO, CD bool // the query flags that are part of the key
	State  State
	Kind   Kind
	// TTLLeft is how long the entry stays Fresh (negative once it expired); StaleLeft how long
	// it may still be served stale (0 when it may not).
	TTLLeft, StaleLeft time.Duration
	// Stored is when the reply was stored (wall clock); an entry refreshed by a miss or a
	// prefetch has a new one.
	Stored time.Time
	Hits   uint64 // hits served from this entry
	// Records are the answer section's records as text, TTLs as stored (the TTL a client gets is
	// the stored one less the entry's age); for a negative entry, the SOA.
	Records []string
}

// Entries returns every entry held for name (every type, class and DO/CD variant), at most
// limit of them (limit <= 0: no bound), ordered by type, class and flags. name is case-insensitive; a
// missing final dot is added. A name that is not a domain name has no entries.
func (c *Cache) Entries(name string, limit int) []EntryInfo {
	buf := make([]byte, maxName)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return nil
	}
	key := buf[:n]
	wire.Lower(key)
	var found []*entry
	c.each(func(e *entry) {
		if string(e.name) == string(key) {
			found = append(found, e)
		}
	})
	slices.SortFunc(found, func(a, b *entry) int {
		return cmp.Or(cmp.Compare(a.qtype, b.qtype), cmp.Compare(a.qclass, b.qclass), cmp.Compare(a.flags, b.flags))
	})
	if limit > 0 && len(found) > limit {
		found = found[:limit]
	}
	return c.infos(found)
}

// Top returns the n entries with the most hits (most first; ties by name and type), n > 0.
func (c *Cache) Top(n int) []EntryInfo {
	type ranked struct {
		e    *entry
		hits uint64 // read once: the entry's counter moves while we rank
	}
	less := func(a, b ranked) int {
		return cmp.Or(cmp.Compare(b.hits, a.hits), slices.Compare(a.e.name, b.e.name), cmp.Compare(a.e.qtype, b.e.qtype))
	}
	var top []ranked
	c.each(func(e *entry) {
		r := ranked{e, e.hits.Load()}
		// Keep the n best seen so far, sorted; n is a screenful, so an insertion beats a heap.
		if len(top) == n && less(r, top[n-1]) >= 0 {
			return
		}
		i, _ := slices.BinarySearchFunc(top, r, less)
		top = slices.Insert(top, i, r)
		if len(top) > n {
			top = top[:n]
		}
	})
	es := make([]*entry, len(top))
	for i, r := range top {
		es[i] = r.e
	}
	return c.infos(es)
}

// each calls fn for every entry, outside the shard locks: under each shard's read lock it only
// copies the entry pointers.
func (c *Cache) each(fn func(*entry)) {
	var ring []*entry
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		ring = append(ring[:0], sh.ring...)
		sh.mu.RUnlock()
		for _, e := range ring {
			fn(e)
		}
	}
}

// infos describes es as of now.
func (c *Cache) infos(es []*entry) []EntryInfo {
	now := c.clock()
	out := make([]EntryInfo, 0, len(es))
	for _, e := range es {
		age := max(now-e.stored, 0)
		info := EntryInfo{
			Type: e.qtype, Class: e.qclass, DO: e.flags&keyDO != 0, CD: e.flags&keyCD != 0,
			TTLLeft: e.lifetime - age, Stored: c.epoch.Add(e.stored), Hits: e.hits.Load(),
			State: Fresh, Kind: Answer,
		}
		if name, _, err := dns.UnpackDomainName(e.name, 0); err == nil {
			info.Name = name
		}
		if info.TTLLeft <= 0 {
			info.State = Expired
			if left := e.lifetime + c.stale - age; c.stale > 0 && left > 0 && !e.servfail() {
				info.State, info.StaleLeft = Stale, left
			}
		}
		var m dns.Msg
		if err := m.Unpack(e.msg); err == nil {
			switch {
			case m.Rcode == dns.RcodeServerFailure:
				info.Kind = Servfail
			case m.Rcode == dns.RcodeNameError:
				info.Kind = NXDomain
			case len(m.Answer) == 0:
				info.Kind = NoData
			}
			rrs := m.Answer
			if len(rrs) == 0 {
				rrs = m.Ns
			}
			for _, rr := range rrs {
				info.Records = append(info.Records, rr.String())
			}
		}
		out = append(out, info)
	}
	return out
}
