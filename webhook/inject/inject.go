// Package inject decides what podns adds to a Pod at admission and builds the JSON patch.
//
// What is added has one definition, shared with the Kustomize component:
// injector-manifests/components/podns-common/injector-values.yaml, copied to definition.yaml by
// `go generate` (a test fails when the copy is stale).
//
// Sidecar mode gives a pod exactly what components/podns renders into its template (the test
// TestWebhookEquivalence in injector-manifests checks it), with two differences: the envFrom
// reference to the podns-config ConfigMap is optional and has no kustomize hash suffix (the
// webhook install creates no ConfigMap; a namespace may create podns-config to tune, every value
// the component's sets is the binaries' default), and the pod gets the annotation
// podns.io/injected: "<mode> <version>". The webhook is more lenient than the component in one
// place: a pod that sets net.ipv4.ip_unprivileged_port_start itself to 53 or less keeps its value
// (the component fails on any value).
//
// Restricted mode's search list is the kubelet's cluster part only (<ns>.svc.<domain>,
// svc.<domain>, <domain>) plus the pod's own dnsConfig.searches: the node's own search domains,
// which the kubelet appends for dnsPolicy ClusterFirst, are not known at admission.
package inject

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/rs/zerolog"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/podns/podns/internal/version"
)

// Mode is how a pod gets podns.
type Mode string

const (
	// ModeSidecar is the default: the root init container podns-init rewrites /etc/resolv.conf,
	// the stub runs as a native sidecar (the same pod as the Kustomize component renders).
	ModeSidecar Mode = "sidecar"
	// ModeRestricted needs no root container: dnsPolicy None plus a dnsConfig pointing at the
	// stub, which forwards to the cluster DNS given by Options. The pod passes Pod Security
	// "restricted".
	ModeRestricted Mode = "restricted"
)

// DefaultClusterDomain is the cluster domain when Options.ClusterDomain is empty (the kubelet's
// usual --cluster-domain).
const DefaultClusterDomain = "cluster.local"

// Options are the webhook's settings that shape what is injected.
type Options struct {
	// ClusterDNS is the cluster DNS Service IP, the stub's upstream in restricted mode
	// (PODNS_UPSTREAMS). Required by ModeRestricted; a ModeSidecar handler without it admits a
	// pod labelled podns.io/mode=restricted unchanged, with a warning.
	ClusterDNS netip.Addr
	// ClusterDomain is the cluster domain (default DefaultClusterDomain; a trailing dot is
	// dropped) for the restricted mode's search list and the stub's start-up check name.
	ClusterDomain string
	// Version is recorded in the pod's annotation podns.io/injected (default: this binary's
	// internal/version.Version).
	Version string
	// InitImage and StubImage replace the definition's images (PODNS_INIT_IMAGE,
	// PODNS_STUB_IMAGE); empty keeps the definition's.
	InitImage, StubImage string
	// Logger gets one debug line per admission and one warn line per warning. The zero Logger
	// logs nothing.
	Logger zerolog.Logger
}

// Handler is the admission.Handler (sigs.k8s.io/controller-runtime/pkg/webhook/admission) that
// mutates Pods at CREATE. The webhook serves one Handler per mode: /mutate-pod (ModeSidecar,
// unless the pod is labelled podns.io/mode=restricted) and /mutate-pod-restricted (ModeRestricted,
// namespaces labelled podns.io/mode=restricted).
type Handler struct {
	mode Mode
	opts Options
	def  definition
	// mutate replaces Mutate when set: a test seam to make the handler panic.
	mutate func(pod *corev1.Pod, namespace string) Result
}

var _ admission.Handler = (*Handler)(nil)

// NewHandler returns the Handler for one mode. It fails when the embedded definition does not
// parse, on an unknown mode, and when Options lack what the mode needs (restricted: ClusterDNS).
func NewHandler(mode Mode, opts Options) (*Handler, error) {
	if mode != ModeSidecar && mode != ModeRestricted {
		return nil, fmt.Errorf("inject: unknown mode %q (want %s or %s)", mode, ModeSidecar, ModeRestricted)
	}
	if mode == ModeRestricted && !opts.ClusterDNS.IsValid() {
		return nil, errors.New("inject: restricted mode needs the cluster DNS address (Options.ClusterDNS)")
	}
	opts.ClusterDomain = strings.TrimSuffix(opts.ClusterDomain, ".")
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = DefaultClusterDomain
	}
	if opts.Version == "" {
		opts.Version = version.Version
	}
	def, err := parseDefinition(definitionYAML)
	if err != nil {
		return nil, err
	}
	registerMetrics()
	return &Handler{mode: mode, opts: opts, def: def}, nil
}

// Handle admits every request: a pod podns cannot be added to safely is admitted unchanged, with
// warnings, never rejected for a podns reason. The response carries a JSON patch when the pod was
// injected or its podns init containers were moved back to the front.
//
// A panic in the handler (a podns bug) also admits the pod unchanged, with a warning and the
// warning reason "internal": controller-runtime would turn it into a denial, which the API
// server enforces even with failurePolicy Ignore.
func (h *Handler) Handle(_ context.Context, req admission.Request) admission.Response {
	start := time.Now()
	resp, res, name := h.handleRecovered(req)
	for _, w := range res.Warnings {
		resp.Warnings = append(resp.Warnings, w.Message)
	}
	elapsed := time.Since(start)
	observe(res, elapsed)
	for _, w := range res.Warnings {
		h.opts.Logger.Warn().Str("namespace", req.Namespace).Str("pod", name).Str("reason", w.Reason).Msg(w.Message)
	}
	h.opts.Logger.Debug().Str("namespace", req.Namespace).Str("pod", name).Str("mode", string(res.Mode)).
		Str("result", string(res.Outcome)).Float64("duration", elapsed.Seconds()).Int("patch_ops", len(resp.Patches)).Msg("admission")
	return resp
}

// handleRecovered is handle, with a panic turned into an unchanged pod and a warning.
func (h *Handler) handleRecovered(req admission.Request) (resp admission.Response, res Result, name string) {
	defer func() {
		if p := recover(); p != nil {
			resp, name = admission.Allowed(""), req.Name
			res = Result{Outcome: OutcomeWarning, Mode: h.mode, Warnings: []Warning{{ReasonInternal,
				fmt.Sprintf("podns not injected: internal error (please report it): %.120v", p)}}}
		}
	}()
	return h.handle(req)
}

// handle returns the response without warnings, what was done and the pod's name for the log
// (at CREATE a controller's pod has only its generateName, e.g. web-7d9f8-).
func (h *Handler) handle(req admission.Request) (admission.Response, Result, string) {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return admission.Allowed(""), Result{Outcome: OutcomeSkipped, Mode: h.mode}, req.Name
	}
	failed := func(err error) (admission.Response, Result, string) {
		return admission.Allowed(""), Result{Outcome: OutcomeWarning, Mode: h.mode, Warnings: []Warning{{ReasonDecode,
			fmt.Sprintf("podns not injected: the object does not decode as a Pod: %.160v", err)}}}, req.Name
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return failed(err)
	}
	name := pod.Name
	if name == "" {
		name = pod.GenerateName
	}
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	// The patch is the difference between two encodings of the same typed Pod, not between the
	// request's bytes and the mutated Pod: encoding differences (a quantity's spelling,
	// creationTimestamp: null) then make no operations.
	orig, err := json.Marshal(&pod)
	if err != nil {
		return failed(err)
	}
	mutate := h.Mutate
	if h.mutate != nil {
		mutate = h.mutate
	}
	res := mutate(&pod, namespace)
	if res.Outcome != OutcomeInjected && res.Outcome != OutcomeReordered {
		return admission.Allowed(""), res, name
	}
	if path := unknownField(req.Object.Raw, orig); path != "" {
		return admission.Allowed(""), Result{Outcome: OutcomeWarning, Mode: res.Mode, Warnings: []Warning{{ReasonUnknownField,
			fmt.Sprintf("podns not injected: the pod has a field this webhook's Kubernetes API version does not know (%.100s); upgrade the webhook", path)}}}, name
	}
	cur, err := json.Marshal(&pod)
	if err != nil {
		return failed(err)
	}
	resp := admission.PatchResponseFromRaw(orig, cur)
	if !resp.Allowed {
		// Only a patch that cannot be computed gets here; admit the pod as it came.
		return failed(errors.New(resp.Result.Message))
	}
	return resp, res, name
}

// unknownField returns the path of a field of the request's pod that the typed Pod lost (one
// newer than this build's k8s.io/api), or "". The patch is computed from typed encodings and
// lists are compared index by index, so such a field would stay at its old index, on the
// container podns put there, and be dropped from the one it belonged to: such a pod is admitted
// unchanged instead. A field missing from typed is fine when its value is empty (omitempty).
func unknownField(raw, typed []byte) string {
	var r, t any
	if json.Unmarshal(raw, &r) != nil || json.Unmarshal(typed, &t) != nil {
		return "(undecodable)"
	}
	return lostPath(r, t, "")
}

func lostPath(r, t any, path string) string {
	switch r := r.(type) {
	case map[string]any:
		tm, _ := t.(map[string]any)
		for k, rv := range r {
			tv, ok := tm[k]
			if !ok {
				if isEmpty(rv) {
					continue
				}
				return path + "/" + k
			}
			if p := lostPath(rv, tv, path+"/"+k); p != "" {
				return p
			}
		}
	case []any:
		ta, _ := t.([]any)
		if len(ta) != len(r) {
			return path
		}
		for i := range r {
			if p := lostPath(r[i], ta[i], fmt.Sprintf("%s/%d", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}

func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case bool:
		return !v
	case float64:
		return v == 0
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}
