//go:build !linux

package server

import "syscall"

// Without SO_REUSEPORT each address gets one UDP socket and one reader.
const reusePortSupported = false

func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
