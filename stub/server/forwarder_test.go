package server

import (
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/upstream"
)

// The server's tests use a fake forwarder that never packs the query; the real one does, and
// miekg/dns's Pack writes into the message's OPT record. The search-path prefetch copies the
// client's query while its exchange is on the way, so this runs the miss path against a REAL
// upstream.Forwarder: under -race it catches any write the forwarder makes to the caller's
// message.
func TestSearchPathPrefetchWithRealForwarder(t *testing.T) {
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		all  = make(chan struct{})
	)
	want := []string{"web.ns.svc.cluster.local.", "web.svc.cluster.local.", "web.cluster.local.", "web."}
	addr := dnstest.Serve(t, dnstest.Reply(func(q *dns.Msg) *dns.Msg {
		mu.Lock()
		seen[strings.ToLower(q.Question[0].Name)] = true
		if len(seen) == len(want) {
			close(all)
		}
		mu.Unlock()
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeNameError)
		return m
	}))
	fwd, err := upstream.New(upstream.Config{Servers: []netip.AddrPort{netip.MustParseAddrPort(addr)}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Close() })
	_, stub := startServer(t, fwd, func(c *Config) {
		c.Search = []string{"ns.svc.cluster.local", "svc.cluster.local", "cluster.local"}
		c.Ndots = 5
	})
	query(t, "udp", stub, want[0], dns.TypeA, 0)
	select {
	case <-all:
	case <-time.After(5 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("upstream saw %v, want every candidate of %q", seen, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, n := range want {
		if !seen[n] {
			t.Errorf("upstream never asked for %s", n)
		}
	}
}
