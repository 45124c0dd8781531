package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// rateResult is what the fixed-rate load generator reports (as JSON on stdout).
type rateResult struct {
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p999_us"`
	// LagP99us is how late the generator sent its queries compared with the schedule (99th
	// percentile): if it grows, the generator and not the server is the limit.
	LagP99us float64 `json:"lag_p99_us"`
	Seconds  float64 `json:"seconds"`
}

// readNames reads a dnsperf data file ("name type" per line) and returns the names.
func readNames(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fl := strings.Fields(sc.Text()); len(fl) > 0 {
			names = append(names, fl[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: no names", path)
	}
	return names, nil
}

// packQuery is a recursive A query for name with ID 0, ready to have its ID patched.
func packQuery(name string) ([]byte, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	m.Id = 0
	return m.Pack()
}

// mustLoopback refuses any destination outside 127.0.0.0/8 and ::1: the benchmark never sends
// anywhere else.
func mustLoopback(addr string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return ap, err
	}
	if !ap.Addr().IsLoopback() {
		return ap, fmt.Errorf("%s is not a loopback address; the benchmark only sends to loopback", addr)
	}
	return ap, nil
}

// loadgenMain is the fixed-rate load generator, run as `bench loadgen ...` pinned to its own
// CPU. It sends A queries for the names at a fixed rate from one UDP socket and measures each
// query's latency from its send to its reply; replies are matched by ID.
//
// Pacing uses nanosleep with a 1 ns timer slack on a locked thread: Go's own timers round
// sub-millisecond sleeps up when the process is idle, which would send in bursts and queue
// queries behind each other at the server. The receiver runs on a second P so that a reply is
// timestamped as soon as the kernel wakes it.
func loadgenMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	server := fs.String("server", "", "loopback ip:port to query")
	namesPath := fs.String("names", "", "dnsperf-style data file")
	rate := fs.Int("rate", 10000, "queries per second")
	dur := fs.Duration("duration", 4*time.Second, "how long to send")
	timeout := fs.Duration("timeout", time.Second, "a query unanswered this long is lost")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *rate > 200000 {
		return fmt.Errorf("-rate %d: want 1..200000", *rate)
	}
	ap, err := mustLoopback(*server)
	if err != nil {
		return err
	}
	names, err := readNames(*namesPath)
	if err != nil {
		return err
	}
	queries := make([][]byte, len(names))
	for i, n := range names {
		if queries[i], err = packQuery(n); err != nil {
			return fmt.Errorf("pack %q: %w", n, err)
		}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	defer conn.Close()
	// Replies must not be dropped by our own socket while the receiver waits for the CPU: as
	// root, force a buffer above net.core.rmem_max; otherwise take what the kernel allows.
	if rc, err := conn.SyscallConn(); err == nil {
		var serr error
		_ = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		})
		if serr != nil {
			_ = conn.SetReadBuffer(8 << 20)
		}
	}

	total := int(float64(*rate) * dur.Seconds())
	interval := time.Second / time.Duration(*rate)
	// sendAt[id] holds the send time (ns since start, +1 so that 0 means "none outstanding").
	// IDs wrap after 65536 queries, far longer than the timeout at any allowed rate... except
	// above 65536 q/s with a 1 s timeout, where a late reply could be matched to a newer query;
	// the rate cap and the timeout keep that case out of the numbers we report.
	var sendAt [65536]atomic.Int64
	start := time.Now()
	lats := make([]time.Duration, 0, total)
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			now := time.Since(start)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ECONNREFUSED from an earlier ICMP; the query counts as lost
			}
			if n < 12 {
				continue
			}
			id := binary.BigEndian.Uint16(buf)
			if t := sendAt[id].Swap(0); t != 0 {
				lats = append(lats, now-time.Duration(t-1))
			}
		}
	}()

	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	lags := make([]time.Duration, 0, total)
	out := make([]byte, 512)
	for i := 0; i < total; i++ {
		due := time.Duration(i) * interval
		now := time.Since(start)
		if wait := due - now; wait > 0 {
			ts := unix.NsecToTimespec(int64(wait))
			for unix.Nanosleep(&ts, &ts) == unix.EINTR {
			}
			now = time.Since(start)
		}
		lags = append(lags, now-due)
		q := queries[i%len(queries)]
		n := copy(out, q)
		id := uint16(i)
		binary.BigEndian.PutUint16(out, id)
		sendAt[id].Store(int64(time.Since(start)) + 1)
		_, _ = conn.Write(out[:n])
	}
	runtime.UnlockOSThread()
	sentFor := time.Since(start)
	// Wait for the stragglers, then stop the receiver.
	deadline := time.Now().Add(*timeout)
	for time.Now().Before(deadline) {
		pending := false
		for i := range sendAt {
			if sendAt[i].Load() != 0 {
				pending = true
				break
			}
		}
		if !pending {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	conn.Close()
	<-recvDone
	// Replies later than the timeout count as lost, as they would for a client.
	kept := lats[:0]
	for _, l := range lats {
		if l <= *timeout {
			kept = append(kept, l)
		}
	}
	res := rateResult{
		Sent:     total,
		Received: len(kept),
		P50us:    percentile(kept, 0.50),
		P99us:    percentile(kept, 0.99),
		P999us:   percentile(kept, 0.999),
		LagP99us: percentile(lags, 0.99),
		Seconds:  sentFor.Seconds(),
	}
	return json.NewEncoder(stdout).Encode(res)
}

// percentile is the nearest-rank percentile of ds in microseconds; NaN for no samples. It sorts
// ds.
func percentile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	k := int(math.Ceil(q*float64(len(ds)))) - 1
	k = max(0, min(k, len(ds)-1))
	return float64(ds[k]) / float64(time.Microsecond)
}

// firstAnswer polls addr with a query about every millisecond from start (the moment of exec)
// until a reply to any of its queries arrives, and returns the time since start. It gives up
// at limit, or as soon as died is closed (the server exited; nil for none).
func firstAnswer(addr, name string, start time.Time, limit time.Duration, died <-chan struct{}) (time.Duration, error) {
	ap, err := mustLoopback(addr)
	if err != nil {
		return 0, err
	}
	q, err := packQuery(name)
	if err != nil {
		return 0, err
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	for id := uint16(1); time.Since(start) < limit; id++ {
		select {
		case <-died:
			return 0, fmt.Errorf("exited before answering")
		default:
		}
		slot := time.Now().Add(time.Millisecond)
		binary.BigEndian.PutUint16(q, id)
		if _, err := conn.Write(q); err == nil {
			_ = conn.SetReadDeadline(slot)
			for {
				n, err := conn.Read(buf)
				if err != nil {
					break // timeout for this slot, or refused (nothing bound yet)
				}
				// Any of our IDs counts: a reply to an earlier poll is an answer too.
				if n >= 12 && buf[2]&0x80 != 0 && binary.BigEndian.Uint16(buf) <= id {
					return time.Since(start), nil
				}
			}
		}
		if d := time.Until(slot); d > 0 {
			time.Sleep(d)
		}
	}
	return 0, fmt.Errorf("no answer from %s within %v", addr, limit)
}

// query sends one query and waits for its reply (used to warm caches).
func query(conn *net.UDPConn, q []byte, id uint16, buf []byte, timeout time.Duration) error {
	binary.BigEndian.PutUint16(q, id)
	if _, err := conn.Write(q); err != nil {
		return err
	}
	_ = conn.SetReadDeadline(time.Now().Add(timeout))
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		if n >= 12 && binary.BigEndian.Uint16(buf) == id {
			if rc := buf[3] & 0x0f; rc != dns.RcodeSuccess {
				return fmt.Errorf("rcode %s", dns.RcodeToString[int(rc)])
			}
			return nil
		}
	}
}

// resolveAll asks every name once, in order, and fails unless each gets a NOERROR answer (used
// to check that the upstream serves both zones).
func resolveAll(addr string, names []string) error {
	ap, err := mustLoopback(addr)
	if err != nil {
		return err
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	defer conn.Close()
	buf := make([]byte, 4096)
	for i, n := range names {
		q, err := packQuery(n)
		if err != nil {
			return err
		}
		var qerr error
		for try := 0; try < 3; try++ {
			if qerr = query(conn, q, uint16(i), buf, 500*time.Millisecond); qerr == nil {
				break
			}
		}
		if qerr != nil {
			return fmt.Errorf("resolving %s: %w", n, qerr)
		}
	}
	return nil
}
