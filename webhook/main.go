package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/podns/podns/internal/buildinfo"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/podns/podns/internal/cli"
	"github.com/podns/podns/internal/version"
	"github.com/podns/podns/webhook/certs"
	"github.com/podns/podns/webhook/config"
	"github.com/podns/podns/webhook/inject"
)

// Admission paths, as the MutatingWebhookConfiguration podns-webhook names them (W-design):
// sidecar.podns.io calls pathSidecar, restricted.podns.io pathRestricted.
const (
	pathSidecar    = "/mutate-pod"
	pathRestricted = "/mutate-pod-restricted"
)

// kubeDNS is the Service whose clusterIP is the cluster DNS when PODNS_CLUSTER_DNS is unset: the
// name kubeadm, kind, k3s and the managed clusters give it, CoreDNS included.
var kubeDNS = struct{ namespace, name string }{"kube-system", "kube-dns"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], nil, os.Stdout, os.Stderr, deps{client: apiClient, handler: injectHandler}))
}

// deps are what run takes from outside the process: tests give a fake clientset, a clock, and
// a short resync.
type deps struct {
	// client returns the API server client; apiClient in the binary.
	client func() (kubernetes.Interface, error)
	// handler returns the admission handler of a mode; injectHandler in the binary.
	handler func(inject.Mode, inject.Options) (admission.Handler, error)
	// now and resync are passed to certs.Self (nil, 0: its defaults).
	now    func() time.Time
	resync time.Duration
}

// apiClient builds the clientset from controller-runtime's config loader: KUBECONFIG (or
// --kubeconfig) when set, else the in-cluster ServiceAccount, else ~/.kube/config.
func apiClient() (kubernetes.Interface, error) {
	rc, err := ctrlconfig.GetConfig()
	if err != nil {
		return nil, err
	}
	rc.UserAgent = "podns-webhook/" + version.Version
	return kubernetes.NewForConfig(rc)
}

// injectHandler is inject.NewHandler as an admission.Handler.
func injectHandler(mode inject.Mode, opts inject.Options) (admission.Handler, error) {
	h, err := inject.NewHandler(mode, opts)
	if err != nil {
		return nil, err
	}
	return h, nil
}

var _ admission.Handler = (*inject.Handler)(nil)

// ctrlLogOnce: controller-runtime's logger is process-wide; set it once.
var ctrlLogOnce sync.Once

// run is the whole program. ctx ending is SIGTERM. environ nil means the process environment.
func run(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer, d deps) int {
	p := config.Program
	if exit, done := p.Args(args, stdout, stderr); done {
		return exit
	}
	cfg, err := config.Load(environ)
	if err != nil {
		return p.BadConfig(stderr, err)
	}
	log := cfg.Logger(stderr)
	ctrlLogOnce.Do(func() { ctrllog.SetLogger(zerologr(log.With().Str("part", "controller-runtime").Logger())) })

	client, err := d.client()
	if err != nil {
		log.Error().Err(err).Msg("cannot reach the API server: no credentials (in-cluster ServiceAccount or KUBECONFIG)")
		return cli.ExitFail
	}
	dnsIP, from, err := clusterDNS(ctx, cfg, client)
	if err != nil {
		log.Error().Err(err).Msg("cannot start")
		if errors.Is(err, errNoClusterDNS) {
			return cli.ExitConfig
		}
		return cli.ExitFail
	}
	opts := injectOptions(cfg, dnsIP, log)
	handlers := map[string]admission.Handler{}
	for path, mode := range map[string]inject.Mode{pathSidecar: inject.ModeSidecar, pathRestricted: inject.ModeRestricted} {
		if handlers[path], err = d.handler(mode, opts); err != nil {
			log.Error().Err(err).Msg("cannot start")
			return cli.ExitFail
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, runCerts, err := certSource(cfg, client, d, log.With().Str("part", "certs").Logger())
	if err != nil {
		log.Error().Err(err).Msg("cannot load the serving certificate")
		return cli.ExitFail
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	defer cancel() // before bg.Wait: stops the certificate loop
	bg.Go(func() { runCerts(ctx) })

	host, port := cfg.WebhookListen.HostPort()
	srv := webhook.NewServer(webhook.Options{Host: host, Port: port, TLSOpts: []func(*tls.Config){func(c *tls.Config) {
		c.GetCertificate = src.GetCertificate
		c.MinVersion = tls.VersionTLS12
		// HTTP/1.1 only: the API server's webhook client needs nothing more, and HTTP/2's
		// stream handling has been a denial-of-service surface (CVE-2023-44487).
		c.NextProtos = []string{"http/1.1"}
	}}})
	recoverPanic := true // a panic in a handler answers 500 for that request, not a dead process
	for path, h := range handlers {
		srv.Register(path, &admission.Webhook{Handler: h, RecoverPanic: &recoverPanic})
	}

	var terminating atomic.Bool
	started := srv.StartedChecker()
	ready := func(r *http.Request) (bool, string) {
		if terminating.Load() {
			return false, "terminating"
		}
		if ok, why := src.Ready(); !ok {
			return false, why
		}
		if err := started(r); err != nil {
			return false, err.Error()
		}
		return true, "ok"
	}
	stopHTTP, err := serveHTTP(string(cfg.HTTPListen), registry(), ready, log)
	if err != nil {
		log.Error().Err(err).Msg("cannot serve HTTP")
		return cli.ExitFail
	}
	defer stopHTTP()

	// The server outlives ctx by PODNS_SHUTDOWN_GRACE: see config.Config.ShutdownGrace.
	serveCtx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	served := make(chan error, 1)
	go func() { served <- srv.Start(serveCtx) }()
	log.Info().Str("version", version.Version).Str("listen", string(cfg.WebhookListen)).Str("http", string(cfg.HTTPListen)).
		Str("cert_mode", cfg.CertMode).Str("cluster_dns", dnsIP.String()).Str("cluster_dns_from", from).
		Str("cluster_domain", cfg.Domain()).Strs("paths", []string{pathSidecar, pathRestricted}).Msg("podns webhook serving")

	select {
	case err := <-served:
		// Start returns before ctx ends only when it could not listen.
		log.Error().Err(err).Str("listen", string(cfg.WebhookListen)).Msg("cannot serve the webhook")
		return cli.ExitFail
	case <-ctx.Done():
	}
	terminating.Store(true)
	log.Info().Float64("grace", cfg.ShutdownGrace.Seconds()).Msg("SIGTERM: /readyz 503, serving for the grace period, then draining")
	select {
	case <-time.After(cfg.ShutdownGrace):
	case err := <-served:
		log.Error().Err(err).Msg("webhook server stopped during the grace period")
		return cli.ExitFail
	}
	stopServing()
	if err := <-served; err != nil {
		log.Error().Err(err).Msg("webhook server stopped with an error")
		return cli.ExitFail
	}
	return cli.ExitOK
}

// errNoClusterDNS marks a cluster DNS address that is neither set nor found: exit 2.
var errNoClusterDNS = errors.New("no cluster DNS address")

// clusterDNS returns PODNS_CLUSTER_DNS, or else the clusterIP of Service kube-system/kube-dns,
// read once: the address does not change while a cluster lives. from says which.
func clusterDNS(ctx context.Context, cfg *config.Config, client kubernetes.Interface) (ip netip.Addr, from string, err error) {
	if cfg.ClusterDNS.IsValid() {
		return cfg.ClusterDNS.Addr, "PODNS_CLUSTER_DNS", nil
	}
	from = "Service " + kubeDNS.namespace + "/" + kubeDNS.name
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	svc, err := client.CoreV1().Services(kubeDNS.namespace).Get(ctx, kubeDNS.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ip, from, fmt.Errorf("%w: PODNS_CLUSTER_DNS is unset and %s does not exist; set PODNS_CLUSTER_DNS to the cluster DNS Service IP", errNoClusterDNS, from)
	}
	if err != nil {
		return ip, from, fmt.Errorf("PODNS_CLUSTER_DNS is unset and reading %s failed (RBAC: get services kube-dns in kube-system): %w", from, err)
	}
	ip, perr := netip.ParseAddr(svc.Spec.ClusterIP)
	if perr != nil {
		return ip, from, fmt.Errorf("%w: PODNS_CLUSTER_DNS is unset and %s has no clusterIP (%q); set PODNS_CLUSTER_DNS", errNoClusterDNS, from, svc.Spec.ClusterIP)
	}
	return ip, from, nil
}

// certSource is the serving certificate PODNS_CERT_MODE asks for, and the loop that keeps it
// current until ctx ends.
func certSource(cfg *config.Config, client kubernetes.Interface, d deps, log zerolog.Logger) (interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	Ready() (bool, string)
}, func(context.Context), error) {
	if cfg.CertMode == config.CertExternal {
		e, err := certs.NewExternal(cfg.CertDir, log, nil)
		if err != nil {
			return nil, nil, err
		}
		return e, func(ctx context.Context) {
			if err := e.Run(ctx); err != nil {
				log.Error().Err(err).Str("dir", cfg.CertDir).Msg("cannot watch the certificate files; the loaded certificate stays")
			}
		}, nil
	}
	s := certs.NewSelf(certs.SelfOptions{Client: client, Namespace: cfg.WebhookNamespace, Service: cfg.WebhookService,
		WebhookConfiguration: cfg.WebhookConfiguration, Now: d.now, Resync: d.resync, Log: log})
	return s, s.Run, nil
}

// registry gathers controller-runtime's registry (the webhook server's
// controller_runtime_webhook_* series, client-go's, and what webhook/inject registers there)
// and the Go and process collectors with podns_build_info.
func registry() prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector())
	return prometheus.Gatherers{ctrlmetrics.Registry, reg}
}

// serveHTTP serves /metrics, /healthz and /readyz on addr until the returned stop is called.
// /healthz is 200 while the process serves; /readyz is 200 when ready says so, else 503 with the
// reason: the kubelet keeps the replica out of the Service until its certificate is served and,
// in self mode, the caBundle trusts it.
func serveHTTP(addr string, g prometheus.Gatherer, ready func(*http.Request) (bool, string), log zerolog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, why := ready(r)
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = io.WriteString(w, why+"\n")
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("HTTP server stopped")
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(ctx)
	}, nil
}

// zerologr adapts zerolog to logr for controller-runtime: its lines are about its own wiring
// (paths registered, server started), so debug level; a line carrying an error, warn.
func zerologr(log zerolog.Logger) logr.Logger {
	return funcr.NewJSON(func(obj string) {
		ev := log.Debug()
		if strings.Contains(obj, `"error":`) {
			ev = log.Warn()
		}
		ev.RawJSON("controller_runtime", []byte(obj)).Msg("")
	}, funcr.Options{})
}
