package manifests_test

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// The MutatingAdmissionPolicy variant (admission-policy/) carries a CEL copy of the one
// definition (components/podns-common/injector-values.yaml): CEL cannot read a file, so the
// containers, volume and sysctl are written out as typed object constructions. This test
// regenerates them from the definition and fails when policy.yaml holds anything else;
// `go test -run TestAdmissionPolicy -update-policy` rewrites them. What the API server makes of them is
// asserted by the API-server test (e2e/kube, make e2e-admission).

var updatePolicy = flag.Bool("update-policy", false, "rewrite the generated variables of admission-policy/policy.yaml")

const (
	policyFile     = "admission-policy/policy.yaml"
	definitionFile = "components/podns-common/injector-values.yaml"
)

// rawCEL is a value written into the expression as it is (a CEL expression, not a literal).
type rawCEL string

// mapFields are the fields whose value is a CEL map (map[string]Quantity), not an object type.
var mapFields = map[string]bool{"requests": true, "limits": true}

// celValue writes v (decoded from JSON) as a CEL value of the OpenAPI type typ, the policy's
// Object.<path> naming: an object's field f has type typ.f, a list's elements have typ.
func celValue(b *strings.Builder, v any, typ, indent string) {
	switch v := v.(type) {
	case rawCEL:
		b.WriteString(string(v))
	case string:
		b.WriteString(strconv.Quote(v))
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case float64: // JSON numbers; the definition has integers only
		b.WriteString(strconv.FormatInt(int64(v), 10))
	case []any:
		b.WriteString("[")
		for i, e := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			celValue(b, e, typ, indent)
		}
		b.WriteString("]")
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		last := typ[strings.LastIndexByte(typ, '.')+1:]
		if mapFields[last] {
			b.WriteString("{")
			for i, k := range keys {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(strconv.Quote(k) + ": ")
				celValue(b, v[k], "", indent)
			}
			b.WriteString("}")
			return
		}
		b.WriteString(typ + "{")
		for i, k := range keys {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("\n" + indent + "  " + k + ": ")
			celValue(b, v[k], typ+"."+k, indent+"  ")
		}
		b.WriteString("}")
	default:
		panic(fmt.Sprintf("celValue: unexpected %T", v))
	}
}

func celOf(v any, typ string) string {
	var b strings.Builder
	celValue(&b, v, typ, "")
	return b.String()
}

// policyDefinition reads injector-values.yaml's spec as JSON values.
func policyDefinition(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(definitionFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", definitionFile, err)
	}
	return doc.Spec
}

// defContainer returns a deep copy of the definition's container key, with every envFrom
// configMapRef optional: the webhook and this policy create no per-namespace podns-config, so a
// namespace may add one to tune podns and needs none (W-design, "Sidecar mode").
func defContainer(t *testing.T, def map[string]any, key string) map[string]any {
	t.Helper()
	b, err := yaml.Marshal(def[key])
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	ef, _ := c["envFrom"].([]any)
	for _, e := range ef {
		if ref, ok := e.(map[string]any)["configMapRef"].(map[string]any); ok {
			ref["optional"] = true
		}
	}
	return c
}

// wantVariables returns the generated variables of policy.yaml, by name, in file order.
func wantVariables(t *testing.T) ([]string, map[string]string) {
	t.Helper()
	def := policyDefinition(t)
	initC := defContainer(t, def, "initContainer")
	stub := defContainer(t, def, "stubContainer")
	stub["restartPolicy"] = "Always" // a native sidecar, as components/podns makes it

	stubR := defContainer(t, def, "stubContainer")
	stubR["restartPolicy"] = "Always"
	// Restricted mode: no podns-init reads the kubelet's resolv.conf, so the stub gets its upstream
	// and its start-up check name from the policy's parameters. env wins over envFrom.
	env, _ := stubR["env"].([]any)
	stubR["env"] = append(env,
		map[string]any{"name": "PODNS_UPSTREAMS", "value": rawCEL("params.data.clusterDNS")},
		map[string]any{"name": "PODNS_READY_CHECK_NAME",
			"value": rawCEL(`"kubernetes.default.svc." + variables.domain + "."`)})

	version := func(c map[string]any) string {
		img, _ := c["image"].(string)
		i := strings.LastIndexByte(img, ':')
		if i < 0 {
			t.Fatalf("definition image %q has no tag", img)
		}
		return img[i+1:]
	}
	if v1, v2 := version(initC), version(stub); v1 != v2 {
		t.Fatalf("definition images have different tags %q and %q: which version goes in the annotation?", v1, v2)
	}
	tag := version(stub)
	// The images come from the parameters (params.yaml, checked against the definition by
	// TestAdmissionPolicyParams), so a mirror is one edit, as the webhook's PODNS_*_IMAGE.
	initC["image"] = rawCEL("params.data.initImage")
	stub["image"] = rawCEL("params.data.stubImage")
	stubR["image"] = rawCEL("params.data.stubImage")
	names := []string{"podnsVersion", "podnsVolume", "podnsSysctl", "podnsInit", "podnsStub", "podnsStubRestricted"}
	return names, map[string]string{
		"podnsVersion":        strconv.Quote(tag),
		"podnsVolume":         celOf(def["volume"], "Object.spec.volumes"),
		"podnsSysctl":         celOf(def["sysctl"], "Object.spec.securityContext.sysctls"),
		"podnsInit":           celOf(initC, "Object.spec.initContainers"),
		"podnsStub":           celOf(stub, "Object.spec.initContainers"),
		"podnsStubRestricted": celOf(stubR, "Object.spec.initContainers"),
	}
}

// admissionPolicy is the part of a MutatingAdmissionPolicy the test reads (the module's k8s.io/api may
// predate admissionregistration.k8s.io/v1's MutatingAdmissionPolicy).
type admissionPolicy struct {
	Kind string `json:"kind"`
	Spec struct {
		MatchConditions []struct{ Name, Expression string } `json:"matchConditions"`
		Variables       []struct{ Name, Expression string } `json:"variables"`
		Mutations       []struct {
			JSONPatch struct{ Expression string } `json:"jsonPatch"`
		} `json:"mutations"`
	} `json:"spec"`
}

func readPolicy(t *testing.T) admissionPolicy {
	t.Helper()
	raw, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	var p admissionPolicy
	if err := yaml.Unmarshal(raw, &p); err != nil {
		t.Fatalf("%s: %v", policyFile, err)
	}
	return p
}

func TestAdmissionPolicyMatchesDefinition(t *testing.T) {
	names, want := wantVariables(t)
	binds := wantBinds(names, want)
	if *updatePolicy {
		rewritePolicy(t, want["podnsVersion"], binds)
	}
	p := readPolicy(t)
	var version string
	for _, v := range p.Spec.Variables {
		if v.Name == "podnsVersion" {
			version = strings.TrimSpace(v.Expression)
		}
	}
	if version != want["podnsVersion"] {
		t.Errorf("%s: variable podnsVersion is %s, want %s (the definition's image tag); run `go test -run TestAdmissionPolicy -update-policy`",
			policyFile, version, want["podnsVersion"])
	}
	if len(p.Spec.Mutations) != 1 {
		t.Fatalf("%s: want one mutation, got %d", policyFile, len(p.Spec.Mutations))
	}
	expr := p.Spec.Mutations[0].JSONPatch.Expression
	_, rest, ok1 := strings.Cut(expr, bindsBegin+"\n")
	got, _, ok2 := strings.Cut(rest, bindsEnd)
	if !ok1 || !ok2 {
		t.Fatalf("%s: the mutation has no %q ... %q section", policyFile, bindsBegin, bindsEnd)
	}
	if got != binds {
		t.Errorf("%s: the definition bound in the mutation is not injector-values.yaml's; run `go test -run TestAdmissionPolicy -update-policy`.\ngot:\n%s\nwant:\n%s",
			policyFile, got, binds)
	}
}

const (
	bindsBegin = "// BEGIN generated from injector-values.yaml"
	bindsEnd   = "// END generated"
)

// wantBinds returns the lines that open the mutation expression and bind each object of the
// definition to a name, `[<object>].map(<name>,` (the expression closes each with `)[0]` at its
// end). The API server's CEL has no cel.bind, and Object types exist only in mutation
// expressions, not in spec.variables.
func wantBinds(names []string, want map[string]string) string {
	var b strings.Builder
	for _, n := range names {
		if n == "podnsVersion" {
			continue
		}
		b.WriteString("[" + want[n] + "].map(" + n + ",\n")
	}
	return b.String()
}

// The conditions that leave a pod alone name the definition's sysctl and volume; they must be
// the definition's too.
func TestAdmissionPolicyConditionsNameTheDefinition(t *testing.T) {
	def := policyDefinition(t)
	sysctl := def["sysctl"].(map[string]any)
	vol := def["volume"].(map[string]any)
	cond := map[string]string{}
	for _, c := range readPolicy(t).Spec.MatchConditions {
		cond[c.Name] = c.Expression
	}
	for name, lit := range map[string][]string{
		"no-sysctl-conflict": {strconv.Quote(sysctl["name"].(string)), "<= " + sysctl["value"].(string) + ")"},
		"no-podns-names":     {strconv.Quote(vol["name"].(string))},
	} {
		for _, l := range lit {
			if !strings.Contains(cond[name], l) {
				t.Errorf("matchCondition %s does not mention %s: %q", name, l, cond[name])
			}
		}
	}
}

// rewritePolicy writes the generated parts into policy.yaml, keeping the rest of the file
// (comments, layout) as written: the expression of variable podnsVersion (one line after
// `  - name: podnsVersion`) and the lines between the markers in the mutation.
func rewritePolicy(t *testing.T, version, binds string) {
	t.Helper()
	raw, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(raw), "\n")
	var out []string
	for i := 0; i < len(lines); i++ {
		out = append(out, lines[i])
		switch strings.TrimSpace(lines[i]) {
		case "- name: podnsVersion":
			i++ // the expression line, and any continuation lines under it
			for i+1 < len(lines) && strings.HasPrefix(lines[i+1], "     ") {
				i++
			}
			out = append(out, "    expression: '"+version+"'") // a CEL string literal in YAML quotes
		case bindsBegin:
			indent := lines[i][:len(lines[i])-len(strings.TrimLeft(lines[i], " "))]
			for i+1 < len(lines) && strings.TrimSpace(lines[i+1]) != bindsEnd {
				i++
			}
			for _, l := range strings.Split(strings.TrimSuffix(binds, "\n"), "\n") {
				out = append(out, indent+l)
			}
		}
	}
	if err := os.WriteFile(policyFile, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The parameters hold the definition's images by default.
func TestAdmissionPolicyParams(t *testing.T) {
	def := policyDefinition(t)
	raw, err := os.ReadFile("admission-policy/params.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatalf("params.yaml: %v", err)
	}
	for key, c := range map[string]string{"initImage": "initContainer", "stubImage": "stubContainer"} {
		want := def[c].(map[string]any)["image"].(string)
		if cm.Data[key] != want {
			t.Errorf("params.yaml %s is %q, want the definition's %s image %q", key, cm.Data[key], c, want)
		}
	}
}

// The kustomization builds, and holds the policy, its binding, the parameters it names and the
// warnings' policy.
func TestAdmissionPolicyKustomization(t *testing.T) {
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), "admission-policy")
	if err != nil {
		t.Fatalf("kustomize build admission-policy: %v", err)
	}
	var kinds []string
	for _, r := range resMap.Resources() {
		kinds = append(kinds, r.GetKind()+"/"+r.GetNamespace()+"/"+r.GetName())
	}
	slices.Sort(kinds)
	want := []string{
		"ConfigMap/podns-system/podns-admission-policy",
		"MutatingAdmissionPolicy//podns",
		"MutatingAdmissionPolicyBinding//podns",
		"Namespace//podns-system",
		"ValidatingAdmissionPolicy//podns-warnings",
		"ValidatingAdmissionPolicyBinding//podns-warnings",
	}
	if !slices.Equal(kinds, want) {
		t.Errorf("admission-policy renders %v, want %v", kinds, want)
	}
}
