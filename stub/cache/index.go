package cache

import "math/bits"

// A shard finds its entries through index, an open-addressing hash table (linear probing) of
// 4-byte slots: the position in ring of the entry plus one (0: the slot is empty) in the low
// ringBits bits, and tagBits bits of the entry's hash above them, so that a probe past another
// entry rarely has to read that entry. It replaces a map[uint64]*entry: the slots hold no
// pointers, so the collector never scans them, and cost 4 to 11 bytes per unit of the shard's
// capacity (at most 3/4 full, rounded up to a power of two) where the map's cost 19 to 39.
// Every index method is called with the shard locked (lookup: at least read-locked).
const (
	ringBits = 24
	ringMask = 1<<ringBits - 1
	// maxShardSize is the most entries a shard holds: positions in ring must fit ringBits
	// bits. New clamps Size to 32 shards of it.
	maxShardSize = ringMask
)

// indexSlots is the length of the index of a shard holding up to size entries: a power of two
// at least 4/3 of size (never full: a probe for a missing hash ends at an empty slot).
func indexSlots(size int) int {
	return 1 << bits.Len(uint(max((size*4+2)/3, 2)-1))
}

// slotOf packs ring position i with h's tag.
func slotOf(h uint64, i int) uint32 { return uint32(h>>32)<<ringBits | uint32(i+1) }

// tagMatch reports whether slot s may hold hash h: same tag bits.
func tagMatch(s uint32, h uint64) bool { return (s^uint32(h>>32)<<ringBits)>>ringBits == 0 }

// lookup returns the entry stored under hash h, or nil.
func (sh *shard) lookup(h uint64) *entry {
	if i := sh.slot(h); i >= 0 {
		return sh.ring[i]
	}
	return nil
}

// slot returns the ring position of the entry stored under hash h, or -1.
func (sh *shard) slot(h uint64) int {
	mask := uint64(len(sh.index) - 1)
	for p := h & mask; ; p = (p + 1) & mask {
		s := sh.index[p]
		if s == 0 {
			return -1
		}
		if i := int(s&ringMask) - 1; tagMatch(s, h) && sh.ring[i].hash == h {
			return i
		}
	}
}

// pos returns the index slot holding hash h, which must be stored.
func (sh *shard) pos(h uint64) uint64 {
	mask := uint64(len(sh.index) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if s := sh.index[i]; tagMatch(s, h) && s != 0 && sh.ring[s&ringMask-1].hash == h {
			return i
		}
	}
}

// link records that the entry with hash h, not yet in the index, is at ring position i.
func (sh *shard) link(h uint64, i int) {
	mask := uint64(len(sh.index) - 1)
	p := h & mask
	for sh.index[p] != 0 {
		p = (p + 1) & mask
	}
	sh.index[p] = slotOf(h, i)
}

// relink records that the entry with hash h, in the index, moved to ring position i.
func (sh *shard) relink(h uint64, i int) { sh.index[sh.pos(h)] = slotOf(h, i) }

// unlink removes hash h, which must be in the index, by backward shift (Knuth's Algorithm R):
// every later slot of the probe run whose home is not cyclically within (hole, slot] moves into
// the hole, so that lookups never need tombstones. The ring must still hold every entry the
// index points at.
func (sh *shard) unlink(h uint64) {
	mask := uint64(len(sh.index) - 1)
	hole := sh.pos(h)
	for j := (hole + 1) & mask; sh.index[j] != 0; j = (j + 1) & mask {
		s := sh.index[j]
		home := sh.ring[s&ringMask-1].hash & mask
		// Distances from the hole and from home, going forward around the table.
		if (j-home)&mask >= (j-hole)&mask {
			sh.index[hole] = s
			hole = j
		}
	}
	sh.index[hole] = 0
}
