//go:build !linux

package upstream

import "net"

// rawIO is Linux-only (rawio_linux.go); elsewhere connections use net.Conn's Read and Write.
type rawIO struct{ net.Conn }

func newRawIO(net.Conn) *rawIO { return nil }
