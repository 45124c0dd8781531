package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/internal/dnstest"
)

const checkName = "kubernetes.default.svc.cluster.local."

// checkUpstream is a loopback upstream that answers the health probe and hands every query for
// checkName to answer, announcing it on asked first.
type checkUpstream struct {
	addr  string
	asked chan uint16 // the qtype of each query for checkName, as it arrives
}

func startCheckUpstream(t *testing.T, answer func(q *dns.Msg) *dns.Msg) *checkUpstream {
	t.Helper()
	u := &checkUpstream{asked: make(chan uint16, 1000)}
	u.addr = dnstest.Serve(t, func(w dns.ResponseWriter, q *dns.Msg) {
		var r *dns.Msg
		if strings.EqualFold(q.Question[0].Name, checkName) {
			select {
			case u.asked <- q.Question[0].Qtype:
			default: // a test that stopped counting must not block the server's shutdown
			}
			r = answer(q)
		} else {
			r = new(dns.Msg)
			r.SetRcode(q, dns.RcodeNameError)
		}
		if r != nil {
			_ = w.WriteMsg(r)
		}
	}, dnstest.TCPOnly())
	return u
}

// waitAsked waits for the n-th query for checkName.
func (u *checkUpstream) waitAsked(t *testing.T, n int) {
	t.Helper()
	for i := range n {
		select {
		case <-u.asked:
		case <-time.After(10 * time.Second):
			t.Fatalf("query %d for %s never came", i+1, checkName)
		}
	}
}

func withAddress(q *dns.Msg, rr string) *dns.Msg {
	r := new(dns.Msg)
	r.SetReply(q)
	a, err := dns.NewRR(checkName + " 5 IN " + rr)
	if err != nil {
		panic(err)
	}
	r.Answer = append(r.Answer, a)
	return r
}

func rcode(q *dns.Msg, rc int) *dns.Msg {
	r := new(dns.Msg)
	r.SetRcode(q, rc)
	return r
}

// runCheckedStub runs the stub with PODNS_READY_CHECK_NAME=checkName and up as its only upstream,
// probing again after 50ms (then 100ms), each attempt bounded by timeout; it does not wait for
// ready. The test's cleanup stops it.
func runCheckedStub(t *testing.T, up, timeout string) (httpAddr string, logs *syncBuffer, exited <-chan int) {
	t.Helper()
	dnsAddr, httpAddr := dnstest.FreeAddr(t), dnstest.FreeAddr(t)
	ctx, sigterm := context.WithCancel(context.Background())
	done := make(chan int, 1)
	logs = &syncBuffer{}
	go func() {
		done <- run(ctx, nil, map[string]string{
			"PODNS_LISTEN": dnsAddr, "PODNS_HTTP_LISTEN": httpAddr, "PODNS_STATE_DIR": t.TempDir(), "PODNS_UPSTREAMS": up,
			"PODNS_READY_CHECK_NAME": checkName, "PODNS_UPSTREAM_TIMEOUT": timeout,
			"PODNS_UPSTREAM_PROBE_INTERVAL": "50ms", "PODNS_UPSTREAM_PROBE_MAX_INTERVAL": "100ms",
		}, io.Discard, logs)
	}()
	t.Cleanup(func() {
		sigterm()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("stub exited %d; log:\n%s", code, logs.String())
			}
		case <-time.After(15 * time.Second):
			t.Error("stub did not exit 15s after SIGTERM")
		}
	})
	return httpAddr, logs, done
}

// wantNotReady asserts /readyz is 503 with a body containing each of want.
func wantNotReady(t *testing.T, httpAddr string, want ...string) {
	t.Helper()
	code, body, err := httpGet("http://" + httpAddr + "/readyz")
	if err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz: %d %q %v; want 503", code, body, err)
	}
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Errorf("/readyz body %q lacks %q", body, w)
		}
	}
}

func checkFailures(t *testing.T, logs *syncBuffer) []map[string]any {
	return logs.Records(t, func(m map[string]any) bool {
		msg, _ := m["message"].(string)
		return strings.HasPrefix(msg, "ready check failed: ")
	})
}

// TestReadyCheckGatesReadiness: /readyz waits for the check name's answer, and an address in an
// A answer, or in an AAAA answer when A has none (an IPv6-only cluster), makes the stub ready.
func TestReadyCheckGatesReadiness(t *testing.T) {
	for _, tt := range []struct {
		name  string
		wantQ []uint16
		reply func(q *dns.Msg) *dns.Msg
	}{
		{"A", []uint16{dns.TypeA}, func(q *dns.Msg) *dns.Msg { return withAddress(q, "A 10.96.0.1") }},
		{"AAAA only", []uint16{dns.TypeA, dns.TypeAAAA}, func(q *dns.Msg) *dns.Msg {
			if q.Question[0].Qtype == dns.TypeAAAA {
				return withAddress(q, "AAAA fd00::1")
			}
			return rcode(q, dns.RcodeSuccess) // NODATA
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			up := startCheckUpstream(t, func(q *dns.Msg) *dns.Msg { <-release; return tt.reply(q) })
			httpAddr, logs, exited := runCheckedStub(t, up.addr, "10s")
			up.waitAsked(t, 1)
			// The check's first query is held: the stub serves, but is not ready.
			wantNotReady(t, httpAddr, "ready check: resolving "+checkName)
			close(release)
			waitReady(t, "http://"+httpAddr+"/readyz", exited)
			for i, qt := range tt.wantQ[1:] {
				if got := <-up.asked; got != qt {
					t.Errorf("query %d: %s, want %s", i+2, dns.TypeToString[got], dns.TypeToString[qt])
				}
			}
			if len(logs.Records(t, dnstest.Message("ready check passed"))) != 1 || len(checkFailures(t, logs)) != 0 {
				t.Errorf("want one 'ready check passed' line and no failure:\n%s", logs.String())
			}
		})
	}
}

// TestReadyCheckNXDOMAINKeepsNotReady: a wrong cluster domain (the name does not exist) keeps
// /readyz 503, retried every round, with one warning however many rounds fail alike.
func TestReadyCheckNXDOMAINKeepsNotReady(t *testing.T) {
	up := startCheckUpstream(t, func(q *dns.Msg) *dns.Msg { return rcode(q, dns.RcodeNameError) })
	httpAddr, logs, _ := runCheckedStub(t, up.addr, "10s")
	// Rounds run one after another: once the fourth query arrives, three rounds have failed and
	// been logged.
	up.waitAsked(t, 4)
	wantNotReady(t, httpAddr, checkName, up.addr, "NXDOMAIN")
	lines := checkFailures(t, logs)
	if len(lines) != 1 {
		t.Fatalf("%d failure lines after three failed rounds, want 1:\n%s", len(lines), logs.String())
	}
	l := lines[0]
	msg := l["message"].(string)
	for _, want := range []string{"PODNS_READY_CHECK_NAME=" + checkName, up.addr + " (from PODNS_UPSTREAMS)", "NXDOMAIN", "/readyz stays 503"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if l["level"] != "warn" || l["result"] != "NXDOMAIN" || l["ready_check_name"] != checkName || !strings.Contains(l["hint"].(string), "cluster domain") ||
		!strings.Contains(l["hint"].(string), "PODNS_CLUSTER_DNS") || !strings.Contains(l["hint"].(string), "clusterDNS and clusterDomain settings") {
		t.Errorf("failure line %v", l)
	}
}

// TestReadyCheckPassesOnceTheUpstreamAnswers: an upstream that fails the name at first (SERVFAIL,
// then no reply at all) and answers it later makes the stub ready at the next round; each new
// result is one new warning.
func TestReadyCheckPassesOnceTheUpstreamAnswers(t *testing.T) {
	var phase atomic.Int32 // 0: SERVFAIL, 1: silent, 2: answers
	seen := make(chan int32, 1000)
	up := startCheckUpstream(t, func(q *dns.Msg) *dns.Msg {
		p := phase.Load()
		select {
		case seen <- p:
		default:
		}
		switch p {
		case 0:
			return rcode(q, dns.RcodeServerFailure)
		case 1:
			return nil
		}
		return withAddress(q, "A 10.96.0.1")
	})
	httpAddr, logs, exited := runCheckedStub(t, up.addr, "200ms")
	next := func() int32 {
		select {
		case p := <-seen:
			return p
		case <-time.After(10 * time.Second):
			t.Fatal("no further query for " + checkName)
		}
		return 0
	}
	// Rounds run one after another: a query's arrival means the round before it was logged.
	for range 3 {
		next()
	}
	wantNotReady(t, httpAddr, "SERVFAIL")
	phase.Store(1)
	for next() != 1 {
	}
	next() // the silent round timed out
	wantNotReady(t, httpAddr, "timeout")
	phase.Store(2)
	waitReady(t, "http://"+httpAddr+"/readyz", exited)
	var results []string
	for _, l := range checkFailures(t, logs) {
		results = append(results, l["result"].(string))
	}
	if strings.Join(results, ",") != "SERVFAIL,timeout" {
		t.Errorf("failure results %q, want SERVFAIL then timeout, one line each", results)
	}
	if len(logs.Records(t, dnstest.Message("ready check passed"))) != 1 {
		t.Errorf("no 'ready check passed' line:\n%s", logs.String())
	}
}

// fakeExchanger answers the ready check's queries from a function, with no network.
type fakeExchanger func(q *dns.Msg) (*dns.Msg, error)

func (f fakeExchanger) Exchange(_ context.Context, q *dns.Msg) (*dns.Msg, error) { return f(q) }

// TestReadyCheckRoundResults: what each kind of answer or failure is called in the log line.
func TestReadyCheckRoundResults(t *testing.T) {
	reply := func(rc int, rr string) fakeExchanger {
		return func(q *dns.Msg) (*dns.Msg, error) {
			r := rcode(q, rc)
			if rr != "" && dns.TypeToString[q.Question[0].Qtype] == strings.Fields(rr)[0] {
				r = withAddress(q, rr)
			}
			return r, nil
		}
	}
	for _, tt := range []struct {
		name string
		fwd  fakeExchanger
		want string
	}{
		{"A", reply(dns.RcodeSuccess, "A 10.0.0.1"), ""},
		{"AAAA", reply(dns.RcodeSuccess, "AAAA fd00::1"), ""},
		{"NODATA for both", reply(dns.RcodeSuccess, ""), checkNoAddress},
		{"a CNAME to nothing", func(q *dns.Msg) (*dns.Msg, error) {
			return withAddress(q, "CNAME gone.example."), nil
		}, checkNoAddress},
		{"NXDOMAIN", reply(dns.RcodeNameError, ""), "NXDOMAIN"},
		{"SERVFAIL", reply(dns.RcodeServerFailure, ""), "SERVFAIL"},
		{"round deadline", func(*dns.Msg) (*dns.Msg, error) { return nil, context.DeadlineExceeded }, checkTimeout},
		{"refused connections", func(*dns.Msg) (*dns.Msg, error) {
			return nil, errors.New("upstream: all servers failed: 10.96.0.10:53: connection refused")
		}, checkNoReply},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &readyCheck{name: checkName, fwd: tt.fwd, timeout: time.Second}
			if got, _ := c.round(context.Background()); got != tt.want {
				t.Errorf("result %q, want %q", got, tt.want)
			}
			if _, ok := readyCheckHints[tt.want]; tt.want != "" && !ok {
				t.Errorf("no hint for %q", tt.want)
			}
		})
	}
}
