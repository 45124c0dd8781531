package server

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/wire"
)

// hitServer returns a server without sockets whose cache already holds the answer to query: n A
// records. Its query log is off, as by default.
func hitServer(tb testing.TB, query []byte, n int) *Server {
	tb.Helper()
	c := cache.New(cache.Config{Size: 100})
	ql := querylog.New(querylog.Config{Logger: zerolog.Nop()})
	tb.Cleanup(ql.Close)
	s := &Server{cfg: Config{Cache: c, Forwarder: &fakeForwarder{answer: records(n)}, QueryLog: ql}, inflight: make(chan struct{}, 1)}
	s.resolve(append([]byte(nil), query...), protoUDP, make([]byte, 0, replyBufSize), func([]byte) {})
	var r wire.Request
	if _, v, _ := s.answer(&r, make([]byte, 0, maxMsg), query, protoUDP); v != reply {
		tb.Fatal("the cache did not answer after the miss was resolved")
	}
	return s
}

func packQuery(tb testing.TB, name string, edns bool) []byte {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	if edns {
		m.SetEdns0(1232, true)
	}
	b, err := m.Pack()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// The hit path runs for every cached lookup of every app in the pod: it must not allocate, so
// that its cost is a copy and a few patches and the GC has nothing to do under load.
func TestHitPathAllocatesNothing(t *testing.T) {
	for _, edns := range []bool{false, true} {
		q := packQuery(t, "Hot.Example.", edns)
		s := hitServer(t, q, 2)
		var r wire.Request
		buf := make([]byte, 0, maxMsg)
		allocs := testing.AllocsPerRun(1000, func() {
			resp, v, _ := s.answer(&r, buf, q, protoUDP)
			if v != reply || len(resp) == 0 {
				t.Fatal("not a hit")
			}
			countResponse(resp)
		})
		if allocs != 0 {
			t.Errorf("edns=%v: %.1f allocations per cache hit, want 0", edns, allocs)
		}
	}
}

// A hit too big for the client's UDP size is cut in the buffer it was copied into: still no
// allocation, and TC=1 with the records that fit.
func TestTruncatedHitAllocatesNothing(t *testing.T) {
	for _, edns := range []bool{false, true} {
		q := packQuery(t, "Hot.Example.", edns)
		if edns { // packQuery's EDNS size (1232) holds 40 A records: ask for the least
			binary.BigEndian.PutUint16(q[len(q)-11+3:], wire.MinUDPSize)
		}
		s := hitServer(t, q, 40)
		var r wire.Request
		buf := make([]byte, 0, maxMsg)
		allocs := testing.AllocsPerRun(1000, func() {
			resp, v, _ := s.answer(&r, buf, q, protoUDP)
			if v != reply || len(resp) > wire.MinUDPSize || !wire.IsTruncated(resp) || wire.Count(resp, wire.Answer) == 0 {
				t.Fatal("not a truncated hit with records")
			}
			countResponse(resp)
		})
		if allocs != 0 {
			t.Errorf("edns=%v: %.1f allocations per truncated cache hit, want 0", edns, allocs)
		}
	}
}

// The cost of timing hits and checking the query log's mode, measured as the batched UDP reader
// pays it: per hit, a sentMeta; per batch, two clock reads, one histogram update per source and
// the mode's atomic load (account). batch=1 is a reader that gets one datagram per recvmmsg (an
// idle stub); batch=32 a full batch (a busy one). Compare with BenchmarkHitPath, the same hits
// without them.
func BenchmarkHitPathTimed(b *testing.B) {
	for _, batch := range []int{1, udpBatch} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			q := packQuery(b, "Hot.Example.", true)
			s := hitServer(b, q, 2)
			var r wire.Request
			buf := make([]byte, 0, maxMsg)
			bio := newBatchIO()
			b.ReportAllocs()
			b.ResetTimer()
			k := 0
			bio.t0 = time.Since(bio.epoch)
			for range b.N {
				resp, _, src := s.answer(&r, buf, q, protoUDP)
				countResponse(resp)
				bio.meta[k] = sentMeta{src: src}
				if k++; k == batch {
					s.account(bio, k) // flush without the sendmmsg
					bio.t0, k = time.Since(bio.epoch), 0
				}
			}
		})
	}
}

func BenchmarkHitPath(b *testing.B) {
	q := packQuery(b, "Hot.Example.", true)
	s := hitServer(b, q, 2)
	var r wire.Request
	buf := make([]byte, 0, maxMsg)
	b.ReportAllocs()
	for b.Loop() {
		resp, _, _ := s.answer(&r, buf, q, protoUDP)
		countResponse(resp)
	}
}
