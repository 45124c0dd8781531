package manifests_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Layouts from issue 13: the component in the kustomization layouts teams keep. Each test writes
// the layout into an in-memory file system next to a copy of components/, renders it with and
// without the component, and compares.

const layoutDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
`

// layout is a file tree under /m, with components/ copied in.
func layout(t *testing.T, files map[string]string) filesys.FileSystem {
	t.Helper()
	fSys := memCopy(t, "components", "/m/components")
	for name, s := range files {
		if err := fSys.WriteFile("/m/"+name, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	return fSys
}

func buildErr(fSys filesys.FileSystem, dir string) error {
	_, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fSys, dir)
	return err
}

// layoutComponents are the two components every name-clash layout is rendered with.
var layoutComponents = []string{"podns", "podns-legacy"}

// TestLayoutNameClash (issue 13 item 3): a workload that already uses one of podns's names keeps
// it, and the build fails with a message naming the clash and the fix, under either component.
// Before: the workload's volume became podns's emptyDir, its container podns's, its sysctl value
// 53, silently (podns-legacy until this test covered it too).
func TestLayoutNameClash(t *testing.T) {
	for _, tc := range []struct {
		name, spec, want string
	}{
		{"volume", `      volumes:
      - name: podns-state
        persistentVolumeClaim: {claimName: data}
`, "the workload already has a volume named podns-state; rename it"},
		{"volume not first", `      volumes:
      - name: cache
        emptyDir: {}
      - name: podns-state
        persistentVolumeClaim: {claimName: data}
`, "the workload already has a volume named podns-state; rename it"},
		{"init container podns-init", `      initContainers:
      - name: podns-init
        image: registry.example/own:1
`, "the workload already has a container named podns-init; rename it"},
		{"init container podns-stub after another", `      initContainers:
      - name: wait
        image: registry.example/own:1
      - name: podns-stub
        image: registry.example/own:1
`, "the workload already has a container named podns-stub; rename it"},
		{"regular container podns-stub", `      - name: podns-stub
        image: registry.example/own:1
`, "the workload already has a container named podns-stub; rename it"},
		{"regular container podns-init", `      - name: podns-init
        image: registry.example/own:1
`, "the workload already has a container named podns-init; rename it"},
		{"init container podns-stub first", `      initContainers:
      - name: podns-stub
        image: registry.example/own:1
`, "the workload already has a container named podns-stub; rename it"},
		{"init container podns-init after another", `      initContainers:
      - name: wait
        image: registry.example/own:1
      - name: podns-init
        image: registry.example/own:1
`, "the workload already has a container named podns-init; rename it"},
		{"sysctl after another", `      securityContext:
        sysctls:
        - name: kernel.shm_rmid_forced
          value: "1"
        - name: net.ipv4.ip_unprivileged_port_start
          value: "1024"
`, "the workload sets the sysctl ip_unprivileged_port_start itself; remove it"},
		{"sysctl", `      securityContext:
        sysctls:
        - name: net.ipv4.ip_unprivileged_port_start
          value: "0"
`, "the workload sets the sysctl ip_unprivileged_port_start itself; remove it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dep string
			if strings.HasPrefix(tc.spec, "      - name: ") { // one more regular container
				dep = layoutDeployment + tc.spec
			} else {
				dep = strings.Replace(layoutDeployment, "    spec:\n      containers:", "    spec:\n"+tc.spec+"      containers:", 1)
			}
			for _, comp := range layoutComponents {
				fSys := layout(t, map[string]string{
					"app/deployment.yaml":    dep,
					"app/kustomization.yaml": "resources: [deployment.yaml]\ncomponents: [../components/" + comp + "]\n",
				})
				err := buildErr(fSys, "/m/app")
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s: want a build error containing %q, got %v", comp, tc.want, err)
				}
				// The message is a JSON pointer, where "/" would read "~1": it must say what
				// to do in words a reader can copy.
				if strings.Contains(err.Error(), "~1") || !strings.Contains(err.Error(), "opt the workload out") {
					t.Errorf("%s: message %q escapes the label or lacks the opt-out", comp, err)
				}
				// The same workload opted out renders as written.
				optedOut := strings.Replace(dep, "  name: web\n", "  name: web\n  labels: {podns.io/inject: \"false\"}\n", 1)
				if err := fSys.WriteFile("/m/app/deployment.yaml", []byte(optedOut)); err != nil {
					t.Fatal(err)
				}
				with, without := build(t, fSys, "/m/app"), renderWithoutFS(t, fSys, "/m/app")
				if d := cmp.Diff(without.get(t, "Deployment", "web").Obj, with.get(t, "Deployment", "web").Obj); d != "" {
					t.Errorf("%s: opted-out workload changed (-as written +rendered):\n%s", comp, d)
				}
			}
		})
	}
}

// TestLayoutNearNames: names that merely contain podns's (kyaml matches [name=...] as an
// unanchored regular expression) are the workload's own and stay as written, under either
// component. Before, podns-legacy replaced podns-init-db with podns-init and podns-state-backup
// with its emptyDir.
func TestLayoutNearNames(t *testing.T) {
	dep := strings.Replace(layoutDeployment, "    spec:\n      containers:", `    spec:
      initContainers:
      - name: podns-init-db
        image: registry.example/own:1
      volumes:
      - name: podns-state-backup
        persistentVolumeClaim: {claimName: data}
      containers:
      - name: podns-stub-exporter
        image: registry.example/own:1`, 1)
	for _, tc := range []struct {
		comp               string
		wantInit, wantMain []string
	}{
		{"podns", []string{initName, stubName, "podns-init-db"}, []string{"podns-stub-exporter", "web"}},
		{"podns-legacy", []string{"podns-init-db", initName}, []string{"podns-stub-exporter", "web", stubName}},
	} {
		t.Run(tc.comp, func(t *testing.T) {
			fSys := layout(t, map[string]string{
				"app/deployment.yaml":    dep,
				"app/kustomization.yaml": "resources: [deployment.yaml]\ncomponents: [../components/" + tc.comp + "]\n",
			})
			with, without := build(t, fSys, "/m/app"), renderWithoutFS(t, fSys, "/m/app")
			got, orig := with.get(t, "Deployment", "web"), without.get(t, "Deployment", "web")
			tmpl := podTemplate(got.Obj)
			if n := names(tmpl.Spec.InitContainers); !cmp.Equal(n, tc.wantInit) {
				t.Errorf("init containers %v, want %v", n, tc.wantInit)
			}
			if n := names(tmpl.Spec.Containers); !cmp.Equal(n, tc.wantMain) {
				t.Errorf("containers %v, want %v", n, tc.wantMain)
			}
			cm := with.configMap(t).Name
			checkVolume(t, tmpl.Spec)
			checkSysctl(t, tmpl.Spec)
			checkInit(t, container(t, tmpl.Spec.InitContainers, initName), cm, initImage)
			stubs := tmpl.Spec.InitContainers
			if tc.comp == "podns-legacy" {
				stubs = tmpl.Spec.Containers
			}
			checkStub(t, container(t, stubs, stubName), cm, stubImage)
			stripPodns(tmpl)
			stripPodns(podTemplate(orig.Obj))
			if d := cmp.Diff(orig.Obj, got.Obj); d != "" {
				t.Errorf("changed beyond what podns adds (-as written +rendered):\n%s", d)
			}
		})
	}
}

// renderWithoutFS is renderWithout for a layout already in memory: dir's kustomization without
// its components line (restored afterwards).
func renderWithoutFS(t *testing.T, fSys filesys.FileSystem, dir string) rendering {
	t.Helper()
	kfile := dir + "/kustomization.yaml"
	b, err := fSys.ReadFile(kfile)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "components:") {
			kept = append(kept, l)
		}
	}
	if len(kept) == len(strings.Split(string(b), "\n")) {
		t.Fatalf("%s includes no component", dir)
	}
	write(t, fSys, kfile, strings.Join(kept, "\n"))
	defer write(t, fSys, kfile, string(b))
	return build(t, fSys, dir)
}

func write(t *testing.T, fSys filesys.FileSystem, name, s string) {
	t.Helper()
	if err := fSys.WriteFile(name, []byte(s)); err != nil {
		t.Fatal(err)
	}
}

// TestLayoutNamespace (issue 13 item 1). podns-config is generated in the kustomization that
// includes the component; kustomize gives a referrer the hashed name only when the ConfigMap is in
// the referrer's namespace at the end of the build, and leaves the plain name otherwise. A
// component cannot learn a workload's namespace (a replacement source must be one resource) and
// nothing of it runs after the including kustomization's `namespace:`, so a namespace set only
// below the component cannot be followed or detected: the README states the rule, and this test
// pins both the broken layout (so the README changes if kustomize does) and every working form.
func TestLayoutNamespace(t *testing.T) {
	nsDep := strings.Replace(layoutDeployment, "  name: web\n", "  name: web\n  namespace: team-a\n", 1)
	for _, tc := range []struct {
		name   string
		files  map[string]string
		wantNS string // namespace of the workload and podns-config; "" = broken (pinned)
		broken bool
	}{
		{name: "namespace in the base, podns in the overlay (broken)", broken: true, files: map[string]string{
			"base/deployment.yaml": layoutDeployment, "base/kustomization.yaml": "namespace: team-a\nresources: [deployment.yaml]\n",
			"app/kustomization.yaml": "resources: [../base]\ncomponents: [../components/podns]\n"}},
		{name: "namespace in the manifest (broken)", broken: true, files: map[string]string{
			"app/deployment.yaml": nsDep, "app/kustomization.yaml": "resources: [deployment.yaml]\ncomponents: [../components/podns]\n"}},
		{name: "fix: namespace next to the component", wantNS: "team-a", files: map[string]string{
			"base/deployment.yaml": layoutDeployment, "base/kustomization.yaml": "namespace: team-a\nresources: [deployment.yaml]\n",
			"app/kustomization.yaml": "namespace: team-a\nresources: [../base]\ncomponents: [../components/podns]\n"}},
		{name: "fix: manifest namespace repeated next to the component", wantNS: "team-a", files: map[string]string{
			"app/deployment.yaml": nsDep, "app/kustomization.yaml": "namespace: team-a\nresources: [deployment.yaml]\ncomponents: [../components/podns]\n"}},
		{name: "podns in the base that sets the namespace, prefix and suffix above", wantNS: "team-a", files: map[string]string{
			"base/deployment.yaml": layoutDeployment, "base/kustomization.yaml": "namespace: team-a\nresources: [deployment.yaml]\ncomponents: [../components/podns]\n",
			"app/kustomization.yaml": "namePrefix: p-\nnameSuffix: -s\nresources: [../base]\n"}},
		{name: "namespace in an overlay above the including kustomization", wantNS: "prod", files: map[string]string{
			"base/deployment.yaml": layoutDeployment, "base/kustomization.yaml": "namespace: team-a\nresources: [deployment.yaml]\ncomponents: [../components/podns]\n",
			"app/kustomization.yaml": "namespace: prod\nnamePrefix: p-\nresources: [../base]\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fSys := layout(t, tc.files)
			r := build(t, fSys, "/m/app")
			cm := r.configMap(t)
			ws := r.workloads()
			if len(ws) != 1 {
				t.Fatalf("%d workloads", len(ws))
			}
			tmpl := podTemplate(ws[0].Obj)
			ref := container(t, tmpl.Spec.InitContainers, initName).EnvFrom[0].ConfigMapRef.Name
			wsNS := objectNamespace(ws[0].Obj)
			if tc.broken {
				if cm.Namespace != "" || wsNS != "team-a" || ref != "podns-config" {
					t.Errorf("kustomize no longer leaves this layout broken (ConfigMap %s/%s, workload in %s references %s): simplify the README's namespace rule",
						cm.Namespace, cm.Name, wsNS, ref)
				}
				return
			}
			if cm.Namespace != tc.wantNS || wsNS != tc.wantNS || ref != cm.Name {
				t.Errorf("ConfigMap %s/%s, workload in %s references %s; want both in %s and the hashed name",
					cm.Namespace, cm.Name, wsNS, ref, tc.wantNS)
			}
		})
	}

	// Several namespaces in one build: podns included once per namespace, where it is set.
	base := func(ns string) string {
		return "namespace: " + ns + "\nresources: [../../base]\ncomponents: [../../components/podns]\n"
	}
	fSys := layout(t, map[string]string{
		"base/deployment.yaml": layoutDeployment, "base/kustomization.yaml": "resources: [deployment.yaml]\n",
		"ns/a/kustomization.yaml": base("team-a"), "ns/b/kustomization.yaml": base("team-b"),
		"app/kustomization.yaml": "resources: [../ns/a, ../ns/b]\n",
	})
	r := build(t, fSys, "/m/app")
	cms := map[string]string{}
	for _, o := range r {
		if o.Kind == "ConfigMap" {
			cms[objectNamespace(o.Obj)] = o.Name
		}
	}
	for _, w := range r.workloads() {
		ns := objectNamespace(w.Obj)
		ref := container(t, podTemplate(w.Obj).Spec.InitContainers, stubName).EnvFrom[0].ConfigMapRef.Name
		if cms[ns] == "" || ref != cms[ns] {
			t.Errorf("workload in %s references %s; ConfigMaps %v", ns, ref, cms)
		}
	}
	if len(cms) != 2 {
		t.Errorf("ConfigMaps %v, want one per namespace", cms)
	}
}

func objectNamespace(obj any) string {
	if o, ok := obj.(interface{ GetNamespace() string }); ok {
		return o.GetNamespace()
	}
	return ""
}

// TestLayoutOptOutByTransformer (issue 13 item 2). The including kustomization's `labels:`,
// `commonLabels:` and patches run after its components, so an opt-out label added there comes
// too late: pinned here (if kustomize changes, the README can drop the rule). The forms the
// README gives, where the label exists before the component runs, render exactly as without it.
func TestLayoutOptOutByTransformer(t *testing.T) {
	hostNet := strings.Replace(layoutDeployment, "    spec:\n", "    spec:\n      hostNetwork: true\n", 1)
	label := "labels:\n- pairs: {podns.io/inject: \"false\"}\n"
	for _, tc := range []struct {
		name     string
		files    map[string]string
		optedOut bool
	}{
		{name: "labels: next to the component (too late)", files: map[string]string{
			"app/deployment.yaml": hostNet, "app/kustomization.yaml": label + "resources: [deployment.yaml]\ncomponents: [../components/podns]\n"}},
		{name: "commonLabels: next to the component (too late)", files: map[string]string{
			"app/deployment.yaml": hostNet, "app/kustomization.yaml": "commonLabels: {podns.io/inject: \"false\"}\nresources: [deployment.yaml]\ncomponents: [../components/podns]\n"}},
		{name: "labels: in the base", optedOut: true, files: map[string]string{
			"base/deployment.yaml": hostNet, "base/kustomization.yaml": label + "resources: [deployment.yaml]\n",
			"app/kustomization.yaml": "resources: [../base]\ncomponents: [../components/podns]\n"}},
		{name: "labels: in a component listed before podns", optedOut: true, files: map[string]string{
			"app/deployment.yaml":            hostNet,
			"app/opt-out/kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n" + label,
			"app/kustomization.yaml":         "resources: [deployment.yaml]\ncomponents: [opt-out, ../components/podns]\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fSys := layout(t, tc.files)
			with := build(t, fSys, "/m/app")
			got := with.get(t, "Deployment", "web")
			if got.Labels["podns.io/inject"] != "false" {
				t.Fatalf("label not applied: %v", got.Labels)
			}
			injected := len(podTemplate(got.Obj).Spec.InitContainers) > 0
			if !tc.optedOut {
				if !injected {
					t.Error("kustomize now applies this label before the component: update the README's opt-out rule")
				}
				return
			}
			without := renderWithoutFS(t, fSys, "/m/app")
			// The opt-out component is listed in components too; render it alone for the reference.
			if strings.Contains(tc.name, "component") {
				write(t, fSys, "/m/app/kustomization.yaml", "resources: [deployment.yaml]\ncomponents: [opt-out]\n")
				without = build(t, fSys, "/m/app")
			}
			if d := cmp.Diff(without.get(t, "Deployment", "web").Obj, got.Obj); d != "" {
				t.Errorf("opted-out workload changed (-as written +rendered):\n%s", d)
			}
		})
	}
}
