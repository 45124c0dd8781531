package monitoring_test

import (
	"encoding/json"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// promqlParser is the parser Prometheus itself uses for rules and queries, with its default options
// (no experimental functions: the artifacts must work on a stock Prometheus).
var promqlParser = parser.NewParser(parser.Options{})

// externalMetrics are the metrics the artifacts may read that the stub does not expose, each
// from a component every kube-prometheus-style install runs.
var externalMetrics = map[string]string{
	"kube_pod_container_status_restarts_total": "kube-state-metrics",
	"container_memory_working_set_bytes":       "cAdvisor (kubelet)",
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// loadPrometheusRule decodes prometheusrule.yaml strictly into prometheus-operator's own type,
// then parses its groups with Prometheus's rule-file parser, strictly (unknown fields are errors),
// which also parses every expression and annotation template.
func loadPrometheusRule(t *testing.T) *rulefmt.RuleGroups {
	t.Helper()
	var pr monitoringv1.PrometheusRule
	if err := yaml.UnmarshalStrict(readFile(t, "prometheusrule.yaml"), &pr); err != nil {
		t.Fatalf("prometheusrule.yaml: %v", err)
	}
	if pr.Kind != "PrometheusRule" || pr.APIVersion != "monitoring.coreos.com/v1" {
		t.Fatalf("prometheusrule.yaml is %s %s", pr.APIVersion, pr.Kind)
	}
	spec, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(spec, false, model.LegacyValidation, promqlParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("prometheusrule.yaml: %v", err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	return groups
}

// alertRules returns every alerting rule, by name.
func alertRules(t *testing.T) map[string]rulefmt.Rule {
	t.Helper()
	out := map[string]rulefmt.Rule{}
	for _, g := range loadPrometheusRule(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("rule %q is not an alert; the recording rules would need a test of their own", r.Record)
				continue
			}
			out[r.Alert] = r
		}
	}
	return out
}

// wantAlerts are the alerts the rules must contain, each with its runbook section in README.md
// and a scenario in rules_test.go.
var wantAlerts = []string{
	"PodnsUpstreamsDown", "PodnsServfailRatioHigh", "PodnsServingStale",
	"PodnsMissLatencyHigh", "PodnsStubRestarting", "PodnsUpstreamUDPFallback",
}

func TestRulesParseAndCarryTheirRunbook(t *testing.T) {
	rules := alertRules(t)
	readme := string(readFile(t, "README.md"))
	var names []string
	for name, r := range rules {
		names = append(names, name)
		expr, err := promqlParser.ParseExpr(r.Expr)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		// One alert per pod at most: every alert's result is aggregated by namespace and pod.
		if agg, ok := outerAggregation(expr); !ok || !slices.Equal(agg, []string{"namespace", "pod"}) {
			t.Errorf("%s: the result is not aggregated by (namespace, pod): %v", name, agg)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", name, s)
		}
		for _, a := range []string{"summary", "description", "runbook_url"} {
			if r.Annotations[a] == "" {
				t.Errorf("%s: no %s annotation", name, a)
			}
		}
		anchor := strings.ToLower(name)
		if !strings.HasSuffix(r.Annotations["runbook_url"], "/monitoring/README.md#"+anchor) {
			t.Errorf("%s: runbook_url %q does not point at README.md#%s", name, r.Annotations["runbook_url"], anchor)
		}
		if !regexp.MustCompile(`(?m)^### ` + name + `$`).MatchString(readme) {
			t.Errorf("%s: README.md has no runbook section \"### %s\"", name, name)
		}
	}
	slices.Sort(names)
	want := slices.Sorted(slices.Values(wantAlerts))
	if !slices.Equal(names, want) {
		t.Errorf("alerts %v, want %v", names, want)
	}
}

// outerAggregation returns the grouping labels of the aggregation that produces the expression's
// result: through comparisons and `and`, which keep the left-hand side's labels.
func outerAggregation(e parser.Expr) ([]string, bool) {
	switch n := e.(type) {
	case *parser.ParenExpr:
		return outerAggregation(n.Expr)
	case *parser.BinaryExpr:
		return outerAggregation(n.LHS)
	case *parser.AggregateExpr:
		if n.Without {
			return nil, false
		}
		return slices.Sorted(slices.Values(n.Grouping)), true
	case *parser.Call:
		// histogram_quantile keeps the labels of its vector argument, less le.
		if n.Func.Name == "histogram_quantile" {
			g, ok := outerAggregation(n.Args[1])
			return slices.DeleteFunc(g, func(l string) bool { return l == "le" }), ok
		}
	}
	return nil, false
}

// metricNames returns the metric names an expression selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := promqlParser.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	var out []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
			if name == "" {
				t.Errorf("%s: a selector without a metric name", expr)
			}
			out = append(out, name)
		}
		return nil
	})
	return out
}

// dashboard is the part of Grafana's dashboard JSON model the tests read.
type dashboard struct {
	Title      string `json:"title"`
	UID        any    `json:"uid"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasourceRef  `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, "dashboard.json"), &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	return d
}

// grafanaVars are the variables the dashboard's queries may use, with the value they get for
// parsing and evaluation: Grafana's $__rate_interval is four scrape intervals at 30 s, and the
// namespace and pod variables' "All" value is .* (allValue).
var grafanaVars = strings.NewReplacer("$__rate_interval", "2m", "$namespace", ".*", "$pod", ".*")

// dashboardQuery is one PromQL query of the dashboard, with its variables substituted.
type dashboardQuery struct{ where, expr string }

// dashboardQueries returns every query of the dashboard: the panels' targets and the query
// variables' label_values() selectors.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	d := loadDashboard(t)
	var out []dashboardQuery
	add := func(where, q string) {
		e := grafanaVars.Replace(q)
		if strings.Contains(e, "$") {
			t.Errorf("%s: an unknown variable in %q", where, q)
			return
		}
		out = append(out, dashboardQuery{where, e})
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				add("panel "+p.Title, tg.Expr)
			}
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+),\s*[a-z_]+\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		add("variable "+v.Name, m[1])
	}
	return out
}

func TestDashboardQueriesParseAndUseTheDatasourceVariable(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" {
		t.Error("no title")
	}
	// The dashboard must load in any Grafana: no data source UID (nor dashboard UID) from the
	// machine it was drawn on; every query goes to the data source the user picks.
	if d.UID != nil {
		t.Errorf("dashboard uid %v is hard-coded", d.UID)
	}
	var vars []string
	for _, v := range d.Templating.List {
		vars = append(vars, v.Name)
		if v.Name == "datasource" && v.Type != "datasource" {
			t.Errorf("variable datasource has type %q", v.Type)
		}
		if v.Datasource != nil && *v.Datasource != (datasourceRef{"prometheus", "${datasource}"}) {
			t.Errorf("variable %s uses data source %+v", v.Name, *v.Datasource)
		}
	}
	if !slices.Contains(vars, "datasource") {
		t.Fatal("no datasource variable")
	}
	var walk func([]panel)
	panels := 0
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			panels++
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refs := []*datasourceRef{p.Datasource}
			for _, tg := range p.Targets {
				refs = append(refs, tg.Datasource)
			}
			for _, r := range refs {
				if r == nil || *r != (datasourceRef{"prometheus", "${datasource}"}) {
					t.Errorf("panel %q: data source %+v, want the ${datasource} variable", p.Title, r)
				}
			}
		}
	}
	walk(d.Panels)
	if panels == 0 {
		t.Fatal("no panels")
	}
	for _, q := range dashboardQueries(t) {
		if _, err := promqlParser.ParseExpr(q.expr); err != nil {
			t.Errorf("%s: %v", q.where, err)
		}
	}
}

// The dashboard covers what an SRE looks at first (the list): each is a panel title.
func TestDashboardHasThePanels(t *testing.T) {
	var titles []string
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			titles = append(titles, p.Title)
			walk(p.Panels)
		}
	}
	walk(loadDashboard(t).Panels)
	for _, want := range []string{"Cache hit ratio", "Answers by rcode", "Cache-miss latency", "Upstream health", "Stale answers served", "Memory", "Stub restarts"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q (have %q)", want, titles)
		}
	}
}

// kustomize build of monitoring/ (what `kubectl apply -k monitoring/` applies) gives the
// PodMonitor, the PrometheusRule and the dashboard ConfigMap, unchanged from the files.
func TestKustomizationInstallsTheArtifacts(t *testing.T) {
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), ".")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, r := range rm.Resources() {
		id := r.GetKind() + "/" + r.GetName()
		got[id] = true
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		switch id {
		case "PodMonitor/podns":
			var pm monitoringv1.PodMonitor
			if err := yaml.UnmarshalStrict(y, &pm); err != nil {
				t.Errorf("%s: %v", id, err)
			}
			checkPodMonitor(t, &pm)
		case "PrometheusRule/podns":
			if want := yamlJSON(t, readFile(t, "prometheusrule.yaml")); yamlJSON(t, y) != want {
				t.Errorf("%s differs from prometheusrule.yaml", id)
			}
		case "ConfigMap/podns-dashboard":
			var cm struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				Data map[string]string `json:"data"`
			}
			if err := yaml.Unmarshal(y, &cm); err != nil {
				t.Fatal(err)
			}
			if cm.Metadata.Labels["grafana_dashboard"] != "1" {
				t.Errorf("%s: labels %v lack grafana_dashboard: \"1\" (the Grafana sidecar's default)", id, cm.Metadata.Labels)
			}
			if cm.Data["podns.json"] != string(readFile(t, "dashboard.json")) {
				t.Errorf("%s: podns.json is not dashboard.json", id)
			}
		default:
			t.Errorf("unexpected resource %s", id)
		}
	}
	for _, id := range []string{"PodMonitor/podns", "PrometheusRule/podns", "ConfigMap/podns-dashboard"} {
		if !got[id] {
			t.Errorf("no %s", id)
		}
	}
}

func yamlJSON(t *testing.T, y []byte) string {
	t.Helper()
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatal(err)
	}
	return string(j)
}

// loadPodMonitor decodes podmonitor.yaml strictly into prometheus-operator's own type.
func loadPodMonitor(t *testing.T) *monitoringv1.PodMonitor {
	t.Helper()
	var pm monitoringv1.PodMonitor
	if err := yaml.UnmarshalStrict(readFile(t, "podmonitor.yaml"), &pm); err != nil {
		t.Fatalf("podmonitor.yaml: %v", err)
	}
	return &pm
}

// metricRelabelings converts the PodMonitor's metricRelabelings into Prometheus's own relabel
// configs, for the test's scrapes to drop what a real Prometheus would. Only the actions the
// PodMonitor uses are converted; another one fails the test rather than being ignored.
func metricRelabelings(t *testing.T) []*relabel.Config {
	t.Helper()
	var out []*relabel.Config
	for _, rc := range loadPodMonitor(t).Spec.PodMetricsEndpoints[0].MetricRelabelConfigs {
		action := relabel.Action(strings.ToLower(rc.Action))
		if action != relabel.Drop && action != relabel.Keep {
			t.Fatalf("metricRelabelings action %q: the test converts only drop and keep", rc.Action)
		}
		re, err := relabel.NewRegexp(rc.Regex)
		if err != nil {
			t.Fatal(err)
		}
		c := &relabel.Config{Action: action, Regex: re, Separator: ";"}
		for _, l := range rc.SourceLabels {
			c.SourceLabels = append(c.SourceLabels, model.LabelName(l))
		}
		out = append(out, c)
	}
	return out
}

func TestPodMonitorScrapesTheStubPort(t *testing.T) {
	checkPodMonitor(t, loadPodMonitor(t))
}

// checkPodMonitor: the PodMonitor scrapes the stub's container port by the name the Kustomize
// component gives it, on the path the stub serves, at the interval the rules' windows assume.
func checkPodMonitor(t *testing.T, pm *monitoringv1.PodMonitor) {
	t.Helper()
	var iv struct {
		Spec struct {
			StubContainer struct {
				Ports []struct {
					Name          string `json:"name"`
					ContainerPort int    `json:"containerPort"`
				} `json:"ports"`
			} `json:"stubContainer"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(readFile(t, "../injector-manifests/components/podns-common/injector-values.yaml"), &iv); err != nil {
		t.Fatal(err)
	}
	portName := ""
	for _, p := range iv.Spec.StubContainer.Ports {
		if p.ContainerPort == 9253 { // PODNS_HTTP_LISTEN's default port
			portName = p.Name
		}
	}
	if portName == "" {
		t.Fatal("the component's podns-stub container has no named port 9253")
	}
	if !pm.Spec.NamespaceSelector.Any {
		t.Error("namespaceSelector.any is not true: podns runs in every namespace")
	}
	if len(pm.Spec.Selector.MatchLabels)+len(pm.Spec.Selector.MatchExpressions) != 0 {
		t.Errorf("selector %+v: the component adds no pod label to select on; the port name selects", pm.Spec.Selector)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(pm.Spec.PodMetricsEndpoints))
	}
	ep := pm.Spec.PodMetricsEndpoints[0]
	if ep.Port == nil || *ep.Port != portName {
		t.Errorf("endpoint port %v, want the component's port name %q", ptrString(ep.Port), portName)
	}
	if ep.Path != "/metrics" {
		t.Errorf("path %q", ep.Path)
	}
	if string(ep.Interval) != scrapeInterval.String() {
		t.Errorf("interval %q, want 30s (the rules' windows and this test's timeline assume it)", ep.Interval)
	}
}

func ptrString(p *string) string {
	if p == nil {
		return "<unset>"
	}
	return *p
}
