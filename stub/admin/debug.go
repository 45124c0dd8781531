package admin

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/querylog"
)

// The /debug/ paths answer what a person inside the pod asks the running stub (`stub status`,
// `stub cache`, `stub dig` run by kubectl exec). They expose the names the pod resolved and
// the addresses they resolve to, which are the pod's business: the admin endpoint listens on
// every address by default (PODNS_HTTP_LISTEN=:9253, so that the kubelet and Prometheus reach
// /healthz, /readyz and /metrics on the pod IP), and /debug/ is answered only on connections
// made to a loopback address, which only the pod's own containers can reach.
const (
	// StatusPath is the stub's state as Status.
	StatusPath = "/debug/status"
	// CachePath is cache entries as CacheReport: ?name= for every entry of a name, else the
	// top entries by hits, ?n= of them (default DefaultTop, 1 to MaxTop: any other n is 400
	// naming the range, as `stub cache -n` refuses it).
	CachePath = "/debug/cache"
)

// Bounds of CachePath's answers: a screenful by default; MaxTop keeps one request's copy of
// the cache small whatever n asks for. A name has at most a few dozen entries (types x DO/CD).
const (
	DefaultTop = 20
	MaxTop     = 1000
)

// Debug is what the /debug/ paths read. A nil Status answers 404 on StatusPath and CachePath.
type Debug struct {
	// Status returns the stub's state now.
	Status func() Status
	// Cache is the stub's cache; nil when PODNS_CACHE_SIZE=0 (CachePath then says so).
	Cache *cache.Cache
	// QueryLog is switched by QueryLogPath; nil: not served.
	QueryLog *querylog.Log
}

// Status is StatusPath's JSON.
type Status struct {
	Version       string    `json:"version"`
	GoVersion     string    `json:"go_version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Ready         bool      `json:"ready"`
	ReadyReason   string    `json:"ready_reason"`
	// Config is every PODNS_* variable as applied, then what the stub derived at start
	// (upstreams, search path, memory limits), each with where it came from.
	Config    []Setting   `json:"config"`
	Upstreams []Upstream  `json:"upstreams"`
	Cache     CacheStatus `json:"cache"`
	// QueryLog is the query log's mode; "" when the stub has none.
	QueryLog string `json:"query_log,omitempty"`
}

// Setting is one configuration value: From is "env" or "default" for a variable, "unset" for a
// variable without value or default, and a file path (upstream.conf, the pod's resolv.conf, a
// cgroup file), "GOMEMLIMIT" or "derived" for values the stub worked out at start.
type Setting struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	From  string `json:"from"`
}

// Upstream is one upstream server's state (upstream.ServerStatus).
type Upstream struct {
	Server string `json:"server"`
	Up     bool   `json:"up"`
	// DownSince is set while the server is marked down.
	DownSince        *time.Time `json:"down_since,omitempty"`
	ConsecutiveFails int        `json:"consecutive_fails"`
	// Protocol is what its queries go over now; UDPFallback says it is udp because TCP to it
	// failed while UDP answered (PODNS_UPSTREAM_PROTOCOL=tcp).
	Protocol    string `json:"protocol"`
	UDPFallback bool   `json:"udp_fallback"`
	// NoEDNS: its queries go without an OPT record (it rejected one).
	NoEDNS bool `json:"no_edns,omitempty"`
	// LatencyP50Seconds is the median round trip of its last LatencySamples (up to 64)
	// successful attempts.
	LatencyP50Seconds float64 `json:"latency_p50_seconds"`
	// LatencyP99Seconds is the 99th percentile (nearest rank) of the same round trips: with 64
	// samples, the slowest of them.
	LatencyP99Seconds float64    `json:"latency_p99_seconds"`
	LatencySamples    int        `json:"latency_samples"`
	LastReply         *time.Time `json:"last_reply,omitempty"`
	// LastError is its last failure: reason timeout, network (the attempt failed), servfail,
	// notimp, refused (its reply was passed over for the next server) or probe.
	LastError       string     `json:"last_error,omitempty"`
	LastErrorReason string     `json:"last_error_reason,omitempty"`
	LastErrorAt     *time.Time `json:"last_error_at,omitempty"`
}

// CacheStatus is the cache's size and counters since the stub started.
type CacheStatus struct {
	Enabled  bool   `json:"enabled"`
	Entries  int    `json:"entries"`
	Capacity int    `json:"capacity"`
	Bytes    int64  `json:"bytes"`
	MaxBytes int64  `json:"max_bytes"` // 0: bounded by capacity only
	Hits     uint64 `json:"hits"`
	Misses   uint64 `json:"misses"`
	// HitRatio is Hits / (Hits + Misses); 0 before any lookup.
	HitRatio    float64 `json:"hit_ratio"`
	StaleServed uint64  `json:"stale_served"`
}

// NewCacheStatus summarizes c (nil: the cache is off).
func NewCacheStatus(c *cache.Cache) CacheStatus {
	if c == nil {
		return CacheStatus{}
	}
	s := c.Stats()
	cs := CacheStatus{Enabled: true, Entries: s.Entries, Capacity: s.Capacity, Bytes: s.Bytes, MaxBytes: s.MaxBytes,
		Hits: s.Hits, Misses: s.Misses, StaleServed: s.Stale}
	if n := s.Hits + s.Misses; n > 0 {
		cs.HitRatio = float64(s.Hits) / float64(n)
	}
	return cs
}

// CacheReport is CachePath's JSON.
type CacheReport struct {
	// Enabled is false when the stub runs without a cache (PODNS_CACHE_SIZE=0).
	Enabled bool `json:"enabled"`
	// Name is the name asked for (fully qualified, lowercased); "" for the top entries.
	Name string `json:"name,omitempty"`
	// Top is how many entries were asked for when Name is "".
	Top     int     `json:"top,omitempty"`
	Entries []Entry `json:"entries"`
}

// Entry is one cache entry (cache.EntryInfo).
type Entry struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Class string `json:"class"`
	DO    bool   `json:"do"`
	CD    bool   `json:"cd"`
	// State is fresh (served), stale (expired, served only while the upstreams fail) or
	// expired (held until evicted).
	State string `json:"state"`
	// Kind is answer, nxdomain, nodata (both negative, RFC 2308) or servfail.
	Kind string `json:"kind"`
	// TTLLeftSeconds is how long it stays fresh, as the TTL a client gets now (whole seconds,
	// rounded up); 0 or negative once expired. StaleLeftSeconds is how long it may still be
	// served stale.
	TTLLeftSeconds   int64     `json:"ttl_left_seconds"`
	StaleLeftSeconds int64     `json:"stale_left_seconds,omitempty"`
	Stored           time.Time `json:"stored"`
	Hits             uint64    `json:"hits"`
	// Records: the answer section (the SOA for a negative entry) with the TTLs as stored.
	Records []string `json:"records"`
}

func newEntry(e cache.EntryInfo) Entry {
	out := Entry{Name: e.Name, Type: dns.Type(e.Type).String(), Class: dns.Class(e.Class).String(), DO: e.DO, CD: e.CD,
		State: string(e.State), Kind: string(e.Kind), TTLLeftSeconds: ttlSeconds(e.TTLLeft),
		StaleLeftSeconds: int64(e.StaleLeft / time.Second), Stored: e.Stored, Hits: e.Hits, Records: e.Records}
	if out.Records == nil {
		out.Records = []string{}
	}
	return out
}

// ttlSeconds is d in whole seconds as a client's TTL counts down: a fresh entry 59.2 s from
// expiry is served with TTL 60 (its age, 0.8 s, is 0 whole seconds).
func ttlSeconds(d time.Duration) int64 {
	if d > 0 {
		return int64((d + time.Second - 1) / time.Second)
	}
	return int64(d / time.Second)
}

// debugRoutes adds the /debug/ paths of d to mux.
func debugRoutes(mux *http.ServeMux, d *Debug) {
	if d == nil || d.Status == nil {
		return
	}
	mux.HandleFunc("GET "+StatusPath, func(w http.ResponseWriter, _ *http.Request) {
		serveJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("GET "+CachePath, func(w http.ResponseWriter, r *http.Request) {
		rep := CacheReport{Enabled: d.Cache != nil, Entries: []Entry{}}
		name := strings.TrimSpace(r.URL.Query().Get("name"))
		var infos []cache.EntryInfo
		switch {
		case name != "":
			if _, ok := dns.IsDomainName(name); !ok {
				http.Error(w, "name "+strconv.Quote(name)+": not a domain name", http.StatusBadRequest)
				return
			}
			rep.Name = strings.ToLower(dns.Fqdn(name))
			if d.Cache != nil {
				infos = d.Cache.Entries(name, MaxTop)
			}
		default:
			rep.Top = DefaultTop
			if s := r.URL.Query().Get("n"); s != "" {
				n, err := strconv.Atoi(s)
				if err != nil || n < 1 || n > MaxTop {
					http.Error(w, fmt.Sprintf("n %q: allowed 1 to %d", s, MaxTop), http.StatusBadRequest)
					return
				}
				rep.Top = n
			}
			if d.Cache != nil {
				infos = d.Cache.Top(rep.Top)
			}
		}
		for _, e := range infos {
			rep.Entries = append(rep.Entries, newEntry(e))
		}
		serveJSON(w, http.StatusOK, rep)
	})
}

// loopbackOnly answers the /debug/ paths only on a connection whose local address (the address
// the client connected to, http.LocalAddrContextKey) is loopback; anything else is 403. The
// local address rather than the client's: a connection to the pod IP can come from anywhere,
// and one to 127.0.0.1 only from inside the pod.
func loopbackOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/debug") && !toLoopback(r) {
			http.Error(w, "/debug/ is served on loopback only: run `stub status` (kubectl exec POD -c podns-stub -- /stub status) or connect to 127.0.0.1 from inside the pod", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// toLoopback reports whether r came in on a connection to a loopback address.
func toLoopback(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

func serveJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
