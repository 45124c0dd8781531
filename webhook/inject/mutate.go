package inject

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Names shared with the Kustomize component and the webhook's MutatingWebhookConfiguration
// (injector-manifests/webhook): the selectors and matchConditions read the same labels and
// annotation.
const (
	// LabelInject on a pod, value "false", opts the pod out (the objectSelector skips it; the
	// handler checks again).
	LabelInject = "podns.io/inject"
	// LabelMode on a pod, value "restricted", asks the sidecar webhook for restricted mode.
	LabelMode = "podns.io/mode"
	// AnnotationInjected records what was injected: "<mode> <version>", e.g. "sidecar v0.1.0".
	// The matchConditions skip a pod that has it and whose podns containers are still first.
	AnnotationInjected = "podns.io/injected"

	initName      = "podns-init"
	stubName      = "podns-stub"
	stateVolume   = "podns-state"
	portSysctl    = "net.ipv4.ip_unprivileged_port_start"
	configMapName = "podns-config"
	stubHTTPName  = "podns-http"
	stubHTTPPort  = 9253
	dnsPort       = 53
)

// Pod validation limits on dnsConfig (k8s.io/kubernetes pkg/apis/core/validation:
// MaxDNSNameservers, MaxDNSSearchPaths, MaxDNSSearchListChars; the search limits are those of
// Kubernetes >= 1.28). A restricted-mode dnsConfig over them would make the API server reject the
// pod, so the pod gets sidecar mode instead.
const (
	maxNameservers     = 3
	maxSearches        = 32
	maxSearchListChars = 2048
)

// Outcome is what the mutation did to a pod; it is the "result" label of
// podns_webhook_admissions_total.
type Outcome string

const (
	// OutcomeInjected: podns was added.
	OutcomeInjected Outcome = "injected"
	// OutcomeReordered: the pod was already injected and another webhook had put init
	// containers ahead of podns's; they were moved back to the front, nothing else changed.
	OutcomeReordered Outcome = "reordered"
	// OutcomeUnchanged: the pod already has podns (injected before, or from the Kustomize
	// component) and needs nothing.
	OutcomeUnchanged Outcome = "unchanged"
	// OutcomeSkipped: the pod is not for podns (opted out, hostNetwork, dnsPolicy Default or
	// None, not a Pod CREATE).
	OutcomeSkipped Outcome = "skipped"
	// OutcomeWarning: the pod could not be injected safely and is admitted unchanged with a
	// warning.
	OutcomeWarning Outcome = "warning"
)

// Warning is one AdmissionResponse warning; Reason is the bounded "reason" label of
// podns_webhook_warnings_total.
type Warning struct {
	Reason  string
	Message string
}

// Warning reasons.
const (
	ReasonNameClash    = "name-clash"
	ReasonSysctl       = "sysctl"
	ReasonPort         = "port"
	ReasonNameservers  = "nameservers"
	ReasonSearchLimits = "search-limits"
	ReasonNoClusterDNS = "no-cluster-dns"
	ReasonAnnotation   = "annotation"
	ReasonDecode       = "decode"
	ReasonUnknownField = "unknown-field"
	// ReasonModeLabel: the pod's podns.io/mode label has a value other than "restricted"; the
	// pod is injected in the handler's mode.
	ReasonModeLabel = "mode-label"
	// ReasonInternal: the handler panicked; the pod is admitted unchanged (a bug in podns).
	ReasonInternal = "internal"
)

// Result is what Mutate did.
type Result struct {
	Outcome Outcome
	// Mode is the mode the pod got (restricted falls back to sidecar when the search list is
	// over the limits), or was injected with earlier; for a skipped pod, the handler's mode.
	Mode     Mode
	Warnings []Warning
}

// Mutate changes pod in place the way the admission webhook does, and says what it did. The pod
// is changed only when the Outcome is OutcomeInjected or OutcomeReordered; otherwise it is left
// exactly as it was. namespace is the pod's namespace (at CREATE the request's, the pod's own
// metadata.namespace may be empty); restricted mode builds the search list from it.
func (h *Handler) Mutate(pod *corev1.Pod, namespace string) Result {
	mode := h.mode
	if pod.Labels[LabelInject] == "false" {
		return Result{Outcome: OutcomeSkipped, Mode: mode}
	}
	// Before the dnsPolicy check: restricted mode itself sets dnsPolicy None.
	if v, ok := pod.Annotations[AnnotationInjected]; ok {
		res := reorder(pod, v)
		if res.Mode == "" {
			res.Mode = mode
		}
		return res
	}
	if pod.Spec.HostNetwork || pod.Spec.DNSPolicy == corev1.DNSDefault || pod.Spec.DNSPolicy == corev1.DNSNone {
		return Result{Outcome: OutcomeSkipped, Mode: mode}
	}
	var warnings []Warning
	if v, ok := pod.Labels[LabelMode]; ok && v != string(ModeRestricted) {
		// Label values are case-sensitive: Restricted is a typo the user would otherwise never
		// notice, the pod simply keeping its namespace's mode.
		warnings = append(warnings, Warning{ReasonModeLabel, fmt.Sprintf(
			"podns injected in the namespace's mode: pod label %s=%.63q is not a podns mode (the one value is %q, case-sensitive)",
			LabelMode, v, ModeRestricted)})
	} else if ok && mode == ModeSidecar {
		mode = ModeRestricted
	}
	unchanged := func(w Warning) Result {
		return Result{Outcome: OutcomeWarning, Mode: mode, Warnings: []Warning{w}}
	}

	if has, clash := podnsNames(pod); has {
		if clash == "" {
			// The Kustomize component already put podns in the template.
			return Result{Outcome: OutcomeUnchanged, Mode: mode}
		}
		return unchanged(Warning{ReasonNameClash, fmt.Sprintf(
			"podns not injected: the pod already has a container or volume named %s; rename it or label the pod %s=false",
			clash, LabelInject)})
	}
	addSysctl := true
	if sc := pod.Spec.SecurityContext; sc != nil {
		for _, s := range sc.Sysctls {
			if sysctlName(s.Name) != portSysctl {
				continue
			}
			// Any value up to 53 lets the stub bind port 53 as well as podns's own value does.
			if n, err := strconv.Atoi(s.Value); err != nil || n > dnsPort {
				return unchanged(Warning{ReasonSysctl, fmt.Sprintf(
					"podns not injected: the pod sets %s=%s, the stub needs <= 53; change it or label the pod %s=false",
					s.Name, s.Value, LabelInject)})
			}
			addSysctl = false
		}
	}
	if w, ok := portClash(pod); ok {
		return unchanged(w)
	}

	var dnsConfig *corev1.PodDNSConfig
	if mode == ModeRestricted {
		if !h.opts.ClusterDNS.IsValid() {
			return unchanged(Warning{ReasonNoClusterDNS,
				"podns not injected: restricted mode needs the webhook's cluster DNS address (PODNS_CLUSTER_DNS), which is unset"})
		}
		if own := pod.Spec.DNSConfig; own != nil && len(own.Nameservers) > 0 {
			return unchanged(Warning{ReasonNameservers, fmt.Sprintf(
				"podns not injected: restricted mode, and the pod's dnsConfig.nameservers would bypass the stub; remove them or label the pod %s=false",
				LabelInject)})
		}
		dnsConfig = h.restrictedDNSConfig(pod.Spec.DNSConfig, namespace)
		if n, chars := len(dnsConfig.Searches), len(strings.Join(dnsConfig.Searches, " ")); n > maxSearches || chars > maxSearchListChars {
			warnings = append(warnings, Warning{ReasonSearchLimits, fmt.Sprintf(
				"podns injected in sidecar mode, not restricted: the DNS search list would have %d domains, %d characters (pod limits %d, %d)",
				n, chars, maxSearches, maxSearchListChars)})
			mode = ModeSidecar
		}
	}

	spec := &pod.Spec
	stub := h.stubContainer()
	head := []corev1.Container{stub}
	if mode == ModeSidecar {
		head = []corev1.Container{h.initContainer(), stub}
	} else {
		spec.DNSPolicy = corev1.DNSNone
		spec.DNSConfig = dnsConfig
		head[0].Env = append(head[0].Env,
			corev1.EnvVar{Name: "PODNS_UPSTREAMS", Value: h.opts.ClusterDNS.String()},
			corev1.EnvVar{Name: "PODNS_READY_CHECK_NAME", Value: "kubernetes.default.svc." + h.opts.ClusterDomain + "."})
	}
	spec.InitContainers = append(head, spec.InitContainers...)
	spec.Volumes = append(spec.Volumes, *h.def.Volume.DeepCopy())
	if addSysctl {
		if spec.SecurityContext == nil {
			spec.SecurityContext = &corev1.PodSecurityContext{}
		}
		spec.SecurityContext.Sysctls = append(spec.SecurityContext.Sysctls, h.def.Sysctl)
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationInjected] = string(mode) + " " + h.opts.Version
	return Result{Outcome: OutcomeInjected, Mode: mode, Warnings: warnings}
}

// initContainer is the definition's podns-init with the webhook's image and the optional
// ConfigMap reference.
func (h *Handler) initContainer() corev1.Container {
	c := *h.def.InitContainer.DeepCopy()
	if h.opts.InitImage != "" {
		c.Image = h.opts.InitImage
	}
	optionalConfigMap(&c)
	return c
}

// stubContainer is the definition's podns-stub as a native sidecar (what components/podns adds
// with its restartPolicy patch), with the webhook's image and the optional ConfigMap reference.
func (h *Handler) stubContainer() corev1.Container {
	c := *h.def.StubContainer.DeepCopy()
	if h.opts.StubImage != "" {
		c.Image = h.opts.StubImage
	}
	always := corev1.ContainerRestartPolicyAlways
	c.RestartPolicy = &always
	optionalConfigMap(&c)
	return c
}

// optionalConfigMap marks the podns-config reference optional: the webhook install creates no
// ConfigMap in the pod's namespace (the component generates one), and every value the
// component's ConfigMap sets is the binaries' default, so a namespace needs one only to tune.
func optionalConfigMap(c *corev1.Container) {
	for i := range c.EnvFrom {
		if ref := c.EnvFrom[i].ConfigMapRef; ref != nil && ref.Name == configMapName {
			t := true
			ref.Optional = &t
		}
	}
}

// podnsNames reports whether the pod uses one of podns's names (containers podns-init,
// podns-stub, volume podns-state) and, when it does, the first name that is not where the
// Kustomize component puts it (clash == "" means the pod carries the component's podns:
// components/podns, or podns-legacy with the stub a regular container).
func podnsNames(pod *corev1.Pod) (has bool, clash string) {
	spec := &pod.Spec
	inInit := func(name string) int {
		return slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == name })
	}
	inMain := func(name string) int {
		return slices.IndexFunc(spec.Containers, func(c corev1.Container) bool { return c.Name == name })
	}
	inEphemeral := slices.ContainsFunc(spec.EphemeralContainers, func(c corev1.EphemeralContainer) bool {
		return c.Name == initName || c.Name == stubName
	})
	vol := slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == stateVolume })
	initI, stubI, stubM := inInit(initName), inInit(stubName), inMain(stubName)
	if !vol && initI < 0 && stubI < 0 && stubM < 0 && inMain(initName) < 0 && !inEphemeral {
		return false, ""
	}
	native := stubI >= 0 && spec.InitContainers[stubI].RestartPolicy != nil &&
		*spec.InitContainers[stubI].RestartPolicy == corev1.ContainerRestartPolicyAlways
	switch {
	case inEphemeral:
		return true, initName + " or " + stubName + " (an ephemeral container)"
	case inMain(initName) >= 0:
		return true, initName
	case initI < 0:
		if vol {
			return true, stateVolume
		}
		return true, stubName
	case !vol:
		return true, initName
	case native && stubM < 0, !native && stubI < 0 && stubM >= 0:
		return true, ""
	case stubI < 0 && stubM < 0:
		return true, initName
	}
	return true, stubName
}

// sysctlName is a sysctl's name in the dot form. Kubernetes accepts both separators
// (k8s.io/component-helpers/node/util/sysctl NormalizeName): when the first separator is a
// slash, slashes separate the parts and a dot is part of a name (net/ipv4/conf/eth0.100/...), so
// the two are swapped.
func sysctlName(name string) string {
	i := strings.IndexAny(name, "./")
	if i < 0 || name[i] == '.' {
		return name
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '/':
			return '.'
		case '.':
			return '/'
		}
		return r
	}, name)
}

// portClash finds a container that declares a port the stub listens on (53 on 127.0.0.1, which
// an application listening on 0.0.0.0:53 would collide with; 9253 for /readyz) or the stub's port
// name.
func portClash(pod *corev1.Pod) (Warning, bool) {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for _, c := range cs {
			for _, p := range c.Ports {
				if p.ContainerPort == dnsPort || p.ContainerPort == stubHTTPPort || p.Name == stubHTTPName {
					port := strconv.Itoa(int(p.ContainerPort))
					if p.Name != "" {
						port += " (" + p.Name + ")"
					}
					return Warning{ReasonPort, fmt.Sprintf(
						"podns not injected: container %s declares port %s, which the podns stub uses (53, %d named %s); label the pod %s=false",
						c.Name, port, stubHTTPPort, stubHTTPName, LabelInject)}, true
				}
			}
		}
	}
	return Warning{}, false
}

// restrictedDNSConfig is the dnsConfig of a restricted-mode pod: the stub as the one
// nameserver, and what the kubelet would have written for dnsPolicy ClusterFirst (its search
// list for the namespace, ndots:5) with podns's options (initc's PODNS_OPTIONS default) and the
// pod's own dnsConfig merged in the kubelet's way: searches appended without duplicates, an
// option the pod names replaces podns's value.
func (h *Handler) restrictedDNSConfig(own *corev1.PodDNSConfig, namespace string) *corev1.PodDNSConfig {
	d := h.opts.ClusterDomain
	str := func(s string) *string { return &s }
	cfg := &corev1.PodDNSConfig{
		Nameservers: []string{"127.0.0.1"},
		Searches:    []string{namespace + ".svc." + d, "svc." + d, d},
		Options: []corev1.PodDNSConfigOption{
			{Name: "ndots", Value: str("5")},
			{Name: "timeout", Value: str("1")},
			{Name: "attempts", Value: str("3")},
		},
	}
	if own == nil {
		return cfg
	}
	for _, s := range own.Searches {
		if !slices.Contains(cfg.Searches, s) {
			cfg.Searches = append(cfg.Searches, s)
		}
	}
	for _, o := range own.Options {
		o := *o.DeepCopy()
		if i := slices.IndexFunc(cfg.Options, func(x corev1.PodDNSConfigOption) bool { return x.Name == o.Name }); i >= 0 {
			cfg.Options[i] = o
		} else {
			cfg.Options = append(cfg.Options, o)
		}
	}
	return cfg
}

// reorder handles a pod that carries podns.io/injected: the API server reinvokes the webhook
// (reinvocationPolicy IfNeeded) when another webhook changed the pod after podns, and the
// matchConditions let the call through only when podns's init containers are no longer first.
// They are moved back to the front; the other init containers keep their order.
func reorder(pod *corev1.Pod, annotation string) Result {
	// An empty or blank value has no first field: it names no mode, like any other value.
	var mode Mode
	if f := strings.Fields(annotation); len(f) > 0 {
		mode = Mode(f[0])
	}
	var want []string
	switch mode {
	case ModeSidecar:
		want = []string{initName, stubName}
	case ModeRestricted:
		want = []string{stubName}
	default:
		// The metric's mode label stays bounded: an unknown mode is reported as the handler's.
		return Result{Outcome: OutcomeWarning, Mode: "", Warnings: []Warning{{ReasonAnnotation, fmt.Sprintf(
			"podns left the pod unchanged: annotation %s=%q names no podns mode", AnnotationInjected, annotation)}}}
	}
	ics := pod.Spec.InitContainers
	head := make([]corev1.Container, 0, len(want))
	for _, name := range want {
		i := slices.IndexFunc(ics, func(c corev1.Container) bool { return c.Name == name })
		if i < 0 {
			return Result{Outcome: OutcomeWarning, Mode: mode, Warnings: []Warning{{ReasonAnnotation, fmt.Sprintf(
				"podns left the pod unchanged: annotation %s=%q but no init container %s",
				AnnotationInjected, annotation, name)}}}
		}
		head = append(head, ics[i])
	}
	inOrder := true
	for i, name := range want {
		inOrder = inOrder && ics[i].Name == name
	}
	if inOrder {
		return Result{Outcome: OutcomeUnchanged, Mode: mode}
	}
	rest := slices.DeleteFunc(slices.Clone(ics), func(c corev1.Container) bool { return slices.Contains(want, c.Name) })
	pod.Spec.InitContainers = append(head, rest...)
	return Result{Outcome: OutcomeReordered, Mode: mode}
}
