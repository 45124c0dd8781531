package server

import (
	"context"
	"errors"
	"sync"

	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

// flight is one upstream query that identical concurrent misses wait on instead of sending
// their own: an app that starts 1,000 goroutines resolving the same name costs one upstream query.
type flight struct {
	done  chan struct{}
	reply []byte // the upstream's reply, packed; read-only once done is closed
	err   error
	up    upstreamInfo // the leader's upstream and attempts, for its waiters' query log lines
}

// flights deduplicates concurrent misses by the cache's notion of "the same question".
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

// flightKey is the name in wire form lowercased (ASCII only, RFC 4343), type, class and the DO
// and CD bits: the parts of a question that change the upstream's answer. Not the client's AD
// bit: every upstream query asks for AD (prepare), and the cache and pack show it to each waiter
// by its own request.
func flightKey(r *wire.Request) string {
	var flags byte
	if r.DO {
		flags |= 1
	}
	if r.CD {
		flags |= 2
	}
	k := make([]byte, 0, len(r.QName)+5)
	k = append(k, r.QName...)
	wire.Lower(k)
	k = append(k, byte(r.QType>>8), byte(r.QType), byte(r.QClass>>8), byte(r.QClass), flags)
	return string(k)
}

// errFresh is coalesce's answer when the question's cache entry is fresh: it was stored after
// the caller looked (the query it waited for landed), and the caller serves it from the cache.
var errFresh = errors.New("answered from the cache meanwhile")

// coalesce forwards q, the query for r, or with Config.Coalesce waits for an identical query
// already in flight. leader reports whether this call sent the query. The leader stores the reply
// in the cache (Cache.Set keeps only what may be cached) before the flight ends, so with
// skipFresh an identical question always finds the flight, or the fresh entry (errFresh): a
// client's miss that overtook the search-path prefetch of its question, or the prefetch that
// overtook the client, is never asked upstream twice. A refresh of an entry still fresh (the
// expiry prefetch) passes skipFresh false. up gets the answering upstream and the attempts, the
// leader's for a waiter.
func (s *Server) coalesce(ctx context.Context, key string, q []byte, r *wire.Request, skipFresh bool, up *upstreamInfo) (reply []byte, leader bool, err error) {
	if !s.cfg.Coalesce {
		if skipFresh && s.fresh(r) {
			return nil, false, errFresh
		}
		reply, err = s.cfg.Forwarder.ExchangeWire(querylog.WithUpstream(ctx, up), q)
		s.store(r, reply, err)
		return reply, true, err
	}
	s.flights.mu.Lock()
	if f, ok := s.flights.m[key]; ok {
		s.flights.mu.Unlock()
		coalescedTotal.Inc()
		select {
		case <-f.done:
			*up = f.up
			return f.reply, false, f.err
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
	}
	// Under the lock: a flight ends (its reply stored first) only under it too.
	if skipFresh && s.fresh(r) {
		s.flights.mu.Unlock()
		return nil, false, errFresh
	}
	f := &flight{done: make(chan struct{})}
	if s.flights.m == nil {
		s.flights.m = map[string]*flight{}
	}
	s.flights.m[key] = f
	s.flights.mu.Unlock()

	// Deferred, so that a panic in Exchange (recovered by fetch) still ends the flight: its
	// waiters get errPanicked, and the next identical miss starts a flight of its own instead of
	// joining one that never lands.
	f.err = errPanicked
	defer func() {
		s.flights.mu.Lock()
		delete(s.flights.m, key)
		s.flights.mu.Unlock()
		close(f.done)
	}()
	s.hook("leader")
	f.reply, f.err = s.cfg.Forwarder.ExchangeWire(querylog.WithUpstream(ctx, &f.up), q)
	s.store(r, f.reply, f.err)
	*up = f.up
	return f.reply, true, f.err
}

// fresh reports whether the cache holds a fresh answer to r.
func (s *Server) fresh(r *wire.Request) bool { return s.cfg.Cache != nil && s.cfg.Cache.Fresh(r) }

// store caches the upstream's reply to r, if there is a cache and a reply.
func (s *Server) store(r *wire.Request, reply []byte, err error) {
	if err == nil && s.cfg.Cache != nil {
		s.cfg.Cache.SetWire(r, reply)
	}
}
