// Package config is the webhook's configuration: one struct filled from PODNS_* environment
// variables, validated as a whole before anything is served (internal/envconfig, as the stub's
// and initc's).
package config

import (
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/rs/zerolog"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/podns/podns/internal/envconfig"
)

// Cert modes (PODNS_CERT_MODE).
const (
	// CertSelf: the webhook makes its CA (shared by the replicas through a Secret) and its
	// serving certificate, rotates them, and keeps the MutatingWebhookConfiguration's caBundle
	// current (webhook/certs).
	CertSelf = "self"
	// CertExternal: tls.crt and tls.key come from PODNS_CERT_DIR (cert-manager's Secret, say),
	// re-read when they change; someone else (cert-manager's cainjector) owns the caBundle.
	CertExternal = "external"
)

// Config is every knob of the webhook. Each field's tags carry its variable, default, allowed
// range and meaning; `webhook -help` and docs/configuration.md (`make docs`) are generated from
// the same tags, so the `help` tag is the user's one-line manual entry and the comments say why.
type Config struct {
	// WebhookListen serves the admission endpoints over HTTPS; the Service podns-webhook maps
	// 443 to it. 9443 is controller-runtime's default and above 1024, so no capability is needed.
	WebhookListen ListenAddr `env:"PODNS_WEBHOOK_LISTEN" envDefault:":9443" allowed:"[ip]:port" help:"HTTPS admission endpoints /mutate-pod and /mutate-pod-restricted"`
	// HTTPListen is plain HTTP for the kubelet's probes and Prometheus; 9254 is next to the
	// stub's 9253 so the two never clash on a developer's machine.
	HTTPListen ListenAddr `env:"PODNS_HTTP_LISTEN" envDefault:":9254" allowed:"[ip]:port" help:"/metrics, /healthz, /readyz (200 once a serving certificate is loaded and, in self mode, the caBundle is current)"`

	CertMode string `env:"PODNS_CERT_MODE" envDefault:"self" oneof:"self external" help:"self: make a CA (Secret podns-webhook-ca, shared by the replicas) and a serving certificate, rotate them and keep the caBundle of PODNS_WEBHOOK_CONFIGURATION current; external: read tls.crt and tls.key from PODNS_CERT_DIR, reloaded on change (cert-manager)"`
	// CertDir is where cert-manager's Secret is mounted in external mode; unused in self mode.
	CertDir string `env:"PODNS_CERT_DIR" envDefault:"/run/podns-webhook/certs" allowed:"absolute path" help:"external mode: the directory holding tls.crt and tls.key"`

	// WebhookConfiguration is the one object the webhook's ClusterRole lets it update.
	WebhookConfiguration string `env:"PODNS_WEBHOOK_CONFIGURATION" envDefault:"podns-webhook" allowed:"a Kubernetes object name" help:"self mode: the MutatingWebhookConfiguration whose every webhook's caBundle is kept equal to the CA"`
	// WebhookService and WebhookNamespace name the serving certificate: the API server dials
	// <service>.<namespace>.svc.
	WebhookService string `env:"PODNS_WEBHOOK_SERVICE" envDefault:"podns-webhook" allowed:"a Service name (DNS label)" help:"self mode: the Service in front of the webhook; the certificate names <service>, <service>.<namespace>, <service>.<namespace>.svc"`
	// WebhookNamespace comes from the downward API (metadata.namespace) in the manifests; it is
	// also where the CA Secret lives.
	WebhookNamespace string `env:"PODNS_WEBHOOK_NAMESPACE" envDefault:"podns-system" allowed:"a namespace name (DNS label)" help:"the webhook's namespace (downward API metadata.namespace): the Service's and the CA Secret's"`

	// ClusterDNS is the restricted mode's upstream for the stub. Unset, the webhook reads the
	// Service kube-system/kube-dns once at start (the name kubeadm, kind, k3s and the managed
	// clusters give the cluster DNS, CoreDNS included).
	ClusterDNS Addr `env:"PODNS_CLUSTER_DNS" allowed:"an IP address" help:"the cluster DNS Service IP, the stub's upstream in restricted mode; unset: the clusterIP of Service kube-system/kube-dns, read once at start"`
	// ClusterDomain is the kubelet's --cluster-domain: it builds the restricted mode's search list.
	ClusterDomain string `env:"PODNS_CLUSTER_DOMAIN" envDefault:"cluster.local" allowed:"a domain name" help:"the cluster domain (kubelet --cluster-domain): the restricted mode's search list and the stub's start-up check name"`

	StubImage string `env:"PODNS_STUB_IMAGE" allowed:"an image reference ([registry[:port]/]repository[:tag][@digest], repository lowercase)" help:"the image of the injected podns-stub container; unset: the definition's"`
	InitImage string `env:"PODNS_INIT_IMAGE" allowed:"an image reference ([registry[:port]/]repository[:tag][@digest], repository lowercase)" help:"the image of the injected podns-init container; unset: the definition's"`

	// ShutdownGrace keeps admitting after SIGTERM while /readyz says 503, so that the Service's
	// endpoints drop the replica before it stops listening: an API server that still picks it
	// meanwhile would otherwise fail the pod's admission (failurePolicy Fail).
	ShutdownGrace time.Duration `env:"PODNS_SHUTDOWN_GRACE" envDefault:"5s" min:"0s" max:"10m" help:"keep serving this long after SIGTERM (with /readyz 503), then drain the requests in flight and exit"`

	LogLevel  string `env:"PODNS_LOG_LEVEL" envDefault:"info" oneof:"trace debug info warn error" help:"log level (zerolog)"`
	LogFormat string `env:"PODNS_LOG_FORMAT" envDefault:"json" oneof:"json console" help:"log format; logs go to stderr"`
}

// Load reads the environment (nil: the process's) and validates it. The error lists every bad
// variable, one per line.
func Load(environ map[string]string) (*Config, error) {
	var c Config
	if err := envconfig.Load(&c, environ); err != nil {
		return nil, err
	}
	return &c, nil
}

// Validate checks what the tags and the types cannot: names the API server will accept, an
// absolute certificate directory, image references, a unicast cluster DNS address and two
// listen addresses that do not collide. Every problem is reported. envconfig.Load calls it.
func (c *Config) Validate() error {
	var errs *multierror.Error
	if !filepath.IsAbs(c.CertDir) {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_CERT_DIR=%q: not an absolute path (allowed: absolute path)", c.CertDir))
	}
	// RFC 1123 subdomain for object names, RFC 1123 label for Services and namespaces: the
	// API server's own rules (k8s.io/apimachinery/pkg/util/validation).
	if msgs := validation.IsDNS1123Subdomain(c.WebhookConfiguration); len(msgs) > 0 {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_WEBHOOK_CONFIGURATION=%q: %s (allowed: a Kubernetes object name)", c.WebhookConfiguration, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsDNS1035Label(c.WebhookService); len(msgs) > 0 {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_WEBHOOK_SERVICE=%q: %s (allowed: a Service name (DNS label))", c.WebhookService, strings.Join(msgs, "; ")))
	}
	if msgs := validation.IsDNS1123Label(c.WebhookNamespace); len(msgs) > 0 {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_WEBHOOK_NAMESPACE=%q: %s (allowed: a namespace name (DNS label))", c.WebhookNamespace, strings.Join(msgs, "; ")))
	}
	if d := strings.TrimSuffix(c.ClusterDomain, "."); len(validation.IsDNS1123Subdomain(d)) > 0 {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_CLUSTER_DOMAIN=%q: not a domain name (allowed: a domain name)", c.ClusterDomain))
	}
	for _, img := range []struct{ name, v string }{{"PODNS_STUB_IMAGE", c.StubImage}, {"PODNS_INIT_IMAGE", c.InitImage}} {
		switch {
		case img.v == "":
		case strings.ContainsAny(img.v, " \t\n"):
			errs = multierror.Append(errs, fmt.Errorf("%s=%q: contains white space (allowed: %s)", img.name, img.v, imageAllowed))
		case !ValidImage(img.v):
			errs = multierror.Append(errs, fmt.Errorf("%s=%q: not an image reference (allowed: %s)", img.name, img.v, imageAllowed))
		}
	}
	if ip := c.ClusterDNS.Addr.Unmap(); ip.IsValid() && (ip.IsUnspecified() || ip.IsMulticast() || ip == netip.AddrFrom4([4]byte{255, 255, 255, 255})) {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_CLUSTER_DNS=%q: not a unicast address (allowed: the cluster DNS Service IP, a unicast address)", ip))
	}
	if sameListener(c.WebhookListen, c.HTTPListen) {
		errs = multierror.Append(errs, fmt.Errorf("PODNS_WEBHOOK_LISTEN=%q and PODNS_HTTP_LISTEN=%q: the same port on overlapping addresses (allowed: two different [ip]:port, e.g. :9443 and :9254)", c.WebhookListen, c.HTTPListen))
	}
	return errs.ErrorOrNil()
}

const imageAllowed = "an image reference ([registry[:port]/]repository[:tag][@digest], repository lowercase)"

// imageRef is the image reference grammar of github.com/distribution/reference (reference.go,
// ReferenceRegexp), what the kubelet's image pull accepts: an optional registry host (any case,
// optional port; a bracketed IPv6 address allowed), a lowercase repository path of components
// separated by '/', an optional tag of at most 128 characters, an optional digest.
var imageRef = regexp.MustCompile(`^` +
	`(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?/)?` +
	`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*` +
	`(?::[\w][\w.-]{0,127})?` +
	`(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$`)

// ValidImage reports whether ref is an image reference by the distribution grammar, with a
// repository name (everything before the tag and digest) of at most 255 characters, the
// grammar's NameTotalLengthMax.
func ValidImage(ref string) bool {
	if !imageRef.MatchString(ref) {
		return false
	}
	name, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name = name[:i]
	}
	return len(name) <= 255
}

// sameListener reports whether two listen addresses would take the same socket: the same port,
// and the same host or one of them every address (empty or unspecified).
func sameListener(a, b ListenAddr) bool {
	if a == "" || b == "" {
		return false // unparsed: already reported
	}
	ha, pa := a.HostPort()
	hb, pb := b.HostPort()
	if pa != pb {
		return false
	}
	every := func(h string) bool {
		ip, err := netip.ParseAddr(h)
		return h == "" || (err == nil && ip.IsUnspecified())
	}
	if every(ha) || every(hb) {
		return true
	}
	ia, _ := netip.ParseAddr(ha)
	ib, _ := netip.ParseAddr(hb)
	return ia.Unmap() == ib.Unmap()
}

// Domain returns PODNS_CLUSTER_DOMAIN without a trailing dot, as the search list wants it.
func (c *Config) Domain() string { return strings.TrimSuffix(c.ClusterDomain, ".") }

// Logger builds the logger PODNS_LOG_LEVEL and PODNS_LOG_FORMAT ask for, writing to w.
func (c *Config) Logger(w io.Writer) zerolog.Logger {
	return envconfig.Logger(w, c.LogLevel, c.LogFormat, "webhook")
}
