package main

import (
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/stub/admin"
	"github.com/podns/podns/stub/cache"
	"github.com/podns/podns/stub/config"
	"github.com/podns/podns/stub/memlimit"
	"github.com/podns/podns/stub/upstream"
)

// statusSource is what /debug/status reports, gathered by run.
type statusSource struct {
	environ  map[string]string // nil: the process environment
	started  time.Time
	ready    admin.ReadyFunc
	derived  []admin.Setting // what the stub worked out at start, see derivedSettings
	fwd      *upstream.Forwarder
	cache    *cache.Cache
	queryLog func() string // the query log's mode; nil when there is none
}

// status is the stub's state now, for /debug/status.
func (s *statusSource) status() admin.Status {
	now := time.Now()
	st := admin.Status{
		Version: version.Version, GoVersion: runtime.Version(),
		Started: s.started, UptimeSeconds: now.Sub(s.started).Seconds(),
		Cache: admin.NewCacheStatus(s.cache), Upstreams: []admin.Upstream{},
	}
	st.Ready, st.ReadyReason = s.ready()
	for _, v := range envconfig.Settings(&config.Config{}, s.environ) {
		st.Config = append(st.Config, admin.Setting{Name: v.Name, Value: v.Value, From: v.From})
	}
	st.Config = append(st.Config, s.derived...)
	if s.fwd != nil {
		for _, u := range s.fwd.Status() {
			st.Upstreams = append(st.Upstreams, upstreamStatus(u))
		}
	}
	if s.queryLog != nil {
		st.QueryLog = s.queryLog()
	}
	return st
}

func upstreamStatus(u upstream.ServerStatus) admin.Upstream {
	out := admin.Upstream{Server: u.Server, Up: u.Up, ConsecutiveFails: u.Fails, Protocol: u.Protocol,
		UDPFallback: u.Fallback, NoEDNS: u.NoEDNS, LatencyP50Seconds: u.RTTMedian.Seconds(),
		LatencyP99Seconds: u.RTTP99.Seconds(), LatencySamples: u.Samples,
		LastError: u.LastError, LastErrorReason: u.LastErrorReason,
		DownSince: timeOrNil(u.DownSince), LastReply: timeOrNil(u.LastReply), LastErrorAt: timeOrNil(u.LastErrorAt)}
	return out
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// derivedSettings are the values the stub worked out at start beyond its variables, with their
// sources: the upstreams (PODNS_UPSTREAMS or upstream.conf) and those skipped, the search list
// and ndots of the search-path prefetch (the pod's resolv.conf or upstream.conf), and the memory
// limits (a cgroup file, GOMEMLIMIT) with the cache's byte budget derived from them.
func derivedSettings(cfg *config.Config, res config.Upstreams, mem memlimit.Plan) []admin.Setting {
	from := res.Source
	if from == "PODNS_UPSTREAMS" {
		from = "env"
	}
	out := []admin.Setting{{Name: "upstreams", Value: joinAddrs(res.Servers), From: from}}
	if len(res.Skipped) > 0 {
		out = append(out, admin.Setting{Name: "upstreams_skipped", Value: joinAddrs(res.Skipped), From: res.Source})
	}
	sp := cfg.SearchPathFrom()
	out = append(out,
		admin.Setting{Name: "search_prefetch", Value: strings.Join(sp.Search, " "), From: orNone(sp.SearchFrom)},
		admin.Setting{Name: "ndots", Value: strconv.Itoa(sp.Ndots), From: orNone(sp.NdotsFrom)},
		admin.Setting{Name: "memory_limit", Value: strconv.FormatInt(mem.Cgroup.Bytes, 10), From: orNone(mem.Cgroup.File)},
		admin.Setting{Name: "go_memory_limit", Value: strconv.FormatInt(mem.GoLimit, 10), From: orNone(mem.GoLimitFrom)},
		admin.Setting{Name: "cache_max_bytes", Value: strconv.FormatInt(mem.CacheBudget, 10), From: "derived"},
	)
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func joinAddrs(aps []netip.AddrPort) string {
	s := make([]string, len(aps))
	for i, a := range aps {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
