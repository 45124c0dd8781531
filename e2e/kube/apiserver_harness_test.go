package kube

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// controlPlane is etcd plus kube-apiserver on loopback, with no kubelet, controller-manager or
// scheduler: enough for admission (selectors, matchConditions, reinvocation, what is stored).
type controlPlane struct {
	dir        string // temporary: certificates, etcd data, logs, kubeconfigs
	url        string // https://127.0.0.1:<port>
	ca         *testCA
	kubeconfig string // system:masters
	kubectl    string // the kubectl built with the API server (kustomize inside)
	config     *rest.Config
	client     kubernetes.Interface
	dynamic    dynamic.Interface
	procs      []*process
}

// testCA signs the API server's serving certificate, the client identities and any in-test
// webhook's serving certificate.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "podns-apiserver-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serial int64 = 1

// issue returns a certificate and key (PEM) signed by the CA: a server certificate for the IPs
// and DNS names given, or a client certificate for the user cn in groups.
func (ca *testCA) issue(t *testing.T, cn string, groups []string, ips []net.IP, dns []string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn, Organization: groups},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	if len(ips)+len(dns) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// tlsConfig is a serving configuration for an in-test webhook at 127.0.0.1.
func (ca *testCA) tlsConfig(t *testing.T) *tls.Config {
	t.Helper()
	c, k := ca.issue(t, "127.0.0.1", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	pair, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

// process is a child process the test started; stopped by its PID at cleanup.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid after done
}

func (p *process) stop() {
	if p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail returns the last lines of the process's log, for failure messages.
func (p *process) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// start runs name with args and env (added to the test's environment), output to dir/name.log.
// The process is stopped by its PID when the test ends; its log tail is printed if the test
// failed.
func start(t *testing.T, dir, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s log (last lines):\n%s", name, p.tail(30))
		}
	})
	return p
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// apiserverBinaries returns the kube-apiserver and kubectl to use and etcd, or skips the test
// when one is missing: PODNS_E2E_KUBE_BIN (a directory; `make e2e-admission` sets it to the
// real-cluster suite's build cache) and etcd on PATH (Debian's etcd-server).
func apiserverBinaries(t *testing.T) (apiserver, kubectl, etcd string) {
	t.Helper()
	dir := os.Getenv("PODNS_E2E_KUBE_BIN")
	if dir == "" {
		t.Skip("needs kube-apiserver: run `make e2e-admission` (sets PODNS_E2E_KUBE_BIN to the built Kubernetes binaries)")
	}
	apiserver, kubectl = filepath.Join(dir, "kube-apiserver"), filepath.Join(dir, "kubectl")
	for _, b := range []string{apiserver, kubectl} {
		if _, err := os.Stat(b); err != nil {
			t.Skipf("needs %s (build it with `make e2e-kube` once, as root): %v", b, err)
		}
	}
	etcd, err := exec.LookPath("etcd")
	if err != nil {
		t.Skip("needs etcd on PATH (Debian: apt-get install etcd-server)")
	}
	return apiserver, kubectl, etcd
}

// startControlPlane starts etcd and kube-apiserver on loopback in a temporary directory and
// waits until the API server is ready.
func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	apiserver, kubectl, etcd := apiserverBinaries(t)
	dir := t.TempDir()
	cp := &controlPlane{dir: dir, ca: newCA(t), kubectl: kubectl}

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile := write("ca.crt", cp.ca.pem)
	c, k := cp.ca.issue(t, "kube-apiserver", nil, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"})
	servingCert, servingKey := write("apiserver.crt", c), write("apiserver.key", k)
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	saFile := write("sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}))

	clientPort, peerPort, apiPort := freePort(t), freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	cp.procs = append(cp.procs, start(t, dir, "etcd", nil, etcd,
		"--name", "podns-admission", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "podns-admission="+peerURL))
	api := start(t, dir, "kube-apiserver", nil, apiserver,
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", apiPort),
		"--service-cluster-ip-range=10.96.0.0/16",
		"--client-ca-file="+caFile, "--tls-cert-file="+servingCert, "--tls-private-key-file="+servingKey,
		"--service-account-key-file="+saFile, "--service-account-signing-key-file="+saFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=RBAC",
		// No controller-manager creates the namespaces' "default" ServiceAccount; the plugin would
		// reject every pod for want of it. It is not what is tested.
		"--disable-admission-plugins=ServiceAccount",
		"--profiling=false")
	cp.procs = append(cp.procs, api)
	cp.url = fmt.Sprintf("https://127.0.0.1:%d", apiPort)

	cp.kubeconfig = cp.writeKubeconfig(t, "admin", "admin", []string{"system:masters"})
	cfg, err := clientcmd.BuildConfigFromFlags("", cp.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	cp.config = cfg
	cp.client = kubernetes.NewForConfigOrDie(cfg)
	cp.dynamic = dynamic.NewForConfigOrDie(cfg)

	// No readiness signal but the endpoint itself: poll /readyz, failing fast if a process died.
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, err := cp.client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(context.Background())
		if err == nil && string(body) == "ok" {
			break
		}
		for _, p := range cp.procs {
			select {
			case <-p.done:
				t.Fatalf("%s exited (%v) before the API server was ready:\n%s", p.name, p.err, p.tail(30))
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver not ready after 90 s: %v %s\n%s", err, body, api.tail(30))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return cp
}

// writeKubeconfig writes a kubeconfig for a client-certificate identity and returns its path.
// RBAC matches a certificate with CN system:serviceaccount:<ns>:<name> as that ServiceAccount.
func (cp *controlPlane) writeKubeconfig(t *testing.T, file, user string, groups []string) string {
	t.Helper()
	c, k := cp.ca.issue(t, user, groups, nil, nil)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: cp.url, CertificateAuthorityData: cp.ca.pem}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: c, ClientKeyData: k}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user"}
	cfg.CurrentContext = "test"
	p := filepath.Join(cp.dir, file+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// kubectlRun runs the kubectl built with the API server against it, failing the test on error.
func (cp *controlPlane) kubectlRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cp.kubectl, append([]string{"--kubeconfig", cp.kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}
