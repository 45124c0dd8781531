package manifests_test

import (
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

func evaluate(t *testing.T, level api.Level, version api.Version, tmpl *corev1.PodTemplateSpec) policy.AggregateCheckResult {
	t.Helper()
	e, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return policy.AggregateCheckResults(e.EvaluatePod(api.LevelVersion{Level: level, Version: version}, &tmpl.ObjectMeta, &tmpl.Spec))
}

// versions are the PSS policy versions each component must satisfy: the newest, and the oldest
// Kubernetes the component is for (native sidecars are on by default from 1.29; Pod Security
// admission is GA from 1.25).
func versions(m mode) []api.Version {
	if m == legacy {
		return []api.Version{api.LatestVersion(), api.MajorMinorVersion(1, 25)}
	}
	return []api.Version{api.LatestVersion(), api.MajorMinorVersion(1, 29)}
}

// TestPodSecurity checks the README's claims: every injected pod meets PSS baseline (so a
// namespace enforcing baseline admits it); the stub on its own, with podns's sysctl and volume,
// meets restricted; the whole pod does not, because of podns-init alone (root, writable root
// filesystem).
func TestPodSecurity(t *testing.T) {
	for _, w := range injectedWorkloads {
		t.Run(w.dir+"/"+w.kind+"/"+w.name, func(t *testing.T) {
			tmpl := podTemplate(render(t, w.dir).get(t, w.kind, w.name).Obj)
			for _, v := range versions(w.mode) {
				if res := evaluate(t, api.LevelBaseline, v, tmpl); !res.Allowed {
					t.Errorf("pod fails baseline@%s: %v %v", v, res.ForbiddenReasons, res.ForbiddenDetails)
				}

				stubOnly := corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: portSysctl, Value: "53"}}},
					Volumes:         slices.DeleteFunc(slices.Clone(tmpl.Spec.Volumes), func(v corev1.Volume) bool { return v.Name != stateVolume }),
				}}
				if w.mode == legacy {
					stubOnly.Spec.Containers = []corev1.Container{container(t, tmpl.Spec.Containers, stubName)}
				} else {
					stubOnly.Spec.InitContainers = []corev1.Container{container(t, tmpl.Spec.InitContainers, stubName)}
				}
				if res := evaluate(t, api.LevelRestricted, v, &stubOnly); !res.Allowed {
					t.Errorf("stub alone fails restricted@%s: %v %v", v, res.ForbiddenReasons, res.ForbiddenDetails)
				}
			}
		})
	}
}

// TestOnlyInitKeepsPodFromRestricted uses the basic example, whose own pod meets restricted:
// with podns it does not, and without podns-init (everything else podns adds left in) it does
// again, so podns-init is the one reason a namespace needs baseline.
func TestOnlyInitKeepsPodFromRestricted(t *testing.T) {
	tmpl := podTemplate(render(t, "examples/basic").get(t, "Deployment", "web").Obj)
	latest := api.LatestVersion()
	if res := evaluate(t, api.LevelRestricted, latest, tmpl); res.Allowed {
		t.Fatal("injected pod meets restricted; the README says it needs baseline (podns-init runs as root)")
	}
	tmpl.Spec.InitContainers = slices.DeleteFunc(tmpl.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == initName })
	if res := evaluate(t, api.LevelRestricted, latest, tmpl); !res.Allowed {
		t.Errorf("without podns-init the pod still fails restricted: %v %v", res.ForbiddenReasons, res.ForbiddenDetails)
	}
}
