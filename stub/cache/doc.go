// Package cache keeps upstream DNS replies in wire form and serves them
// without unpacking: a hit is a hash-table lookup, one copy of the stored packet and
// a few in-place patches (ID, RD/CD/AD, the client's letter case, TTLs). Get
// allocates nothing.
//
// The stub answers most queries from a cache kept in DNS wire form. A cache hit never unpacks a
// message: the query is parsed in place (stub/wire), the entry is found by a hash of the
// lowercased name, and the stored reply is copied and patched in place (ID, RD/CD/AD bits, the
// client's letter case of the name, TTLs reduced by the entry's age). The hit path allocates
// nothing; a test (testing.AllocsPerRun) holds it to that.
//
// # Knobs
//
// The stub reads them from the environment (stub/config; defaults, ranges and meanings in the
// generated configuration reference (docs/configuration.md)) and passes them to
// cache.Config: PODNS_CACHE_SIZE is Size (and what fits the memory limit, MaxBytes),
// PODNS_CACHE_MIN_TTL MinTTL, PODNS_CACHE_MAX_TTL MaxTTL, PODNS_CACHE_NEG_MAX_TTL
// NegMaxTTL, PODNS_CACHE_SERVFAIL_TTL ServfailTTL, PODNS_SERVE_STALE StaleWindow and
// PODNS_PREFETCH Prefetch.
//
// TTLs are whole seconds: sub-second parts of MinTTL, MaxTTL and NegMaxTTL are dropped.
// ServfailTTL keeps its full precision as the entry's lifetime. When MinTTL is above a cap,
// the cap wins. Go callers: cache.DefaultConfig() returns the stub's defaults; in a
// cache.Config literal, a zero Size, MaxTTL or NegMaxTTL means the default, but a zero
// ServfailTTL means "never cache SERVFAIL".
//
// # What is cached, and for how long
//
// A reply is stored under the key (lowercased question name, type, class, DO bit, CD bit):
// ExAmPlE.com and example.com share one entry, and each answer echoes the client's own
// spelling of the name. Queries with and without DO (DNSSEC records) or CD (checking disabled)
// get separate entries, because upstreams answer them differently.
// The AD bit is not part of the key: the stub asks every upstream query with AD=1 (RFC 6840
// §5.7), the entry keeps the upstream's AD, and Get serves AD = stored AD && (the client's AD ||
// its DO), so an entry answers the same way whichever client filled it (RFC 6840 §5.7–5.8).
//
//	| upstream reply | cached? | lifetime |
//	|---|---|---|
//	| NOERROR with data for the question (possibly after a CNAME chain) | yes | lowest TTL in the reply after raising to MinTTL and capping at MaxTTL |
//	| NXDOMAIN, or NOERROR without data (NODATA), with an SOA in the authority section | yes | negative TTL = min(SOA TTL, SOA MINIMUM), raised to MinTTL, capped at NegMaxTTL (RFC 2308); the SOA is served with that TTL. Other authority records are capped at NegMaxTTL, answer records (a CNAME chain) at MaxTTL; the entry lives as long as the lowest of them |
//	| NXDOMAIN or NODATA without an SOA (e.g. a referral) | no (RFC 2308 §5) | |
//	| SERVFAIL | only if ServfailTTL > 0 | ServfailTTL |
//	| any other rcode (REFUSED, FORMERR, NOTIMP, …) | no | |
//	| TC=1 (truncated) | no | |
//	| question not equal to the query's (name compared case-insensitively, type, class) | no | |
//	| any TTL 0 after MinTTL and the caps | no | |
//
// TTLs with the top bit set count as 0 (RFC 2181 §8). The upstream's hop-by-hop records in the
// additional section (OPT, TSIG, SIG(0)) are removed before storing: the stub adds its own OPT for
// each client. The AA bit is cleared:
// the answer comes from a cache, not from the zone. Served TTLs count down by whole seconds of
// age and never reach 0 while the entry is served; at the end of its lifetime the entry stops
// being served (a miss, forwarded upstream) but stays in memory until evicted, so serve stale
// (Config.StaleWindow) can still answer from it. A new upstream reply replaces the entry.
//
// # How an entry is built
//
// An entry is one allocation holding the reply in wire form (ID 0, AA clear, question name
// lowercased, TTLs capped as above) and the offset of every TTL field, which a hit rewrites.
// SetWire builds it from the upstream's octets without unpacking: it reads the header and
// question in place, walks the records (stub/wire), cuts the hop-by-hop records off the end of the
// additional section (fixing ARCOUNT), checks every other record as miekg/dns would read it, so
// that what it stores unpacks, and compresses the names as miekg/dns's packing does
// (wire.Compress: an upstream's uncompressed TCP reply would otherwise make a longer entry, which
// fits fewer records in a client's UDP size); for a usual answer it allocates the entry and
// nothing else. Replies it cannot vouch for that way (a hop-by-hop record before another
// additional record, counts or trailing octets miekg/dns forgives, RDATA of types other than A,
// AAAA, NS, CNAME, PTR, DNAME, MX, SRV, SOA, TXT and types miekg/dns does not know, such as
// RRSIG; compression pointers into octets a hit rewrites; more than 4 KiB) it unpacks with miekg/dns and
// stores as Set does: Set packs the message again (compressed, hop-by-hop records left out) and
// unpacks the result once to check it. Both apply the same rules, with the same code for the TTLs.
//
// # Size and eviction
//
// The cache holds at most Size entries, split into up to 32 shards (each with at least 64
// entries) with their own read/write lock; hits take only the read lock. Eviction is CLOCK
// (second chance): a hit sets a flag on its entry; when a shard is full the clock hand passes
// over flagged entries (clearing the flag) and evicts the first expired or unflagged one. An
// entry being hit therefore survives any stream of one-off names, and an expired entry goes
// before a live one whenever the hand meets it.
//
// Config.MaxBytes (the stub derives it from the container's memory limit, stub/memlimit) bounds
// the bytes as well: the cache accounts what New allocates for Size (a ring of entry pointers and
// an index of 4-byte slots: 13–19 B per unit, at most SlotBytes, 19) plus EntryBytes per entry
// (one allocation: a 40-byte head, the packed reply and 2 per record, rounded up to allocator size
// classes), and evicts in CLOCK order past the budget (split evenly over the shards); a reply larger
// than a shard's share is not cached. TestFootprintMatchesAccounting measures the heap a full cache
// holds against that model (126 of 127 B per entry for one A record, 905 of 950 B for 40); the
// docs/manual.md, "Memory limit", has the method. MaxBytes 0: bounded by count only.
//
// An entry holds no pointers (its allocation is a []uint64), so the garbage collector marks it but
// never scans it; each shard's index (index.go: linear probing, the ring position and 8 bits of the
// hash per slot, backward-shift deletion) holds none either. Only the ring's pointers are scanned.
//
// # Metrics
//
// All are plain counters/gauges without labels (the hit path costs one atomic add), exposed by
// cache.Collectors() for the stub's registry.
//
//	| metric | type | meaning |
//	|---|---|---|
//	| podns_cache_hits_total | counter | queries answered from the cache |
//	| podns_cache_misses_total | counter | lookups that found no entry or only an expired one |
//	| podns_cache_entries | gauge | entries held, expired ones included |
//	| podns_cache_evictions_total | counter | entries removed to make room |
//	| podns_cache_inserts_total | counter | replies stored (new entries and replacements) |
//
// Hit ratio: rate(podns_cache_hits_total[5m]) / (rate(podns_cache_hits_total[5m]) + rate(podns_cache_misses_total[5m])).
package cache
