package monitoring_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/teststorage"
)

// scrapeInterval is the PodMonitor's interval, and the rule evaluation interval of these tests
// (kube-prometheus-stack evaluates rules every 30 s too). The timeline is synthetic: each step
// scrapes the real stub once and stores the samples 30 s after the previous step's, so 30
// steps stand for 15 minutes of a pod's life in a few seconds.
const scrapeInterval = 30 * time.Second

// pod is a scraped stub's identity: the labels prometheus-operator gives a PodMonitor target.
type pod struct{ namespace, name string }

var (
	calm = pod{"shop", "web-calm"} // healthy throughout every scenario
	sick = pod{"shop", "web-sick"} // driven into the alert's state
)

func (p pod) String() string { return p.namespace + "/" + p.name }

// timeline is one scenario's storage and alert state: the samples of every scrape so far, and
// each alerting rule as Prometheus's rule manager evaluates it, step after step.
type timeline struct {
	t      *testing.T
	db     *teststorage.TestStorage
	engine *promql.Engine
	query  rules.QueryFunc
	rules  []*rules.AlertingRule
	now    time.Time
	series map[pod]int // series per scrape of each pod's stub (the last one)
}

// seen collects, over every scenario, the metric names the real stub exposed and the
// dashboard queries that returned data.
var seen = struct {
	sync.Mutex
	names     map[string]bool
	answered  map[string]bool
	scenarios int
	series    map[string]int
}{names: map[string]bool{}, answered: map[string]bool{}, series: map[string]int{}}

func newTimeline(t *testing.T) *timeline {
	t.Helper()
	db := teststorage.New(t)
	engine := promql.NewEngine(promql.EngineOpts{
		Logger: slog.New(slog.DiscardHandler), MaxSamples: 1e6, Timeout: 10 * time.Second,
		Parser: promqlParser,
	})
	tl := &timeline{
		t: t, db: db, engine: engine, query: rules.EngineQueryFunc(engine, db),
		now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), series: map[pod]int{},
	}
	for name, r := range alertRules(t) {
		expr, err := promqlParser.ParseExpr(r.Expr)
		if err != nil {
			t.Fatal(err)
		}
		tl.rules = append(tl.rules, rules.NewAlertingRule(name, expr, time.Duration(r.For), time.Duration(r.KeepFiringFor),
			labels.FromMap(r.Labels), labels.FromMap(r.Annotations), labels.EmptyLabels(), "", false, slog.New(slog.DiscardHandler)))
	}
	slices.SortFunc(tl.rules, func(a, b *rules.AlertingRule) int { return strings.Compare(a.Name(), b.Name()) })
	return tl
}

// targetLabels are what prometheus-operator's PodMonitor relabelling gives every series of a
// target; the rules aggregate by namespace and pod.
func targetLabels(p pod) map[string]string {
	return map[string]string{
		"job": "monitoring/podns", "namespace": p.namespace, "pod": p.name,
		"container": "podns-stub", "endpoint": "podns-http", "instance": "10.0.0.1:9253",
	}
}

// ingest parses a scrape with Prometheus's own text-format parser (the scrape loop's), adds the
// target labels and stores every sample at the current step's timestamp.
func (tl *timeline) ingest(app storage.Appender, p pod, body []byte) {
	t := tl.t
	t.Helper()
	parser, err := textparse.New(body, "text/plain; version=0.0.4", labels.NewSymbolTable(), textparse.ParserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	drop := metricRelabelings(t)
	n := 0
	for {
		entry, err := parser.Next()
		if err != nil {
			break // io.EOF; a parse error shows as a short scrape below
		}
		if entry != textparse.EntrySeries {
			continue
		}
		var lset labels.Labels
		parser.Labels(&lset)
		_, _, v := parser.Series()
		b := labels.NewBuilder(lset)
		if !relabel.ProcessBuilder(b, drop...) {
			continue // dropped by the PodMonitor
		}
		for k, val := range targetLabels(p) {
			b.Set(k, val)
		}
		tl.append(app, b.Labels(), v)
		seen.Lock()
		seen.names[lset.Get(model.MetricNameLabel)] = true
		seen.Unlock()
		n++
	}
	if n < 20 {
		t.Fatalf("scrape of %s parsed to %d series:\n%s", p, n, body)
	}
	tl.series[p] = n
}

func (tl *timeline) append(app storage.Appender, l labels.Labels, v float64) {
	if _, err := app.Append(0, l, tl.now.UnixMilli(), v); err != nil {
		tl.t.Fatalf("append %s: %v", l, err)
	}
}

// step scrapes each pod's stub once, adds any synthetic series (kube-state-metrics), stores it
// all at the step's timestamp, evaluates every alerting rule there and moves the clock on by one
// scrape interval.
func (tl *timeline) step(stubs map[pod]*stub, synthetic map[string]float64) {
	t := tl.t
	t.Helper()
	app := tl.db.Appender(context.Background())
	for p, s := range stubs {
		tl.ingest(app, p, s.scrape(t))
	}
	for series, v := range synthetic {
		l, err := promqlParser.ParseMetric(series)
		if err != nil {
			t.Fatal(err)
		}
		tl.append(app, l, v)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, r := range tl.rules {
		if _, err := r.Eval(context.Background(), 0, tl.now, tl.query, nil, 0); err != nil {
			t.Fatalf("%s at %s: %v", r.Name(), tl.now, err)
		}
	}
	tl.now = tl.now.Add(scrapeInterval)
}

// alerts returns the alerts that are pending or firing now, as "Alert state namespace/pod".
func (tl *timeline) alerts() []string {
	var out []string
	for _, r := range tl.rules {
		for _, a := range r.ActiveAlerts() {
			out = append(out, fmt.Sprintf("%s %s %s/%s", r.Name(), a.State, a.Labels.Get("namespace"), a.Labels.Get("pod")))
			a.Annotations.Range(func(an labels.Label) {
				if strings.Contains(an.Value, "<error expanding template") {
					tl.t.Errorf("%s: annotation %s: %s", r.Name(), an.Name, an.Value)
				}
			})
		}
	}
	slices.Sort(out)
	return out
}

// requireQuiet fails unless no alert is pending or firing.
func (tl *timeline) requireQuiet(when string) {
	tl.t.Helper()
	if a := tl.alerts(); len(a) > 0 {
		tl.t.Fatalf("%s: alerts active: %q", when, a)
	}
}

// requireNotActive fails when the alert is pending or firing for any pod.
func (tl *timeline) requireNotActive(alert, when string) {
	tl.t.Helper()
	for _, a := range tl.alerts() {
		if strings.HasPrefix(a, alert+" ") {
			tl.t.Fatalf("%s: %s active: %q", when, alert, tl.alerts())
		}
	}
}

// requireFiring fails unless the alert fires for the sick pod, and nothing is active for the
// calm one (the rules aggregate per pod: one pod's trouble never alerts on another).
func (tl *timeline) requireFiring(alert string) {
	tl.t.Helper()
	active := tl.alerts()
	if !slices.Contains(active, alert+" firing "+sick.String()) {
		tl.t.Errorf("%s is not firing for %s; active: %q", alert, sick, active)
	}
	for _, a := range active {
		if strings.HasSuffix(a, " "+calm.String()) {
			tl.t.Errorf("active for the healthy pod: %s", a)
		}
	}
}

// checkDashboard evaluates every dashboard query at the last step and records which returned
// data, for TestAlertsOnARealStub's final check.
func (tl *timeline) checkDashboard() {
	t := tl.t
	t.Helper()
	at := tl.now.Add(-scrapeInterval)
	for _, q := range dashboardQueries(t) {
		qry, err := tl.engine.NewInstantQuery(context.Background(), tl.db, nil, q.expr, at)
		if err != nil {
			t.Fatalf("%s: %v", q.where, err)
		}
		res := qry.Exec(context.Background())
		if res.Err != nil {
			t.Errorf("%s: %q: %v", q.where, q.expr, res.Err)
		}
		if v, err := res.Vector(); err == nil && len(v) > 0 {
			seen.Lock()
			seen.answered[q.expr] = true
			seen.Unlock()
		}
		qry.Close()
	}
	seen.Lock()
	seen.scenarios++
	for p, n := range tl.series {
		if p == calm {
			seen.series[t.Name()] = n
		}
	}
	seen.Unlock()
}

// load is the lookups a pod's app makes in one scrape interval: names it asks for all the time
// (cache hits once fetched) and names it asks for once (cache misses). step makes the once-names
// unique per step.
func load(step int) []string {
	names := []string{"api.shop.svc.cluster.local", "db.shop.svc.cluster.local", "cache.shop.svc.cluster.local",
		"auth.shop.svc.cluster.local", "queue.shop.svc.cluster.local"}
	for i := range 3 {
		names = append(names, fmt.Sprintf("once-%d-%d.example.org", step, i))
	}
	return names
}

// healthySteps is how long each scenario runs with both pods healthy: four minutes, long enough
// for every rate window of the rules to have samples, and for any alert that a healthy stub
// would wrongly raise to become pending.
const healthySteps = 8

// scenario is one alert's test: two pods, each a real stub with its own upstream, scraped
// together step after step.
type scenario struct {
	*timeline
	stubs     map[pod]*stub
	step      int
	synthetic func(step int) map[string]float64 // series from outside the stub, or nil
}

func newScenario(t *testing.T, calmStub, sickStub *stub) *scenario {
	t.Helper()
	return &scenario{timeline: newTimeline(t), stubs: map[pod]*stub{calm: calmStub, sick: sickStub}}
}

// run sends each pod its load and scrapes both, n times.
func (sc *scenario) run(n int) {
	sc.t.Helper()
	for range n {
		for _, s := range sc.stubs {
			s.queryAll(sc.t, load(sc.step))
		}
		var syn map[string]float64
		if sc.synthetic != nil {
			syn = sc.synthetic(sc.step)
		}
		sc.timeline.step(sc.stubs, syn)
		sc.step++
	}
}

// healthy runs both pods healthy for healthySteps steps; no alert may become active.
func (sc *scenario) healthy() {
	sc.t.Helper()
	sc.run(healthySteps)
	sc.requireQuiet("both pods healthy")
}

// stepsFor is how many steps an alert with the given `for` needs to fire, plus slack for the
// rate windows to fill with the new state.
func stepsFor(d time.Duration) int { return int(d/scrapeInterval) + 3 }

// Each alerting rule, evaluated by Prometheus's engine and alerting-rule code on samples scraped
// from real stub processes: quiet while both pods are healthy, firing for the sick pod (and only
// for it) once its stub is driven into the alert's state.
func TestAlertsOnARealStub(t *testing.T) {
	rules := alertRules(t)
	forOf := func(alert string) time.Duration { return time.Duration(rules[alert].For) }

	t.Run("PodnsUpstreamsDown", func(t *testing.T) {
		calmUp, a, b := startUpstream(t, 300), startUpstream(t, 300), startUpstream(t, 300)
		// A stopped upstream's UDP port may give no ICMP error for the stub to see: a short
		// attempt timeout keeps each step's misses short. It changes nothing the alert reads.
		sickStub := startStub(t, map[string]string{"PODNS_UPSTREAM_TIMEOUT": "250ms"}, a, b)
		sc := newScenario(t, startStub(t, nil, calmUp), sickStub)
		sc.healthy()
		// One upstream of two down: the pod still resolves, no alert.
		a.stop()
		waitDown(t, sickStub, a)
		sc.run(stepsFor(forOf("PodnsUpstreamsDown")))
		sc.requireNotActive("PodnsUpstreamsDown", "one upstream of two down")
		b.stop()
		waitDown(t, sickStub, b)
		sc.run(stepsFor(forOf("PodnsUpstreamsDown")))
		sc.requireFiring("PodnsUpstreamsDown")
		sc.checkDashboard()
	})

	t.Run("PodnsServfailRatioHigh", func(t *testing.T) {
		calmUp, sickUp := startUpstream(t, 300), startUpstream(t, 300)
		sc := newScenario(t, startStub(t, nil, calmUp), startStub(t, nil, sickUp))
		sc.healthy()
		sickUp.mode.Store(modeServfail)
		sc.run(stepsFor(forOf("PodnsServfailRatioHigh")))
		sc.requireFiring("PodnsServfailRatioHigh")
		sc.checkDashboard()
	})

	t.Run("PodnsServingStale", func(t *testing.T) {
		// A 1 s TTL, so that the cached answers expire once the upstream is gone.
		calmUp, sickUp := startUpstream(t, 1), startUpstream(t, 1)
		sickStub := startStub(t, nil, sickUp)
		sc := newScenario(t, startStub(t, nil, calmUp), sickStub)
		sc.healthy()
		sickUp.stop()
		// The stale answer's TTL is 30 s (RFC 8767 section 4), a fresh one's at most 1 s.
		waitFor(t, "a stale answer", func() bool {
			r := sickStub.query(t, load(0)[0])
			return r != nil && len(r.Answer) == 1 && r.Answer[0].Header().Ttl == 30
		})
		sc.run(stepsFor(forOf("PodnsServingStale")))
		sc.requireFiring("PodnsServingStale")
		sc.checkDashboard()
	})

	t.Run("PodnsMissLatencyHigh", func(t *testing.T) {
		calmUp, sickUp := startUpstream(t, 300), startUpstream(t, 300)
		// Over UDP, the test upstream answers each query on its own goroutine: a step's slow
		// misses overlap (miekg/dns answers one TCP connection's queries one after another).
		// PODNS_UPSTREAM_PROTOCOL=udp is also the configuration the UDP-fallback alert must not
		// mistake for a fallback.
		udp := map[string]string{"PODNS_UPSTREAM_PROTOCOL": "udp"}
		sc := newScenario(t, startStub(t, udp, calmUp), startStub(t, udp, sickUp))
		sc.healthy()
		sickUp.mode.Store(modeSlow)
		sc.run(stepsFor(forOf("PodnsMissLatencyHigh")))
		sc.requireFiring("PodnsMissLatencyHigh")
		sc.checkDashboard()
	})

	t.Run("PodnsUpstreamUDPFallback", func(t *testing.T) {
		calmUp, sickUp := startUpstream(t, 300), startUpstream(t, 300)
		sc := newScenario(t, startStub(t, nil, calmUp), startStub(t, nil, sickUp))
		sc.healthy()
		// TCP/53 refused, UDP/53 answered: a NetworkPolicy that allows DNS over UDP only.
		sickUp.stopTCP()
		sc.run(stepsFor(forOf("PodnsUpstreamUDPFallback")))
		sc.requireFiring("PodnsUpstreamUDPFallback")
		sc.checkDashboard()
	})

	t.Run("PodnsStubRestarting", func(t *testing.T) {
		// Container restarts are counted by the kubelet and exposed by kube-state-metrics, not by
		// the stub, so this series is synthetic: the calm pod restarted once long ago, the sick
		// pod restarts once right after the healthy phase and again five minutes later.
		calmUp, sickUp := startUpstream(t, 300), startUpstream(t, 300)
		sc := newScenario(t, startStub(t, nil, calmUp), startStub(t, nil, sickUp))
		const restarts = `kube_pod_container_status_restarts_total{job="kube-state-metrics", namespace="%s", pod="%s", container="podns-stub", uid="%s"}`
		second := healthySteps + 10
		sc.synthetic = func(step int) map[string]float64 {
			sickRestarts := 0.0
			if step >= healthySteps {
				sickRestarts++
			}
			if step >= second {
				sickRestarts++
			}
			return map[string]float64{
				fmt.Sprintf(restarts, calm.namespace, calm.name, "u-calm"): 1,
				fmt.Sprintf(restarts, sick.namespace, sick.name, "u-sick"): sickRestarts,
			}
		}
		sc.healthy()
		sc.run(second - healthySteps)
		sc.requireNotActive("PodnsStubRestarting", "one restart")
		sc.run(2)
		sc.requireFiring("PodnsStubRestarting")
		sc.checkDashboard()
	})

	seen.Lock()
	defer seen.Unlock()
	if seen.scenarios < len(wantAlerts) {
		t.Logf("%d of %d scenarios ran: metric names not checked", seen.scenarios, len(wantAlerts))
		return
	}

	t.Run("metric names", func(t *testing.T) {
		// Every metric the rules and the dashboard read is one the stub exposed in some scenario,
		// or one of the allow-listed kube-state-metrics/cAdvisor metrics.
		used := map[string][]string{}
		for name, r := range rules {
			for _, m := range metricNames(t, r.Expr) {
				used[m] = append(used[m], "rule "+name)
			}
		}
		for _, q := range dashboardQueries(t) {
			for _, m := range metricNames(t, q.expr) {
				used[m] = append(used[m], q.where)
			}
		}
		for _, m := range slices.Sorted(maps.Keys(used)) {
			src, external := externalMetrics[m]
			switch {
			case external:
				t.Logf("%-45s from %s", m, src)
			case seen.names[m]:
				t.Logf("%-45s exposed by the stub", m)
			default:
				t.Errorf("%s is not exposed by the stub (used by %s)", m, strings.Join(slices.Compact(used[m]), ", "))
			}
		}
		if !seen.names["podns_build_info"] {
			t.Error("podns_build_info not exposed")
		}
	})

	t.Run("dashboard queries return data", func(t *testing.T) {
		// A query that reads only stub metrics returned data at the end of some scenario: it
		// matches the labels the stub and the PodMonitor give, not just the names.
		for _, q := range dashboardQueries(t) {
			externalOnly := true
			for _, m := range metricNames(t, q.expr) {
				if _, ok := externalMetrics[m]; !ok {
					externalOnly = false
				}
			}
			if !externalOnly && !seen.answered[q.expr] {
				t.Errorf("%s: no data in any scenario: %s", q.where, q.expr)
			}
		}
	})

	for name, n := range seen.series {
		t.Logf("%s: a healthy stub exposed %d series per scrape", name, n)
	}
}

// waitDown sends misses until the stub reports the upstream down: the stub marks an upstream
// down on a failed attempt, and only a query makes one.
func waitDown(t *testing.T, s *stub, u *upstream) {
	t.Helper()
	i := 0
	waitFor(t, u.addr+" marked down", func() bool {
		s.query(t, fmt.Sprintf("probe-%d.example.org", i))
		i++
		return strings.Contains(string(s.scrape(t)), `podns_upstream_healthy{upstream="`+u.addr+`"} 0`)
	})
}
