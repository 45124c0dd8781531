package server

import (
	"encoding/binary"
	"testing"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/wire"
)

// FuzzRequest drives the whole request path — parse, cache lookup, and the miss path through a
// forwarder that echoes the question — with arbitrary packets. Whatever arrives, the stub must not
// panic, and every reply it sends must be a well-formed DNS message with the query's ID that fits
// the transport.
func FuzzRequest(f *testing.F) {
	for _, seed := range seedPackets() {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	c := cache.New(cache.Config{Size: 64})
	fwd := &fakeForwarder{answer: records(3)}
	// No sockets: the fuzzer calls the request path directly.
	s := &Server{cfg: Config{Forwarder: fwd, Cache: c}, inflight: make(chan struct{}, 1)}
	f.Fuzz(func(t *testing.T, pkt []byte, tcp bool) {
		proto := protoUDP
		if tcp {
			proto = protoTCP
		}
		var r wire.Request
		buf := make([]byte, 0, maxMsg)
		check := func(resp []byte) {
			var m dns.Msg
			if err := m.Unpack(resp); err != nil {
				t.Fatalf("reply does not unpack: %v\nquery %x\nreply %x", err, pkt, resp)
			}
			if len(pkt) >= 2 && m.Id != binary.BigEndian.Uint16(pkt) {
				t.Fatalf("reply ID %d, query ID %d", m.Id, binary.BigEndian.Uint16(pkt))
			}
			if proto == protoUDP && len(resp) > max(r.UDPSize, wire.MinUDPSize) {
				t.Fatalf("UDP reply of %d bytes to a client that accepts %d", len(resp), r.UDPSize)
			}
		}
		resp, v, _ := s.answer(&r, buf, pkt, proto)
		switch v {
		case reply:
			check(resp)
		case forward:
			own := append([]byte(nil), pkt...)
			s.resolve(own, proto, make([]byte, 0, replyBufSize), check)
			// A second time: now possibly a cache hit.
			if resp, v, _ := s.answer(&r, buf, pkt, proto); v == reply {
				check(resp)
			}
		}
	})
}

func seedPackets() [][]byte {
	var out [][]byte
	add := func(m *dns.Msg) {
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	m := new(dns.Msg)
	m.SetQuestion("kubernetes.default.svc.cluster.local.", dns.TypeA)
	add(m)
	m = new(dns.Msg)
	m.SetQuestion("Api.Example.COM.", dns.TypeAAAA)
	m.SetEdns0(4096, true)
	add(m)
	m = new(dns.Msg)
	m.SetQuestion("nope.example.", dns.TypeTXT)
	m.SetEdns0(512, false)
	m.CheckingDisabled = true
	add(m)
	m = new(dns.Msg)
	m.SetQuestion("x.", dns.TypeA)
	m.Opcode = dns.OpcodeUpdate
	add(m)
	out = append(out, []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, []byte{0xff})
	return out
}
