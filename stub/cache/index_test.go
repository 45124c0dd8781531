package cache

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"unsafe"
)

// TestIndexAgainstMap drives one shard's index and ring with random inserts, replacements and
// removals and checks every lookup against a map. The hashes share their low bits in groups,
// so that probe runs are long, wrap around the end of the table and are broken by removals;
// some share their tag bits too, so that a tag match is not taken for a hit.
func TestIndexAgainstMap(t *testing.T) {
	const capacity = 48
	sh := &shard{cap: capacity, index: make([]uint32, indexSlots(capacity)), ring: make([]*entry, 0, capacity)}
	if n := len(sh.index); n != 64 {
		t.Fatalf("index of %d slots for %d entries, want 64 (a power of two ≥ 4/3 of it)", n, capacity)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	hash := func() uint64 {
		low := uint64(rng.IntN(6)) + 60 // homes 60–65: runs cross the end of the 64-slot table
		tag := uint64(rng.IntN(3)) << 32
		return rng.Uint64()&^(1<<40-1) | tag | low
	}
	want := map[uint64]*entry{}
	for step := range 5000 {
		switch {
		case len(sh.ring) < capacity && rng.IntN(3) > 0:
			h := hash()
			e := newEntry(0, 0)
			e.hash = h
			if i := sh.slot(h); i >= 0 {
				sh.ring[i] = e
			} else {
				sh.ring = append(sh.ring, e)
				sh.link(h, len(sh.ring)-1)
			}
			want[h] = e
		case len(sh.ring) > 0:
			i := rng.IntN(len(sh.ring))
			h := sh.ring[i].hash
			delete(want, h)
			sh.remove(i)
			if sh.lookup(h) != nil {
				t.Fatalf("step %d: removed hash %#x still found", step, h)
			}
		}
		for h, e := range want {
			if got := sh.lookup(h); got != e {
				t.Fatalf("step %d: lookup(%#x) = %p, want %p", step, h, got, e)
			}
			if i := sh.slot(h); sh.ring[i] != e {
				t.Fatalf("step %d: slot(%#x) = %d holds another entry", step, h, i)
			}
		}
		used := 0
		for _, s := range sh.index {
			if s != 0 {
				used++
			}
		}
		if used != len(sh.ring) || len(want) != len(sh.ring) {
			t.Fatalf("step %d: %d index slots used, %d entries in ring, %d expected", step, used, len(sh.ring), len(want))
		}
	}
}

// TestEntryIsPointerFree: an entry lives in a []uint64 allocation, which the collector does not
// scan; a pointer field would point at memory the collector may free.
func TestEntryIsPointerFree(t *testing.T) {
	var walk func(reflect.Type) bool
	walk = func(typ reflect.Type) bool {
		switch typ.Kind() {
		case reflect.Struct:
			for i := range typ.NumField() {
				if !walk(typ.Field(i).Type) {
					return false
				}
			}
			return true
		case reflect.Array:
			return walk(typ.Elem())
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			return true
		}
		return false
	}
	if !walk(reflect.TypeFor[entry]()) {
		t.Error("entry holds a pointer, slice, string, map or interface")
	}
	if entryHead != 40 || unsafe.Alignof(entry{}) != 8 {
		t.Errorf("entry head %d bytes, alignment %d; the size classes of the README's figures and smallEntryAlloc assume 40 and 8", entryHead, unsafe.Alignof(entry{}))
	}
}
