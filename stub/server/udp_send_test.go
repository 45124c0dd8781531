package server

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"
)

// sendUDP reaches the client whatever the listener's family: IPv4, IPv6, and an IPv6 socket
// answering an IPv4 client (a v4-mapped peer address).
func TestSendUDPFamilies(t *testing.T) {
	for _, tc := range []struct{ name, listen, client string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1:0"},
		{"ipv6", "[::1]:0", "[::1]:0"},
		{"ipv4 client of a dual-stack socket", "[::]:0", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.listen)))
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			cl, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.client)))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			port := srv.LocalAddr().(*net.UDPAddr).AddrPort().Port()
			dst := netip.AddrPortFrom(netip.MustParseAddrPort(tc.client).Addr(), port)
			if _, err := cl.WriteToUDPAddrPort([]byte("q"), dst); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, peer, err := srv.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			want := []byte("reply to " + peer.String())
			sendUDP(srv, peer, want)
			cl.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := cl.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("no reply to %s: %v", peer, err)
			}
			if !bytes.Equal(buf[:n], want) || from.Port() != port {
				t.Errorf("got %q from %s, want %q from port %d", buf[:n], from, want, port)
			}
		})
	}
}
