package kube

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The webhook install (injector-manifests/webhook) as W-design names it.
const (
	whNS     = "podns-system"
	whDeploy = "podns-webhook"
	whMWC    = "podns-webhook"
	whHTTP   = 9254 // PODNS_HTTP_LISTEN: /metrics, /healthz, /readyz
)

// The names an injected app resolves through its stub: a cluster Service by its full name and by
// a search-list expansion, and a name of the "external" test zone.
var whNames = []string{"kubernetes.default.svc.cluster.local", "web.e2e-basic", "api.ext.podns.test."}

// webhookDryRuns is how many server-side dry-run creates the cost step adds to the sample.
const webhookDryRuns = 20

// webhookState carries what the webhook steps learnt to the measurement step.
type webhookState struct {
	injected []string // ns/pod of every pod the steps saw injected
}

// webhookInstall applies the install kustomization as a user would (`kubectl apply -k`, through
// the test overlay that only swaps the image) and waits until both replicas are Ready and the
// MutatingWebhookConfiguration carries a caBundle for each of its webhooks.
func (e *env) webhookInstall(t *testing.T) {
	st := time.Now()
	kubectl(t, "apply", "-k", filepath.Join(e.manDir, "overlays", "webhook"))
	e.webhookReady(t)
	t.Logf("webhook installed, 2 replicas Ready and caBundle set in %s", time.Since(st).Round(100*time.Millisecond))
}

func (e *env) webhookReady(t *testing.T) {
	t.Helper()
	kubectl(t, "-n", whNS, "rollout", "status", "deploy/"+whDeploy, "--timeout=240s")
	// A single node: the anti-affinity is only preferred, so both replicas run here.
	e.poll(2*time.Minute, "2 webhook replicas Ready", func() bool {
		out, err := run(20*time.Second, "kubectl", "-n", whNS, "get", "deploy", whDeploy, "-o", "jsonpath={.status.readyReplicas}")
		return err == nil && strings.TrimSpace(out) == "2"
	})
	e.poll(2*time.Minute, "caBundle in every webhook of "+whMWC, func() bool {
		out, err := run(20*time.Second, "kubectl", "get", "mutatingwebhookconfiguration", whMWC, "-o",
			`jsonpath={range .webhooks[*]}{.name}={.clientConfig.caBundle}{"\n"}{end}`)
		if err != nil {
			return false
		}
		n := 0
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			name, ca, _ := strings.Cut(l, "=")
			if name == "" || ca == "" {
				return false
			}
			n++
		}
		return n == 2
	})
}

// podSpec is the part of a pod the webhook steps judge.
type podSpec struct {
	annotation string
	initNames  []string
	dnsPolicy  string
}

func getPodSpec(t *testing.T, ns, name string) podSpec {
	t.Helper()
	out := kubectl(t, "-n", ns, "get", "pod", name, "-o",
		`jsonpath={.metadata.annotations.podns\.io/injected}|{.spec.initContainers[*].name}|{.spec.dnsPolicy}`)
	f := strings.SplitN(out, "|", 3)
	if len(f) != 3 {
		t.Fatalf("pod %s/%s: %q", ns, name, out)
	}
	return podSpec{annotation: f[0], initNames: strings.Fields(f[1]), dnsPolicy: f[2]}
}

// assertInjected checks what the API server stored for a pod the webhook mutated: podns's
// containers first, in the mode's order, and the annotation naming the mode.
func (e *env) assertInjected(t *testing.T, ns, name, mode string) {
	t.Helper()
	p := getPodSpec(t, ns, name)
	t.Logf("%s/%s: podns.io/injected=%q initContainers=%v dnsPolicy=%s", ns, name, p.annotation, p.initNames, p.dnsPolicy)
	want := []string{"podns-init", "podns-stub"}
	if mode == "restricted" {
		want = []string{"podns-stub"}
	}
	if len(p.initNames) < len(want) || strings.Join(p.initNames[:len(want)], " ") != strings.Join(want, " ") {
		t.Errorf("%s/%s: initContainers %v, want %v first", ns, name, p.initNames, want)
	}
	if mode == "restricted" {
		for _, c := range p.initNames {
			if c == "podns-init" {
				t.Errorf("%s/%s: restricted mode has podns-init (a root init container)", ns, name)
			}
		}
		if p.dnsPolicy != "None" {
			t.Errorf("%s/%s: dnsPolicy %q, want None in restricted mode", ns, name, p.dnsPolicy)
		}
	}
	if !strings.HasPrefix(p.annotation, mode+" ") {
		t.Errorf("%s/%s: annotation podns.io/injected=%q, want %q<version>", ns, name, p.annotation, mode+" ")
	}
	e.wh.injected = append(e.wh.injected, ns+"/"+name)
}

// assertResolvesThroughStub runs lookups in the app and proves from the stub's own counters that
// they went through it; it also checks the app's resolv.conf names only the stub.
func assertResolvesThroughStub(t *testing.T, ns, pod, container, search string) {
	t.Helper()
	rc := client(t, ns, pod, container, "cat", "/etc/resolv.conf")
	t.Logf("%s/%s resolv.conf:\n%s", ns, pod, rc)
	var servers []string
	for _, l := range strings.Split(rc, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "nameserver" {
			servers = append(servers, f[1])
		}
	}
	if len(servers) != 1 || servers[0] != "127.0.0.1" {
		t.Errorf("%s/%s: nameservers %v, want only 127.0.0.1", ns, pod, servers)
	}
	if !strings.Contains(rc, "search "+search) {
		t.Errorf("%s/%s: search list is not %q", ns, pod, search)
	}
	for _, o := range []string{"ndots:5", "timeout:1", "attempts:3"} {
		if !strings.Contains(rc, o) {
			t.Errorf("%s/%s: options lack %s", ns, pod, o)
		}
	}
	before := client(t, ns, pod, container, "get", "http://127.0.0.1:9253/metrics")
	client(t, ns, pod, container, append([]string{"lookup", "-n", "3"}, whNames...)...)
	after := client(t, ns, pod, container, "get", "http://127.0.0.1:9253/metrics")
	for _, m := range []string{"podns_requests_total", "podns_cache_hits_total"} {
		if d := metric(after, m) - metric(before, m); d <= 0 {
			t.Errorf("%s/%s: %s did not grow: the lookups did not go through the stub", ns, pod, m)
		}
	}
	if metric(after, "podns_upstream_queries_total") <= 0 {
		t.Errorf("%s/%s: podns_upstream_queries_total is 0: the stub never asked CoreDNS", ns, pod)
	}
}

func (e *env) waitServiceAccount(t *testing.T, ns string) {
	t.Helper()
	e.poll(time.Minute, "serviceaccount in "+ns, func() bool {
		_, err := run(10*time.Second, "kubectl", "-n", ns, "get", "serviceaccount", "default")
		return err == nil
	})
}

// webhookSidecar: a labelled namespace; a bare Pod, a Deployment and a Job with no podns in their
// YAML get podns-init and podns-stub first and resolve through the stub.
func (e *env) webhookSidecar(t *testing.T) {
	// Both test namespaces first: a bare Pod is refused until its namespace's default
	// ServiceAccount exists, which the controller makes asynchronously.
	kubectl(t, "apply", "-f", filepath.Join(e.manDir, "webhook", "namespaces.yaml"))
	e.waitServiceAccount(t, "e2e-webhook")
	e.waitServiceAccount(t, "e2e-webhook-restricted")
	kubectl(t, "apply", "-f", filepath.Join(e.manDir, "webhook", "workloads.yaml"))
	kubectl(t, "-n", "e2e-webhook", "wait", "pod/bare", "--for=condition=Ready", "--timeout=180s")
	kubectl(t, "-n", "e2e-webhook", "rollout", "status", "deploy/plain", "--timeout=180s")
	kubectl(t, "-n", "e2e-webhook", "wait", "job/once", "--for=condition=Complete", "--timeout=180s")
	search := "e2e-webhook.svc.cluster.local svc.cluster.local cluster.local"

	e.assertInjected(t, "e2e-webhook", "bare", "sidecar")
	assertResolvesThroughStub(t, "e2e-webhook", "bare", "app", search)

	p := pod(t, "e2e-webhook", "app=plain")
	e.assertInjected(t, "e2e-webhook", p, "sidecar")
	assertResolvesThroughStub(t, "e2e-webhook", p, "app", search)

	// The Job's app resolved the names and exited 0 (the Job is Complete) with the stub as a
	// native sidecar that did not hold it.
	jp := strings.TrimSpace(kubectl(t, "-n", "e2e-webhook", "get", "pods", "-l", "job-name=once", "-o", "jsonpath={.items[0].metadata.name}"))
	e.assertInjected(t, "e2e-webhook", jp, "sidecar")
	t.Logf("job once:\n%s", kubectl(t, "-n", "e2e-webhook", "logs", jp, "-c", "app"))
}

// webhookRestricted: a namespace enforcing Pod Security `restricted` and labelled for podns's
// restricted mode admits a restricted-compliant Deployment, injected without podns-init.
func (e *env) webhookRestricted(t *testing.T) {
	kubectl(t, "apply", "-f", filepath.Join(e.manDir, "webhook", "restricted.yaml"))
	// A pod the restricted policy refused would leave the ReplicaSet with a FailedCreate event and
	// this rollout would time out: print why, then.
	if _, err := run(4*time.Minute, "kubectl", "-n", "e2e-webhook-restricted", "rollout", "status", "deploy/strict", "--timeout=180s"); err != nil {
		ev, _ := run(20*time.Second, "kubectl", "-n", "e2e-webhook-restricted", "get", "events", "--sort-by=.lastTimestamp")
		t.Fatalf("deploy/strict not rolled out: %v\n%s", err, ev)
	}
	p := pod(t, "e2e-webhook-restricted", "app=strict")
	e.assertInjected(t, "e2e-webhook-restricted", p, "restricted")
	assertResolvesThroughStub(t, "e2e-webhook-restricted", p, "app",
		"e2e-webhook-restricted.svc.cluster.local svc.cluster.local cluster.local")
}

// webhookFailurePolicy: with the webhook scaled to 0, the default failurePolicy Fail refuses a
// pod of an opted-in namespace; with the failure-policy-ignore component applied the same pod is
// admitted, uninjected. Then the install is restored (Fail, 2 replicas Ready, caBundle set).
func (e *env) webhookFailurePolicy(t *testing.T) {
	kubectl(t, "-n", whNS, "scale", "deploy/"+whDeploy, "--replicas=0")
	restored := false
	restore := func() {
		kubectl(t, "apply", "-k", filepath.Join(e.manDir, "overlays", "webhook"))
		// The three-way merge leaves replicas alone (last-applied and the manifest agree on 2).
		kubectl(t, "-n", whNS, "scale", "deploy/"+whDeploy, "--replicas=2")
		e.webhookReady(t)
		restored = true
	}
	defer func() {
		if !restored {
			restore()
		}
	}()
	e.poll(2*time.Minute, "no webhook pod left", func() bool {
		out, err := run(20*time.Second, "kubectl", "-n", whNS, "get", "pods", "-o", "name")
		return err == nil && strings.TrimSpace(out) == ""
	})
	podJSON := func(name string) string {
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":%q,"namespace":"e2e-webhook"},
"spec":{"containers":[{"name":"app","image":"podns.test/dnsclient:e2e","args":["sleep"]}]}}`, name)
	}
	create := func(name string) (string, error) {
		f := filepath.Join(t.TempDir(), name+".json")
		if err := os.WriteFile(f, []byte(podJSON(name)), 0o644); err != nil {
			t.Fatal(err)
		}
		return run(time.Minute, "kubectl", "create", "-f", f)
	}
	out, err := create("refused")
	if err == nil {
		t.Errorf("failurePolicy Fail with no webhook replica admitted a pod: %s", out)
	} else {
		t.Logf("Fail, webhook down: refused as expected: %s", strings.TrimSpace(out))
	}

	kubectl(t, "apply", "-k", filepath.Join(e.manDir, "overlays", "webhook-ignore"))
	fp := kubectl(t, "get", "mutatingwebhookconfiguration", whMWC, "-o", "jsonpath={.webhooks[*].failurePolicy}")
	if fp != "Ignore Ignore" {
		t.Fatalf("failurePolicy after the component: %q, want Ignore for both webhooks", fp)
	}
	// The API server reads the configuration through an informer: allow it a moment to see it.
	st := time.Now()
	e.poll(time.Minute, "a pod admitted with failurePolicy Ignore", func() bool {
		_, err := create("admitted")
		return err == nil
	})
	t.Logf("Ignore, webhook down: admitted %s after the apply", time.Since(st).Round(100*time.Millisecond))
	p := getPodSpec(t, "e2e-webhook", "admitted")
	if p.annotation != "" || len(p.initNames) != 0 {
		t.Errorf("pod admitted with the webhook down was changed: %+v", p)
	}
	kubectl(t, "-n", "e2e-webhook", "wait", "pod/admitted", "--for=condition=Ready", "--timeout=120s")
	kubectl(t, "-n", "e2e-webhook", "delete", "pod", "admitted", "--wait=false")

	restore()
	fp = kubectl(t, "get", "mutatingwebhookconfiguration", whMWC, "-o", "jsonpath={.webhooks[*].failurePolicy}")
	if fp != "Fail Fail" {
		t.Errorf("failurePolicy after restoring the install: %q, want Fail for both webhooks", fp)
	}
}

// webhookCost reads the admission latency from both sides (the webhook's own histogram over its
// replicas, the API server's for each podns webhook) and the number of pods injected, and appends
// them to the results file. Asserted: every dry-run pod came back injected, and the webhook
// counted at least as many admissions as the pods injected.
func (e *env) webhookCost(t *testing.T) {
	// A larger sample without more pods on the node: a server-side dry run is admitted through
	// the webhooks (they declare sideEffects: None) and returns the mutated pods, which are then
	// not stored. One kubectl, so the wall time per pod is mostly the API server's.
	items := make([]any, webhookDryRuns)
	for i := range items {
		items[i] = map[string]any{"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": fmt.Sprintf("dry-run-%02d", i), "namespace": "e2e-webhook"},
			"spec":     map[string]any{"containers": []any{map[string]any{"name": "app", "image": "podns.test/dnsclient:e2e", "args": []string{"sleep"}}}}}
	}
	list, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	f := filepath.Join(t.TempDir(), "dry-run.json")
	if err := os.WriteFile(f, list, 0o644); err != nil {
		t.Fatal(err)
	}
	st := time.Now()
	out := kubectl(t, "create", "--dry-run=server", "-f", f, "-o",
		`jsonpath={.metadata.annotations.podns\.io/injected}|{.spec.initContainers[0].name}{"\n"}`)
	dryWall := time.Since(st)
	dryOK := 0
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "sidecar ") && strings.HasSuffix(l, "|podns-init") {
			dryOK++
		}
	}
	if dryOK != webhookDryRuns {
		t.Errorf("%d of %d server-side dry-run pods came back injected:\n%s", dryOK, webhookDryRuns, out)
	}

	pods := strings.Fields(kubectl(t, "-n", whNS, "get", "pods", "-o", "jsonpath={.items[*].metadata.name}"))
	var whText strings.Builder
	for _, p := range pods {
		// A comment line per replica, which the parsers skip, so the raw counters below say whose.
		fmt.Fprintf(&whText, "# replica %s\n", p)
		whText.WriteString(kubectl(t, "get", "--raw", fmt.Sprintf("/api/v1/namespaces/%s/pods/%s:%d/proxy/metrics", whNS, p, whHTTP)))
		whText.WriteString("\n")
	}
	apiText := kubectl(t, "get", "--raw", "/metrics")

	var b strings.Builder
	fmt.Fprintf(&b, "Pods created and seen injected: %d (%s); plus %d server-side dry-run creates, %d returned injected, %s for all (%s a pod, kubectl to the API server and back).\n\n",
		len(e.wh.injected), strings.Join(e.wh.injected, ", "), webhookDryRuns, dryOK,
		dryWall.Round(time.Millisecond), (dryWall / webhookDryRuns).Round(100*time.Microsecond))
	b.WriteString("| histogram | series | admissions | mean | p50 | p90 | p99 |\n|---|---|---|---|---|---|---|\n")
	row := func(name string, h hist) {
		fmt.Fprintf(&b, "| `%s` | %s | %.0f | %s | %s | %s | %s |\n", name, h.key, h.count,
			msf(h.sum/h.count), msf(h.quantile(0.5)), msf(h.quantile(0.9)), msf(h.quantile(0.99)))
	}
	const whHist = "podns_webhook_admission_duration_seconds"
	var whCount float64
	for _, h := range histograms(whText.String(), whHist, func(map[string]string) bool { return true }, "mode") {
		row(whHist, h)
		whCount += h.count
	}
	const apiHist = "apiserver_admission_webhook_admission_duration_seconds"
	for _, h := range histograms(apiText, apiHist, func(l map[string]string) bool { return strings.HasSuffix(l["name"], ".podns.io") }, "name") {
		row(apiHist, h)
	}
	var counted float64
	for _, l := range strings.Split(whText.String(), "\n") {
		if name, labels, v, ok := parseSample(l); ok && name == "podns_webhook_admissions_total" && labels["result"] == "injected" {
			counted += v
		}
	}
	fmt.Fprintf(&b, "\nAdmissions the webhook counted as injected (`podns_webhook_admissions_total{result=\"injected\"}`, both replicas, dry runs included): %.0f.\n", counted)
	b.WriteString("\nThe webhook's counters:\n\n```\n")
	for _, l := range strings.Split(whText.String(), "\n") {
		if strings.HasPrefix(l, "# replica ") || strings.HasPrefix(l, "podns_webhook_") && !strings.Contains(l, "_bucket{") {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("```\n")
	t.Logf("webhook admission cost:\n%s", b.String())
	e.writeResults("webhook: admission latency and pods injected", b.String())
	if want := float64(len(e.wh.injected) + dryOK); whCount < want {
		t.Errorf("%s counted %v admissions over %d replicas, fewer than the %v pods injected", whHist, whCount, len(pods), want)
	}
}

func msf(s float64) string {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return "—"
	}
	return fmt.Sprintf("%.2f ms", s*1000)
}

// hist is one Prometheus histogram summed over the series that share a key label's value.
type hist struct {
	key        string
	count, sum float64
	buckets    map[float64]float64 // le → cumulative count
}

// quantile interpolates inside the bucket that holds the q-th observation, as PromQL's
// histogram_quantile does; an answer in the +Inf bucket is the highest finite bound.
func (h hist) quantile(q float64) float64 {
	les := make([]float64, 0, len(h.buckets))
	for le := range h.buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 || h.count == 0 {
		return math.NaN()
	}
	rank := q * h.buckets[les[len(les)-1]]
	lo, prev := 0.0, 0.0
	for _, le := range les {
		c := h.buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return lo
			}
			if c == prev {
				return le
			}
			return lo + (le-lo)*(rank-prev)/(c-prev)
		}
		lo, prev = le, c
	}
	return lo
}

// histograms parses a text exposition's histogram family, keeps the series sel accepts, and sums
// them per value of the key label (all series in one when the label is absent).
func histograms(text, family string, sel func(map[string]string) bool, key string) []hist {
	by := map[string]*hist{}
	get := func(k string) *hist {
		if by[k] == nil {
			by[k] = &hist{key: k, buckets: map[float64]float64{}}
		}
		return by[k]
	}
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, family+"_") {
			continue
		}
		name, labels, value, ok := parseSample(l)
		if !ok || !sel(labels) {
			continue
		}
		k := labels[key]
		if k == "" {
			k = "all"
		}
		switch strings.TrimPrefix(name, family) {
		case "_bucket":
			le, err := strconv.ParseFloat(labels["le"], 64)
			if err == nil {
				get(k).buckets[le] += value
			}
		case "_sum":
			get(k).sum += value
		case "_count":
			get(k).count += value
		}
	}
	out := make([]hist, 0, len(by))
	for _, h := range by {
		out = append(out, *h)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// parseSample splits `name{a="x",b="y"} value` (no escaped quotes in the families read here).
func parseSample(l string) (name string, labels map[string]string, value float64, ok bool) {
	labels = map[string]string{}
	rest := l
	if i := strings.IndexByte(l, '{'); i >= 0 {
		j := strings.LastIndexByte(l, '}')
		if j < i {
			return "", nil, 0, false
		}
		name, rest = l[:i], l[j+1:]
		for _, kv := range strings.Split(l[i+1:j], ",") {
			k, v, found := strings.Cut(kv, "=")
			if found {
				labels[strings.TrimSpace(k)] = strings.Trim(v, `"`)
			}
		}
	} else {
		f := strings.Fields(l)
		if len(f) < 2 {
			return "", nil, 0, false
		}
		name, rest = f[0], strings.Join(f[1:], " ")
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return "", nil, 0, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	return name, labels, v, err == nil
}
