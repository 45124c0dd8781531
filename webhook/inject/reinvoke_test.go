package inject

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// meshAfterPodns is what a service mesh's webhook, called after podns, does to the pod: an init
// container prepended, a native sidecar appended, a volume and an annotation of its own.
func meshAfterPodns(p *corev1.Pod) *corev1.Pod {
	p = p.DeepCopy()
	always := corev1.ContainerRestartPolicyAlways
	proxy := corev1.Container{Name: "istio-proxy", Image: "istio/proxyv2:1", RestartPolicy: &always}
	p.Spec.InitContainers = append(append(initc("istio-init"), p.Spec.InitContainers...), proxy)
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "istio-envoy", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
	p.Annotations["sidecar.istio.io/status"] = `{"initContainers":["istio-init"]}`
	return p
}

// TestReinvocation: after another webhook put its init containers first, the API server calls
// podns again (reinvocationPolicy IfNeeded); podns's move back to the front, in their order, and
// nothing else changes; a further pass changes nothing.
func TestReinvocation(t *testing.T) {
	for _, c := range []struct {
		mode  Mode
		pod   *corev1.Pod
		first []string
	}{
		{ModeSidecar, withPod(func(p *corev1.Pod) { p.Spec.InitContainers = initc("app-init") }), []string{initName, stubName}},
		{ModeRestricted, withPod(func(p *corev1.Pod) { p.Spec.InitContainers = initc("app-init") }), []string{stubName}},
	} {
		t.Run(string(c.mode), func(t *testing.T) {
			h := newHandler(t, c.mode, testOpts)
			_, injected := admit(t, h, c.pod)
			meshed := meshAfterPodns(injected)

			reordered := admissions.WithLabelValues(string(c.mode), string(OutcomeReordered))
			n0 := testutil.ToFloat64(reordered)
			resp, got := admit(t, h, meshed)
			if d := testutil.ToFloat64(reordered) - n0; d != 1 {
				t.Errorf("reordered counter went up by %v", d)
			}
			if len(resp.Warnings) != 0 {
				t.Errorf("warnings %q", resp.Warnings)
			}
			want := append(slices.Clone(c.first), "istio-init", "app-init", "istio-proxy")
			if n := names(got.Spec.InitContainers); !slices.Equal(n, want) {
				t.Fatalf("init containers %v, want %v", n, want)
			}
			// Nothing but the order changed: each container is the one the mesh left.
			for _, ic := range got.Spec.InitContainers {
				i := slices.IndexFunc(meshed.Spec.InitContainers, func(m corev1.Container) bool { return m.Name == ic.Name })
				mustEqual(t, ic.Name, meshed.Spec.InitContainers[i], ic)
			}
			rest := got.DeepCopy()
			rest.Spec.InitContainers = meshed.Spec.InitContainers
			mustEqual(t, "pod apart from the init container order", meshed, rest)

			resp, again := admit(t, h, got)
			if len(resp.Patches) != 0 {
				t.Errorf("third pass patched: %v", resp.Patches)
			}
			mustEqual(t, "pod after the third pass", got, again)
		})
	}

	// podns-init first (the matchCondition would skip the call) but the stub behind another
	// webhook's container: the handler, if called, still restores podns's order.
	h := newHandler(t, ModeSidecar, testOpts)
	_, injected := admit(t, h, appPod())
	injected.Spec.InitContainers = slices.Insert(injected.Spec.InitContainers, 1, initc("vault-agent-init")...)
	_, got := admit(t, h, injected)
	if n := names(got.Spec.InitContainers); !slices.Equal(n, []string{initName, stubName, "vault-agent-init"}) {
		t.Errorf("init containers %v", n)
	}
}

// TestComponentPodUnchanged: a pod whose template went through the Kustomize component (either
// layout) already has podns and is admitted as it is, without a warning.
func TestComponentPodUnchanged(t *testing.T) {
	h := newHandler(t, ModeSidecar, testOpts)
	_, injected := admit(t, h, appPod())
	native := injected.DeepCopy()
	delete(native.Annotations, AnnotationInjected)

	legacy := native.DeepCopy()
	stub := legacy.Spec.InitContainers[1]
	stub.RestartPolicy = nil
	legacy.Spec.InitContainers = legacy.Spec.InitContainers[:1]
	legacy.Spec.Containers = append(legacy.Spec.Containers, stub)

	noVolume := native.DeepCopy()
	noVolume.Spec.Volumes = nil
	notNative := native.DeepCopy()
	notNative.Spec.InitContainers[1].RestartPolicy = nil

	for name, c := range map[string]struct {
		pod     *corev1.Pod
		outcome Outcome
	}{
		"components/podns":        {native, OutcomeUnchanged},
		"components/podns-legacy": {legacy, OutcomeUnchanged},
		"no podns-state volume":   {noVolume, OutcomeWarning},
		"stub not a sidecar":      {notNative, OutcomeWarning},
	} {
		t.Run(name, func(t *testing.T) {
			p := c.pod.DeepCopy()
			res := h.Mutate(p, testNS)
			if res.Outcome != c.outcome {
				t.Errorf("outcome %s (%v), want %s", res.Outcome, res.Warnings, c.outcome)
			}
			mustEqual(t, "pod", c.pod, p)
		})
	}
}

// TestNotAPodCreate: only Pod CREATE is mutated; anything else, and an object that is not a
// Pod, is allowed as it is (an undecodable one with a warning), never rejected.
func TestNotAPodCreate(t *testing.T) {
	h := newHandler(t, ModeSidecar, testOpts)
	for name, req := range map[string]admission.Request{
		"update": request(t, appPod(), admissionv1.Update),
		"subresource": func() admission.Request {
			r := request(t, appPod(), admissionv1.Create)
			r.SubResource = "ephemeralcontainers"
			return r
		}(),
		"other kind": func() admission.Request {
			r := request(t, appPod(), admissionv1.Create)
			r.Kind.Kind = "Service"
			return r
		}(),
	} {
		resp := h.Handle(context.Background(), req)
		if !resp.Allowed || len(resp.Patches) != 0 || len(resp.Warnings) != 0 {
			t.Errorf("%s: allowed %v, patches %v, warnings %v", name, resp.Allowed, resp.Patches, resp.Warnings)
		}
	}
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Operation: admissionv1.Create, Namespace: testNS,
		Object: runtime.RawExtension{Raw: []byte(`{"spec":{"containers":"not a list"}}`)},
	}}
	resp := h.Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patches) != 0 || len(resp.Warnings) != 1 {
		t.Errorf("undecodable: allowed %v, patches %v, warnings %q", resp.Allowed, resp.Patches, resp.Warnings)
	}
}

func TestNewHandler(t *testing.T) {
	if _, err := NewHandler(ModeRestricted, Options{}); err == nil {
		t.Error("restricted mode without ClusterDNS: no error")
	}
	if _, err := NewHandler("other", testOpts); err == nil {
		t.Error("unknown mode: no error")
	}
	h := newHandler(t, ModeSidecar, Options{})
	if h.opts.ClusterDomain != DefaultClusterDomain || h.opts.Version == "" {
		t.Errorf("defaults not applied: %+v", h.opts)
	}
	if h := newHandler(t, ModeSidecar, Options{ClusterDomain: "k8s.example."}); h.opts.ClusterDomain != "k8s.example" {
		t.Errorf("cluster domain %q: the trailing dot is kept", h.opts.ClusterDomain)
	}
}

// TestMetricsAndLog: the collectors are on controller-runtime's registry (the manager serves
// it), every admission is timed, and a warning is logged with its reason.
func TestMetricsAndLog(t *testing.T) {
	var buf bytes.Buffer
	opts := testOpts
	opts.Logger = zerolog.New(&buf).Level(zerolog.DebugLevel)
	h := newHandler(t, ModeSidecar, opts)

	count := func() uint64 {
		mfs, err := metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "podns_webhook_admission_duration_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		t.Fatal("podns_webhook_admission_duration_seconds is not on controller-runtime's metrics.Registry")
		return 0
	}
	n0 := count()
	start := time.Now()
	admit(t, h, withPod(func(p *corev1.Pod) { p.Spec.InitContainers = initc(initName) }))
	elapsed := time.Since(start)
	if d := count() - n0; d != 1 {
		t.Errorf("duration histogram count went up by %d, want 1", d)
	}
	for _, name := range []string{"podns_webhook_admissions_total", "podns_webhook_warnings_total"} {
		if n, err := testutil.GatherAndCount(metrics.Registry, name); err != nil || n == 0 {
			t.Errorf("%s on metrics.Registry: %d series, %v", name, n, err)
		}
	}

	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	if len(lines) != 2 || lines[0]["level"] != "warn" || lines[0]["reason"] != ReasonNameClash || lines[0]["pod"] != "web" ||
		lines[1]["level"] != "debug" || lines[1]["result"] != string(OutcomeWarning) {
		t.Fatalf("log lines %v", lines)
	}
	// Seconds, like every duration in podns's logs (zerolog's Dur would log milliseconds).
	if d, ok := lines[1]["duration"].(float64); !ok || d <= 0 || time.Duration(d*float64(time.Second)) > elapsed {
		t.Errorf("logged duration %v s, more than the %v the call took", lines[1]["duration"], elapsed)
	}
}

// TestUnknownField: a pod field newer than this build's k8s.io/api would be misplaced by the
// index-by-index patch (left on the container podns puts at its index): such a pod is admitted
// unchanged with a warning. An empty unknown field, which the typed encoding may drop as
// omitempty, does not count; a pod podns does not change is not looked at.
func TestUnknownField(t *testing.T) {
	h := newHandler(t, ModeSidecar, testOpts)
	withRaw := func(p *corev1.Pod, field string) admission.Request {
		r := request(t, p, admissionv1.Create)
		r.Object.Raw = bytes.Replace(r.Object.Raw, []byte(`"name":"app",`), []byte(`"name":"app",`+field+`,`), 1)
		if !bytes.Contains(r.Object.Raw, []byte(field)) {
			t.Fatalf("field not added: %s", r.Object.Raw)
		}
		return r
	}
	twoContainers := withPod(func(p *corev1.Pod) { p.Spec.Containers = append(initc("sidecar"), p.Spec.Containers...) })
	for _, c := range []struct {
		name, field string
		pod         *corev1.Pod
		patched     bool
		warnings    int
	}{
		{"unknown field", `"futureField":{"x":1}`, twoContainers, false, 1},
		{"empty unknown field", `"futureList":[]`, twoContainers, true, 0},
		{"unknown field, opted out", `"futureField":{"x":1}`, withPod(func(p *corev1.Pod) { p.Labels[LabelInject] = "false" }), false, 0},
	} {
		resp := h.Handle(context.Background(), withRaw(c.pod, c.field))
		if !resp.Allowed || (len(resp.Patches) > 0) != c.patched || len(resp.Warnings) != c.warnings {
			t.Errorf("%s: allowed %v, patches %d, warnings %q", c.name, resp.Allowed, len(resp.Patches), resp.Warnings)
		}
	}
}

// TestPanicAdmits: a panic in the handler (a podns bug) admits the pod unchanged with a warning
// and counts it, instead of controller-runtime's recovery turning it into a denial, which the API
// server enforces even with failurePolicy Ignore.
func TestPanicAdmits(t *testing.T) {
	h := newHandler(t, ModeSidecar, testOpts)
	h.mutate = func(*corev1.Pod, string) Result { panic("boom") }
	counter := admissions.WithLabelValues(string(ModeSidecar), string(OutcomeWarning))
	n0, w0 := testutil.ToFloat64(counter), testutil.ToFloat64(warnings.WithLabelValues(ReasonInternal))
	pod := appPod()
	resp, got := admit(t, h, pod)
	checkWarnings(t, resp, ReasonInternal)
	if !strings.Contains(resp.Warnings[0], "boom") || len(resp.Patches) != 0 {
		t.Errorf("warnings %q, patches %v", resp.Warnings, resp.Patches)
	}
	mustEqual(t, "pod", pod, got)
	if d := testutil.ToFloat64(counter) - n0; d != 1 {
		t.Errorf("admissions{sidecar,warning} went up by %v, want 1", d)
	}
	if d := testutil.ToFloat64(warnings.WithLabelValues(ReasonInternal)) - w0; d != 1 {
		t.Errorf("warnings{internal} went up by %v, want 1", d)
	}
}

func TestSysctlName(t *testing.T) {
	for in, want := range map[string]string{
		"net.ipv4.ip_unprivileged_port_start": "net.ipv4.ip_unprivileged_port_start",
		"net/ipv4/ip_unprivileged_port_start": "net.ipv4.ip_unprivileged_port_start",
		"net/ipv4/conf/eth0.100/forwarding":   "net.ipv4.conf.eth0/100.forwarding",
		"net.ipv4.conf.eth0/100.forwarding":   "net.ipv4.conf.eth0/100.forwarding",
		"kernel":                              "kernel",
	} {
		if got := sysctlName(in); got != want {
			t.Errorf("sysctlName(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestPortWarningText: the port warning names the port, and its name only when it has one.
func TestPortWarningText(t *testing.T) {
	h := newHandler(t, ModeSidecar, testOpts)
	for name, want := range map[string]string{"": "declares port 53, which", "dns": "declares port 53 (dns), which"} {
		res := h.Mutate(withPod(func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: name, ContainerPort: 53}}
		}), "shop")
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0].Message, want) {
			t.Errorf("port name %q: warnings %+v, want one containing %q", name, res.Warnings, want)
		}
	}
}
