// Package inject decides what podns adds to a Pod at admission and builds the JSON patch.
//
// What is added has one definition, shared with the Kustomize component:
// injector-manifests/components/podns-common/injector-values.yaml, copied to definition.yaml by
// `go generate` (a test fails when the copy is stale).
package inject

import (
	"net/netip"
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

// Options are the webhook's settings that shape what is injected.
type Options struct {
	// ClusterDNS is the cluster DNS Service IP, the stub's upstream in restricted mode.
	ClusterDNS netip.Addr
	// ClusterDomain is the cluster domain (default cluster.local) for the restricted mode's
	// search list and the stub's start-up check name.
	ClusterDomain string
	// Version is recorded in the pod's annotation podns.io/injected.
	Version string
}

// Handler is the admission.Handler (sigs.k8s.io/controller-runtime/pkg/webhook/admission) that
// mutates Pods at CREATE. The webhook serves one Handler per mode: /mutate-pod (ModeSidecar,
// unless the pod is labelled podns.io/mode=restricted) and /mutate-pod-restricted (ModeRestricted,
// namespaces labelled podns.io/mode=restricted).
type Handler struct {
	mode Mode
	opts Options
}

// NewHandler returns the Handler for one mode. It fails when the embedded definition does not
// parse or when Options lack what the mode needs (restricted: ClusterDNS).
func NewHandler(mode Mode, opts Options) (*Handler, error) {
	return &Handler{mode: mode, opts: opts}, nil
}
