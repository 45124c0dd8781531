package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestLoadDefaults(t *testing.T) {
	c, err := Load(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.WebhookListen != ":9443" || c.HTTPListen != ":9254" || c.CertMode != CertSelf ||
		c.CertDir != "/run/podns-webhook/certs" || c.WebhookConfiguration != "podns-webhook" ||
		c.WebhookService != "podns-webhook" || c.WebhookNamespace != "podns-system" ||
		c.ClusterDNS.IsValid() || c.Domain() != "cluster.local" || c.StubImage != "" || c.InitImage != "" {
		t.Errorf("defaults: %+v", c)
	}
	if h, p := c.WebhookListen.HostPort(); h != "" || p != 9443 {
		t.Errorf("HostPort = %q, %d", h, p)
	}
}

func TestLoadSet(t *testing.T) {
	c, err := Load(map[string]string{
		"PODNS_WEBHOOK_LISTEN": "127.0.0.1:8443", "PODNS_CLUSTER_DNS": "fd00::a", "PODNS_CLUSTER_DOMAIN": "corp.example.",
		"PODNS_CERT_MODE": "external", "PODNS_CERT_DIR": "/certs",
	})
	if err != nil {
		t.Fatal(err)
	}
	if h, p := c.WebhookListen.HostPort(); h != "127.0.0.1" || p != 8443 {
		t.Errorf("HostPort = %q, %d", h, p)
	}
	if c.ClusterDNS.Addr != netip.MustParseAddr("fd00::a") || c.Domain() != "corp.example" || c.CertMode != CertExternal {
		t.Errorf("%+v", c)
	}
}

// TestLoadReportsEveryProblem: one run names every bad variable with its value and the
// allowed values, one per line (the exit-2 message).
func TestLoadReportsEveryProblem(t *testing.T) {
	_, err := Load(map[string]string{
		"PODNS_WEBHOOK_LISTEN":        "9443",
		"PODNS_HTTP_LISTEN":           ":99999",
		"PODNS_CERT_MODE":             "acme",
		"PODNS_CERT_DIR":              "certs",
		"PODNS_WEBHOOK_CONFIGURATION": "Podns_Webhook",
		"PODNS_WEBHOOK_SERVICE":       "podns.webhook",
		"PODNS_WEBHOOK_NAMESPACE":     "-x",
		"PODNS_CLUSTER_DNS":           "kube-dns",
		"PODNS_CLUSTER_DOMAIN":        "a..b",
		"PODNS_STUB_IMAGE":            "ghcr.io/podns/stub: v1",
		"PODNS_LOG_LEVEL":             "loud",
	})
	if err == nil {
		t.Fatal("want an error")
	}
	want := []string{
		`PODNS_CERT_MODE="acme": out of range (allowed: one of self, external)`,
		`PODNS_LOG_LEVEL="loud": out of range (allowed: one of trace, debug, info, warn, error)`,
		`PODNS_WEBHOOK_LISTEN="9443": "9443" is not [ip]:port (allowed: [ip]:port)`,
		`PODNS_HTTP_LISTEN=":99999": ":99999": port "99999" is not 1 to 65535 (allowed: [ip]:port)`,
		`PODNS_CLUSTER_DNS="kube-dns": "kube-dns" is not an IP address (allowed: an IP address)`,
		`PODNS_CERT_DIR="certs": not an absolute path`,
		`PODNS_WEBHOOK_CONFIGURATION="Podns_Webhook": `,
		`PODNS_WEBHOOK_SERVICE="podns.webhook": `,
		`PODNS_WEBHOOK_NAMESPACE="-x": `,
		`PODNS_CLUSTER_DOMAIN="a..b": not a domain name`,
		`PODNS_STUB_IMAGE="ghcr.io/podns/stub: v1": contains white space`,
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, w)
		}
		if !found {
			t.Errorf("no line starting %q in:\n%v", w, err)
		}
	}
}

func TestValidImage(t *testing.T) {
	for ref, want := range map[string]bool{
		"ghcr.io/podns/stub:v0.1.0":   true,
		"podns/stub":                  true,
		"stub":                        true,
		"localhost:5000/podns/stub":   true,
		"Registry.Example:443/a/b_c":  true,
		"[fd00::1]:5000/podns/stub:1": true,
		"ghcr.io/podns/stub@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef":    true,
		"ghcr.io/podns/stub:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": true,
		"ghcr.io/podns/Stub:v1":                          false, // repository must be lowercase
		"ghcr.io/podns/stub:":                            false,
		"ghcr.io/podns/stub:-v1":                         false,
		"ghcr.io//stub":                                  false,
		"ghcr.io/podns/stub@sha256":                      false,
		"ghcr.io/podns/stub@sha256:abc":                  false,
		"https://ghcr.io/podns/stub":                     false,
		"ghcr.io/podns/stub:" + strings.Repeat("t", 129): false,
		"ghcr.io/" + strings.Repeat("a", 250):            false,
	} {
		if got := ValidImage(ref); got != want {
			t.Errorf("ValidImage(%q) = %v, want %v", ref, got, want)
		}
	}
}

// TestLoadChecksValues: image references, a unicast cluster DNS address and two listeners that
// do not collide, all reported at once; white space alone is unset.
func TestLoadChecksValues(t *testing.T) {
	_, err := Load(map[string]string{
		"PODNS_STUB_IMAGE":     "ghcr.io/podns/Stub:v1",
		"PODNS_INIT_IMAGE":     "ghcr.io/podns/initc:",
		"PODNS_CLUSTER_DNS":    "224.0.0.1",
		"PODNS_WEBHOOK_LISTEN": "0.0.0.0:9254",
	})
	want := []string{
		`PODNS_STUB_IMAGE="ghcr.io/podns/Stub:v1": not an image reference (allowed: an image reference (`,
		`PODNS_INIT_IMAGE="ghcr.io/podns/initc:": not an image reference (allowed: `,
		`PODNS_CLUSTER_DNS="224.0.0.1": not a unicast address (allowed: `,
		`PODNS_WEBHOOK_LISTEN="0.0.0.0:9254" and PODNS_HTTP_LISTEN=":9254": the same port`,
	}
	if err == nil {
		t.Fatal("want an error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("%d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("no %q in:\n%v", w, err)
		}
	}
	for _, ip := range []string{"0.0.0.0", "::", "255.255.255.255", "ff02::1"} {
		if _, err := Load(map[string]string{"PODNS_CLUSTER_DNS": ip}); err == nil || !strings.Contains(err.Error(), "not a unicast address") {
			t.Errorf("PODNS_CLUSTER_DNS=%s: %v", ip, err)
		}
	}
	for _, env := range []map[string]string{
		{"PODNS_STUB_IMAGE": "   ", "PODNS_INIT_IMAGE": "\t"},
		{"PODNS_WEBHOOK_LISTEN": "127.0.0.1:9254", "PODNS_HTTP_LISTEN": "127.0.0.2:9254", "PODNS_CLUSTER_DNS": "10.96.0.10"},
	} {
		if c, err := Load(env); err != nil || c.StubImage != "" || c.InitImage != "" {
			t.Errorf("%q: %v", env, err)
		}
	}
	for _, pair := range [][2]string{{":9443", "[::]:9443"}, {"127.0.0.1:9443", "127.0.0.1:9443"}, {"[::ffff:127.0.0.1]:9443", "127.0.0.1:9443"}} {
		if _, err := Load(map[string]string{"PODNS_WEBHOOK_LISTEN": pair[0], "PODNS_HTTP_LISTEN": pair[1]}); err == nil {
			t.Errorf("%s and %s accepted", pair[0], pair[1])
		}
	}
}
