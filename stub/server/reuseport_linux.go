package server

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSockets is how many UDP sockets share one listen address: one per reader. With
// SO_REUSEPORT the kernel hashes each client's address and port to one socket, so one client's
// queries are read in order by one goroutine (the musl same-ID ordering relies on it), and the
// readers never contend for one socket's queue.
const reusePortSupported = true

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
