package server

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

// musl sends a lookup's A and AAAA queries from one socket and, on some hardware, with the SAME
// query ID; it matches replies by ID alone. If the AAAA reply (a cache hit) overtakes the A reply
// (a miss still upstream), musl takes the AAAA reply as the A answer: "name does not resolve", or
// an IPv6 address in an IPv4-only pod. So replies to one client socket and one ID leave in the
// order their queries arrived. Only queries that share both wait; all others are untouched.

type orderKey struct {
	client netip.AddrPort
	id     uint16
}

// orderSlot is one query's place in line.
type orderSlot struct {
	key   orderKey
	resp  []byte
	ready bool
}

// replyOrder keeps a FIFO of slots per (client, ID) while any miss for it is in flight.
type replyOrder struct {
	active atomic.Int64 // queues open: lets the hit path skip the lock when no miss is pending
	mu     sync.Mutex
	queues map[orderKey][]*orderSlot
}

// reserve takes a place in line for a query that goes upstream.
func (o *replyOrder) reserve(client netip.AddrPort, id uint16) *orderSlot {
	k := orderKey{client, id}
	sl := &orderSlot{key: k}
	o.mu.Lock()
	if o.queues == nil {
		o.queues = map[orderKey][]*orderSlot{}
	}
	if _, ok := o.queues[k]; !ok {
		o.active.Add(1)
	}
	o.queues[k] = append(o.queues[k], sl)
	o.mu.Unlock()
	return sl
}

// sendNow sends an immediate reply (a hit or an error), unless a reply to an earlier query with
// the same client and ID is still pending: then a copy waits in line behind it, and the caller may
// reuse its buffer either way.
func (o *replyOrder) sendNow(client netip.AddrPort, id uint16, resp []byte, send func([]byte)) {
	if o.active.Load() == 0 {
		send(resp)
		return
	}
	k := orderKey{client, id}
	o.mu.Lock()
	q, ok := o.queues[k]
	if !ok {
		o.mu.Unlock()
		send(resp)
		return
	}
	sameIDHeldTotal.Inc()
	o.queues[k] = append(q, &orderSlot{key: k, resp: append([]byte(nil), resp...), ready: true})
	o.mu.Unlock()
}

// complete fills a reserved slot and sends every reply at the head of its line that is ready.
// Sends happen under the lock so that two completions for one key cannot reorder each other.
// A reply that has to wait is copied: the caller may reuse resp once complete returns.
func (o *replyOrder) complete(sl *orderSlot, resp []byte, send func([]byte)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	sl.ready = true
	q := o.queues[sl.key]
	if len(q) > 0 && q[0] != sl {
		// It waits behind an earlier reply: keep a copy, the caller reuses resp's buffer.
		sl.resp = append([]byte(nil), resp...)
		return
	}
	sl.resp = resp
	for len(q) > 0 && q[0].ready {
		send(q[0].resp)
		q[0] = nil
		q = q[1:]
	}
	if len(q) == 0 {
		delete(o.queues, sl.key)
		o.active.Add(-1)
		return
	}
	o.queues[sl.key] = q
}
