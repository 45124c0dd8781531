package manifests_test

import (
	"net/netip"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/pod-security-admission/api"

	"github.com/podns/podns/webhook/inject"
)

// The documented differences between a pod the webhook injects and the same pod template
// rendered through components/podns (README "Inject at admission"): the webhook install creates
// no ConfigMap, so its podns-config reference is optional and has no kustomize hash suffix; the
// webhook records what it injected in an annotation.
var configMapHash = regexp.MustCompile(`^podns-config-[a-z0-9]+$`)

func normaliseConfigMapRefs(spec *corev1.PodSpec) {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for i := range cs {
			for j := range cs[i].EnvFrom {
				if ref := cs[i].EnvFrom[j].ConfigMapRef; ref != nil && (ref.Name == "podns-config" || configMapHash.MatchString(ref.Name)) {
					ref.Name = "podns-config"
					ref.Optional = nil
				}
			}
		}
	}
}

// webhookPod runs the workload's pod template as written (the component left out) through the
// webhook's mutation, as the API server would send the pod its controller creates.
func webhookPod(t *testing.T, w injected, mode inject.Mode) (*corev1.PodTemplateSpec, inject.Result) {
	t.Helper()
	opts := inject.Options{Version: "v0.0.0-test", ClusterDNS: netip.MustParseAddr("10.96.0.10")}
	if w.initImage != "" {
		// The example's kustomize images: transformer; the webhook's PODNS_INIT_IMAGE/PODNS_STUB_IMAGE.
		opts.InitImage, opts.StubImage = w.initImage, w.stubImage
	}
	h, err := inject.NewHandler(mode, opts)
	if err != nil {
		t.Fatal(err)
	}
	plain := podTemplate(renderWithout(t, w.dir).get(t, w.kind, w.name).Obj)
	pod := &corev1.Pod{ObjectMeta: plain.ObjectMeta, Spec: plain.Spec}
	res := h.Mutate(pod, "default")
	if res.Outcome != inject.OutcomeInjected || len(res.Warnings) != 0 {
		t.Fatalf("webhook: %s, warnings %v", res.Outcome, res.Warnings)
	}
	return &corev1.PodTemplateSpec{ObjectMeta: pod.ObjectMeta, Spec: pod.Spec}, res
}

// TestWebhookEquivalence: a pod the webhook injects in sidecar mode equals the same pod template
// rendered through components/podns, after normalising only the documented differences. It fails
// when webhook/inject/definition.yaml drifts from the component's injector-values.yaml, or when
// the component or the webhook changes what (or where) they inject.
func TestWebhookEquivalence(t *testing.T) {
	n := 0
	for _, w := range injectedWorkloads {
		// The webhook injects the native-sidecar layout only; a namePrefix also renames the
		// generated ConfigMap, which a webhook user does not have.
		if w.mode == legacy || w.dir == "testdata/name-prefix" {
			continue
		}
		n++
		t.Run(w.dir+"/"+w.kind+"/"+w.name, func(t *testing.T) {
			got, _ := webhookPod(t, w, inject.ModeSidecar)
			if a := got.Annotations[inject.AnnotationInjected]; a != "sidecar v0.0.0-test" {
				t.Errorf("annotation %s = %q", inject.AnnotationInjected, a)
			}
			delete(got.Annotations, inject.AnnotationInjected)
			if len(got.Annotations) == 0 {
				got.Annotations = nil
			}
			for _, c := range got.Spec.InitContainers[:2] {
				if ref := c.EnvFrom[0].ConfigMapRef; ref.Optional == nil || !*ref.Optional {
					t.Errorf("%s: the webhook's podns-config reference is not optional", c.Name)
				}
			}
			normaliseConfigMapRefs(&got.Spec)

			want := podTemplate(render(t, w.dir).get(t, w.kind, w.name).Obj)
			normaliseConfigMapRefs(&want.Spec)
			if d := cmp.Diff(want, got); d != "" {
				t.Errorf("webhook pod differs from the component's (-component +webhook):\n%s", d)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d workloads compared", n)
	}
}

// TestWebhookPodSecurity: in sidecar mode a webhook-injected pod meets Pod Security baseline
// (podns-init runs as root), in restricted mode it meets restricted, given an application that
// does (examples/basic's web, see TestOnlyInitKeepsPodFromRestricted).
func TestWebhookPodSecurity(t *testing.T) {
	basic := injected{dir: "examples/basic", kind: "Deployment", name: "web"}
	for _, v := range versions(native) {
		sidecar, _ := webhookPod(t, basic, inject.ModeSidecar)
		if res := evaluate(t, api.LevelBaseline, v, sidecar); !res.Allowed {
			t.Errorf("sidecar mode fails baseline@%s: %v %v", v, res.ForbiddenReasons, res.ForbiddenDetails)
		}
		if res := evaluate(t, api.LevelRestricted, v, sidecar); res.Allowed {
			t.Errorf("sidecar mode meets restricted@%s: then restricted mode would not be needed", v)
		}

		restricted, res := webhookPod(t, basic, inject.ModeRestricted)
		if res.Mode != inject.ModeRestricted || restricted.Spec.InitContainers[0].Name != "podns-stub" {
			t.Fatalf("restricted mode gave %s mode, init containers %v", res.Mode, names(restricted.Spec.InitContainers))
		}
		if res := evaluate(t, api.LevelRestricted, v, restricted); !res.Allowed {
			t.Errorf("restricted mode fails restricted@%s: %v %v", v, res.ForbiddenReasons, res.ForbiddenDetails)
		}
	}
	// Every other workload, in restricted mode, meets at least baseline.
	for _, w := range injectedWorkloads {
		if w.mode == legacy {
			continue
		}
		tmpl, _ := webhookPod(t, w, inject.ModeRestricted)
		if res := evaluate(t, api.LevelBaseline, api.LatestVersion(), tmpl); !res.Allowed {
			t.Errorf("%s %s/%s in restricted mode fails baseline: %v", w.dir, w.kind, w.name, res.ForbiddenReasons)
		}
	}
}
