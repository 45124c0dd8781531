package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Defaults of SelfOptions.
const (
	// DefaultSecretName is the Secret, in the webhook's namespace, holding the CA every replica
	// signs its serving certificate with.
	DefaultSecretName = "podns-webhook-ca"
	// DefaultCALifetime and DefaultLeafLifetime: a year for the CA (replaced after 8 months,
	// the old one staying in the caBundle until it expires), 30 days for a serving certificate
	// (replaced after 20).
	DefaultCALifetime   = 365 * 24 * time.Hour
	DefaultLeafLifetime = 30 * 24 * time.Hour
	// DefaultResync is how often a replica re-reads the Secret and the
	// MutatingWebhookConfiguration: a caBundle someone else changed is put back within it.
	DefaultResync = time.Minute
)

// Keys of the CA Secret's data.
const (
	keyCACert     = "ca.crt"
	keyCAKey      = "ca.key"
	keyPreviousCA = "previous-ca.crt"
)

// SelfOptions configure Self. Client, Namespace, Service and WebhookConfiguration are required.
type SelfOptions struct {
	Client kubernetes.Interface
	// Namespace is the webhook's: its Service's and the CA Secret's.
	Namespace string
	// Service is the Service in front of the webhook; the serving certificate names
	// <Service>, <Service>.<Namespace>, <Service>.<Namespace>.svc (what the API server dials for
	// a service reference) and the IP 127.0.0.1 (a webhook registered by URL on loopback, as the
	// API-server test does).
	Service string
	// WebhookConfiguration is the MutatingWebhookConfiguration whose every webhook's
	// clientConfig.caBundle is kept equal to the CA bundle.
	WebhookConfiguration string
	// SecretName holds the shared CA; DefaultSecretName when empty.
	SecretName string
	// CALifetime, LeafLifetime, Resync: the Default* values when zero.
	CALifetime, LeafLifetime, Resync time.Duration
	// Now is the clock; time.Now when nil. Tests drive rotation with it.
	Now func() time.Time
	Log zerolog.Logger
}

// Self is the self-managed serving certificate (PODNS_CERT_MODE=self).
//
// The replicas share one CA, so they never fight over the caBundle: the CA and its key live in
// the Secret SecretName, made by whichever replica finds it missing first (Create; the loser of
// the race reads the winner's). Each replica then issues its own serving certificate from it,
// the key staying in memory. Every Resync a replica re-reads the Secret and the
// MutatingWebhookConfiguration and puts the bundle back where it differs (a periodic re-check
// rather than a watch: it needs only get and update on that one object, and an operator's
// change is undone within Resync). Writes carry the resourceVersion read, so a concurrent writer
// makes the write fail with a conflict, and it is retried from a fresh read.
//
// Rotation: a serving certificate is replaced once it has lived two thirds of its life. The CA
// too: the replica that finds it due writes a new one to the Secret, keeping the old one as
// previous-ca.crt; the caBundle holds both until the old one expires, so certificates issued
// by either verify while the replicas move over. A replica serves a certificate of the new CA
// only once it has seen the caBundle carry it.
//
// RBAC: get, create and update on secrets (the one named SecretName) in Namespace; get and
// update on mutatingwebhookconfigurations (the one named WebhookConfiguration).
type Self struct {
	o     SelfOptions
	names []string
	ips   []net.IP

	leaf atomic.Pointer[tls.Certificate]

	mu     sync.Mutex
	bundle []byte // the caBundle last written or found current
	ready  bool
	why    string
}

// NewSelf returns a Self holding no certificate yet: Sync (or Run) makes one.
func NewSelf(o SelfOptions) *Self {
	if o.SecretName == "" {
		o.SecretName = DefaultSecretName
	}
	if o.CALifetime == 0 {
		o.CALifetime = DefaultCALifetime
	}
	if o.LeafLifetime == 0 {
		o.LeafLifetime = DefaultLeafLifetime
	}
	if o.Resync == 0 {
		o.Resync = DefaultResync
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	svc, ns := o.Service, o.Namespace
	return &Self{
		o:     o,
		names: []string{svc, svc + "." + ns, svc + "." + ns + ".svc"},
		ips:   []net.IP{net.IPv4(127, 0, 0, 1)},
		why:   "no serving certificate yet",
	}
}

// GetCertificate serves the current serving certificate (tls.Config.GetCertificate).
func (s *Self) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.leaf.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate yet")
}

// Ready reports whether a serving certificate is loaded and the last Sync found every caBundle
// of the MutatingWebhookConfiguration equal to the CA bundle; why says what is missing.
func (s *Self) Ready() (ok bool, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, s.why
}

// CABundle is the PEM bundle last written to (or found in) the MutatingWebhookConfiguration.
func (s *Self) CABundle() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.bundle)
}

// Run syncs at once, then every Resync until ctx ends. A failed Sync is logged and retried at
// the next tick; Ready says false meanwhile.
func (s *Self) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Resync)
	defer t.Stop()
	for {
		if err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.o.Log.Error().Err(err).Str("secret", s.o.Namespace+"/"+s.o.SecretName).
				Str("mutatingwebhookconfiguration", s.o.WebhookConfiguration).Msg("cannot keep the serving certificate and caBundle current; retrying")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sync does one pass: read (or make, or rotate) the shared CA, put the CA bundle in every
// webhook of the MutatingWebhookConfiguration, and issue a serving certificate when there is
// none, it is due, or the CA changed and the caBundle already carries the new one.
func (s *Self) Sync(ctx context.Context) error {
	err := s.sync(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.leaf.Load() == nil:
		s.ready, s.why = false, "no serving certificate yet"
	case err != nil:
		s.ready, s.why = false, err.Error()
	default:
		s.ready, s.why = true, "ok"
	}
	return err
}

func (s *Self) sync(ctx context.Context) error {
	now := s.o.Now()
	var (
		cur    *ca
		bundle []byte
		err    error
	)
	// A second round only when the caBundle shows a newer CA than the Secret we read: another
	// replica rotated in between, and our read is stale.
	for round := range 2 {
		cur, bundle, err = s.ensureCA(ctx, now)
		if err != nil {
			return err
		}
		// In the second round the Secret was read after the caBundle, so a newer CA there did
		// not come from the Secret (someone else wrote it): the Secret is the truth.
		err = s.publish(ctx, cur, bundle, round > 0)
		if !errors.Is(err, errStale) {
			break
		}
	}
	published := err == nil
	leaf := s.leaf.Load()
	var reason string
	switch {
	case leaf == nil:
		reason = "start"
	case due(leaf.Leaf, now):
		reason = "two thirds of its life passed"
	case leaf.Leaf.CheckSignatureFrom(cur.cert) != nil && published:
		// Only once the caBundle carries the new CA: until then the API server could not
		// verify a certificate it signed.
		reason = "the CA changed"
	}
	if reason != "" {
		// Before the caBundle is known to carry the CA (the first Sync of a replica whose API
		// server is not reachable yet), a certificate is still better than none: Ready says
		// false until the bundle is current.
		c, ierr := cur.issue(now, s.o.LeafLifetime, s.names, s.ips)
		if ierr != nil {
			return fmt.Errorf("issuing the serving certificate: %w", ierr)
		}
		s.leaf.Store(c)
		s.o.Log.Info().Str("reason", reason).Time("not_after", c.Leaf.NotAfter).Strs("dns_names", s.names).
			Msg("new serving certificate")
	}
	return err
}

// errStale: the caBundle carries a CA newer than the Secret we read.
var errStale = errors.New("the caBundle holds a CA newer than the Secret read")

// ensureCA returns the shared CA and the caBundle made from the Secret: created when missing,
// replaced when unreadable or due (the old CA kept as previous while it is valid). A conflict
// (another replica wrote first) is retried from a fresh read.
func (s *Self) ensureCA(ctx context.Context, now time.Time) (*ca, []byte, error) {
	secrets := s.o.Client.CoreV1().Secrets(s.o.Namespace)
	for attempt := 0; ; attempt++ {
		sec, err := secrets.Get(ctx, s.o.SecretName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			c, key, err := newCA(now, s.o.CALifetime)
			if err != nil {
				return nil, nil, err
			}
			sec = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: s.o.SecretName, Namespace: s.o.Namespace,
					Labels: map[string]string{"app.kubernetes.io/name": "podns-webhook", "app.kubernetes.io/component": "webhook-ca"}},
				Type: corev1.SecretTypeOpaque,
				Data: map[string][]byte{keyCACert: c.pem, keyCAKey: key},
			}
			_, err = secrets.Create(ctx, sec, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) && attempt < 5 {
				continue // another replica was first: use its CA
			}
			if err != nil {
				return nil, nil, fmt.Errorf("creating Secret %s/%s: %w", s.o.Namespace, s.o.SecretName, err)
			}
			s.o.Log.Info().Str("secret", s.o.Namespace+"/"+s.o.SecretName).Time("not_after", c.cert.NotAfter).Msg("made the webhook CA")
			return c, makeBundle(now, c.pem, nil), nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading Secret %s/%s: %w", s.o.Namespace, s.o.SecretName, err)
		}
		c, perr := parseCA(sec.Data[keyCACert], sec.Data[keyCAKey])
		if perr == nil && !due(c.cert, now) {
			return c, makeBundle(now, c.pem, sec.Data[keyPreviousCA]), nil
		}
		why := "two thirds of its life passed"
		var previous []byte
		if perr != nil {
			why = "unreadable: " + perr.Error()
		} else if now.Before(c.cert.NotAfter) {
			previous = c.pem // still signs serving certificates in use: keep it trusted
		}
		nc, key, err := newCA(now, s.o.CALifetime)
		if err != nil {
			return nil, nil, err
		}
		sec = sec.DeepCopy()
		sec.Data = map[string][]byte{keyCACert: nc.pem, keyCAKey: key}
		if previous != nil {
			sec.Data[keyPreviousCA] = previous
		}
		// Update carries the resourceVersion read: a conflict means another replica rotated
		// first, and the next read returns its CA.
		_, err = secrets.Update(ctx, sec, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("replacing the CA in Secret %s/%s: %w", s.o.Namespace, s.o.SecretName, err)
		}
		s.o.Log.Info().Str("secret", s.o.Namespace+"/"+s.o.SecretName).Str("reason", why).Time("not_after", nc.cert.NotAfter).Msg("replaced the webhook CA")
		return nc, makeBundle(now, nc.pem, previous), nil
	}
}

// makeBundle is the caBundle: the current CA, then the previous one while it is valid. Every
// replica computes it from the same Secret, so they write the same bytes.
func makeBundle(now time.Time, current, previous []byte) []byte {
	out := bytes.Clone(current)
	for _, c := range parseBundle(previous) {
		if now.Before(c.NotAfter) {
			out = append(out, pemBlock("CERTIFICATE", c.Raw)...)
		}
	}
	return out
}

// publish puts bundle in every webhook's clientConfig.caBundle of the
// MutatingWebhookConfiguration. It returns errStale, writing nothing, when the object already
// names a CA newer than cur (another replica rotated after our read of the Secret), unless
// force: writing ours would take the new CA out of the bundle under the other replica's
// certificate.
func (s *Self) publish(ctx context.Context, cur *ca, bundle []byte, force bool) error {
	mwcs := s.o.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	for attempt := 0; ; attempt++ {
		mwc, err := mwcs.Get(ctx, s.o.WebhookConfiguration, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", s.o.WebhookConfiguration, err)
		}
		if len(mwc.Webhooks) == 0 {
			return fmt.Errorf("MutatingWebhookConfiguration %s has no webhooks", s.o.WebhookConfiguration)
		}
		stale := 0
		for _, w := range mwc.Webhooks {
			if bytes.Equal(w.ClientConfig.CABundle, bundle) {
				continue
			}
			stale++
			if !force && newer(w.ClientConfig.CABundle, cur) {
				return errStale
			}
		}
		if stale == 0 {
			s.setBundle(bundle)
			return nil
		}
		mwc = mwc.DeepCopy()
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
		}
		_, err = mwcs.Update(ctx, mwc, metav1.UpdateOptions{})
		if apierrors.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return fmt.Errorf("updating the caBundle of MutatingWebhookConfiguration %s: %w", s.o.WebhookConfiguration, err)
		}
		s.o.Log.Info().Str("mutatingwebhookconfiguration", s.o.WebhookConfiguration).Int("webhooks", stale).Msg("caBundle updated")
		s.setBundle(bundle)
		return nil
	}
}

// newer reports whether bundle's first certificate is a podns CA that started after cur's.
func newer(bundle []byte, cur *ca) bool {
	certs := parseBundle(bundle)
	return len(certs) > 0 && certs[0].IsCA && bytes.Equal(certs[0].RawSubject, cur.cert.RawSubject) &&
		certs[0].NotBefore.After(cur.cert.NotBefore)
}

func (s *Self) setBundle(b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bundle = b
}
