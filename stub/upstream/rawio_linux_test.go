//go:build linux

package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// The raw reader and writer behave as net.Conn's: a write larger than the socket buffers waits
// for room and arrives whole, a peer's close is io.EOF, deadlines and Close end a wait.
func TestRawIO(t *testing.T) {
	t.Run("large write arrives whole", func(t *testing.T) {
		c, s := tcpPair(t)
		raw := newRawIO(c)
		if raw == nil {
			t.Fatal("no raw I/O for a TCP connection")
		}
		want := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: many partial writes
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(s)
			got <- b
		}()
		if n, err := raw.Write(want); err != nil || n != len(want) {
			t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(want))
		}
		c.(*net.TCPConn).CloseWrite()
		if b := <-got; !bytes.Equal(b, want) {
			t.Errorf("peer read %d bytes, want the %d written", len(b), len(want))
		}
	})
	t.Run("read, then EOF", func(t *testing.T) {
		c, s := tcpPair(t)
		raw := newRawIO(c)
		go func() { s.Write([]byte("hello")); s.Close() }()
		b, err := io.ReadAll(raw)
		if err != nil || string(b) != "hello" {
			t.Errorf("ReadAll = %q, %v; want hello, nil (EOF ends it)", b, err)
		}
	})
	t.Run("read deadline", func(t *testing.T) {
		c, _ := tcpPair(t)
		raw := newRawIO(c)
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		if _, err := raw.Read(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Read past the deadline = %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		c, _ := tcpPair(t) // the peer never reads: the buffers fill
		raw := newRawIO(c)
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		_, err := raw.Write(make([]byte, 64<<20))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("Write past the deadline = %v, want os.ErrDeadlineExceeded", err)
		}
	})
	t.Run("close ends a read", func(t *testing.T) {
		c, _ := tcpPair(t)
		raw := newRawIO(c)
		errc := make(chan error, 1)
		go func() {
			_, err := raw.Read(make([]byte, 10))
			errc <- err
		}()
		time.AfterFunc(20*time.Millisecond, func() { c.Close() })
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("Read after Close = %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Read still blocked 5 s after Close")
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		if newRawIO(a) != nil {
			t.Error("raw I/O for a net.Pipe: want nil (the caller uses its Read and Write)")
		}
	})
}

// Upstream connections read and write through the raw calls: the miss path's system calls must
// not wake the runtime's sysmon (rawio_linux.go). A dialer that returns a non-socket still works.
func TestUpstreamConnUsesRawIO(t *testing.T) {
	srv := startTCP(t, func(_ int, c net.Conn) { serveAll(c) })
	f := newForwarder(t, Config{Servers: servers(t, srv.addr)})
	if _, err := f.Exchange(context.Background(), query("raw.example.")); err != nil {
		t.Fatal(err)
	}
	p := f.peers[0]
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) == 0 {
		t.Fatal("no connection open after the exchange")
	}
	for _, c := range p.conns {
		if c.io == nil {
			t.Error("an upstream TCP connection without raw I/O")
		}
	}
}
