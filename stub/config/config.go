// Package config is the stub's configuration: one struct filled from PODNS_* environment
// variables, validated as a whole before anything binds a socket.
package config

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/miekg/dns"
	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/internal/resolvconf"
)

// Config is every knob of the stub. Each field's tags carry its variable, default, allowed range
// and meaning; `stub -help` and the README table are generated from the same tags.
type Config struct {
	// Listen is where DNS is served, UDP and TCP on each address. The pod's resolv.conf points at
	// 127.0.0.1, and port 53 is the only port a resolv.conf can name.
	Listen []string `env:"PODNS_LISTEN" envDefault:"127.0.0.1:53" envSeparator:"," allowed:"comma-separated ip:port" help:"DNS listen addresses, UDP and TCP on each"`

	// Upstreams overrides the nameservers of the saved resolv.conf.
	Upstreams []string `env:"PODNS_UPSTREAMS" envSeparator:"," allowed:"comma-separated ip[:port], port 53 if omitted" help:"upstream DNS servers; unset: the nameservers of $PODNS_STATE_DIR/upstream.conf"`

	// StateDir is the emptyDir shared with initc: upstream.conf (the kubelet's resolv.conf) and
	// the disabled marker live here.
	StateDir string `env:"PODNS_STATE_DIR" envDefault:"/run/podns" allowed:"a directory" help:"state shared with initc (upstream.conf, disabled marker)"`

	// HTTPListen serves /metrics, /healthz and /readyz; probes need it reachable on the pod IP.
	HTTPListen string `env:"PODNS_HTTP_LISTEN" envDefault:":9253" allowed:"[ip]:port or off" help:"/metrics, /healthz, /readyz; off disables"`

	LogLevel  string `env:"PODNS_LOG_LEVEL" envDefault:"info" oneof:"trace debug info warn error" help:"log level"`
	LogFormat string `env:"PODNS_LOG_FORMAT" envDefault:"json" oneof:"json console" help:"log format"`

	// UpstreamProtocol is tcp by default: TCP to the cluster DNS cannot hit the conntrack race.
	UpstreamProtocol string `env:"PODNS_UPSTREAM_PROTOCOL" envDefault:"tcp" oneof:"tcp udp" help:"protocol to the upstreams; udp retries over TCP when truncated"`
	// UpstreamTimeout bounds one attempt at one upstream; then the next upstream is tried.
	UpstreamTimeout time.Duration `env:"PODNS_UPSTREAM_TIMEOUT" envDefault:"2s" min:"100ms" max:"30s" help:"per-attempt upstream timeout"`
	// UpstreamIdleTimeout closes pooled upstream TCP connections before CoreDNS's 10 s idle close.
	UpstreamIdleTimeout time.Duration `env:"PODNS_UPSTREAM_IDLE_TIMEOUT" envDefault:"5s" min:"1s" max:"10m" help:"close idle upstream TCP connections after this"`

	// UpstreamMaxFails: one failed attempt already cost a client the whole upstream timeout.
	UpstreamMaxFails int `env:"PODNS_UPSTREAM_MAX_FAILS" envDefault:"1" min:"1" max:"100" help:"consecutive failed attempts (timeout, refused, unreachable) that mark an upstream down; any reply counts as alive"`
	// UpstreamProbeInterval is the first pause between probes of a down upstream; it doubles up to
	// UpstreamProbeMaxInterval while the upstream stays silent.
	UpstreamProbeInterval    time.Duration `env:"PODNS_UPSTREAM_PROBE_INTERVAL" envDefault:"500ms" min:"50ms" max:"1m" help:"first pause between probes of a down upstream (doubles while it stays silent)"`
	UpstreamProbeMaxInterval time.Duration `env:"PODNS_UPSTREAM_PROBE_MAX_INTERVAL" envDefault:"15s" min:"50ms" max:"10m" help:"longest pause between probes of a down upstream"`
	// UpstreamProbeName is asked (type NS) to tell a live upstream from a dead one; any reply,
	// even REFUSED or NXDOMAIN, means alive.
	UpstreamProbeName string `env:"PODNS_UPSTREAM_PROBE_NAME" envDefault:"." allowed:"a domain name" help:"name of the health probe query (type NS); any reply means alive"`
	// StartupProbeTimeout bounds the parallel probe of every upstream before the stub reports
	// ready, so that even the first lookup avoids a dead upstream.
	StartupProbeTimeout time.Duration `env:"PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT" envDefault:"1s" min:"0s" max:"30s" help:"probe every upstream in parallel for at most this long before reporting ready; 0s skips it"`

	CacheSize        int           `env:"PODNS_CACHE_SIZE" envDefault:"10000" min:"0" max:"10000000" help:"cache capacity in entries; 0 disables the cache"`
	CacheMinTTL      time.Duration `env:"PODNS_CACHE_MIN_TTL" envDefault:"0s" min:"0s" max:"1h" help:"raise shorter TTLs to this"`
	CacheMaxTTL      time.Duration `env:"PODNS_CACHE_MAX_TTL" envDefault:"1h" min:"1s" max:"168h" help:"cap positive TTLs"`
	CacheNegMaxTTL   time.Duration `env:"PODNS_CACHE_NEG_MAX_TTL" envDefault:"30s" min:"1s" max:"3h" help:"cap NXDOMAIN/NODATA TTLs (taken from the SOA, RFC 2308)"`
	CacheServfailTTL time.Duration `env:"PODNS_CACHE_SERVFAIL_TTL" envDefault:"5s" min:"0s" max:"5m" help:"how long an upstream SERVFAIL is cached; 0 never"`

	// AAAA=filter is for IPv4-only pods: apps that get AAAA answers try addresses they cannot reach.
	AAAA string `env:"PODNS_AAAA" envDefault:"pass" oneof:"pass filter" help:"filter: answer every AAAA question NODATA (NOERROR, no answer, SOA) without asking upstream"`
	// Coalesce makes identical concurrent misses share one upstream query.
	Coalesce string `env:"PODNS_COALESCE" envDefault:"on" oneof:"on off" help:"identical concurrent cache misses share one upstream query"`
	// OrderSameID protects musl clients, which may send A and AAAA with the same ID and match
	// replies by ID only.
	OrderSameID string `env:"PODNS_ORDER_SAME_ID" envDefault:"on" oneof:"on off" help:"replies to one client socket and query ID leave in the order the queries arrived"`

	// ServeStale is the RFC 8767 window: how long past expiry an answer may still be served when
	// the upstreams fail. Long enough by default to ride out a cluster-DNS rollout or outage.
	ServeStale string `env:"PODNS_SERVE_STALE" envDefault:"1h" allowed:"off or 1s to 168h" help:"serve expired answers this long past expiry while the upstreams fail (RFC 8767); off disables"`
	// StaleTimeout is the client-facing deadline before a stale answer: well under the 1 s
	// resolver timeout initc writes, so clients never retry first.
	StaleTimeout time.Duration `env:"PODNS_STALE_TIMEOUT" envDefault:"300ms" min:"0s" max:"5s" help:"how long a miss that has a stale answer waits for the upstream before answering stale; 0s: at once"`
	// Prefetch refreshes entries hit at least twice when they enter the last tenth of their TTL.
	Prefetch string `env:"PODNS_PREFETCH" envDefault:"on" oneof:"on off" help:"refresh entries hit at least twice before they expire (in the last tenth of their TTL)"`
	// SearchPrefetch resolves the rest of the ndots search walk in parallel with its first step.
	SearchPrefetch string `env:"PODNS_SEARCH_PREFETCH" envDefault:"on" oneof:"on off" help:"on the first search-list candidate of a name with fewer dots than ndots, resolve the other candidates in parallel"`

	// TCPIdleTimeout cuts off client TCP connections that send nothing, so idle or slow clients
	// cannot hold connection slots.
	TCPIdleTimeout time.Duration `env:"PODNS_TCP_IDLE_TIMEOUT" envDefault:"10s" min:"100ms" max:"10m" help:"close client TCP connections idle (or mid-message) this long"`
	TCPMaxConns    int           `env:"PODNS_TCP_MAX_CONNS" envDefault:"256" min:"1" max:"65535" help:"concurrent client TCP connections; more are closed at once"`

	// ShutdownGrace keeps the stub answering after SIGTERM. A native sidecar is stopped only after
	// the app containers exit, so 0 is right there; a regular sidecar needs the app's shutdown time.
	ShutdownGrace time.Duration `env:"PODNS_SHUTDOWN_GRACE" envDefault:"0s" min:"0s" max:"10m" help:"keep answering this long after SIGTERM, then drain and exit"`
}

// UpstreamConfName is the kubelet's original resolv.conf, saved by initc in the state dir.
const UpstreamConfName = "upstream.conf"

// DisabledMarkerName is written by initc when podns must stay out of the way (hostNetwork pods):
// the stub then serves its probes but binds no DNS port.
const DisabledMarkerName = "disabled"

// Load reads the environment (nil: the process's) and validates it. The error lists every bad
// variable, one per line.
func Load(environ map[string]string) (*Config, error) {
	var c Config
	err := envconfig.Load(&c, environ)
	var errs *multierror.Error
	if err != nil {
		errs = multierror.Append(errs, err)
	}
	if verr := c.validate(); verr != nil {
		errs = multierror.Append(errs, verr)
	}
	if errs.ErrorOrNil() != nil {
		return nil, envconfig.Format(errs) // Append flattened nested multierrors: one line each
	}
	return &c, nil
}

// validate checks what the tags cannot: address syntax. Every problem is reported.
func (c *Config) validate() error {
	var errs *multierror.Error
	if len(c.Listen) == 0 {
		errs = multierror.Append(errs, errors.New(`PODNS_LISTEN="": at least one address (allowed: comma-separated ip:port)`))
	}
	for _, l := range c.Listen {
		if _, err := netip.ParseAddrPort(strings.TrimSpace(l)); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("PODNS_LISTEN=%q: %q is not ip:port (allowed: comma-separated ip:port)", strings.Join(c.Listen, ","), l))
		}
	}
	for _, u := range c.Upstreams {
		if _, err := ParseUpstream(u); err != nil {
			errs = multierror.Append(errs, fmt.Errorf("PODNS_UPSTREAMS=%q: %v (allowed: comma-separated ip[:port])", strings.Join(c.Upstreams, ","), err))
		}
	}
	if c.HTTPListen != "off" {
		host, port, err := splitHostPort(c.HTTPListen)
		if err != nil || (host != "" && !isIP(host)) || !validPort(port) {
			errs = multierror.Append(errs, fmt.Errorf("PODNS_HTTP_LISTEN=%q: not [ip]:port (allowed: [ip]:port or off)", c.HTTPListen))
		}
	}
	if _, ok := dns.IsDomainName(c.UpstreamProbeName); !ok {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_UPSTREAM_PROBE_NAME=%q: not a domain name (allowed: a domain name)", c.UpstreamProbeName))
	}
	if c.UpstreamProbeMaxInterval < c.UpstreamProbeInterval {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_UPSTREAM_PROBE_MAX_INTERVAL=%s is below PODNS_UPSTREAM_PROBE_INTERVAL=%s (allowed: max >= first)", c.UpstreamProbeMaxInterval, c.UpstreamProbeInterval))
	}
	if c.ServeStale != "off" {
		d, err := time.ParseDuration(c.ServeStale)
		if err != nil || d < time.Second || d > 168*time.Hour {
			errs = multierror.Append(errs, fmt.Errorf("PODNS_SERVE_STALE=%q: not off or a duration (allowed: off or 1s to 168h)", c.ServeStale))
		}
	}
	if c.CacheMinTTL > c.CacheMaxTTL {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_CACHE_MIN_TTL=%s is above PODNS_CACHE_MAX_TTL=%s (allowed: min <= max)", c.CacheMinTTL, c.CacheMaxTTL))
	}
	return errs.ErrorOrNil()
}

// StaleWindow returns PODNS_SERVE_STALE as a duration; 0 when off (valid after Load).
func (c *Config) StaleWindow() time.Duration {
	if c.ServeStale == "off" {
		return 0
	}
	d, _ := time.ParseDuration(c.ServeStale)
	return d
}

// SearchPath returns the search list and ndots of the saved resolv.conf, for the search-path
// prefetch; nothing when the file is missing or PODNS_SEARCH_PREFETCH is off.
func (c *Config) SearchPath() (search []string, ndots int) {
	if c.SearchPrefetch != "on" {
		return nil, 0
	}
	f, _, err := c.upstreamConf()
	if err != nil {
		return nil, 0
	}
	return f.Search, f.Ndots
}

// ListenAddrs returns the parsed listen addresses (valid after Load).
func (c *Config) ListenAddrs() []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(c.Listen))
	for _, l := range c.Listen {
		out = append(out, netip.MustParseAddrPort(strings.TrimSpace(l)))
	}
	return out
}

// ParseUpstream accepts "ip", "ip:port" and "[ipv6]:port"; the port defaults to 53. Names are
// refused: the stub is the pod's resolver and has nothing to resolve them with.
func ParseUpstream(s string) (netip.AddrPort, error) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53), nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address with an optional port", s)
	}
	return ap, nil
}

// ResolveUpstreams returns the upstream list and where it came from: PODNS_UPSTREAMS when set, else the nameservers of the
// saved resolv.conf. It refuses an upstream that is one of the stub's own listen addresses: a
// resolv.conf that already says 127.0.0.1 would make the stub forward to itself forever.
func (c *Config) ResolveUpstreams() ([]netip.AddrPort, string, error) {
	var ups []netip.AddrPort
	source := "PODNS_UPSTREAMS"
	if len(c.Upstreams) > 0 {
		for _, u := range c.Upstreams {
			ap, _ := ParseUpstream(u) // validated by Load
			ups = append(ups, ap)
		}
	} else {
		var f *resolvconf.File
		var err error
		if f, source, err = c.upstreamConf(); err != nil {
			return nil, source, fmt.Errorf("no upstreams: PODNS_UPSTREAMS is unset and %v (initc saves the kubelet's resolv.conf there)", err)
		}
		for _, a := range f.Nameservers {
			ups = append(ups, netip.AddrPortFrom(a, 53))
		}
		if len(ups) == 0 {
			return nil, source, fmt.Errorf("no upstreams: %s has no nameserver line", source)
		}
	}
	for _, u := range ups {
		for _, l := range c.ListenAddrs() {
			if loops(u, l) {
				return nil, source, fmt.Errorf("refusing to start: upstream %s (from %s) is the stub's own listen address %s; forwarding to it would loop", u, source, l)
			}
		}
	}
	return ups, source, nil
}

// loops reports whether sending to upstream u would reach the listener l.
func loops(u, l netip.AddrPort) bool {
	if u.Port() != l.Port() {
		return false
	}
	ua, la := u.Addr().Unmap(), l.Addr().Unmap()
	if ua == la {
		return true
	}
	// A wildcard listener answers on every local address; loopback upstreams certainly reach it.
	return la.IsUnspecified() && (ua.IsLoopback() || ua.IsUnspecified())
}

// upstreamConf reads and parses the kubelet's resolv.conf saved in the state dir, and returns its
// path for messages.
func (c *Config) upstreamConf() (*resolvconf.File, string, error) {
	path := filepath.Join(c.StateDir, UpstreamConfName)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, path, err
	}
	f, err := resolvconf.Parse(data)
	if err != nil {
		return nil, path, fmt.Errorf("%s: %v", path, err)
	}
	return f, path, nil
}

// Disabled returns the reason in the state dir's disabled marker, if initc wrote one.
func (c *Config) Disabled() (reason string, disabled bool) {
	data, err := os.ReadFile(filepath.Join(c.StateDir, DisabledMarkerName))
	if err != nil {
		return "", false
	}
	reason = strings.TrimSpace(string(data))
	if reason == "" {
		reason = "disabled by initc"
	}
	return reason, true
}

// Logger builds the zerolog logger the config asks for, writing to w.
func (c *Config) Logger(w io.Writer) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(c.LogLevel) // validated by Load
	var l zerolog.Logger
	if c.LogFormat == "console" {
		l = zerolog.New(zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339})
	} else {
		l = zerolog.New(w)
	}
	return l.Level(lvl).With().Timestamp().Str("component", "stub").Logger()
}

func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", "", fmt.Errorf("missing port")
	}
	host, port = s[:i], s[i+1:]
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return host, port, nil
}

func isIP(s string) bool { _, err := netip.ParseAddr(s); return err == nil }

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}
