package certs

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"

	"github.com/rs/zerolog"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
)

// External serves tls.crt and tls.key from a directory (PODNS_CERT_MODE=external: cert-manager's
// Secret mounted there), re-read when they change: controller-runtime's certwatcher watches the
// files (fsnotify, which sees the kubelet's atomic symlink swap of a Secret volume) and re-reads
// them every 10 s as well. The caBundle is someone else's (cert-manager's cainjector).
type External struct {
	w   *certwatcher.CertWatcher
	dir string
}

// NewExternal loads dir/tls.crt and dir/tls.key; it fails when they cannot be read or do not
// belong together. onReload, if not nil, is called (on a goroutine of its own for a reload) with
// the certificate loaded, then with every one loaded after it.
func NewExternal(dir string, log zerolog.Logger, onReload func(tls.Certificate)) (*External, error) {
	w, err := certwatcher.New(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		return nil, fmt.Errorf("PODNS_CERT_DIR=%s: %w", dir, err)
	}
	w.RegisterCallback(func(c tls.Certificate) {
		ev := log.Info().Str("dir", dir)
		if c.Leaf != nil {
			ev = ev.Time("not_after", c.Leaf.NotAfter)
		}
		ev.Msg("serving certificate loaded")
		if onReload != nil {
			onReload(c)
		}
	})
	return &External{w: w, dir: dir}, nil
}

// Run watches the files until ctx ends.
func (e *External) Run(ctx context.Context) error { return e.w.Start(ctx) }

// GetCertificate serves the last certificate read (tls.Config.GetCertificate).
func (e *External) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return e.w.GetCertificate(h)
}

// Ready is always true: NewExternal succeeded only with a certificate loaded, and a later bad
// file keeps the last good one.
func (e *External) Ready() (bool, string) { return true, "ok" }
