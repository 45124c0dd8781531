package manifests_test

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// What the components promise (the contract in shared/docs/contract.md and the README).
const (
	initName     = "podns-init"
	stubName     = "podns-stub"
	stateVolume  = "podns-state"
	stateDir     = "/run/podns"
	httpPortName = "podns-http"
	httpPort     = 9253
	portSysctl   = "net.ipv4.ip_unprivileged_port_start"
	initImage    = "ghcr.io/podns/initc:v0.1.0"
	stubImage    = "ghcr.io/podns/stub:v0.1.0"
)

// mode says how the stub was added.
type mode int

const (
	native mode = iota // components/podns: podns-init, then the stub as a native sidecar, first
	legacy             // components/podns-legacy: podns-init last, the stub the last container
)

// injected lists every workload the components must change: where it is, the init containers
// the workload had itself (in order: they must follow podns's), and the images expected.
type injected struct {
	dir, kind, name string
	ownInit         []string
	mode            mode
	initImage       string
	stubImage       string
}

var injectedWorkloads = []injected{
	{dir: "examples/basic", kind: "Deployment", name: "web"},
	{dir: "examples/tuned", kind: "Deployment", name: "api",
		initImage: "mirror.example/podns/initc:v0.1.0", stubImage: "mirror.example/podns/stub:v0.1.0"},
	{dir: "examples/batch", kind: "Job", name: "migrate"},
	{dir: "examples/batch", kind: "CronJob", name: "report", ownInit: []string{"fetch"}},
	{dir: "examples/with-init", kind: "Deployment", name: "worker", ownInit: []string{"fetch-model"}},
	{dir: "examples/with-init", kind: "StatefulSet", name: "db-client",
		ownInit: []string{"wait-for-db", "migrate", "log-forwarder"}},
	{dir: "examples/opt-out", kind: "Deployment", name: "frontend"},
	{dir: "examples/legacy", kind: "Deployment", name: "worker", ownInit: []string{"fetch-model"}, mode: legacy},
	{dir: "testdata/every-kind", kind: "Deployment", name: "deploy"},
	{dir: "testdata/every-kind", kind: "StatefulSet", name: "sts", ownInit: []string{"first"}},
	{dir: "testdata/every-kind", kind: "DaemonSet", name: "ds"},
	{dir: "testdata/every-kind", kind: "ReplicaSet", name: "rs"},
	{dir: "testdata/every-kind", kind: "Job", name: "job", ownInit: []string{"a", "b"}},
	{dir: "testdata/every-kind", kind: "CronJob", name: "cron"},
	{dir: "testdata/name-prefix", kind: "Deployment", name: "team-web"},
	{dir: "testdata/every-kind-legacy", kind: "Deployment", name: "deploy", mode: legacy},
	{dir: "testdata/every-kind-legacy", kind: "StatefulSet", name: "sts", ownInit: []string{"first"}, mode: legacy},
	{dir: "testdata/every-kind-legacy", kind: "DaemonSet", name: "ds", mode: legacy},
	{dir: "testdata/every-kind-legacy", kind: "ReplicaSet", name: "rs", mode: legacy},
}

// untouched lists the workloads the components must leave exactly as written: opted out with
// podns.io/inject: "false", or Jobs and CronJobs under the legacy component.
var untouched = []struct{ dir, kind, name string }{
	{"examples/opt-out", "DaemonSet", "node-agent"},
	{"examples/legacy", "Job", "migrate"},
	{"testdata/every-kind", "CronJob", "cron-opted-out"},
	{"testdata/every-kind-legacy", "Job", "job"},
	{"testdata/every-kind-legacy", "CronJob", "cron"},
	{"testdata/every-kind-legacy", "CronJob", "cron-opted-out"},
}

var dirs = []string{
	"examples/basic", "examples/tuned", "examples/batch", "examples/with-init",
	"examples/opt-out", "examples/legacy", "testdata/every-kind", "testdata/every-kind-legacy",
	"testdata/name-prefix",
}

// TestEveryWorkloadIsListed keeps the two tables above complete: a workload added to an example
// or fixture without saying whether podns must change it would escape every other test.
func TestEveryWorkloadIsListed(t *testing.T) {
	for _, dir := range dirs {
		for _, o := range render(t, dir).workloads() {
			n := 0
			for _, w := range injectedWorkloads {
				if w.dir == dir && w.kind == o.Kind && w.name == o.Name {
					n++
				}
			}
			for _, u := range untouched {
				if u.dir == dir && u.kind == o.Kind && u.name == o.Name {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: %s/%s is listed %d times in injectedWorkloads and untouched, want once", dir, o.Kind, o.Name, n)
			}
		}
	}
}

// TestRenderedOutputHasNoHelperResource checks that the InjectorValues resource the replacements
// read from is deleted from the output: it is not a Kubernetes kind and an apply would fail on it.
// build() already fails on any kind it does not know; this names the reason.
func TestRenderedOutputHasNoHelperResource(t *testing.T) {
	for _, dir := range dirs {
		for _, o := range render(t, dir) {
			if o.Kind == "InjectorValues" || o.Name == "podns-injector-values" {
				t.Errorf("%s: helper resource %s/%s in the output", dir, o.Kind, o.Name)
			}
		}
	}
}

func TestInjected(t *testing.T) {
	for _, w := range injectedWorkloads {
		t.Run(w.dir+"/"+w.kind+"/"+w.name, func(t *testing.T) {
			r := render(t, w.dir)
			tmpl := podTemplate(r.get(t, w.kind, w.name).Obj)
			cm := r.configMap(t).Name
			spec := tmpl.Spec

			// Order: podns first, then the workload's own init containers as they were. Legacy:
			// podns-init last, since no stub serves until the regular containers start.
			wantInit := append([]string{initName, stubName}, w.ownInit...)
			if w.mode == legacy {
				wantInit = append(slices.Clone(w.ownInit), initName)
			}
			if got := names(spec.InitContainers); !slices.Equal(got, wantInit) {
				t.Errorf("init containers %v, want %v", got, wantInit)
			}

			var stub corev1.Container
			switch w.mode {
			case native:
				stub = container(t, spec.InitContainers, stubName)
				if stub.RestartPolicy == nil || *stub.RestartPolicy != corev1.ContainerRestartPolicyAlways {
					t.Errorf("stub restartPolicy %v, want Always (native sidecar)", stub.RestartPolicy)
				}
				if slices.Contains(names(spec.Containers), stubName) {
					t.Errorf("stub also among the regular containers %v", names(spec.Containers))
				}
			case legacy:
				stub = container(t, spec.Containers, stubName)
				if last := spec.Containers[len(spec.Containers)-1].Name; last != stubName {
					t.Errorf("last container %s, want %s after the app's (kubectl's default container is the first)", last, stubName)
				}
				if stub.RestartPolicy != nil {
					t.Errorf("legacy stub has restartPolicy %v; a regular container may not", *stub.RestartPolicy)
				}
			}

			wantInitImage, wantStubImage := initImage, stubImage
			if w.initImage != "" {
				wantInitImage, wantStubImage = w.initImage, w.stubImage
			}
			checkVolume(t, spec)
			checkSysctl(t, spec)
			checkInit(t, container(t, spec.InitContainers, initName), cm, wantInitImage)
			checkStub(t, stub, cm, wantStubImage)
		})
	}
}

func checkVolume(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	var vols []corev1.Volume
	for _, v := range spec.Volumes {
		if v.Name == stateVolume {
			vols = append(vols, v)
		}
	}
	if len(vols) != 1 {
		t.Fatalf("want one volume %s, got %d", stateVolume, len(vols))
	}
	sizeLimit := resource.MustParse("1Mi")
	want := corev1.Volume{Name: stateVolume, VolumeSource: corev1.VolumeSource{
		EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &sizeLimit}}}
	if d := cmp.Diff(want, vols[0]); d != "" {
		t.Errorf("state volume (-want +got):\n%s", d)
	}
}

func checkSysctl(t *testing.T, spec corev1.PodSpec) {
	t.Helper()
	if spec.SecurityContext == nil {
		t.Fatal("no pod securityContext, want the sysctl " + portSysctl)
	}
	var got []corev1.Sysctl
	for _, s := range spec.SecurityContext.Sysctls {
		if s.Name == portSysctl {
			got = append(got, s)
		}
	}
	if want := []corev1.Sysctl{{Name: portSysctl, Value: "53"}}; !slices.Equal(got, want) {
		t.Errorf("sysctl %s: got %v, want %v", portSysctl, got, want)
	}
}

func envFrom(cm string) []corev1.EnvFromSource {
	return []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}}}}
}

func ptr[T any](v T) *T { return &v }

func checkInit(t *testing.T, c corev1.Container, cm, image string) {
	t.Helper()
	want := corev1.Container{
		Name:    initName,
		Image:   image,
		EnvFrom: envFrom(cm),
		Env: []corev1.EnvVar{
			{Name: "PODNS_POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
			{Name: "PODNS_HOST_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.hostIP"}}},
		},
		VolumeMounts: []corev1.VolumeMount{{Name: stateVolume, MountPath: stateDir}},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("32Mi")},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsGroup:               ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			ReadOnlyRootFilesystem:   ptr(false),
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("%s (-want +got):\n%s", initName, d)
	}
}

func httpProbe(path string, period, failures int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString(httpPortName)}},
		PeriodSeconds: period, TimeoutSeconds: 1, FailureThreshold: failures,
	}
}

func checkStub(t *testing.T, c corev1.Container, cm, image string) {
	t.Helper()
	want := corev1.Container{
		Name:          stubName,
		Image:         image,
		EnvFrom:       envFrom(cm),
		Ports:         []corev1.ContainerPort{{Name: httpPortName, ContainerPort: httpPort, Protocol: corev1.ProtocolTCP}},
		VolumeMounts:  []corev1.VolumeMount{{Name: stateVolume, MountPath: stateDir, ReadOnly: true}},
		RestartPolicy: c.RestartPolicy, // checked by the caller, per mode
		// The next container starts only after this hook returned, i.e. once the stub is ready
		// (the kubelet runs postStart to its end first); no startupProbe, which adds ~1 s.
		Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{
			Exec: &corev1.ExecAction{Command: []string{"/stub", "-wait-ready"}}}},
		ReadinessProbe: httpProbe("/readyz", 10, 3),
		LivenessProbe:  httpProbe("/healthz", 10, 3),
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr(true),
			RunAsUser:                ptr(int64(65532)),
			RunAsGroup:               ptr(int64(65532)),
			AllowPrivilegeEscalation: ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("%s (-want +got):\n%s", stubName, d)
	}
}

// stripPodns removes what the components add, so that what remains can be compared with the
// workload as written. The sysctl goes from both sides: podns sets it even where the workload
// already had it (testdata ReplicaSet "rs"); checkSysctl covers its value.
func stripPodns(tmpl *corev1.PodTemplateSpec) {
	drop := func(cs []corev1.Container) []corev1.Container {
		cs = slices.DeleteFunc(cs, func(c corev1.Container) bool { return c.Name == initName || c.Name == stubName })
		if len(cs) == 0 {
			return nil
		}
		return cs
	}
	s := &tmpl.Spec
	s.InitContainers = drop(s.InitContainers)
	s.Containers = drop(s.Containers)
	s.Volumes = slices.DeleteFunc(s.Volumes, func(v corev1.Volume) bool { return v.Name == stateVolume })
	if len(s.Volumes) == 0 {
		s.Volumes = nil
	}
	if sc := s.SecurityContext; sc != nil {
		sc.Sysctls = slices.DeleteFunc(sc.Sysctls, func(x corev1.Sysctl) bool { return x.Name == portSysctl })
		if len(sc.Sysctls) == 0 {
			sc.Sysctls = nil
		}
		if cmp.Equal(*sc, corev1.PodSecurityContext{}) {
			s.SecurityContext = nil
		}
	}
}

// TestEverythingElseUnchanged renders each example and fixture with and without its component and
// compares every resource: once podns's own containers, volume and sysctl are taken out, each
// injected workload must equal the workload as written (its containers, init containers, volumes,
// sysctls, their order, and every other field), and everything else must be identical.
func TestEverythingElseUnchanged(t *testing.T) {
	isInjected := func(dir, kind, name string) bool {
		return slices.ContainsFunc(injectedWorkloads, func(w injected) bool {
			return w.dir == dir && w.kind == kind && w.name == name
		})
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			with, without := render(t, dir), renderWithout(t, dir)
			with.configMap(t) // the one resource podns adds
			if len(with) != len(without)+1 {
				t.Errorf("%d resources with podns, %d without: want one more (podns-config)", len(with), len(without))
			}
			for _, orig := range without {
				got := with.get(t, orig.Kind, orig.Name)
				if tmpl := podTemplate(got.Obj); tmpl != nil && isInjected(dir, orig.Kind, orig.Name) {
					stripPodns(tmpl)
					stripPodns(podTemplate(orig.Obj))
				}
				if d := cmp.Diff(orig.Obj, got.Obj); d != "" {
					t.Errorf("%s/%s changed beyond what podns adds (-as written +rendered):\n%s", orig.Kind, orig.Name, d)
				}
			}
		})
	}
}
