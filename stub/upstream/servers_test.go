package upstream

import (
	"net/netip"
	"testing"
	"time"
)

// servers parses "ip:port" test addresses for Config.Servers.
func servers(tb testing.TB, addrs ...string) []netip.AddrPort {
	tb.Helper()
	out := make([]netip.AddrPort, len(addrs))
	for i, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			tb.Fatalf("test address %q: %v", a, err)
		}
		out[i] = ap
	}
	return out
}

func TestMaxExchangeTimeCoversEveryServerOnce(t *testing.T) {
	// Duplicates are tried once, so they add no time.
	f := newForwarder(t, Config{Servers: servers(t, "10.0.0.10:53", "10.0.0.11:53", "10.0.0.10:53"), Timeout: 2 * time.Second})
	if got, want := f.MaxExchangeTime(), 2*2*time.Second+500*time.Millisecond; got != want {
		t.Errorf("MaxExchangeTime = %v, want %v", got, want)
	}
}
