package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// writePair issues a serving certificate from a new CA into dir/tls.crt and dir/tls.key, as
// cert-manager's Secret volume holds them, and returns the CA's PEM.
func writePair(t *testing.T, dir string) []byte {
	t.Helper()
	now := time.Now()
	c, _, err := newCA(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := c.issue(now, time.Hour, []string{svc + "." + ns + ".svc"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	// Written to temporary names and renamed, as the kubelet swaps a Secret volume atomically.
	for name, data := range map[string][]byte{"tls.crt": pemBlock("CERTIFICATE", leaf.Certificate[0]), "tls.key": pemBlock("PRIVATE KEY", keyDER)} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return c.pem
}

func TestExternalServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	if _, err := NewExternal(dir, zerolog.Nop(), nil); err == nil {
		t.Fatal("NewExternal succeeded without tls.crt and tls.key")
	}
	ca1 := writePair(t, dir)
	loaded := make(chan *x509.Certificate, 4)
	e, err := NewExternal(dir, zerolog.Nop(), func(c tls.Certificate) { loaded <- c.Leaf })
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Ready(); !ok {
		t.Error("not ready with a certificate loaded")
	}
	first := <-loaded
	handshake(t, e.GetCertificate, ca1, []string{svc + "." + ns + ".svc", ""})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// The watch may be set up after this write; the 10 s re-read catches it then.
	ca2 := writePair(t, dir)
	select {
	case c := <-loaded:
		if c.Equal(first) {
			t.Fatal("reload callback with the old certificate")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("new files not loaded within 30s")
	}
	handshake(t, e.GetCertificate, ca2, []string{svc + "." + ns + ".svc"})
}
