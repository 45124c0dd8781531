package inject

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestDefinitionIsCurrent fails when definition.yaml is not a byte copy of the component's
// definition: run `go generate ./webhook/inject`.
func TestDefinitionIsCurrent(t *testing.T) {
	src, err := os.ReadFile("../../injector-manifests/components/podns-common/injector-values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, definitionYAML) {
		t.Fatal("webhook/inject/definition.yaml differs from injector-manifests/components/podns-common/injector-values.yaml; run go generate ./webhook/inject")
	}
}

func TestParseDefinition(t *testing.T) {
	d, err := parseDefinition(definitionYAML)
	if err != nil {
		t.Fatal(err)
	}
	if d.StubContainer.RestartPolicy != nil {
		t.Error("the definition's stub has a restartPolicy; components/podns adds it, and the mutation does")
	}
	if d.InitContainer.Image == "" || d.StubContainer.Image == "" || d.Volume.EmptyDir == nil || d.Sysctl.Value != "53" {
		t.Errorf("definition incomplete: %+v", d)
	}

	// A field the webhook's types do not know, a wrong kind or a renamed piece fails NewHandler
	// instead of injecting something else than the component.
	for name, edit := range map[string]func(string) string{
		"unknown field": func(s string) string { return strings.Replace(s, "  sysctl:\n", "  sysctl:\n    unknown: 1\n", 1) },
		"kind":          func(s string) string { return strings.Replace(s, "kind: InjectorValues", "kind: Other", 1) },
		"volume name": func(s string) string {
			return strings.Replace(s, "name: podns-state\n    emptyDir", "name: x\n    emptyDir", 1)
		},
		"stub name": func(s string) string { return strings.Replace(s, "name: podns-stub", "name: x", 1) },
		"init name": func(s string) string { return strings.Replace(s, "name: podns-init", "name: x", 1) },
		"sysctl name": func(s string) string {
			return strings.Replace(s, "name: net.ipv4.ip_unprivileged_port_start", "name: x", 1)
		},
	} {
		in := string(definitionYAML)
		out := edit(in)
		if out == in {
			t.Fatalf("%s: the edit changed nothing", name)
		}
		if _, err := parseDefinition([]byte(out)); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}
