package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/e2e/internal/proc"
)

// Loopback addresses, one per role, away from the peer benchmark's 127.0.0.10-14: CoreDNS
// listens on its own address so that no ephemeral port of the stub's or the proxies'
// connections (from 127.0.0.1) can take its port while it is down for a restart.
var (
	backendAddrs = [2]netip.Addr{netip.MustParseAddr("127.0.0.31"), netip.MustParseAddr("127.0.0.32")}
	proxyAddrs   = [2]netip.Addr{netip.MustParseAddr("127.0.0.33"), netip.MustParseAddr("127.0.0.34")}
	stubAddr     = netip.MustParseAddr("127.0.0.35")
)

// config is one soak's parameters; defaults are in main's flags and the test.
type config struct {
	duration    time.Duration // the faulted phase (warm-up and settling come on top)
	warmup      time.Duration // load without faults before the first sample
	rate        int           // lookups per second
	faultLen    time.Duration // how long a black-hole, slow or cut fault lasts
	gap         time.Duration // fault-free load between two faults
	restartDown time.Duration // how long a restarted CoreDNS stays down
	slowDelay   time.Duration // the slow fault's delay: over PODNS_UPSTREAM_TIMEOUT (2 s)
	mildDelay   time.Duration // the mild slow fault's delay: under it
	stallers    int           // TCP clients kept stalled at once
	garbageRate int           // garbage packets per second
	prefill     int           // unique names asked before the first sample (fills the cache)
	sampleEvery time.Duration // period of the time series
	stub        string        // stub binary
	coredns     string        // CoreDNS binary
	dir         string        // configs and logs
	progress    io.Writer     // one line per phase and fault
}

// faultSpec is one step of the fault loop.
type faultSpec struct {
	fault  string // restart, blackhole, slow, slow-mild, cut
	target string // A (the first upstream), B, both
}

// faultLoop is the order the faults are applied in, over and over: each sort first on the
// preferred upstream alone (the stub must fail over without a failed lookup once the fault is
// lifted), then on both (misses fail while it lasts; hits are served from the cache, stale if
// need be).
var faultLoop = []faultSpec{
	{"restart", "A"}, {"blackhole", "A"}, {"slow", "A"}, {"cut", "A"}, {"slow-mild", "both"},
	{"restart", "B"}, {"blackhole", "both"}, {"cut", "both"}, {"restart", "both"},
}

// window is one fault's time span: from its start to the moment it is lifted (for a restart,
// to the moment the new CoreDNS answers).
type window struct {
	faultSpec
	start, end time.Time
	// The lookups that overlapped this window (and no later one), how many failed, how many
	// took over 1 s.
	lookups, failed, over1s int64
}

// soak is one run's state.
type soak struct {
	cfg      config
	procs    *proc.Set
	backends [2]*backend
	proxies  [2]*faultProxy
	stub     *proc.Proc
	dnsAddr  netip.AddrPort
	metrics  string
	rec      *recorder
}

// backend is one CoreDNS upstream, restarted in place by the restart fault.
type backend struct {
	name string
	addr netip.AddrPort
	conf string
	p    *proc.Proc
}

// run does one soak and returns its result; cleanup (every process stopped by PID and reaped,
// every proxy closed) is done and checked before it returns.
func run(ctx context.Context, cfg config) (res *result, err error) {
	s := &soak{cfg: cfg, procs: &proc.Set{}, rec: newRecorder()}
	defer func() {
		for _, p := range s.proxies {
			if p != nil {
				p.close()
			}
		}
		s.procs.StopAll()
		if cerr := s.procs.AssertNoneRunning(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	if err := s.setup(ctx); err != nil {
		return nil, err
	}
	return s.drive(ctx)
}

func (s *soak) logf(format string, args ...any) {
	if s.cfg.progress != nil {
		fmt.Fprintf(s.cfg.progress, "%s soak: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

func (s *soak) setup(ctx context.Context) error {
	zoneFile := filepath.Join(s.cfg.dir, "soak.test.zone")
	if err := os.WriteFile(zoneFile, []byte(zoneFileText()), 0o644); err != nil {
		return err
	}
	for i := range s.backends {
		ap, err := proc.FreePort(backendAddrs[i])
		if err != nil {
			return err
		}
		b := &backend{name: "coredns " + string(rune('A'+i)), addr: ap, conf: filepath.Join(s.cfg.dir, fmt.Sprintf("Corefile.%c", 'A'+i))}
		// Served from a file, forwarding nowhere: nothing leaves loopback.
		cf := fmt.Sprintf("%s:%d {\n    bind %s\n    file %s\n}\n", zone, ap.Port(), ap.Addr(), zoneFile)
		if err := os.WriteFile(b.conf, []byte(cf), 0o644); err != nil {
			return err
		}
		s.backends[i] = b
		if err := s.startBackend(ctx, b); err != nil {
			return err
		}
		pa, err := proc.FreePort(proxyAddrs[i])
		if err != nil {
			return err
		}
		if s.proxies[i], err = newFaultProxy(pa, ap); err != nil {
			return err
		}
	}
	var err error
	if s.dnsAddr, err = proc.FreePort(stubAddr); err != nil {
		return err
	}
	httpAddr, err := proc.FreePort(stubAddr)
	if err != nil {
		return err
	}
	s.metrics = "http://" + httpAddr.String() + "/metrics"
	resolvConf := filepath.Join(s.cfg.dir, "resolv.conf")
	// What initc writes, without a search list: the search-path prefetch stays idle and the
	// host's resolv.conf is never read.
	if err := os.WriteFile(resolvConf, []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:3\n"), 0o644); err != nil {
		return err
	}
	// Everything else at its default, as deployed.
	env := []string{
		"PODNS_LISTEN=" + s.dnsAddr.String(),
		"PODNS_UPSTREAMS=" + s.proxies[0].addr.String() + "," + s.proxies[1].addr.String(),
		"PODNS_HTTP_LISTEN=" + httpAddr.String(),
		"PODNS_STATE_DIR=" + s.cfg.dir,
		"PODNS_RESOLV_CONF=" + resolvConf,
		"PODNS_LOG_LEVEL=info",
	}
	if s.stub, err = startClean(s.procs, "stub", filepath.Join(s.cfg.dir, "stub.log"), s.cfg.stub, nil, env); err != nil {
		return err
	}
	ready := "http://" + httpAddr.String() + "/readyz"
	deadline := time.Now().Add(15 * time.Second)
	for {
		if resp, err := metricsClient.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if s.stub.Exited() {
			return fmt.Errorf("stub exited before ready: %v\n%s", s.stub.Err(), s.stub.Tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stub not ready within 15 s\n%s", s.stub.Tail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	s.logf("stub pid %d on %s, upstreams %s → %s, %s → %s", s.stub.PID(), s.dnsAddr,
		s.proxies[0].addr, s.backends[0].addr, s.proxies[1].addr, s.backends[1].addr)
	return nil
}

// startBackend starts b's CoreDNS and waits until it answers.
func (s *soak) startBackend(ctx context.Context, b *backend) error {
	var err error
	for try := 0; ; try++ {
		if b.p, err = startClean(s.procs, b.name, filepath.Join(s.cfg.dir, strings.ReplaceAll(b.name, " ", "-")+".log"),
			s.cfg.coredns, []string{"-conf", b.conf, "-quiet"}, nil); err != nil {
			return err
		}
		if err = waitAnswers(ctx, b.addr, b.p); err == nil {
			return nil
		}
		b.p.Kill()
		if try == 4 || ctx.Err() != nil {
			return fmt.Errorf("%s on %s: %w\n%s", b.name, b.addr, err, b.p.Tail())
		}
	}
}

// waitAnswers polls addr until it answers the zone's SOA, p exits, or 10 s pass.
func waitAnswers(ctx context.Context, addr netip.AddrPort, p *proc.Proc) error {
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	m := new(dns.Msg).SetQuestion(zone, dns.TypeSOA)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _, err := c.ExchangeContext(ctx, m, addr.String()); err == nil && r.Rcode == dns.RcodeSuccess {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("exited: %v", p.Err())
		}
		if time.Now().After(deadline) {
			return errors.New("no answer within 10 s")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// drive runs the phases: prefill and warm-up, the first sample, load with the fault loop,
// the last sample.
func (s *soak) drive(ctx context.Context) (*result, error) {
	res := &result{cfg: s.cfg, stubPID: s.stub.PID(), started: time.Now(), loadStart: loadavg()}
	// From the first lookup to the last sample, so that no quiet phase looks like a stall.
	dctx, dcancel := context.WithCancel(ctx)
	var dog sync.WaitGroup
	dog.Go(func() { s.watchdog(dctx) })
	defer func() { dcancel(); dog.Wait() }()
	s.logf("prefill: %d unique names", s.cfg.prefill)
	if err := prefill(ctx, s.dnsAddr, s.cfg.prefill, 32); err != nil {
		return nil, err
	}
	s.logf("warm-up: %v of load without faults", s.cfg.warmup)
	gen := &loadgen{server: s.dnsAddr, rate: s.cfg.rate, maxInFly: 4096, record: s.rec.add}
	wctx, wcancel := context.WithTimeout(ctx, s.cfg.warmup)
	gen.run(wctx)
	wcancel()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	var err error
	if res.first, err = s.settle(ctx); err != nil {
		return nil, fmt.Errorf("first sample: %w", err)
	}
	s.logf("first sample: RSS %.1f MiB, %v goroutines, %d FDs", res.first.rss/(1<<20), res.first.goroutines, res.first.fds)

	s.rec.takeInterval() // the time series starts with the faulted phase
	lctx, lcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { gen.run(lctx) })
	wg.Go(func() { stallers(lctx, s.dnsAddr, s.cfg.stallers, &res.stall) })
	wg.Go(func() { garbage(lctx, s.dnsAddr, s.cfg.garbageRate, &res.garbage) })
	wg.Go(func() { s.sampleLoop(lctx, res) })
	ferr := s.faults(ctx, res)
	// One more fault-free gap, so that lookups after the last fault are measured too.
	if ferr == nil {
		s.logf("last gap: %v of load without faults", s.cfg.gap)
		ferr = sleepCtx(ctx, s.cfg.gap)
	}
	lcancel()
	wg.Wait()
	res.skipped = gen.skipped.Load()
	if ferr != nil {
		return nil, ferr
	}
	if s.stub.Exited() {
		res.alive = false
		res.stubLog = s.stub.Tail()
		res.collect(s)
		return res, nil
	}
	res.alive = true
	if res.last, err = s.settle(ctx); err != nil {
		return nil, fmt.Errorf("last sample: %w", err)
	}
	s.logf("last sample: RSS %.1f MiB, %v goroutines, %d FDs", res.last.rss/(1<<20), res.last.goroutines, res.last.fds)
	if text, err := scrape(s.metrics); err == nil {
		res.stubMetrics = text
	}
	res.loadEnd = loadavg()
	res.ended = time.Now()
	// SIGTERM, as the kubelet does: a clean exit (0) after the soak is part of the result.
	s.stub.Stop()
	res.exit = s.stub.ProcessState().String()
	res.cleanExit = s.stub.ProcessState().ExitCode() == 0
	res.stubLog = s.stub.Tail()
	res.collect(s)
	return res, nil
}

// settle stops nothing: the load is already stopped. It waits for what the stub holds only
// while busy to go — pooled upstream connections close after PODNS_UPSTREAM_IDLE_TIMEOUT
// (5 s by default; a timer inside the stub, with nothing to wait on from outside), client TCP
// connections are counted by podns_tcp_connections — and then for two equal readings 1 s
// apart, and samples.
func (s *soak) settle(ctx context.Context) (sample, error) {
	if err := sleepCtx(ctx, 6*time.Second); err != nil {
		return sample{}, err
	}
	var prev sample
	for try := 0; try < 30; try++ {
		if s.stub.Exited() {
			return sample{}, fmt.Errorf("stub exited: %v\n%s", s.stub.Err(), s.stub.Tail())
		}
		cur, err := takeSample(s.stub.PID(), s.metrics)
		if err != nil {
			return sample{}, err
		}
		text, err := scrape(s.metrics)
		if err != nil {
			return sample{}, err
		}
		if try > 0 && promValue(text, "podns_tcp_connections") == 0 && cur.goroutines == prev.goroutines && cur.fds == prev.fds {
			return cur, nil
		}
		prev = cur
		if err := sleepCtx(ctx, time.Second); err != nil {
			return sample{}, err
		}
	}
	return prev, nil
}

// sampleLoop appends one row to the time series every sampleEvery until ctx ends.
func (s *soak) sampleLoop(ctx context.Context, res *result) {
	t := time.NewTicker(s.cfg.sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		row := s.rec.takeInterval()
		if smp, err := takeSample(s.stub.PID(), s.metrics); err == nil {
			row.sample = smp
		} else {
			row.sample.at = time.Now()
			row.err = err.Error()
		}
		res.mu.Lock()
		res.series = append(res.series, row)
		res.mu.Unlock()
	}
}

// watchdog notes every 50 ms that the soak process runs; see recorder.alive.
func (s *soak) watchdog(ctx context.Context) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	s.rec.alive(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// time.Now, not the tick's time: that is when the tick was due, not when it ran.
			s.rec.alive(time.Now())
		}
	}
}

// faults applies faultLoop, round after round, until duration has passed (the fault under
// way is finished first). The first round always runs whole, so that even a short soak on a
// starved host applies every fault once.
func (s *soak) faults(ctx context.Context, res *result) error {
	end := time.Now().Add(s.cfg.duration)
	for round := 1; time.Now().Before(end); round++ {
		for _, f := range faultLoop {
			if round > 1 && !time.Now().Before(end) {
				break
			}
			if err := sleepCtx(ctx, s.cfg.gap); err != nil {
				return err
			}
			if err := s.apply(ctx, f); err != nil {
				return err
			}
		}
		s.logf("fault round %d done", round)
	}
	return nil
}

func (s *soak) targets(f faultSpec) []int {
	switch f.target {
	case "A":
		return []int{0}
	case "B":
		return []int{1}
	}
	return []int{0, 1}
}

// apply runs one fault from start to lift, recording its window.
func (s *soak) apply(ctx context.Context, f faultSpec) error {
	idx := s.targets(f)
	w := s.rec.openWindow(f)
	defer s.rec.closeWindow(w)
	switch f.fault {
	case "restart":
		for _, i := range idx {
			s.backends[i].p.Kill()
		}
		if err := sleepCtx(ctx, s.cfg.restartDown); err != nil {
			return err
		}
		for _, i := range idx {
			if err := s.startBackend(ctx, s.backends[i]); err != nil {
				return err
			}
		}
		s.logf("%s %s: down %v", f.fault, f.target, s.cfg.restartDown)
		return nil
	case "blackhole":
		s.setMode(idx, blackhole, 0)
	case "slow":
		s.setMode(idx, slow, s.cfg.slowDelay)
	case "slow-mild":
		s.setMode(idx, slow, s.cfg.mildDelay)
	case "cut":
		s.setMode(idx, cut, 0)
	default:
		return fmt.Errorf("unknown fault %q", f.fault)
	}
	err := sleepCtx(ctx, s.cfg.faultLen)
	s.setMode(idx, pass, 0)
	s.logf("%s %s: %v", f.fault, f.target, s.cfg.faultLen)
	return err
}

func (s *soak) setMode(idx []int, m mode, d time.Duration) {
	for _, i := range idx {
		s.proxies[i].set(m, d)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// loadavg is /proc/loadavg's first three fields: how busy the machine was, for the record.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
