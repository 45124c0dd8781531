//go:build !linux

package server

import "syscall"

// reusePortSupported is false without SO_REUSEPORT: each address gets one UDP socket and one
// reader.
const reusePortSupported = false

// reusePort sets nothing where SO_REUSEPORT is not used.

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
