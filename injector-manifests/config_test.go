package manifests_test

import (
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// defaults is podns-config as the components generate it. Each value must equal the binary's own
// default (contract.md and the stub/initc READMEs): the ConfigMap only names the knobs.
var defaults = map[string]string{
	"PODNS_LOG_LEVEL":         "info",
	"PODNS_LOG_FORMAT":        "json",
	"PODNS_UPSTREAM_PROTOCOL": "tcp",
	"PODNS_UPSTREAM_TIMEOUT":  "2s",
	"PODNS_CACHE_SIZE":        "10000",
	"PODNS_SHUTDOWN_GRACE":    "0s",
	"PODNS_OPTIONS":           "timeout:1 attempts:3",
}

func with(base map[string]string, kv ...string) map[string]string {
	m := maps.Clone(base)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func TestConfigMap(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want map[string]string
	}{
		{"examples/basic", defaults},
		{"examples/batch", defaults},
		// Merged by the example's own component: changed keys win, the others stay.
		{"examples/tuned", with(defaults,
			"PODNS_LOG_LEVEL", "debug", "PODNS_CACHE_SIZE", "50000", "PODNS_OPTIONS", "timeout:2 attempts:2")},
		// The legacy stub keeps answering while the app shuts down beside it.
		{"examples/legacy", with(defaults, "PODNS_SHUTDOWN_GRACE", "10s")},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			if d := cmp.Diff(tc.want, render(t, tc.dir).configMap(t).Data); d != "" {
				t.Errorf("podns-config data (-want +got):\n%s", d)
			}
		})
	}
}

// TestTuningInTheSameKustomizationFails pins down why the README's tuning recipe uses a component
// (or an overlay): a configMapGenerator merge in the kustomization that includes podns runs
// before the component has generated podns-config. If kustomize ever changes this, the README
// can offer the simpler form. It also checks the two forms the README offers.
func TestTuningInTheSameKustomizationFails(t *testing.T) {
	job := `apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: app, image: app}]
`
	tuning := `configMapGenerator:
- name: podns-config
  behavior: merge
  literals: [PODNS_LOG_LEVEL=debug]
`
	fSys := memCopy(t, "components", "/m/components")
	write := func(name, s string) {
		if err := fSys.WriteFile(name, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	write("/m/app/job.yaml", job)
	write("/m/app/kustomization.yaml", "resources: [job.yaml]\ncomponents: [../components/podns]\n"+tuning)
	_, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fSys, "/m/app")
	if err == nil || !strings.Contains(err.Error(), "podns-config") || !strings.Contains(err.Error(), "cannot merge") {
		t.Fatalf("want an error about merging into podns-config, got %v", err)
	}

	// The same generator in its own component, listed after podns: works.
	write("/m/app/tuning/kustomization.yaml", "kind: Component\napiVersion: kustomize.config.k8s.io/v1alpha1\n"+tuning)
	write("/m/app/kustomization.yaml", "resources: [job.yaml]\ncomponents: [../components/podns, tuning]\n")
	if got := build(t, fSys, "/m/app").configMap(t).Data["PODNS_LOG_LEVEL"]; got != "debug" {
		t.Errorf("PODNS_LOG_LEVEL = %q, want debug", got)
	}

	// So does the plain merge in an overlay above the kustomization that includes podns.
	write("/m/app/kustomization.yaml", "resources: [job.yaml]\ncomponents: [../components/podns]\n")
	write("/m/overlay/kustomization.yaml", "resources: [../app]\n"+tuning)
	if got := build(t, fSys, "/m/overlay").configMap(t).Data["PODNS_LOG_LEVEL"]; got != "debug" {
		t.Errorf("overlay: PODNS_LOG_LEVEL = %q, want debug", got)
	}
}

// workloadTargetKinds checks that every target of r selects literally (kubectl's kustomize v5.5
// matches replacement targets literally, so a regular expression would match nothing) and honours
// the opt-out label, and returns the targeted kinds, sorted.
func workloadTargetKinds(t *testing.T, r types.ReplacementField) []string {
	t.Helper()
	var kinds []string
	for _, tg := range r.Targets {
		s := tg.Select
		for _, f := range []string{s.Group, s.Kind, s.Name} {
			if strings.ContainsAny(f, `|*+?()[]{}^$\`) {
				t.Errorf("replacement %s: selector field %q is a regular expression", r.Source.FieldPath, f)
			}
		}
		if s.LabelSelector != "podns.io/inject!=false" {
			t.Errorf("replacement %s → %s: labelSelector %q, want the opt-out", r.Source.FieldPath, s.Kind, s.LabelSelector)
		}
		kinds = append(kinds, s.Kind)
	}
	slices.Sort(kinds)
	return kinds
}

func readKustomization(t *testing.T, dir string) types.Kustomization {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k
}

// TestSelectorsWorkWithKubectl guards a difference krusty does not show: the kustomize built
// into kubectl here (v5.5.0) treats a replacement's target kind, group and name literally, so a
// regular expression there (which newer kustomize accepts) silently selects nothing under
// `kubectl kustomize`. It also checks that every patch and replacement honours the opt-out label
// and that each replacement covers every kind its component handles.
func TestSelectorsWorkWithKubectl(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		kinds []string
	}{
		{"components/podns", []string{"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}},
		{"components/podns-legacy", []string{"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			k := readKustomization(t, tc.dir)
			if len(k.Replacements) == 0 {
				t.Fatal("no replacements")
			}
			for _, r := range k.Replacements {
				kinds := workloadTargetKinds(t, r)
				want := slices.Sorted(slices.Values(tc.kinds))
				if !slices.Equal(kinds, want) {
					t.Errorf("replacement %s targets %v, want %v", r.Source.FieldPath, kinds, want)
				}
			}
			if k.Transformers == nil {
				t.Error("no transformers: the helper resource would stay in the output")
			}
			for _, p := range k.Patches {
				if p.Target.Kind == "InjectorValues" || p.Target.Kind == "ConfigMap" {
					continue
				}
				if p.Target.LabelSelector != "podns.io/inject!=false" {
					t.Errorf("patch %s for %s: labelSelector %q, want the opt-out", p.Path, p.Target.Kind, p.Target.LabelSelector)
				}
			}
		})
	}
}

// TestNoLocalConfig: kustomize v4 (kubectl 1.25–1.26) drops resources annotated
// config.kubernetes.io/local-config as it loads them, before replacements can read them, so the
// helper resource must not use it (the components delete it with a transformer instead).
func TestNoLocalConfig(t *testing.T) {
	err := filepath.WalkDir("components", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(b), "\n") {
			if l := strings.TrimSpace(line); !strings.HasPrefix(l, "#") && strings.Contains(l, "local-config") {
				t.Errorf("%s:%d: %s", path, i+1, l)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
