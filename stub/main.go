// Command stub is podns's per-pod DNS stub resolver: it answers the pod's queries on loopback
// from its cache and forwards misses to the cluster DNS over TCP. Every knob is a PODNS_*
// environment variable; `stub -help` lists them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/stub/admin"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/config"
	"github.com/podns/podns/stub/server"
	"github.com/podns/podns/stub/upstream"
)

// Exit codes: 2 for anything the operator must fix in the configuration (bad variable, no
// upstream, a forwarding loop), 1 for runtime failures (a port already taken).
const (
	exitOK     = 0
	exitFail   = 1
	exitConfig = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], nil, os.Stdout, os.Stderr))
}

// run is the whole program; ctx ending is SIGTERM. environ nil means the process environment.
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) int {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			fmt.Fprintf(stdout, "stub %s: podns's per-pod DNS cache. Configured by environment:\n\n", version.Version)
			envconfig.Usage(stdout, &config.Config{})
			return exitOK
		case "-version", "--version":
			fmt.Fprintln(stdout, version.Version)
			return exitOK
		default:
			fmt.Fprintf(stderr, "stub: unknown argument %q (configuration is by PODNS_* environment variables; see -help)\n", a)
			return exitConfig
		}
	}
	cfg, err := config.Load(environ)
	if err != nil {
		fmt.Fprintf(stderr, "stub: invalid configuration:\n%v\n", err)
		return exitConfig
	}
	log := cfg.Logger(stderr)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, cs := range [][]prometheus.Collector{server.Collectors(), cache.Collectors(), upstream.Collectors()} {
		reg.MustRegister(cs...)
	}

	// initc leaves a marker when podns must not take port 53 (a hostNetwork pod shares the node's
	// loopback). Stay up so the pod's probes pass, bind nothing else.
	if why, off := cfg.Disabled(); off {
		log.Warn().Str("reason", why).Str("version", version.Version).Msg("podns disabled for this pod; serving probes only, no DNS")
		stopHTTP, err := serveHTTP(cfg, reg, func() (bool, string) { return true, "disabled: " + why }, log)
		if err != nil {
			log.Error().Err(err).Msg("cannot serve HTTP")
			return exitFail
		}
		<-ctx.Done()
		stopHTTP()
		return exitOK
	}

	ups, source, err := cfg.ResolveUpstreams()
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitConfig
	}
	servers := make([]string, len(ups))
	for i, u := range ups {
		servers[i] = u.String()
	}
	fwd, err := upstream.New(upstream.Config{
		Servers:          servers,
		Protocol:         cfg.UpstreamProtocol,
		Timeout:          cfg.UpstreamTimeout,
		IdleTimeout:      cfg.UpstreamIdleTimeout,
		MaxFails:         cfg.UpstreamMaxFails,
		ProbeInterval:    cfg.UpstreamProbeInterval,
		ProbeMaxInterval: cfg.UpstreamProbeMaxInterval,
		ProbeName:        cfg.UpstreamProbeName,
		Logger:           log.With().Str("part", "upstream").Logger(),
	})
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitConfig
	}
	defer fwd.Close()

	var c *cache.Cache
	if cfg.CacheSize > 0 {
		prefetchHits := 0
		if cfg.Prefetch == "on" {
			prefetchHits = 2
		}
		c = cache.New(cache.Config{
			Size: cfg.CacheSize, MinTTL: cfg.CacheMinTTL, MaxTTL: cfg.CacheMaxTTL,
			NegMaxTTL: cfg.CacheNegMaxTTL, ServfailTTL: cfg.CacheServfailTTL,
			StaleWindow: cfg.StaleWindow(), PrefetchHits: prefetchHits,
		})
	}
	search, ndots := cfg.SearchPath()
	// One miss may try every upstream once; half a second more lets the last attempt's reply in.
	forwardTimeout := time.Duration(len(servers))*cfg.UpstreamTimeout + 500*time.Millisecond
	srv, err := server.New(server.Config{
		Listen:         cfg.ListenAddrs(),
		Cache:          c,
		Forwarder:      fwd,
		TCPIdleTimeout: cfg.TCPIdleTimeout,
		TCPMaxConns:    cfg.TCPMaxConns,
		ForwardTimeout: forwardTimeout,
		Coalesce:       cfg.Coalesce == "on",
		OrderSameID:    cfg.OrderSameID == "on",
		FilterAAAA:     cfg.AAAA == "filter",
		ServeStale:     cfg.StaleWindow() > 0,
		StaleTimeout:   cfg.StaleTimeout,
		Search:         search,
		Ndots:          ndots,
		Logger:         log.With().Str("part", "server").Logger(),
	})
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		return exitConfig
	}
	var terminating, probed atomic.Bool
	stopHTTP, err := serveHTTP(cfg, reg, func() (bool, string) {
		switch {
		case terminating.Load():
			return false, "terminating"
		case !srv.Ready():
			return false, "not serving"
		case !probed.Load():
			return false, "probing upstreams"
		}
		return true, "ok"
	}, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot serve HTTP")
		return exitFail
	}
	defer stopHTTP()
	if err := srv.Start(); err != nil {
		log.Error().Err(err).Msg("cannot listen")
		return exitFail
	}
	// Before reporting ready, find the dead upstreams (a stale nameserver in the node's
	// resolv.conf is a field classic), so that even the pod's first lookup avoids them. Queries
	// that arrive meanwhile are answered; they just may try a dead upstream.
	if cfg.StartupProbeTimeout > 0 {
		pctx, cancel := context.WithTimeout(ctx, cfg.StartupProbeTimeout)
		for _, p := range fwd.ProbeAll(pctx) {
			ev := log.Info()
			if !p.Up {
				ev = log.Warn().AnErr("error", p.Err)
			}
			ev.Str("upstream", p.Server).Bool("up", p.Up).Dur("rtt", p.RTT).Msg("startup probe")
		}
		cancel()
	}
	probed.Store(true)
	log.Info().
		Str("version", version.Version).
		Strs("listen", cfg.Listen).
		Strs("upstreams", servers).
		Str("upstreams_from", source).
		Str("upstream_protocol", cfg.UpstreamProtocol).
		Dur("upstream_timeout", cfg.UpstreamTimeout).
		Int("upstream_max_fails", cfg.UpstreamMaxFails).
		Str("upstream_probe_name", cfg.UpstreamProbeName).
		Int("cache_size", cfg.CacheSize).
		Dur("cache_min_ttl", cfg.CacheMinTTL).
		Dur("cache_max_ttl", cfg.CacheMaxTTL).
		Dur("cache_neg_max_ttl", cfg.CacheNegMaxTTL).
		Dur("cache_servfail_ttl", cfg.CacheServfailTTL).
		Str("aaaa", cfg.AAAA).
		Str("serve_stale", cfg.ServeStale).
		Dur("stale_timeout", cfg.StaleTimeout).
		Str("prefetch", cfg.Prefetch).
		Strs("search_prefetch", search).
		Int("ndots", ndots).
		Str("coalesce", cfg.Coalesce).
		Str("order_same_id", cfg.OrderSameID).
		Str("http_listen", cfg.HTTPListen).
		Dur("shutdown_grace", cfg.ShutdownGrace).
		Msg("podns stub serving")

	<-ctx.Done()
	terminating.Store(true)
	if cfg.ShutdownGrace > 0 {
		// Apps in a regular-sidecar pod are shutting down too and may still resolve names.
		log.Info().Dur("grace", cfg.ShutdownGrace).Msg("SIGTERM: still answering during the grace period")
		time.Sleep(cfg.ShutdownGrace)
	}
	sctx, cancel := context.WithTimeout(context.Background(), forwardTimeout+time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn().Err(err).Msg("shutdown")
	}
	log.Info().Msg("stopped")
	return exitOK
}

// serveHTTP starts /metrics, /healthz and /readyz unless PODNS_HTTP_LISTEN is off. The returned
// func stops it.
func serveHTTP(cfg *config.Config, reg *prometheus.Registry, ready admin.ReadyFunc, log zerolog.Logger) (func(), error) {
	if cfg.HTTPListen == "off" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", cfg.HTTPListen)
	if err != nil {
		return nil, err
	}
	hs := &http.Server{Handler: admin.Handler(reg, ready), ReadHeaderTimeout: 5 * time.Second}
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
