//go:build linux

package main

import (
	"encoding/binary"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSock makes a socket's reads and writes raw system calls inside RawConn callbacks, as the
// stub's own miss path does (stub/upstream/rawio_linux.go): without them, each call made after
// an idle spell wakes the runtime's sysmon thread, a fifth of a miss's CPU. The floor has what
// the stub has. The callbacks are built once, so a call allocates nothing. One rawSock serves one
// goroutine: a socket read and written by two needs one each.
type rawSock struct {
	rc syscall.RawConn

	buf  []byte
	n    int
	err  syscall.Errno
	peer netip.AddrPort // recvfrom's source, sendto's destination (IPv4)
	sa   unix.RawSockaddrInet4
	fns  [4]func(fd uintptr) bool
}

const (
	opRead = iota
	opWrite
	opRecvFrom
	opSendTo
)

func newRawSock(c syscall.Conn) (*rawSock, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	s := &rawSock{rc: rc}
	call := func(fn func(fd uintptr) (uintptr, syscall.Errno)) func(fd uintptr) bool {
		return func(fd uintptr) bool {
			n, e := fn(fd)
			if e == unix.EAGAIN || e == unix.EINTR {
				return false // wait in the netpoller
			}
			s.n, s.err = int(n), e
			return true
		}
	}
	p := func() uintptr { return uintptr(unsafe.Pointer(&s.buf[0])) }
	s.fns[opRead] = call(func(fd uintptr) (uintptr, syscall.Errno) {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, p(), uintptr(len(s.buf)))
		return n, e
	})
	s.fns[opWrite] = call(func(fd uintptr) (uintptr, syscall.Errno) {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, p(), uintptr(len(s.buf)))
		return n, e
	})
	s.fns[opRecvFrom] = call(func(fd uintptr) (uintptr, syscall.Errno) {
		salen := uint32(unix.SizeofSockaddrInet4)
		n, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, p(), uintptr(len(s.buf)), 0,
			uintptr(unsafe.Pointer(&s.sa)), uintptr(unsafe.Pointer(&salen)))
		if e == 0 {
			port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&s.sa.Port))[:])
			s.peer = netip.AddrPortFrom(netip.AddrFrom4(s.sa.Addr), port)
		}
		return n, e
	})
	s.fns[opSendTo] = call(func(fd uintptr) (uintptr, syscall.Errno) {
		var sa unix.RawSockaddrInet4
		sa.Family = unix.AF_INET
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], s.peer.Port())
		sa.Addr = s.peer.Addr().As4()
		n, _, e := unix.RawSyscall6(unix.SYS_SENDTO, fd, p(), uintptr(len(s.buf)), 0,
			uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
		return n, e
	})
	return s, nil
}

// do runs op on b (and, for sendto, to peer), waiting in the netpoller while the socket is not
// ready. It returns the byte count; 0 from a read is the peer's close.
func (s *rawSock) do(op int, b []byte) (int, error) {
	s.buf = b
	var err error
	if op == opRead || op == opRecvFrom {
		err = s.rc.Read(s.fns[op])
	} else {
		err = s.rc.Write(s.fns[op])
	}
	s.buf = nil
	if err != nil {
		return 0, err
	}
	if s.err != 0 {
		return 0, s.err
	}
	return s.n, nil
}
