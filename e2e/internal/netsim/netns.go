package netsim

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread switched into the named network namespace. Sockets fn creates
// (net.Dial in fn itself, not in goroutines it starts) live in that namespace for their whole
// life, so their I/O may continue after Do returns. The thread is switched back before it is
// released; if that fails it is left locked and the runtime discards it.
func Do(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Query sends one DNS query from inside namespace ns to server (host:port) over network
// ("udp" or "tcp") and returns the reply.
func Query(ns, network, server, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	var conn net.Conn
	err := Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout(network, server, timeout)
		return err
	})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	dc := &dns.Conn{Conn: conn}
	if err := dc.WriteMsg(m); err != nil {
		return nil, err
	}
	r, err := dc.ReadMsg()
	if err != nil {
		return nil, err
	}
	if r.Id != m.Id {
		return nil, errors.New("reply ID mismatch")
	}
	return r, nil
}

// HTTPStatus performs a GET of http://addr/path from inside namespace ns and returns the
// status code. The connection is made in the namespace, so net/http's transport (which dials
// on its own goroutines) is not used.
func HTTPStatus(ns, addr, path string, timeout time.Duration) (int, error) {
	var conn net.Conn
	err := Do(ns, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, timeout)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// permanent marks an error that no amount of polling will fix (the process exited).
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// poll calls fn every interval until it returns nil or a permanent error, ctx ends, or
// timeout passes; the last error is returned.
func poll(ctx context.Context, timeout, interval time.Duration, fn func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var p permanent
		if errors.As(err, &p) {
			return p.error
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (after %v)", err, timeout)
		case <-t.C:
		}
	}
}
