package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const (
	ns      = "podns-system"
	svc     = "podns-webhook"
	mwcName = "podns-webhook"
)

// clock is a settable clock shared by the replicas of a test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// cluster is a fake API server with what the fake clientset lacks: resourceVersions and
// optimistic concurrency (an Update carrying a resourceVersion other than the stored one fails
// with a conflict), as the real API server does. It counts the writes per resource.
type cluster struct {
	*fake.Clientset
	mu     sync.Mutex
	rv     int
	writes map[string]int
}

func newCluster(t *testing.T, webhooks int) *cluster {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: mwcName}}
	for i := range webhooks {
		path := "/mutate-pod"
		mwc.Webhooks = append(mwc.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name:         fmt.Sprintf("w%d.podns.io", i),
			ClientConfig: admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: ns, Name: svc, Path: &path}},
		})
	}
	c := &cluster{Clientset: fake.NewClientset(), writes: map[string]int{}}
	c.PrependReactor("*", "*", c.react)
	if _, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(context.Background(), mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.writes = map[string]int{}
	return c
}

func (c *cluster) react(a k8stesting.Action) (bool, runtime.Object, error) {
	if v := a.GetVerb(); v != "create" && v != "update" {
		return false, nil, nil
	}
	obj := a.(k8stesting.CreateAction).GetObject() // UpdateAction has the same method set
	c.mu.Lock()
	defer c.mu.Unlock()
	obj = obj.DeepCopyObject()
	m, err := meta.Accessor(obj)
	if err != nil {
		return true, nil, err
	}
	gvr, ns := a.GetResource(), a.GetNamespace()
	if a.GetVerb() == "update" {
		stored, err := c.Tracker().Get(gvr, ns, m.GetName())
		if err != nil {
			return true, nil, err
		}
		sm, _ := meta.Accessor(stored)
		if m.GetResourceVersion() != sm.GetResourceVersion() {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), m.GetName(), fmt.Errorf("resourceVersion %q, stored %q", m.GetResourceVersion(), sm.GetResourceVersion()))
		}
	}
	c.rv++
	m.SetResourceVersion(strconv.Itoa(c.rv))
	if a.GetVerb() == "create" {
		err = c.Tracker().Create(gvr, obj, ns)
	} else {
		err = c.Tracker().Update(gvr, obj, ns)
	}
	if err != nil {
		return true, nil, err
	}
	c.writes[gvr.Resource]++
	return true, obj, nil
}

func (c *cluster) writeCount(resource string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes[resource]
}

func (c *cluster) mwc(t *testing.T) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	m, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), mwcName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (c *cluster) secret(t *testing.T) *corev1.Secret {
	t.Helper()
	s, err := c.CoreV1().Secrets(ns).Get(context.Background(), DefaultSecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func replica(c *cluster, clk *clock) *Self {
	return NewSelf(SelfOptions{Client: c, Namespace: ns, Service: svc, WebhookConfiguration: mwcName, Now: clk.now, Log: zerolog.Nop()})
}

func sync1(t *testing.T, s *Self) {
	t.Helper()
	if err := s.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, why := s.Ready(); !ok {
		t.Fatalf("not ready after Sync: %s", why)
	}
}

// verify checks that s's serving certificate verifies, at the clock's time, against the caBundle
// every webhook of the MutatingWebhookConfiguration publishes, for each name the API server may
// dial.
func verify(t *testing.T, c *cluster, s *Self, at time.Time) {
	t.Helper()
	leaf, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range c.mwc(t).Webhooks {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
			t.Fatalf("webhook %s: caBundle holds no certificate", w.Name)
		}
		for _, name := range []string{svc + "." + ns + ".svc", svc + "." + ns, svc, "127.0.0.1"} {
			if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: at,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("webhook %s, name %s: %v", w.Name, name, err)
			}
		}
	}
}

func TestSyncMakesCAAndPatchesEveryWebhook(t *testing.T) {
	c := newCluster(t, 2)
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	s := replica(c, clk)
	if ok, _ := s.Ready(); ok {
		t.Error("ready before the first Sync")
	}
	if _, err := s.GetCertificate(nil); err == nil {
		t.Error("a certificate before the first Sync")
	}
	sync1(t, s)
	sec := c.secret(t)
	if len(sec.Data[keyCACert]) == 0 || len(sec.Data[keyCAKey]) == 0 {
		t.Fatalf("Secret data keys %v", sec.Data)
	}
	for _, w := range c.mwc(t).Webhooks {
		if string(w.ClientConfig.CABundle) != string(sec.Data[keyCACert]) {
			t.Errorf("webhook %s: caBundle is not the Secret's CA", w.Name)
		}
	}
	if string(s.CABundle()) != string(sec.Data[keyCACert]) {
		t.Error("CABundle() is not the Secret's CA")
	}
	verify(t, c, s, clk.now())
	leaf, _ := s.GetCertificate(nil)
	if got := leaf.Leaf.NotAfter.Sub(clk.now()); got != DefaultLeafLifetime {
		t.Errorf("serving certificate valid for %s after issue, want %s", got, DefaultLeafLifetime)
	}
	// A second pass with nothing changed writes nothing.
	before := c.writeCount("mutatingwebhookconfigurations") + c.writeCount("secrets")
	sync1(t, s)
	if after := c.writeCount("mutatingwebhookconfigurations") + c.writeCount("secrets"); after != before {
		t.Errorf("an idle Sync wrote %d objects", after-before)
	}
}

// TestTwoReplicasConverge: two replicas starting at once share one CA, both serving certificates
// verify against the one published caBundle, and further passes write nothing (no fight).
func TestTwoReplicasConverge(t *testing.T) {
	c := newCluster(t, 2)
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	a, b := replica(c, clk), replica(c, clk)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []*Self{a, b} {
		wg.Go(func() { errs[i] = s.Sync(context.Background()) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := c.writeCount("secrets"); n != 1 {
		t.Errorf("%d Secret writes, want 1 (one CA made, by the first replica)", n)
	}
	for _, s := range []*Self{a, b} {
		sync1(t, s) // the loser of a create race is ready at its next pass at the latest
		verify(t, c, s, clk.now())
	}
	before := c.writeCount("mutatingwebhookconfigurations") + c.writeCount("secrets")
	for range 3 {
		sync1(t, a)
		sync1(t, b)
	}
	if after := c.writeCount("mutatingwebhookconfigurations") + c.writeCount("secrets"); after != before {
		t.Errorf("converged replicas wrote %d more objects: they fight", after-before)
	}
}

// TestRotation drives the clock: the serving certificate is replaced after two thirds of its
// life, not before; the CA after two thirds of its own, keeping the old CA in the bundle so the
// other replica's certificate stays trusted until it moves over.
func TestRotation(t *testing.T) {
	c := newCluster(t, 2)
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	a, b := replica(c, clk), replica(c, clk)
	sync1(t, a)
	sync1(t, b)
	first, _ := a.GetCertificate(nil)
	caBefore := string(c.secret(t).Data[keyCACert])

	clk.t = twoThirds(first.Leaf).Add(-time.Minute)
	sync1(t, a)
	if got, _ := a.GetCertificate(nil); got != first {
		t.Error("serving certificate replaced before two thirds of its life")
	}
	clk.add(2 * time.Minute)
	sync1(t, a)
	second, _ := a.GetCertificate(nil)
	if second == first {
		t.Fatal("serving certificate not replaced after two thirds of its life")
	}
	if string(c.secret(t).Data[keyCACert]) != caBefore {
		t.Error("the CA changed with the serving certificate")
	}
	verify(t, c, a, clk.now())

	// Past two thirds of the CA's life: a replaces it; b, not synced yet, still serves a
	// certificate of the old CA, which the bundle must still trust.
	clk.t = twoThirds(c.caCert(t)).Add(-time.Minute)
	sync1(t, b) // b's last pass before the rotation: a current certificate of the old CA
	bOld, _ := b.GetCertificate(nil)
	clk.add(2 * time.Minute)
	sync1(t, a)
	sec := c.secret(t)
	if string(sec.Data[keyCACert]) == caBefore || string(sec.Data[keyPreviousCA]) != caBefore {
		t.Fatal("CA not rotated with the old one kept as previous")
	}
	if n := len(parseBundle(c.mwc(t).Webhooks[0].ClientConfig.CABundle)); n != 2 {
		t.Errorf("caBundle holds %d CAs during the CA rotation, want 2", n)
	}
	verify(t, c, a, clk.now())
	if got, _ := a.GetCertificate(nil); got.Leaf.CheckSignatureFrom(c.caCert(t)) != nil {
		t.Error("a serves a certificate not from the new CA")
	}
	// b's old certificate is still trusted by the published bundle...
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.mwc(t).Webhooks[1].ClientConfig.CABundle)
	if _, err := bOld.Leaf.Verify(x509.VerifyOptions{DNSName: svc + "." + ns + ".svc", Roots: pool, CurrentTime: clk.now()}); err != nil {
		t.Errorf("b's certificate of the old CA not trusted during the rotation: %v", err)
	}
	// ...and b moves to the new CA at its next pass.
	sync1(t, b)
	if got, _ := b.GetCertificate(nil); got.Leaf.CheckSignatureFrom(c.caCert(t)) != nil {
		t.Error("b still serves a certificate of the old CA")
	}
	verify(t, c, b, clk.now())

	// Once the old CA expired, it leaves the bundle.
	clk.t = c.previousCA(t).NotAfter.Add(time.Minute)
	sync1(t, a)
	sync1(t, b)
	if n := len(parseBundle(c.mwc(t).Webhooks[0].ClientConfig.CABundle)); n != 1 {
		t.Errorf("caBundle holds %d CAs after the old CA expired, want 1", n)
	}
	verify(t, c, a, clk.now())
	verify(t, c, b, clk.now())
}

// twoThirds is when two thirds of cert's life have passed.
func twoThirds(cert *x509.Certificate) time.Time {
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) * 2 / 3)
}

func (c *cluster) caCert(t *testing.T) *x509.Certificate {
	t.Helper()
	certs := parseBundle(c.secret(t).Data[keyCACert])
	if len(certs) != 1 {
		t.Fatalf("Secret holds %d CA certificates", len(certs))
	}
	return certs[0]
}

func (c *cluster) previousCA(t *testing.T) *x509.Certificate {
	t.Helper()
	certs := parseBundle(c.secret(t).Data[keyPreviousCA])
	if len(certs) != 1 {
		t.Fatalf("Secret holds %d previous CA certificates", len(certs))
	}
	return certs[0]
}

// TestCABundlePutBack: a caBundle someone else changed (an apply that emptied it, another
// tool) is put back at the next pass, and Ready says false when it cannot be.
func TestCABundlePutBack(t *testing.T) {
	c := newCluster(t, 2)
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	s := replica(c, clk)
	sync1(t, s)
	m := c.mwc(t)
	m.Webhooks[1].ClientConfig.CABundle = []byte("-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n")
	if _, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(context.Background(), m, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	sync1(t, s)
	verify(t, c, s, clk.now())

	if err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), mwcName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(context.Background()); err == nil {
		t.Error("Sync without the MutatingWebhookConfiguration succeeded")
	}
	if ok, why := s.Ready(); ok || why == "" {
		t.Errorf("Ready = %v, %q without the MutatingWebhookConfiguration", ok, why)
	}
	if _, err := s.GetCertificate(nil); err != nil {
		t.Error("the certificate is no longer served while the caBundle cannot be written")
	}
}

// TestStaleReplicaDoesNotRegress: a replica that read the Secret just before another rotated
// the CA does not put the old bundle back over the new one.
func TestStaleReplicaDoesNotRegress(t *testing.T) {
	c := newCluster(t, 1)
	clk := &clock{t: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	a, b := replica(c, clk), replica(c, clk)
	sync1(t, a)
	sync1(t, b)
	old := c.secret(t)
	clk.t = twoThirds(c.caCert(t)).Add(time.Minute)
	sync1(t, a) // rotates
	rotated := c.mwc(t).Webhooks[0].ClientConfig.CABundle
	// b's next read of the Secret returns what it was before a's rotation, once.
	var once sync.Once
	c.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		handled := false
		once.Do(func() { handled = true })
		if handled {
			return true, old.DeepCopy(), nil
		}
		return false, nil, nil
	})
	// Clock before the old CA's two thirds, so that b's stale read does not rotate by itself.
	clk.add(-2 * time.Minute)
	sync1(t, b)
	if got := c.mwc(t).Webhooks[0].ClientConfig.CABundle; string(got) != string(rotated) {
		t.Error("a replica with a stale Secret put the old caBundle back")
	}
	verify(t, c, a, clk.now())
	verify(t, c, b, clk.now())
}

// TestServingOverLoopback: a TLS handshake with the served certificate, verified by a client
// that trusts only the published caBundle, by service name and by 127.0.0.1.
func TestServingOverLoopback(t *testing.T) {
	c := newCluster(t, 1)
	clk := &clock{t: time.Now()}
	s := replica(c, clk)
	sync1(t, s)
	handshake(t, s.GetCertificate, c.mwc(t).Webhooks[0].ClientConfig.CABundle, []string{svc + "." + ns + ".svc", ""})
}

// handshake serves getCert on a loopback listener and completes a TLS handshake for each
// serverName ("" verifies the IP address 127.0.0.1) trusting only caPEM.
func handshake(t *testing.T, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), caPEM []byte, serverNames []string) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.(*tls.Conn).Handshake()
				_, _ = conn.Write([]byte("ok"))
			}()
		}
	}()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("no certificate in the CA PEM")
	}
	for _, name := range serverNames {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: name})
		if err != nil {
			t.Errorf("handshake (server name %q): %v", name, err)
			continue
		}
		buf := make([]byte, 2)
		if _, err := conn.Read(buf); err != nil || string(buf) != "ok" {
			t.Errorf("read after handshake (server name %q): %q, %v", name, buf, err)
		}
		conn.Close()
	}
}
