package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/podns/podns/internal/cli"
	"github.com/podns/podns/internal/dnstest"
	"github.com/podns/podns/internal/envconfig"
	"github.com/podns/podns/webhook/config"
	"github.com/podns/podns/webhook/inject"
)

func TestHelpListsEveryVariable(t *testing.T) {
	var out bytes.Buffer
	if code := run(context.Background(), []string{"-help"}, map[string]string{}, &out, io.Discard, deps{}); code != cli.ExitOK {
		t.Fatalf("-help exit %d", code)
	}
	for _, f := range envconfig.Fields(&config.Config{}) {
		if !strings.Contains(out.String(), f.Name) {
			t.Errorf("-help does not list %s", f.Name)
		}
	}
	if code := run(context.Background(), []string{"-serve"}, map[string]string{}, io.Discard, io.Discard, deps{}); code != cli.ExitConfig {
		t.Errorf("unknown argument: exit %d, want %d", code, cli.ExitConfig)
	}
}

func TestBadConfigExits2NamingEveryVariable(t *testing.T) {
	var errOut bytes.Buffer
	code := run(context.Background(), nil, map[string]string{"PODNS_CERT_MODE": "acme", "PODNS_CLUSTER_DNS": "kube-dns"}, io.Discard, &errOut, deps{})
	if code != cli.ExitConfig {
		t.Fatalf("exit %d, want %d", code, cli.ExitConfig)
	}
	for _, v := range []string{"PODNS_CERT_MODE", "PODNS_CLUSTER_DNS"} {
		if !strings.Contains(errOut.String(), v) {
			t.Errorf("stderr does not name %s:\n%s", v, errOut.String())
		}
	}
}

// TestNoClusterDNSExits2: PODNS_CLUSTER_DNS unset and no Service kube-system/kube-dns is a
// configuration the operator must fix, said in one line naming the variable.
func TestNoClusterDNSExits2(t *testing.T) {
	logs := &dnstest.LogBuffer{}
	c := fake.NewClientset()
	code := run(context.Background(), nil, map[string]string{"PODNS_WEBHOOK_LISTEN": dnstest.FreeAddr(t), "PODNS_HTTP_LISTEN": dnstest.FreeAddr(t)},
		io.Discard, logs, deps{client: func() (kubernetes.Interface, error) { return c, nil }, handler: modeEcho})
	if code != cli.ExitConfig {
		t.Fatalf("exit %d, want %d; log:\n%s", code, cli.ExitConfig, logs.String())
	}
	if !strings.Contains(logs.String(), "PODNS_CLUSTER_DNS is unset and Service kube-system/kube-dns does not exist") {
		t.Errorf("log does not say what is missing:\n%s", logs.String())
	}
}

// modeEcho stands in for inject's handler where the test is about the wiring: it admits with
// a patch naming the mode of the path it was registered for and the cluster DNS it was given.
func modeEcho(mode inject.Mode, opts inject.Options) (admission.Handler, error) {
	return admission.HandlerFunc(func(_ context.Context, req admission.Request) admission.Response {
		r := admission.Allowed("")
		r.Patches = nil
		pt := admissionv1.PatchTypeJSONPatch
		r.PatchType = &pt
		r.Patch = []byte(`[{"op":"add","path":"/metadata/annotations","value":{"mode":"` + string(mode) + `","dns":"` + opts.ClusterDNS.String() + `"}}]`)
		return r
	}), nil
}

// webhookProc is the webhook run in-process by startWebhook over a fake API server.
type webhookProc struct {
	env     map[string]string
	client  *fake.Clientset
	logs    *dnstest.LogBuffer
	sigterm func()
	done    chan struct{} // closed when run returned, with its exit code in code
	code    int
	caPEM   []byte // external mode: the CA the test's certificate files chain to
}

func mwc() *admissionregistrationv1.MutatingWebhookConfiguration {
	m := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "podns-webhook"}}
	for name, path := range map[string]string{"sidecar.podns.io": pathSidecar, "restricted.podns.io": pathRestricted} {
		m.Webhooks = append(m.Webhooks, admissionregistrationv1.MutatingWebhook{Name: name, ClientConfig: admissionregistrationv1.WebhookClientConfig{
			Service: &admissionregistrationv1.ServiceReference{Namespace: "podns-system", Name: "podns-webhook", Path: &path}}})
	}
	return m
}

// startWebhook runs the webhook with env over free loopback ports and a fake API server holding
// objs, and the handler factory h; the test's cleanup stops it (SIGTERM) and checks it exits 0.
// It returns once /readyz is 200 unless wait is false.
func startWebhook(t *testing.T, env map[string]string, h func(inject.Mode, inject.Options) (admission.Handler, error), wait bool, objs ...runtime.Object) *webhookProc {
	t.Helper()
	w := &webhookProc{env: map[string]string{"PODNS_WEBHOOK_LISTEN": dnstest.FreeAddr(t), "PODNS_HTTP_LISTEN": dnstest.FreeAddr(t), "PODNS_SHUTDOWN_GRACE": "0s"},
		client: fake.NewClientset(objs...), logs: &dnstest.LogBuffer{}}
	for k, v := range env {
		w.env[k] = v
	}
	ctx, sigterm := context.WithCancel(context.Background())
	w.sigterm, w.done = sigterm, make(chan struct{})
	d := deps{client: func() (kubernetes.Interface, error) { return w.client, nil }, handler: h, resync: 20 * time.Millisecond}
	go func() {
		w.code = run(ctx, nil, w.env, io.Discard, w.logs, d)
		close(w.done)
	}()
	t.Cleanup(func() {
		sigterm()
		if code, ok := w.wait(10 * time.Second); !ok {
			t.Error("webhook did not exit 10s after SIGTERM")
		} else if code != cli.ExitOK {
			t.Errorf("webhook exited %d; log:\n%s", code, w.logs.String())
		}
	})
	if wait {
		w.waitReady(t)
	}
	return w
}

// wait returns run's exit code once it returned, or false after d.
func (w *webhookProc) wait(d time.Duration) (int, bool) {
	select {
	case <-w.done:
		return w.code, true
	case <-time.After(d):
		return 0, false
	}
}

func (w *webhookProc) readyz() (int, string) {
	resp, err := http.Get("http://" + w.env["PODNS_HTTP_LISTEN"] + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (w *webhookProc) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-w.done:
			t.Fatalf("webhook exited %d before ready; log:\n%s", w.code, w.logs.String())
		default:
		}
		code, body := w.readyz()
		if code == http.StatusOK {
			return
		}
		last = body
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("not ready within 20s (last /readyz: %q); log:\n%s", last, w.logs.String())
}

// review POSTs an AdmissionReview v1 for pod to path over TLS, trusting only the caBundle the
// webhook published in the MutatingWebhookConfiguration, as the API server does (or caPEM when
// set: external mode).
func (w *webhookProc) review(t *testing.T, path string, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	ca := w.caPEM
	if ca == nil {
		m, err := w.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), "podns-webhook", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ca = m.Webhooks[0].ClientConfig.CABundle
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("no caBundle published")
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	uid := types.UID("8b0c4b7e-0000-4000-8000-" + strings.Repeat("0", 11) + "1")
	body, _ := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: uid, Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: pod.Namespace,
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}},
	})
	_, port, _ := strings.Cut(w.env["PODNS_WEBHOOK_LISTEN"], ":")
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Post("https://127.0.0.1:"+port+path+"?timeout=5s", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil || out.Response.UID != uid {
		t.Fatalf("%s: not an AdmissionReview v1 answering the request: %+v", path, out)
	}
	return out.Response
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: "team"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1"}}, DNSPolicy: corev1.DNSClusterFirst},
	}
}

var kubeDNSService = &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"},
	Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.10"}}

// TestServesAdmissionReviewOverTLS: each path answers an AdmissionReview v1 over loopback TLS,
// with a certificate the published caBundle trusts, from the handler of its mode; the cluster
// DNS comes from Service kube-system/kube-dns; /metrics has the build info and the per-path
// request counts; SIGTERM exits 0 (cleanup).
func TestServesAdmissionReviewOverTLS(t *testing.T) {
	w := startWebhook(t, nil, modeEcho, true, mwc(), kubeDNSService)
	for path, mode := range map[string]inject.Mode{pathSidecar: inject.ModeSidecar, pathRestricted: inject.ModeRestricted} {
		r := w.review(t, path, testPod())
		if !r.Allowed || r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Errorf("%s: %+v", path, r)
		}
		if want := `"mode":"` + string(mode) + `","dns":"10.96.0.10"`; !strings.Contains(string(r.Patch), want) {
			t.Errorf("%s: patch %s, want the %s handler with the kube-dns address (%s)", path, r.Patch, mode, want)
		}
	}
	resp, err := http.Get("http://" + w.env["PODNS_HTTP_LISTEN"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, series := range []string{`podns_build_info{goversion="`, `controller_runtime_webhook_requests_total{code="200",webhook="/mutate-pod"} `,
		`controller_runtime_webhook_requests_total{code="200",webhook="/mutate-pod-restricted"} `, "go_goroutines "} {
		if !strings.Contains(string(b), series) {
			t.Errorf("/metrics lacks %s", series)
		}
	}
	if resp, err := http.Get("http://" + w.env["PODNS_HTTP_LISTEN"] + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	}
}

// TestReadyOnlyWithCABundle: without the MutatingWebhookConfiguration there is no caBundle to
// keep, so /readyz is 503 and says why; once it exists the next pass publishes the CA and
// /readyz turns 200.
func TestReadyOnlyWithCABundle(t *testing.T) {
	w := startWebhook(t, map[string]string{"PODNS_CLUSTER_DNS": "10.96.0.10"}, modeEcho, false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := w.readyz()
		if code == http.StatusServiceUnavailable && strings.Contains(body, "podns-webhook") && strings.Contains(body, "not found") {
			break
		}
		if code == http.StatusOK {
			t.Fatal("/readyz 200 without a MutatingWebhookConfiguration to publish the CA in")
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never said the MutatingWebhookConfiguration is missing (last: %d %q)", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := w.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), mwc(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.waitReady(t)
	w.review(t, pathSidecar, testPod())
}

// TestInjectHandlerServed: the binary's own handler (webhook/inject) answers /mutate-pod with a
// patch for a plain pod.
func TestInjectHandlerServed(t *testing.T) {
	if _, err := injectHandler(inject.ModeSidecar, inject.Options{}); err != nil {
		t.Fatal(err)
	}
	w := startWebhook(t, map[string]string{"PODNS_CLUSTER_DNS": "10.96.0.10"}, injectHandler, true, mwc())
	r := w.review(t, pathSidecar, testPod())
	if !r.Allowed || len(r.Patch) == 0 {
		t.Errorf("plain pod not injected: allowed %v, patch %s, warnings %v", r.Allowed, r.Patch, r.Warnings)
	}
}

// TestSIGTERMKeepsServingThroughGrace: after SIGTERM /readyz turns 503 at once, so the
// Service's endpoints drop the replica, while admission requests are still answered for
// PODNS_SHUTDOWN_GRACE; then the webhook exits 0.
func TestSIGTERMKeepsServingThroughGrace(t *testing.T) {
	const grace = 2 * time.Second
	w := startWebhook(t, map[string]string{"PODNS_CLUSTER_DNS": "10.96.0.10", "PODNS_SHUTDOWN_GRACE": grace.String()}, modeEcho, true, mwc())
	start := time.Now()
	w.sigterm()
	for {
		code, body := w.readyz()
		if code == http.StatusServiceUnavailable && strings.Contains(body, "terminating") {
			break
		}
		if time.Since(start) > grace {
			t.Fatalf("/readyz still %d %q after SIGTERM", code, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r := w.review(t, pathSidecar, testPod()); !r.Allowed {
		t.Errorf("admission during the grace period: %+v", r)
	}
	if time.Since(start) >= grace {
		t.Fatal("the checks took longer than the grace period: they prove nothing")
	}
	code, ok := w.wait(grace + 10*time.Second)
	if !ok {
		t.Fatal("webhook did not exit after the grace period")
	}
	if code != cli.ExitOK {
		t.Errorf("exit %d after SIGTERM", code)
	}
	if took := time.Since(start); took < grace {
		t.Errorf("exited %s after SIGTERM, before the %s grace period", took, grace)
	}
	// Durations in the log are seconds, as in the stub's (zerolog's Dur would write 2000).
	if !strings.Contains(w.logs.String(), `"grace":2,`) {
		t.Errorf("no SIGTERM line with \"grace\":2 (seconds) in:\n%s", w.logs.String())
	}
}

// TestExternalCertMode: with PODNS_CERT_MODE=external the webhook serves the certificate files
// of PODNS_CERT_DIR, is ready without any MutatingWebhookConfiguration (cert-manager's
// cainjector owns the caBundle) and writes no Secret.
func TestExternalCertMode(t *testing.T) {
	dir := t.TempDir()
	caPEM := writeCertFiles(t, dir)
	w := startWebhook(t, map[string]string{"PODNS_CERT_MODE": "external", "PODNS_CERT_DIR": dir, "PODNS_CLUSTER_DNS": "10.96.0.10"}, modeEcho, true)
	w.caPEM = caPEM
	if r := w.review(t, pathRestricted, testPod()); !r.Allowed {
		t.Errorf("%+v", r)
	}
	if s, err := w.client.CoreV1().Secrets("podns-system").List(context.Background(), metav1.ListOptions{}); err != nil || len(s.Items) != 0 {
		t.Errorf("external mode wrote Secrets: %v %v", s, err)
	}
}

// writeCertFiles writes tls.crt and tls.key for podns-webhook.podns-system.svc and 127.0.0.1,
// signed by a CA made here, into dir; it returns the CA's PEM.
func writeCertFiles(t *testing.T, dir string) []byte {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		DNSNames: []string{"podns-webhook.podns-system.svc"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*pem.Block{"tls.crt": {Type: "CERTIFICATE", Bytes: der}, "tls.key": {Type: "PRIVATE KEY", Bytes: keyDER}} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}
