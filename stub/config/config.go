// Package config is the stub's configuration: one struct filled from PODNS_* environment
// variables, validated as a whole before anything binds a socket.
package config

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/internal/resolvconf"
	"github.com/podns/podns/internal/statedir"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/querylog"
	"github.com/podns/podns/stub/server"
	"github.com/podns/podns/stub/upstream"
)

// Config is every knob of the stub. Each field's tags carry its variable, default, allowed range
// and meaning; `stub -help` and docs/configuration.md (`make docs`) are generated from the
// same tags, so the `help` tag is the user's one-line manual entry and the comments say why.
type Config struct {
	// Listen is where DNS is served, UDP and TCP on each address. The pod's resolv.conf points at
	// 127.0.0.1, and port 53 is the only port a resolv.conf can name.
	Listen ListenList `env:"PODNS_LISTEN" envDefault:"127.0.0.1:53" allowed:"comma-separated ip:port" help:"DNS listen addresses, UDP and TCP on each"`

	// Upstreams overrides the nameservers of the saved resolv.conf.
	Upstreams UpstreamList `env:"PODNS_UPSTREAMS" allowed:"comma-separated ip[:port], [ipv6]:port or [ipv6]; port 53 if omitted" help:"upstream DNS servers, in order of preference; unset: the nameservers of $PODNS_STATE_DIR/upstream.conf (the kubelet's resolv.conf, saved by initc). IPv6: a zone is allowed (fe80::1%eth0); fd00::a:5353 is an address, a port needs the brackets"`

	// StateDir is the emptyDir shared with initc: upstream.conf (the kubelet's resolv.conf) and
	// the disabled marker live here.
	StateDir string `env:"PODNS_STATE_DIR" envDefault:"/run/podns" allowed:"a directory" help:"the emptyDir shared with initc: upstream.conf, the disabled marker"`
	// ResolvConf is the resolv.conf the pod's resolver reads (initc's rewrite, or the pod's
	// dnsConfig when there is no initc): the search-path prefetch takes the search list and
	// ndots from it. Same variable and meaning as initc's.
	ResolvConf string `env:"PODNS_RESOLV_CONF" envDefault:"/etc/resolv.conf" allowed:"absolute path" help:"the pod's resolv.conf: search list and ndots for the search-path prefetch (never its nameservers)"`

	// HTTPListen serves /metrics, /healthz and /readyz; probes need it reachable on the pod IP.
	// Its /debug/ paths (the names the pod resolved) answer loopback connections only, and the
	// stub subcommands reach it on loopback.
	HTTPListen HTTPAddr `env:"PODNS_HTTP_LISTEN" envDefault:":9253" allowed:"[ip]:port or off" help:"/metrics, /healthz, /readyz; /debug/ on loopback connections only (stub status, cache, dig, querylog); off disables"`

	LogLevel  string `env:"PODNS_LOG_LEVEL" envDefault:"info" oneof:"trace debug info warn error" help:"log level (zerolog)"`
	LogFormat string `env:"PODNS_LOG_FORMAT" envDefault:"json" oneof:"json console" help:"log format; logs go to stderr"`

	// QueryLog is the query log's mode at start; PUT /debug/querylog changes it while the stub
	// runs. Its lines are written whatever PODNS_LOG_LEVEL says: the mode is the switch.
	QueryLog querylog.Mode `env:"PODNS_QUERY_LOG" envDefault:"off" allowed:"off, errors, slow:<duration> (1ms to 1m, e.g. slow:100ms), all" help:"one log line per answer: off; errors (SERVFAIL, REFUSED, stale, failed upstream attempts); slow:<duration> (answers slower than that); all. Changed at run time by PUT /debug/querylog"`
	// QueryLogRate bounds the query log so that "all" under a flood costs neither the pod's CPU
	// nor the node's log pipeline: lines over it are dropped and counted.
	QueryLogRate int `env:"PODNS_QUERY_LOG_RATE" envDefault:"100" min:"1" max:"100000" help:"most query log lines per second (a second's worth at once); more are dropped, counted in podns_query_log_dropped_total and in a line every 10s"`

	// UpstreamProtocol is tcp by default: TCP to the cluster DNS cannot hit the conntrack race.
	// tcp still uses UDP for an upstream that answers only over UDP (a NetworkPolicy allowing
	// UDP/53 only): failing every lookup is never better.
	UpstreamProtocol string `env:"PODNS_UPSTREAM_PROTOCOL" envDefault:"tcp" oneof:"tcp udp" help:"protocol to the upstreams; udp retries over TCP when truncated; tcp falls back to UDP for an upstream that answers only over UDP"`
	// UpstreamTimeout bounds one attempt at one upstream; then the next upstream is tried.
	UpstreamTimeout time.Duration `env:"PODNS_UPSTREAM_TIMEOUT" envDefault:"2s" min:"100ms" max:"30s" help:"how long one attempt at one upstream may take; then the next upstream is tried"`
	// UpstreamIdleTimeout closes pooled upstream TCP connections before CoreDNS's 10 s idle close.
	UpstreamIdleTimeout time.Duration `env:"PODNS_UPSTREAM_IDLE_TIMEOUT" envDefault:"5s" min:"1s" max:"10m" help:"close pooled upstream TCP connections idle this long (below CoreDNS's 10s idle close)"`

	// UpstreamMaxFails: one failed attempt already cost a client the whole upstream timeout.
	UpstreamMaxFails int `env:"PODNS_UPSTREAM_MAX_FAILS" envDefault:"1" min:"1" max:"100" help:"consecutive failed attempts (timeout, refused, unreachable) that mark an upstream down; any reply counts as alive"`
	// UpstreamProbeInterval is the first pause between probes of a down upstream; it doubles up to
	// UpstreamProbeMaxInterval while the upstream stays silent.
	UpstreamProbeInterval    time.Duration `env:"PODNS_UPSTREAM_PROBE_INTERVAL" envDefault:"500ms" min:"50ms" max:"1m" help:"first pause between probes of a down upstream (doubles while it stays silent)"`
	UpstreamProbeMaxInterval time.Duration `env:"PODNS_UPSTREAM_PROBE_MAX_INTERVAL" envDefault:"15s" min:"50ms" max:"10m" help:"longest pause between probes of a down upstream; at least PODNS_UPSTREAM_PROBE_INTERVAL"`
	// UpstreamProbeName is asked (type NS) to tell a live upstream from a dead one; any reply,
	// even REFUSED or NXDOMAIN, means alive.
	UpstreamProbeName string `env:"PODNS_UPSTREAM_PROBE_NAME" envDefault:"." allowed:"a domain name" help:"name of the health probe query (type NS); any reply means alive"`
	// StartupProbeTimeout bounds the parallel probe of every upstream before the stub reports
	// ready, so that even the first lookup avoids a dead upstream.
	StartupProbeTimeout time.Duration `env:"PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT" envDefault:"1s" min:"0s" max:"30s" help:"probe every upstream in parallel for at most this long before reporting ready; 0s skips it"`

	// ReadyCheckName is for pods whose upstreams come from PODNS_UPSTREAMS rather than the
	// kubelet's own resolv.conf (restricted mode: the webhook writes the cluster DNS IP and cluster
	// domain into the pod): a wrong IP or domain there would fail every lookup of the app, so the
	// stub stays unready until this name resolves instead, and says which setting to look at.
	ReadyCheckName string `env:"PODNS_READY_CHECK_NAME" allowed:"a domain name; unset: no check" help:"before /readyz reports ready, this name (absolute, no search list; e.g. kubernetes.default.svc.cluster.local.) must resolve to an address (A, else AAAA) through the upstreams; until then /readyz is 503 and a warning names the upstreams, the name and the result (NXDOMAIN, SERVFAIL, timeout, no address) once per change of result; retried after PODNS_UPSTREAM_PROBE_INTERVAL, doubling up to PODNS_UPSTREAM_PROBE_MAX_INTERVAL; once passed it never gates again"`

	CacheSize        int           `env:"PODNS_CACHE_SIZE" envDefault:"10000" min:"0" max:"10000000" help:"cache capacity in entries, expired ones included; 0 disables the cache; a size that cannot fit the container's memory limit is refused (exit 2)"`
	CacheMinTTL      time.Duration `env:"PODNS_CACHE_MIN_TTL" envDefault:"0s" min:"0s" max:"1h" help:"raise shorter TTLs (positive and negative answers) to this; at most PODNS_CACHE_MAX_TTL"`
	CacheMaxTTL      time.Duration `env:"PODNS_CACHE_MAX_TTL" envDefault:"1h" min:"1s" max:"168h" help:"cap the TTLs of positive answers to this"`
	CacheNegMaxTTL   time.Duration `env:"PODNS_CACHE_NEG_MAX_TTL" envDefault:"30s" min:"1s" max:"3h" help:"cap the TTLs of NXDOMAIN and NODATA answers (taken from the SOA, RFC 2308) to this"`
	CacheServfailTTL time.Duration `env:"PODNS_CACHE_SERVFAIL_TTL" envDefault:"5s" min:"0s" max:"5m" help:"how long an upstream SERVFAIL is cached; 0s: never"`

	// AAAA=filter is for IPv4-only pods: apps that get AAAA answers try addresses they cannot reach.
	AAAA string `env:"PODNS_AAAA" envDefault:"pass" oneof:"pass filter" help:"filter: answer every AAAA question NODATA (NOERROR, no answer, SOA) without asking upstream"`
	// Coalesce makes identical concurrent misses share one upstream query.
	Coalesce envconfig.Switch `env:"PODNS_COALESCE" envDefault:"on" oneof:"on off" help:"identical concurrent cache misses share one upstream query"`
	// OrderSameID protects musl clients, which may send A and AAAA with the same ID and match
	// replies by ID only.
	OrderSameID envconfig.Switch `env:"PODNS_ORDER_SAME_ID" envDefault:"on" oneof:"on off" help:"replies to one client socket and query ID leave in the order the queries arrived (musl matches replies by ID only)"`

	// ServeStale is the RFC 8767 window: how long past expiry an answer may still be served when
	// the upstreams fail. Long enough by default to ride out a cluster-DNS rollout or outage.
	ServeStale StaleWindow `env:"PODNS_SERVE_STALE" envDefault:"1h" allowed:"off or 1s to 168h" help:"serve expired answers this long past expiry while the upstreams fail (RFC 8767); off disables"`
	// StaleTimeout is the client-facing deadline before a stale answer: well under the 1 s
	// resolver timeout initc writes, so clients never retry first.
	StaleTimeout time.Duration `env:"PODNS_STALE_TIMEOUT" envDefault:"300ms" min:"0s" max:"5s" help:"how long a miss that has a stale answer waits for the upstream before answering stale; 0s: at once"`
	// Prefetch refreshes entries hit at least twice when they enter the last tenth of their TTL.
	Prefetch envconfig.Switch `env:"PODNS_PREFETCH" envDefault:"on" oneof:"on off" help:"refresh entries hit at least twice before they expire (in the last tenth of their TTL)"`
	// SearchPrefetch resolves the rest of the ndots search walk in parallel with its first step.
	SearchPrefetch envconfig.Switch `env:"PODNS_SEARCH_PREFETCH" envDefault:"on" oneof:"on off" help:"once the first step of an ndots search walk shows the walk goes on (NXDOMAIN), resolve the rest of it in parallel; search list and ndots from PODNS_RESOLV_CONF"`

	// TCPIdleTimeout cuts off client TCP connections that send nothing, so idle or slow clients
	// cannot hold connection slots.
	TCPIdleTimeout time.Duration `env:"PODNS_TCP_IDLE_TIMEOUT" envDefault:"10s" min:"100ms" max:"10m" help:"close client TCP connections idle (or mid-message) this long"`
	TCPMaxConns    int           `env:"PODNS_TCP_MAX_CONNS" envDefault:"256" min:"1" max:"65535" help:"concurrent client TCP connections; more are closed at once"`

	// ShutdownGrace keeps the stub answering after SIGTERM. A native sidecar is stopped only after
	// the app containers exit, so 0 is right there; a regular sidecar needs the app's shutdown time.
	ShutdownGrace time.Duration `env:"PODNS_SHUTDOWN_GRACE" envDefault:"0s" min:"0s" max:"10m" help:"keep answering this long after SIGTERM, then drain and exit"`
}

// Load reads the environment (nil: the process's) and validates it. The error lists every bad
// variable, one per line.
func Load(environ map[string]string) (*Config, error) {
	var c Config
	if err := envconfig.Load(&c, environ); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks what the tags and the types cannot: one variable bounded by another, and the
// probe name. Every problem is reported. envconfig.Load calls it.
func (c *Config) Validate() error {
	var errs *multierror.Error
	if !filepath.IsAbs(c.ResolvConf) {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_RESOLV_CONF=%q: not an absolute path (allowed: absolute path)", c.ResolvConf))
	}
	if _, ok := dns.IsDomainName(c.UpstreamProbeName); !ok {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_UPSTREAM_PROBE_NAME=%q: not a domain name (allowed: a domain name)", c.UpstreamProbeName))
	}
	if _, ok := dns.IsDomainName(c.ReadyCheckName); c.ReadyCheckName != "" && (!ok || c.ReadyCheckName == ".") {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_READY_CHECK_NAME=%q: not a domain name below the root (allowed: a domain name; unset: no check)", c.ReadyCheckName))
	}
	if c.UpstreamProbeMaxInterval < c.UpstreamProbeInterval {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_UPSTREAM_PROBE_MAX_INTERVAL=%s is below PODNS_UPSTREAM_PROBE_INTERVAL=%s (allowed: max >= first)", c.UpstreamProbeMaxInterval, c.UpstreamProbeInterval))
	}
	if c.CacheMinTTL > c.CacheMaxTTL {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_CACHE_MIN_TTL=%s is above PODNS_CACHE_MAX_TTL=%s (allowed: min <= max)", c.CacheMinTTL, c.CacheMaxTTL))
	}
	return errs.ErrorOrNil()
}

// StaleWindow returns PODNS_SERVE_STALE as a duration; 0 when off.
func (c *Config) StaleWindow() time.Duration { return c.ServeStale.d }

// SearchPath returns the search list and ndots the pod's resolver uses, for the search-path
// prefetch. They come from the live resolv.conf (PODNS_RESOLV_CONF): in a pod with initc that is
// initc's rewrite, whose options (PODNS_OPTIONS, ndots:2 for example) the resolver applies; in a
// pod without initc (dnsPolicy None with a dnsConfig) it is the only source. What the live file
// lacks (no search or domain line; no ndots option) comes from the saved upstream.conf; ndots
// is resolvconf.DefaultNdots when a file is read but neither sets it. The live file's
// nameservers are never used: they name the stub itself. Nothing when PODNS_SEARCH_PREFETCH is
// off or neither file can be read.
func (c *Config) SearchPath() (search []string, ndots int) {
	p := c.SearchPathFrom()
	return p.Search, p.Ndots
}

// SearchPathSource is SearchPath's result with the file each part came from (for `stub
// status`): a path, "default" (ndots when no file sets it), or "" (no search list).
type SearchPathSource struct {
	Search     []string
	SearchFrom string
	Ndots      int
	NdotsFrom  string
}

// SearchPathFrom is SearchPath, saying where each part came from.
func (c *Config) SearchPathFrom() SearchPathSource {
	var p SearchPathSource
	if !c.SearchPrefetch {
		return p
	}
	live, _ := readResolvConf(c.ResolvConf)
	saved, savedPath, _ := c.upstreamConf()
	if live == nil && saved == nil {
		return p
	}
	p.Ndots, p.NdotsFrom = resolvconf.DefaultNdots, "default"
	// saved first, so that the live file wins wherever it says something.
	for _, f := range []struct {
		f    *resolvconf.File
		path string
	}{{saved, savedPath}, {live, c.ResolvConf}} {
		if f.f == nil {
			continue
		}
		if len(f.f.Search) > 0 {
			p.Search, p.SearchFrom = f.f.Search, f.path
		}
		if _, ok := f.f.Option("ndots"); ok {
			p.Ndots, p.NdotsFrom = f.f.Ndots, f.path
		}
	}
	return p
}

// ReadyCheck returns PODNS_READY_CHECK_NAME as an absolute name (a trailing dot added: the
// check never walks a search list), and false when it is unset.
func (c *Config) ReadyCheck() (name string, ok bool) {
	if c.ReadyCheckName == "" {
		return "", false
	}
	return dns.Fqdn(c.ReadyCheckName), true
}

// ListenAddrs returns the listen addresses.
func (c *Config) ListenAddrs() []netip.AddrPort { return c.Listen }

// Upstreams is where the stub forwards, as ResolveUpstreams decided it.
type Upstreams struct {
	// Servers are the upstreams, in the order they are tried.
	Servers []netip.AddrPort
	// Source is where they came from: "PODNS_UPSTREAMS" or the saved resolv.conf's path.
	Source string
	// Skipped are nameservers of the saved resolv.conf left out because a packet to them would
	// reach the stub itself (see loops); the stub logs them at start.
	Skipped []netip.AddrPort
}

// ResolveUpstreams returns the upstreams: PODNS_UPSTREAMS when set, else the nameservers of the
// saved resolv.conf. An upstream that a packet from the stub would deliver to one of the stub's
// own listeners (see loops: 127.0.0.1, 0.0.0.0, ...) would make the stub forward to itself until
// the upstream timeout, so:
//   - in PODNS_UPSTREAMS, the operator's own setting, it is an error (the stub exits 2);
//   - in the saved file, the kubelet's, it is skipped when another nameserver remains, as glibc
//     moves past a nameserver that refuses the connection; when none remains it is an error.
//
// The host's addresses for that check are read once, here, from net.InterfaceAddrs.
func (c *Config) ResolveUpstreams() (Upstreams, error) {
	u := Upstreams{Source: "PODNS_UPSTREAMS"}
	var ups []netip.AddrPort
	if len(c.Upstreams) > 0 {
		ups = c.Upstreams
	} else {
		var f *resolvconf.File
		var err error
		if f, u.Source, err = c.upstreamConf(); err != nil {
			return u, fmt.Errorf("no upstreams: PODNS_UPSTREAMS is unset and %v (initc saves the kubelet's resolv.conf there)", err)
		}
		for _, a := range f.Nameservers {
			ups = append(ups, netip.AddrPortFrom(a, 53))
		}
		if len(ups) == 0 {
			return u, fmt.Errorf("no upstreams: %s has no nameserver line", u.Source)
		}
	}
	local := interfaceAddrs()
	var loopErr error
	for _, up := range ups {
		l, ok := c.reaches(up, local)
		if !ok {
			u.Servers = append(u.Servers, up)
			continue
		}
		u.Skipped = append(u.Skipped, up)
		if loopErr == nil {
			loopErr = fmt.Errorf("refusing to start: upstream %s (from %s) reaches the stub's own listen address %s; forwarding to it would loop", up, u.Source, l)
		}
	}
	if loopErr != nil && (len(c.Upstreams) > 0 || len(u.Servers) == 0) {
		return Upstreams{Source: u.Source}, loopErr
	}
	return u, nil
}

// reaches returns the listener of the stub that a packet to upstream u would be delivered to.
func (c *Config) reaches(u netip.AddrPort, local map[netip.Addr]bool) (netip.AddrPort, bool) {
	for _, l := range c.ListenAddrs() {
		if loops(u, l, local) {
			return l, true
		}
	}
	return netip.AddrPort{}, false
}

// loops reports whether a packet the stub sends to upstream u would be delivered to its listener
// l, on Linux. local holds the addresses of the host's interfaces (the pod IP among them).
// Addresses compare without IPv4 mapping (::ffff:127.0.0.1 is 127.0.0.1) and without zone. With
// equal ports, u reaches l when:
//   - they are the same address;
//   - u is unspecified (0.0.0.0, ::): Linux sends a connection to the unspecified address to the
//     host itself (127.0.0.1, ::1), so it is never a real server; it is refused whatever the
//     listener;
//   - l is unspecified (a wildcard listener, which Go opens dual-stack and which receives on
//     every local address) and u is a loopback address (all of 127.0.0.0/8, ::1) or in local.
//
// A specific listener is reached only at its own address: 127.0.0.2 does not reach a listener
// on 127.0.0.1, nor does the pod IP.
func loops(u, l netip.AddrPort, local map[netip.Addr]bool) bool {
	if u.Port() != l.Port() {
		return false
	}
	ua, la := u.Addr().Unmap().WithZone(""), l.Addr().Unmap().WithZone("")
	switch {
	case ua == la, ua.IsUnspecified():
		return true
	case la.IsUnspecified():
		return ua.IsLoopback() || local[ua]
	}
	return false
}

// interfaceAddrs returns the addresses of the host's interfaces (in a pod: its network
// namespace's, so the pod IP), for loops. An error leaves the set empty: the check then still
// covers loopback, unspecified and equal addresses.
func interfaceAddrs() map[netip.Addr]bool {
	local := map[netip.Addr]bool{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return local
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			local[p.Addr().Unmap().WithZone("")] = true
		}
	}
	return local
}

// upstreamConf reads and parses the kubelet's resolv.conf saved in the state dir, and returns its
// path for messages.
func (c *Config) upstreamConf() (*resolvconf.File, string, error) {
	path := statedir.UpstreamConfPath(c.StateDir)
	f, err := readResolvConf(path)
	return f, path, err
}

// readResolvConf reads and parses the resolv.conf at path.
func readResolvConf(path string) (*resolvconf.File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := resolvconf.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return f, nil
}

// Disabled returns the reason in the state dir's disabled marker, if initc wrote one.
func (c *Config) Disabled() (reason string, disabled bool) { return statedir.ReadDisabled(c.StateDir) }

// Logger builds the logger PODNS_LOG_LEVEL and PODNS_LOG_FORMAT ask for, writing to w.
func (c *Config) Logger(w io.Writer) zerolog.Logger {
	return envconfig.Logger(w, c.LogLevel, c.LogFormat, "stub")
}

// Upstream is the forwarder's configuration for servers (from ResolveUpstreams).
func (c *Config) Upstream(servers []netip.AddrPort, log zerolog.Logger) upstream.Config {
	return upstream.Config{
		Servers:          servers,
		Protocol:         c.UpstreamProtocol,
		Timeout:          c.UpstreamTimeout,
		IdleTimeout:      c.UpstreamIdleTimeout,
		MaxFails:         c.UpstreamMaxFails,
		ProbeInterval:    c.UpstreamProbeInterval,
		ProbeMaxInterval: c.UpstreamProbeMaxInterval,
		ProbeName:        c.UpstreamProbeName,
		Logger:           log,
	}
}

// Cache is the cache's configuration; ok is false when PODNS_CACHE_SIZE=0 turns the cache off.
func (c *Config) Cache() (cfg cache.Config, ok bool) {
	return cache.Config{
		Size: c.CacheSize, MinTTL: c.CacheMinTTL, MaxTTL: c.CacheMaxTTL,
		NegMaxTTL: c.CacheNegMaxTTL, ServfailTTL: c.CacheServfailTTL,
		StaleWindow: c.StaleWindow(), Prefetch: bool(c.Prefetch),
	}, c.CacheSize > 0
}

// QueryLogConfig is the query log's configuration, writing to log.
func (c *Config) QueryLogConfig(log zerolog.Logger) querylog.Config {
	return querylog.Config{Mode: c.QueryLog, Rate: c.QueryLogRate, Logger: log}
}

// Server is the server's configuration around the cache (nil: none) and the forwarder. It reads
// the search list and ndots from the pod's resolv.conf and upstream.conf (see SearchPath). The
// caller sets QueryLog.
func (c *Config) Server(ch *cache.Cache, fwd *upstream.Forwarder, log zerolog.Logger) server.Config {
	search, ndots := c.SearchPath()
	return server.Config{
		Listen:         c.ListenAddrs(),
		Cache:          ch,
		Forwarder:      fwd,
		TCPIdleTimeout: c.TCPIdleTimeout,
		TCPMaxConns:    c.TCPMaxConns,
		Coalesce:       bool(c.Coalesce),
		OrderSameID:    bool(c.OrderSameID),
		FilterAAAA:     c.AAAA == "filter",
		StaleTimeout:   c.StaleTimeout,
		Search:         search,
		Ndots:          ndots,
		Logger:         log,
	}
}
