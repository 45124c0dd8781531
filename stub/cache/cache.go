package cache

import (
	"bytes"
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/wire"
)

// Defaults applied by New to zero or negative Config fields (except
// ServfailTTL, where 0 means "never cache SERVFAIL").
const (
	DefaultSize        = 10000
	DefaultMaxTTL      = time.Hour
	DefaultNegMaxTTL   = 30 * time.Second
	DefaultServfailTTL = 5 * time.Second
)

// Config tunes a Cache. MinTTL, MaxTTL and NegMaxTTL have one-second
// resolution (DNS TTLs are whole seconds); sub-second remainders are dropped.
type Config struct {
	Size        int           // max entries; default 10000; values <= 0 mean the default
	MinTTL      time.Duration // raise TTLs below this; default 0 (no floor); applied before the caps, so a cap below it wins
	MaxTTL      time.Duration // cap positive TTLs; default 1h; values <= 0 mean the default
	NegMaxTTL   time.Duration // cap NXDOMAIN/NODATA TTLs; default 30s; values <= 0 mean the default
	ServfailTTL time.Duration // how long an upstream SERVFAIL is kept; DefaultConfig gives 5s; 0 (or negative) = never cached
	// StaleWindow is how long past its expiry an entry may still be served by Stale (RFC 8767);
	// 0 = never. Expired entries inside the window are evicted like live ones, not first.
	StaleWindow time.Duration
	// MaxBytes bounds the cache's whole heap footprint, in bytes: the slots New allocates for
	// Size entries (at most SlotBytes each) plus every stored entry as EntryBytes accounts it. When an
	// insert would exceed it, entries are evicted (CLOCK order) until it fits; a reply larger
	// than a shard's share of the budget is not cached. 0 (the default) = bounded by Size only.
	// The stub derives it from the container's memory limit (stub/memlimit).
	MaxBytes int64
	// Prefetch makes Lookup ask for an entry hit at least PrefetchHits times to be refreshed
	// ahead of its expiry (once, in the last tenth of its lifetime, at least its last second).
	Prefetch bool
	Now      func() time.Time // clock for tests; nil (the default) = the system's monotonic clock
}

// PrefetchHits is how many hits make an entry worth refreshing before it expires (with
// Config.Prefetch; PODNS_PREFETCH documents it as "hit at least twice"). One hit is any name
// the pod looked up once; a second within the TTL says the pod keeps using it, so refreshing it
// is likely to save a client a miss rather than cost an upstream query for nothing.
const PrefetchHits = 2

func prefetchThreshold(on bool) uint32 {
	if on {
		return PrefetchHits
	}
	return 0 // never
}

// DefaultConfig returns the documented defaults, ServfailTTL included.
func DefaultConfig() Config {
	return Config{
		Size:        DefaultSize,
		MaxTTL:      DefaultMaxTTL,
		NegMaxTTL:   DefaultNegMaxTTL,
		ServfailTTL: DefaultServfailTTL,
	}
}

// Cache is a sharded, size-bounded cache of DNS replies in wire form. It is
// safe for concurrent use.
type Cache struct {
	now       func() time.Time // nil: read the monotonic clock directly
	epoch     time.Time        // entry times are durations since epoch
	seed      maphash.Seed
	shards    []shard
	shift     uint // shard index = hash >> shift
	minTTL    uint32
	maxTTL    uint32
	negMaxTTL uint32
	servfail  time.Duration
	stale     time.Duration
	prefetch  uint32
	maxBytes  int64 // Config.MaxBytes, for Stats
}

// shard is one lock's worth of the cache. Eviction is CLOCK (second chance):
// ring holds the entries, a hit only sets the entry's ref flag, and the hand
// sweeps the ring for a victim when the shard is full. index finds an entry's
// position in ring by its hash (index.go).
type shard struct {
	mu    sync.RWMutex
	index []uint32
	ring  []*entry
	cap   int
	hand  int
	// bytes is what the entries in ring cost (EntryBytes); budget bounds it, 0 = no bound.
	bytes, budget int64
	_             [24]byte // pad to 128 bytes: neighbouring shards' locks on separate cache lines
}

// entry is one cached reply. It is the head of a single pointer-free allocation (newEntry)
// that also holds the packed reply and the offsets of its TTL fields, so that an entry costs one
// heap object the garbage collector never scans, rather than a struct and two slices. It is
// immutable once published, apart from state: readers copy msg() without holding the shard
// lock. It must hold no pointers: the allocation is typed as []uint64, so the collector would
// not see them. Its position in the shard's ring is found through the shard's index, its cost
// is EntryBytes of its sizes: 40 bytes of head keep the common one-record replies in the
// allocator's 96- and 112-byte size classes.
type entry struct {
	hash     uint64
	stored   time.Duration // when Set stored it, as Cache.clock time
	lifetime time.Duration // entry is fresh while age < lifetime
	// state is the CLOCK reference bit (stateRef, set by hits), statePrefetched (a refresh
	// was requested: ask only once per entry) and, from bit 2 up, the hits served, for
	// prefetch decisions. One word, so that a hit costs the same atomics as before the fields
	// were packed; the count wraps after 2^30 hits, which at worst delays a prefetch that
	// statePrefetched allows only once anyway.
	state   atomic.Uint32
	msgLen  uint16 // the reply, ID 0, lowercased question, no OPT; at most 65535 (packForCache)
	ttls    uint16 // number of TTL offsets; at most msgLen/11 records
	qtype   uint16
	qclass  uint16
	nameLen uint8 // lowercased question name, wire form, at msg()[wire.HeaderLen:]
	flags   uint8 // keyDO | keyCD
}

// Bits of entry.state.
const (
	stateRef        = 1 << 0
	statePrefetched = 1 << 1
	stateHit        = 1 << 2 // one hit
)

// hits is the number of hits the entry served (modulo 2^30, see state).
func (e *entry) hits() uint64 { return uint64(e.state.Load() / stateHit) }

// cost is what the entry is accounted, EntryBytes.
func (e *entry) cost() int64 { return EntryBytes(int(e.msgLen), int(e.ttls)) }

// entryHead is where the reply starts in an entry's allocation; the TTL offsets follow it.
const entryHead = unsafe.Sizeof(entry{})

// entryWords is the size, in 8-byte words, of the allocation holding an entry with a reply of
// msgLen octets and ttls TTL offsets.
func entryWords(msgLen, ttls int) int { return (int(entryHead) + msgLen + 2*ttls + 7) / 8 }

// newEntry allocates an entry for a reply of msgLen octets with ttls records, all its fields
// zero. The allocation is a []uint64: pointer-free, so the collector does not scan it, and
// 8-byte aligned as entry's 64-bit fields and atomics need.
func newEntry(msgLen, ttls int) *entry {
	mem := make([]uint64, entryWords(msgLen, ttls))
	e := (*entry)(unsafe.Pointer(unsafe.SliceData(mem)))
	e.msgLen, e.ttls = uint16(msgLen), uint16(ttls)
	return e
}

// msg is the stored reply.
func (e *entry) msg() []byte {
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(e), entryHead)), e.msgLen)
}

// name is the lowercased question name, wire form; it aliases msg.
func (e *entry) name() []byte {
	return e.msg()[wire.HeaderLen : wire.HeaderLen+int(e.nameLen)]
}

// ttlOffs holds the offset in msg of every record's TTL field, 2 octets each, host byte order.
func (e *entry) ttlOffs() []byte {
	return unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(e), entryHead+uintptr(e.msgLen))), 2*int(e.ttls))
}

// servfail reports whether the entry holds an upstream SERVFAIL (never served stale, and never
// allowed to displace an entry that could be).
func (e *entry) servfail() bool { return wire.Rcode(e.msg()) == dns.RcodeServerFailure }

const (
	keyDO = 1 << iota
	keyCD
)

const maxName = 255

// New returns a Cache configured by cfg; see Config for defaults.
func New(cfg Config) *Cache {
	if cfg.Size <= 0 {
		cfg.Size = DefaultSize
	}
	cfg.Size = min(cfg.Size, 32*maxShardSize)
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = DefaultMaxTTL
	}
	if cfg.NegMaxTTL <= 0 {
		cfg.NegMaxTTL = DefaultNegMaxTTL
	}
	c := &Cache{
		now:       cfg.Now,
		epoch:     time.Now(),
		seed:      maphash.MakeSeed(),
		minTTL:    seconds(cfg.MinTTL),
		maxTTL:    seconds(cfg.MaxTTL),
		negMaxTTL: seconds(cfg.NegMaxTTL),
		servfail:  cfg.ServfailTTL,
		stale:     max(cfg.StaleWindow, 0),
		prefetch:  prefetchThreshold(cfg.Prefetch),
		maxBytes:  max(cfg.MaxBytes, 0),
	}
	// Up to 32 shards, but at least 64 entries per shard so that small
	// caches keep a meaningful CLOCK ring and an exact size bound.
	n := 32
	for n > 1 && cfg.Size/n < 64 {
		n /= 2
	}
	if c.now != nil {
		c.epoch = c.now()
	}
	c.shards = make([]shard, n)
	c.shift = uint(64 - bits.TrailingZeros(uint(n)))
	for i := range c.shards {
		sh := &c.shards[i]
		sh.cap = cfg.Size / n
		if i < cfg.Size%n {
			sh.cap++
		}
		sh.index = make([]uint32, indexSlots(sh.cap))
		sh.ring = make([]*entry, 0, sh.cap)
		if cfg.MaxBytes > 0 {
			// At least 1: a budget too small for even the slots caches nothing rather than
			// everything.
			sh.budget = max(cfg.MaxBytes/int64(n)-sh.slotBytes(), 1)
		}
	}
	return c
}

// Heap cost model of the byte budget (Config.MaxBytes). The figures are measured, not derived:
// TestFootprintMatchesAccounting fills caches with small and with large replies and checks that
// the heap they hold (runtime.MemStats.HeapAlloc after a GC) is at most what this model
// accounts, and not far below it. The README ("Memory limit") gives the figures.
const (
	// SlotBytes bounds what New allocates per unit of Size, used or not: the ring's pointer
	// (8 B) and the index's 4-byte slots, 4/3 to 8/3 of them (index.go): 13.3 to 18.7 B.
	// Bytes counts the exact figure.
	SlotBytes = 19
	// smallEntryAlloc is EntryBytes(67, 1): the 40-byte entry head, the 67-octet reply and one
	// TTL offset, 109 bytes in the 112-byte size class.
	smallEntryAlloc = 112
)

// SmallEntryBytes is the whole footprint of one entry holding the smallest common reply: one A
// record for a Kubernetes Service name (svc00000.team-a.svc.cluster.local, 35 octets; the reply
// packs into 67). A cache reaches Size entries only if its replies are about this small; with
// larger ones the byte budget bounds it first. The stub's fit check uses it.
const SmallEntryBytes = SlotBytes + smallEntryAlloc

// EntryBytes is the heap, in bytes, one stored reply costs beyond its slot: the one allocation
// holding the entry's fixed fields (40 B), the packed message of msgLen octets and the 2-octet
// TTL offset of each of its rrs records, rounded up as the allocator's size classes do (at most
// 1/8 above 128 B, 16 B below, whole 8 KiB pages above 32 KiB).
func EntryBytes(msgLen, rrs int) int64 {
	return allocSize(8 * entryWords(msgLen, rrs))
}

// allocSize over-approximates the size class Go's allocator rounds an n-byte allocation up to.
func allocSize(n int) int64 {
	switch {
	case n <= 0:
		return 0
	case n <= 128:
		return int64(n+15) &^ 15
	case n <= 32<<10:
		return int64(n + n/8 + 15)
	default: // a large object: whole pages
		return int64(n+8<<10-1) &^ (8<<10 - 1)
	}
}

// seconds converts a duration to whole seconds, saturating at the TTL range.
func seconds(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min(int64(d/time.Second), math.MaxInt32))
}

// clock returns the time since the cache's epoch. Without an injected clock
// it reads only the monotonic clock, which costs half of a time.Now (wall
// and monotonic) on the hit path.
func (c *Cache) clock() time.Duration {
	if c.now == nil {
		return time.Since(c.epoch)
	}
	return c.now().Sub(c.epoch)
}

func (c *Cache) shard(h uint64) *shard {
	return &c.shards[h>>c.shift&uint64(len(c.shards)-1)]
}

// key lowercases name into buf, appends type, class and flags, and hashes it.
// It returns the lowercased name (a prefix of buf).
func (c *Cache) key(buf *[maxName + 5]byte, name []byte, qtype, qclass uint16, flags uint8) ([]byte, uint64) {
	n := copy(buf[:maxName], name)
	wire.Lower(buf[:n])
	binary.BigEndian.PutUint16(buf[n:], qtype)
	binary.BigEndian.PutUint16(buf[n+2:], qclass)
	buf[n+4] = flags
	return buf[:n], maphash.Bytes(c.seed, buf[:n+5])
}

func requestFlags(r *wire.Request) uint8 {
	var f uint8
	if r.DO {
		f |= keyDO
	}
	if r.CD {
		f |= keyCD
	}
	return f
}

// Status says how Lookup answered.
type Status uint8

const (
	// Miss: no entry, or an expired one; dst is returned unchanged.
	Miss Status = iota
	// Hit: a fresh entry was served.
	Hit
	// Prefetch: a fresh entry was served, and it is hot and close to expiry: the caller should
	// refresh it from upstream now, so that its next lookup after expiry is not a miss. Returned
	// once per stored entry.
	Prefetch
)

// Get appends to dst the cached answer to r: ID, RD and CD from r; the
// question name bytes exactly as r has them (the entry stores lowercased
// names; the client's case goes back in, same length so compression pointers
// stay valid); AD set iff the stored reply had it and r asked for it with AD
// or DO (RFC 6840 §5.7–5.8); every TTL reduced by the entry's age. No OPT
// record: the server adds one. ok=false on a miss or an expired entry, and dst
// is returned unchanged. Get allocates nothing.
func (c *Cache) Get(dst []byte, r *wire.Request) (resp []byte, ok bool) {
	resp, st := c.Lookup(dst, r)
	return resp, st != Miss
}

// Lookup is Get that also says when the entry should be prefetched. It allocates nothing.
func (c *Cache) Lookup(dst []byte, r *wire.Request) ([]byte, Status) {
	e, age := c.find(r)
	if e == nil || age >= e.lifetime {
		missesTotal.Inc()
		return dst, Miss
	}
	// Only write the flag when it changes: a store on every hit would bounce
	// the entry's cache line between cores.
	if e.state.Load()&stateRef == 0 {
		e.state.Or(stateRef)
	}
	hits := e.state.Add(stateHit) / stateHit
	hitsTotal.Inc()
	dst = serve(dst, e, r, uint32(age/time.Second), 0)
	if c.prefetch > 0 && hits >= c.prefetch && e.lifetime >= 2*time.Second &&
		e.lifetime-age <= max(e.lifetime/10, time.Second) && e.state.Or(statePrefetched)&statePrefetched == 0 {
		return dst, Prefetch
	}
	return dst, Hit
}

// Serve appends the fresh answer to r as Get does, but counts nothing and touches no entry
// state: for the server to answer a miss from the entry its upstream reply just became, so that
// the miss and every later hit carry the same TTLs (capped by Config, RFC 2308 for negative
// answers), as CoreDNS's cache caps the reply it forwards. ok=false leaves dst unchanged.
func (c *Cache) Serve(dst []byte, r *wire.Request) (resp []byte, ok bool) {
	e, age := c.find(r)
	if e == nil || age >= e.lifetime {
		return dst, false
	}
	return serve(dst, e, r, uint32(age/time.Second), 0), true
}

// Stale appends an answer from an entry that expired no longer than StaleWindow ago, every TTL
// set to ttl (RFC 8767 suggests 30 s), for when the upstreams cannot answer. A stored SERVFAIL is
// never served stale. ok=false leaves dst unchanged. It counts nothing: the server takes the
// stale answer before it asks upstream and sends it only if the upstream fails or is too slow,
// so the caller calls StaleServed when the stale answer is the one that goes out.
func (c *Cache) Stale(dst []byte, r *wire.Request, ttl uint32) (resp []byte, ok bool) {
	if c.stale <= 0 {
		return dst, false
	}
	e, age := c.find(r)
	if e == nil || e.servfail() || age < e.lifetime || age-e.lifetime > c.stale {
		return dst, false
	}
	return serve(dst, e, r, 0, ttl), true
}

// StaleServed counts one answer from Stale sent to a client (podns_cache_stale_served_total).
func (c *Cache) StaleServed() { staleTotal.Inc() }

// Fresh reports whether r has an unexpired entry, without counting a hit or a miss: for the
// server's own prefetch decisions, not for clients.
func (c *Cache) Fresh(r *wire.Request) bool {
	e, age := c.find(r)
	return e != nil && age < e.lifetime
}

// find returns r's entry and its age, or nil.
func (c *Cache) find(r *wire.Request) (*entry, time.Duration) {
	if len(r.QName) == 0 || len(r.QName) > maxName || r.Opcode != 0 {
		return nil, 0
	}
	var buf [maxName + 5]byte
	name, h := c.key(&buf, r.QName, r.QType, r.QClass, requestFlags(r))
	sh := c.shard(h)
	sh.mu.RLock()
	e := sh.lookup(h)
	sh.mu.RUnlock()
	if e == nil || e.qtype != r.QType || e.qclass != r.QClass || e.flags != requestFlags(r) || !bytes.Equal(e.name(), name) {
		return nil, 0
	}
	return e, max(c.clock()-e.stored, 0)
}

// serve appends e's message patched for r: r's ID, RD, CD and question letter case, AD kept only
// for a client that asked for it, and every TTL either reduced by elapsed seconds or, when setTTL
// is non-zero, set to it.
func serve(dst []byte, e *entry, r *wire.Request, elapsed, setTTL uint32) []byte {
	start := len(dst)
	dst = append(dst, e.msg()...)
	out := dst[start:]
	wire.SetID(out, r.ID)
	wire.SetRD(out, r.RD)
	wire.SetCD(out, r.CD)
	// The entry holds the upstream's AD bit for a query that asked for it (Set); a client gets
	// it only if it asked too, with AD or DO (RFC 6840 §5.7–5.8), whoever filled the entry.
	wire.SetAD(out, wire.IsAuthentic(out) && (r.AD || r.DO))
	copy(out[wire.HeaderLen:], r.QName)
	offs := e.ttlOffs()
	switch {
	case setTTL > 0:
		for i := 0; i+1 < len(offs); i += 2 {
			binary.BigEndian.PutUint32(out[binary.NativeEndian.Uint16(offs[i:]):], setTTL)
		}
	case elapsed > 0:
		for i := 0; i+1 < len(offs); i += 2 {
			off := binary.NativeEndian.Uint16(offs[i:])
			ttl := binary.BigEndian.Uint32(out[off:])
			binary.BigEndian.PutUint32(out[off:], ttl-elapsed)
		}
	}
	return dst
}

// Len returns the number of entries held, expired ones included.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.ring)
		sh.mu.RUnlock()
	}
	return n
}

// Bytes returns the heap the cache accounts against Config.MaxBytes: the slots New allocated
// (at most SlotBytes per unit of Size) plus EntryBytes of every entry held.
func (c *Cache) Bytes() int64 {
	var n int64
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += sh.slotBytes() + sh.bytes
		sh.mu.RUnlock()
	}
	return n
}

// Set stores msg, the upstream's reply to r. Never cached: a message without
// QR (not a response), TC=1, an opcode other than QUERY, a question count
// other than 1, a question that does not match r's (case-insensitive name,
// type, class), rcodes other than NOERROR/NXDOMAIN/SERVFAIL (the whole rcode,
// with the OPT record's upper bits, RFC 6891 §6.1.3), NXDOMAIN/NODATA without
// an SOA (RFC 2308 §5), or a TTL of 0 after the caps. The hop-by-hop records
// of the additional section (OPT, TSIG, SIG) are stripped before storing. Negative TTL = min(SOA TTL, SOA MINIMUM) capped by NegMaxTTL (RFC
// 2308). Entry lifetime = the lowest TTL in the message after caps; a SERVFAIL
// lives ServfailTTL. msg is not modified.
//
// The entry keeps msg's AD bit and serves it to every client that asks for it (Get), so msg must
// answer a query that asked for AD (AD=1 or DO=1, RFC 6840 §5.7) whatever r's own AD bit was:
// an upstream may set AD only when asked, and otherwise the entry would depend on who asked first.
// r's AD bit is not part of the key; its DO and CD bits are.
func (c *Cache) Set(r *wire.Request, msg *dns.Msg) {
	c.insert(c.build(r, msg))
}

// insert stores e (nil: nothing) under its key, replacing the entry there and evicting others as
// the size and byte bounds require.
func (c *Cache) insert(e *entry) {
	if e == nil {
		return
	}
	sh := c.shard(e.hash)
	if sh.budget > 0 && e.cost() > sh.budget {
		return // larger than the shard's whole share of the budget
	}
	insertsTotal.Inc()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if i := sh.slot(e.hash); i >= 0 {
		old := sh.ring[i]
		// An upstream SERVFAIL must not replace an answer that can still be served stale: that
		// answer is what the clients get while the upstream is failing.
		if e.servfail() && !old.servfail() && c.stale > 0 && e.stored-old.stored < old.lifetime+c.stale {
			return
		}
		// Same hash, same ring position: the index stays as it is.
		sh.ring[i] = e
		sh.bytes += e.cost() - old.cost()
		sh.fitBudget(e, c.stale, 0)
		return
	}
	if len(sh.ring) < sh.cap {
		sh.fitBudget(e, c.stale, e.cost())
		sh.ring = append(sh.ring, e)
		sh.link(e.hash, len(sh.ring)-1)
		sh.bytes += e.cost()
		entriesGauge.Inc()
		return
	}
	i := sh.victim(e.stored, c.stale)
	sh.unlink(sh.ring[i].hash)
	sh.bytes += e.cost() - sh.ring[i].cost()
	sh.ring[i] = e
	sh.link(e.hash, i)
	evictionsTotal.Inc()
	sh.fitBudget(e, c.stale, 0)
}

// fitBudget evicts entries other than keep, in CLOCK order, until the shard's bytes plus extra
// are within its budget. It ends: keep alone is within the budget (Set checks that first).
// Called with the shard locked.
func (sh *shard) fitBudget(keep *entry, stale time.Duration, extra int64) {
	if sh.budget <= 0 {
		return
	}
	for sh.bytes+extra > sh.budget && len(sh.ring) > 0 {
		i := sh.victim(keep.stored, stale)
		if sh.ring[i] == keep {
			continue
		}
		sh.remove(i)
		evictionsTotal.Inc()
		entriesGauge.Dec()
	}
}

// slotBytes is what the shard's index and ring take, used or not.
func (sh *shard) slotBytes() int64 { return 4*int64(len(sh.index)) + 8*int64(cap(sh.ring)) }

// remove takes ring[i] out of the shard: the last entry of the ring moves into its slot.
func (sh *shard) remove(i int) {
	e := sh.ring[i]
	sh.unlink(e.hash)
	sh.bytes -= e.cost()
	last := len(sh.ring) - 1
	if i != last {
		sh.ring[i] = sh.ring[last]
		sh.relink(sh.ring[i].hash, i)
	}
	sh.ring[last] = nil
	sh.ring = sh.ring[:last]
	if sh.hand >= len(sh.ring) {
		sh.hand = 0
	}
}

// victim advances the CLOCK hand to the next entry to evict: the first one
// that is past use (expired, and past the stale window) or has not been hit
// since the hand last passed. It ends within two turns of the ring because
// each turn clears the ref flags.
func (sh *shard) victim(now, stale time.Duration) int {
	for {
		i := sh.hand
		sh.hand++
		if sh.hand == len(sh.ring) {
			sh.hand = 0
		}
		e := sh.ring[i]
		if now-e.stored >= e.lifetime+stale {
			return i
		}
		if e.state.Load()&stateRef != 0 {
			e.state.And(^uint32(stateRef))
			continue
		}
		return i
	}
}
