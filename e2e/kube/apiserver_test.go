package kube

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// The API-server test (issue #15 item 3): a real kube-apiserver and etcd, no kubelet, with podns's
// admission-time injection installed, so the API server itself applies the selectors, the
// matchConditions and the reinvocation, and the test reads back what it stored. Run by
// `make e2e-admission`; skips without the binaries. Each injector (the MutatingAdmissionPolicy of
// injector-manifests/admission-policy, the webhook of injector-manifests/webhook) gets its own
// control plane and the same cases; the stored pods of the two are then compared.

const (
	injectedAnnotation = "podns.io/injected"
	clusterDNS         = "10.96.0.10"
	clusterDomain      = "cluster.local"
	meshInit           = "mesh-init" // what the in-test "other injector" prepends
)

// Namespaces of every control plane, and their labels.
var admissionNamespaces = map[string]map[string]string{
	"plain": nil,
	"on":    {"podns.io/inject": "enabled"},
	// Pod Security "restricted" enforced by the API server's PodSecurity admission, which runs
	// after the mutating admission: the restricted mode's result must pass it.
	"restricted": {"podns.io/inject": "enabled", "podns.io/mode": "restricted",
		"pod-security.kubernetes.io/enforce": "restricted"},
	"mesh":            {"podns.io/inject": "enabled", "mesh": "enabled"},
	"restricted-mesh": {"podns.io/inject": "enabled", "podns.io/mode": "restricted", "mesh": "enabled"},
}

// definition is injector-manifests/components/podns-common/injector-values.yaml, the one
// definition of what is injected.
type definition struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Volume        corev1.Volume    `json:"volume"`
		Sysctl        corev1.Sysctl    `json:"sysctl"`
		InitContainer corev1.Container `json:"initContainer"`
		StubContainer corev1.Container `json:"stubContainer"`
	} `json:"spec"`
}

func readDefinition(t *testing.T) *definition {
	t.Helper()
	d, err := loadDefinition()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func loadDefinition() (*definition, error) {
	b, err := os.ReadFile("../../injector-manifests/components/podns-common/injector-values.yaml")
	if err != nil {
		return nil, err
	}
	var d definition
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		return nil, fmt.Errorf("injector-values.yaml: %w", err)
	}
	return &d, nil
}

// readDefinitionOnce is the definition for the case table's pod builders (TestAdmission has read
// it successfully before any of them runs).
var readDefinitionOnce = sync.OnceValue(func() *definition {
	d, err := loadDefinition()
	if err != nil {
		panic(err)
	}
	return d
})

// version is the definition's image tag, which the policy records in its annotation.
func (d *definition) version() string {
	img := d.Spec.StubContainer.Image
	return img[strings.LastIndexByte(img, ':')+1:]
}

// optionalConfig marks the container's podns-config reference optional, as both injectors do:
// they create no per-namespace ConfigMap (W-design, "Sidecar mode").
func optionalConfig(c corev1.Container) corev1.Container {
	c = *c.DeepCopy()
	for i := range c.EnvFrom {
		if c.EnvFrom[i].ConfigMapRef != nil {
			c.EnvFrom[i].ConfigMapRef.Optional = ptrTo(true)
		}
	}
	return c
}

func ptrTo[T any](v T) *T { return &v }

// sidecar returns pod as the sidecar mode must leave it.
func (d *definition) sidecar(pod *corev1.Pod, version string) *corev1.Pod {
	p := pod.DeepCopy()
	annotate(p, "sidecar "+version)
	stub := optionalConfig(d.Spec.StubContainer)
	stub.RestartPolicy = ptrTo(corev1.ContainerRestartPolicyAlways)
	p.Spec.InitContainers = append([]corev1.Container{optionalConfig(d.Spec.InitContainer), stub}, p.Spec.InitContainers...)
	d.addVolumeAndSysctl(p)
	return p
}

// restricted returns pod as the restricted mode must leave it in namespace ns.
func (d *definition) restricted(pod *corev1.Pod, ns, version string) *corev1.Pod {
	p := pod.DeepCopy()
	annotate(p, "restricted "+version)
	stub := optionalConfig(d.Spec.StubContainer)
	stub.RestartPolicy = ptrTo(corev1.ContainerRestartPolicyAlways)
	stub.Env = append(stub.Env,
		corev1.EnvVar{Name: "PODNS_UPSTREAMS", Value: clusterDNS},
		corev1.EnvVar{Name: "PODNS_READY_CHECK_NAME", Value: "kubernetes.default.svc." + clusterDomain + "."})
	p.Spec.InitContainers = append([]corev1.Container{stub}, p.Spec.InitContainers...)
	d.addVolumeAndSysctl(p)
	own := p.Spec.DNSConfig
	if own == nil {
		own = &corev1.PodDNSConfig{}
	}
	// The kubelet's search list for ns then the pod's own, without duplicates; ndots:5 and
	// initc's default options, a pod's option of the same name in its place, its others after.
	cfg := &corev1.PodDNSConfig{
		Nameservers: []string{"127.0.0.1"},
		Searches:    []string{ns + ".svc." + clusterDomain, "svc." + clusterDomain, clusterDomain},
		Options:     []corev1.PodDNSConfigOption{{Name: "ndots", Value: ptrTo("5")}, {Name: "timeout", Value: ptrTo("1")}, {Name: "attempts", Value: ptrTo("3")}},
	}
	for _, s := range own.Searches {
		if !slices.Contains(cfg.Searches, s) {
			cfg.Searches = append(cfg.Searches, s)
		}
	}
	for _, o := range own.Options {
		if i := slices.IndexFunc(cfg.Options, func(p corev1.PodDNSConfigOption) bool { return p.Name == o.Name }); i >= 0 {
			cfg.Options[i] = o
		} else {
			cfg.Options = append(cfg.Options, o)
		}
	}
	p.Spec.DNSPolicy = corev1.DNSNone
	p.Spec.DNSConfig = cfg
	return p
}

func (d *definition) addVolumeAndSysctl(p *corev1.Pod) {
	p.Spec.Volumes = append(p.Spec.Volumes, d.Spec.Volume)
	if p.Spec.SecurityContext == nil {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{}
	}
	if !slices.ContainsFunc(p.Spec.SecurityContext.Sysctls, func(s corev1.Sysctl) bool { return s.Name == d.Spec.Sysctl.Name }) {
		p.Spec.SecurityContext.Sysctls = append(p.Spec.SecurityContext.Sysctls, d.Spec.Sysctl)
	}
}

func annotate(p *corev1.Pod, v string) {
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	p.Annotations[injectedAnnotation] = v
}

// afterPodns inserts the mesh injector's init container right after podns's n containers.
func afterPodns(p *corev1.Pod, n int) *corev1.Pod {
	p = p.DeepCopy()
	ic := slices.Clone(p.Spec.InitContainers[:n])
	ic = append(ic, meshContainer())
	p.Spec.InitContainers = append(ic, p.Spec.InitContainers[n:]...)
	return p
}

func meshContainer() corev1.Container {
	return corev1.Container{Name: meshInit, Image: "mesh.example/init:1"}
}

// restrictedSecurity is a container security context Pod Security "restricted" accepts.
func restrictedSecurity() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptrTo(true),
		AllowPrivilegeEscalation: ptrTo(false),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// basicPod is what a user submits: one app container, no podns, restricted-compliant.
func basicPod(name string, initContainers ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1", SecurityContext: restrictedSecurity()}},
		},
	}
	for _, n := range initContainers {
		p.Spec.InitContainers = append(p.Spec.InitContainers,
			corev1.Container{Name: n, Image: "registry.example/" + n + ":1", SecurityContext: restrictedSecurity()})
	}
	return p
}

// admissionCase is one pod submitted to a namespace, and what must be stored.
type admissionCase struct {
	name string
	ns   string
	pod  func() *corev1.Pod
	// want returns the pod as it must be stored (before the API server's defaults, which the
	// test applies by a dry-run create of it in an unselected namespace). nil: unchanged.
	want func(d *definition, in *corev1.Pod, version string) *corev1.Pod
	// warning: a substring of the warning the injector must return (the webhook in its
	// AdmissionResponse, the policy through its companion ValidatingAdmissionPolicy).
	warning string
	// mesh: the in-test other injector must have prepended its container.
	mesh bool
}

func sidecarWant(d *definition, in *corev1.Pod, v string) *corev1.Pod { return d.sidecar(in, v) }

func withLabel(p *corev1.Pod, k, v string) *corev1.Pod { p.Labels[k] = v; return p }

var admissionCases = []admissionCase{
	{name: "unlabelled namespace untouched", ns: "plain", pod: func() *corev1.Pod { return basicPod("plain") }},
	{name: "labelled namespace injected", ns: "on", pod: func() *corev1.Pod { return basicPod("basic") }, want: sidecarWant},
	{name: "own init containers follow podns", ns: "on", pod: func() *corev1.Pod { return basicPod("with-init", "fetch", "migrate") }, want: sidecarWant},
	{name: "a controller's pod (generateName, no name yet) injected", ns: "on", pod: func() *corev1.Pod {
		p := basicPod("")
		p.GenerateName, p.Labels["app"] = "web-5d8f7-", "web"
		return p
	}, want: sidecarWant},
	{name: "opt-out label untouched", ns: "on",
		pod: func() *corev1.Pod { return withLabel(basicPod("opt-out"), "podns.io/inject", "false") }},
	{name: "hostNetwork untouched", ns: "on", pod: func() *corev1.Pod {
		p := basicPod("host-network")
		p.Spec.HostNetwork = true
		return p
	}},
	{name: "dnsPolicy None untouched", ns: "on", pod: func() *corev1.Pod {
		p := basicPod("dns-none")
		p.Spec.DNSPolicy = corev1.DNSNone
		p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53"}}
		return p
	}},
	{name: "dnsPolicy Default untouched", ns: "on", pod: func() *corev1.Pod {
		p := basicPod("dns-default")
		p.Spec.DNSPolicy = corev1.DNSDefault
		return p
	}},
	{name: "kube-system never selected", ns: "kube-system", pod: func() *corev1.Pod { return basicPod("system") }},
	{name: "another injector prepends: podns still first", ns: "mesh", mesh: true,
		pod:  func() *corev1.Pod { return basicPod("meshed", "fetch") },
		want: func(d *definition, in *corev1.Pod, v string) *corev1.Pod { return afterPodns(d.sidecar(in, v), 2) }},
	{name: "restricted namespace: restricted mode passes Pod Security restricted", ns: "restricted",
		pod:  func() *corev1.Pod { return basicPod("restricted", "fetch") },
		want: func(d *definition, in *corev1.Pod, v string) *corev1.Pod { return d.restricted(in, "restricted", v) }},
	{name: "restricted pod label in a sidecar namespace", ns: "on",
		pod:  func() *corev1.Pod { return withLabel(basicPod("restricted-pod"), "podns.io/mode", "restricted") },
		want: func(d *definition, in *corev1.Pod, v string) *corev1.Pod { return d.restricted(in, "on", v) }},
	{name: "restricted mode merges the pod's dnsConfig", ns: "restricted", pod: func() *corev1.Pod {
		p := basicPod("restricted-dnsconfig")
		p.Spec.DNSConfig = &corev1.PodDNSConfig{
			Searches: []string{"corp.example", "svc.cluster.local", "corp.example", "lab.example"},
			Options:  []corev1.PodDNSConfigOption{{Name: "edns0"}, {Name: "attempts", Value: ptrTo("5")}, {Name: "ndots", Value: ptrTo("2")}},
		}
		return p
	}, want: func(d *definition, in *corev1.Pod, v string) *corev1.Pod { return d.restricted(in, "restricted", v) }},
	{name: "restricted mode with the pod's own nameservers untouched", ns: "restricted", warning: "nameserver",
		pod: func() *corev1.Pod {
			p := basicPod("restricted-nameservers")
			p.Spec.DNSConfig = &corev1.PodDNSConfig{Nameservers: []string{"192.0.2.53"}}
			return p
		}},
	{name: "restricted mode over the search list limit falls back to sidecar", ns: "on", warning: "search",
		pod: func() *corev1.Pod {
			p := withLabel(basicPod("restricted-long-search"), "podns.io/mode", "restricted")
			p.Spec.DNSConfig = &corev1.PodDNSConfig{}
			for i := range 30 { // + the 3 of the namespace: 33 > 32
				p.Spec.DNSConfig.Searches = append(p.Spec.DNSConfig.Searches, fmt.Sprintf("s%d.example", i))
			}
			return p
		}, want: sidecarWant},
	{name: "restricted mode and another injector: podns-stub still first", ns: "restricted-mesh", mesh: true,
		pod: func() *corev1.Pod { return basicPod("restricted-meshed", "fetch") },
		want: func(d *definition, in *corev1.Pod, v string) *corev1.Pod {
			return afterPodns(d.restricted(in, "restricted-mesh", v), 1)
		}},
	{name: "foreign podns container untouched", ns: "on", warning: "podns-stub", pod: func() *corev1.Pod {
		p := basicPod("foreign")
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "podns-stub", Image: "someone.example/stub:0"})
		return p
	}},
	{name: "conflicting sysctl untouched", ns: "on", warning: "net.ipv4.ip_unprivileged_port_start", pod: func() *corev1.Pod {
		p := basicPod("sysctl-conflict")
		p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "1024"}}}
		return p
	}},
	{name: "the pod's own lower port sysctl is kept", ns: "on", pod: func() *corev1.Pod {
		p := basicPod("sysctl-lower")
		p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}}}
		return p
	}, want: sidecarWant},
	{name: "a container declaring port 53 untouched", ns: "on", warning: "port", pod: func() *corev1.Pod {
		p := basicPod("port-clash")
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}
		return p
	}},
	// A pod whose template the Kustomize component already gave podns: left alone, no warning.
	{name: "a pod the Kustomize component injected untouched", ns: "on", pod: func() *corev1.Pod {
		p := readDefinitionOnce().sidecar(basicPod("component"), "")
		delete(p.Annotations, injectedAnnotation)
		return p
	}},
	{name: "the same sysctl is kept once", ns: "on", pod: func() *corev1.Pod {
		p := basicPod("sysctl-same")
		p.Spec.SecurityContext = &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{
			{Name: "net.ipv4.ping_group_range", Value: "0 0"}, {Name: "net.ipv4.ip_unprivileged_port_start", Value: "53"}}}
		return p
	}, want: sidecarWant},
}

// variant is one way of installing the injection: its control plane, its version string in the
// annotation, whether it returns warnings.
type variant struct {
	cp      *controlPlane
	version string
	warns   bool
	stored  map[string]*corev1.Pod // by case name, filled by runCases
	// direct, when set, returns what the injector itself makes of the pod the API server would
	// send it (defaulted, in namespace ns): the stored pod must be exactly that.
	direct func(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod
}

func TestAdmission(t *testing.T) {
	d := readDefinition(t)
	var policy, webhook *variant
	t.Run("policy", func(t *testing.T) { policy = testPolicy(t, d) })
	t.Run("webhook", func(t *testing.T) { webhook = testWebhook(t, d) })
	// Both injectors stored the same pods (the annotation's version aside): the policy expresses
	// the webhook's result.
	t.Run("policy-equals-webhook", func(t *testing.T) {
		if policy == nil || webhook == nil || len(policy.stored) == 0 || len(webhook.stored) == 0 {
			t.Skip("needs both variants' results")
		}
		for _, c := range admissionCases {
			a, b := policy.stored[c.name], webhook.stored[c.name]
			if a == nil || b == nil {
				continue
			}
			if diff := cmp.Diff(comparable(a, true), comparable(b, true)); diff != "" {
				t.Errorf("%s: the policy's pod differs from the webhook's (-policy +webhook):\n%s", c.name, diff)
			}
		}
	})
}

// comparable is what a case compares of a pod: labels, annotations (the version in podns's
// optionally dropped) and the spec.
func comparable(p *corev1.Pod, dropVersion bool) any {
	ann := map[string]string{}
	for k, v := range p.Annotations {
		if k == injectedAnnotation && dropVersion {
			v, _, _ = strings.Cut(v, " ")
		}
		ann[k] = v
	}
	return struct {
		Labels, Annotations map[string]string
		Spec                corev1.PodSpec
	}{p.Labels, ann, p.Spec}
}

// setupNamespaces creates the test namespaces and labels kube-system as opted in (it must still
// never be selected), and registers the other injector.
func setupNamespaces(t *testing.T, cp *controlPlane) *meshWebhook {
	t.Helper()
	ctx := context.Background()
	for name, labels := range admissionNamespaces {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := cp.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ks, err := cp.client.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ks.Labels["podns.io/inject"] = "enabled"
	if _, err := cp.client.CoreV1().Namespaces().Update(ctx, ks, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return startMesh(t, cp)
}

// waitInjected polls a dry-run pod create in namespace "on" until it comes back with podns's
// annotation: the API server's admission plugins learn new policies and webhook configurations
// from informers, with no signal to wait for.
func waitInjected(t *testing.T, cp *controlPlane, what string) {
	t.Helper()
	waitDryRun(t, cp, "on", what, func(p *corev1.Pod) bool { return p.Annotations[injectedAnnotation] != "" })
}

func waitDryRun(t *testing.T, cp *controlPlane, ns, what string, ok func(*corev1.Pod) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		p, err := cp.client.CoreV1().Pods(ns).Create(context.Background(), basicPod("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && ok(p) {
			return
		}
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not in effect after 30 s (last error: %v)", what, last)
}

// waitWarning polls a dry-run create of a pod podns must leave alone with a warning (a name
// clash) until the warning comes.
func waitWarning(t *testing.T, cp *controlPlane, what string) {
	t.Helper()
	warnings := &warningRecorder{}
	cfg := rest.CopyConfig(cp.config)
	cfg.WarningHandler = warnings
	client := kubernetes.NewForConfigOrDie(cfg)
	p := basicPod("probe")
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "podns-stub", Image: "someone.example/stub:0"})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := client.CoreV1().Pods("on").Create(context.Background(), p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
		if len(warnings.all()) > 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not in effect after 30 s", what)
}

// runCases submits every case's pod and compares what the API server stored with the case's
// expectation, defaulted by a dry-run create in namespace "plain".
func (v *variant) runCases(t *testing.T, d *definition, mesh *meshWebhook) {
	ctx := context.Background()
	v.stored = map[string]*corev1.Pod{}
	for _, c := range admissionCases {
		t.Run(c.name, func(t *testing.T) {
			in := c.pod()
			in.Namespace = c.ns
			warnings := &warningRecorder{}
			cfg := rest.CopyConfig(v.cp.config)
			cfg.WarningHandler = warnings
			client := kubernetes.NewForConfigOrDie(cfg)
			before := mesh.calls(in.Name)
			start := time.Now()
			got, err := client.CoreV1().Pods(c.ns).Create(ctx, in, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			elapsed := time.Since(start)
			v.stored[c.name] = got

			want := in
			if c.want != nil {
				want = c.want(d, in, v.version)
			}
			want = want.DeepCopy()
			want.Namespace = "plain"
			if want.Name != "" {
				want.Name += "-want"
			}
			defaulted, err := v.cp.client.CoreV1().Pods("plain").Create(ctx, want, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				t.Fatalf("the expected pod does not pass validation: %v", err)
			}
			if diff := cmp.Diff(comparable(defaulted, false), comparable(got, false)); diff != "" {
				t.Errorf("stored pod differs from the expected one (-want +got):\n%s", diff)
			}
			if v.direct != nil && c.want != nil && !c.mesh {
				// What the API server sends: the defaulted pod, before podns.
				sent := in.DeepCopy()
				sent.Namespace = "plain"
				if sent.Name != "" {
					sent.Name += "-sent"
				}
				sent, err := v.cp.client.CoreV1().Pods("plain").Create(ctx, sent, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				if err != nil {
					t.Fatal(err)
				}
				sent.Name, sent.Namespace = in.Name, c.ns
				// The API server defaults what a webhook returns; so does a dry run in "plain".
				handled := v.direct(t, c.ns, sent)
				handled.Namespace, handled.ResourceVersion, handled.UID = "plain", "", ""
				handled.Name, handled.GenerateName = "handled", ""
				handled, err = v.cp.client.CoreV1().Pods("plain").Create(ctx, handled, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				if err != nil {
					t.Fatalf("the handler's pod does not pass validation: %v", err)
				}
				if diff := cmp.Diff(comparable(handled, false), comparable(got, false)); diff != "" {
					t.Errorf("stored pod differs from the handler's own response applied to the pod (-handler +stored):\n%s", diff)
				}
			}
			if c.mesh && mesh.calls(in.Name) == before {
				t.Errorf("the other injector was not called: the case proves nothing")
			}
			ws := warnings.all()
			for _, w := range ws {
				t.Logf("warning: %s", w)
			}
			switch {
			case c.warning != "" && v.warns && !slices.ContainsFunc(ws, func(w string) bool { return strings.Contains(w, c.warning) }):
				t.Errorf("want a warning mentioning %q, got %q", c.warning, ws)
			case c.warning == "" && len(ws) > 0:
				t.Errorf("unexpected warnings %q", ws)
			}
			t.Logf("admitted in %s", elapsed.Round(time.Millisecond))
		})
	}

	// A second pass changes nothing: the stored injected pods, submitted again under new names,
	// are stored as they are.
	for _, name := range []string{"labelled namespace injected", "restricted namespace: restricted mode passes Pod Security restricted"} {
		t.Run("resubmitted unchanged/"+name, func(t *testing.T) {
			first := v.stored[name]
			if first == nil || first.Annotations[injectedAnnotation] == "" {
				t.Skip("the first pass did not inject")
			}
			again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
				Name: first.Name + "-again", Namespace: first.Namespace, Labels: first.Labels, Annotations: first.Annotations,
			}, Spec: *first.Spec.DeepCopy()}
			got, err := v.cp.client.CoreV1().Pods(first.Namespace).Create(ctx, again, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if diff := cmp.Diff(comparable(first, false), comparable(got, false)); diff != "" {
				t.Errorf("a second pass changed the pod (-first +second):\n%s", diff)
			}
		})
	}
}

type warningRecorder struct {
	mu sync.Mutex
	ws []string
}

func (w *warningRecorder) HandleWarningHeader(code int, agent string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ws = append(w.ws, text)
}

func (w *warningRecorder) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.ws)
}

// meshWebhook stands for another injector (a service mesh, a secrets injector): a webhook that
// runs after podns (its configuration's name sorts after podns's; the API server calls policies
// before webhooks) and prepends its own init container, so podns's must be moved back to the
// front by a reinvocation. It never reinvokes itself.
type meshWebhook struct {
	mu    sync.Mutex
	count map[string]int // calls by pod name
}

func (m *meshWebhook) calls(pod string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.count[pod]
}

func startMesh(t *testing.T, cp *controlPlane) *meshWebhook {
	t.Helper()
	m := &meshWebhook{count: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(m.serve), TLSConfig: cp.ca.tlsConfig(t), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(l, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	url := fmt.Sprintf("https://%s/mesh", l.Addr())
	none := admissionregistrationv1.SideEffectClassNone
	never := admissionregistrationv1.NeverReinvocationPolicy
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-mesh"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "mesh.example.com",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: cp.ca.pem},
			Rules:                   podCreateRules(),
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"mesh": "enabled"}},
			SideEffects:             &none,
			ReinvocationPolicy:      &never,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptrTo[int32](5),
		}},
	}
	if _, err := cp.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDryRun(t, cp, "mesh", "the other injector's webhook", func(p *corev1.Pod) bool {
		return slices.ContainsFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == meshInit })
	})
	return m
}

func podCreateRules() []admissionregistrationv1.RuleWithOperations {
	return []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
		Rule: admissionregistrationv1.Rule{
			APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
		},
	}}
}

func (m *meshWebhook) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
		return
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	m.count[pod.Name]++
	m.mu.Unlock()
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	if !slices.ContainsFunc(pod.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == meshInit }) {
		var patch []map[string]any
		if len(pod.Spec.InitContainers) == 0 {
			patch = []map[string]any{{"op": "add", "path": "/spec/initContainers", "value": []corev1.Container{meshContainer()}}}
		} else {
			patch = []map[string]any{{"op": "add", "path": "/spec/initContainers/0", "value": meshContainer()}}
		}
		resp.Patch, _ = json.Marshal(patch)
		pt := admissionv1.PatchTypeJSONPatch
		resp.PatchType = &pt
	}
	review.Response = resp
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
}

// testPolicy runs the cases against injector-manifests/admission-policy.
func testPolicy(t *testing.T, d *definition) *variant {
	cp := startControlPlane(t)
	resources, err := cp.client.Discovery().ServerResourcesForGroupVersion("admissionregistration.k8s.io/v1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(resources.APIResources, func(r metav1.APIResource) bool { return r.Name == "mutatingadmissionpolicies" }) {
		t.Fatalf("this kube-apiserver (%s) serves no admissionregistration.k8s.io/v1 MutatingAdmissionPolicy: Kubernetes 1.36 or later is needed (KUBE_VERSION)",
			os.Getenv("PODNS_E2E_KUBE_BIN"))
	}
	// Warnings from the companion ValidatingAdmissionPolicy (warnings.yaml).
	v := &variant{cp: cp, version: d.version(), warns: true}
	mesh := setupNamespaces(t, cp)
	cp.kubectlRun(t, nil, "apply", "-k", "../../injector-manifests/admission-policy")
	waitInjected(t, cp, "the MutatingAdmissionPolicy")
	waitWarning(t, cp, "the warnings' ValidatingAdmissionPolicy")
	v.runCases(t, d, mesh)

	// The parameters are part of the policy: without them, a pod of an opted-in namespace is
	// rejected (parameterNotFoundAction Deny), as the webhook's failurePolicy Fail rejects it.
	t.Run("parameters missing rejects", func(t *testing.T) {
		ctx := context.Background()
		cms := cp.client.CoreV1().ConfigMaps("podns-system")
		saved, err := cms.Get(ctx, "podns-admission-policy", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := cms.Delete(ctx, saved.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		var last error
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			_, last = cp.client.CoreV1().Pods("on").Create(ctx, basicPod("no-params"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if last != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if last == nil {
			t.Fatal("a pod was still admitted 30 s after the policy's parameters were deleted")
		}
		t.Logf("rejected as it should be: %v", last)
		saved.ResourceVersion = ""
		if _, err := cms.Create(ctx, saved, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitInjected(t, cp, "the restored parameters")
		if _, err := cp.client.CoreV1().Pods("plain").Create(ctx, basicPod("no-params"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Errorf("an unselected namespace's pod was rejected: %v", err)
		}
	})

	// The images are parameters (the webhook's PODNS_INIT_IMAGE and PODNS_STUB_IMAGE).
	t.Run("images from the parameters", func(t *testing.T) {
		ctx := context.Background()
		cms := cp.client.CoreV1().ConfigMaps("podns-system")
		cm, err := cms.Get(ctx, "podns-admission-policy", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		saved := maps.Clone(cm.Data)
		cm.Data["initImage"] = "mirror.example/podns/initc:v0"
		cm.Data["stubImage"] = "mirror.example/podns/stub:v0"
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		images := func(p *corev1.Pod) []string {
			var out []string
			for _, c := range p.Spec.InitContainers {
				out = append(out, c.Image)
			}
			return out
		}
		want := []string{"mirror.example/podns/initc:v0", "mirror.example/podns/stub:v0"}
		waitDryRun(t, cp, "on", "the mirrored images", func(p *corev1.Pod) bool { return slices.Equal(images(p), want) })
		cm, err = cms.Get(ctx, "podns-admission-policy", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data = saved
		if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	return v
}

// testWebhook runs the cases against injector-manifests/webhook, with bin/webhook out of cluster:
// the MutatingWebhookConfiguration's clientConfig points at https://localhost:<port> instead of
// the Service, and the webhook runs as its ServiceAccount (a client certificate with the
// ServiceAccount's user name), so the manifests' RBAC is what lets it keep the caBundle current.
func testWebhook(t *testing.T, d *definition) *variant {
	bin := os.Getenv("PODNS_E2E_WEBHOOK_BIN") // another build of the webhook; default bin/webhook
	if bin == "" {
		bin = "../../bin/webhook"
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("needs bin/webhook (make build): %v", err)
	}
	if _, err := os.Stat("../../injector-manifests/webhook/kustomization.yaml"); err != nil {
		t.Skipf("needs injector-manifests/webhook: %v", err)
	}
	cp := startControlPlane(t)
	v := &variant{cp: cp, version: os.Getenv("PODNS_E2E_WEBHOOK_VERSION"), warns: true}
	mesh := setupNamespaces(t, cp)

	port, httpPort := freePort(t), freePort(t)
	cp.kubectlRun(t, webhookManifests(t, cp, port), "apply", "-f", "-")
	sa := cp.writeKubeconfig(t, "webhook", "system:serviceaccount:podns-system:podns-webhook",
		[]string{"system:serviceaccounts", "system:serviceaccounts:podns-system"})
	wh := start(t, cp.dir, "webhook", []string{
		"KUBECONFIG=" + sa,
		fmt.Sprintf("PODNS_WEBHOOK_LISTEN=127.0.0.1:%d", port),
		fmt.Sprintf("PODNS_HTTP_LISTEN=127.0.0.1:%d", httpPort),
		// The certificate names <service>, <service>.<namespace>, ...: "localhost" makes it valid
		// for the URL the API server calls.
		"PODNS_WEBHOOK_SERVICE=localhost",
		"PODNS_WEBHOOK_NAMESPACE=podns-system",
		"PODNS_CLUSTER_DNS=" + clusterDNS,
		"PODNS_CLUSTER_DOMAIN=" + clusterDomain,
	}, bin)

	// Ready means a serving certificate loaded and the caBundle in the configuration current.
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", httpPort)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(readyz)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-wh.done:
			t.Fatalf("bin/webhook exited: %v", wh.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("bin/webhook not ready after 60 s (%s)", readyz)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mwc, err := cp.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "podns-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if len(w.ClientConfig.CABundle) == 0 {
			t.Fatalf("webhook %s has no caBundle although /readyz says ready", w.Name)
		}
	}
	waitInjected(t, cp, "the webhook")
	if v.version == "" {
		p, err := cp.client.CoreV1().Pods("on").Create(context.Background(), basicPod("probe"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		_, v.version, _ = strings.Cut(p.Annotations[injectedAnnotation], " ")
		t.Logf("PODNS_E2E_WEBHOOK_VERSION unset: taking the webhook's version %q from its annotation", v.version)
	}
	v.direct = func(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
		return callWebhook(t, mwc, port, ns, pod)
	}
	v.runCases(t, d, mesh)

	// With no replica answering: failurePolicy Fail (the default) rejects the pods of opted-in
	// namespaces; Ignore admits them unchanged. Other namespaces are never affected.
	t.Run("webhook down", func(t *testing.T) {
		ctx := context.Background()
		wh.stop()
		dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
		_, err := cp.client.CoreV1().Pods("on").Create(ctx, basicPod("down"), dry)
		if err == nil {
			t.Errorf("failurePolicy Fail: a pod was admitted with the webhook down")
		} else {
			t.Logf("failurePolicy Fail rejects: %v", err)
		}
		if _, err := cp.client.CoreV1().Pods("plain").Create(ctx, basicPod("down"), dry); err != nil {
			t.Errorf("a pod of an unselected namespace was rejected: %v", err)
		}
		mwcs := cp.client.AdmissionregistrationV1().MutatingWebhookConfigurations()
		mwc, err := mwcs.Get(ctx, "podns-webhook", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ignore := admissionregistrationv1.Ignore
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].FailurePolicy = &ignore
		}
		if _, err := mwcs.Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		in := basicPod("down")
		var got *corev1.Pod
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if got, err = cp.client.CoreV1().Pods("on").Create(ctx, in, dry); err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("failurePolicy Ignore: still rejected after 30 s: %v", err)
		}
		if got.Annotations[injectedAnnotation] != "" || len(got.Spec.InitContainers) != 0 {
			t.Errorf("failurePolicy Ignore: want the pod unchanged, got annotation %q and init containers %v",
				got.Annotations[injectedAnnotation], got.Spec.InitContainers)
		}
	})
	return v
}

// webhookManifests renders injector-manifests/webhook with the kubectl built with the API server
// (its kustomize) and returns it as a v1 List, the MutatingWebhookConfiguration's clientConfig
// changed from the Service to https://localhost:<port><path>.
func webhookManifests(t *testing.T, cp *controlPlane, port int) []byte {
	t.Helper()
	out := cp.kubectlRun(t, nil, "kustomize", "../../injector-manifests/webhook")
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(out), 4096)
	var items []map[string]any
	found := false
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("kubectl kustomize injector-manifests/webhook: %v", err)
		}
		if obj == nil {
			continue
		}
		if obj["kind"] == "MutatingWebhookConfiguration" {
			found = true
			for _, w := range obj["webhooks"].([]any) {
				cc := w.(map[string]any)["clientConfig"].(map[string]any)
				svc := cc["service"].(map[string]any)
				path, _ := svc["path"].(string)
				delete(cc, "service")
				cc["url"] = fmt.Sprintf("https://localhost:%d%s", port, path)
			}
		}
		items = append(items, obj)
	}
	if !found {
		t.Fatal("injector-manifests/webhook renders no MutatingWebhookConfiguration")
	}
	b, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// callWebhook sends the pod to the webhook as the API server would (the sidecar or the restricted
// endpoint, by the namespace's podns.io/mode label), trusting the caBundle the webhook wrote, and
// returns the pod with the response's JSON patch applied.
func callWebhook(t *testing.T, mwc *admissionregistrationv1.MutatingWebhookConfiguration, port int, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	path := "/mutate-pod"
	if admissionNamespaces[ns]["podns.io/mode"] == "restricted" {
		path = "/mutate-pod-restricted"
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(mwc.Webhooks[0].ClientConfig.CABundle) {
		t.Fatal("the caBundle holds no certificate")
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       "direct-" + types.UID(pod.Name),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Name:      pod.Name,
			Namespace: ns,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
			DryRun:    ptrTo(false),
		},
	}
	body, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Post(fmt.Sprintf("https://localhost:%d%s", port, path), "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil {
		t.Fatalf("webhook %s answered %s: %v", path, resp.Status, err)
	}
	if !out.Response.Allowed {
		t.Fatalf("webhook %s refused the pod: %v", path, out.Response.Result)
	}
	if len(out.Response.Patch) == 0 {
		return pod
	}
	patch, err := jsonpatch.DecodePatch(out.Response.Patch)
	if err != nil {
		t.Fatalf("webhook %s patch: %v", path, err)
	}
	patched, err := patch.Apply(raw)
	if err != nil {
		t.Fatalf("webhook %s patch does not apply: %v\n%s", path, err, out.Response.Patch)
	}
	var p corev1.Pod
	if err := json.Unmarshal(patched, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}
