//go:build linux

package server

import (
	"encoding/binary"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendUDP sends one reply that is not part of a reader's batch: a miss's, or one sent in the
// same-ID order. Like the batch's sendmmsg it is a raw sendto (no entersyscall, so no wake-up of
// the runtime's sysmon thread; see the top of udp_batch_linux.go): a miss's reply goes out after
// the upstream's round trip, when the stub has been idle, and WriteToUDPAddrPort then cost a
// sysmon wake-up per miss. Any other error drops the reply, as UDP may. A zoned
// (link-local) peer takes WriteToUDPAddrPort, which knows the zone's index.
func sendUDP(conn *net.UDPConn, addr netip.AddrPort, resp []byte) {
	countResponse(resp)
	if len(resp) == 0 || addr.Addr().Zone() != "" {
		_, _ = conn.WriteToUDPAddrPort(resp, addr)
		return
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return
	}
	var sa unix.RawSockaddrInet6 // large enough for either family
	var salen uintptr
	a := addr.Addr()
	if a.Is4() {
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa))
		sa4.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa4.Port))[:], addr.Port())
		sa4.Addr = a.As4()
		salen = unix.SizeofSockaddrInet4
	} else {
		sa.Family = unix.AF_INET6
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], addr.Port())
		sa.Addr = a.As16()
		salen = unix.SizeofSockaddrInet6
	}
	_ = rc.Write(func(fd uintptr) bool {
		_, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&resp[0])), uintptr(len(resp)),
			unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), salen)
		return e != unix.EAGAIN && e != unix.EINTR // full send buffer: wait in the netpoller, as WriteToUDPAddrPort did
	})
}
