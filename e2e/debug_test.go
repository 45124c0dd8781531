package e2e

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/podns/podns/e2e/internal/netsim"
	"github.com/podns/podns/e2e/internal/scenario"
)

// TestDebugSubcommands (issue 16): what an SRE runs in a pod whose DNS is slow, with kubectl
// exec into the stub's container (the image has no shell: the stub binary carries the tools),
// against a stub running in a simulated pod: `stub status`, `stub dig` (through the stub, then
// straight to the upstream), `stub cache`, and `stub querylog all` followed by a lookup and its
// query log line. Each run has the running stub's environment, as kubectl exec gives.
func TestDebugSubcommands(t *testing.T) {
	env, ctx := setup(t)
	c, err := env.Run.NewCluster(ctx, env.CoreDNS)
	if err != nil {
		t.Fatal(err)
	}
	// JSON logs: the query log line is read back field by field.
	pod := podnsPod(t, ctx, env, c, []string{"PODNS_LOG_FORMAT=json"})
	name := netsim.ColdName(0) + "." // served by the cluster DNS, looked up by nothing else
	upstream := regexp.QuoteMeta(netsim.VIP + ":53")

	t.Run("status", func(t *testing.T) {
		out := stubTool(t, ctx, env, pod, "status")
		match(t, "stub status", out,
			`(?m)^podns stub \S+ \(go[^)]+\), up \S+ since \S+, ready \(ok\)$`,
			`(?m)^  `+upstream+` +up +tcp +`,
			`(?m)^  upstreams +`+upstream+` +`+regexp.QuoteMeta(pod.StateDir+"/upstream.conf")+`$`,
			// initc's rewrite of /etc/resolv.conf keeps the kubelet's search list.
			`(?m)^  search_prefetch +alpha\.svc\.cluster\.local svc\.cluster\.local cluster\.local +/etc/resolv\.conf$`,
			`(?m)^  PODNS_LOG_FORMAT +json +env$`,
			`(?m)^  PODNS_CACHE_SIZE +10000 +default$`,
			`(?m)^cache: \d+ of 10000 entries, `)
	})

	t.Run("dig", func(t *testing.T) {
		out := stubTool(t, ctx, env, pod, "dig", name)
		match(t, "first stub dig", out,
			`(?m)^;; SERVER: 127\.0\.0\.1:53 \(the stub, udp\), `,
			`(?m)^;; ANSWERED FROM: the upstreams \(cache miss\); now cached: fresh answer, fresh for \d+s$`,
			`(?m)^;; opcode: QUERY, status: NOERROR, `,
			`(?m)^`+regexp.QuoteMeta(name)+`\s+\d+\s+IN\s+A\s+192\.0\.2\.100$`)
		out = stubTool(t, ctx, env, pod, "dig", name)
		match(t, "second stub dig", out, `(?m)^;; ANSWERED FROM: the cache \(hit\): entry stored \S+ ago, 1 hits$`)
		out = stubTool(t, ctx, env, pod, "dig", name, "AAAA", "+bypass-cache")
		match(t, "stub dig +bypass-cache", out,
			`(?m)^;; SERVER: `+upstream+` \(upstream, tcp\), `,
			`(?m)^`+regexp.QuoteMeta(name)+`\s+\d+\s+IN\s+AAAA\s+2001:db8::100$`)
	})

	t.Run("cache", func(t *testing.T) {
		out := stubTool(t, ctx, env, pod, "cache", name)
		match(t, "stub cache NAME", out,
			`(?m)^`+regexp.QuoteMeta(name)+` +A +IN +- +fresh +answer +\d+s +1$`,
			`(?m)^    `+regexp.QuoteMeta(name)+` \d+ IN A 192\.0\.2\.100`)
		if strings.Contains(out, "AAAA") {
			t.Errorf("+bypass-cache put the AAAA answer in the cache:\n%s", out)
		}
		out = stubTool(t, ctx, env, pod, "cache", "-n", "5")
		match(t, "stub cache -n 5", out, `(?m)^the \d (entry|entries) with the most hits \(of at most 5 asked\):$`,
			`(?m)^`+regexp.QuoteMeta(name)+` +A +IN +- +fresh +answer +\d+s +1$`)
	})

	t.Run("querylog", func(t *testing.T) {
		out := stubTool(t, ctx, env, pod, "querylog", "all")
		if out != "query log: off → all\n" {
			t.Fatalf("stub querylog all: %q", out)
		}
		match(t, "stub status", stubTool(t, ctx, env, pod, "status"), `(?m)^query log: all$`)
		logged := netsim.ColdName(1) + "."
		r, err := netsim.Query(pod.NS, "udp", "127.0.0.1:53", logged, dns.TypeA, 2*time.Second)
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("lookup of %s: %v %v", logged, r, err)
		}
		// The line is written after the reply is sent: poll the stub's log for it.
		var line map[string]any
		deadline := time.Now().Add(5 * time.Second)
		for line == nil && time.Now().Before(deadline) {
			line = logLine(pod.Stub().Log(), func(m map[string]any) bool { return m["message"] == "query" && m["name"] == logged })
			time.Sleep(20 * time.Millisecond)
		}
		if line == nil {
			t.Fatalf("no query log line for %s in the stub's log:\n%s", logged, pod.Stub().Log())
		}
		if line["type"] != "A" || line["proto"] != "udp" || line["rcode"] != "NOERROR" || line["cache"] != "miss" ||
			line["upstream"] != netsim.VIP+":53" || line["attempts"] != 1.0 {
			t.Errorf("query log line %v", line)
		}
		change := logLine(pod.Stub().Log(), func(m map[string]any) bool { return m["message"] == "query log mode changed" })
		if change == nil || change["old"] != "off" || change["new"] != "all" || !strings.Contains(change["by"].(string), "stub querylog") {
			t.Errorf("mode change line %v", change)
		}
	})
}

// stubTool runs the stub binary with args in pod, as kubectl exec does, and returns its stdout;
// it fails the test unless it exits 0 with nothing on stderr.
func stubTool(t *testing.T, ctx context.Context, env *scenario.Env, pod *netsim.Pod, args ...string) string {
	t.Helper()
	out, errOut, code, err := pod.ExecStub(ctx, env.Stub, args...)
	if err != nil || code != 0 || errOut != "" {
		t.Fatalf("stub %s: exit %d, %v, stderr:\n%s", strings.Join(args, " "), code, err, errOut)
	}
	t.Logf("stub %s:\n%s", strings.Join(args, " "), out)
	return out
}

// match fails unless every pattern (a regexp) matches out.
func match(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("%s lacks %q", what, p)
		}
	}
}

// logLine returns the last JSON line of log for which want holds, or nil.
func logLine(log string, want func(map[string]any) bool) map[string]any {
	var found map[string]any
	for _, l := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && want(m) {
			found = m
		}
	}
	return found
}
