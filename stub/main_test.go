package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/rs/zerolog"

	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/stub/config"
	"github.com/podns/podns/stub/memlimit"
	"github.com/podns/podns/stub/server"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer = dnstest.LogBuffer

func TestHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-help"}, map[string]string{}, &out, io.Discard); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, v := range []string{"PODNS_LISTEN", "127.0.0.1:53", "PODNS_UPSTREAMS", "PODNS_STATE_DIR", "/run/podns", "PODNS_HTTP_LISTEN",
		"PODNS_LOG_LEVEL", "PODNS_LOG_FORMAT", "PODNS_UPSTREAM_PROTOCOL", "PODNS_UPSTREAM_TIMEOUT", "PODNS_CACHE_SIZE",
		"PODNS_CACHE_MAX_TTL", "PODNS_CACHE_NEG_MAX_TTL", "PODNS_CACHE_MIN_TTL", "PODNS_SHUTDOWN_GRACE"} {
		if !strings.Contains(out.String(), v) {
			t.Errorf("-help lacks %s", v)
		}
	}
}

func TestBadConfigExits2NamingEveryVariable(t *testing.T) {
	var errOut bytes.Buffer
	code := run(context.Background(), nil, map[string]string{"PODNS_CACHE_SIZE": "lots", "PODNS_UPSTREAM_TIMEOUT": "0s"}, io.Discard, &errOut)
	if code != exitConfig {
		t.Fatalf("exit %d, want %d", code, exitConfig)
	}
	for _, want := range []string{`PODNS_CACHE_SIZE="lots"`, "0 to 10000000", `PODNS_UPSTREAM_TIMEOUT="0s"`, "100ms to 30s"} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
}

// TestLoopRefused: an upstream that a packet from the stub would deliver to its own listener
// stops the stub with exit 2 before it binds anything. A regression starts the stub instead;
// the deadline then ends run with exit 0, and the test fails rather than hangs.
func TestLoopRefused(t *testing.T) {
	port := netip.MustParseAddrPort(dnstest.FreeAddr(t)).Port()
	p := strconv.Itoa(int(port))
	for _, tt := range []struct {
		name string
		conf string // upstream.conf; "" = none
		env  map[string]string
		want string
	}{
		{name: "loopback in upstream.conf", conf: "nameserver 127.0.0.1\n",
			want: "upstream 127.0.0.1:53 (from %s) reaches the stub's own listen address 127.0.0.1:53"},
		{name: "0.0.0.0 in upstream.conf", conf: "nameserver 0.0.0.0\n",
			want: "upstream 0.0.0.0:53 (from %s) reaches the stub's own listen address 127.0.0.1:53"},
		{name: ":: in upstream.conf with a [::1] listener", conf: "nameserver ::\n", env: map[string]string{"PODNS_LISTEN": "[::1]:53"},
			want: "upstream [::]:53 (from %s) reaches the stub's own listen address [::1]:53"},
		{name: "PODNS_UPSTREAMS=0.0.0.0 on the listen port", env: map[string]string{"PODNS_UPSTREAMS": "0.0.0.0:" + p, "PODNS_LISTEN": "127.0.0.1:" + p},
			want: "upstream 0.0.0.0:" + p + " (from PODNS_UPSTREAMS) reaches the stub's own listen address 127.0.0.1:" + p},
		{name: "PODNS_UPSTREAMS=:: on the listen port", env: map[string]string{"PODNS_UPSTREAMS": "[::]:" + p, "PODNS_LISTEN": "[::1]:" + p},
			want: "upstream [::]:" + p + " (from PODNS_UPSTREAMS) reaches the stub's own listen address [::1]:" + p},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{"PODNS_STATE_DIR": dir, "PODNS_HTTP_LISTEN": "off", "PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT": "0s"}
			for k, v := range tt.env {
				env[k] = v
			}
			conf := filepath.Join(dir, "upstream.conf")
			if tt.conf != "" {
				if err := os.WriteFile(conf, []byte(tt.conf), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want := "refusing to start: " + tt.want + "; forwarding to it would loop"
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, conf)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var errOut syncBuffer
			code := run(ctx, nil, env, io.Discard, &errOut)
			if code != exitConfig || !strings.Contains(errOut.String(), want) {
				t.Fatalf("exit %d, want %d with %q; log:\n%s", code, exitConfig, want, errOut.String())
			}
		})
	}
}

// upstreamServer is a loopback DNS server answering every A query with 10.1.2.3.
func upstreamServer(t *testing.T) string {
	t.Helper()
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if r.Question[0].Qtype == dns.TypeA {
			rr, _ := dns.NewRR(r.Question[0].Name + " 60 IN A 10.1.2.3")
			m.Answer = []dns.RR{rr}
		}
		_ = w.WriteMsg(m)
	})
	return dnstest.Serve(t, h, dnstest.TCPOnly())
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func waitReady(t *testing.T, url string, exited <-chan int) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case code := <-exited:
			t.Fatalf("stub exited %d before ready", code)
		default:
		}
		if code, body, err := httpGet(url); err == nil && code == http.StatusOK {
			return body
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("not ready within 10s")
	return ""
}

// scrape reads the value of each series (name with labels, as exposed) from the stub's /metrics;
// a series not exposed yet counts as 0.
func scrape(t *testing.T, httpAddr string, series []string) []float64 {
	t.Helper()
	_, metrics, err := httpGet("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float64, len(series))
	for _, line := range strings.Split(metrics, "\n") {
		for i, s := range series {
			if v, ok := strings.CutPrefix(line, s+" "); ok {
				if out[i], err = strconv.ParseFloat(v, 64); err != nil {
					t.Fatalf("%s: %v", line, err)
				}
			}
		}
	}
	return out
}

// stubProc is a stub run in-process by startStub.
type stubProc struct {
	env       map[string]string // its environment: a subcommand run with it is "in the same container"
	dns, http string            // PODNS_LISTEN, PODNS_HTTP_LISTEN
	logs      *syncBuffer
}

// startStub runs the stub in-process with env over these defaults: DNS and HTTP on free
// loopback ports, a state dir of its own. It returns once /readyz is 200;
// the test's cleanup stops it (SIGTERM) and checks that it exits 0. The startup
// probe runs as by default (PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT).
func startStub(t *testing.T, env map[string]string) *stubProc {
	t.Helper()
	s := &stubProc{env: map[string]string{
		"PODNS_LISTEN": dnstest.FreeAddr(t), "PODNS_HTTP_LISTEN": dnstest.FreeAddr(t), "PODNS_STATE_DIR": t.TempDir(),
	}, logs: &syncBuffer{}}
	for k, v := range env {
		s.env[k] = v
	}
	s.dns, s.http = s.env["PODNS_LISTEN"], s.env["PODNS_HTTP_LISTEN"]
	ctx, sigterm := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, nil, s.env, io.Discard, s.logs) }()
	t.Cleanup(func() {
		sigterm()
		select {
		case code := <-exited:
			if code != exitOK {
				t.Errorf("stub exited %d; log:\n%s", code, s.logs.String())
			}
		case <-time.After(10 * time.Second):
			t.Error("stub did not exit 10s after SIGTERM")
		}
	})
	waitReady(t, "http://"+s.http+"/readyz", exited)
	return s
}

// sub runs a subcommand with the stub's environment and returns its exit code and output.
func (s *stubProc) sub(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, s.env, &out, &errOut)
	return code, out.String(), errOut.String()
}

// query asks the stub for name over UDP.
func (s *stubProc) query(t *testing.T, name string, qtype uint16) *dns.Msg {
	t.Helper()
	return dnstest.Exchange(t, "udp", s.dns, dnstest.Msg(name, qtype))
}

func TestServesThenDrainsOnSIGTERM(t *testing.T) {
	up := upstreamServer(t)
	dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
	ctx, sigterm := context.WithCancel(context.Background())
	defer sigterm()
	var logs syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, nil, map[string]string{
			"PODNS_LISTEN": dnsAddr, "PODNS_UPSTREAMS": up, "PODNS_HTTP_LISTEN": httpAddr,
			"PODNS_SHUTDOWN_GRACE": "300ms",
		}, io.Discard, &logs)
	}()
	waitReady(t, "http://"+httpAddr+"/readyz", exited)
	if !strings.Contains(logs.String(), `"upstreams":["`+up+`"]`) {
		t.Errorf("start line lacks the upstreams:\n%s", logs.String())
	}
	// The collectors are process-wide and other tests of this package run the stub in-process
	// too: compare what these two queries add, not absolute values.
	series := []string{"podns_cache_hits_total", `podns_requests_total{proto="udp",type="A"}`, `podns_responses_total{rcode="NOERROR"}`}
	before := scrape(t, httpAddr, series)
	c := &dns.Client{Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("svc.example.", dns.TypeA)
	for i := range 2 {
		r, _, err := c.Exchange(m, dnsAddr)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("query %d: %v %v", i, r, err)
		}
	}
	after := scrape(t, httpAddr, series)
	for i, want := range []float64{1, 2, 2} {
		if got := after[i] - before[i]; got != want {
			t.Errorf("%s rose by %v, want %v", series[i], got, want)
		}
	}

	sigterm()
	// During the grace period: not ready, but still answering.
	deadline := time.Now().Add(2 * time.Second)
	for {
		code, _, _ := httpGet("http://" + httpAddr + "/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d after SIGTERM", code)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r, _, err := c.Exchange(m, dnsAddr); err != nil || len(r.Answer) != 1 {
		t.Fatalf("not answering during the grace period: %v %v", r, err)
	}
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not exit after SIGTERM")
	}
	if _, _, err := c.Exchange(m, dnsAddr); err == nil {
		t.Error("still answering after exit")
	}
}

func TestDisabledMarkerServesProbesOnly(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "disabled"), []byte("hostNetwork pod: PODNS_POD_IP equals PODNS_HOST_IP\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
	ctx, sigterm := context.WithCancel(context.Background())
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, nil, map[string]string{"PODNS_STATE_DIR": dir, "PODNS_LISTEN": dnsAddr, "PODNS_HTTP_LISTEN": httpAddr}, io.Discard, io.Discard)
	}()
	body := waitReady(t, "http://"+httpAddr+"/readyz", exited)
	if !strings.Contains(body, "disabled: hostNetwork pod") {
		t.Errorf("/readyz body %q", body)
	}
	if code, _, _ := httpGet("http://" + httpAddr + "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	// The DNS port must be free: binding it ourselves proves the stub did not.
	for _, proto := range []string{"udp", "tcp"} {
		var err error
		if proto == "udp" {
			var c net.PacketConn
			c, err = net.ListenPacket("udp", dnsAddr)
			if err == nil {
				c.Close()
			}
		} else {
			var l net.Listener
			l, err = net.Listen("tcp", dnsAddr)
			if err == nil {
				l.Close()
			}
		}
		if err != nil {
			t.Errorf("%s %s taken while disabled: %v", proto, dnsAddr, err)
		}
	}
	sigterm()
	if code := <-exited; code != exitOK {
		t.Fatalf("exit %d", code)
	}
}

func TestPortInUseExits1(t *testing.T) {
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var logs syncBuffer
	code := run(context.Background(), nil, map[string]string{
		"PODNS_LISTEN": l.LocalAddr().String(), "PODNS_UPSTREAMS": "127.0.0.1:1", "PODNS_HTTP_LISTEN": "off",
	}, io.Discard, &logs)
	if code != exitFail || !strings.Contains(logs.String(), "address already in use") {
		t.Fatalf("exit %d, log %s", code, logs.String())
	}
}

func TestStartupProbeMakesFirstLookupAvoidDeadUpstream(t *testing.T) {
	// dead accepts TCP connections and never answers: a dead nameserver as the stub sees it
	// behind a DNAT to a backend that is gone.
	dead, good := dnstest.Serve(t, dnstest.Silent, dnstest.TCPOnly()), upstreamServer(t)
	dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
	ctx, sigterm := context.WithCancel(context.Background())
	defer sigterm()
	var logs syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, nil, map[string]string{
			"PODNS_LISTEN": dnsAddr, "PODNS_UPSTREAMS": dead + "," + good, "PODNS_HTTP_LISTEN": httpAddr,
			"PODNS_UPSTREAM_TIMEOUT": "2s", "PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT": "300ms",
		}, io.Discard, &logs)
	}()
	waitReady(t, "http://"+httpAddr+"/readyz", exited)
	if !strings.Contains(logs.String(), `"upstream":"`+dead+`","up":false`) {
		t.Errorf("no startup probe line marking %s down:\n%s", dead, logs.String())
	}
	c := &dns.Client{Timeout: 3 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion("first.example.", dns.TypeA)
	start := time.Now()
	r, _, err := c.Exchange(m, dnsAddr)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("first lookup: %v %v", r, err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("first lookup took %v: it waited on the dead upstream (timeout 2s)", took)
	}
	sigterm()
	<-exited
}

// TestSearchPathFromThePodsResolvConf: the search-path prefetch gets the search list and ndots
// the pod's resolver uses, from PODNS_RESOLV_CONF, as the startup log's effective configuration
// shows: the ndots:3 initc wrote over the saved ndots:1, or the only file of a pod without initc.
func TestSearchPathFromThePodsResolvConf(t *testing.T) {
	const kubelet = "nameserver 10.96.0.10\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:1\n"
	// What initc writes over kubelet with PODNS_OPTIONS="ndots:3 timeout:1 attempts:3".
	const rewritten = "# podns: nameserver is the pod-local DNS cache; the kubelet's original is /run/podns/upstream.conf\n" +
		"nameserver 127.0.0.1\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:3 timeout:1 attempts:3\n"
	const restricted = "nameserver 127.0.0.1\nsearch ns.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:3\n"
	for _, tt := range []struct {
		name        string
		saved, live string // "" = no file
	}{
		{"initc's rewrite over the saved original", kubelet, rewritten},
		{"no initc: the pod's dnsConfig only", "", restricted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := upstreamServer(t)
			dir := t.TempDir()
			live := filepath.Join(dir, "resolv.conf")
			for path, content := range map[string]string{filepath.Join(dir, "upstream.conf"): tt.saved, live: tt.live} {
				if content == "" {
					continue
				}
				if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
			ctx, sigterm := context.WithCancel(context.Background())
			defer sigterm()
			var logs syncBuffer
			exited := make(chan int, 1)
			go func() {
				exited <- run(ctx, nil, map[string]string{
					"PODNS_STATE_DIR": dir, "PODNS_RESOLV_CONF": live, "PODNS_UPSTREAMS": up,
					"PODNS_LISTEN": dnsAddr, "PODNS_HTTP_LISTEN": httpAddr, "PODNS_UPSTREAM_STARTUP_PROBE_TIMEOUT": "0s",
				}, io.Discard, &logs)
			}()
			waitReady(t, "http://"+httpAddr+"/readyz", exited)
			for _, want := range []string{`"search_prefetch":["ns.svc.cluster.local","svc.cluster.local","cluster.local"]`, `"ndots":3,`, `"upstreams":["` + up + `"]`} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("startup log lacks %s:\n%s", want, logs.String())
				}
			}
			sigterm()
			if code := <-exited; code != exitOK {
				t.Fatalf("exit %d", code)
			}
		})
	}
}

// TestWaitReadyHook: `stub -wait-ready`, the container's postStart hook, returns 0 only once the
// running stub is ready, and fails when nothing becomes ready within its limit.
func TestWaitReadyHook(t *testing.T) {
	up := upstreamServer(t)
	dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
	_, port, _ := net.SplitHostPort(httpAddr)
	// The hook reads the same environment; an unspecified host means loopback.
	hookEnv := map[string]string{"PODNS_HTTP_LISTEN": ":" + port}
	hook := make(chan int, 1)
	var hookErr syncBuffer
	go func() { hook <- run(context.Background(), []string{"-wait-ready"}, hookEnv, io.Discard, &hookErr) }()
	select {
	case code := <-hook:
		t.Fatalf("the hook returned %d before any stub ran: %s", code, hookErr.String())
	case <-time.After(200 * time.Millisecond):
	}
	ctx, sigterm := context.WithCancel(context.Background())
	defer sigterm()
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, nil, map[string]string{"PODNS_LISTEN": dnsAddr, "PODNS_UPSTREAMS": up, "PODNS_HTTP_LISTEN": httpAddr}, io.Discard, io.Discard)
	}()
	select {
	case code := <-hook:
		if code != exitOK {
			t.Fatalf("hook exit %d: %s", code, hookErr.String())
		}
	case code := <-exited:
		t.Fatalf("the stub exited %d", code)
	case <-time.After(20 * time.Second):
		t.Fatal("the hook did not return once the stub was ready")
	}
	// It returned because /readyz said 200, not early.
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz after the hook: %v %v", resp, err)
	}
	resp.Body.Close()
	sigterm()
	<-exited

	t.Run("nothing ready: fails after the limit", func(t *testing.T) {
		defer func(d time.Duration) { waitReadyLimit = d }(waitReadyLimit)
		waitReadyLimit = 300 * time.Millisecond
		var errOut bytes.Buffer
		if code := run(context.Background(), []string{"-wait-ready"}, map[string]string{"PODNS_HTTP_LISTEN": dnstest.FreeAddr(t)}, io.Discard, &errOut); code != exitFail ||
			!strings.Contains(errOut.String(), "not ready after 3") || !strings.Contains(errOut.String(), "connection refused") {
			t.Fatalf("exit %d, stderr %q; want the limit and the last real answer (refused), not the cut-short attempt", code, errOut.String())
		}
	})
	t.Run("a 503 keeps its reason in the message", func(t *testing.T) {
		defer func(d time.Duration) { waitReadyLimit = d }(waitReadyLimit)
		waitReadyLimit = 300 * time.Millisecond
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "not ready: probing upstreams", http.StatusServiceUnavailable)
		}))
		defer srv.Close()
		var errOut bytes.Buffer
		if code := run(context.Background(), []string{"-wait-ready"}, map[string]string{"PODNS_HTTP_LISTEN": srv.Listener.Addr().String()}, io.Discard, &errOut); code != exitFail ||
			!strings.Contains(errOut.String(), "503 Service Unavailable: not ready: probing upstreams") {
			t.Fatalf("exit %d, stderr %q", code, errOut.String())
		}
	})
	t.Run("HTTP off: a configuration error", func(t *testing.T) {
		if code := run(context.Background(), []string{"-wait-ready"}, map[string]string{"PODNS_HTTP_LISTEN": "off"}, io.Discard, io.Discard); code != exitConfig {
			t.Fatalf("exit %d, want %d", code, exitConfig)
		}
	})
}

func TestReadyURL(t *testing.T) {
	for in, want := range map[string]string{
		":9253": "http://127.0.0.1:9253/readyz", "0.0.0.0:9253": "http://127.0.0.1:9253/readyz",
		"[::]:9253": "http://[::1]:9253/readyz", "10.1.2.3:80": "http://10.1.2.3:80/readyz", "[fd00::1]:9253": "http://[fd00::1]:9253/readyz",
	} {
		if got, err := readyURL(in); err != nil || got != want {
			t.Errorf("readyURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Every duration field of the stub's logs is seconds as a float, as the query log's duration is
// (zerolog's Dur would print milliseconds): a new-user trial read upstream_timeout 2000 as 2000 s.
func TestStartupLogDurationsInSeconds(t *testing.T) {
	cfg, err := config.Load(map[string]string{"PODNS_UPSTREAM_TIMEOUT": "1500ms", "PODNS_SHUTDOWN_GRACE": "3s"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	lg := zerolog.New(&buf)
	startupLog(lg.Info(), cfg, nil, "env", server.Config{}, memlimit.Plan{}).Send()
	for _, want := range []string{`"upstream_timeout":1.5,`, `"shutdown_grace":3`} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("startup line %s: want %s", buf.String(), want)
		}
	}
}
