//go:build linux

package upstream

import (
	"io"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The reads and writes of an upstream TCP connection are raw system calls (RawSyscall: no
// entersyscall/exitsyscall), made inside RawConn.Read/Write callbacks so that waiting, deadlines
// and Close still go through Go's netpoller. The socket is non-blocking, so neither call can
// block. With net.Conn's ordinary Read and Write, each call made while the stub had been idle
// (every miss at the rates pods see: the upstream's round trip leaves the process idle) woke the
// runtime's sysmon thread from its deep sleep, which then slept 20 µs and woke again, and a
// loopback TCP write (which runs the receiver's side of the stack too) held the P long enough for
// sysmon to hand it to another thread. Measured in the peer benchmark's fixed-rate miss run
// (issue 12 item 5): ~2.3 sysmon context switches per miss, a fifth of the stub's CPU. The UDP
// listener does the same for the same reason (server/udp_batch_linux.go).

// rawIO is one connection's raw reader and writer. Read runs on the connection's reader
// goroutine only; Write is serialised by conn.wmu. The callbacks are built once: a closure made
// per call would escape to the heap on every query.
type rawIO struct {
	rc syscall.RawConn

	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	readFn  func(fd uintptr) bool
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(fd uintptr) bool
}

// newRawIO returns raw I/O for nc, or nil when nc is not a socket (a test's fake connection):
// the caller then uses nc's own Read and Write.
func newRawIO(nc net.Conn) *rawIO {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.readFn = func(fd uintptr) bool {
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		if e == unix.EAGAIN || e == unix.EINTR {
			return false // wait in the netpoller
		}
		r.rn, r.rerr = int(n), e
		return true
	}
	r.writeFn = func(fd uintptr) bool {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[0])), uintptr(len(r.wbuf)))
		if e == unix.EAGAIN || e == unix.EINTR {
			return false
		}
		r.wn, r.werr = int(n), e
		return true
	}
	return r
}

// Read is io.Reader over the socket: 0 bytes read is the server's close (io.EOF).
func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf = p
	err := r.rc.Read(r.readFn)
	r.rbuf = nil
	switch {
	case err != nil: // closed, or the read deadline passed
		return 0, err
	case r.rerr != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: r.rerr}
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

// Write writes all of b, waiting in the netpoller (and honouring the write deadline) while the
// socket's send buffer is full.
func (r *rawIO) Write(b []byte) (int, error) {
	done := 0
	for done < len(b) {
		r.wbuf = b[done:]
		err := r.rc.Write(r.writeFn)
		r.wbuf = nil
		switch {
		case err != nil:
			return done, err
		case r.werr != 0:
			return done, &net.OpError{Op: "write", Net: "tcp", Err: r.werr}
		}
		done += r.wn
	}
	return done, nil
}
