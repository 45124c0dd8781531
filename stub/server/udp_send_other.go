//go:build !linux

package server

import (
	"net"
	"net/netip"
)

// sendUDP sends one reply that is not part of a reader's batch (a miss's, or one sent in the
// same-ID order).
func sendUDP(conn *net.UDPConn, addr netip.AddrPort, resp []byte) {
	countResponse(resp)
	_, _ = conn.WriteToUDPAddrPort(resp, addr)
}
