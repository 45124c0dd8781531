package netsim

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// delayPort is where, inside each backend namespace, the delaying proxy listens; port 53 is
// redirected to it once SetUpstreamDelay is first called.
const delayPort = 5300

// SetUpstreamDelay makes every DNS query that reaches a backend wait d before CoreDNS sees it,
// so that each query the cluster DNS answers costs at least d, like a cluster DNS that is far
// away or busy. (The kernels here lack netem, so this is done in user space: the first call
// starts a proxy in each backend namespace and redirects port 53 to it; from then on d can be
// changed at any time, 0 included. Connections and flows that began before the first call are
// not redirected: set the delay before creating the pods it is meant for.)
func (c *Cluster) SetUpstreamDelay(ctx context.Context, d time.Duration) error {
	if d < 0 || d > 10*time.Second {
		return fmt.Errorf("upstream delay %v outside [0, 10s]", d)
	}
	c.delay.Store(int64(d))
	c.delayMu.Lock()
	defer c.delayMu.Unlock()
	if c.delayOn {
		return nil
	}
	for _, b := range c.Backends {
		if err := c.startDelayProxy(b.NS); err != nil {
			return err
		}
		var rules string
		rules += "*nat\n"
		for _, proto := range []string{"udp", "tcp"} {
			rules += fmt.Sprintf("-A PREROUTING -p %s -m %s --dport 53 -j REDIRECT --to-ports %d\n", proto, proto, delayPort)
		}
		rules += "COMMIT\n"
		if err := c.restore(ctx, c.restoreTool(), b.NS, rules); err != nil {
			return err
		}
	}
	c.delayOn = true
	return nil
}

// startDelayProxy listens on delayPort (UDP and TCP) in namespace ns. Each query, also each
// of several pipelined on one TCP connection, waits the cluster's current delay on its own and
// is then asked of CoreDNS on 127.0.0.1:53 in the same namespace over UDP.
func (c *Cluster) startDelayProxy(ns string) error {
	var pc net.PacketConn
	var ln net.Listener
	addr := ":" + strconv.Itoa(delayPort)
	err := Do(ns, func() error {
		var err error
		if pc, err = net.ListenPacket("udp", addr); err != nil {
			return err
		}
		if ln, err = net.Listen("tcp", addr); err != nil {
			pc.Close()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delay proxy in %s: %w", ns, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	c.run.onClose(func() {
		pc.Close()
		ln.Close()
		mu.Lock()
		for conn := range conns {
			conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	forward := func(q []byte) ([]byte, error) {
		time.Sleep(time.Duration(c.delay.Load()))
		var conn net.Conn
		if err := Do(ns, func() error {
			var err error
			conn, err = net.Dial("udp", "127.0.0.1:53")
			return err
		}); err != nil {
			return nil, err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write(q); err != nil {
			return nil, err
		}
		buf := make([]byte, 65535)
		n, err := conn.Read(buf)
		return buf[:n], err
	}
	wg.Go(func() {
		for {
			buf := make([]byte, 65535)
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			wg.Go(func() {
				if r, err := forward(buf[:n]); err == nil {
					_, _ = pc.WriteTo(r, from)
				}
			})
		}
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[conn] = true
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, conn)
					mu.Unlock()
					conn.Close()
				}()
				var wmu sync.Mutex
				var inflight sync.WaitGroup
				defer inflight.Wait()
				for {
					var l [2]byte
					if _, err := io.ReadFull(conn, l[:]); err != nil {
						return
					}
					q := make([]byte, binary.BigEndian.Uint16(l[:]))
					if _, err := io.ReadFull(conn, q); err != nil {
						return
					}
					inflight.Go(func() {
						r, err := forward(q)
						if err != nil {
							return
						}
						out := binary.BigEndian.AppendUint16(nil, uint16(len(r)))
						wmu.Lock()
						_, err = conn.Write(append(out, r...))
						wmu.Unlock()
						if err != nil && !errors.Is(err, net.ErrClosed) {
							conn.Close()
						}
					})
				}
			})
		}
	})
	return nil
}
