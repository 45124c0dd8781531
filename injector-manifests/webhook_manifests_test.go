package manifests_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/pod-security-admission/api"
)

// The webhook install (webhook/, W-design.md "Manifests"): what the API server, the webhook
// binary (webhook/config defaults) and the README rely on.
const (
	webhookDir       = "webhook"
	webhookNamespace = "podns-system"
	webhookName      = "podns-webhook" // Deployment, Service, ServiceAccount, MWC
	webhookImage     = "ghcr.io/podns/webhook:v0.1.0"
	caSecret         = "podns-webhook-ca"
	certDir          = "/run/podns-webhook/certs"
	admissionPort    = 9443
	webhookHTTPPort  = 9254
)

func init() {
	// The webhook's kinds, beside the workloads render_test.go knows. cert-manager's types are not
	// a dependency of this module: its two objects decode into maps and are checked by path.
	for kind, mk := range map[string]func() any{
		"Namespace":                    func() any { return &corev1.Namespace{} },
		"ServiceAccount":               func() any { return &corev1.ServiceAccount{} },
		"ClusterRole":                  func() any { return &rbacv1.ClusterRole{} },
		"ClusterRoleBinding":           func() any { return &rbacv1.ClusterRoleBinding{} },
		"Role":                         func() any { return &rbacv1.Role{} },
		"RoleBinding":                  func() any { return &rbacv1.RoleBinding{} },
		"PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
		"MutatingWebhookConfiguration": func() any { return &admissionv1.MutatingWebhookConfiguration{} },
		"Issuer":                       func() any { return &map[string]any{} },
		"Certificate":                  func() any { return &map[string]any{} },
	} {
		newTyped[kind] = mk
	}
}

// kindNames lists a rendering's objects as "Kind/namespace/name", sorted.
func kindNames(r rendering) []string {
	var out []string
	for _, o := range r {
		ns := ""
		if m, ok := o.Obj.(*map[string]any); ok {
			md, _ := (*m)["metadata"].(map[string]any)
			ns, _ = md["namespace"].(string)
		} else {
			ns = objectNamespace(o.Obj)
		}
		out = append(out, o.Kind+"/"+ns+"/"+o.Name)
	}
	slices.Sort(out)
	return out
}

var webhookObjects = []string{
	"ClusterRole//podns-webhook",
	"ClusterRoleBinding//podns-webhook",
	"Deployment/podns-system/podns-webhook",
	"MutatingWebhookConfiguration//podns-webhook",
	"Namespace//podns-system",
	"PodDisruptionBudget/podns-system/podns-webhook",
	"Role/kube-system/podns-webhook-kube-dns",
	"Role/podns-system/podns-webhook-ca",
	"RoleBinding/kube-system/podns-webhook-kube-dns",
	"RoleBinding/podns-system/podns-webhook-ca",
	"Service/podns-system/podns-webhook",
	"ServiceAccount/podns-system/podns-webhook",
}

// TestWebhookObjects: `kubectl apply -k webhook` installs exactly these objects, the same under
// krusty (the kustomize/api of go.mod) and kubectl's built-in kustomize.
func TestWebhookObjects(t *testing.T) {
	r := render(t, webhookDir)
	if d := cmp.Diff(webhookObjects, kindNames(r)); d != "" {
		t.Errorf("objects (-want +got):\n%s", d)
	}
	ns := r.get(t, "Namespace", webhookNamespace).Obj.(*corev1.Namespace)
	if got := ns.Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace enforces %q, want restricted", got)
	}
	t.Run("kubectl", func(t *testing.T) { sameResources(t, r, kubectlKustomize(t, webhookDir)) })
}

// TestWebhookRBAC: least privilege. The webhook reads and writes its one MWC, its one CA Secret
// (create excepted: RBAC cannot limit it by name) and reads the one kube-dns Service; no list,
// watch or wildcard anywhere, and every binding grants its role to the webhook's ServiceAccount
// only.
func TestWebhookRBAC(t *testing.T) {
	r := render(t, webhookDir)
	type rule struct {
		group, resource, name string
		verbs                 []string
	}
	flat := func(rules []rbacv1.PolicyRule) []rule {
		var out []rule
		for _, p := range rules {
			if len(p.NonResourceURLs) > 0 {
				t.Errorf("non-resource rule %v", p)
			}
			names := p.ResourceNames
			if len(names) == 0 {
				names = []string{""}
			}
			for _, g := range p.APIGroups {
				for _, res := range p.Resources {
					for _, n := range names {
						out = append(out, rule{g, res, n, slices.Sorted(slices.Values(p.Verbs))})
					}
				}
			}
		}
		return out
	}
	for _, c := range []struct {
		kind, name string
		want       []rule
	}{
		{"ClusterRole", webhookName, []rule{{"admissionregistration.k8s.io", "mutatingwebhookconfigurations", webhookName, []string{"get", "update"}}}},
		{"Role", caSecret, []rule{{"", "secrets", caSecret, []string{"get", "update"}}, {"", "secrets", "", []string{"create"}}}},
		{"Role", "podns-webhook-kube-dns", []rule{{"", "services", "kube-dns", []string{"get"}}}},
	} {
		var got []rule
		switch o := r.get(t, c.kind, c.name).Obj.(type) {
		case *rbacv1.ClusterRole:
			got = flat(o.Rules)
		case *rbacv1.Role:
			got = flat(o.Rules)
		}
		if d := cmp.Diff(c.want, got, cmp.AllowUnexported(rule{})); d != "" {
			t.Errorf("%s %s rules (-want +got):\n%s", c.kind, c.name, d)
		}
	}
	if ns := objectNamespace(r.get(t, "Role", caSecret).Obj); ns != webhookNamespace {
		t.Errorf("the CA Secret's Role is in %q, want the webhook's namespace", ns)
	}
	if ns := objectNamespace(r.get(t, "Role", "podns-webhook-kube-dns").Obj); ns != "kube-system" {
		t.Errorf("the kube-dns Role is in %q, want kube-system", ns)
	}
	sa := []rbacv1.Subject{{Kind: "ServiceAccount", Name: webhookName, Namespace: webhookNamespace}}
	for _, c := range []struct{ kind, name, roleKind, role string }{
		{"ClusterRoleBinding", webhookName, "ClusterRole", webhookName},
		{"RoleBinding", caSecret, "Role", caSecret},
		{"RoleBinding", "podns-webhook-kube-dns", "Role", "podns-webhook-kube-dns"},
	} {
		var ref rbacv1.RoleRef
		var subjects []rbacv1.Subject
		switch o := r.get(t, c.kind, c.name).Obj.(type) {
		case *rbacv1.ClusterRoleBinding:
			ref, subjects = o.RoleRef, o.Subjects
		case *rbacv1.RoleBinding:
			ref, subjects = o.RoleRef, o.Subjects
		}
		if ref != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: c.roleKind, Name: c.role}) {
			t.Errorf("%s %s refers to %v", c.kind, c.name, ref)
		}
		if d := cmp.Diff(sa, subjects); d != "" {
			t.Errorf("%s %s subjects (-want +got):\n%s", c.kind, c.name, d)
		}
	}
	dep := r.get(t, "Deployment", webhookName).Obj.(*appsv1.Deployment)
	if dep.Spec.Template.Spec.ServiceAccountName != webhookName {
		t.Errorf("Deployment runs as ServiceAccount %q", dep.Spec.Template.Spec.ServiceAccountName)
	}
}

// TestWebhookDeployment: two replicas spread over nodes and kept through drains, the image, the
// probes on the port the binary serves them on, the namespace from the downward API, a pod that
// meets PSS restricted, and the Service in front of the admission port.
func TestWebhookDeployment(t *testing.T) {
	r := render(t, webhookDir)
	dep := r.get(t, "Deployment", webhookName).Obj.(*appsv1.Deployment)
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", dep.Spec.Replicas)
	}
	spec := dep.Spec.Template.Spec
	podLabels := dep.Spec.Template.Labels
	if sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector); err != nil || !sel.Matches(labelSet(podLabels)) {
		t.Errorf("Deployment selector %v does not match its pods %v (%v)", dep.Spec.Selector, podLabels, err)
	}
	// A priority class of the system-* kind would be refused outside kube-system on clusters
	// whose quota admission limits it (the manifest's comment): the install must work anywhere.
	if spec.PriorityClassName != "" {
		t.Errorf("priorityClassName %q: see the comment in deployment.yaml", spec.PriorityClassName)
	}
	aff := spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || len(aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		len(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) != 0 {
		t.Fatalf("want one preferred pod anti-affinity term and no required one, got %+v", aff)
	}
	term := aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm
	if term.TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("anti-affinity topologyKey %q", term.TopologyKey)
	}
	if sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector); err != nil || !sel.Matches(labelSet(podLabels)) {
		t.Errorf("anti-affinity selector %v does not match the webhook's pods (%v)", term.LabelSelector, err)
	}

	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("containers %v, init containers %v: want the webhook alone", names(spec.Containers), names(spec.InitContainers))
	}
	c := spec.Containers[0]
	probe := func(path string, period int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString("http")}},
			PeriodSeconds: period, TimeoutSeconds: 1, FailureThreshold: 3,
		}
	}
	want := corev1.Container{
		Name:  "webhook",
		Image: webhookImage,
		Env: []corev1.EnvVar{{Name: "PODNS_WEBHOOK_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
			FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}},
		Ports: []corev1.ContainerPort{
			{Name: "https", ContainerPort: admissionPort, Protocol: corev1.ProtocolTCP},
			{Name: "http", ContainerPort: webhookHTTPPort, Protocol: corev1.ProtocolTCP},
		},
		ReadinessProbe: probe("/readyz", 5),
		LivenessProbe:  probe("/healthz", 10),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("20m"), corev1.ResourceMemory: resource.MustParse("48Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(true),
			RunAsUser:                ptr(int64(65532)),
			RunAsGroup:               ptr(int64(65532)),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("webhook container (-want +got):\n%s", d)
	}
	for _, v := range []api.Version{api.LatestVersion(), api.MajorMinorVersion(1, 25)} {
		if res := evaluate(t, api.LevelRestricted, v, &dep.Spec.Template); !res.Allowed {
			t.Errorf("webhook pod fails restricted@%s: %v %v", v, res.ForbiddenReasons, res.ForbiddenDetails)
		}
	}

	pdb := r.get(t, "PodDisruptionBudget", webhookName).Obj.(*policyv1.PodDisruptionBudget)
	if pdb.Spec.MinAvailable == nil || *pdb.Spec.MinAvailable != intstr.FromInt32(1) || pdb.Spec.MaxUnavailable != nil {
		t.Errorf("PDB minAvailable %v maxUnavailable %v, want minAvailable 1", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
	if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !sel.Matches(labelSet(podLabels)) {
		t.Errorf("PDB selector %v does not match the webhook's pods (%v)", pdb.Spec.Selector, err)
	}

	svc := r.get(t, "Service", webhookName).Obj.(*corev1.Service)
	for k, v := range svc.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("Service selector %v does not match the webhook's pods %v", svc.Spec.Selector, podLabels)
		}
	}
	if len(svc.Spec.Selector) == 0 {
		t.Error("Service selects nothing")
	}
	wantPorts := []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromString("https"), Protocol: corev1.ProtocolTCP}}
	if d := cmp.Diff(wantPorts, svc.Spec.Ports); d != "" {
		t.Errorf("Service ports (-want +got):\n%s", d)
	}
}

func labelSet(m map[string]string) labels.Set { return labels.Set(m) }

// TestWebhookMatchesBinaryDefaults: the manifests set no listen address, certificate directory,
// MWC, Service or namespace name, and rely on the webhook binary's defaults (webhook/config, read
// as source) matching the ports, the mount path and the objects' names.
func TestWebhookMatchesBinaryDefaults(t *testing.T) {
	const src = "../webhook/config/config.go"
	if _, err := os.Stat(src); os.IsNotExist(err) {
		t.Skip(src + " is not on this branch yet (issue 15: the webhook binary's settings)")
	}
	f, err := parser.ParseFile(token.NewFileSet(), src, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		if field, ok := n.(*ast.Field); ok && field.Tag != nil {
			raw, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				t.Fatal(err)
			}
			if name := reflect.StructTag(raw).Get("env"); name != "" {
				defaults[name] = reflect.StructTag(raw).Get("envDefault")
			}
		}
		return true
	})
	for name, want := range map[string]string{
		"PODNS_WEBHOOK_LISTEN":        ":" + strconv.Itoa(admissionPort),
		"PODNS_HTTP_LISTEN":           ":" + strconv.Itoa(webhookHTTPPort),
		"PODNS_CERT_MODE":             "self",
		"PODNS_CERT_DIR":              certDir,
		"PODNS_WEBHOOK_CONFIGURATION": webhookName,
		"PODNS_WEBHOOK_SERVICE":       webhookName,
		"PODNS_WEBHOOK_NAMESPACE":     webhookNamespace,
	} {
		got, ok := defaults[name]
		if !ok {
			t.Errorf("%s: no variable %s", src, name)
		} else if got != want {
			t.Errorf("%s defaults to %q, the manifests assume %q", name, got, want)
		}
	}
}

// TestWebhookConfiguration: the two webhooks exactly as W-design.md "Selection and modes".
func TestWebhookConfiguration(t *testing.T) {
	mwc := render(t, webhookDir).get(t, "MutatingWebhookConfiguration", webhookName).Obj.(*admissionv1.MutatingWebhookConfiguration)
	if len(mwc.Webhooks) != 2 {
		t.Fatalf("%d webhooks, want 2", len(mwc.Webhooks))
	}
	nsSel := func(modeOp metav1.LabelSelectorOperator) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "podns.io/inject", Operator: metav1.LabelSelectorOpIn, Values: []string{"enabled"}},
			{Key: "podns.io/mode", Operator: modeOp, Values: []string{"restricted"}},
			{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system", webhookNamespace}},
		}}
	}
	port := int32(443)
	for i, c := range []struct {
		name, path string
		modeOp     metav1.LabelSelectorOperator
	}{
		{"sidecar.podns.io", "/mutate-pod", metav1.LabelSelectorOpNotIn},
		{"restricted.podns.io", "/mutate-pod-restricted", metav1.LabelSelectorOpIn},
	} {
		w := mwc.Webhooks[i]
		t.Run(c.name, func(t *testing.T) {
			path := c.path
			want := admissionv1.MutatingWebhook{
				Name:                    c.name,
				AdmissionReviewVersions: []string{"v1"},
				// No caBundle: the webhook (or cainjector) writes it, and a re-apply must not
				// blank it.
				ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{
					Name: webhookName, Namespace: webhookNamespace, Path: &path, Port: &port}},
				Rules: []admissionv1.RuleWithOperations{{
					Operations: []admissionv1.OperationType{admissionv1.Create},
					Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
						Resources: []string{"pods"}, Scope: ptr(admissionv1.NamespacedScope)},
				}},
				NamespaceSelector: nsSel(c.modeOp),
				ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
					{Key: "podns.io/inject", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}}}},
				MatchConditions:    w.MatchConditions, // below
				ReinvocationPolicy: ptr(admissionv1.IfNeededReinvocationPolicy),
				SideEffects:        ptr(admissionv1.SideEffectClassNone),
				TimeoutSeconds:     ptr(int32(5)),
				FailurePolicy:      ptr(admissionv1.Fail),
				MatchPolicy:        ptr(admissionv1.Equivalent),
			}
			if d := cmp.Diff(want, w); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			checkMatchConditions(t, w.MatchConditions)
		})
	}
	if d := cmp.Diff(mwc.Webhooks[0].MatchConditions, mwc.Webhooks[1].MatchConditions); d != "" {
		t.Errorf("the two webhooks' matchConditions differ:\n%s", d)
	}
}

// checkMatchConditions checks what can be checked without a CEL compiler (not a dependency of
// this module; the API server compiles them when the MWC is created, which the API-server test
// does): each condition is there, names the fields and values W-design.md gives, guards every
// optional field with has() (a CEL error there fails the admission under failurePolicy Fail),
// and is lexically well formed (balanced brackets, closed strings).
func checkMatchConditions(t *testing.T, mcs []admissionv1.MatchCondition) {
	t.Helper()
	want := map[string][]string{
		"not-host-network": {"has(object.spec.hostNetwork)", "object.spec.hostNetwork"},
		"cluster-dns-policy": {"has(object.spec.dnsPolicy)", "'Default'", "'None'",
			"has(object.metadata.annotations)", "'podns.io/injected' in object.metadata.annotations"},
		"not-injected-in-order": {"has(object.metadata.annotations)", "'podns.io/injected' in object.metadata.annotations",
			"has(object.spec.initContainers)", "startsWith('restricted ')",
			"object.spec.initContainers[0].name == 'podns-stub'",
			"object.spec.initContainers[0].name == 'podns-init'",
			"object.spec.initContainers[1].name == 'podns-stub'",
			"size(object.spec.initContainers) >= 1", "size(object.spec.initContainers) >= 2"},
	}
	var got []string
	for _, mc := range mcs {
		got = append(got, mc.Name)
		for _, s := range want[mc.Name] {
			if !strings.Contains(mc.Expression, s) {
				t.Errorf("matchCondition %s lacks %q: %s", mc.Name, s, mc.Expression)
			}
		}
		if err := celLexicallyWellFormed(mc.Expression); err != "" {
			t.Errorf("matchCondition %s: %s: %s", mc.Name, err, mc.Expression)
		}
		// Every optional field the expression reads is tested with has() first.
		for _, f := range []string{"object.spec.hostNetwork", "object.spec.dnsPolicy", "object.metadata.annotations", "object.spec.initContainers"} {
			if strings.Contains(mc.Expression, f) && !strings.Contains(mc.Expression, "has("+f+")") {
				t.Errorf("matchCondition %s reads %s without has()", mc.Name, f)
			}
		}
		if regexp.MustCompile(`\b(oldObject|request|authorizer)\b`).MatchString(mc.Expression) {
			t.Errorf("matchCondition %s reads more than the pod: %s", mc.Name, mc.Expression)
		}
	}
	if d := cmp.Diff([]string{"not-host-network", "cluster-dns-policy", "not-injected-in-order"}, got); d != "" {
		t.Errorf("matchConditions (-want +got):\n%s", d)
	}
}

// celLexicallyWellFormed returns "" when every ( [ { is closed in order and every quoted string
// ends, else what is wrong.
func celLexicallyWellFormed(expr string) string {
	var stack []rune
	closing := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for i := 0; i < len(expr); i++ {
		switch ch := rune(expr[i]); ch {
		case '\'', '"':
			end := strings.IndexRune(expr[i+1:], ch)
			if end < 0 {
				return "unterminated string"
			}
			i += end + 1
		case '(', '[', '{':
			stack = append(stack, ch)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != closing[ch] {
				return "unbalanced " + string(ch)
			}
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) > 0 {
		return "unclosed " + string(stack)
	}
	return ""
}

func TestCELLexicalCheck(t *testing.T) {
	for expr, want := range map[string]string{
		"!(has(a.b) && a.b in ['x', 'y'])": "",
		"(a.b":                             "unclosed (",
		"a.b)":                             "unbalanced )",
		"a == 'x":                          "unterminated string",
		"[a)":                              "unbalanced )",
		"a == ')'":                         "",
	} {
		if got := celLexicallyWellFormed(expr); got != want {
			t.Errorf("%s: got %q, want %q", expr, got, want)
		}
	}
}

// TestFailurePolicyIgnore: the component turns both webhooks' failurePolicy to Ignore and
// changes nothing else in the install.
func TestFailurePolicyIgnore(t *testing.T) {
	fSys := memCopy(t, webhookDir, "/m/webhook")
	write(t, fSys, "/m/app/kustomization.yaml",
		"resources: [../webhook]\ncomponents: [../webhook/components/failure-policy-ignore]\n")
	got := build(t, fSys, "/m/app")
	base := render(t, webhookDir)
	if d := cmp.Diff(kindNames(base), kindNames(got)); d != "" {
		t.Fatalf("objects (-base +with component):\n%s", d)
	}
	for _, o := range got {
		mwc, ok := o.Obj.(*admissionv1.MutatingWebhookConfiguration)
		if !ok {
			continue
		}
		for i := range mwc.Webhooks {
			if p := mwc.Webhooks[i].FailurePolicy; p == nil || *p != admissionv1.Ignore {
				t.Errorf("%s: failurePolicy %v, want Ignore", mwc.Webhooks[i].Name, p)
			}
			mwc.Webhooks[i].FailurePolicy = ptr(admissionv1.Fail)
		}
	}
	for _, o := range base {
		if d := cmp.Diff(o.Obj, got.get(t, o.Kind, o.Name).Obj); d != "" {
			t.Errorf("%s/%s: more than failurePolicy changed (-base +with component):\n%s", o.Kind, o.Name, d)
		}
	}
}

// TestCertManagerOverlay: the overlay adds the Issuer and Certificate, hands the webhook the
// Secret in external mode, asks cainjector for the caBundle, drops the RBAC external mode does
// not use, and changes nothing else.
func TestCertManagerOverlay(t *testing.T) {
	const dir = webhookDir + "/cert-manager"
	r := render(t, dir)
	var wantObjects []string
	for _, o := range webhookObjects {
		if !strings.HasPrefix(o, "ClusterRole") && !strings.HasSuffix(o, "/"+caSecret) {
			wantObjects = append(wantObjects, o)
		}
	}
	wantObjects = append(wantObjects, "Certificate/podns-system/podns-webhook", "Issuer/podns-system/podns-webhook-selfsigned")
	slices.Sort(wantObjects)
	if d := cmp.Diff(wantObjects, kindNames(r)); d != "" {
		t.Errorf("objects (-want +got):\n%s", d)
	}

	cert := *r.get(t, "Certificate", webhookName).Obj.(*map[string]any)
	issuer := *r.get(t, "Issuer", "podns-webhook-selfsigned").Obj.(*map[string]any)
	at := func(m map[string]any, path ...string) any {
		var v any = m
		for _, p := range path {
			mm, _ := v.(map[string]any)
			v = mm[p]
		}
		return v
	}
	if at(cert, "apiVersion") != "cert-manager.io/v1" || at(issuer, "apiVersion") != "cert-manager.io/v1" {
		t.Errorf("apiVersions %v, %v", at(cert, "apiVersion"), at(issuer, "apiVersion"))
	}
	// Like every object of the base: `kubectl get -l app.kubernetes.io/part-of=podns` lists them.
	for _, o := range []map[string]any{cert, issuer} {
		if got := at(o, "metadata", "labels", "app.kubernetes.io/part-of"); got != "podns" {
			t.Errorf("%v %v: label app.kubernetes.io/part-of %v, want podns", o["kind"], at(o, "metadata", "name"), got)
		}
	}
	if at(issuer, "spec", "selfSigned") == nil {
		t.Errorf("Issuer is not selfSigned: %v", issuer["spec"])
	}
	if at(cert, "spec", "issuerRef", "name") != "podns-webhook-selfsigned" || at(cert, "spec", "issuerRef", "kind") != "Issuer" {
		t.Errorf("Certificate issuerRef %v", at(cert, "spec", "issuerRef"))
	}
	dnsNames, _ := at(cert, "spec", "dnsNames").([]any)
	// The name the API server dials for a service reference.
	if !slices.Contains(dnsNames, any(webhookName+"."+webhookNamespace+".svc")) {
		t.Errorf("Certificate dnsNames %v lack %s.%s.svc", dnsNames, webhookName, webhookNamespace)
	}
	secretName, _ := at(cert, "spec", "secretName").(string)

	dep := r.get(t, "Deployment", webhookName).Obj.(*appsv1.Deployment)
	spec := dep.Spec.Template.Spec
	wantVol := []corev1.Volume{{Name: "certs", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secretName}}}}
	if d := cmp.Diff(wantVol, spec.Volumes); d != "" || secretName == "" {
		t.Errorf("volumes (-want +got), the Certificate's Secret %q:\n%s", secretName, d)
	}
	c := spec.Containers[0]
	if d := cmp.Diff([]corev1.VolumeMount{{Name: "certs", MountPath: certDir, ReadOnly: true}}, c.VolumeMounts); d != "" {
		t.Errorf("mounts (-want +got):\n%s", d)
	}
	if !slices.Contains(c.Env, corev1.EnvVar{Name: "PODNS_CERT_MODE", Value: "external"}) {
		t.Errorf("env %v lacks PODNS_CERT_MODE=external", c.Env)
	}
	for _, v := range []api.Version{api.LatestVersion(), api.MajorMinorVersion(1, 25)} {
		if res := evaluate(t, api.LevelRestricted, v, &dep.Spec.Template); !res.Allowed {
			t.Errorf("webhook pod fails restricted@%s: %v %v", v, res.ForbiddenReasons, res.ForbiddenDetails)
		}
	}
	mwc := r.get(t, "MutatingWebhookConfiguration", webhookName).Obj.(*admissionv1.MutatingWebhookConfiguration)
	if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], webhookNamespace+"/"+webhookName; got != want {
		t.Errorf("inject-ca-from %q, want %q (the Certificate)", got, want)
	}
	if at(cert, "metadata", "name") != webhookName || at(cert, "metadata", "namespace") != webhookNamespace {
		t.Errorf("Certificate is %v/%v, the annotation names %s/%s", at(cert, "metadata", "namespace"), at(cert, "metadata", "name"), webhookNamespace, webhookName)
	}

	// Everything else as in the base.
	base := render(t, webhookDir)
	baseDep := base.get(t, "Deployment", webhookName).Obj.(*appsv1.Deployment).DeepCopy()
	bc := &baseDep.Spec.Template.Spec.Containers[0]
	bc.Env = append([]corev1.EnvVar{{Name: "PODNS_CERT_MODE", Value: "external"}}, bc.Env...)
	bc.VolumeMounts = c.VolumeMounts
	baseDep.Spec.Template.Spec.Volumes = spec.Volumes
	if d := cmp.Diff(baseDep, dep); d != "" {
		t.Errorf("Deployment: more than the certificate changed (-base +overlay):\n%s", d)
	}
	baseMWC := base.get(t, "MutatingWebhookConfiguration", webhookName).Obj.(*admissionv1.MutatingWebhookConfiguration).DeepCopy()
	baseMWC.Annotations = mwc.Annotations
	if d := cmp.Diff(baseMWC, mwc); d != "" {
		t.Errorf("MWC: more than the annotation changed (-base +overlay):\n%s", d)
	}
	t.Run("kubectl", func(t *testing.T) { sameResources(t, r, kubectlKustomize(t, dir)) })
}
