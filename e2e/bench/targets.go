package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/podns/podns/e2e/internal/proc"
)

// Loopback addresses: one per server, so that no two ever share a port and a leftover of one
// cannot answer for another.
var (
	upstreamAddr = netip.MustParseAddr("127.0.0.10")
	targetAddrs  = map[string]netip.Addr{
		"podns":     netip.MustParseAddr("127.0.0.11"),
		"coredns":   netip.MustParseAddr("127.0.0.12"),
		"dnsmasq":   netip.MustParseAddr("127.0.0.13"),
		"unbound":   netip.MustParseAddr("127.0.0.14"),
		"relay":     netip.MustParseAddr("127.0.0.15"),
		"relay-udp": netip.MustParseAddr("127.0.0.16"),
	}
)

// allTargets is the default set of targets, in the order of the table's columns; podns first.
var allTargets = []string{"podns", "coredns", "dnsmasq", "unbound"}

// relayTarget is the Go floor (e2e/bench/relay): run only when -targets names it; its spec
// makes it a reference that runs in the miss latency phases only. relayUDPTarget is the same
// program forwarding over UDP, as dnsmasq does: beside relayTarget it shows what the TCP
// upstream costs per miss by itself.
const (
	relayTarget    = "relay"
	relayUDPTarget = "relay-udp"
)

// targetOrder is the order of the table's columns for any -targets.
var targetOrder = append(slices.Clone(allTargets), relayTarget, relayUDPTarget)

// Zones the upstream serves: hitZone from a generated zone file (the cache-hit names),
// missZone from the template plugin, which answers any name (unique names for the miss run and
// the 100,000-entry memory run, and the concurrent-miss run), and slowZone from the erratic
// plugin, which answers any A query with 192.0.2.53 after a fixed delay (the fixed-rate miss
// run: a cluster DNS forwarding to a resolver that is a round trip away).
const (
	hitZone  = "bench.test."
	missZone = "miss.test."
	slowZone = "slow.test."
)

// freePort returns a port free for both UDP and TCP on addr. Another process could take it
// before the server binds it; the server then fails to start and the benchmark says so.
func freePort(addr netip.Addr) (int, error) {
	ap, err := proc.FreePort(addr)
	return int(ap.Port()), err
}

// writeZone writes the hit zone with n A records h00000..h<n-1> and the dnsperf data files for
// the hit and miss runs. It returns the hit names.
func writeZone(dir string, n, misses int) (hitNames []string, err error) {
	var z strings.Builder
	fmt.Fprintf(&z, "$ORIGIN %s\n$TTL 3600\n", hitZone)
	fmt.Fprintf(&z, "@ IN SOA ns.%s admin.%s 1 7200 3600 1209600 3600\n@ IN NS ns\nns IN A 10.0.0.53\n", hitZone, hitZone)
	var hits strings.Builder
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("h%05d.%s", i, hitZone)
		hitNames = append(hitNames, name)
		fmt.Fprintf(&z, "h%05d IN A 10.%d.%d.%d\n", i, (i>>16)&255, (i>>8)&255, i&255)
		fmt.Fprintf(&hits, "%s A\n", name)
	}
	var miss strings.Builder
	for i := 0; i < misses; i++ {
		fmt.Fprintf(&miss, "u%07d.%s A\n", i, missZone)
	}
	for name, body := range map[string]string{
		"bench.test.zone": z.String(),
		"hits.txt":        hits.String(),
		"misses.txt":      miss.String(),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	return hitNames, nil
}

// upstreamCorefile is the upstream: no cache, no forward (nothing ever leaves loopback). Its
// slowZone delays every answer by delay; like every miekg/dns server it answers the queries of
// one TCP connection one at a time, as a cluster's CoreDNS does, so a forwarder that queues
// queries on one connection pays delay per queued query.
func upstreamCorefile(dir string, port int, delay time.Duration) string {
	// erratic drops every other query unless told otherwise.
	slow := "        drop 0\n"
	if delay > 0 {
		slow += "        delay 1 " + delay.String() + "\n"
	}
	return fmt.Sprintf(`%[6]s:%[2]d {
    bind %[3]s
    erratic {
%[7]s    }
}
%[1]s:%[2]d {
    bind %[3]s
    file %[4]s %[1]s
}
%[5]s:%[2]d {
    bind %[3]s
    template IN A %[5]s {
        answer "{{ .Name }} 3600 IN A 10.255.0.1"
    }
}
`, hitZone, port, upstreamAddr, filepath.Join(dir, "bench.test.zone"), missZone, slowZone, slow)
}

// launch is how to start one target: binary, arguments, environment.
type launch struct {
	path string
	args []string
	env  []string
	// metrics is the target's Prometheus endpoint (Go servers only), read for the Go runtime's
	// allocation counter.
	metrics string
}

// targetSpec knows where a target's binary is and how to configure it.
type targetSpec struct {
	name string
	// defaultEntries is the cache capacity, in entries, config's cacheSize 0 gives; 0 when the
	// capacity is in bytes (unbound). It lets the memory a larger capacity costs before any
	// entry is stored (dnsmasq allocates its whole cache at start) be counted per entry.
	defaultEntries int
	// find returns the binary's path, or an error saying plainly what is missing.
	find func(opts *options) (string, error)
	// config writes the target's config under dir and returns how to start it listening on
	// listen and forwarding to up, with room for cacheSize names; 0 means the size it is
	// deployed with (podns's default, NodeLocal's 9984, dnsmasq 10000, unbound's defaults).
	config func(bin, dir string, listen, up netip.AddrPort, cacheSize int) (launch, error)
	// phases are the only phases (of allPhases) the target runs, whatever -phases adds; nil
	// means every phase. A target none of whose phases -phases selects is not started.
	phases []string
	// reference marks a yardstick built by the benchmark from this tree (source), not a peer:
	// it is a column with its podns/<name> ratio but never a "best peer", and it reports no
	// footprint metric (RSS, bytes per entry, binary size), since those would only say how
	// small a server without a cache is. Its version is the source it was built from.
	reference bool
	source    string // a reference's: the package and flags it runs, for the report's versions
}

// runs reports whether the target runs phase ph when -phases selects it.
func (s targetSpec) runs(ph string) bool { return s.phases == nil || slices.Contains(s.phases, ph) }

// footprintMetrics are the metrics of a target's memory and size, which a reference does not
// report.
var footprintMetrics = []string{mRSSIdle, mRSSIdleSized, mRSSHit, mRSS100k, mBytesPerEntry, mBytesFill, mBytesPrealloc, mBinary, mImage}

// reports reports whether the target has a row value for metric key at all.
func (s targetSpec) reports(key string) bool {
	return !s.reference || !slices.Contains(footprintMetrics, key)
}

// cleanEnv is the environment every server gets: nothing from the caller's (no GOMAXPROCS,
// GOGC, GOMEMLIMIT or PODNS_* leaking in).
func cleanEnv(extra ...string) []string {
	return append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, extra...)
}

func lookBin(name string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

var specs = map[string]targetSpec{
	"podns": {
		name:           "podns",
		defaultEntries: 10000, // PODNS_CACHE_SIZE's default
		find: func(o *options) (string, error) {
			if _, err := os.Stat(o.stub); err != nil {
				return "", fmt.Errorf("%s missing: run make build", o.stub)
			}
			return o.stub, nil
		},
		config: func(bin, dir string, listen, up netip.AddrPort, cacheSize int) (launch, error) {
			// The HTTP endpoint stays on, as in a pod (its probes need /readyz), so the idle RSS
			// is the deployed one.
			hp, err := freePort(listen.Addr())
			if err != nil {
				return launch{}, err
			}
			env := cleanEnv(
				"PODNS_LISTEN="+listen.String(),
				"PODNS_UPSTREAMS="+up.String(),
				"PODNS_HTTP_LISTEN="+netip.AddrPortFrom(listen.Addr(), uint16(hp)).String(),
				"PODNS_LOG_LEVEL=warn",
				"PODNS_STATE_DIR="+dir,
			)
			if cacheSize > 0 {
				env = append(env, "PODNS_CACHE_SIZE="+strconv.Itoa(cacheSize))
			}
			return launch{path: bin, env: env, metrics: "http://" + netip.AddrPortFrom(listen.Addr(), uint16(hp)).String() + "/metrics"}, nil
		},
	},
	"coredns": {
		name:           "coredns",
		defaultEntries: 9984,
		find: func(o *options) (string, error) {
			p, err := lookBin("coredns", ".tools/bin")
			if err != nil {
				return "", fmt.Errorf("coredns not found: run make tools")
			}
			return p, nil
		},
		// NodeLocal DNSCache's Corefile (k8s node-cache) for one zone, with the success
		// capacity raised from 9984 so that the 100,000-name run measures bytes per entry and
		// not eviction. Its prometheus plugin stays: it is on the hit path in production.
		config: func(bin, dir string, listen, up netip.AddrPort, cacheSize int) (launch, error) {
			mp, err := freePort(listen.Addr())
			if err != nil {
				return launch{}, err
			}
			if cacheSize == 0 {
				cacheSize = 9984
			}
			cf := fmt.Sprintf(`.:%d {
    bind %s
    errors
    cache {
        success %d 30
        denial 9984 5
    }
    forward . %s {
        force_tcp
    }
    prometheus %s:%d
}
`, listen.Port(), listen.Addr(), cacheSize, up, listen.Addr(), mp)
			path := filepath.Join(dir, "Corefile")
			if err := os.WriteFile(path, []byte(cf), 0o644); err != nil {
				return launch{}, err
			}
			return launch{path: bin, args: []string{"-conf", path, "-quiet"}, env: cleanEnv(),
				metrics: "http://" + netip.AddrPortFrom(listen.Addr(), uint16(mp)).String() + "/metrics"}, nil
		},
	},
	"dnsmasq": {
		name:           "dnsmasq",
		defaultEntries: 10000,
		find: func(*options) (string, error) {
			p, err := lookBin("dnsmasq", "/usr/sbin")
			if err != nil {
				return "", fmt.Errorf("dnsmasq not found: apt-get install --no-install-recommends dnsmasq-base")
			}
			return p, nil
		},
		// dnsmasq forwards over UDP only (it has no force-TCP option).
		config: func(bin, dir string, listen, up netip.AddrPort, cacheSize int) (launch, error) {
			if cacheSize == 0 {
				cacheSize = 10000 // Debian's default is 150; 10000 is what a cache is given
			}
			return launch{path: bin, env: cleanEnv(), args: []string{
				"--keep-in-foreground",
				"--conf-file=/dev/null",
				"--no-resolv", "--no-hosts", "--no-poll",
				"--bind-interfaces",
				"--listen-address=" + listen.Addr().String(),
				"--port=" + strconv.Itoa(int(listen.Port())),
				"--server=" + up.Addr().String() + "#" + strconv.Itoa(int(up.Port())),
				"--cache-size=" + strconv.Itoa(cacheSize),
				// The default 150 concurrent forwards would drop most of the miss run.
				"--dns-forward-max=1000",
				"--pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
				"--user=root",
			}}, nil
		},
	},
	relayTarget:    relaySpec(relayTarget, "tcp"),
	relayUDPTarget: relaySpec(relayUDPTarget, "udp"),
	"unbound": {
		name: "unbound",
		find: func(*options) (string, error) {
			p, err := lookBin("unbound", "/usr/sbin")
			if err != nil {
				return "", fmt.Errorf("unbound not found: apt-get install --no-install-recommends unbound")
			}
			return p, nil
		},
		config: func(bin, dir string, listen, up netip.AddrPort, cacheSize int) (launch, error) {
			// Cache sizes are in bytes, not entries: 256 MiB each is far above 100,000 names.
			sizes := "    msg-cache-size: 256m\n    rrset-cache-size: 256m\n"
			if cacheSize == 0 {
				sizes = "" // unbound's defaults (4m each)
			}
			conf := fmt.Sprintf(`server:
    interface: %[1]s@%[2]d
    port: %[2]d
    do-ip6: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "%[3]s"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
%[6]s    tcp-upstream: yes
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    prefetch: no
    # unbound answers the special-use TLD test. (RFC 6761) itself with NXDOMAIN by default.
    local-zone: "test." nodefault
remote-control:
    control-enable: no
forward-zone:
    name: "."
    forward-addr: %[4]s@%[5]d
`, listen.Addr(), listen.Port(), dir, up.Addr(), up.Port(), sizes)
			path := filepath.Join(dir, "unbound.conf")
			if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
				return launch{}, err
			}
			return launch{path: bin, args: []string{"-d", "-c", path}, env: cleanEnv()}, nil
		},
	},
}

// relaySpec is the spec of the relay forwarding over proto (tcp or udp), run as target name.
func relaySpec(name, proto string) targetSpec {
	return targetSpec{
		name: name,
		// It has no cache: the hit runs and the memory runs would measure nothing it is the
		// floor of; the miss latency and CPU runs are what it is the floor of.
		phases:    []string{phMissRate, phMissConc},
		reference: true,
		source:    "e2e/bench/relay -upstream-proto " + proto,
		find: func(o *options) (string, error) {
			// Built next to the stub binary, from this module: no other tool is needed. One
			// binary per target, so that building one never touches the other's while it runs.
			out, err := filepath.Abs(filepath.Join(filepath.Dir(o.stub), "bench-"+name))
			if err != nil {
				return "", err
			}
			if st, err := os.Stat(filepath.Dir(out)); err != nil || !st.IsDir() {
				return "", fmt.Errorf("the relay is built next to -stub, in %s: not a directory", filepath.Dir(out))
			}
			cmd := exec.Command("go", "build", "-o", out, "./e2e/bench/relay")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if b, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("building the relay: %v\n%s", err, b)
			}
			return out, nil
		},
		config: func(bin, dir string, listen, up netip.AddrPort, cacheSize int) (launch, error) {
			return launch{path: bin, env: cleanEnv(), args: []string{"-listen", listen.String(), "-upstream", up.String(), "-upstream-proto", proto}}, nil
		},
	}
}
