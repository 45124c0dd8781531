// Command stub is podns's per-pod DNS stub resolver: it answers the pod's queries on loopback
// from its cache and forwards misses to the cluster DNS over TCP. Every knob is a PODNS_*
// environment variable; `stub -help` lists them.
package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/podns/podns/internal/buildinfo"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/cli"
	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/stub/admin"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/config"
	"github.com/podns/podns/stub/memlimit"
	"github.com/podns/podns/stub/panics"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/server"
	"github.com/podns/podns/stub/upstream"
)

// Exit codes (internal/cli): 2 for anything the operator must fix in the configuration (bad
// variable, no upstream, a forwarding loop), 1 for runtime failures (a port already taken).
const (
	exitOK     = cli.ExitOK
	exitFail   = cli.ExitFail
	exitConfig = cli.ExitConfig
)

// cgroupRoot is where the container's memory limit is read (stub/memlimit): "/", the real
// /proc and /sys/fs/cgroup. A test hook, not a setting: tests build the binary with
// -ldflags "-X main.cgroupRoot=<fixture dir>".
var cgroupRoot = "/"

// The server calls its forwarder only through server.Forwarder: a method the server starts to
// need must be declared there, and this keeps the real forwarder providing it.
var _ server.Forwarder = (*upstream.Forwarder)(nil)

// program is config.Program, from which docs/configuration.md is generated too: the variables,
// the exit codes and the subcommands (dispatched by run).
var program = config.Program

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], nil, os.Stdout, os.Stderr))
}

// run is the whole program: it wires the parts stub/config describes. ctx ending is SIGTERM.
// environ nil means the process environment.
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	started := time.Now()
	if len(args) == 1 && args[0] == waitReadyArg {
		return waitReadyHook(ctx, environ, stderr)
	}
	if len(args) > 0 {
		if sc, ok := subcommands[args[0]]; ok {
			return sc(ctx, args[1:], environ, stdout, stderr)
		}
	}
	if exit, done := program.Args(args, stdout, stderr); done {
		return exit
	}
	cfg, err := config.Load(environ)
	if err != nil {
		return program.BadConfig(stderr, err)
	}
	log := cfg.Logger(stderr)
	reg := registry()
	// initc leaves a marker when podns must not take port 53 (a hostNetwork pod shares the node's
	// loopback). Stay up so the pod's probes pass, bind nothing else.
	if why, off := cfg.Disabled(); off {
		return serveDisabled(ctx, cfg, reg, why, environ, started, log)
	}

	cc, cacheOn := cfg.Cache()
	mem, fits := fitMemory(cfg, &cc, cacheOn, stderr, log)
	if !fits {
		return exitConfig
	}

	res, err := cfg.ResolveUpstreams()
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitConfig
	}
	ups, source := res.Servers, res.Source
	for _, u := range res.Skipped {
		log.Warn().Str("upstream", u.String()).Str("from", source).
			Msg("nameserver skipped: a packet to it would reach the stub itself (the unspecified address or the stub's own listener)")
	}
	fwd, err := upstream.New(cfg.Upstream(ups, log.With().Str("part", "upstream").Logger()))
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitConfig
	}
	defer fwd.Close()
	var c *cache.Cache
	if cacheOn {
		c = cache.New(cc)
	}
	qlog := querylog.New(cfg.QueryLogConfig(log.With().Str("part", "querylog").Logger()))
	defer qlog.Close()
	scfg := cfg.Server(c, fwd, log.With().Str("part", "server").Logger())
	scfg.QueryLog = qlog
	srv, err := server.New(scfg)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitConfig
	}
	var check *readyCheck
	if name, ok := cfg.ReadyCheck(); ok {
		check = newReadyCheck(name, fwd.Servers(), source, fwd, cfg.UpstreamProbeInterval, cfg.UpstreamProbeMaxInterval,
			log.With().Str("part", "readycheck").Logger())
	}
	var terminating, probed atomic.Bool
	ready := func() (bool, string) {
		switch {
		case terminating.Load():
			return false, "terminating"
		case !srv.Ready():
			return false, "not serving"
		case !probed.Load():
			return false, "probing upstreams"
		}
		if check != nil {
			if ok, why := check.ready(); !ok {
				return false, why
			}
		}
		return true, "ok"
	}
	st := &statusSource{environ: environ, started: started, ready: ready, derived: derivedSettings(cfg, res, mem), fwd: fwd, cache: c,
		queryLog: func() string { return qlog.Mode().String() }}
	stopHTTP, err := serveHTTP(cfg, reg, ready, &admin.Debug{Status: st.status, Cache: c, QueryLog: qlog}, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot serve HTTP")
		return exitFail
	}
	defer stopHTTP()
	if err := srv.Start(); err != nil {
		log.Error().Err(err).Msg("cannot listen")
		return exitFail
	}
	startupProbe(ctx, cfg, fwd, log)
	probed.Store(true)
	startupLog(log.Info(), cfg, ups, source, scfg, mem).Msg("podns stub serving")
	checked := make(chan struct{})
	if check != nil {
		go func() { defer close(checked); check.run(ctx) }()
	} else {
		close(checked)
	}
	// The check's last exchange ends with ctx; wait for it so that no round outlives the forwarder.
	defer func() { <-checked }()

	<-ctx.Done()
	terminating.Store(true)
	shutdown(cfg, srv, fwd, log)
	return exitOK
}

// fitMemory reads the container's memory limit, sets the Go runtime's limit below it and gives the
// cache its byte budget. fits is false, after one line on stderr with the numbers, when
// PODNS_CACHE_SIZE cannot fit even at the smallest entry size (README: Reliability).
func fitMemory(cfg *config.Config, cc *cache.Config, cacheOn bool, stderr io.Writer, log zerolog.Logger) (mem memlimit.Plan, fits bool) {
	mem, err := memlimit.Apply(cgroupRoot, os.Getenv("GOMEMLIMIT"))
	if err != nil {
		log.Warn().Err(err).Msg("cannot read the container's memory limit; going on without one")
	}
	if !cacheOn || mem.GoLimit <= 0 {
		return mem, true
	}
	if largest, ok := memlimit.Fit(cfg.CacheSize, cache.SmallEntryBytes, mem.CacheBudget); !ok {
		fmt.Fprintf(stderr, "stub: refusing to start: PODNS_CACHE_SIZE=%d does not fit: %s leaves the cache %s, at %d bytes per entry; the largest PODNS_CACHE_SIZE that fits is %d\n",
			cfg.CacheSize, limitText(mem), mib(mem.CacheBudget), cache.SmallEntryBytes, largest)
		return mem, false
	}
	cc.MaxBytes = mem.CacheBudget
	return mem, true
}

// registry holds the Go and process collectors and every podns metric.
func registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector())
	for _, cs := range [][]prometheus.Collector{server.Collectors(), cache.Collectors(), upstream.Collectors(), panics.Collectors(), querylog.Collectors()} {
		reg.MustRegister(cs...)
	}
	return reg
}

// serveDisabled serves only the probes, ready, and /debug/status until ctx ends: initc disabled
// podns for this pod.
func serveDisabled(ctx context.Context, cfg *config.Config, reg *prometheus.Registry, why string, environ map[string]string, started time.Time, log zerolog.Logger) int {
	log.Warn().Str("reason", why).Str("version", version.Version).Msg("podns disabled for this pod; serving probes only, no DNS")
	ready := func() (bool, string) { return true, "disabled: " + why }
	st := &statusSource{environ: environ, started: started, ready: ready}
	stopHTTP, err := serveHTTP(cfg, reg, ready, &admin.Debug{Status: st.status}, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot serve HTTP")
		return exitFail
	}
	<-ctx.Done()
	stopHTTP()
	return exitOK
}

// waitReadyArg runs the stub as its own container's postStart hook (`/stub -wait-ready`): it
// polls the running stub's /readyz on loopback (PODNS_HTTP_LISTEN's port; the hook shares the
// container's network namespace and environment) until it answers 200, then exits 0; after
// waitReadyLimit, or if PODNS_HTTP_LISTEN is off, it exits non-zero and the kubelet kills and
// restarts the container (event FailedPostStartHook).
//
// Why a hook and not a startupProbe: the kubelet runs a postStart hook to its end before it starts
// the next container, and treats a running native sidecar without a startupProbe as started at its
// next pod sync. A startupProbe instead first waits for a pod sync that records the container as
// running (kubelet PLEG relist, every 1 s), then for the probe's next tick (periodSeconds ≥ 1; the
// kubelet triggers no early startup probe), then for another relist before the sync that starts
// the app: 0.9 s more at the median, measured side by side (README: What podns costs).
const waitReadyArg = "-wait-ready"

// waitReadyLimit bounds the hook: the 30 s the startupProbe it replaces allowed (30 × 1 s),
// longer than the stub's own start (PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT ≤ 30 s) rarely needs.
var waitReadyLimit = 30 * time.Second

// waitReadyHook is -wait-ready. ctx ending (SIGTERM: the kubelet is stopping the container) fails it.
func waitReadyHook(ctx context.Context, environ map[string]string, stderr io.Writer) int {
	cfg, err := config.Load(environ)
	if err != nil {
		return program.BadConfig(stderr, err)
	}
	if cfg.HTTPListen.Off() {
		fmt.Fprintf(stderr, "stub %s: PODNS_HTTP_LISTEN is off: there is no /readyz to wait for\n", waitReadyArg)
		return exitConfig
	}
	url, err := readyURL(string(cfg.HTTPListen))
	if err != nil {
		fmt.Fprintf(stderr, "stub %s: %v\n", waitReadyArg, err)
		return exitConfig
	}
	deadline := time.Now().Add(waitReadyLimit)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	host, path := strings.TrimPrefix(url, "http://"), "/readyz"
	host = strings.TrimSuffix(host, path)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start, last := time.Now(), "no answer"
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, time.Second)
		status, code, b, err := loopbackRequest(attempt, http.MethodGet, host, path, "stub "+waitReadyArg, 512)
		cancelAttempt()
		switch {
		case err != nil && (ctx.Err() != nil || !time.Now().Before(deadline)):
			// Cut short by the limit or SIGTERM (a dial can see the deadline pass before the
			// context's timer marks it done): keep the last real answer ("connection
			// refused", a 503 and its reason) for the message the kubelet's event shows.
		case err != nil:
			last = err.Error()
		case code == http.StatusOK:
			return exitOK
		default:
			last = status + ": " + string(b)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(stderr, "stub %s: %s not ready after %s: %s\n", waitReadyArg, url, time.Since(start).Round(10*time.Millisecond), last)
			return exitFail
		case <-tick.C:
		}
	}
}

// readyURL is /readyz on the address a process in the pod reaches PODNS_HTTP_LISTEN at: its own
// host, or loopback for an unspecified one (":9253", "0.0.0.0:9253", "[::]:9253").
func readyURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", err
	}
	switch a, err := netip.ParseAddr(host); {
	case host == "" || err == nil && a == netip.IPv4Unspecified():
		host = "127.0.0.1"
	case err == nil && a == netip.IPv6Unspecified():
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/readyz", nil
}

// startupProbe finds the dead upstreams before the stub reports ready (a stale nameserver in the
// node's resolv.conf is a field classic), so that even the pod's first lookup avoids them.
// Queries that arrive meanwhile are answered; they just may try a dead upstream.
func startupProbe(ctx context.Context, cfg *config.Config, fwd *upstream.Forwarder, log zerolog.Logger) {
	if cfg.StartupProbeTimeout <= 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.StartupProbeTimeout)
	defer cancel()
	for _, p := range fwd.ProbeAll(pctx) {
		ev := log.Info()
		if !p.Up {
			ev = log.Warn().AnErr("error", p.Err)
		}
		ev.Str("upstream", p.Server).Bool("up", p.Up).Str("protocol", p.Protocol).Float64("rtt", p.RTT.Seconds()).Msg("startup probe")
	}
}

// startupLog adds the effective configuration to ev: every setting as the stub applies it,
// with where the upstreams came from, the search list the search-path prefetch uses, and the
// memory limits in effect (bytes; 0 = none).
func startupLog(ev *zerolog.Event, cfg *config.Config, ups []netip.AddrPort, source string, scfg server.Config, mem memlimit.Plan) *zerolog.Event {
	upstreams := make([]string, len(ups))
	for i, u := range ups {
		upstreams[i] = u.String()
	}
	return ev.
		Str("version", version.Version).
		Strs("listen", cfg.Listen.Strings()).
		Strs("upstreams", upstreams).
		Str("upstreams_from", source).
		Str("upstream_protocol", cfg.UpstreamProtocol).
		Float64("upstream_timeout", cfg.UpstreamTimeout.Seconds()).
		Int("upstream_max_fails", cfg.UpstreamMaxFails).
		Str("upstream_probe_name", cfg.UpstreamProbeName).
		Str("ready_check_name", cfg.ReadyCheckName).
		Int("cache_size", cfg.CacheSize).
		Int64("memory_limit", mem.Cgroup.Bytes).
		Str("memory_limit_from", mem.Cgroup.File).
		Int64("go_memory_limit", mem.GoLimit).
		Str("go_memory_limit_from", mem.GoLimitFrom).
		Int64("cache_max_bytes", mem.CacheBudget).
		Float64("cache_min_ttl", cfg.CacheMinTTL.Seconds()).
		Float64("cache_max_ttl", cfg.CacheMaxTTL.Seconds()).
		Float64("cache_neg_max_ttl", cfg.CacheNegMaxTTL.Seconds()).
		Float64("cache_servfail_ttl", cfg.CacheServfailTTL.Seconds()).
		Str("aaaa", cfg.AAAA).
		Str("serve_stale", cfg.ServeStale.String()).
		Float64("stale_timeout", cfg.StaleTimeout.Seconds()).
		Str("prefetch", cfg.Prefetch.String()).
		Strs("search_prefetch", scfg.Search).
		Int("ndots", scfg.Ndots).
		Str("coalesce", cfg.Coalesce.String()).
		Str("order_same_id", cfg.OrderSameID.String()).
		Str("http_listen", string(cfg.HTTPListen)).
		Str("query_log", cfg.QueryLog.String()).
		Int("query_log_rate", cfg.QueryLogRate).
		Float64("shutdown_grace", cfg.ShutdownGrace.Seconds())
}

// limitText names the limit the cache budget came from, for the refusal line.
func limitText(mem memlimit.Plan) string {
	if mem.GoLimitFrom == "GOMEMLIMIT" {
		return "GOMEMLIMIT " + mib(mem.GoLimit)
	}
	return fmt.Sprintf("the memory limit %s (%s) less %s headroom", mib(mem.Cgroup.Bytes), mem.Cgroup.File, mib(memlimit.Headroom(mem.Cgroup.Bytes)))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// shutdown keeps answering for PODNS_SHUTDOWN_GRACE (apps in a regular-sidecar pod are shutting
// down too and may still resolve names), then drains the server, giving misses in flight the
// forwarder's longest exchange and a second more.
func shutdown(cfg *config.Config, srv *server.Server, fwd *upstream.Forwarder, log zerolog.Logger) {
	if cfg.ShutdownGrace > 0 {
		log.Info().Float64("grace", cfg.ShutdownGrace.Seconds()).Msg("SIGTERM: still answering during the grace period")
		time.Sleep(cfg.ShutdownGrace)
	}
	sctx, cancel := context.WithTimeout(context.Background(), fwd.MaxExchangeTime()+time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("shutdown")
	}
	log.Info().Msg("stopped")
}

// serveHTTP starts /metrics, /healthz, /readyz and the /debug/ paths of d unless
// PODNS_HTTP_LISTEN is off. The returned func stops it.
func serveHTTP(cfg *config.Config, reg *prometheus.Registry, ready admin.ReadyFunc, d *admin.Debug, log zerolog.Logger) (func(), error) {
	if cfg.HTTPListen.Off() {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", string(cfg.HTTPListen))
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: admin.Handler(reg, ready, d), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("http server")
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}
