package inject

import (
	_ "embed"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

//go:generate cp ../../injector-manifests/components/podns-common/injector-values.yaml definition.yaml

// definitionYAML is a byte copy of the Kustomize component's InjectorValues resource, the one
// definition of what podns adds to a pod (TestDefinitionIsCurrent fails when the copy is stale).
//
//go:embed definition.yaml
var definitionYAML []byte

// definition is what podns adds to a pod, as the component's InjectorValues spec holds it. The
// stub has no restartPolicy there: components/podns adds it, and so does the mutation.
type definition struct {
	Volume        corev1.Volume    `json:"volume"`
	Sysctl        corev1.Sysctl    `json:"sysctl"`
	InitContainer corev1.Container `json:"initContainer"`
	StubContainer corev1.Container `json:"stubContainer"`
}

// parseDefinition decodes the InjectorValues document strictly: a field the component adds that
// the webhook's types do not know fails NewHandler rather than being silently dropped.
func parseDefinition(b []byte) (definition, error) {
	var doc struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
		Spec definition `json:"spec"`
	}
	if err := yaml.UnmarshalStrict(b, &doc); err != nil {
		return definition{}, fmt.Errorf("inject: definition.yaml: %w", err)
	}
	if doc.Kind != "InjectorValues" {
		return definition{}, fmt.Errorf("inject: definition.yaml: kind %q, want InjectorValues", doc.Kind)
	}
	d := doc.Spec
	switch {
	case d.Volume.Name != stateVolume:
		return definition{}, fmt.Errorf("inject: definition.yaml: volume %q, want %s", d.Volume.Name, stateVolume)
	case d.InitContainer.Name != initName:
		return definition{}, fmt.Errorf("inject: definition.yaml: init container %q, want %s", d.InitContainer.Name, initName)
	case d.StubContainer.Name != stubName:
		return definition{}, fmt.Errorf("inject: definition.yaml: stub container %q, want %s", d.StubContainer.Name, stubName)
	case d.Sysctl.Name != portSysctl:
		return definition{}, fmt.Errorf("inject: definition.yaml: sysctl %q, want %s", d.Sysctl.Name, portSysctl)
	}
	return d, nil
}
