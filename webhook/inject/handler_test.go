package inject

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/diff"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

const testNS = "shop"

var testOpts = Options{
	ClusterDNS:    netip.MustParseAddr("10.96.0.10"),
	ClusterDomain: "cluster.local",
	Version:       "v9.9.9",
}

func newHandler(t *testing.T, mode Mode, opts Options) *Handler {
	t.Helper()
	h, err := NewHandler(mode, opts)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// appPod is a pod as a controller or kubectl submits it, after the API server's defaulting:
// restricted-compliant, one application container.
func appPod() *corev1.Pod {
	f := false
	tr := true
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: testNS, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			DNSPolicy:     corev1.DNSClusterFirst,
			RestartPolicy: corev1.RestartPolicyAlways,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   &tr,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:  "app",
				Image: "registry.example/web:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi"),
				}},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &f,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
}

func withPod(edit func(p *corev1.Pod)) *corev1.Pod {
	p := appPod()
	edit(p)
	return p
}

func initc(names ...string) []corev1.Container {
	var out []corev1.Container
	for _, n := range names {
		out = append(out, corev1.Container{Name: n, Image: "registry.example/" + n + ":1"})
	}
	return out
}

func request(t *testing.T, pod *corev1.Pod, op admissionv1.Operation) admission.Request {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "uid-1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: testNS,
		Name:      pod.Name,
		Operation: op,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// admit sends pod through the handler as the API server does and returns the response and the
// pod the API server would store: the request's bytes with the response's JSON patch applied.
func admit(t *testing.T, h *Handler, pod *corev1.Pod) (admission.Response, *corev1.Pod) {
	t.Helper()
	req := request(t, pod, admissionv1.Create)
	resp := h.Handle(context.Background(), req)
	if !resp.Allowed {
		t.Fatalf("pod rejected: %+v", resp.Result)
	}
	out := req.Object.Raw
	if len(resp.Patches) > 0 {
		if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patches without patch type JSONPatch: %v", resp.PatchType)
		}
		pb, err := json.Marshal(resp.Patches)
		if err != nil {
			t.Fatal(err)
		}
		p, err := jsonpatch.DecodePatch(pb)
		if err != nil {
			t.Fatal(err)
		}
		if out, err = p.Apply(out); err != nil {
			t.Fatalf("apply patch %s: %v", pb, err)
		}
	} else if resp.PatchType != nil {
		t.Fatal("a patch type without patches")
	}
	var got corev1.Pod
	dec := json.NewDecoder(strings.NewReader(string(out)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("patched pod: %v\n%s", err, out)
	}
	return resp, &got
}

// wantStub and wantInit are what the component renders, with the webhook's differences: the
// ConfigMap reference is optional.
func wantContainers(t *testing.T, h *Handler) (initC, stub corev1.Container) {
	t.Helper()
	d, err := parseDefinition(definitionYAML)
	if err != nil {
		t.Fatal(err)
	}
	tr := true
	always := corev1.ContainerRestartPolicyAlways
	initC, stub = d.InitContainer, d.StubContainer
	stub.RestartPolicy = &always
	initC.EnvFrom[0].ConfigMapRef.Optional = &tr
	stub.EnvFrom[0].ConfigMapRef.Optional = &tr
	if h.opts.StubImage != "" {
		stub.Image = h.opts.StubImage
	}
	if h.opts.InitImage != "" {
		initC.Image = h.opts.InitImage
	}
	return initC, stub
}

// strip removes everything the webhook adds from an injected pod (what it added must then be
// all that changed: strip(injected) == the pod as submitted).
func strip(p *corev1.Pod, addedSysctl bool, before *corev1.Pod) *corev1.Pod {
	p = p.DeepCopy()
	p.Spec.InitContainers = slices.DeleteFunc(p.Spec.InitContainers, func(c corev1.Container) bool {
		return c.Name == initName || c.Name == stubName
	})
	if len(p.Spec.InitContainers) == 0 && before.Spec.InitContainers == nil {
		p.Spec.InitContainers = nil
	}
	p.Spec.Volumes = slices.DeleteFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == stateVolume })
	if len(p.Spec.Volumes) == 0 && before.Spec.Volumes == nil {
		p.Spec.Volumes = nil
	}
	if addedSysctl {
		sc := p.Spec.SecurityContext
		sc.Sysctls = slices.DeleteFunc(sc.Sysctls, func(s corev1.Sysctl) bool { return s.Name == portSysctl })
		if len(sc.Sysctls) == 0 && (before.Spec.SecurityContext == nil || before.Spec.SecurityContext.Sysctls == nil) {
			sc.Sysctls = nil
		}
		if before.Spec.SecurityContext == nil && equality.Semantic.DeepEqual(*sc, corev1.PodSecurityContext{}) {
			p.Spec.SecurityContext = nil
		}
	}
	delete(p.Annotations, AnnotationInjected)
	if len(p.Annotations) == 0 && before.Annotations == nil {
		p.Annotations = nil
	}
	p.Spec.DNSPolicy = before.Spec.DNSPolicy
	p.Spec.DNSConfig = before.Spec.DNSConfig
	return p
}

func mustEqual(t *testing.T, what string, want, got any) {
	t.Helper()
	if !equality.Semantic.DeepEqual(want, got) {
		t.Errorf("%s differs (- want, + got):\n%s", what, diff.Diff(want, got))
	}
}

func str(s string) *string { return &s }

type handlerCase struct {
	name    string
	mode    Mode // the handler's
	opts    *Options
	pod     *corev1.Pod
	outcome Outcome
	gotMode Mode
	init    []string // init container names after admission; nil: unchanged pod
	dns     *corev1.PodDNSConfig
	reason  string // the warning's reason, if any
	noSysc  bool   // the pod's own sysctl is kept, podns's not added
}

func TestHandler(t *testing.T) {
	restrictedLabel := func(p *corev1.Pod) { p.Labels[LabelMode] = "restricted" }
	clusterDNS := []string{"shop.svc.cluster.local", "svc.cluster.local", "cluster.local"}
	podnsOpts := []corev1.PodDNSConfigOption{{Name: "ndots", Value: str("5")}, {Name: "timeout", Value: str("1")}, {Name: "attempts", Value: str("3")}}
	manySearches := func(n int) []string {
		var s []string
		for i := range n {
			s = append(s, fmt.Sprintf("d%d.example", i))
		}
		return s
	}
	cases := []handlerCase{
		{name: "bare pod", mode: ModeSidecar, pod: appPod(),
			outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}},
		{name: "deployment pod (generateName, owner)", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Name, p.GenerateName = "", "web-7d9f8c6b5-"
			p.Labels["pod-template-hash"] = "7d9f8c6b5"
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8c6b5", UID: "u"}}
		}), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}},
		{name: "job pod with init containers", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Name, p.GenerateName = "", "migrate-"
			p.Labels["batch.kubernetes.io/job-name"] = "migrate"
			p.Spec.RestartPolicy = corev1.RestartPolicyNever
			p.Spec.InitContainers = initc("a", "b")
		}), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName, "a", "b"}},
		{name: "own volumes, sysctls, annotations, dnsConfig kept", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{"team": "shop"}
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net.ipv4.tcp_syncookies", Value: "1"}}
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{"corp.example"}, Options: []corev1.PodDNSConfigOption{{Name: "ndots", Value: str("2")}}}
		}), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}},
		{name: "no pod securityContext", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) { p.Spec.SecurityContext = nil }),
			outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}},
		{name: "ClusterFirstWithHostNet without hostNetwork", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet }),
			outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}},
		{name: "own port sysctl at most 53 kept", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: portSysctl, Value: "0"}}
		}), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}, noSysc: true},
		{name: "own port sysctl in the slash form kept", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net/ipv4/ip_unprivileged_port_start", Value: "53"}}
		}), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}, noSysc: true},
		{name: "image overrides", mode: ModeSidecar, opts: &Options{InitImage: "mirror.example/initc:v1", StubImage: "mirror.example/stub:v1", Version: "v1"},
			pod: appPod(), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}},

		// Restricted mode: from the restricted webhook (namespace label) or a pod label.
		{name: "restricted namespace", mode: ModeRestricted, pod: appPod(),
			outcome: OutcomeInjected, gotMode: ModeRestricted, init: []string{stubName},
			dns: &corev1.PodDNSConfig{Nameservers: []string{"127.0.0.1"}, Searches: clusterDNS, Options: podnsOpts}},
		{name: "restricted pod label", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			restrictedLabel(p)
			p.Spec.InitContainers = initc("a")
		}), outcome: OutcomeInjected, gotMode: ModeRestricted, init: []string{stubName, "a"},
			dns: &corev1.PodDNSConfig{Nameservers: []string{"127.0.0.1"}, Searches: clusterDNS, Options: podnsOpts}},
		{name: "restricted merges the pod's dnsConfig", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{
				Searches: []string{"corp.example", "svc.cluster.local"},
				Options:  []corev1.PodDNSConfigOption{{Name: "ndots", Value: str("2")}, {Name: "edns0"}, {Name: "attempts", Value: str("1")}},
			}
		}), outcome: OutcomeInjected, gotMode: ModeRestricted, init: []string{stubName},
			dns: &corev1.PodDNSConfig{Nameservers: []string{"127.0.0.1"},
				Searches: append(slices.Clone(clusterDNS), "corp.example"),
				Options:  []corev1.PodDNSConfigOption{{Name: "ndots", Value: str("2")}, {Name: "timeout", Value: str("1")}, {Name: "attempts", Value: str("1")}, {Name: "edns0"}}}},
		{name: "restricted at the search limit", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: manySearches(maxSearches - 3)}
		}), outcome: OutcomeInjected, gotMode: ModeRestricted, init: []string{stubName},
			dns: &corev1.PodDNSConfig{Nameservers: []string{"127.0.0.1"}, Searches: append(slices.Clone(clusterDNS), manySearches(maxSearches-3)...), Options: podnsOpts}},
		{name: "restricted over the search count falls back to sidecar", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: manySearches(maxSearches - 2)}
		}), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}, reason: ReasonSearchLimits},
		{name: "restricted over the search characters falls back to sidecar", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Searches: []string{
				strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + "." + strings.Repeat("c", 63) + ".example",
			}}
			for i := range 9 {
				p.Spec.DNSConfig.Searches = append(p.Spec.DNSConfig.Searches, fmt.Sprintf("%d%s", i, p.Spec.DNSConfig.Searches[0][1:]))
			}
		}), outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}, reason: ReasonSearchLimits},
		{name: "restricted with own nameservers", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53"}}
		}), outcome: OutcomeWarning, gotMode: ModeRestricted, reason: ReasonNameservers},
		{name: "restricted label without cluster DNS", mode: ModeSidecar, opts: &Options{}, pod: withPod(restrictedLabel),
			outcome: OutcomeWarning, gotMode: ModeRestricted, reason: ReasonNoClusterDNS},

		// Skipped: also behind the matchConditions and the objectSelector, checked again.
		{name: "opted out", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) { p.Labels[LabelInject] = "false" }),
			outcome: OutcomeSkipped, gotMode: ModeSidecar},
		{name: "hostNetwork", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
		}), outcome: OutcomeSkipped, gotMode: ModeSidecar},
		{name: "dnsPolicy Default", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) { p.Spec.DNSPolicy = corev1.DNSDefault }),
			outcome: OutcomeSkipped, gotMode: ModeSidecar},
		{name: "dnsPolicy None", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.DNSPolicy = corev1.DNSNone
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53"}}
		}), outcome: OutcomeSkipped, gotMode: ModeRestricted},

		// Bad pods: admitted unchanged with a warning, never half-injected.
		{name: "own container podns-stub", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: stubName, Image: "mine"})
		}), outcome: OutcomeWarning, gotMode: ModeSidecar, reason: ReasonNameClash},
		{name: "own init container podns-init", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) { p.Spec.InitContainers = initc(initName) }),
			outcome: OutcomeWarning, gotMode: ModeSidecar, reason: ReasonNameClash},
		{name: "own volume podns-state", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: stateVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		}), outcome: OutcomeWarning, gotMode: ModeSidecar, reason: ReasonNameClash},
		{name: "conflicting port sysctl", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: portSysctl, Value: "1024"}}
		}), outcome: OutcomeWarning, gotMode: ModeSidecar, reason: ReasonSysctl},
		{name: "conflicting port sysctl in the slash form", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.SecurityContext.Sysctls = []corev1.Sysctl{{Name: "net/ipv4/ip_unprivileged_port_start", Value: "54"}}
		}), outcome: OutcomeWarning, gotMode: ModeRestricted, reason: ReasonSysctl},
		{name: "a DNS server pod (port 53)", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP})
		}), outcome: OutcomeWarning, gotMode: ModeSidecar, reason: ReasonPort},
		{name: "the stub's HTTP port", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports[0].ContainerPort = 9253
		}), outcome: OutcomeWarning, gotMode: ModeRestricted, reason: ReasonPort},
		{name: "annotation without podns containers", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationInjected: "sidecar v0.1.0"}
		}), outcome: OutcomeWarning, gotMode: ModeSidecar, reason: ReasonAnnotation},
		{name: "annotation naming no mode", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationInjected: "bogus"}
		}), outcome: OutcomeWarning, gotMode: ModeRestricted, reason: ReasonAnnotation},
		{name: "mode label typo", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) { p.Labels[LabelMode] = "Restricted" }),
			outcome: OutcomeInjected, gotMode: ModeSidecar, init: []string{initName, stubName}, reason: ReasonModeLabel},
		{name: "empty annotation", mode: ModeSidecar, pod: withPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationInjected: ""}
		}), outcome: OutcomeWarning, gotMode: ModeSidecar, reason: ReasonAnnotation},
		{name: "blank annotation", mode: ModeRestricted, pod: withPod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnotationInjected: "   "}
		}), outcome: OutcomeWarning, gotMode: ModeRestricted, reason: ReasonAnnotation},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			opts := testOpts
			if c.opts != nil {
				opts = *c.opts
			}
			h := newHandler(t, c.mode, opts)
			before := c.pod.DeepCopy()
			counter := admissions.WithLabelValues(string(c.gotMode), string(c.outcome))
			n0 := testutil.ToFloat64(counter)
			var w0 float64
			if c.reason != "" {
				w0 = testutil.ToFloat64(warnings.WithLabelValues(c.reason))
			}
			resp, got := admit(t, h, c.pod)
			if c.reason != "" {
				if d := testutil.ToFloat64(warnings.WithLabelValues(c.reason)) - w0; d != 1 {
					t.Errorf("podns_webhook_warnings_total{reason=%q} went up by %v, want 1", c.reason, d)
				}
			}
			if !equality.Semantic.DeepEqual(before, c.pod) {
				t.Fatal("Handle changed the caller's pod")
			}
			if d := testutil.ToFloat64(counter) - n0; d != 1 {
				t.Errorf("podns_webhook_admissions_total{mode=%q,result=%q} went up by %v, want 1", c.gotMode, c.outcome, d)
			}
			checkWarnings(t, resp, c.reason)

			if c.init == nil {
				if len(resp.Patches) != 0 {
					t.Errorf("pod left unchanged, yet patched: %v", resp.Patches)
				}
				mustEqual(t, "pod", before, got)
				return
			}
			checkInjected(t, h, c, before, got)

			// Idempotent: the injected pod, admitted again, gets no patch.
			resp2, again := admit(t, h, got)
			if len(resp2.Patches) != 0 || len(resp2.Warnings) != 0 {
				t.Errorf("second pass: patches %v, warnings %v", resp2.Patches, resp2.Warnings)
			}
			mustEqual(t, "pod after a second pass", got, again)
		})
	}
}

func checkWarnings(t *testing.T, resp admission.Response, reason string) {
	t.Helper()
	if reason == "" {
		if len(resp.Warnings) != 0 {
			t.Errorf("unexpected warnings %q", resp.Warnings)
		}
		return
	}
	if len(resp.Warnings) != 1 {
		t.Fatalf("want one warning (%s), got %q", reason, resp.Warnings)
	}
	w := resp.Warnings[0]
	if !strings.HasPrefix(w, "podns ") || len(w) > 256 {
		t.Errorf("warning %q: want the prefix \"podns \" and at most 256 characters (the API server may truncate longer ones)", w)
	}
}

func checkInjected(t *testing.T, h *Handler, c handlerCase, before, got *corev1.Pod) {
	t.Helper()
	if n := names(got.Spec.InitContainers); !slices.Equal(n, c.init) {
		t.Errorf("init containers %v, want %v", n, c.init)
	}
	if a := got.Annotations[AnnotationInjected]; a != string(c.gotMode)+" "+h.opts.Version {
		t.Errorf("annotation %s = %q, want %q", AnnotationInjected, a, string(c.gotMode)+" "+h.opts.Version)
	}
	wantInit, wantStub := wantContainers(t, h)
	if c.gotMode == ModeSidecar {
		mustEqual(t, initName, wantInit, got.Spec.InitContainers[0])
		mustEqual(t, stubName, wantStub, got.Spec.InitContainers[1])
		mustEqual(t, "dnsPolicy", before.Spec.DNSPolicy, got.Spec.DNSPolicy)
		mustEqual(t, "dnsConfig", before.Spec.DNSConfig, got.Spec.DNSConfig)
	} else {
		wantStub.Env = append(wantStub.Env,
			corev1.EnvVar{Name: "PODNS_UPSTREAMS", Value: "10.96.0.10"},
			corev1.EnvVar{Name: "PODNS_READY_CHECK_NAME", Value: "kubernetes.default.svc.cluster.local."})
		mustEqual(t, stubName, wantStub, got.Spec.InitContainers[0])
		if got.Spec.DNSPolicy != corev1.DNSNone {
			t.Errorf("dnsPolicy %s, want None", got.Spec.DNSPolicy)
		}
		mustEqual(t, "dnsConfig", c.dns, got.Spec.DNSConfig)
	}
	vols := got.Spec.Volumes
	if len(vols) == 0 || vols[len(vols)-1].Name != stateVolume || vols[len(vols)-1].EmptyDir == nil ||
		vols[len(vols)-1].EmptyDir.SizeLimit.String() != "1Mi" {
		t.Errorf("volumes %+v: want podns-state (emptyDir, 1Mi) last, as the component appends it", vols)
	}
	var ports []corev1.Sysctl
	for _, s := range got.Spec.SecurityContext.Sysctls {
		if sysctlName(s.Name) == portSysctl {
			ports = append(ports, s)
		}
	}
	if len(ports) != 1 || (!c.noSysc && ports[0].Value != "53") {
		t.Errorf("port sysctls %+v, want exactly one (53 unless the pod set its own)", ports)
	}
	mustEqual(t, "pod without what podns adds", before, strip(got, !c.noSysc, before))
}

func names(cs []corev1.Container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
