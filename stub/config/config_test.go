package config

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	initcconfig "github.com/podns/podns/initc/config"
	"github.com/podns/podns/initc/rewrite"
	"github.com/podns/podns/internal/resolvconf"
	"github.com/podns/podns/internal/statedir"
	"github.com/podns/podns/stub/querylog"
)

func TestLoadDefaults(t *testing.T) {
	c, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ListenAddrs(); len(got) != 1 || got[0] != netip.MustParseAddrPort("127.0.0.1:53") {
		t.Errorf("listen %v", got)
	}
	if c.StateDir != "/run/podns" || c.HTTPListen != ":9253" || c.UpstreamProtocol != "tcp" ||
		c.UpstreamTimeout != 2*time.Second || c.CacheSize != 10000 || c.ShutdownGrace != 0 {
		t.Errorf("defaults: %+v", c)
	}
}

func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load(map[string]string{
		"PODNS_LISTEN":            "127.0.0.1:53,localhost:53",
		"PODNS_UPSTREAMS":         "10.96.0.10,kube-dns",
		"PODNS_HTTP_LISTEN":       "9253",
		"PODNS_UPSTREAM_PROTOCOL": "quic",
		"PODNS_UPSTREAM_TIMEOUT":  "1h",
		"PODNS_CACHE_SIZE":        "-1",
		"PODNS_LOG_LEVEL":         "loud",
		"PODNS_CACHE_MIN_TTL":     "10m",
		"PODNS_CACHE_MAX_TTL":     "1m",
		"PODNS_SERVE_STALE":       "forever",
	})
	if err == nil {
		t.Fatal("want an error")
	}
	want := []string{
		`PODNS_LOG_LEVEL="loud": out of range (allowed: one of trace, debug, info, warn, error)`,
		`PODNS_UPSTREAM_PROTOCOL="quic": out of range (allowed: one of tcp, udp)`,
		`PODNS_UPSTREAM_TIMEOUT="1h": out of range (allowed: 100ms to 30s)`,
		`PODNS_CACHE_SIZE="-1": out of range (allowed: 0 to 10000000)`,
		`PODNS_LISTEN="127.0.0.1:53,localhost:53": "localhost:53" is not ip:port`,
		`PODNS_UPSTREAMS="10.96.0.10,kube-dns": "kube-dns" is not an IP address`,
		`PODNS_HTTP_LISTEN="9253": not [ip]:port (allowed: [ip]:port or off)`,
		`PODNS_SERVE_STALE="forever": not off or a duration (allowed: off or 1s to 168h)`,
		`PODNS_CACHE_MIN_TTL=10m0s is above PODNS_CACHE_MAX_TTL=1m0s`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d = %q, want it to contain %q", i, lines[i], w)
		}
	}
}

func TestParseUpstream(t *testing.T) {
	for in, want := range map[string]string{
		"10.96.0.10":      "10.96.0.10:53",
		"10.96.0.10:5353": "10.96.0.10:5353",
		"fd00::10":        "[fd00::10]:53",
		"[fd00::10]:5353": "[fd00::10]:5353",
		" 10.0.0.1 ":      "10.0.0.1:53",
		// IPv6 (issue 12 item 7): brackets without a port, zones, and a bare address that ends
		// in something port-like, which is all address.
		"[fd00:10:96::a]":     "[fd00:10:96::a]:53",
		"[fd00:10:96::a]:53":  "[fd00:10:96::a]:53",
		"fd00:10:96::a:5353":  "[fd00:10:96::a:5353]:53",
		"fe80::1%eth0":        "[fe80::1%eth0]:53",
		"[fe80::1%eth0]":      "[fe80::1%eth0]:53",
		"[fe80::1%eth0]:5353": "[fe80::1%eth0]:5353",
		"[::ffff:10.0.0.1]":   "[::ffff:10.0.0.1]:53",
	} {
		got, err := ParseUpstream(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseUpstream(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "dns.example", "10.0.0.1:0", "10.0.0.1:99999", "fd00::10:53:x",
		"[10.0.0.1]", "[10.0.0.1]:53", "[fd00::10", "fd00::10]", "[fd00::10]:", "[fd00::10]:0", "[]", "[dns.example]"} {
		if _, err := ParseUpstream(bad); err == nil {
			t.Errorf("ParseUpstream(%q) accepted", bad)
		}
	}
}

func TestResolveUpstreams(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		conf     string // upstream.conf content; "" = no file
		want     string
		skipped  string
		wantErr  string
		fromFile bool
	}{
		{name: "from the saved resolv.conf", conf: "# kubelet\nnameserver 10.96.0.10\nsearch ns.svc.cluster.local\noptions ndots:5\n",
			want: "10.96.0.10:53", fromFile: true},
		{name: "several, IPv6", conf: "nameserver 10.96.0.10\nnameserver fd00::a\n", want: "10.96.0.10:53 [fd00::a]:53", fromFile: true},
		{name: "env wins over the file", env: map[string]string{"PODNS_UPSTREAMS": "10.0.0.2:5300"}, conf: "nameserver 10.96.0.10\n", want: "10.0.0.2:5300"},
		{name: "no file", wantErr: "PODNS_UPSTREAMS is unset and"},
		{name: "no nameserver", conf: "search x\n", wantErr: "has no nameserver"},
		{name: "loop via the file", conf: "nameserver 127.0.0.1\n", wantErr: "refusing to start: upstream 127.0.0.1:53"},
		{name: "loop via env", env: map[string]string{"PODNS_LISTEN": "127.0.0.1:5353", "PODNS_UPSTREAMS": "127.0.0.1:5353"}, wantErr: "would loop"},
		{name: "wildcard listener loops to loopback", env: map[string]string{"PODNS_LISTEN": "0.0.0.0:53", "PODNS_UPSTREAMS": "127.0.0.53"}, wantErr: "would loop"},
		{name: "unspecified via the file", conf: "nameserver 0.0.0.0\n", wantErr: "refusing to start: upstream 0.0.0.0:53"},
		{name: "unspecified IPv6 via the file", env: map[string]string{"PODNS_LISTEN": "[::1]:53"}, conf: "nameserver ::\n", wantErr: "refusing to start: upstream [::]:53"},
		{name: "unspecified via env", env: map[string]string{"PODNS_LISTEN": "127.0.0.1:5353", "PODNS_UPSTREAMS": "0.0.0.0:5353"}, wantErr: "would loop"},
		{name: "second upstream loops", env: map[string]string{"PODNS_UPSTREAMS": "10.96.0.10,::ffff:127.0.0.1"}, wantErr: "upstream [::ffff:127.0.0.1]:53"},
		{name: "a looping nameserver of the file is skipped when another remains", conf: "nameserver 0.0.0.0\nnameserver 10.96.0.10\n",
			want: "10.96.0.10:53", skipped: "0.0.0.0:53", fromFile: true},
		{name: "every looping nameserver of the file is skipped", conf: "nameserver 127.0.0.1\nnameserver 10.96.0.10\nnameserver ::\n",
			want: "10.96.0.10:53", skipped: "127.0.0.1:53 [::]:53", fromFile: true},
		{name: "other port is fine", env: map[string]string{"PODNS_LISTEN": "127.0.0.1:53", "PODNS_UPSTREAMS": "127.0.0.1:5353"}, want: "127.0.0.1:5353"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{"PODNS_STATE_DIR": dir}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.conf != "" {
				if err := os.WriteFile(statedir.UpstreamConfPath(dir), []byte(tt.conf), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(env)
			if err != nil {
				t.Fatal(err)
			}
			res, err := c.ResolveUpstreams()
			ups, source := res.Servers, res.Source
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, u := range ups {
				got = append(got, u.String())
			}
			if strings.Join(got, " ") != tt.want {
				t.Errorf("upstreams %v, want %s", got, tt.want)
			}
			var skipped []string
			for _, u := range res.Skipped {
				skipped = append(skipped, u.String())
			}
			if strings.Join(skipped, " ") != tt.skipped {
				t.Errorf("skipped %v, want %q", skipped, tt.skipped)
			}
			if tt.fromFile != (source == statedir.UpstreamConfPath(dir)) {
				t.Errorf("source %q", source)
			}
		})
	}
}

func TestDisabledMarker(t *testing.T) {
	dir := t.TempDir()
	c, err := Load(map[string]string{"PODNS_STATE_DIR": dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, off := c.Disabled(); off {
		t.Fatal("disabled without a marker")
	}
	if err := os.WriteFile(statedir.DisabledMarkerPath(dir), []byte("hostNetwork pod\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if why, off := c.Disabled(); !off || why != "hostNetwork pod" {
		t.Fatalf("Disabled() = %q, %v", why, off)
	}
}

func TestStaleWindowAndSearchPath(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(statedir.UpstreamConfPath(dir), []byte("nameserver 10.96.0.10\nsearch NS.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		env        map[string]string
		wantWindow time.Duration
		wantSearch int
	}{
		{map[string]string{}, time.Hour, 3},
		{map[string]string{"PODNS_SERVE_STALE": "off", "PODNS_SEARCH_PREFETCH": "off"}, 0, 0},
		{map[string]string{"PODNS_SERVE_STALE": "90s"}, 90 * time.Second, 3},
	} {
		tt.env["PODNS_STATE_DIR"] = dir
		// No live resolv.conf: the host's /etc/resolv.conf must not leak into the result.
		tt.env["PODNS_RESOLV_CONF"] = filepath.Join(dir, "missing")
		c, err := Load(tt.env)
		if err != nil {
			t.Fatal(err)
		}
		if c.StaleWindow() != tt.wantWindow {
			t.Errorf("%v: window %v", tt.env, c.StaleWindow())
		}
		search, ndots := c.SearchPath()
		if len(search) != tt.wantSearch || (tt.wantSearch > 0 && (search[0] != "ns.svc.cluster.local" || ndots != 5)) {
			t.Errorf("%v: search %v ndots %d", tt.env, search, ndots)
		}
	}
}

func TestTypedValues(t *testing.T) {
	c, err := Load(map[string]string{
		"PODNS_LISTEN": "127.0.0.1:53, [::1]:53", "PODNS_UPSTREAMS": "10.96.0.10,[fd00::a]:5353",
		"PODNS_HTTP_LISTEN": "off", "PODNS_COALESCE": "off", "PODNS_PREFETCH": "on", "PODNS_SERVE_STALE": "off",
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Listen.Strings(); strings.Join(got, " ") != "127.0.0.1:53 [::1]:53" {
		t.Errorf("listen %v", got)
	}
	if got := addrStrings(c.Upstreams); strings.Join(got, " ") != "10.96.0.10:53 [fd00::a]:5353" {
		t.Errorf("upstreams %v", got)
	}
	if !c.HTTPListen.Off() || bool(c.Coalesce) || !bool(c.Prefetch) || c.StaleWindow() != 0 || c.ServeStale.String() != "off" {
		t.Errorf("http off %v coalesce %v prefetch %v stale %v (%s)", c.HTTPListen.Off(), c.Coalesce, c.Prefetch, c.StaleWindow(), c.ServeStale)
	}
	if cc, ok := c.Cache(); !ok || !cc.Prefetch || cc.StaleWindow != 0 || cc.Size != 10000 {
		t.Errorf("cache config %+v, %v", cc, ok)
	}
	if _, ok := (&Config{CacheSize: 0}).Cache(); ok {
		t.Error("PODNS_CACHE_SIZE=0 did not turn the cache off")
	}
}

func TestLoops(t *testing.T) {
	// podIP stands for an address of a local interface other than loopback; the caller passes
	// what net.InterfaceAddrs says.
	const podIP = "10.244.1.7"
	local := map[netip.Addr]bool{netip.MustParseAddr(podIP): true, netip.MustParseAddr("fd00:10:244::7"): true,
		// net.InterfaceAddrs gives a link-local address without its zone.
		netip.MustParseAddr("fe80::7"): true}
	tests := []struct {
		upstream, listen string
		want             bool
	}{
		{"127.0.0.1:53", "127.0.0.1:53", true},
		{"[::1]:53", "[::1]:53", true},
		{"0.0.0.0:53", "127.0.0.1:53", true},
		{"0.0.0.0:5353", "127.0.0.1:5353", true},
		{"[::]:53", "[::1]:53", true},
		{"[::]:53", "127.0.0.1:53", true},
		{"0.0.0.0:53", "[::1]:53", true},
		{"0.0.0.0:53", "10.244.1.7:53", true},
		{"[::ffff:127.0.0.1]:53", "127.0.0.1:53", true},
		{"127.0.0.1:53", "[::ffff:127.0.0.1]:53", true},
		{"[::ffff:0.0.0.0]:53", "127.0.0.1:53", true},
		{"127.0.0.53:53", "0.0.0.0:53", true},
		{"[::1]:53", "0.0.0.0:53", true},
		{"127.0.0.1:53", "[::]:53", true},
		{podIP + ":53", "0.0.0.0:53", true},
		{podIP + ":53", "[::]:53", true},
		{"[fd00:10:244::7]:53", "[::]:53", true},
		{"0.0.0.0:53", "0.0.0.0:53", true},
		{"[fe80::1%eth0]:53", "[fe80::1]:53", true},
		{"[fe80::7%eth0]:53", "[::]:53", true}, // the pod's own link-local, zoned
		// Not a loop.
		{"0.0.0.0:53", "127.0.0.1:5353", false},
		{"127.0.0.1:5353", "127.0.0.1:53", false},
		{"127.0.0.1:53", "0.0.0.0:5353", false},
		{"127.0.0.2:53", "127.0.0.1:53", false},
		{podIP + ":53", "127.0.0.1:53", false},
		{"10.96.0.10:53", "0.0.0.0:53", false},
		{"[fd00::a]:53", "[::]:53", false},
		{"127.0.0.1:53", "[::1]:53", false},
		{"[fe80::1%eth0]:53", "[::]:53", false}, // the node's link-local: another host
	}
	for _, tt := range tests {
		u, l := netip.MustParseAddrPort(tt.upstream), netip.MustParseAddrPort(tt.listen)
		if got := loops(u, l, local); got != tt.want {
			t.Errorf("loops(upstream %s, listen %s) = %v, want %v", u, l, got, tt.want)
		}
	}
}

// TestLoopsAgreesWithLinux checks the kernel behaviour loops relies on by a real connect on
// loopback: a listener on listen, a TCP connect to upstream on the same port. Cases loops refuses
// as a policy (0.0.0.0 upstream with a [::1] listener: the kernel sends it to 127.0.0.1) are in
// TestLoops only.
func TestLoopsAgreesWithLinux(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("loops describes Linux")
	}
	for _, tt := range []struct {
		upstream, listen string
		v6               bool
	}{
		{"0.0.0.0", "127.0.0.1", false},
		{"::ffff:127.0.0.1", "127.0.0.1", false},
		{"::ffff:0.0.0.0", "127.0.0.1", false},
		{"127.0.0.2", "127.0.0.1", false},
		{"127.0.0.1", "127.0.0.2", false},
		{"::", "::1", true},
		{"::1", "::", true},
		{"127.0.0.2", "::", true},
	} {
		t.Run(tt.upstream+" to "+tt.listen, func(t *testing.T) {
			ln, err := net.Listen("tcp", net.JoinHostPort(tt.listen, "0"))
			if err != nil {
				if tt.v6 {
					t.Skipf("no IPv6 loopback: %v", err)
				}
				t.Fatal(err)
			}
			defer ln.Close()
			l := netip.MustParseAddrPort(ln.Addr().String())
			l = netip.AddrPortFrom(netip.MustParseAddr(tt.listen), l.Port())
			u := netip.AddrPortFrom(netip.MustParseAddr(tt.upstream), l.Port())
			conn, err := net.DialTimeout("tcp", u.String(), 2*time.Second)
			reached := err == nil
			if reached {
				conn.Close()
			} else if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Fatalf("connect %s: %v, want success or connection refused", u, err)
			}
			if got := loops(u, l, nil); got != reached {
				t.Errorf("loops(upstream %s, listen %s) = %v, but a connect reached the listener: %v", u, l, got, reached)
			}
		})
	}
}

// TestLoopViaInterfaceAddress: the host's own interface addresses (a pod IP) reach a wildcard
// listener; ResolveUpstreams learns them from net.InterfaceAddrs.
func TestLoopViaInterfaceAddress(t *testing.T) {
	var own netip.Addr
	for a := range interfaceAddrs() {
		if !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			own = a
			break
		}
	}
	if !own.IsValid() {
		t.Skip("no interface address besides loopback and link-local")
	}
	c, err := Load(map[string]string{"PODNS_STATE_DIR": t.TempDir(), "PODNS_LISTEN": "0.0.0.0:5353", "PODNS_UPSTREAMS": netip.AddrPortFrom(own, 5353).String()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ResolveUpstreams(); err == nil || !strings.Contains(err.Error(), "would loop") {
		t.Fatalf("upstream %s with listener 0.0.0.0:5353: err = %v, want the loop refusal", own, err)
	}
}

// kubeletConf is the kubelet's ClusterFirst resolv.conf, as initc saves it to upstream.conf.
const kubeletConf = "nameserver 10.96.0.10\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"

// initcRewrite is what initc writes over the pod's resolv.conf for original with PODNS_OPTIONS
// options: the same rewrite code, so the test follows initc's contract.
func initcRewrite(t *testing.T, original, options string) string {
	t.Helper()
	parsed, err := resolvconf.Parse([]byte(original))
	if err != nil {
		t.Fatal(err)
	}
	merge, err := initcconfig.ParseOptions(options)
	if err != nil {
		t.Fatal(err)
	}
	r, err := rewrite.Render([]byte(original), parsed, netip.MustParseAddr("127.0.0.1"), merge, "/run/podns/upstream.conf")
	if err != nil {
		t.Fatal(err)
	}
	return string(r.Content)
}

func TestSearchPathFromTheLiveResolvConf(t *testing.T) {
	withNdots2 := initcRewrite(t, kubeletConf, "ndots:2 timeout:1 attempts:3")
	if !strings.Contains(withNdots2, "ndots:2") {
		t.Fatalf("initc's rewrite lacks ndots:2:\n%s", withNdots2)
	}
	kubeSearch := "ns.svc.cluster.local svc.cluster.local cluster.local"
	tests := []struct {
		name        string
		live, saved string // "" = no file
		env         map[string]string
		wantSearch  string
		wantNdots   int
	}{
		{name: "initc's PODNS_OPTIONS=ndots:2 wins over the saved ndots:5", live: withNdots2, saved: kubeletConf,
			wantSearch: kubeSearch, wantNdots: 2},
		{name: "initc's default options keep the kubelet's ndots", live: initcRewrite(t, kubeletConf, "timeout:1 attempts:3"), saved: kubeletConf,
			wantSearch: kubeSearch, wantNdots: 5},
		{name: "no live file: the saved file's", saved: kubeletConf, wantSearch: kubeSearch, wantNdots: 5},
		{name: "no saved file (restricted mode): the live file's", live: "nameserver 127.0.0.1\nsearch app.svc.cluster.local svc.cluster.local\noptions ndots:3 timeout:1\n",
			wantSearch: "app.svc.cluster.local svc.cluster.local", wantNdots: 3},
		{name: "live file without ndots: the saved file's", live: "nameserver 127.0.0.1\nsearch other.example\noptions timeout:1\n", saved: kubeletConf,
			wantSearch: "other.example", wantNdots: 5},
		{name: "live file without search: the saved file's", live: "nameserver 127.0.0.1\noptions ndots:2\n", saved: kubeletConf,
			wantSearch: kubeSearch, wantNdots: 2},
		{name: "neither sets ndots: the resolver default", live: "nameserver 127.0.0.1\nsearch a.example\n",
			wantSearch: "a.example", wantNdots: resolvconf.DefaultNdots},
		{name: "no file at all", wantSearch: "", wantNdots: 0},
		{name: "prefetch off", live: withNdots2, saved: kubeletConf, env: map[string]string{"PODNS_SEARCH_PREFETCH": "off"}, wantSearch: "", wantNdots: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			live := filepath.Join(dir, "resolv.conf")
			env := map[string]string{"PODNS_STATE_DIR": dir, "PODNS_RESOLV_CONF": live}
			for k, v := range tt.env {
				env[k] = v
			}
			for path, content := range map[string]string{live: tt.live, statedir.UpstreamConfPath(dir): tt.saved} {
				if content == "" {
					continue
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c, err := Load(env)
			if err != nil {
				t.Fatal(err)
			}
			search, ndots := c.SearchPath()
			if strings.Join(search, " ") != tt.wantSearch || ndots != tt.wantNdots {
				t.Errorf("search %q ndots %d, want %q ndots %d", search, ndots, tt.wantSearch, tt.wantNdots)
			}
		})
	}
}

// TestUpstreamsNeverFromTheLiveResolvConf: the live file names the stub; without upstream.conf and
// PODNS_UPSTREAMS there is no upstream, and with PODNS_UPSTREAMS (the restricted mode) those
// are the upstreams while the live file still gives the search list.
func TestUpstreamsNeverFromTheLiveResolvConf(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(live, []byte("nameserver 10.0.0.53\nsearch app.svc.cluster.local\noptions ndots:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(map[string]string{"PODNS_STATE_DIR": dir, "PODNS_RESOLV_CONF": live})
	if err != nil {
		t.Fatal(err)
	}
	if ups, err := c.ResolveUpstreams(); err == nil || !strings.Contains(err.Error(), "no upstreams") {
		t.Fatalf("upstreams %v, err %v; want no upstreams", ups, err)
	}
	c, err = Load(map[string]string{"PODNS_STATE_DIR": dir, "PODNS_RESOLV_CONF": live, "PODNS_UPSTREAMS": "10.96.0.10"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.ResolveUpstreams()
	ups, source := res.Servers, res.Source
	if err != nil || len(ups) != 1 || ups[0].String() != "10.96.0.10:53" || source != "PODNS_UPSTREAMS" {
		t.Fatalf("upstreams %v from %s, err %v", ups, source, err)
	}
	if search, ndots := c.SearchPath(); strings.Join(search, " ") != "app.svc.cluster.local" || ndots != 2 {
		t.Errorf("search %q ndots %d", search, ndots)
	}
}

func TestResolvConfMustBeAbsolute(t *testing.T) {
	_, err := Load(map[string]string{"PODNS_RESOLV_CONF": "resolv.conf"})
	if err == nil || !strings.Contains(err.Error(), `PODNS_RESOLV_CONF="resolv.conf": not an absolute path`) {
		t.Fatalf("err = %v", err)
	}
}

func TestQueryLogVariables(t *testing.T) {
	c, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if qc := c.QueryLogConfig(zerolog.Nop()); qc.Mode != querylog.Off || qc.Rate != 100 {
		t.Errorf("defaults: mode %v rate %d, want off and 100", qc.Mode, qc.Rate)
	}
	c, err = Load(map[string]string{"PODNS_QUERY_LOG": "slow:250ms", "PODNS_QUERY_LOG_RATE": "5000"})
	if err != nil {
		t.Fatal(err)
	}
	if qc := c.QueryLogConfig(zerolog.Nop()); qc.Mode != querylog.Slow(250*time.Millisecond) || qc.Rate != 5000 {
		t.Errorf("mode %v rate %d, want slow:250ms and 5000", qc.Mode, qc.Rate)
	}
	_, err = Load(map[string]string{"PODNS_QUERY_LOG": "verbose", "PODNS_QUERY_LOG_RATE": "0"})
	want := []string{
		`PODNS_QUERY_LOG_RATE="0": out of range (allowed: 1 to 100000)`,
		`PODNS_QUERY_LOG="verbose": not a query log mode (allowed: off, errors, slow:<duration> (1ms to 1m, e.g. slow:100ms), all)`,
	}
	if err == nil || err.Error() != strings.Join(want, "\n") {
		t.Errorf("bad values: %v\nwant:\n%s", err, strings.Join(want, "\n"))
	}
	if _, err = Load(map[string]string{"PODNS_QUERY_LOG": "slow:0s"}); err == nil || !strings.Contains(err.Error(), "slow needs a duration above 0") {
		t.Errorf("slow:0s: %v", err)
	}
	// New-user trial findings: an overflowing rate said "not a whole number"; slow:1000000h was
	// accepted; " 50 " was refused where " errors " was taken (one rule now: spaces ignored).
	if _, err = Load(map[string]string{"PODNS_QUERY_LOG_RATE": "99999999999999999999"}); err == nil ||
		err.Error() != `PODNS_QUERY_LOG_RATE="99999999999999999999": out of range (allowed: 1 to 100000)` {
		t.Errorf("rate overflow: %v", err)
	}
	if _, err = Load(map[string]string{"PODNS_QUERY_LOG": "slow:1000000h"}); err == nil || !strings.Contains(err.Error(), "slow:1000000h out of range: 1ms to 1m") {
		t.Errorf("slow:1000000h: %v", err)
	}
	c, err = Load(map[string]string{"PODNS_QUERY_LOG": " errors ", "PODNS_QUERY_LOG_RATE": " 50 "})
	if err != nil {
		t.Fatal(err)
	}
	if qc := c.QueryLogConfig(zerolog.Nop()); qc.Mode != querylog.Errors || qc.Rate != 50 {
		t.Errorf("values with spaces: mode %v rate %d, want errors and 50", qc.Mode, qc.Rate)
	}
}

func TestReadyCheckName(t *testing.T) {
	for in, want := range map[string]string{
		"": "", "kubernetes.default.svc.cluster.local.": "kubernetes.default.svc.cluster.local.",
		"kubernetes.default.svc.cluster.local": "kubernetes.default.svc.cluster.local.",
	} {
		c, err := Load(map[string]string{"PODNS_READY_CHECK_NAME": in})
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got, ok := c.ReadyCheck(); got != want || ok != (want != "") {
			t.Errorf("%q: ReadyCheck() = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{".", "a..b", strings.Repeat("a", 64) + ".example."} {
		_, err := Load(map[string]string{"PODNS_READY_CHECK_NAME": bad})
		if err == nil || !strings.Contains(err.Error(), `PODNS_READY_CHECK_NAME="`+bad+`": not a domain name`) {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
}
