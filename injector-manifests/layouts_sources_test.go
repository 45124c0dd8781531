package manifests_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Issue 13 item 4: workloads that enter the build other ways than a manifest listed next to the
// component — inflated from a Helm chart, emitted by another component, or from a remote base.
// These layouts are rendered on disk (helm and git are separate processes that read real files).

// helmChart is a local chart with one Deployment; `optOut: true` labels it podns.io/inject=false
// in the chart's own template.
var helmChart = map[string]string{
	"Chart.yaml":  "apiVersion: v2\nname: web\nversion: 0.1.0\n",
	"values.yaml": "optOut: false\n",
	"templates/deployment.yaml": `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  {{- if .Values.optOut }}
  labels:
    podns.io/inject: "false"
  {{- end }}
spec:
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      initContainers:
      - name: wait
        image: registry.example/own:1
      containers:
      - name: web
        image: registry.example/web:1
`,
}

// helmCommand returns the helm binary the Makefile installs (PODNS_HELM, set by `make test`),
// else .tools/bin/helm at the repository root, else helm on PATH. The Helm layouts are skipped
// only when none exists; a PODNS_HELM that names no executable fails the test.
func helmCommand(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PODNS_HELM"); p != "" {
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			t.Fatalf("PODNS_HELM=%s is not an executable (err %v): run `make tools`", p, err)
		}
		return p
	}
	if p, err := filepath.Abs("../.tools/bin/helm"); err == nil {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	t.Skip("helm is not installed (neither PODNS_HELM, ../.tools/bin/helm nor helm on PATH): " +
		"the Helm layouts are NOT tested; `make tools` installs the pinned helm")
	return ""
}

// onDisk writes components/ and files (paths relative to the root) into a new temporary
// directory and returns it.
func onDisk(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	err := filepath.WalkDir("components", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return writeFile(filepath.Join(root, path), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range files {
		if err := writeFile(filepath.Join(root, name), []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func writeFile(name string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(name, b, 0o644)
}

// withChart adds helmChart under dir/charts/web.
func withChart(dir string, files map[string]string) map[string]string {
	for name, s := range helmChart {
		files[dir+"/charts/web/"+name] = s
	}
	return files
}

func helmOptions(helm string) *krusty.Options {
	opts := krusty.MakeDefaultOptions()
	opts.PluginConfig.HelmConfig = types.HelmConfig{Enabled: true, Command: helm}
	return opts
}

// buildOpts is build with kustomize options.
func buildOpts(t *testing.T, opts *krusty.Options, fSys filesys.FileSystem, dir string) rendering {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(opts).Run(fSys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return parseRendering(t, dir, out)
}

// parseRendering decodes a multi-document build output strictly, as build does.
func parseRendering(t *testing.T, dir string, out []byte) rendering {
	t.Helper()
	var r rendering
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var meta struct {
			Kind     string
			Metadata struct {
				Name   string
				Labels map[string]string
			}
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatalf("%s: %v\n%s", dir, err, doc)
		}
		mk, ok := newTyped[meta.Kind]
		if !ok {
			t.Fatalf("%s: rendered an unexpected kind %s (%s)", dir, meta.Kind, meta.Metadata.Name)
		}
		obj := mk()
		if err := decodeStrict(doc, obj); err != nil {
			t.Fatalf("%s: %s/%s does not decode strictly: %v\n%s", dir, meta.Kind, meta.Metadata.Name, err, doc)
		}
		r = append(r, object{Kind: meta.Kind, Name: meta.Metadata.Name, Labels: meta.Metadata.Labels, Obj: obj})
	}
	return r
}

// withoutComponents rewrites dir's kustomization.yaml without its components, returning a
// function that restores it.
func withoutComponents(t *testing.T, dir string) (restore func()) {
	t.Helper()
	kfile := filepath.Join(dir, "kustomization.yaml")
	b, err := os.ReadFile(kfile)
	if err != nil {
		t.Fatal(err)
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("decode %s: %v", kfile, err)
	}
	if len(k.Components) == 0 {
		t.Fatalf("%s includes no component", kfile)
	}
	k.Components = nil
	nb, err := yaml.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kfile, nb, 0o644); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.WriteFile(kfile, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkInjectedAsWritten asserts that workload kind/name of with carries podns (native: first;
// legacy: last) and, with podns's additions taken out, equals the same workload in without; and
// that every other resource of without is unchanged. It strips podns from both renderings.
func checkInjectedAsWritten(t *testing.T, with, without rendering, comp, kind, name string, ownInit []string) {
	t.Helper()
	got := with.get(t, kind, name)
	tmpl := podTemplate(got.Obj)
	cm := with.configMap(t).Name
	wantInit := append([]string{initName, stubName}, ownInit...)
	stubs := tmpl.Spec.InitContainers
	if comp == "podns-legacy" {
		wantInit = append(append([]string{}, ownInit...), initName)
		stubs = tmpl.Spec.Containers
	}
	if n := names(tmpl.Spec.InitContainers); !cmp.Equal(n, wantInit) {
		t.Errorf("%s/%s init containers %v, want %v", kind, name, n, wantInit)
	}
	checkVolume(t, tmpl.Spec)
	checkSysctl(t, tmpl.Spec)
	checkInit(t, container(t, tmpl.Spec.InitContainers, initName), cm, initImage)
	checkStub(t, container(t, stubs, stubName), cm, stubImage)
	if len(with) != len(without)+1 {
		t.Errorf("%d resources with podns, %d without: want one more (podns-config)", len(with), len(without))
	}
	for _, orig := range without {
		g := with.get(t, orig.Kind, orig.Name)
		if orig.Kind == kind && orig.Name == name {
			stripPodns(podTemplate(g.Obj))
			stripPodns(podTemplate(orig.Obj))
		}
		if d := cmp.Diff(orig.Obj, g.Obj); d != "" {
			t.Errorf("%s/%s changed beyond what podns adds (-as written +rendered):\n%s", orig.Kind, orig.Name, d)
		}
	}
}

// checkUntouched asserts that with equals without plus podns-config, resource by resource.
func checkUntouched(t *testing.T, with, without rendering) {
	t.Helper()
	with.configMap(t)
	if len(with) != len(without)+1 {
		t.Errorf("%d resources with podns, %d without: want one more (podns-config)", len(with), len(without))
	}
	for _, orig := range without {
		if d := cmp.Diff(orig.Obj, with.get(t, orig.Kind, orig.Name).Obj); d != "" {
			t.Errorf("%s/%s changed (-as written +rendered):\n%s", orig.Kind, orig.Name, d)
		}
	}
}

// kubectlKustomize renders dir with `kubectl kustomize` (its built-in kustomize), extra flags
// first; it skips when kubectl is not installed (krusty above is the reference).
func kubectlKustomize(t *testing.T, dir string, flags ...string) rendering {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed: its built-in kustomize is not checked here (krusty is)")
	}
	var stderr bytes.Buffer
	cmd := exec.Command(kubectl, append(append([]string{"kustomize"}, flags...), dir)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.Bytes())
	}
	return parseRendering(t, dir, out)
}

// sameResources asserts that a and b hold the same resources, whatever their order (kubectl
// sorts by kind, krusty keeps the input order).
func sameResources(t *testing.T, a, b rendering) {
	t.Helper()
	if len(a) != len(b) {
		t.Errorf("%d resources vs %d", len(a), len(b))
	}
	for _, o := range a {
		if d := cmp.Diff(o.Obj, b.get(t, o.Kind, o.Name).Obj); d != "" {
			t.Errorf("%s/%s differs (-krusty +kubectl):\n%s", o.Kind, o.Name, d)
		}
	}
}

// TestLayoutHelm: a Deployment inflated from a local chart (no repository, no network) is injected
// like any other, and one the chart's own template opts out is rendered exactly as without the
// component. Kustomize runs a kustomization's generators (helmCharts, generators:) before its
// components from v5.1.0 on; v4.5.7 and v5.0.1 run them after, so there the chart's workloads
// are silently left alone (checked by hand, see README): the chart in a base listed under
// resources: works in every version.
func TestLayoutHelm(t *testing.T) {
	helm := helmCommand(t)
	const inflator = `apiVersion: builtin
kind: HelmChartInflationGenerator
metadata:
  name: web
name: web
releaseName: web
chartHome: charts
`
	for _, tc := range []struct {
		name  string
		files map[string]string
	}{
		{"helmCharts next to the component", withChart("app", map[string]string{
			"app/kustomization.yaml": "helmGlobals: {chartHome: charts}\nhelmCharts:\n- {name: web, releaseName: web}\ncomponents: [../components/COMP]\n"})},
		{"generators: HelmChartInflationGenerator next to the component", withChart("app", map[string]string{
			"app/web-chart.yaml":     inflator,
			"app/kustomization.yaml": "generators: [web-chart.yaml]\ncomponents: [../components/COMP]\n"})},
		{"helmCharts in a base", withChart("base", map[string]string{
			"base/kustomization.yaml": "helmGlobals: {chartHome: charts}\nhelmCharts:\n- {name: web, releaseName: web}\n",
			"app/kustomization.yaml":  "resources: [../base]\ncomponents: [../components/COMP]\n"})},
	} {
		for _, comp := range layoutComponents {
			for _, optOut := range []bool{false, true} {
				name := tc.name + "/" + comp
				if optOut {
					name += "/opted out in the chart"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel() // helm is a process of its own; the renders are independent
					files := map[string]string{}
					for k, v := range tc.files {
						files[k] = strings.ReplaceAll(v, "COMP", comp)
						if optOut && strings.HasSuffix(k, "/values.yaml") {
							files[k] = "optOut: true\n"
						}
					}
					root := onDisk(t, files)
					app := filepath.Join(root, "app")
					fSys, opts := filesys.MakeFsOnDisk(), helmOptions(helm)
					with := buildOpts(t, opts, fSys, app)
					restore := withoutComponents(t, app)
					without := buildOpts(t, opts, fSys, app)
					restore()
					// Before the checks below, which strip podns's additions from with.
					t.Run("kubectl", func(t *testing.T) {
						sameResources(t, with, kubectlKustomize(t, app, "--enable-helm", "--helm-command", helm))
					})
					if optOut {
						if got := without.get(t, "Deployment", "web").Labels["podns.io/inject"]; got != "false" {
							t.Fatalf("the chart did not render the opt-out label (labels %v)", without.get(t, "Deployment", "web").Labels)
						}
						checkUntouched(t, with, without)
					} else {
						checkInjectedAsWritten(t, with, without, comp, "Deployment", "web", []string{"wait"})
					}
				})
			}
		}
	}
}

// TestLayoutComponentWorkload: a workload that another component adds is injected when that
// component is listed before podns; listed after podns, it arrives once podns has run and is left
// as written (the README's rule: list components that add workloads before podns).
func TestLayoutComponentWorkload(t *testing.T) {
	emit := map[string]string{
		"app/emit/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [deployment.yaml]\n",
		"app/emit/deployment.yaml":    layoutDeployment,
	}
	for _, comp := range layoutComponents {
		for _, before := range []bool{true, false} {
			name := comp + "/listed after podns (not injected)"
			list := "[../components/" + comp + ", emit]"
			if before {
				name, list = comp+"/listed before podns", "[emit, ../components/"+comp+"]"
			}
			t.Run(name, func(t *testing.T) {
				files := map[string]string{"app/kustomization.yaml": "components: " + list + "\n"}
				for k, v := range emit {
					files[k] = v
				}
				fSys := layout(t, files)
				with := build(t, fSys, "/m/app")
				// Without podns: the same kustomization with only the emitting component.
				write(t, fSys, "/m/app/kustomization.yaml", "components: [emit]\n")
				without := build(t, fSys, "/m/app")
				if before {
					checkInjectedAsWritten(t, with, without, comp, "Deployment", "web", nil)
				} else {
					checkUntouched(t, with, without)
				}
			})
		}
	}
}

// TestLayoutRemoteBase: a base and the component fetched the way kustomize fetches remote ones
// (a git clone into a temporary directory, then loaded as a local directory). The repository is
// a local one reached with a file:// URL, so kustomize's git code path runs without a network;
// what is not exercised is the transport (https/ssh), authentication and the host's git
// configuration. Skipped only when git is not installed.
func TestLayoutRemoteBase(t *testing.T) {
	git, err := exec.LookPath("git")
	if err != nil {
		t.Skip("git is not installed: remote bases are NOT tested")
	}
	repo := onDisk(t, map[string]string{
		"base/deployment.yaml":    layoutDeployment,
		"base/kustomization.yaml": "resources: [deployment.yaml]\n",
	})
	// components/ sits at the repository's top, as injector-manifests/components does in podns.
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "-A"},
		{"-c", "user.name=podns-test", "-c", "user.email=test@podns.invalid", "commit", "-q", "-m", "fixture"},
	} {
		cmd := exec.Command(git, append([]string{"-C", repo}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	url := "file://" + filepath.ToSlash(repo)
	for _, comp := range layoutComponents {
		for _, tc := range []struct{ name, kustomization string }{
			{"remote base, local component",
				"resources:\n- " + url + "//base?ref=main\ncomponents:\n- ../components/" + comp + "\n"},
			{"remote base and remote component",
				"resources:\n- " + url + "//base?ref=main\ncomponents:\n- " + url + "//components/" + comp + "?ref=main\n"},
		} {
			t.Run(comp+"/"+tc.name, func(t *testing.T) {
				t.Parallel() // git runs as processes of their own; each build clones anew
				root := onDisk(t, map[string]string{"app/kustomization.yaml": tc.kustomization})
				app := filepath.Join(root, "app")
				fSys, opts := filesys.MakeFsOnDisk(), krusty.MakeDefaultOptions()
				with := buildOpts(t, opts, fSys, app)
				restore := withoutComponents(t, app)
				without := buildOpts(t, opts, fSys, app)
				restore()
				t.Run("kubectl", func(t *testing.T) { sameResources(t, with, kubectlKustomize(t, app)) })
				checkInjectedAsWritten(t, with, without, comp, "Deployment", "web", nil)
			})
		}
	}
}
