package server

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePortSupported makes Start open one UDP socket and one reader per CPU on each listen
// address, all bound to it with SO_REUSEPORT. The kernel hashes each client's address and port
// to one socket, so one client's queries are read in order by one goroutine (the musl same-ID
// ordering relies on it), and the readers never contend for one socket's queue.
const reusePortSupported = true

// reusePort is the net.ListenConfig Control hook that sets SO_REUSEPORT before bind.

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
