//go:build !linux

package server

import "net"

// serveUDPBatch falls back to one datagram per system call where recvmmsg is not available.
func (s *Server) serveUDPBatch(conn *net.UDPConn) { s.serveUDP(conn) }
