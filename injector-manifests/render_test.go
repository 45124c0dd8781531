package manifests_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// object is one resource of a kustomize build, decoded strictly into its k8s.io/api type.
type object struct {
	Kind, Name string
	Labels     map[string]string
	Obj        any // *appsv1.Deployment, *batchv1.CronJob, *corev1.ConfigMap, ...
}

// rendering is the output of one kustomize build, in output order.
type rendering []object

// newTyped returns an empty object of every kind the examples and fixtures may render. A kind
// missing here fails the test: every rendered resource must decode into a known API type.
var newTyped = map[string]func() any{
	"ConfigMap":   func() any { return &corev1.ConfigMap{} },
	"Service":     func() any { return &corev1.Service{} },
	"Deployment":  func() any { return &appsv1.Deployment{} },
	"StatefulSet": func() any { return &appsv1.StatefulSet{} },
	"DaemonSet":   func() any { return &appsv1.DaemonSet{} },
	"ReplicaSet":  func() any { return &appsv1.ReplicaSet{} },
	"Job":         func() any { return &batchv1.Job{} },
	"CronJob":     func() any { return &batchv1.CronJob{} },
}

// render builds the kustomization in dir (relative to this module) from the files on disk, the
// way `kustomize build` does, and decodes every resource strictly: an unknown or misspelt field
// fails the test.
func render(t *testing.T, dir string) rendering {
	t.Helper()
	return build(t, filesys.MakeFsOnDisk(), dir)
}

// renderWithout builds dir with its kustomization's components removed: the workloads as the
// user wrote them, to compare the injected ones against.
func renderWithout(t *testing.T, dir string) rendering {
	t.Helper()
	const root = "/app"
	mem := memCopy(t, dir, root)
	kfile := filepath.Join(root, "kustomization.yaml")
	b, err := mem.ReadFile(kfile)
	if err != nil {
		t.Fatalf("read %s: %v", kfile, err)
	}
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("decode %s/kustomization.yaml: %v", dir, err)
	}
	if len(k.Components) == 0 {
		t.Fatalf("%s includes no component", dir)
	}
	k.Components = nil
	if b, err = yaml.Marshal(k); err != nil {
		t.Fatal(err)
	}
	if err := mem.WriteFile(kfile, b); err != nil {
		t.Fatal(err)
	}
	return build(t, mem, root)
}

// memCopy copies the directory tree dir from disk to an in-memory file system, under root.
func memCopy(t *testing.T, dir, root string) filesys.FileSystem {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return mem.WriteFile(filepath.Join(root, rel), b)
	})
	if err != nil {
		t.Fatalf("copy %s: %v", dir, err)
	}
	return mem
}

func build(t *testing.T, fSys filesys.FileSystem, dir string) rendering {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fSys, dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out rendering
	for _, res := range resMap.Resources() {
		kind := res.GetKind()
		mk, ok := newTyped[kind]
		if !ok {
			t.Fatalf("%s: rendered an unexpected kind %s (%s)", dir, kind, res.GetName())
		}
		b, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj := mk()
		if err := decodeStrict(b, obj); err != nil {
			t.Fatalf("%s: %s/%s does not decode strictly: %v\n%s", dir, kind, res.GetName(), err, b)
		}
		out = append(out, object{Kind: kind, Name: res.GetName(), Labels: res.GetLabels(), Obj: obj})
	}
	return out
}

// decodeStrict decodes one YAML document the way the API server sees what kubectl sends: YAML is
// turned into JSON without looking at the Go type (so `value: 53` stays a number and fails to
// decode into a string field, as the server would reject it), then decoded with unknown fields
// and duplicate keys as errors.
func decodeStrict(y []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	if err := dec.Decode(obj); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one document")
	}
	return nil
}

// get returns the object of that kind and name, failing the test when there is none.
func (r rendering) get(t *testing.T, kind, name string) object {
	t.Helper()
	for _, o := range r {
		if o.Kind == kind && o.Name == name {
			return o
		}
	}
	t.Fatalf("no %s/%s in the output", kind, name)
	return object{}
}

// configMap returns the one generated podns-config ConfigMap ([prefix]podns-config-<hash>).
func (r rendering) configMap(t *testing.T) *corev1.ConfigMap {
	t.Helper()
	var found []*corev1.ConfigMap
	for _, o := range r {
		if o.Kind == "ConfigMap" && strings.Contains(o.Name, "podns-config-") {
			found = append(found, o.Obj.(*corev1.ConfigMap))
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one podns-config-<hash> ConfigMap, got %d", len(found))
	}
	return found[0]
}

// workloads returns the objects that have a pod template.
func (r rendering) workloads() []object {
	var out []object
	for _, o := range r {
		if podTemplate(o.Obj) != nil {
			out = append(out, o)
		}
	}
	return out
}

// podTemplate returns a pointer to the object's pod template (so callers may edit it), or nil
// for objects without one. A CronJob's lives under spec.jobTemplate.spec.template.
func podTemplate(obj any) *corev1.PodTemplateSpec {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.Spec.Template
	case *appsv1.StatefulSet:
		return &o.Spec.Template
	case *appsv1.DaemonSet:
		return &o.Spec.Template
	case *appsv1.ReplicaSet:
		return &o.Spec.Template
	case *batchv1.Job:
		return &o.Spec.Template
	case *batchv1.CronJob:
		return &o.Spec.JobTemplate.Spec.Template
	}
	return nil
}

func names(cs []corev1.Container) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	var found []corev1.Container
	for _, c := range cs {
		if c.Name == name {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one container %s, got %d in %v", name, len(found), names(cs))
	}
	return found[0]
}
