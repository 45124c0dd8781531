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
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// rateResult is what the load generator reports (as JSON on stdout).
type rateResult struct {
	Sent     int     `json:"sent"`
	Received int     `json:"received"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p999_us"`
	// LagP99us is how late the generator sent its queries compared with the schedule (99th
	// percentile): if it grows, the generator and not the server is the limit. 0 in closed loop.
	LagP99us float64 `json:"lag_p99_us"`
	Seconds  float64 `json:"seconds"`
	// QPS is replies received within the timeout per second of the run.
	QPS float64 `json:"qps"`
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

// querySource writes the i-th query of a run (ID 0) into out and returns it.
type querySource func(i int, out []byte) []byte

// cycleNames is a source that cycles through the names of a dnsperf data file.
func cycleNames(path string) (querySource, error) {
	names, err := readNames(path)
	if err != nil {
		return nil, err
	}
	queries := make([][]byte, len(names))
	for i, n := range names {
		if queries[i], err = packQuery(n); err != nil {
			return nil, fmt.Errorf("pack %q: %w", n, err)
		}
	}
	return func(i int, out []byte) []byte { return out[:copy(out, queries[i%len(queries)])] }, nil
}

// uniqueDigits is the width of the counter in a unique name's first label.
const uniqueDigits = 8

// uniqueNames is a source of names never asked before in the run: query i asks
// <prefix><i, 8 digits>.<zone> for base = "<prefix>.<zone>". The counter's digits are patched
// into one packed query, so a name costs no allocation in the generator.
func uniqueNames(base string) (querySource, error) {
	prefix, zone, ok := strings.Cut(dns.Fqdn(base), ".")
	if !ok || zone == "" || len(prefix)+uniqueDigits > 63 {
		return nil, fmt.Errorf("-unique %q: want <label prefix>.<zone>", base)
	}
	tmpl, err := packQuery(prefix + strings.Repeat("0", uniqueDigits) + "." + zone)
	if err != nil {
		return nil, fmt.Errorf("-unique %q: %w", base, err)
	}
	// The header is 12 bytes, then the first label's length byte, then its text.
	at := 12 + 1 + len(prefix)
	return func(i int, out []byte) []byte {
		out = out[:copy(out, tmpl)]
		for d, v := at+uniqueDigits-1, i; d >= at; d, v = d-1, v/10 {
			out[d] = byte('0' + v%10)
		}
		return out
	}, nil
}

// loadgenMain is the benchmark's own load generator, run as `bench loadgen ...` pinned to its
// own CPU. It sends A queries and measures each one's latency from its send to its reply.
//
// At a fixed rate (default) it sends from -sockets UDP sockets in turn, replies matched by ID.
// Pacing uses nanosleep with a 1 ns timer slack on a locked thread: Go's own timers round
// sub-millisecond sleeps up when the process is idle, which would send in bursts and queue
// queries behind each other at the server. Each socket's replies are read by a goroutine of its
// own, and GOMAXPROCS is 2, so that a reply is timestamped as soon as the kernel wakes it.
//
// With -clients N it runs closed loop instead: N clients, each on its own socket, each sending
// its next query when the last one was answered (or lost): an app resolving N names at once.
func loadgenMain(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	server := fs.String("server", "", "loopback ip:port to query")
	namesPath := fs.String("names", "", "dnsperf-style data file, cycled through")
	unique := fs.String("unique", "", "instead of -names: ask <prefix><counter>.<zone> for \"<prefix>.<zone>\", every name once")
	rate := fs.Int("rate", 10000, "queries per second (fixed-rate mode)")
	sockets := fs.Int("sockets", 1, "sockets the fixed-rate mode sends from, in turn")
	clients := fs.Int("clients", 0, "closed-loop clients (0: fixed-rate mode)")
	dur := fs.Duration("duration", 4*time.Second, "how long to send")
	timeout := fs.Duration("timeout", time.Second, "a query unanswered this long is lost")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *rate <= 0 || *rate > 200000:
		return fmt.Errorf("-rate %d: want 1..200000", *rate)
	case *sockets < 1 || *sockets > 1000:
		return fmt.Errorf("-sockets %d: want 1..1000", *sockets)
	case *clients < 0 || *clients > 1000:
		return fmt.Errorf("-clients %d: want 0..1000", *clients)
	case (*namesPath == "") == (*unique == ""):
		return errors.New("want exactly one of -names and -unique")
	}
	ap, err := mustLoopback(*server)
	if err != nil {
		return err
	}
	var src querySource
	if *unique != "" {
		src, err = uniqueNames(*unique)
	} else {
		src, err = cycleNames(*namesPath)
	}
	if err != nil {
		return err
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	n := *sockets
	if *clients > 0 {
		n = *clients
	}
	conns := make([]*net.UDPConn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := dialLoopback(ap)
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	var res rateResult
	if *clients > 0 {
		res = closedLoop(conns, src, *dur, *timeout)
	} else {
		res = fixedRate(conns, src, *rate, *dur, *timeout)
	}
	return json.NewEncoder(stdout).Encode(res)
}

// dialLoopback opens a UDP socket to ap whose replies are not dropped by its own receive buffer
// while the reader waits for the CPU: as root, a buffer above net.core.rmem_max is forced;
// otherwise it takes what the kernel allows.
func dialLoopback(ap netip.AddrPort) (*net.UDPConn, error) {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	if rc, err := conn.SyscallConn(); err == nil {
		var serr error
		_ = rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		})
		if serr != nil {
			_ = conn.SetReadBuffer(8 << 20)
		}
	}
	return conn, nil
}

// fixedRate sends query i at i/rate seconds from conns[i%len(conns)].
func fixedRate(conns []*net.UDPConn, src querySource, rate int, dur, timeout time.Duration) rateResult {
	total := int(float64(rate) * dur.Seconds())
	interval := time.Second / time.Duration(rate)
	// sendAt[id] holds the send time (ns since start, +1 so that 0 means "none outstanding").
	// IDs wrap after 65536 queries, far longer than the timeout at any allowed rate... except
	// above 65536 q/s with a 1 s timeout, where a late reply could be matched to a newer query;
	// the rate cap and the timeout keep that case out of the numbers we report.
	var sendAt [65536]atomic.Int64
	start := time.Now()
	lats := make([][]time.Duration, len(conns)) // one slice per receiver
	var recv sync.WaitGroup
	for k, conn := range conns {
		lats[k] = make([]time.Duration, 0, total/len(conns)+1)
		recv.Add(1)
		go func() {
			defer recv.Done()
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
					lats[k] = append(lats[k], now-time.Duration(t-1))
				}
			}
		}()
	}

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
		q := src(i, out)
		id := uint16(i)
		binary.BigEndian.PutUint16(q, id)
		sendAt[id].Store(int64(time.Since(start)) + 1)
		_, _ = conns[i%len(conns)].Write(q)
	}
	runtime.UnlockOSThread()
	sentFor := time.Since(start)
	// Wait for the stragglers, then stop the receivers.
	deadline := time.Now().Add(timeout)
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
	for _, c := range conns {
		c.Close()
	}
	recv.Wait()
	// Replies later than the timeout count as lost, as they would for a client.
	var kept []time.Duration
	for _, ls := range lats {
		for _, l := range ls {
			if l <= timeout {
				kept = append(kept, l)
			}
		}
	}
	return summary(total, kept, percentile(lags, 0.99), sentFor)
}

// closedLoop runs one client per conn for dur: each sends a query, waits for its reply or the
// timeout, and sends the next. Every query of the run asks a different index of src.
func closedLoop(conns []*net.UDPConn, src querySource, dur, timeout time.Duration) rateResult {
	var next atomic.Int64 // the next query index; also the count sent
	start := time.Now()
	end := start.Add(dur)
	lats := make([][]time.Duration, len(conns))
	var wg sync.WaitGroup
	for k, conn := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := make([]byte, 512)
			buf := make([]byte, 4096)
			for time.Now().Before(end) {
				i := int(next.Add(1) - 1)
				q := src(i, out)
				id := uint16(i)
				binary.BigEndian.PutUint16(q, id)
				sent := time.Now()
				if _, err := conn.Write(q); err != nil {
					continue
				}
				_ = conn.SetReadDeadline(sent.Add(timeout))
				for {
					n, err := conn.Read(buf)
					if err != nil {
						break // timeout: lost; or a refused send, counted lost too
					}
					if n >= 12 && binary.BigEndian.Uint16(buf) == id {
						lats[k] = append(lats[k], time.Since(sent))
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	var all []time.Duration
	for _, ls := range lats {
		all = append(all, ls...)
	}
	return summary(int(next.Load()), all, 0, time.Since(start))
}

// summary is the result of a run that sent sent queries and got the replies of lats within the
// timeout, over elapsed.
func summary(sent int, lats []time.Duration, lagP99us float64, elapsed time.Duration) rateResult {
	r := rateResult{
		Sent:     sent,
		Received: len(lats),
		LagP99us: lagP99us,
		Seconds:  elapsed.Seconds(),
		QPS:      float64(len(lats)) / elapsed.Seconds(),
	}
	if len(lats) > 0 { // JSON has no NaN
		r.P50us, r.P99us, r.P999us = percentile(lats, 0.50), percentile(lats, 0.99), percentile(lats, 0.999)
	}
	return r
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
