package monitoring_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testVersion is stamped into the stub built for these tests, the way the Makefile stamps a
// release, so that podns_build_info's version label is checked end to end.
const testVersion = "v0.0.0-monitoring-test"

var (
	stubOnce sync.Once
	stubBin  string
	stubErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if stubBin != "" {
		os.RemoveAll(filepath.Dir(stubBin))
	}
	os.Exit(code)
}

// stubBinary builds ../stub (the real binary, from the root module) once per test run into a
// temporary directory and returns its path.
func stubBinary(t *testing.T) string {
	t.Helper()
	stubOnce.Do(func() {
		dir, err := os.MkdirTemp("", "podns-monitoring-")
		if err != nil {
			stubErr = err
			return
		}
		stubBin = filepath.Join(dir, "stub")
		// go test puts its own GOROOT/bin first in the test's PATH: the same go builds the stub.
		cmd := exec.Command("go", "build", "-o", stubBin,
			"-ldflags", "-X github.com/podns/podns/internal/version.Version="+testVersion, "./stub")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			stubErr = fmt.Errorf("go build ./stub: %v\n%s", err, out)
		}
	})
	if stubErr != nil {
		t.Fatal(stubErr)
	}
	return stubBin
}

// freeAddr returns a 127.0.0.1:port free for both UDP and TCP at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := u.LocalAddr().String()
		l, err := net.Listen("tcp", addr)
		u.Close()
		if err == nil {
			l.Close()
			return addr
		}
	}
	t.Fatal("no loopback port free for both UDP and TCP")
	return ""
}

// upstream modes: how the test's cluster DNS answers.
const (
	modeOK       int32 = iota // every A question: 192.0.2.1 with the upstream's TTL
	modeServfail              // SERVFAIL to everything (a reply: the stub keeps the upstream up)
	modeSlow                  // modeOK after slowDelay
)

// slowDelay puts a miss into the (0.5 s, 1 s] bucket of podns_forward_duration_seconds, above
// PodnsMissLatencyHigh's 500 ms and below the stub's 2 s upstream timeout.
const slowDelay = 600 * time.Millisecond

// upstream is a loopback DNS server the test controls: its answers (mode), and whether its UDP
// and TCP listeners run at all.
type upstream struct {
	addr     string
	ttl      uint32
	mode     atomic.Int32
	mu       sync.Mutex
	udp, tcp *dns.Server
}

func startUpstream(t *testing.T, ttl uint32) *upstream {
	t.Helper()
	u := &upstream{ttl: ttl}
	h := dns.HandlerFunc(u.serve)
	for try := 0; ; try++ {
		addr := freeAddr(t)
		pc, err1 := net.ListenPacket("udp", addr)
		l, err2 := net.Listen("tcp", addr)
		if err1 == nil && err2 == nil {
			u.addr = addr
			u.udp = &dns.Server{PacketConn: pc, Handler: h}
			u.tcp = &dns.Server{Listener: l, Handler: h, ReadTimeout: time.Hour, IdleTimeout: func() time.Duration { return time.Hour }}
			break
		}
		for _, c := range []io.Closer{pc, l} {
			if c != nil {
				c.Close()
			}
		}
		if try == 5 {
			t.Fatalf("cannot listen: %v %v", err1, err2)
		}
	}
	for _, s := range []*dns.Server{u.udp, u.tcp} {
		started := make(chan struct{})
		s.NotifyStartedFunc = func() { close(started) }
		go func() { _ = s.ActivateAndServe() }()
		<-started
	}
	t.Cleanup(u.stop)
	return u
}

func (u *upstream) serve(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	switch u.mode.Load() {
	case modeServfail:
		m.Rcode = dns.RcodeServerFailure
		_ = w.WriteMsg(m)
		return
	case modeSlow:
		time.Sleep(slowDelay)
	}
	if q := r.Question[0]; q.Qtype == dns.TypeA {
		m.Answer = []dns.RR{&dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: u.ttl},
			A:   net.IPv4(192, 0, 2, 1),
		}}
	}
	_ = w.WriteMsg(m)
}

// stopTCP closes the TCP listener and every open connection (miekg/dns's Shutdown does both):
// new connections are refused, as behind a NetworkPolicy that rejects TCP/53. UDP still answers.
func (u *upstream) stopTCP() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.tcp != nil {
		_ = u.tcp.Shutdown()
		u.tcp = nil
	}
}

// stop takes the upstream off the network: queries to it are refused (TCP) or unanswered (UDP).
func (u *upstream) stop() {
	u.stopTCP()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.udp != nil {
		_ = u.udp.Shutdown()
		u.udp = nil
	}
}

// stub is one running stub process: a pod's podns-stub container.
type stub struct {
	dns, http string
	cmd       *exec.Cmd
	logs      *lockedBuffer
	exited    chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// startStub runs the stub binary on loopback, forwarding to ups, and waits until /readyz says
// 200. extra overrides or adds PODNS_* variables. The process is killed (by its PID) when the
// test ends. A port taken between freeAddr and the stub's bind (by any process on the machine)
// is retried with new ports.
func startStub(t *testing.T, extra map[string]string, ups ...*upstream) *stub {
	t.Helper()
	bin := stubBinary(t) // before the ports are picked: a first build takes a while
	for try := 1; ; try++ {
		s, err := tryStartStub(t, bin, extra, ups)
		if err == nil {
			return s
		}
		if !strings.Contains(err.Error(), "address already in use") || try == 3 {
			t.Fatal(err)
		}
	}
}

func tryStartStub(t *testing.T, bin string, extra map[string]string, ups []*upstream) (*stub, error) {
	t.Helper()
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	// The pod's resolv.conf as initc leaves it; no search list, so no search-path prefetch.
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions ndots:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addrs := make([]string, len(ups))
	for i, u := range ups {
		addrs[i] = u.addr
	}
	s := &stub{dns: freeAddr(t), http: freeAddr(t), logs: &lockedBuffer{}, exited: make(chan struct{})}
	env := map[string]string{
		"PODNS_LISTEN":      s.dns,
		"PODNS_HTTP_LISTEN": s.http,
		"PODNS_UPSTREAMS":   strings.Join(addrs, ","),
		"PODNS_STATE_DIR":   dir,
		"PODNS_RESOLV_CONF": resolv,
		"PODNS_LOG_LEVEL":   "warn",
	}
	for k, v := range extra {
		env[k] = v
	}
	s.cmd = exec.Command(bin)
	s.cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		s.cmd.Env = append(s.cmd.Env, k+"="+v)
	}
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.exited
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("stub exited before ready: %v\n%s", s.cmd.ProcessState, s.logs)
		default:
		}
		if resp, err := http.Get("http://" + s.http + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stub not ready in 15s\n%s", s.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// query sends one A question over UDP and returns the reply (nil when none came in 3 s, which
// is longer than anything the stub waits for an upstream here).
func (s *stub) query(t *testing.T, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Timeout: 3 * time.Second}
	r, _, err := c.Exchange(m, s.dns)
	if err != nil {
		return nil
	}
	return r
}

// queryAll sends every name at once and waits for all replies.
func (s *stub) queryAll(t *testing.T, names []string) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() { s.query(t, n) })
	}
	wg.Wait()
}

// scrape returns the stub's /metrics body, in the Prometheus text format.
func (s *stub) scrape(t *testing.T) []byte {
	t.Helper()
	resp, err := http.Get("http://" + s.http + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v\n%s", err, s.logs)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return b
}

// waitFor polls cond every 20 ms for up to 10 s; the stub's state changes (an upstream marked
// down, an entry expired) have no event a test outside the process can wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("not reached in 10s: %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
