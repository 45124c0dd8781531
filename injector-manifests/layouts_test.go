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

// TestLayoutNameClash (issue 13 item 3): a workload that already uses one of podns's names keeps
// it, and the build fails with a message naming the clash and the fix. Before: the workload's
// volume became podns's emptyDir, its container podns's, its sysctl value 53, silently.
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
		{"sysctl", `      securityContext:
        sysctls:
        - name: net.ipv4.ip_unprivileged_port_start
          value: "0"
`, "the workload sets the sysctl ip_unprivileged_port_start itself; remove it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var dep string
			if strings.HasPrefix(tc.spec, "      - name: podns-stub") { // one more regular container
				dep = layoutDeployment + tc.spec
			} else {
				dep = strings.Replace(layoutDeployment, "    spec:\n      containers:", "    spec:\n"+tc.spec+"      containers:", 1)
			}
			for _, comp := range []string{"podns"} {
				fSys := layout(t, map[string]string{
					"app/deployment.yaml":    dep,
					"app/kustomization.yaml": "resources: [deployment.yaml]\ncomponents: [../components/" + comp + "]\n",
				})
				err := buildErr(fSys, "/m/app")
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s: want a build error containing %q, got %v", comp, tc.want, err)
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
// unanchored regular expression) are the workload's own and stay as written.
func TestLayoutNearNames(t *testing.T) {
	dep := strings.Replace(layoutDeployment, "    spec:\n      containers:", `    spec:
      initContainers:
      - name: podns-init-db
        image: registry.example/own:1
      volumes:
      - name: podns-state-backup
        persistentVolumeClaim: {claimName: data}
      containers:`, 1)
	fSys := layout(t, map[string]string{
		"app/deployment.yaml":    dep,
		"app/kustomization.yaml": "resources: [deployment.yaml]\ncomponents: [../components/podns]\n",
	})
	with, without := build(t, fSys, "/m/app"), renderWithoutFS(t, fSys, "/m/app")
	got, orig := with.get(t, "Deployment", "web"), without.get(t, "Deployment", "web")
	tmpl := podTemplate(got.Obj)
	if n := names(tmpl.Spec.InitContainers); !cmp.Equal(n, []string{initName, stubName, "podns-init-db"}) {
		t.Errorf("init containers %v", n)
	}
	checkVolume(t, tmpl.Spec)
	checkInit(t, container(t, tmpl.Spec.InitContainers, initName), with.configMap(t).Name, initImage)
	stripPodns(tmpl)
	stripPodns(podTemplate(orig.Obj))
	if d := cmp.Diff(orig.Obj, got.Obj); d != "" {
		t.Errorf("changed beyond what podns adds (-as written +rendered):\n%s", d)
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
